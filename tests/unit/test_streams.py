"""Short reads: streams that return one byte (or a few) per read, as pipes and sockets do."""

import hashlib
import io

import pytest

from squash.errors import SquashError
from squash.image import StoredLayer
from squash.streams import Prefixed, Stream, Truncated, read_exactly, read_to_end, read_up_to
from tests.integration.helpers import compress
from tests.layertar import layer, listing, member


class Trickle(io.RawIOBase):
    """At most `step` bytes per read, like a socket with little in its buffer."""

    def __init__(self, data: bytes, step: int = 1) -> None:
        self._data, self._pos, self._step = data, 0, step
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.reads += 1
        n = min(len(buffer), self._step, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def test_read_exactly_gathers_short_reads() -> None:
    stream = Trickle(b"0123456789" * 100, step=7)
    assert read_exactly(stream, 1000, "blob") == b"0123456789" * 100
    assert stream.reads > 100


def test_read_exactly_names_what_ended_early() -> None:
    with pytest.raises(Truncated, match=r"^config: ends early: 5 of 9 bytes$"):
        read_exactly(Trickle(b"12345"), 9, "config")


def test_read_to_end_bounds_the_document() -> None:
    assert read_to_end(Trickle(b"x" * 50, step=3), 50, "doc") == b"x" * 50
    with pytest.raises(SquashError, match=r"^doc: larger than 49 bytes$"):
        read_to_end(Trickle(b"x" * 50, step=3), 49, "doc")


def test_read_up_to_stops_at_the_end() -> None:
    assert read_up_to(Trickle(b"abc"), 10) == b"abc"
    assert read_up_to(Trickle(b""), 10) == b""


def test_read_up_to_makes_room_as_bytes_arrive() -> None:
    """A bound far above what the stream holds (a document limit, a size a registry
    claims) is not allocated up front; a stream past the first buffer grows it."""
    assert read_up_to(Trickle(b"small", step=2), 1 << 40) == b"small"
    data = bytes(range(256)) * 1000  # 256,000 bytes: the buffer doubles twice
    assert read_up_to(Trickle(data, step=10_000), 1 << 40) == data
    assert read_exactly(Trickle(data, step=65_537), len(data), "blob") == data
    assert read_up_to(Trickle(data, step=99_999), 100_000) == data[:100_000]


def test_prefixed_gives_back_what_was_read_first() -> None:
    stream = Trickle(b"0123456789", step=3)
    head = read_up_to(stream, 4)
    assert io.BufferedReader(Prefixed(head, stream)).read() == b"0123456789"


class _TrickleLayer(StoredLayer):
    stored = b""

    def open_stored(self) -> Stream:
        return Trickle(self.stored)


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd"])
def test_layer_read_one_byte_at_a_time(codec: str) -> None:
    """The codec is recognised from the first bytes even when they come one by one."""
    tar = layer(member("etc", "dir"), member("etc/a", data=b"A" * 3000))
    stored = compress(tar, codec)
    digest = "sha256:" + hashlib.sha256(stored).hexdigest()
    stream = _TrickleLayer("layer 1/1", digest, len(stored), None)
    stream.stored = stored
    with stream.open_tar() as opened:
        got = read_to_end(opened, 1 << 20, "tar")
    assert got == tar
    assert set(listing(got)) == {"etc", "etc/a"}
