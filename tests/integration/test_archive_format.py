"""The squashed archive has the layout `docker save` writes since Docker 25.

oci-layout, index.json, blobs/sha256/<manifest|config|layer>, manifest.json and
repositories; exactly one layer, whose tar header carries its exact size and whose blob
name is the digest of its bytes (docs/archive-format.md).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from testbed.tools import run

from .helpers import (
    COMPRESSIONS,
    T0,
    LayerBuilder,
    SquashedArchive,
    UmociImage,
    decompress,
    image_manifest,
    layer_problems,
    sha256_hex,
    squashd_export,
    write_blob,
    write_index,
    write_oci_layout,
)

pytestmark = pytest.mark.integration

LAYER_MEDIA_TYPES = {
    "none": {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.docker.image.rootfs.diff.tar",
    },
    "gzip": {
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    },
    "zstd": {"application/vnd.oci.image.layer.v1.tar+zstd"},
}

RUNTIME_KEYS = (
    "Env",
    "Entrypoint",
    "Cmd",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
)


# ---------------------------------------------------------------------------------------
# The image: three umoci layers and a config with everything `umoci config` can set
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image(tools, module_work: Path) -> UmociImage:
    img = UmociImage(module_work / "build", name="myapp", tag="v2")
    fs = img.rootfs
    (fs / "app").mkdir()
    (fs / "app/main.sh").write_text("#!/bin/sh\necho main\n")
    (fs / "app/old.txt").write_text("old\n")
    img.commit("one")
    (fs / "app/old.txt").unlink()
    (fs / "app/data.bin").write_bytes(os.urandom(64 * 1024))
    img.commit("two")
    (fs / "app/main.sh").write_text("#!/bin/sh\necho main v2\n")
    img.commit("three")
    img.config(
        "--config.env",
        "PATH=/usr/local/bin:/usr/bin",
        "--config.env",
        "APP_MODE=prod",
        "--config.entrypoint",
        "/bin/sh",
        "--config.entrypoint",
        "-c",
        "--config.cmd",
        "/app/main.sh",
        "--config.workingdir",
        "/app",
        "--config.user",
        "1000:1000",
        "--config.label",
        "org.example.team=platform",
        "--config.label",
        "version=2",
        "--config.exposedports",
        "8080/tcp",
        "--config.exposedports",
        "53/udp",
        "--config.volume",
        "/data",
        "--config.stopsignal",
        "SIGTERM",
    )
    return img


@pytest.fixture(scope="module")
def squashed(image: UmociImage, module_work: Path) -> dict[str, Path]:
    """The image squashed once per layer compression."""
    out = {}
    for compression in COMPRESSIONS:
        path = module_work / f"myapp-{compression}.tar"
        squashd_export(image.source, path, "--layer-compression", compression)
        out[compression] = path
    return out


@pytest.fixture(params=COMPRESSIONS)
def compression(request) -> str:
    return request.param


def source_config(img: UmociImage) -> dict:
    manifest = img.manifest()
    digest = manifest["config"]["digest"].split(":", 1)[1]
    return json.loads((img.layout / "blobs/sha256" / digest).read_bytes())


# ---------------------------------------------------------------------------------------
# Walking the raw tar
# ---------------------------------------------------------------------------------------


def _number(field: bytes) -> int:
    """A tar numeric field: octal, or GNU base-256 when the high bit is set."""
    if field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[0] & 0x40 else value
    digits = field.replace(b"\0", b" ").strip()
    return int(digits, 8) if digits else 0


def _checksum_ok(header: bytes) -> bool:
    stored = _number(header[148:156])
    computed = sum(header[:148]) + 8 * 32 + sum(header[156:512])
    return stored == computed


def _pax_records(data: bytes) -> dict[str, bytes]:
    records, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode()] = value
        pos += length
    return records


def raw_members(archive: bytes) -> list[dict]:
    """Every member of a tar read straight from its 512-byte headers.

    Each: name, the header's own size field, the effective size (PAX `size` wins),
    the offsets of its header and data. Fails on a bad checksum or a truncated tar.
    """
    members: list[dict] = []
    pos = 0
    pending: dict[str, bytes] = {}
    long_name: bytes | None = None
    while True:
        header = archive[pos : pos + 512]
        assert len(header) == 512, f"the archive ends inside a header at offset {pos}"
        if header == b"\0" * 512:
            rest = archive[pos:]
            assert len(rest) >= 1024, "the archive does not end with two zero blocks"
            assert rest.count(0) == len(rest), "non-zero bytes after the end-of-archive block"
            return members
        assert _checksum_ok(header), f"bad header checksum at offset {pos}"
        typeflag = header[156:157]
        field_size = _number(header[124:136])
        data_start = pos + 512
        data = archive[data_start : data_start + field_size]
        next_header = data_start + (field_size + 511) // 512 * 512
        if typeflag in (b"x", b"g"):
            if typeflag == b"x":
                pending = _pax_records(data)
        elif typeflag == b"L":
            long_name = data.rstrip(b"\0")
        else:
            name = header[0:100].rstrip(b"\0")
            prefix = header[345:500].rstrip(b"\0") if header[257:262] == b"ustar" else b""
            if prefix:
                name = prefix + b"/" + name
            name = pending.get("path", long_name or name)
            size = int(pending["size"]) if "size" in pending else field_size
            next_header = data_start + (size + 511) // 512 * 512
            members.append(
                {
                    "name": name.decode("utf-8", "surrogateescape"),
                    "type": typeflag,
                    "field_size": field_size,
                    "size": size,
                    "header_offset": pos,
                    "data_offset": data_start,
                    "next_header": next_header,
                }
            )
            pending, long_name = {}, None
        pos = next_header


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------


def test_manifest_json_has_exactly_one_layer(squashed, compression: str) -> None:
    arc = SquashedArchive.open(squashed[compression])
    manifest = arc.manifest_json
    assert isinstance(manifest, list) and len(manifest) == 1, manifest
    entry = manifest[0]
    assert set(entry) >= {"Config", "RepoTags", "Layers"}, entry
    assert len(entry["Layers"]) == 1, entry["Layers"]
    for path in (entry["Config"], entry["Layers"][0]):
        assert path.startswith("blobs/sha256/"), path
        assert path in arc.members, f"{path} named in manifest.json but not in the archive"
    assert {"oci-layout", "index.json", "manifest.json", "repositories"} <= set(arc.members)
    assert json.loads(arc.members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    # Never the legacy layout (<id>/json, <id>/layer.tar)
    legacy = [n for n in arc.members if n.endswith(("/layer.tar", "/json", "/VERSION"))]
    assert not legacy, f"legacy docker save entries in the archive: {legacy}"


def test_layer_header_size_is_exact(squashed, compression: str) -> None:
    """The layer's tar header says exactly how many bytes follow; the next header (or the
    end of the archive) starts right after them, rounded up to 512."""
    data = squashed[compression].read_bytes()
    arc = SquashedArchive.open(squashed[compression])
    members = {m["name"].rstrip("/"): m for m in raw_members(data)}
    layer = members[arc.layer_name]
    blob = data[layer["data_offset"] : layer["data_offset"] + layer["size"]]
    assert layer["field_size"] == layer["size"], (
        f"the ustar size field ({layer['field_size']}) differs from the PAX size ({layer['size']})"
    )
    assert sha256_hex(blob) == arc.layer_name.rsplit("/", 1)[1], (
        "the bytes the header's size field covers do not hash to the blob's name: the "
        "size is not exact"
    )
    padding = data[layer["data_offset"] + layer["size"] : layer["next_header"]]
    assert padding == b"\0" * len(padding), "non-zero padding after the layer"
    following = data[layer["next_header"] : layer["next_header"] + 512]
    assert len(following) == 512
    assert following == b"\0" * 512 or _checksum_ok(following), (
        f"no tar header right after the layer's data (offset {layer['next_header']})"
    )
    assert blob == arc.layer_blob


def test_blob_names_are_digests(squashed, compression: str) -> None:
    arc = SquashedArchive.open(squashed[compression])
    blobs = {n: b for n, b in arc.members.items() if n.startswith("blobs/")}
    assert len(blobs) == 3, f"expected manifest, config and layer blobs: {sorted(blobs)}"
    for name, blob in blobs.items():
        assert name.startswith("blobs/sha256/")
        assert sha256_hex(blob) == name.rsplit("/", 1)[1], f"{name} is not named by its digest"


def test_diff_id_is_the_uncompressed_layer_digest(squashed, compression: str) -> None:
    arc = SquashedArchive.open(squashed[compression])
    diff_ids = arc.config["rootfs"]["diff_ids"]
    assert arc.config["rootfs"]["type"] == "layers"
    assert len(diff_ids) == 1, diff_ids
    blob = arc.layer_blob
    if compression == "none":
        assert f"sha256:{sha256_hex(blob)}" == diff_ids[0]
        assert blob[257:262] == b"ustar", "the uncompressed layer is not a tar"
    else:
        magic = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}[compression]
        assert blob.startswith(magic), f"the layer is not {compression}-compressed"
        assert f"sha256:{sha256_hex(decompress(blob))}" == diff_ids[0]


def test_oci_index_and_manifest(squashed, compression: str) -> None:
    arc = SquashedArchive.open(squashed[compression])
    index = arc.json("index.json")
    assert index["schemaVersion"] == 2
    assert len(index["manifests"]) == 1, index
    desc = index["manifests"][0]
    annotations = desc.get("annotations", {})
    assert "io.containerd.image.name" in annotations, desc
    assert "org.opencontainers.image.ref.name" in annotations, desc
    repo_tag = arc.manifest_json[0]["RepoTags"][0]
    name = annotations["io.containerd.image.name"]
    assert name in (repo_tag, f"docker.io/library/{repo_tag}"), (name, repo_tag)
    ref_name = annotations["org.opencontainers.image.ref.name"]
    assert ref_name in (repo_tag.rsplit(":", 1)[1], repo_tag, name), ref_name

    manifest_blob = arc.members[f"blobs/sha256/{desc['digest'].split(':', 1)[1]}"]
    assert len(manifest_blob) == desc["size"]
    manifest = json.loads(manifest_blob)
    assert desc["mediaType"] == manifest.get("mediaType", desc["mediaType"])
    config_path = f"blobs/sha256/{manifest['config']['digest'].split(':', 1)[1]}"
    assert config_path == arc.manifest_json[0]["Config"]
    assert manifest["config"]["size"] == len(arc.members[config_path])
    assert len(manifest["layers"]) == 1
    layer = manifest["layers"][0]
    assert f"blobs/sha256/{layer['digest'].split(':', 1)[1]}" == arc.layer_name
    assert layer["size"] == len(arc.layer_blob)
    assert layer["mediaType"] in LAYER_MEDIA_TYPES[compression], layer["mediaType"]


def test_repositories_file(squashed) -> None:
    arc = SquashedArchive.open(squashed["none"])
    repositories = arc.json("repositories")
    name, tag = arc.manifest_json[0]["RepoTags"][0].rsplit(":", 1)
    assert tag in repositories.get(name, {}), repositories


def test_default_tag_for_an_oci_layout(squashed) -> None:
    """`<name>:<tag>.squash`; for `oci:DIR:TAG` the name is DIR's base name."""
    arc = SquashedArchive.open(squashed["gzip"])
    assert arc.manifest_json[0]["RepoTags"] == ["myapp:v2.squash"]


def test_default_tag_for_a_docker_archive(image: UmociImage, work: Path) -> None:
    """For a `docker save` archive the name and tag come from its RepoTags."""
    source = work / "saved.tar"
    run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            f"oci:{image.ref}",
            f"docker-archive:{source}:registry.example.com:5000/team/myapp:1.2",
        ]
    )
    out = work / "out.tar"
    squashd_export(f"docker-archive:{source}", out)
    tags = SquashedArchive.open(out).manifest_json[0]["RepoTags"]
    assert tags == ["registry.example.com:5000/team/myapp:1.2.squash"]


def test_config_keeps_runtime_settings(image: UmociImage, squashed, compression: str) -> None:
    arc = SquashedArchive.open(squashed[compression])
    src = source_config(image)
    got = arc.config
    for key in RUNTIME_KEYS:
        assert got["config"].get(key) == src["config"].get(key), (
            f"config.{key}: squashed {got['config'].get(key)!r}, source {src['config'].get(key)!r}"
        )
    # make sure the source really had them all (a check of umoci config)
    assert all(src["config"].get(key) for key in RUNTIME_KEYS), src["config"]
    for key in ("os", "architecture"):
        assert got[key] == src[key]


def test_history_is_one_entry_naming_the_source(image: UmociImage, squashed) -> None:
    arc = SquashedArchive.open(squashed["none"])
    history = arc.config["history"]
    assert len(history) == 1, history
    assert not history[0].get("empty_layer"), history[0]
    manifest_digest = json.loads((image.layout / "index.json").read_bytes())["manifests"][0][
        "digest"
    ]
    assert manifest_digest in history[0].get("comment", ""), (
        f"the history comment should name the source manifest digest {manifest_digest}: "
        f"{history[0]}"
    )


def test_config_keeps_healthcheck_and_variant(tools, work: Path) -> None:
    """What umoci config cannot set: Healthcheck, os/architecture/variant, ArgsEscaped."""
    config = {
        "Env": ["A=1"],
        "Cmd": ["/bin/true"],
        "Healthcheck": {
            "Test": ["CMD-SHELL", "test -f /ok"],
            "Interval": 30_000_000_000,
            "Timeout": 5_000_000_000,
            "Retries": 3,
        },
        "StopSignal": "SIGQUIT",
        "Volumes": {"/var/lib/x": {}},
    }
    layout = work / "hc"
    layout.mkdir()
    layer = LayerBuilder().file("x", b"x").tar()
    _, _, desc = image_manifest(layout, [layer], config=config, architecture="arm64", variant="v8")
    desc.pop("platform")
    write_index(layout, {"t": desc})
    out = work / "out.tar"
    squashd_export(f"oci:{layout}:t", out)
    got = SquashedArchive.open(out).config
    for key, value in config.items():
        assert got["config"].get(key) == value, (key, got["config"].get(key))
    assert (got["os"], got["architecture"], got.get("variant")) == ("linux", "arm64", "v8")


def test_platform_selection(tools, work: Path) -> None:
    """A tag naming an image index: linux/amd64 by default, --platform picks another,
    an attestation manifest (unknown/unknown) is never chosen."""
    layout = work / "multi"
    layout.mkdir()
    descs = []
    for arch, variant in (("amd64", None), ("arm64", "v8"), ("unknown", None)):
        layer = LayerBuilder().file("arch", arch.encode()).tar()
        _, _, desc = image_manifest(
            layout,
            [layer],
            architecture=arch,
            variant=variant,
            os_name="unknown" if arch == "unknown" else "linux",
        )
        descs.append(desc)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": descs,
    }
    blob = json.dumps(index).encode()
    index_desc = {
        "mediaType": "application/vnd.oci.image.index.v1+json",
        **write_blob(layout, blob),
    }
    write_index(layout, {"multi": index_desc})

    def squash_and_read(*args: str) -> tuple[dict, bytes]:
        out = work / f"out{len(args)}.tar"
        squashd_export(f"oci:{layout}:multi", out, *args)
        arc = SquashedArchive.open(out)
        with tarfile.open(fileobj=io.BytesIO(arc.layer_tar())) as t:
            member = t.extractfile("arch")
            assert member is not None
            return arc.config, member.read()

    cfg, content = squash_and_read()
    assert (cfg["architecture"], content) == ("amd64", b"amd64")
    cfg, content = squash_and_read("--platform", "linux/arm64/v8")
    assert (cfg["architecture"], cfg.get("variant"), content) == ("arm64", "v8", b"arm64")
    result = squashd_export(
        f"oci:{layout}:multi", work / "none.tar", "--platform", "unknown/unknown", check=False
    )
    assert result.returncode != 0, "an attestation manifest was chosen"
    assert not (work / "none.tar").exists()


# ---------------------------------------------------------------------------------------
# The squashed layer's own form
# ---------------------------------------------------------------------------------------


def test_layer_is_well_formed_umoci_image(squashed, compression: str) -> None:
    problems = layer_problems(SquashedArchive.open(squashed[compression]).layer_tar())
    assert not problems, "\n".join(problems)


def test_layer_is_well_formed_handmade(tools, work: Path) -> None:
    """No path twice, no whiteout, parents first, hard links after their clean target."""
    l1 = (
        LayerBuilder(mtime=T0)
        .dir("./", mode=0o755)
        .dir("data")
        .file("data/orig", b"content")
        .hardlink("data/l1", "data/orig")
        .hardlink("data/l2", "./data/orig")
        .dir("o")
        .file("o/x", b"x")
        .dir("z")
        .file("z/f", b"f")
    )
    l2 = (
        LayerBuilder(mtime=T0 + 100)
        .whiteout("data/orig")
        .dir("o")
        .opaque("o")
        .file("o/y", b"y")
        .file("dup", b"1")
        .file("dup", b"2")
        .file("a/../z/g", b"g")  # cleaned to z/g
        .dir("/z", mode=0o700)  # after its child in this layer
    )
    img = write_oci_layout(work / "src", [l1, l2], compression="none")
    out = work / "out.tar"
    squashd_export(img.source, out)
    layer = SquashedArchive.open(out).layer_tar()
    problems = layer_problems(layer)
    assert not problems, "\n".join(problems)
    with tarfile.open(fileobj=io.BytesIO(layer), errors="surrogateescape") as t:
        names = sorted(m.name.strip("/") for m in t.getmembers())
    names = sorted(n.removeprefix("./") for n in names)
    assert [n for n in names if n not in ("", ".")] == [
        "data",
        "data/l1",
        "data/l2",
        "dup",
        "o",
        "o/y",
        "z",
        "z/f",
        "z/g",
    ]
