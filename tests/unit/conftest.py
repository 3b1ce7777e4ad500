"""The unit tests' own fixture: scripted HTTP servers, closed after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.unit.scripted_server import Script, Server


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(script: Script, trickle: bool = False, cut: bool = False) -> Server:
        servers.append(Server(script, trickle, cut))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
