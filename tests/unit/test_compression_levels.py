"""Compression levels of the squashed layer: every level gives a stream that standard
tools read back, zlib's levels the same bytes however the data was handed in, the
default is the level it names, and levels a kind does not take are refused."""

from __future__ import annotations

import gzip
import random

import pytest
import zstandard

from squash.codec import DEFAULT_LEVELS, LEVELS, Compressor, check_level
from squash.errors import SquashError

# 2.5 MiB: three gzip blocks, text-like and random parts
_rng = random.Random(7)
DATA = b"".join(
    b"usr/share/doc/%d/copyright %s\n" % (n, b"x" * (n % 61)) for n in range(40_000)
) + _rng.randbytes(600_000)


def compressed(kind: str, level: int | None, piece: int) -> bytes:
    out: list[bytes] = []
    compressor = Compressor(kind, lambda data: out.append(bytes(data)), level)
    for at in range(0, len(DATA), piece):
        compressor.write(DATA[at : at + piece])
    compressor.close()
    return b"".join(out)


@pytest.mark.parametrize("level", LEVELS["gzip"])
def test_each_gzip_level_reads_back(level: int) -> None:
    assert gzip.decompress(compressed("gzip", level, 100_003)) == DATA


@pytest.mark.parametrize("level", [4, 9])
def test_zlib_levels_do_not_depend_on_the_pieces(level: int) -> None:
    """zlib's levels cut blocks every MiB of input. (isal's writer cuts one where its
    buffer is flushed, which depends on the pieces: the layer writer hands it the same
    pieces for the same image, and its bytes are kept as they have been.)"""
    assert compressed("gzip", level, 100_003) == compressed("gzip", level, 1 << 20)


@pytest.mark.parametrize("level", [1, 3, 9, 19])
def test_zstd_levels_read_back(level: int) -> None:
    data = compressed("zstd", level, 1 << 20)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(data) == DATA


def test_higher_levels_are_smaller_here() -> None:
    sizes = [len(compressed("gzip", level, 1 << 20)) for level in (0, 1, 9)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[2]


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_no_level_is_the_default_level(kind: str) -> None:
    assert compressed(kind, None, 1 << 20) == compressed(kind, DEFAULT_LEVELS[kind], 1 << 20)


@pytest.mark.parametrize(
    ("kind", "level", "message"),
    [
        ("gzip", 10, "a gzip compression level is 0 to 9, not 10"),
        ("zstd", 0, "a zstd compression level is 1 to 19, not 0"),
        ("none", 1, "none layers are not compressed"),
    ],
)
def test_levels_a_kind_does_not_take_are_refused(kind: str, level: int, message: str) -> None:
    with pytest.raises(SquashError, match=message):
        check_level(kind, level)
    with pytest.raises(SquashError, match=message):
        Compressor(kind, lambda data: None, level)
