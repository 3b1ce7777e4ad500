"""The archive writer's reserved layer header: one block, whatever the size."""

import io
import tarfile

import pytest

from squash.outputs.docker_archive import _member_header


@pytest.mark.parametrize("size", [0, 1, 8**11 - 1, 8**11, 9 << 30, 3 << 40])
def test_layer_header_is_one_block_and_reads_back(size: int) -> None:
    name = "blobs/sha256/" + "a" * 64
    header = _member_header(name, size)
    assert len(header) == 512
    info = tarfile.TarInfo.frombuf(header, "utf-8", "strict")
    assert (info.name, info.size) == (name, size)


def test_layer_header_of_a_big_layer_is_read_by_tarfile_in_a_stream() -> None:
    """A >8 GiB size is written in GNU base-256, which tar readers (Go's too) accept."""
    header = _member_header("blobs/sha256/" + "b" * 64, 9 << 30)
    with tarfile.open(fileobj=io.BytesIO(header + bytes(512)), mode="r|") as tar:
        assert next(iter(tar)).size == 9 << 30
