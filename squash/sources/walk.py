"""One walk for the sources that hold manifests (an OCI layout, a registry): index →
platform → manifest → config → layers, with one set of checks. A source implements
`ManifestStore` (how to fetch a manifest and the config a descriptor names, and what a
layer descriptor opens as); everything else is decided here."""

from dataclasses import dataclass
from typing import Protocol

from squash.errors import SquashError
from squash.image import StoredLayer
from squash.oci import (
    JSONObject,
    check_supported,
    choose_platform,
    is_index,
    media_type,
    parse_json,
    parse_manifest,
    parse_object,
    platform_entries,
)
from squash.reference import Platform
from squash.sources.descriptors import MAX_DOCUMENT, check_digest, layer_compression, layer_label


class ManifestStore(Protocol):
    what: str  # "image REF", for errors

    def manifest(self, descriptor: JSONObject) -> tuple[bytes, str | None]:
        """The manifest or index `descriptor` names, its digest checked: (document,
        media type as the store declares it)."""
        ...

    def config(self, descriptor: JSONObject) -> bytes:
        """The config blob `descriptor` names, its digest and size checked."""
        ...

    def layer(self, descriptor: JSONObject, label: str) -> StoredLayer:
        """The layer `descriptor` names."""
        ...


@dataclass
class Resolved:
    manifest_digest: str
    config: JSONObject
    layers: list[StoredLayer]


def resolve(
    store: ManifestStore,
    document: bytes,
    declared: str | None,
    digest: str,
    platform: Platform,
    image: str,
) -> Resolved:
    """From a top document (manifest or index, `digest` its digest) to one platform's
    config and layers; `image` names the image in layer labels."""
    what = store.what
    while True:
        parsed = parse_json(document, f"{what}: manifest")
        kind = media_type(parsed if isinstance(parsed, dict) else {}, declared)
        check_supported(kind, what)
        if not is_index(kind):
            break
        entry = choose_platform(parse_object(document, f"{what}: index"), platform, what)
        digest = check_digest(entry.get("digest"), what)
        document, declared = store.manifest(entry)
    config_desc, layer_descs = parse_manifest(document, what)
    check_digest(config_desc.get("digest"), f"{what}: config")
    size = config_desc.get("size")
    if isinstance(size, int) and size > MAX_DOCUMENT:
        raise SquashError(f"{what}: config of {size} bytes is too large")
    config = parse_object(store.config(config_desc), f"{what}: config")
    layers = []
    for n, desc in enumerate(layer_descs):
        label = layer_label(image, n, len(layer_descs), check_digest(desc.get("digest"), what))
        layer_compression(desc, label)
        layers.append(store.layer(desc, label))
    return Resolved(digest, config, layers)


def top_platforms(document: bytes, declared: str | None, what: str) -> list[JSONObject]:
    """The `platform` of each image of an index (none for a single image's manifest)."""
    parsed = parse_json(document, f"{what}: manifest")
    kind = media_type(parsed if isinstance(parsed, dict) else {}, declared)
    check_supported(kind, what)
    if not is_index(kind):
        return []
    entries = platform_entries(parse_object(document, f"{what}: index"))
    return [_platform_of(entry, what) for entry in entries]


def _platform_of(entry: JSONObject, what: str) -> JSONObject:
    platform = entry.get("platform")
    if not isinstance(platform, dict) or not platform.get("os"):
        raise SquashError(f"{what}: an index entry names no platform")
    return platform


def descriptor_size(descriptor: JSONObject) -> int | None:
    size = descriptor.get("size")
    return size if isinstance(size, int) else None
