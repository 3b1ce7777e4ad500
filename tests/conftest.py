"""Fixtures shared by every test directory: the real servers (registries, Redis, moto's
S3, squashd's own processes) start once per session whoever asks for them first.

The servers are testbed/'s, which raises rather than knowing pytest: a server that does
not start (`StartFailed`) or a tool that is missing (`MissingTool`) fails the test, its
setup or its teardown with the message alone (the server's log), as `pytest.fail` would.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from testbed.process import StartFailed
from testbed.tools import MissingTool

pytest_plugins = [
    "tests.registry.fixtures",
    "tests.service.fixtures",
    "tests.loaders.fixtures",
    "tests.image.fixtures",
]


def _plainly() -> Generator[None, object, object]:
    """The body of a hook wrapper: the testbed's failures as `pytest.fail` messages."""
    try:
        return (yield)
    except (StartFailed, MissingTool) as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside the `except`: no chained traceback


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _plainly())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _plainly())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _plainly())
