"""One image, three sources: `oci:DIR:TAG`, `docker-archive:FILE` and `docker://HOST/NAME:TAG`
must present it as the same `Image` (squash/image.py), and squash it to the same bytes.

The image is built once: three layers with real content (an incompressible file larger
than a peek, a hard link, a symlink, whiteouts, an opaque directory; gzip and
uncompressed) and a config of more than 64 KiB. It is written as an OCI layout, turned
into a `docker save` archive by skopeo, and uploaded byte for byte into the test
registry. Every test of `TestSourceConformance` runs once per source and asserts the
same contract; what legitimately differs between sources (the image digest of a
`docker save` archive, where layers lie, the words of a "not found") is stated once per
source in `Presented`.

It lives with the registry tests because one of the three sources is a real
distribution registry process (tests/registry/fixtures.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from squash.errors import DigestMismatch, RegistryError, SquashError
from squash.export import ExportResult, export_image
from squash.image import PEEK_BYTES, Image, StoredLayer
from squash.outputs.docker_archive import DockerArchive
from squash.sinks import FileSink
from squash.sources import open_image
from testbed.registry import Registry
from testbed.tools import run
from tests.integration.helpers import (
    HandmadeImage,
    LayerBuilder,
    SquashedArchive,
    blob_path,
    require_tool,
    sha256_hex,
    write_oci_layout,
)
from tests.registry.harness import FaultProxy, random_bytes, upload_verbatim

pytestmark = pytest.mark.integration

TAG = "v1"
MISSING = "no-such-tag"
REPOSITORY = "squashd/conformance"  # in the test registry
ARCHIVE_NAME = "example.com/conformance/app"  # the RepoTags name in the docker archive
OUT_TAG = "conformance/app:flat"  # written into every export (as `--tag` does)
CORRUPT = 1  # the layer whose stored bytes get one byte flipped
COMPRESSIONS = ["gzip", "gzip", "none"]  # skopeo cannot put zstd into a docker archive
CONFIG = {
    "Env": ["PATH=/usr/bin:/bin", "A=1"],
    "Cmd": ["/usr/bin/tool"],
    "WorkingDir": "/opt",
    # 80 000 hex digits: the config blob is larger than 64 KiB
    "Labels": {"org.example.padding": random_bytes(40_000, seed=62).hex()},
}
SOURCES = ["oci", "docker-archive", "docker"]


def _layers() -> list[LayerBuilder]:
    base = (
        LayerBuilder()
        .dir("etc")
        .file("etc/hostname", b"base\n")
        .file("etc/os-release", b'NAME="squashd conformance"\n')
        .dir("usr")
        .dir("usr/bin")
        .file("usr/bin/tool", b"#!/bin/sh\necho tool\n", mode=0o755)
        .hardlink("usr/bin/tool-alias", "usr/bin/tool")
        .symlink("usr/bin/t", "tool")
        .dir("data")
        .file("data/big.bin", random_bytes(PEEK_BYTES + 40_000, seed=61))  # more than a peek
        .file("data/old", b"deleted by the next layer\n")
    )
    changes = (
        LayerBuilder()
        .whiteout("data/old")
        .file("etc/hostname", b"changed\n")
        .dir("opt")
        .file("opt/notes.txt", b"".join(b"note %d\n" % n for n in range(4000)))
    )
    top = (
        LayerBuilder()
        .opaque("data")
        .file("data/new", b"the only file left in /data\n")
        .whiteout("usr/bin/t")
    )
    return [base, changes, top]


@dataclasses.dataclass(frozen=True)
class Sample:
    layout: HandmadeImage  # the OCI layout everything else is made from
    tars: list[bytes]  # the uncompressed layers, bottom first
    archive: Path  # the same image as a `docker save` archive (skopeo's)

    @property
    def diff_ids(self) -> list[str]:
        return [f"sha256:{sha256_hex(tar)}" for tar in self.tars]

    def layer_digest(self, n: int) -> str:
        digest: str = self.layout.manifest["layers"][n]["digest"]
        return digest


@dataclasses.dataclass(frozen=True)
class Presented:
    """The sample image as one source presents it."""

    kind: str
    source: str  # what `open_image` is given
    missing: str  # the same image under a tag it does not have
    not_found: str  # regex: the source's own words for a missing tag
    not_found_type: type[SquashError]
    image_digest: str  # what Image.manifest_digest must be
    local: bool  # the stored layer bytes lie in a local file
    corrupt: Callable[[int, Path], str]  # a source of the image, layer N's blob flipped


@pytest.fixture(scope="module")
def sample(module_work: Path) -> Sample:
    tars = [layer.tar() for layer in _layers()]
    layout = write_oci_layout(
        module_work / "layout", tars, tag=TAG, compression=COMPRESSIONS, config=CONFIG
    )
    assert layout.manifest["config"]["size"] > 64 << 10, "the config should exceed 64 KiB"
    archive = module_work / "saved.tar"
    skopeo = require_tool("skopeo")
    run(
        [
            skopeo,
            "--insecure-policy",
            "copy",
            "--quiet",
            f"oci:{layout.ref}",
            f"docker-archive:{archive}:{ARCHIVE_NAME}:{TAG}",
        ]
    )
    return Sample(layout, tars, archive)


@pytest.fixture(scope="module")
def pushed(registry: Registry, sample: Sample) -> str:
    """The sample uploaded verbatim (skopeo would gzip the uncompressed layer)."""
    layout = sample.layout
    digest = upload_verbatim(registry, REPOSITORY, TAG, layout.layout, layout.manifest_digest)
    assert digest == layout.manifest_digest
    return digest


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def _oci(sample: Sample) -> Presented:
    layout = sample.layout

    def corrupt(n: int, work: Path) -> str:
        copy = work / "corrupt-layout"
        shutil.copytree(layout.layout, copy)
        blob = blob_path(copy, sample.layer_digest(n))
        _flip(blob, blob.stat().st_size // 2)
        return f"oci:{copy}:{TAG}"

    return Presented(
        kind="oci",
        source=layout.source,
        missing=f"oci:{layout.layout}:{MISSING}",
        not_found=rf"no tag '{MISSING}' in the layout \(tags: {TAG}\)",
        not_found_type=SquashError,
        image_digest=layout.manifest_digest,
        local=True,
        corrupt=corrupt,
    )


def _docker_archive(sample: Sample) -> Presented:
    def corrupt(n: int, work: Path) -> str:
        copy = work / "corrupt-saved.tar"
        shutil.copyfile(sample.archive, copy)
        with tarfile.open(copy) as tar:
            manifest_json = tar.extractfile("manifest.json")
            assert manifest_json is not None
            member = tar.getmember(json.load(manifest_json)[0]["Layers"][n])
        assert member.isfile(), f"{member.name}: skopeo wrote the layer as a link"
        _flip(copy, member.offset_data + member.size // 2)
        return f"docker-archive:{copy}"

    return Presented(
        kind="docker-archive",
        source=f"docker-archive:{sample.archive}",
        missing=f"docker-archive:{sample.archive}:{ARCHIVE_NAME}:{MISSING}",
        not_found=rf"the archive has no image tagged '{re.escape(ARCHIVE_NAME)}:{MISSING}'",
        not_found_type=SquashError,
        # a `docker save` archive holds no manifest: its image is named by its config
        image_digest=sample.layout.manifest["config"]["digest"],
        local=True,
        corrupt=corrupt,
    )


def _registry(sample: Sample, registry: Registry, proxy: FaultProxy) -> Presented:
    def corrupt(n: int, work: Path) -> str:
        proxy.flip(sample.layer_digest(n))  # the middle byte of every GET of the blob
        return proxy.ref(REPOSITORY, TAG)

    return Presented(
        kind="docker",
        source=registry.ref(REPOSITORY, TAG),
        missing=registry.ref(REPOSITORY, MISSING),
        not_found=rf"{re.escape(registry.host)}/{REPOSITORY}:{MISSING}: not found \(404\)",
        not_found_type=RegistryError,
        image_digest=sample.layout.manifest_digest,
        local=False,
        corrupt=corrupt,
    )


@pytest.fixture
def presented(request: pytest.FixtureRequest, sample: Sample) -> Presented:
    kind = request.param
    if kind == "oci":
        return _oci(sample)
    if kind == "docker-archive":
        return _docker_archive(sample)
    assert kind == "docker", kind
    request.getfixturevalue("pushed")
    registry: Registry = request.getfixturevalue("registry")
    proxy: FaultProxy = request.getfixturevalue("fault_proxy")
    return _registry(sample, registry, proxy)


@contextlib.contextmanager
def _opened(source: str) -> Iterator[Image]:
    image = open_image(source)
    try:
        yield image
    finally:
        image.close()


def _stored(layer: StoredLayer) -> bytes:
    with layer.open_stored() as stream:
        return stream.read()


def _export(image: Image, out: Path) -> ExportResult[None]:
    """As the CLI exports to a file (`squashd export SOURCE -o OUT --tag OUT_TAG`)."""
    return export_image(image, DockerArchive(FileSink(str(out))), tag=OUT_TAG)


@pytest.mark.parametrize("presented", SOURCES, indirect=True)
class TestSourceConformance:
    def test_the_image_is_the_same(self, presented: Presented, sample: Sample) -> None:
        with _opened(presented.source) as image:
            assert image.config == sample.layout.config
            assert image.config["rootfs"]["diff_ids"] == sample.diff_ids
            assert len(image.layers) == len(sample.tars)
            assert image.manifest_digest == presented.image_digest
            assert image.tag == TAG
            count = len(image.layers)
            for n, layer in enumerate(image.layers):
                assert f"layer {n + 1}/{count}" in layer.label, layer.label
                assert layer.diff_id in (None, sample.diff_ids[n]), layer.label
                assert (layer.digest, layer.diff_id) != (None, None), (
                    f"{layer.label}: neither a digest nor a diff_id: nothing checks its bytes"
                )

    def test_each_layer_tar_hashes_to_its_diff_id(
        self, presented: Presented, sample: Sample
    ) -> None:
        with _opened(presented.source) as image:
            for n, layer in enumerate(image.layers):
                stored = _stored(layer)
                reported: list[int] = []
                with layer.open_tar(reported.append) as tar:
                    data = tar.read()
                assert f"sha256:{sha256_hex(data)}" == image.config["rootfs"]["diff_ids"][n]
                assert data == sample.tars[n], f"{layer.label}: not the layer built, in order"
                assert sum(reported) == len(stored), (
                    f"{layer.label}: progress was told of {sum(reported)} stored bytes, "
                    f"{len(stored)} were read"
                )

    def test_stored_bytes_digest_size_and_location(
        self, presented: Presented, sample: Sample
    ) -> None:
        with _opened(presented.source) as image:
            assert image.total_size == sum(len(_stored(layer)) for layer in image.layers)
            for n, layer in enumerate(image.layers):
                stored = _stored(layer)
                if layer.size is not None:
                    assert len(stored) == layer.size, layer.label
                if layer.digest is not None:
                    assert f"sha256:{sha256_hex(stored)}" == layer.digest, layer.label
                location = layer.location()
                plain = layer.plain_file()
                if not presented.local:
                    assert location is None and plain is None, (layer.label, location, plain)
                    continue
                assert location is not None, f"{layer.label}: a local layer has a location"
                path, offset = location
                with open(path, "rb") as f:
                    f.seek(offset)
                    assert f.read(len(stored)) == stored, f"{layer.label}: not at {location}"
                uncompressed = stored == sample.tars[n]
                assert plain == (location if uncompressed else None), (layer.label, plain)

    def test_open_start_and_peek(self, presented: Presented, sample: Sample) -> None:
        with _opened(presented.source) as image:
            for n, layer in enumerate(image.layers):
                stored = _stored(layer)
                for limit in (1, 512, PEEK_BYTES, len(stored) + 4096):
                    with layer.open_start(limit) as stream:
                        start = stream.read()
                    assert len(start) >= min(limit, len(stored)), (layer.label, limit)
                    assert start == stored[: len(start)], (layer.label, limit)
                peeked = layer.peek()
                tar = sample.tars[n]
                assert len(peeked) >= min(len(tar), 512), f"{layer.label}: peek {len(peeked)}"
                assert tar.startswith(peeked), f"{layer.label}: peek is not the tar's start"
            # the layer larger than a peek: from its first stored bytes only, not all of it
            assert len(sample.tars[0]) > PEEK_BYTES
            assert len(image.layers[0].peek()) < len(sample.tars[0])

    def test_a_flipped_byte_is_a_digest_mismatch_naming_the_layer(
        self, presented: Presented, sample: Sample, work: Path
    ) -> None:
        source = presented.corrupt(CORRUPT, work)
        count = len(sample.tars)
        with _opened(source) as image:
            for n, layer in enumerate(image.layers):
                if n == CORRUPT:
                    with pytest.raises(DigestMismatch) as caught, layer.open_tar() as tar:
                        tar.read()
                    message = str(caught.value)
                    assert layer.label in message and f"layer {n + 1}/{count}" in message
                    assert "digest mismatch" in message, message
                else:
                    with layer.open_tar() as tar:
                        assert tar.read() == sample.tars[n], f"{layer.label} is intact"
        out = work / "out"
        out.mkdir()
        with _opened(source) as image, pytest.raises(DigestMismatch) as caught:
            _export(image, out / "squashed.tar")
        assert f"layer {CORRUPT + 1}/{count}" in str(caught.value), caught.value
        assert list(out.iterdir()) == [], "a failed export left files behind"

    def test_a_missing_tag_is_a_clear_not_found(self, presented: Presented) -> None:
        with pytest.raises(SquashError) as caught:
            open_image(presented.missing).close()
        error = caught.value
        message = str(error)
        assert isinstance(error, presented.not_found_type), repr(error)
        assert re.search(presented.not_found, message), message
        assert "\n" not in message, f"not a one-line error: {message!r}"
        if isinstance(error, RegistryError):
            assert error.status == 404, error.status

    def test_the_squashed_archive_is_byte_identical(
        self, presented: Presented, sample: Sample, work: Path
    ) -> None:
        out = work / f"{presented.kind}.tar"
        with _opened(presented.source) as image:
            result = _export(image, out)
            digest = image.manifest_digest
        # The archive's history names the source image's digest (a docker archive's is
        # its config's); everything else must come out byte for byte as from the layout.
        history = SquashedArchive.open(out).config["history"]
        assert [h["comment"] for h in history] == [f"squashed by squashd from {digest}"]
        reference = work / "reference.tar"
        with _opened(sample.layout.source) as layout_image:
            expected = _export(dataclasses.replace(layout_image, manifest_digest=digest), reference)
        assert result == expected
        assert out.read_bytes() == reference.read_bytes(), (
            f"squashing {presented.source} gives other bytes than squashing the OCI layout"
        )
