"""The manifest HEAD pool (squash/distribution/heads.py) against a scripted TCP server:
answers in one-byte pieces, kept and replaced connections, and every answer that must
give None (so that the full client asks again) rather than a wrong reading."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from squash.distribution.heads import MAX_HEADER, HeadPool
from tests.unit.scripted_server import Server

OK = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n"
    b"Docker-Content-Digest: sha256:abc\r\nContent-Type: application/x\r\n\r\n"
)


def test_answer_in_one_byte_pieces_and_the_connection_kept(serve: Callable[..., Server]) -> None:
    server = serve(lambda n, request: OK, trickle=True)
    pool = HeadPool(server.base, None, 5.0)
    for _ in range(3):
        status, headers = pool.head("/v2/a/b/manifests/latest", [("Accept", "x/y")]) or (0, {})
        assert status == 200
        assert headers["docker-content-digest"] == "sha256:abc"
        assert headers["content-type"] == "application/x"
    assert server.connections == 1, "the kept connection was not reused"
    first = server.requests[0].split(b"\r\n")
    assert first[0] == b"HEAD /v2/a/b/manifests/latest HTTP/1.1"
    assert f"Host: {server.base.removeprefix('http://')}".encode() in first
    assert b"Accept: x/y" in first
    pool.close()


def test_a_kept_connection_closed_by_the_server_is_replaced_once(
    serve: Callable[..., Server],
) -> None:
    # the second request finds its kept connection closed by the server
    server = serve(lambda n, request: None if n == 2 else OK)
    pool = HeadPool(server.base, None, 5.0)
    assert pool.head("/x", [])
    answer = pool.head("/x", [])
    assert answer is not None and answer[0] == 200
    assert server.connections == 2


def test_a_refusal_is_read_and_a_closing_answer_not_kept(serve: Callable[..., Server]) -> None:
    refusal = (
        b'HTTP/1.1 401 Unauthorized\r\nWww-Authenticate: Bearer realm="r"\r\n'
        b"Content-Length: 145\r\nConnection: close\r\n\r\n"
    )
    server = serve(lambda n, request: refusal)
    pool = HeadPool(server.base, None, 5.0)
    for _ in range(2):
        answer = pool.head("/x", [])
        assert answer is not None
        assert answer[0] == 401 and answer[1]["www-authenticate"] == 'Bearer realm="r"'
    assert server.connections == 2, "a connection the server closes was kept"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",  # a body after a HEAD
        b"HTTP/1.1 2x0 OK\r\n\r\n",  # a malformed status line
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",  # a field without a colon
        b"HTTP/1.1 100 Continue\r\n\r\n",  # an interim answer
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEADER + b"\r\n\r\n",  # oversized
        b"HTTP/1.1 200 OK\r\nX: y\r\n",  # cut before the blank line
    ],
    ids=["body", "status", "field", "interim", "oversized", "cut"],
)
def test_what_cannot_be_read_as_an_answer_is_none(
    serve: Callable[..., Server], answer: bytes
) -> None:
    server = serve(lambda n, request: answer if n == 1 else None)
    pool = HeadPool(server.base, None, 5.0)
    assert pool.head("/x", []) is None
    assert not len(pool._idle), "a connection with an unreadable answer was kept"


def test_a_field_that_would_break_the_request_is_not_sent(serve: Callable[..., Server]) -> None:
    server = serve(lambda n, request: OK)
    pool = HeadPool(server.base, None, 5.0)
    assert pool.head("/x", [("Authorization", "Bearer t\r\nX-Injected: 1")]) is None
    assert pool.head("/x\n", []) is None
    assert pool.head("/x", [("Authorization", "Bearer é")]) is None
    assert server.requests == []


def test_a_silent_server_times_out(serve: Callable[..., Server]) -> None:
    gate = threading.Event()
    server = serve(lambda n, request: OK if gate.wait(10) else None)
    pool = HeadPool(server.base, None, 0.3)
    started = time.monotonic()
    assert pool.head("/x", []) is None
    assert time.monotonic() - started < 5
    gate.set()


def test_one_deadline_for_the_head_and_its_retry(serve: Callable[..., Server]) -> None:
    """A kept connection whose server goes silent is not followed by a second wait on a
    new one: the timeout bounds the whole HEAD."""
    gate = threading.Event()
    server = serve(lambda n, request: OK if n == 1 or gate.wait(10) else None)
    pool = HeadPool(server.base, None, 0.3)
    assert pool.head("/x", []) is not None
    assert pool.head("/x", []) is None
    assert server.connections == 1, "a new connection was opened after the time ran out"
    gate.set()


def test_nobody_listening_is_none() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    assert HeadPool(f"http://127.0.0.1:{port}", None, 2.0).head("/x", []) is None
