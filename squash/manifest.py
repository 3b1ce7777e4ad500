"""Reading manifests and indexes: schema checks and picking one platform."""

from squash.errors import SquashError, UnsupportedMediaType
from squash.image import INDEXES, MANIFESTS, SCHEMA1, JSONObject, parse_json
from squash.reference import Platform


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
    found = sorted({str(Platform.parse(_platform_text(e))) for e in entries if e.get("platform")})
    raise SquashError(
        f"{what}: no image for platform {platform}; it has: {', '.join(found) or 'none'}"
    )


def _platform_text(entry: JSONObject) -> str:
    p = entry["platform"]
    return "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)


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
