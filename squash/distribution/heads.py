"""Manifest HEADs on kept connections, for the access check every request makes.

httpx spends 0.75 ms of CPU on a HEAD and httpcore alone 0.40 ms (h11's state machine,
the pool's bookkeeping); writing the request and reading its header block on a kept
socket takes 0.05 ms. A HEAD answer has no body, so the whole answer is one header block:
it is read up to its blank line (at most MAX_HEADER bytes) and parsed by llhttp
(httptools, uvicorn's own parser), which checks its syntax. Anything unusual is None,
and the caller asks again on its full client, which reports what went wrong.
"""

from __future__ import annotations

import socket
import ssl
import time
from urllib.parse import urlsplit

import httptools

from squash.distribution.kept import Kept

MAX_HEADER = 64 << 10  # a manifest HEAD's header block is under 1 KiB
MAX_IDLE = 64  # kept connections; more at once are opened and closed
_END = b"\r\n\r\n"


class _Answer:
    """httptools' callbacks: the header block's fields, lower-cased names."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.complete = True


class HeadPool:
    """HEAD requests to one origin (`http[s]://host[:port]`), connections kept alive."""

    def __init__(self, base: str, tls: ssl.SSLContext | None, timeout: float) -> None:
        parts = urlsplit(base)
        self._tls = tls if parts.scheme == "https" else None
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
        self._authority = parts.netloc
        self._timeout = timeout
        self._idle: Kept[socket.socket] = Kept(MAX_IDLE)

    def head(self, path: str, headers: list[tuple[str, str]]) -> tuple[int, dict[str, str]] | None:
        """(status, lower-cased headers) of `HEAD path`, or None when no answer could be
        read as one (the connection lost, a timeout, a malformed or oversized answer). A
        kept connection the server closed meanwhile is replaced once."""
        parts = [path, *(part for field in headers for part in field)]
        if any("\r" in part or "\n" in part or not part.isascii() for part in parts):
            return None  # a field that would break the request's lines (a hostile token)
        lines = [f"HEAD {path} HTTP/1.1", f"Host: {self._authority}"]
        lines += [f"{name}: {value}" for name, value in headers]
        request = "\r\n".join([*lines, "", ""]).encode("ascii")
        deadline = time.monotonic() + self._timeout  # for the whole HEAD, retry included
        conn = self._idle.take()
        block = self._exchange(conn, request, deadline) if conn is not None else None
        if conn is None or block is None:
            if conn is not None:  # closed while it was idle, most likely: a new one
                conn.close()
            try:
                conn = self._connect(deadline)
            except OSError:
                return None
            block = self._exchange(conn, request, deadline)
        answer = _parse(block) if block is not None else None
        if answer is None:
            conn.close()
            return None
        status, found, keep = answer
        self._idle.give(conn) if keep else conn.close()
        return status, found

    def _exchange(self, conn: socket.socket, request: bytes, deadline: float) -> bytes | None:
        """The answer's header block, blank line included; None if the connection ends
        first, fails, the deadline passes (a trickling answer too), or the block outgrows
        MAX_HEADER."""
        data = bytearray()
        try:
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            conn.sendall(request)
            while (left := deadline - time.monotonic()) > 0:
                conn.settimeout(left)
                chunk = conn.recv(MAX_HEADER)
                if not chunk:
                    return None
                data += chunk
                if len(data) > MAX_HEADER:
                    return None
                end = data.find(_END, max(0, len(data) - len(chunk) - len(_END)))
                if end >= 0:
                    # a HEAD answer is nothing but its header block: more would be a
                    # body that should not be there
                    return bytes(data) if end + len(_END) == len(data) else None
        except OSError:
            pass
        return None

    def _connect(self, deadline: float) -> socket.socket:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no time left to connect")
        conn = socket.create_connection((self._host, self._port), left)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            try:
                conn = self._tls.wrap_socket(conn, server_hostname=self._host)
            except OSError:
                conn.close()
                raise
        return conn

    def close(self) -> None:
        self._idle.close()


def _parse(block: bytes) -> tuple[int, dict[str, str], bool] | None:
    """(status, headers, connection reusable) of a response header block; None if llhttp
    rejects it. A 1xx interim answer is not expected of a HEAD and is rejected too."""
    answer = _Answer()
    parser = httptools.HttpResponseParser(answer)
    try:
        parser.feed_data(block)
    except httptools.HttpParserError:
        return None
    status = parser.get_status_code()
    if not answer.complete or status < 200:
        return None
    return status, answer.headers, parser.should_keep_alive()
