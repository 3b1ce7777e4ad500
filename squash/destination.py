"""What an export writes its image into: a `docker load` archive, an OCI layout, or a
registry. The exporter streams the squashed layer once, places the kept layers, adds the
config and manifest, then tags the manifest; nothing is visible under the tag before
`commit`, and `abort` leaves nothing that names a partial image."""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from squash.image import DOCKER_CONFIG, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, StoredLayer
from squash.streams import Chunk
from squash.verify import VerifyingReader

Committed = TypeVar("Committed", covariant=True)

LAYER_MEDIA_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


@dataclass
class Blob:
    """A blob's descriptor: what manifests name it by."""

    digest: str
    size: int
    media_type: str


def blob_of(data: bytes, media_type: str) -> Blob:
    """The descriptor of a document held whole (a config, manifest or index)."""
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), media_type)


def copy_stored(layer: StoredLayer, blob: Blob, write: Callable[[bytes], object]) -> None:
    """A kept layer's stored bytes handed to `write` as they are. Its digest and size are
    checked on the way: a mismatch raises (at the end, or once it is too long), and the
    destination is aborted."""
    with layer.open_stored() as raw:
        stream = VerifyingReader(raw, layer.label, blob.digest, blob.size, None)
        while data := stream.read(1 << 20):
            write(data)


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def descriptor(blob: Blob, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}
    if annotations:
        value["annotations"] = annotations
    return value


def image_manifest(config: Blob, layers: list[Blob]) -> bytes:
    """The OCI image manifest of `config` and `layers` (bottom first)."""
    return dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(config),
            "layers": [descriptor(layer) for layer in layers],
        }
    )


def image_index(images: list[tuple[Blob, dict[str, Any]]], media_type: str = OCI_INDEX) -> bytes:
    """An index (OCI, or Docker's manifest list) of image manifests and their platforms."""
    entries = [{**descriptor(manifest), "platform": platform} for manifest, platform in images]
    return dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries})


#: OCI layer media types as Docker's schema 2 names them (zstd has no Docker name)
DOCKER_LAYER_TYPES = {
    LAYER_MEDIA_TYPES["none"]: "application/vnd.docker.image.rootfs.diff.tar",
    LAYER_MEDIA_TYPES["gzip"]: "application/vnd.docker.image.rootfs.diff.tar.gzip",
}


def docker_manifest(config: Blob, layers: list[Blob]) -> bytes | None:
    """The same image as a Docker schema 2 manifest, for clients that accept no OCI
    manifest; None when a layer has no Docker media type (zstd)."""
    named = [DOCKER_LAYER_TYPES.get(layer.media_type, layer.media_type) for layer in layers]
    if not all(kind.startswith("application/vnd.docker.") for kind in named):
        return None
    return dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": descriptor(Blob(config.digest, config.size, DOCKER_CONFIG)),
            "layers": [
                descriptor(Blob(layer.digest, layer.size, kind))
                for layer, kind in zip(layers, named, strict=True)
            ],
        }
    )


class LayerUpload(Protocol):
    """The squashed layer's stored bytes as they are made; its digest and size are known
    only at the end."""

    def write(self, data: Chunk) -> None: ...

    def done(self, blob: Blob) -> None:
        """All bytes written: `blob` is their descriptor."""
        ...


class Destination(Protocol[Committed]):
    def layer(self) -> LayerUpload:
        """Where the squashed layer's bytes go (first, before anything else)."""
        ...

    def kept(self, layer: StoredLayer, blob: Blob) -> None:
        """Place a kept layer as it is stored (copy it, or find or mount it there)."""
        ...

    def document(self, data: bytes, media_type: str) -> Blob:
        """A config, manifest or index blob."""
        ...

    def tag(self, manifest: Blob, repo_tag: str, full_name: str) -> None:
        """Name `manifest` (an image manifest or an index, written with `document`):
        `repo_tag` is the output's NAME:TAG in its familiar form, `full_name` with its
        registry."""
        ...

    def commit(self) -> Committed:
        """Make it visible; returns what the destination recorded (an artifact store's
        record, or None)."""
        ...

    def abort(self) -> None: ...
