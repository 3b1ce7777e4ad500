"""What the sources check in descriptors: digests, layer media types, and how errors
name a layer."""

import re

from squash.errors import SquashError, UnsupportedMediaType
from squash.oci import LAYER_COMPRESSION, JSONObject

_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
MAX_DOCUMENT = 64 << 20  # manifests and configs are read whole; bound them


def check_digest(digest: object, what: str) -> str:
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise SquashError(f"{what}: malformed digest {digest!r}")
    return digest


def layer_compression(descriptor: JSONObject, what: str) -> str:
    kind = descriptor.get("mediaType")
    if kind not in LAYER_COMPRESSION:
        raise UnsupportedMediaType(f"{what}: unsupported layer media type {kind!r}")
    return LAYER_COMPRESSION[kind]


def layer_label(image: str, index: int, count: int, digest: str | None) -> str:
    short = f" {digest[:19]}" if digest else ""
    return f"image {image}, layer {index + 1}/{count}{short}"
