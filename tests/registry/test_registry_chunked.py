"""Real-size documents from a registry that answers in small pieces.

A registry far away (or any proxy) delivers a response body in many network reads; a
client that takes one `read(n)` for the whole config hashes only the first piece. The
proxy here sends every body in 1 KiB writes, so short reads happen on every request,
and the image's config (> 64 KiB of labels and history) and manifest (hundreds of
layers) are larger than any single read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import LayerBuilder, write_blob, write_oci_layout

from .fixtures import proxying
from .harness import Squashed, export_ok, upload_verbatim

pytestmark = pytest.mark.integration

LAYERS = 460
PIECE = 1024


def _big_layout(root: Path):
    layers = []
    for n in range(LAYERS):
        layer = LayerBuilder().dir("data").file(f"data/f{n:03}", f"layer {n}\n".encode())
        if n and n % 7 == 0:
            layer.whiteout(f"data/f{n - 1:03}")
        layers.append(layer)
    labels = {f"org.example.label.{n:03}": "v" * 400 + str(n) for n in range(200)}
    config = {"Labels": labels, "Env": ["PATH=/usr/bin", "BIG=" + "x" * 2000], "Cmd": ["/x"]}
    return write_oci_layout(root / "big", layers, config=config)


def _docker_form(image) -> str:
    """The same image as a Docker schema 2 manifest in the same layout; its digest."""
    manifest = json.loads(json.dumps(image.manifest))
    manifest["mediaType"] = DOCKER_MANIFEST
    manifest["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json"
    for layer in manifest["layers"]:
        layer["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    return write_blob(image.layout, json.dumps(manifest).encode())["digest"]


@pytest.fixture(scope="module")
def big_image(registry, module_work: Path, tools):
    """The image in the registry twice, uploaded byte for byte: OCI and schema 2 form."""
    image = _big_layout(module_work)
    upload_verbatim(registry, "squashd/big-oci", "v1", image.layout, image.manifest_digest)
    upload_verbatim(registry, "squashd/big-v2s2", "v1", image.layout, _docker_form(image))
    local = module_work / "local.tar"
    export_ok(image.source, local)
    return image, Squashed.open(local)


@pytest.mark.parametrize("name", ["squashd/big-oci", "squashd/big-v2s2"])
def test_large_config_and_manifest_in_small_pieces(registry, big_image, work, name) -> None:
    image, local = big_image
    config = json.loads((image.layout / "blobs/sha256" / _config_hex(image)).read_bytes())
    assert len(json.dumps(config)) > 64 * 1024, "the config must be larger than 64 KiB"
    with proxying(registry.port, "chunking proxy", piece_size=PIECE) as proxy:
        out = work / "out.tar"
        export_ok(proxy.ref(name, "v1"), out)
        descriptor = json.loads(_manifest(registry, name))["config"]
        config_gets = proxy.blob_gets(descriptor["digest"])
    assert [s.sent for s in config_gets] == [descriptor["size"]], proxy.describe()
    got = Squashed.open(out)
    assert got.diff_id == local.diff_id, "the squash from the registry differs from the local one"
    assert got.config["config"]["Labels"] == config["config"]["Labels"]
    assert got.config["config"]["Env"] == config["config"]["Env"]
    document = _manifest(registry, name)
    assert len(document) > 64 * 1024, f"manifest of {len(document)} bytes: make it larger"
    assert len(json.loads(document)["layers"]) == LAYERS


DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = f"application/vnd.oci.image.manifest.v1+json, {DOCKER_MANIFEST}"


def _manifest(registry, name: str) -> bytes:
    status, _, body = registry.get(f"/v2/{name}/manifests/v1", {"Accept": ACCEPT})
    assert status == 200, body
    return body


def _config_hex(image) -> str:
    return image.manifest["config"]["digest"].removeprefix("sha256:")
