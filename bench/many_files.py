"""Benchmark images of many small files, written fast (raw ustar headers, zlib level 1).

- `many_files`: 4 layers of 100,000 small files each (the shape of node_modules or
  site-packages), every layer above the first whiting out a tenth of the files of the one
  below and rewriting another tenth: the per-file cost of the merger.
- `members`: one layer of 2,000,000 empty files, for the memory a path costs.

Both are cached under the bench work directory like the Debian image.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from bench_image import MT_CONFIG, MT_LAYER_GZIP, MT_MANIFEST, ImageStats, LayerStats

TAG = "bench"
MTIME = 1_730_000_000
BLOCK = 512
RECIPE = "1"  # bump when a recipe changes, so a cached layout is rebuilt


def _template(kind: bytes, size: int) -> bytearray:
    block = bytearray(BLOCK)
    mode = b"0000755\0" if kind == b"5" else b"0000644\0"
    for offset, value in ((100, mode), (108, b"0000000\0"), (116, b"0000000\0"),
                          (124, b"%011o\0" % size), (136, b"%011o\0" % MTIME),
                          (156, kind), (257, b"ustar\x0000")):  # fmt: skip
        block[offset : offset + len(value)] = value
    block[148:156] = b" " * 8
    return block


class RawLayer:
    """A layer tar written header by header (no tarfile), gzip-compressed as it goes."""

    def __init__(self, blobs: Path, name: str) -> None:
        self.name, self._blobs = name, blobs
        self._tmp = blobs / f".tmp-{name}-{os.getpid()}"
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in finish()
        self._zip = zlib.compressobj(1, zlib.DEFLATED, 31)
        self._diff, self._blob = hashlib.sha256(), hashlib.sha256()
        self._tar_size = self._blob_size = 0
        self.entries = self.regular_files = self.whiteouts = 0
        self._templates: dict[tuple[bytes, int], tuple[bytearray, int]] = {}
        self._pending: list[bytes] = []

    def add(self, name: str, kind: bytes = b"0", data: bytes = b"") -> None:
        key = (kind, len(data))
        if key not in self._templates:
            block = _template(kind, len(data))
            self._templates[key] = (block, sum(block))
        block, base = self._templates[key]
        raw = name.encode()
        header = bytearray(block)
        header[: len(raw)] = raw
        header[148:155] = b"%06o\0" % (base + sum(raw))
        self._pending.append(bytes(header))
        if data:
            self._pending.append(data + bytes(-len(data) % BLOCK))
        self.entries += 1
        self.regular_files += kind == b"0"
        self.whiteouts += name.rpartition("/")[2].startswith(".wh.")
        if len(self._pending) >= 4096:
            self._flush()

    def _flush(self) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        self._diff.update(data)
        self._tar_size += len(data)
        packed = self._zip.compress(data)
        self._blob.update(packed)
        self._blob_size += len(packed)
        self._file.write(packed)

    def finish(self) -> LayerStats:
        self._pending.append(bytes(2 * BLOCK))
        self._flush()
        tail = self._zip.flush()
        self._blob.update(tail)
        self._blob_size += len(tail)
        self._file.write(tail)
        self._file.close()
        digest = "sha256:" + self._blob.hexdigest()
        os.replace(self._tmp, self._blobs / digest.split(":")[1])
        diff_id = "sha256:" + self._diff.hexdigest()
        return LayerStats(
            self.name, digest, self._blob_size, diff_id, self._tar_size, self.entries,
            self.regular_files, self.whiteouts,
        )  # fmt: skip


def many_files_layers(files: int = 100_000, layers: int = 4) -> Iterator[list[tuple]]:
    """The many-files recipe: per layer, (name, type, data) members in order."""
    for n in range(layers):
        members: list[tuple] = [("srv", b"5", b""), (f"srv/l{n}", b"5", b"")]
        for d in range(files // 1000):
            members.append((f"srv/l{n}/d{d:03}", b"5", b""))
            for i in range(d * 1000, d * 1000 + 1000):
                members.append((f"srv/l{n}/d{d:03}/f{i:06}", b"0", b"%d\n" % i))
        if n:  # a tenth of the layer below whited out, another tenth rewritten
            below = n - 1
            for d in range(files // 1000):
                members.append((f"srv/l{below}/d{d:03}", b"5", b""))
                for i in range(d * 1000, d * 1000 + 1000, 10):
                    members.append((f"srv/l{below}/d{d:03}/.wh.f{i:06}", b"0", b""))
                    members.append((f"srv/l{below}/d{d:03}/f{i + 5:06}", b"0", b"new\n"))
        yield members


def member_layers(count: int = 2_000_000) -> Iterator[list[tuple]]:
    """One layer of `count` empty files, a thousand a directory."""
    members: list[tuple] = []
    for d in range(count // 1000):
        members.append((f"d{d:04}", b"5", b""))
        members += [(f"d{d:04}/f{i:03}", b"0", b"") for i in range(1000)]
    yield members


def write_image(layout: Path, layers: Iterator[list[tuple]]) -> ImageStats:
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    stats = []
    for n, members in enumerate(layers):
        layer = RawLayer(blobs, f"layer{n}")
        for name, kind, data in members:
            layer.add(name, kind, data)
        stats.append(layer.finish())
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [x.diff_id for x in stats]}}  # fmt: skip
    cdigest, csize = _blob(blobs, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": cdigest, "size": csize},
        "layers": [{"mediaType": MT_LAYER_GZIP, "digest": x.digest, "size": x.size} for x in stats],
    }
    mdigest, msize = _blob(blobs, manifest)
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": MT_MANIFEST, "digest": mdigest, "size": msize,
        "annotations": {"org.opencontainers.image.ref.name": TAG}}]}  # fmt: skip
    (layout / "index.json").write_text(json.dumps(index))
    return ImageStats(str(layout), TAG, stats)


def _blob(blobs: Path, obj: dict) -> tuple[str, int]:
    data = json.dumps(obj, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return "sha256:" + digest, len(data)


def cached(work: Path, name: str, layers: Iterator[list[tuple]], log) -> ImageStats:
    """The image `name` under `work`, written first if it is not there."""
    layout, stats_file = work / name, work / f"{name}.recipe-{RECIPE}.json"
    if stats_file.exists() and layout.is_dir():
        return ImageStats.load(stats_file)
    import shutil

    shutil.rmtree(layout, ignore_errors=True)
    log(f"writing the {name} image (once)")
    stats = write_image(layout, layers)
    stats.save(stats_file)
    return stats
