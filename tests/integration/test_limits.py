"""Limits of one image (F5, F6): a gzip bomb, millions of empty members and a filling
spool directory are refused with one line, leaving nothing on disk."""

from __future__ import annotations

import json
import shutil
import tarfile
import zlib
from pathlib import Path

import pytest

from .helpers import (
    OCI_CONFIG,
    OCI_LAYER_TYPES,
    OCI_MANIFEST,
    LayerBuilder,
    image_manifest,
    write_blob,
    write_index,
)
from .test_cli_errors import failing_export

pytestmark = pytest.mark.integration


def _bomb_layout(root: Path, zeros: int) -> str:
    """One gzip layer: a single file of `zeros` zero bytes, compressed as it is made."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    info = tarfile.TarInfo("bomb")
    info.size = zeros
    parts = [compressor.compress(info.tobuf(tarfile.PAX_FORMAT))]
    block = bytes(1 << 20)
    parts += [compressor.compress(block) for _ in range(zeros >> 20)]
    parts += [compressor.compress(bytes(1024)), compressor.flush()]
    layer = {"mediaType": OCI_LAYER_TYPES["gzip"], **write_blob(root, b"".join(parts))}
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}}  # fmt: skip
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **write_blob(root, json.dumps(config).encode())},
        "layers": [layer],
    }
    write_index(root, {"t": {"mediaType": OCI_MANIFEST,
                             **write_blob(root, json.dumps(manifest).encode())}})  # fmt: skip
    return f"oci:{root}:t"


def test_a_gzip_bomb_is_refused_before_the_disk_fills(work: Path) -> None:
    source = _bomb_layout(work / "bomb", 256 << 20)  # 256 MiB of zeros in a ~250 KiB blob
    assert sum(p.stat().st_size for p in (work / "bomb/blobs/sha256").iterdir()) < 1 << 20
    line, _ = failing_export(work, source, "--max-image-bytes", "64M")
    assert line.endswith("more than 67108864 uncompressed bytes in the image"), line
    assert "layer 1/1" in line


def test_millions_of_members_are_refused(work: Path) -> None:
    layer = LayerBuilder()
    for n in range(30_000):
        layer.file(f"f{n}")
    _, _, desc = image_manifest(work / "many", [layer.tar()])
    write_index(work / "many", {"t": desc})
    line, _ = failing_export(work, f"oci:{work / 'many'}:t", "--max-members", "20000")
    assert line.endswith("more than 20000 tar members in the image"), line


def test_the_spool_directory_keeps_its_reserve(work: Path) -> None:
    layer = LayerBuilder().file("f", b"x" * 100_000)
    _, _, desc = image_manifest(work / "img", [layer.tar()])
    write_index(work / "img", {"t": desc})
    free = shutil.disk_usage(work).free
    line, _ = failing_export(
        work, f"oci:{work / 'img'}:t", "--spool-reserve", str(free + (1 << 30))
    )
    assert "the spool directory has" in line and "less than the" in line, line
