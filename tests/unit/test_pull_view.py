"""The registry front's view of an archive, read through ranged reads of its headers:
what a real archive yields, reads that come back short, and hostile archives, which
give a SquashError that says what is wrong (never another exception, never a hang)."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import pytest

from squash.archive_index import MAX_MEMBERS, members
from squash.errors import SquashError
from squash.oci import DOCKER_MANIFEST, OCI_MANIFEST
from storage.base import Artifact
from storage.local import LocalStore
from tests.integration.helpers import LayerBuilder, digest_of, squashd_export, write_oci_layout
from web.v2 import _range

KEY = "a" * 64


class ShortReads(LocalStore):
    """A store whose reads return at most 700 bytes, as a pipe may."""

    def read(self, key: str, offset: int, length: int) -> bytes:
        return super().read(key, offset, min(length, 700))


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    root = tmp_path_factory.mktemp("view")
    layers = [
        LayerBuilder().file("a", b"one\n" * 1000).file("b", b"gone\n").tar(),
        LayerBuilder().whiteout("b").file("c", b"three\n").tar(),
    ]
    layout = write_oci_layout(root / "layout", layers)
    out = root / "out.tar"
    squashd_export(f"oci:{layout.layout}:{layout.tag}", out, "--layer-compression", "gzip")
    return out.read_bytes()


def _view(root: Path, data: bytes, store_type: type[LocalStore] = LocalStore):
    from service.front.documents import read_view

    store = store_type(root)
    store.path(KEY).write_bytes(data)
    return read_view(store, Artifact(KEY, len(data), "", "", 0.0, "host/ns/app"))


@pytest.mark.parametrize("store_type", [LocalStore, ShortReads])
def test_the_view_of_an_archive(tmp_path: Path, archive: bytes, store_type) -> None:
    view = _view(tmp_path, archive, store_type)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        (entry,) = json.loads(tar.extractfile("index.json").read())["manifests"]  # type: ignore[union-attr]
        manifest = tar.extractfile(f"blobs/sha256/{entry['digest'][7:]}").read()  # type: ignore[union-attr]
        layer_desc = json.loads(manifest)["layers"][0]
        layer = tar.extractfile(f"blobs/sha256/{layer_desc['digest'][7:]}").read()  # type: ignore[union-attr]
    assert view.manifests[OCI_MANIFEST].data == manifest
    assert view.manifest("").digest == entry["digest"] == digest_of(manifest)
    docker = json.loads(view.manifest(DOCKER_MANIFEST).data)
    assert docker["mediaType"] == DOCKER_MANIFEST
    assert view.manifest(f"{DOCKER_MANIFEST}, {OCI_MANIFEST}").media_type == OCI_MANIFEST
    member = view.layers[layer_desc["digest"]]
    assert archive[member.offset : member.offset + member.size] == layer
    assert view.document(json.loads(manifest)["config"]["digest"]) == view.config
    assert set(view.digests) == {entry["digest"], digest_of(view.manifests[DOCKER_MANIFEST].data),
                                 view.config.digest, layer_desc["digest"]}  # fmt: skip


def _rewrite(archive: bytes, change) -> bytes:
    """The archive with its members passed through `change(info, data) -> (info, data)`."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive)) as tar,
        tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as new,
    ):
        for info in tar:
            data = tar.extractfile(info).read() if info.isreg() else b""  # type: ignore[union-attr]
            info, data = change(info, data)
            new.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def _config_changed(info: tarfile.TarInfo, data: bytes):
    if data.startswith(b'{"architecture"') or b'"rootfs"' in data[:4096]:
        data = data.replace(b"amd64", b"arm64")
    return info, data


def _symlinked(info: tarfile.TarInfo, data: bytes):
    if info.name == "repositories":
        info.type, info.linkname, info.size = tarfile.SYMTYPE, "index.json", 0
    return info, data


CHANGES = {
    "truncated": lambda a: a[: len(a) // 2],
    "cut in the last header": lambda a: a[: len(a) - 1024 - 300],
    "a header checksum broken": lambda a: a[:1024] + bytes([a[1024] ^ 0x20]) + a[1025:],
    "a size past the end": lambda a: a[:1024] + _resized(a[1024:1536]) + a[1536:],
    "the config changed": lambda a: _rewrite(a, _config_changed),
    "a symlink member": lambda a: _rewrite(a, _symlinked),
    "no index.json": lambda a: _rewrite(a, lambda i, d: (_renamed(i, "index.json"), d)),
    "empty": lambda a: b"",
    "garbage": lambda a: random.Random(5).randbytes(64 << 10),
}
#: what the error says of each
HOSTILE = {
    "truncated": "past the archive's end",
    "cut in the last header": "past the archive's end",
    "a header checksum broken": "bad member header at byte 1024",
    "a size past the end": "runs past the archive's end",
    "the config changed": "the config does not match its digest",
    "a symlink member": "is not a file squashd writes",
    "no index.json": "has no index.json",
    "empty": "past the archive's end",
    "garbage": "bad member header at byte 0",
}


def _resized(header: bytes) -> bytes:
    """The layer's header, its checksum right, its size far past the archive's end."""
    info = tarfile.TarInfo.frombuf(header, "utf-8", "strict")
    info.size = 1 << 33
    return info.tobuf(tarfile.GNU_FORMAT)


def _renamed(info: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    if info.name == name:
        info.name = "other.json"
    return info


@pytest.mark.parametrize(("case", "said"), list(HOSTILE.items()))
def test_hostile_archives_are_refused_clearly(
    tmp_path: Path, archive: bytes, case: str, said: str
) -> None:
    with pytest.raises(SquashError) as raised:
        _view(tmp_path, CHANGES[case](archive))
    assert f"artifact {KEY}" in str(raised.value) and said in str(raised.value)


def test_too_many_members_are_refused() -> None:
    data = b"".join(
        tarfile.TarInfo(f"m{n}").tobuf(tarfile.USTAR_FORMAT) for n in range(MAX_MEMBERS + 1)
    ) + bytes(1024)
    with pytest.raises(SquashError, match="too many members"):
        members(lambda offset, length: data[offset : offset + length], len(data), "test")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=5-", (5, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=90-500", (90, 99)),
        ("bytes=100-", None),
        ("bytes=9-5", None),
        ("bytes=-0", None),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=a-b", None),
    ],
)
def test_ranges(header: str, expected) -> None:
    assert _range(header, 100) == expected


def test_a_keep_suffix_asks_for_a_partial_squash() -> None:
    from service.front.artifacts import keep_suffix

    assert keep_suffix("v1--keep-2") == ("v1", 2)
    assert keep_suffix("v1--keep-") == ("v1--keep-", 0)
    assert keep_suffix("v1") == ("v1", 0)
