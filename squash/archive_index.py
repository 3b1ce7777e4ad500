"""Where each member of a squashd archive lies, found by reading its headers alone.

A registry pull wants the archive's blobs one by one, out of an archive that sits in an
object store: the headers are read through ranged reads (`Read`), a window at a time, and
the members' data (the layers) are skipped over, never read. The archive is squashd's
own, but it is parsed as untrusted bytes: every header's checksum and every size is
checked against the archive's length.
"""

import tarfile
from collections.abc import Callable
from dataclasses import dataclass

from squash.errors import SquashError

BLOCK = tarfile.BLOCKSIZE
WINDOW = 256 << 10  # bytes fetched per read: the small members after the layers in one go
MAX_MEMBERS = 4096  # far more than an archive of the most layers has

Read = Callable[[int, int], bytes]
"""`read(offset, length)`: up to `length` bytes of the archive from `offset`."""


@dataclass(frozen=True)
class Span:
    """A member's data: where it starts in the archive and how long it is."""

    offset: int
    size: int


class _Window:
    """Reads through `read`, keeping the last window fetched."""

    def __init__(self, read: Read, size: int, what: str) -> None:
        self._read, self.size, self.what = read, size, what
        self._start, self._data = 0, b""

    def take(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise SquashError(f"{self.what}: a member runs past the archive's end")
        end = self._start + len(self._data)
        if not (self._start <= offset and offset + length <= end):
            self._start, self._data = offset, self._fetch(offset, max(length, WINDOW), length)
        piece = self._data[offset - self._start : offset - self._start + length]
        if len(piece) != length:
            raise SquashError(f"{self.what}: the archive ends early (at {offset + len(piece)})")
        return piece

    def _fetch(self, offset: int, wanted: int, needed: int) -> bytes:
        """At least `needed` bytes from `offset` (fewer only at the end): a read may
        return less than it was asked for."""
        data = self._read(offset, wanted)
        while len(data) < needed:
            more = self._read(offset + len(data), wanted - len(data))
            if not more:
                break
            data += more
        return data


def members(read: Read, size: int, what: str) -> dict[str, Span]:
    """Every regular file of the archive by name, up to its two zero blocks."""
    window = _Window(read, size, what)
    found: dict[str, Span] = {}
    offset = 0
    while True:
        block = window.take(offset, BLOCK)
        if block == bytes(BLOCK):
            return found
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
        except (tarfile.HeaderError, UnicodeDecodeError) as exc:
            raise SquashError(f"{what}: a bad member header at byte {offset}: {exc}") from None
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
            raise SquashError(f"{what}: member {info.name!r} is not a file squashd writes")
        data = offset + BLOCK
        padded = info.size + -info.size % BLOCK
        if info.size < 0 or data + padded > size:
            raise SquashError(f"{what}: member {info.name!r} runs past the archive's end")
        if info.isreg():
            if info.name in found or len(found) >= MAX_MEMBERS:
                raise SquashError(f"{what}: member {info.name!r} twice, or too many members")
            found[info.name] = Span(data, info.size)
        offset = data + padded
