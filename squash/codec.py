"""Layer codecs: recognise and undo gzip/zstd on the way in, apply them on the way out.

Inputs are recognised by their magic bytes rather than trusted media types (registries
and `docker save` archives label layers loosely). gzip uses isal, decompressing in a
worker thread so it overlaps with hashing and merging.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import zstandard
from isal import igzip_threaded, isal_zlib

from squash.errors import InvalidLayer, SquashError
from squash.streams import Chunk, Prefixed, Readable, Stream, read_up_to
from squash.verify import VerifyingReader

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

CHUNK = 1 << 20
# Blocks of isal's threaded gzip reader: it keeps 8 of them of compressed input and
# queues 2 inflated. At 1 MiB that was 11 MiB a layer, two layers read at once, and the
# largest part of an export's memory; a quarter of it inflates as fast.
_INFLATE_BLOCK = 256 << 10
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
COMPRESSIONS = ("none", "gzip", "zstd")
LEVELS = {"gzip": range(10), "zstd": range(1, 20)}  # what a compression level may be
DEFAULT_LEVELS = {"gzip": 1, "zstd": 3}
_ISAL_LEVELS = 4  # gzip levels 0-3 are isal's; 4-9 zlib's, as gzip -4 ... -9 compress
_THREADS = 2  # gzip blocks compressed at once
_BLOCK = 1 << 20  # of input, for each gzip block (isal's threaded writer's default too)
_WINDOW = 32 << 10  # deflate's window: the dictionary a block is given of the one before


class _Decoder(Readable, Protocol):
    def close(self) -> None: ...


class _Guard(io.RawIOBase):
    """Turns codec failures into one-line errors that name the layer.

    A corrupt blob usually breaks the decompressor before its digest can be checked,
    so on a codec error the rest of the blob is hashed first: a digest mismatch is the
    more precise message.
    """

    def __init__(self, inner: _Decoder, stored: VerifyingReader, label: str, codec: str):
        self._inner, self._stored, self._label, self._codec = inner, stored, label, codec

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        try:
            return self._inner.readinto(buffer) or 0
        except SquashError:
            raise
        except (EOFError, OSError, ValueError, zstandard.ZstdError) as exc:
            self._inner.close()
            self._stored.drain()
            raise InvalidLayer(f"{self._label}: corrupt {self._codec} data: {exc}") from None


def compression_of(head: bytes) -> str:
    """ "gzip", "zstd" or "none", from a blob's first bytes (its magic number)."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


@contextmanager
def open_decompressed(stored: VerifyingReader, label: str) -> Iterator[Stream]:
    """The layer's tar stream, whatever compression its stored bytes use."""
    head = read_up_to(stored, 4)  # one read may return less than the magic number
    buffered = io.BufferedReader(Prefixed(head, stored), CHUNK)
    codec = compression_of(head)
    inner: _Decoder
    if codec == "gzip":
        inner = _gzip_open(buffered, "rb", threads=1, block_size=_INFLATE_BLOCK)
    elif codec == "zstd":
        inner = zstandard.ZstdDecompressor().stream_reader(
            buffered, read_size=CHUNK, read_across_frames=True, closefd=False
        )
    else:
        yield buffered
        return
    try:
        yield _Guard(inner, stored, label, codec)
    finally:
        inner.close()


def decompress_prefix(stored: bytes, limit: int) -> bytes:
    """Up to `limit` bytes of what the first bytes of a (possibly cut-off) layer blob
    decompress to; no more is inflated (a layer of small files inflates fifty-fold)."""
    codec = compression_of(stored)
    try:
        if codec == "gzip":
            return isal_zlib.decompressobj(wbits=31).decompress(stored, limit)
        if codec == "zstd":
            return zstandard.ZstdDecompressor().decompressobj().decompress(stored)[:limit]
    except (isal_zlib.error, zstandard.ZstdError):  # type: ignore[misc]  # isal's stub: an instance
        return b""  # the full read reports the corruption, with the digest
    return stored[:limit]


class _Output(io.RawIOBase):
    """The file the threaded gzip writer writes to: hands each block on."""

    def __init__(self, out: Callable[[Chunk], None]) -> None:
        self._out = out

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        block = bytes(data)
        self._out(block)
        return len(block)


def check_level(kind: str, level: int | None) -> None:
    """A compression level `kind` takes (None: its default)."""
    if level is None:
        return
    if kind not in LEVELS:
        raise SquashError(f"{kind} layers are not compressed: they take no compression level")
    levels = LEVELS[kind]
    if level not in levels:
        raise SquashError(f"a {kind} compression level is {levels[0]} to {levels[-1]}, not {level}")


class _Gzip(Protocol):
    def write(self, data: Chunk, /) -> object: ...

    def close(self) -> None: ...


class _ZlibGzip:
    """gzip at zlib's levels (isal's stop at 3), deflated on two threads the way isal's
    threaded writer (and pigz) does: blocks of 1 MiB, each given the 32 KiB before it
    as its dictionary and ended by a sync flush, so the bytes depend neither on the
    threads nor on how the data was handed in."""

    def __init__(self, out: Callable[[Chunk], None], level: int) -> None:
        self._out, self._level = out, level
        self._pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="deflate")
        self._deflating: deque[Future[bytes]] = deque()
        self._block = bytearray()
        self._previous = b""
        self._crc = self._size = 0
        # magic, deflate, no flags, no mtime, XFL (2: the slowest, smallest), OS unknown
        out(struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, 0, 0, 2 if level == 9 else 0, 0xFF))

    def write(self, data: Chunk) -> None:
        with memoryview(data) as view:
            while len(view):
                take = min(len(view), _BLOCK - len(self._block))
                self._block += view[:take]
                view = view[take:]
                if len(self._block) == _BLOCK:
                    self._deflate()

    def _deflate(self) -> None:
        block, self._block = bytes(self._block), bytearray()
        self._crc = zlib.crc32(block, self._crc)
        self._size += len(block)
        dictionary, self._previous = self._previous[-_WINDOW:], block
        self._deflating.append(self._pool.submit(_deflate_block, block, dictionary, self._level))
        while len(self._deflating) > _THREADS:  # in order, a few blocks in flight
            self._out(self._deflating.popleft().result())

    def close(self) -> None:
        try:
            if self._block:
                self._deflate()
            while self._deflating:
                self._out(self._deflating.popleft().result())
            self._out(b"\x03\x00")  # an empty final block
            self._out(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        finally:
            self._pool.shutdown(cancel_futures=True)


def _deflate_block(block: bytes, dictionary: bytes, level: int) -> bytes:
    if dictionary:
        deflate = zlib.compressobj(level, zlib.DEFLATED, -15, zdict=dictionary)
    else:
        deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
    return deflate.compress(block) + deflate.flush(zlib.Z_SYNC_FLUSH)


class Compressor:
    """Streaming compressor for the squashed layer: none, gzip or zstd, at `level`
    (None: the kind's default, `DEFAULT_LEVELS`).

    Compressed bytes go to `out`, in order. gzip compresses blocks on two threads the
    way pigz does (deterministic output: it does not depend on the thread count), with
    isal at levels 0-3 and zlib at 4-9.
    """

    def __init__(
        self,
        kind: str,
        out: Callable[[Chunk], None],
        level: int | None = None,
    ) -> None:
        if kind not in COMPRESSIONS:
            raise SquashError(f"unknown layer compression {kind!r} (use none, gzip or zstd)")
        check_level(kind, level)
        self.kind, self._out = kind, out
        level = DEFAULT_LEVELS.get(kind, 0) if level is None else level
        self._gzip: _Gzip
        if kind == "gzip" and level < _ISAL_LEVELS:
            self._gzip = _gzip_open(_Output(out), "wb", compresslevel=level, threads=_THREADS)
        elif kind == "gzip":
            self._gzip = _ZlibGzip(out, level)
        elif kind == "zstd":
            self._zstd = zstandard.ZstdCompressor(level=level).compressobj()

    def write(self, data: Chunk) -> None:
        if self.kind == "gzip":
            self._gzip.write(data)
        elif self.kind == "zstd":
            self._out(self._zstd.compress(data))
        else:
            self._out(data)

    def close(self) -> None:
        if self.kind == "gzip":
            self._gzip.close()
        elif self.kind == "zstd":
            self._out(self._zstd.flush())


def _gzip_open(file: io.IOBase, mode: str, **options: Any) -> Stream:
    """isal's threaded gzip stream (isal ships this function without type hints)."""
    stream: Stream = igzip_threaded.open(file, mode, **options)  # type: ignore[no-untyped-call]
    return stream
