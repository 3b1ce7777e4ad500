"""The CLI's contract: clear one-line errors, nothing half-written, deterministic output.

On failure `squashd export` exits non-zero with one line on stderr naming the image or
layer, and leaves neither OUT nor a temporary file in OUT's directory (nor in TMPDIR).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from .helpers import (
    COMPRESSIONS,
    OCI_MANIFEST,
    LayerBuilder,
    SquashedArchive,
    blob_path,
    squashd_export,
    write_blob,
    write_index,
    write_oci_layout,
)

pytestmark = pytest.mark.integration


def big_layers() -> list[LayerBuilder]:
    """Two layers, large enough that output is being written before the lower one is
    read to its end (the engine streams from the top layer down)."""
    lower = LayerBuilder().dir("lower")
    for i in range(8):
        lower.file(f"lower/blob{i}", os.urandom(64 * 1024))
    upper = LayerBuilder().dir("upper").file("upper/file", os.urandom(256 * 1024))
    return [lower, upper]


def failing_export(work: Path, source: str, *args: str) -> tuple[str, Path]:
    """Run an export expected to fail; check it left nothing behind; return its stderr."""
    outdir, tmpdir = work / "outdir", work / "tmpdir"
    outdir.mkdir(exist_ok=True)
    tmpdir.mkdir(exist_ok=True)
    out = outdir / "out.tar"
    proc = squashd_export(source, out, *args, check=False, env={"TMPDIR": str(tmpdir)})
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode != 0, f"squashd export {source} succeeded; stderr: {stderr}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert not out.exists(), "a partial OUT file was left behind"
    assert sorted(os.listdir(outdir)) == [], f"left in OUT's directory: {os.listdir(outdir)}"
    assert sorted(os.listdir(tmpdir)) == [], f"left in TMPDIR: {os.listdir(tmpdir)}"
    return lines[0], out


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------
# Corrupt blobs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compression", "where"),
    [
        ("none", "file content"),  # the tar stays valid: only the digest can tell
        ("gzip", "gzip header mtime"),  # gzip does not check it: only the digest can tell
    ],
)
def test_corrupt_layer_fails_on_its_digest(tools, work: Path, compression, where) -> None:
    img = write_oci_layout(work / "src", big_layers(), compression=compression)
    lower = img.manifest["layers"][0]["digest"]
    path = blob_path(img.layout, lower)
    if where == "file content":
        data = path.read_bytes()
        flip(path, data.index(b"lower/blob3") + 512 + 1000)  # inside blob3's data
    else:
        flip(path, 5)  # gzip MTIME (bytes 4-7)
    line, _ = failing_export(work, img.source)
    assert "digest" in line.lower(), line
    assert lower.split(":", 1)[1][:12] in line, f"the error does not name layer {lower}: {line}"


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_corrupt_compressed_stream(tools, work: Path, compression: str) -> None:
    """A byte flipped inside the compressed data: whichever check trips first, the error
    names the layer."""
    img = write_oci_layout(work / "src", big_layers(), compression=compression)
    lower = img.manifest["layers"][0]["digest"]
    path = blob_path(img.layout, lower)
    flip(path, path.stat().st_size // 2)
    line, _ = failing_export(work, img.source)
    assert lower.split(":", 1)[1][:12] in line, f"the error does not name layer {lower}: {line}"


def test_layer_size_mismatch(tools, work: Path) -> None:
    """The manifest's size for a layer is one byte short of the blob."""
    img = write_oci_layout(work / "src", big_layers(), compression="gzip")
    manifest = json.loads(json.dumps(img.manifest))
    manifest["layers"][0]["size"] -= 1
    desc = {"mediaType": OCI_MANIFEST, **write_blob(img.layout, json.dumps(manifest).encode())}
    write_index(img.layout, {"t": desc})
    line, _ = failing_export(work, img.source)
    lower = manifest["layers"][0]["digest"]
    assert lower.split(":", 1)[1][:12] in line, f"the error does not name layer {lower}: {line}"


# ---------------------------------------------------------------------------------------
# Bad references
# ---------------------------------------------------------------------------------------


def test_unknown_tag(tools, work: Path) -> None:
    img = write_oci_layout(work / "src", [LayerBuilder().file("f", b"f")], tag="present")
    line, _ = failing_export(work, f"oci:{img.layout}:absent")
    assert "absent" in line, line


@pytest.mark.parametrize("transport", ["oci", "docker-archive"])
def test_nonexistent_path(tools, work: Path, transport: str) -> None:
    missing = work / "no" / "such" / "place"
    line, _ = failing_export(work, f"{transport}:{missing}" + (":t" if transport == "oci" else ""))
    assert str(missing) in line, line


def test_not_an_image_layout(tools, work: Path) -> None:
    (work / "empty-dir").mkdir()
    line, _ = failing_export(work, f"oci:{work / 'empty-dir'}:t")
    assert "empty-dir" in line, line


def test_schema1_manifest_is_refused(tools, work: Path) -> None:
    layout = work / "s1"
    layout.mkdir()
    schema1 = {"schemaVersion": 1, "name": "x", "tag": "t", "fsLayers": [], "history": []}
    desc = {
        "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws",
        **write_blob(layout, json.dumps(schema1).encode()),
    }
    write_index(layout, {"t": desc})
    failing_export(work, f"oci:{layout}:t")


def test_unsupported_layer_media_type(tools, work: Path) -> None:
    img = write_oci_layout(work / "src", [LayerBuilder().file("f", b"f")], compression="none")
    manifest = json.loads(json.dumps(img.manifest))
    manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+bzip2"
    desc = {"mediaType": OCI_MANIFEST, **write_blob(img.layout, json.dumps(manifest).encode())}
    write_index(img.layout, {"t": desc})
    line, _ = failing_export(work, img.source)
    assert "bzip2" in line or manifest["layers"][0]["digest"].split(":")[1][:12] in line, line


# ---------------------------------------------------------------------------------------
# Invalid layers (merge rules 3 and 4)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [
        pytest.param(LayerBuilder().dir("d").file("d/.wh.", b""), id="bare-whiteout"),
        pytest.param(LayerBuilder().file("../escape", b"x"), id="dotdot-name"),
        pytest.param(LayerBuilder().dir("a").file("a/../../escape", b"x"), id="dotdot-inside"),
        pytest.param(
            LayerBuilder().file("f", b"x").hardlink("h", "../../etc/passwd"),
            id="dotdot-hardlink-target",
        ),
    ],
)
def test_invalid_layer_is_refused(tools, work: Path, layer: LayerBuilder) -> None:
    base = LayerBuilder().dir("etc").file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
    img = write_oci_layout(work / "src", [base, layer], compression="gzip")
    bad = img.manifest["layers"][1]["digest"]
    line, _ = failing_export(work, img.source)
    assert bad.split(":", 1)[1][:12] in line, f"the error does not name layer {bad}: {line}"


# ---------------------------------------------------------------------------------------
# Output: stdout, determinism, --tag
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tools, module_work: Path) -> str:
    layers = big_layers()
    layers.append(LayerBuilder().whiteout("lower/blob0").file("upper/more", b"more"))
    return write_oci_layout(module_work / "det", layers, compression="gzip").source


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_stdout_equals_file_and_is_deterministic(source: str, work: Path, compression) -> None:
    to_file, again = work / "file.tar", work / "again.tar"
    squashd_export(source, to_file, "--layer-compression", compression)
    squashd_export(source, again, "--layer-compression", compression)
    piped = work / "piped.tar"
    with piped.open("wb") as f:
        squashd_export(source, "-", "--layer-compression", compression, stdout=f)
    first = to_file.read_bytes()
    assert piped.read_bytes() == first, "`-o -` differs from `-o FILE`"
    assert again.read_bytes() == first, "two runs of the same export differ"


def test_output_depends_on_the_image_not_its_location(source: str, work: Path) -> None:
    """docs/service.md: an artifact is named by what determines its bytes (source manifest
    digest, platform, tag, options, format version) -- so the same image read from
    another place, with the same --tag, must give the same bytes."""
    layout = Path(source.removeprefix("oci:").rsplit(":", 1)[0])
    moved = work / "elsewhere" / "copy"
    shutil.copytree(layout, moved)
    a, b = work / "a.tar", work / "b.tar"
    squashd_export(source, a, "--tag", "same:tag")
    squashd_export(f"oci:{moved}:t", b, "--tag", "same:tag")
    if a.read_bytes() != b.read_bytes():
        ca = SquashedArchive.open(a).config
        cb = SquashedArchive.open(b).config
        assert ca == cb, f"configs differ:\n{json.dumps(ca)}\n{json.dumps(cb)}"
        pytest.fail("the archives differ although their configs are equal")


def test_tag_option(source: str, work: Path) -> None:
    out = work / "out.tar"
    squashd_export(source, out, "--tag", "myname:v1")
    arc = SquashedArchive.open(out)
    assert arc.manifest_json[0]["RepoTags"] == ["myname:v1"]
    annotations = arc.json("index.json")["manifests"][0]["annotations"]
    assert annotations["io.containerd.image.name"] in ("myname:v1", "docker.io/library/myname:v1")
    assert "myname" in arc.json("repositories"), arc.json("repositories")
