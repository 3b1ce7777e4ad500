"""Sources and the export pipeline: oci layouts, docker-archive files, digests, codecs."""

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from squash.errors import DigestMismatch, InvalidLayer, SquashError, UnsupportedMediaType
from squash.export import export_image
from squash.outputs.docker_archive import DockerArchive
from squash.reference import Platform
from squash.sinks import FileSink, StreamSink
from squash.sources import open_image
from tests.integration.helpers import (
    compress,
    image_manifest,
    manifest_of,
    write_blob,
    write_index,
)
from tests.layertar import layer, listing, member

BASE = layer(member("etc", "dir"), member("etc/a", data=b"A"), member("etc/b", data=b"B"))
TOP = layer(member("etc", "dir"), member("etc/.wh.a"), member("etc/c", data=b"C"))
EXPECTED = {"etc", "etc/b", "etc/c"}


def member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    """The content of the regular file `name` of an archive."""
    extracted = tar.extractfile(name)
    assert extracted is not None, f"{name} is not a regular file"
    return extracted.read()


def squashed_layer(archive: Path) -> bytes:
    """The single layer of a squashed archive, decompressed."""
    with tarfile.open(archive) as tar:
        manifest = json.loads(member_bytes(tar, "manifest.json"))
        assert len(manifest) == 1 and len(manifest[0]["Layers"]) == 1
        data = member_bytes(tar, manifest[0]["Layers"][0])
    if data[:2] == b"\x1f\x8b":
        import gzip

        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return data


def export(source: str, out: Path, **kwargs) -> set[str]:
    platform = kwargs.pop("platform", None)
    image = open_image(source, Platform.parse(platform) if platform else None)
    export_image(image, DockerArchive(FileSink(str(out))), **kwargs)
    return set(listing(squashed_layer(out)))


def oci_layout(tmp_path: Path, compression: str = "gzip") -> Path:
    layout = tmp_path / "layout"
    _, _, desc = image_manifest(layout, [BASE, TOP], compression=compression)
    write_index(layout, {"v1": desc})
    return layout


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("output", ["none", "gzip", "zstd"])
def test_oci_layout_with_each_layer_compression(tmp_path, compression, output) -> None:
    layout = oci_layout(tmp_path, compression)
    assert export(f"oci:{layout}:v1", tmp_path / "out.tar", compression=output) == EXPECTED


def test_oci_layout_without_tag_takes_its_only_image(tmp_path) -> None:
    assert export(f"oci:{oci_layout(tmp_path)}", tmp_path / "o.tar") == EXPECTED


def test_unknown_tag_names_the_tags_there_are(tmp_path) -> None:
    with pytest.raises(SquashError, match=r"no tag 'v2'.*tags: v1"):
        open_image(f"oci:{oci_layout(tmp_path)}:v2")


def test_multi_platform_index_picks_the_platform(tmp_path) -> None:
    layout = tmp_path / "layout"
    _, _, amd = image_manifest(layout, [BASE], compression="gzip")
    _, _, arm = image_manifest(layout, [BASE, TOP], architecture="arm64", variant="v8")
    attestation = dict(
        write_blob(layout, b"{}"),
        mediaType="application/vnd.oci.image.manifest.v1+json",
        platform={"os": "unknown", "architecture": "unknown"},
    )
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [attestation, amd, arm],
    }
    desc = dict(
        write_blob(layout, json.dumps(index).encode()),
        mediaType="application/vnd.oci.image.index.v1+json",
    )
    write_index(layout, {"multi": desc})
    assert export(f"oci:{layout}:multi", tmp_path / "a.tar") == {"etc", "etc/a", "etc/b"}
    assert export(f"oci:{layout}:multi", tmp_path / "b.tar", platform="linux/arm64") == EXPECTED
    with pytest.raises(SquashError, match=r"linux/s390x.*linux/amd64, linux/arm64/v8"):
        open_image(f"oci:{layout}:multi", Platform.parse("linux/s390x"))


def test_schema1_manifest_is_refused_clearly(tmp_path) -> None:
    layout = tmp_path / "layout"
    media = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    desc = dict(write_blob(layout, b'{"schemaVersion":1}'), mediaType=media)
    write_index(layout, {"old": desc})
    with pytest.raises(UnsupportedMediaType, match="schema 1"):
        open_image(f"oci:{layout}:old")


def test_corrupt_layer_fails_with_digest_error_and_leaves_nothing(tmp_path) -> None:
    layout = oci_layout(tmp_path, "gzip")
    manifest = manifest_of(layout, "v1")
    blob = layout / "blobs/sha256" / manifest["layers"][1]["digest"].removeprefix("sha256:")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    out = tmp_path / "out" / "o.tar"
    out.parent.mkdir()
    with pytest.raises(DigestMismatch, match=r"layer 2/2 sha256:.*digest mismatch"):
        export(f"oci:{layout}:v1", out)
    assert list(out.parent.iterdir()) == []


def test_unsupported_layer_media_type(tmp_path) -> None:
    layout = oci_layout(tmp_path)
    manifest = manifest_of(layout, "v1")
    manifest["layers"][0]["mediaType"] = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
    desc = dict(
        write_blob(layout, json.dumps(manifest).encode()),
        mediaType="application/vnd.oci.image.manifest.v1+json",
    )
    write_index(layout, {"helm": desc})
    with pytest.raises(UnsupportedMediaType, match="helm"):
        open_image(f"oci:{layout}:helm")


# -- docker-archive


def _docker_archive(path: Path, layers: list[bytes], layout25: bool, repo_tag: str) -> None:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["A=1"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers],
        },
    }
    config_bytes = json.dumps(config).encode()
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    files: dict[str, bytes] = {}
    links: dict[str, str] = {}
    paths = []
    for n, tar in enumerate(layers):
        if layout25:
            stored = compress(tar, "gzip") if n == 0 else tar
            p = "blobs/sha256/" + hashlib.sha256(stored).hexdigest()
            files[p] = stored
        else:
            p = f"{n:064x}/layer.tar"
            first = layers.index(tar)
            if first != n:  # `docker save` links a repeated layer to the first copy
                links[p] = f"../{first:064x}/layer.tar"
            else:
                files[p] = tar
        paths.append(p)
    config_path = f"blobs/sha256/{config_hex}" if layout25 else f"{config_hex}.json"
    files[config_path] = config_bytes
    files["manifest.json"] = json.dumps(
        [{"Config": config_path, "RepoTags": [repo_tag], "Layers": paths}]
    ).encode()
    with tarfile.open(path, "w") as out:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            out.addfile(info)


@pytest.mark.parametrize("layout25", [False, True], ids=["classic", "docker25"])
def test_docker_archive_layouts(tmp_path, layout25: bool) -> None:
    archive = tmp_path / "saved.tar"
    _docker_archive(archive, [BASE, TOP, BASE], layout25, "example/app:2.0")
    out = tmp_path / "o.tar"
    assert export(f"docker-archive:{archive}", out) == {"etc", "etc/a", "etc/b", "etc/c"}
    with tarfile.open(out) as tar:
        assert json.loads(member_bytes(tar, "manifest.json"))[0]["RepoTags"] == [
            "example/app:2.0.squash"
        ]


def test_docker_archive_layer_that_does_not_match_its_diff_id(tmp_path) -> None:
    archive = tmp_path / "saved.tar"
    _docker_archive(archive, [BASE, TOP], False, "app:1")
    data = bytearray(archive.read_bytes())
    pos = data.find(b"etc/b")
    at = data.find(b"B", pos + 512)
    data[at] = ord("X")
    archive.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch, match="layer 1/2"):
        export(f"docker-archive:{archive}", tmp_path / "o.tar")


def test_not_an_archive(tmp_path) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(os.urandom(2048))
    with pytest.raises(SquashError, match="not a tar archive"):
        open_image(f"docker-archive:{bad}")


def test_truncated_gzip_layer_names_the_layer(tmp_path) -> None:
    """A blob cut short is caught; the message names the layer."""
    layout = tmp_path / "layout"
    gz = compress(layer(member("f", data=os.urandom(200_000))), "gzip")
    desc = write_blob(layout, gz[: len(gz) // 2])
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"diff_ids": []}})
    cfg = dict(
        write_blob(layout, config.encode()), mediaType="application/vnd.oci.image.config.v1+json"
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": cfg,
        "layers": [dict(desc, mediaType="application/vnd.oci.image.layer.v1.tar+gzip")],
    }
    mdesc = dict(
        write_blob(layout, json.dumps(manifest).encode()),
        mediaType="application/vnd.oci.image.manifest.v1+json",
    )
    write_index(layout, {"t": mdesc})
    with pytest.raises((InvalidLayer, DigestMismatch), match="layer 1/1"):
        export(f"oci:{layout}:t", tmp_path / "o.tar")


def test_stream_sink_writes_the_same_bytes_as_a_file(tmp_path) -> None:
    layout = oci_layout(tmp_path)
    image = open_image(f"oci:{layout}:v1")
    export_image(image, DockerArchive(FileSink(str(tmp_path / "file.tar"))))
    stream = io.BytesIO()
    export_image(open_image(f"oci:{layout}:v1"), DockerArchive(StreamSink(stream, str(tmp_path))))
    assert stream.getvalue() == (tmp_path / "file.tar").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.tar", "layout"]


def test_a_flipped_byte_in_a_plain_layer_is_reported_as_a_digest_error(tmp_path) -> None:
    """The tar breaks before the digest is complete; the digest is the better message."""
    layout = oci_layout(tmp_path, "none")
    manifest = manifest_of(layout, "v1")
    blob = layout / "blobs/sha256" / manifest["layers"][0]["digest"].removeprefix("sha256:")
    data = bytearray(blob.read_bytes())
    data[512 + 124 + 4] = 0xCF  # inside the second member's size field
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch, match="layer 1/2"):
        export(f"oci:{layout}:v1", tmp_path / "o.tar")


def test_docker_save_piped_through_squashd(tmp_path) -> None:
    """`docker save app | squashd export docker-archive:- -o - | docker load`."""
    archive = tmp_path / "saved.tar"
    _docker_archive(archive, [BASE, TOP], True, "app:1")
    squashd = [sys.executable, "-m", "squash.cli", "export"]
    with open(archive, "rb") as stdin:
        piped = subprocess.run(
            [*squashd, "docker-archive:-", "-o", "-", "--tmpdir", str(tmp_path)],
            stdin=stdin,
            capture_output=True,
            check=True,
        )
    subprocess.run(
        [*squashd, f"docker-archive:{archive}", "-o", str(tmp_path / "f.tar")], check=True
    )
    assert piped.stdout == (tmp_path / "f.tar").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tar", "saved.tar"]
