"""Blob bodies read below httpx (squash/distribution/bodies.py) against a scripted TCP
server: a body in one-byte pieces, connections kept only when a body was read to its
end, a kept connection the server closed replaced, refusals handed back with their
words, a body cut short an error, and fields that would break the request not sent."""

from __future__ import annotations

import http.client
from collections.abc import Callable

import pytest

from squash.distribution.bodies import BodyPool
from squash.streams import read_up_to
from tests.unit.scripted_server import Server

DATA = bytes(range(256)) * 4


def answer(status: str, body: bytes, *fields: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *fields]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_a_body_in_one_byte_pieces_and_the_connection_kept(serve: Callable[..., Server]) -> None:
    server = serve(lambda n, request: answer("200 OK", DATA[:100]), trickle=True)
    pool = BodyPool(server.base, None, 5.0)
    for _ in range(2):
        got = pool.get("/v2/a/blobs/sha256:x", {"Range": "bytes=0-"})
        assert got is not None and got[0] == 200
        with got[1] as body:
            assert read_up_to(body, 1000) == DATA[:100]
    assert server.connections == 1, "the kept connection was not reused"
    first = server.requests[0].split(b"\r\n")
    assert first[0] == b"GET /v2/a/blobs/sha256:x HTTP/1.1"
    assert b"Range: bytes=0-" in first
    assert b"Accept-Encoding: identity" in first
    pool.close()


def test_a_body_left_unread_closes_its_connection(serve: Callable[..., Server]) -> None:
    server = serve(lambda n, request: answer("206 Partial Content", DATA))
    pool = BodyPool(server.base, None, 5.0)
    for _ in range(2):
        got = pool.get("/x", {})
        assert got is not None and got[0] == 206
        with got[1] as body:
            assert len(read_up_to(body, 10)) == 10
    assert server.connections == 2, "a connection with a body left in it was kept"


def test_a_kept_connection_closed_by_the_server_is_replaced_once(
    serve: Callable[..., Server],
) -> None:
    server = serve(lambda n, request: None if n == 2 else answer("200 OK", DATA))
    pool = BodyPool(server.base, None, 5.0)
    for _ in range(2):
        got = pool.get("/x", {})
        assert got is not None
        with got[1] as body:
            assert read_up_to(body, len(DATA) + 1) == DATA
    assert server.connections == 2


def test_a_refusal_comes_back_with_its_words(serve: Callable[..., Server]) -> None:
    words = b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}'
    server = serve(lambda n, request: answer("404 Not Found", words))
    got = BodyPool(server.base, None, 5.0).get("/x", {})
    assert got is not None and got[0] == 404
    with got[1] as body:
        assert read_up_to(body, 65536) == words


def test_a_body_cut_short_is_an_error(serve: Callable[..., Server]) -> None:
    server = serve(lambda n, request: answer("200 OK", DATA)[:-10], cut=True)
    got = BodyPool(server.base, None, 5.0).get("/x", {})
    assert got is not None
    body = got[1]
    with pytest.raises(http.client.IncompleteRead):
        read_up_to(body, len(DATA))
    body.close()


def test_a_field_that_would_break_the_request_is_not_sent(serve: Callable[..., Server]) -> None:
    server = serve(lambda n, request: answer("200 OK", DATA))
    pool = BodyPool(server.base, None, 5.0)
    assert pool.get("/x", {"Authorization": "Bearer t\r\nX-Injected: 1"}) is None
    assert server.requests == []


def test_nobody_listening_is_none(serve: Callable[..., Server]) -> None:
    server = serve(lambda n, request: None)
    base = server.base
    server.close()
    assert BodyPool(base, None, 2.0).get("/x", {}) is None
