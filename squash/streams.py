"""Reading a known number of bytes from streams that may return fewer.

A raw stream (a socket, a pipe, an HTTP body) hands back whatever has arrived: one
`read(n)` may return any amount from 1 to n. Every place that needs n bytes, or a whole
small document, reads through these helpers, so a short read is never mistaken for the
end of the data.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Protocol, TypeAlias

from squash.errors import SquashError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

Stream: TypeAlias = io.RawIOBase | io.BufferedIOBase
"""A binary stream that reads into buffers: files, pipes, HTTP bodies, decoders."""

_FIRST_READ = 64 << 10  # what read_up_to makes room for at first

Chunk: TypeAlias = bytes | bytearray | memoryview
"""Bytes as they are handed on, copied only where they must be kept."""


class Truncated(SquashError):
    """A stream ended before the bytes it was expected to hold."""


class Readable(Protocol):
    def readinto(self, buffer: WriteableBuffer, /) -> int | None: ...


def read_up_to(stream: Readable, n: int) -> bytes:
    """Up to `n` bytes: fewer only if the stream ends first. The buffer grows with what
    arrives (doubling), so an `n` far above what the stream holds (a limit, a size a
    peer claims) costs nothing up front: a zeroed buffer of a 64 MiB limit was resident
    memory on every document read."""
    buffer = bytearray(min(n, _FIRST_READ))
    got = 0
    while got < n:
        if got == len(buffer):
            buffer.extend(bytes(min(len(buffer), n - got)))
        with memoryview(buffer) as view, view[got:] as free:
            count = stream.readinto(free)
        if not count:
            break
        got += count
    del buffer[got:]
    return bytes(buffer)


def read_exactly(stream: Readable, n: int, what: str) -> bytes:
    """Exactly `n` bytes, or a `Truncated` error naming `what`."""
    data = read_up_to(stream, n)
    if len(data) < n:
        raise Truncated(f"{what}: ends early: {len(data)} of {n} bytes")
    return data


def read_to_end(stream: Readable, limit: int, what: str) -> bytes:
    """Everything up to the end of the stream; more than `limit` bytes is an error."""
    data = read_up_to(stream, limit + 1)
    if len(data) > limit:
        raise SquashError(f"{what}: larger than {limit} bytes")
    return data


class Prefixed(io.RawIOBase):
    """`head` (bytes already read from `rest`) followed by the rest of the stream."""

    def __init__(self, head: bytes, rest: Readable) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._head:
            view = memoryview(buffer)
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._rest.readinto(buffer) or 0


class FileSlice(io.RawIOBase):
    """Reads `size` bytes of a file from `offset` on (a layer inside a tar)."""

    def __init__(self, path: str, offset: int, size: int) -> None:
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        self._file.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: self._left]
        n = self._file.readinto(view) or 0
        self._left -= n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()
