"""Blob bodies read below httpx, on kept connections of the standard library's client.

httpx hands a body on in the 64 KiB pieces httpcore reads, each copied into h11's
buffer, out of it, and into the reader's: 0.08 s of CPU per 88 MiB blob, a tenth of a
squash from a registry. `http.client` reads a body with one `recv` of up to a megabyte
a call, copied once into the caller's buffer. The caller reads a plain answer's body
here (200, or 206 to a Range) and refusals; it asks again through httpx for what needs
more (a 401 to authenticate, a redirect, a 5xx to retry, a connection that fails).
"""

from __future__ import annotations

import http.client
import io
import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from squash.distribution.kept import Kept

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MAX_IDLE = 8  # kept connections; a squash reads two or three blobs at once


class BodyPool:
    """GETs to one origin (`http[s]://host[:port]`) whose bodies are read from the socket."""

    def __init__(self, base: str, tls: ssl.SSLContext | None, timeout: float) -> None:
        parts = urlsplit(base)
        self._tls = tls if parts.scheme == "https" else None
        self._host, self._port = parts.hostname or "", parts.port
        self._timeout = timeout
        self._idle: Kept[http.client.HTTPConnection] = Kept(MAX_IDLE)

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, Body] | None:
        """(status, body) of `GET path`; None if no answer came. A kept connection the
        server closed meanwhile is replaced once."""
        conn = self._idle.take()
        response = self._ask(conn, path, headers) if conn is not None else None
        if conn is None or response is None:
            conn = self._connect()
            response = self._ask(conn, path, headers)
            if response is None:
                return None
        return response.status, Body(self._idle, conn, response)

    @staticmethod
    def _ask(
        conn: http.client.HTTPConnection, path: str, headers: dict[str, str]
    ) -> http.client.HTTPResponse | None:
        try:
            conn.request("GET", path, headers=headers)
            return conn.getresponse()
        except (OSError, http.client.HTTPException, ValueError):
            conn.close()  # ValueError: a header field that would break the request
            return None

    def _connect(self) -> http.client.HTTPConnection:
        if self._tls is not None:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._tls
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def close(self) -> None:
        self._idle.close()


class Body(io.RawIOBase):
    """An answer's body; read to its end, its connection goes back to the pool. A body
    that ends early raises `http.client.IncompleteRead`; a lost connection an OSError."""

    def __init__(
        self,
        kept: Kept[http.client.HTTPConnection],
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
    ) -> None:
        self._kept, self._conn, self._response = kept, conn, response

    def readable(self) -> bool:
        return True

    def header(self, name: str) -> str | None:
        return self._response.getheader(name)

    def readinto(self, buffer: WriteableBuffer) -> int:
        """What one read of the socket brings, as a raw stream must: the response's own
        readinto waits until the whole buffer is filled, so a slow upstream would hold
        back bytes (and the progress that counts them) already here."""
        view = memoryview(buffer).cast("B")
        data = self._response.read1(len(view))
        n = len(data)
        view[:n] = data
        if self._response.length == 0:
            self._response.read()  # read1 leaves the answer open at its end; this ends it
        if not n and self._response.length and len(view):
            # http.client ends a cut body quietly (only its read() raises)
            raise http.client.IncompleteRead(b"", self._response.length)
        return n

    def close(self) -> None:
        if self.closed:
            return
        if self._response.isclosed() and not self._response.will_close:
            self._kept.give(self._conn)  # read to its end on a connection kept alive
        else:
            self._response.close()
            self._conn.close()
        super().close()
