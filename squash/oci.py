"""The OCI vocabulary every part speaks: media types (OCI's and Docker schema 2's),
descriptors, image manifests and indexes, parsed and built. The media type strings are
spelled here and nowhere else in the shipped code (tests/unit/test_oci_vocabulary.py)."""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from squash.errors import SquashError, UnsupportedMediaType
from squash.reference import Platform

JSONObject = dict[str, Any]

# Manifests, indexes and configs.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA1 = (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED)  # recognised, to be refused clearly
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)

# Layers: the OCI media type of each compression (what squashd writes), Docker schema 2's
# names for them (zstd has none), and the compression of every layer media type read.
OCI_LAYER = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
DOCKER_LAYER = {
    OCI_LAYER["none"]: "application/vnd.docker.image.rootfs.diff.tar",
    OCI_LAYER["gzip"]: "application/vnd.docker.image.rootfs.diff.tar.gzip",
}
LAYER_COMPRESSION = {
    **{media_type: compression for compression, media_type in OCI_LAYER.items()},
    DOCKER_LAYER[OCI_LAYER["none"]]: "none",
    DOCKER_LAYER[OCI_LAYER["gzip"]]: "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}
_DOCKER_PREFIX = "application/vnd.docker."

# The OCI image layout.
REF_NAME = "org.opencontainers.image.ref.name"  # an OCI index entry's tag annotation
OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}  # an OCI image layout's `oci-layout` file

# Annotations of an image manifest (image-spec annotations.md): the image whose layers a
# partial squash kept, and when an artifact was made.
BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"
CREATED = "org.opencontainers.image.created"

# OCI 1.1 artifacts: a manifest with an `artifactType`, the empty config and a `subject`,
# found through the referrers API or its tag fallback (distribution-spec 1.1).
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"  # the empty descriptor's content
IN_TOTO = "application/vnd.in-toto+json"  # an in-toto statement (a layer, an artifactType)


# --- Documents ----------------------------------------------------------------------


def parse_json(data: bytes, what: str) -> JSONObject | list[Any]:
    """Decode a JSON document (an object or a list), naming it in the error."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SquashError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict | list):
        raise SquashError(f"{what} is not a JSON object")
    return value


def parse_object(data: bytes, what: str) -> JSONObject:
    """Decode a JSON object, naming it in the error."""
    value = parse_json(data, what)
    if not isinstance(value, dict):
        raise SquashError(f"{what} is not a JSON object")
    return value


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# --- Descriptors --------------------------------------------------------------------


@dataclass
class Blob:
    """A blob's descriptor: what manifests name it by."""

    digest: str
    size: int
    media_type: str


def blob_of(data: bytes, media_type: str) -> Blob:
    """The descriptor of a document held whole (a config, manifest or index)."""
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), media_type)


def descriptor(blob: Blob, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}
    if annotations:
        value["annotations"] = annotations
    return value


# --- Building manifests and indexes -------------------------------------------------


def image_manifest(
    config: Blob, layers: list[Blob], annotations: dict[str, str] | None = None
) -> bytes:
    """The OCI image manifest of `config` and `layers` (bottom first); without
    `annotations` it has no `annotations` field at all."""
    manifest: JSONObject = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config),
        "layers": [descriptor(layer) for layer in layers],
    }
    if annotations:
        manifest["annotations"] = annotations
    return dumps(manifest)


def index_of(entries: list[dict[str, Any]], media_type: str = OCI_INDEX) -> JSONObject:
    """An index (OCI, or Docker's manifest list) of the descriptors `entries`."""
    return {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}


def image_index(images: list[tuple[Blob, dict[str, Any]]], media_type: str = OCI_INDEX) -> bytes:
    """An index (OCI, or Docker's manifest list) of image manifests and their platforms."""
    entries = [{**descriptor(manifest), "platform": platform} for manifest, platform in images]
    return dumps(index_of(entries, media_type))


@dataclass(frozen=True)
class Referrer:
    """An OCI 1.1 artifact that refers to the image manifest `subject`: its manifest, and
    the blobs that manifest names (the empty config, then the one layer, its payload)."""

    subject: Blob
    artifact_type: str
    manifest: bytes
    annotations: dict[str, str]
    blobs: tuple[tuple[Blob, bytes], ...]

    @property
    def blob(self) -> Blob:
        return blob_of(self.manifest, OCI_MANIFEST)

    @property
    def payload(self) -> bytes:
        return self.blobs[-1][1]

    def entry(self) -> dict[str, Any]:
        """Its descriptor as an index of referrers lists it: with its `artifactType` and
        its manifest's annotations."""
        return {
            **descriptor(self.blob),
            "artifactType": self.artifact_type,
            "annotations": self.annotations,
        }


def referrer(
    subject: Blob,
    artifact_type: str,
    payload: bytes,
    annotations: dict[str, str],
    payload_annotations: dict[str, str] | None = None,
) -> Referrer:
    """The artifact of `payload` (of media type `artifact_type`) referring to `subject`:
    an image manifest with the empty config and `payload` as its one layer."""
    config = blob_of(EMPTY_JSON, OCI_EMPTY)
    layer = blob_of(payload, artifact_type)
    manifest = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": descriptor(config),
            "layers": [descriptor(layer, payload_annotations)],
            "subject": descriptor(subject),
            "annotations": annotations,
        }
    )
    blobs = ((config, EMPTY_JSON), (layer, payload))
    return Referrer(subject, artifact_type, manifest, annotations, blobs)


def fallback_tag(subject: str) -> str:
    """The tag of the index of `subject`'s referrers where a registry has no referrers
    API (distribution-spec 1.1's tag schema): `sha256-HEX`."""
    algorithm, _, encoded = subject.partition(":")
    return f"{algorithm}-{encoded}"


def docker_manifest(config: Blob, layers: list[Blob]) -> bytes | None:
    """The same image as a Docker schema 2 manifest, for clients that accept no OCI
    manifest; None when a layer has no Docker media type (zstd)."""
    named = [DOCKER_LAYER.get(layer.media_type, layer.media_type) for layer in layers]
    if not all(kind.startswith(_DOCKER_PREFIX) for kind in named):
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


# --- Reading manifests and indexes: schema checks and picking one platform ----------


def media_type(document: JSONObject, declared: str | None) -> str:
    """A document's media type: its own field, else the descriptor's, else by shape."""
    found = document.get("mediaType") or declared
    if found:
        return found
    if "manifests" in document:
        return INDEXES[0]
    return MANIFESTS[0]


def check_supported(kind: str, what: str) -> None:
    if kind in SCHEMA1:
        raise UnsupportedMediaType(
            f"{what}: Docker schema 1 manifests are not supported; push the image again "
            "with a current client (schema 2 or OCI)"
        )
    if kind not in MANIFESTS and kind not in INDEXES:
        raise UnsupportedMediaType(f"{what}: unsupported manifest media type {kind!r}")


def is_index(kind: str) -> bool:
    return kind in INDEXES


def platform_entries(index: JSONObject) -> list[JSONObject]:
    """An index's images, without attestation manifests (BuildKit's `unknown/unknown`)."""
    return [
        entry
        for entry in index.get("manifests") or []
        if isinstance(entry, dict)
        and (entry.get("platform") or {}).get("os") != "unknown"
        and (entry.get("annotations") or {}).get("vnd.docker.reference.type")
        != "attestation-manifest"
    ]


def choose_platform(index: JSONObject, platform: Platform, what: str) -> JSONObject:
    """The index entry for `platform`; never an attestation manifest."""
    entries = platform_entries(index)
    for entry in entries:
        if platform.matches(entry.get("platform") or {}):
            return entry
    found = sorted(
        {str(Platform.parse(platform_text(e["platform"]))) for e in entries if e.get("platform")}
    )
    raise SquashError(
        f"{what}: no image for platform {platform}; it has: {', '.join(found) or 'none'}"
    )


def platform_text(fields: JSONObject) -> str:
    """OS/ARCH[/VARIANT] of an index entry's `platform`, or of an image config (both
    name them with the same keys)."""
    parts = (fields.get("os"), fields.get("architecture"), fields.get("variant"))
    return "/".join(str(part) for part in parts if part)


def parse_manifest(data: bytes, what: str) -> tuple[JSONObject, list[JSONObject]]:
    """The config descriptor and layer descriptors of an image manifest."""
    manifest = parse_json(data, what)
    if not isinstance(manifest, dict):
        raise SquashError(f"{what}: manifest is not a JSON object")
    check_supported(media_type(manifest, None), what)
    config = manifest.get("config")
    layers = manifest.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise SquashError(f"{what}: manifest has no config or layers")
    for layer in [config, *layers]:
        if not isinstance(layer, dict) or not isinstance(layer.get("digest"), str):
            raise SquashError(f"{what}: manifest has a descriptor without a digest")
    return config, layers
