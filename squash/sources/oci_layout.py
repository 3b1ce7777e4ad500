"""The `oci:DIR[:TAG]` source: an OCI image layout directory."""

import functools
import os

from squash.errors import BadReference, SquashError
from squash.image import Image, Layer, parse_json
from squash.manifest import (
    check_supported,
    choose_platform,
    is_index,
    media_type,
    parse_manifest,
)
from squash.reference import (
    DEFAULT_PLATFORM,
    Platform,
    SourceRef,
    familiar_name,
    parse_docker_ref,
    sanitize_name,
)
from squash.sources.blobs import (
    MAX_DOCUMENT,
    check_digest,
    layer_compression,
    layer_label,
)
from squash.streams import read_to_end
from squash.verify import verify_bytes

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


class _Layout:
    def __init__(self, root: str, what: str) -> None:
        self.root, self.what = root, what
        if not os.path.isdir(root):
            raise SquashError(f"{what}: {root} is not a directory")
        if not os.path.isfile(os.path.join(root, "oci-layout")):
            raise SquashError(f"{what}: {root} is not an OCI image layout (no oci-layout file)")

    def blob_path(self, digest: str) -> str:
        algorithm, _, hexdigest = check_digest(digest, self.what).partition(":")
        return os.path.join(self.root, "blobs", algorithm, hexdigest)

    def document(self, descriptor: dict, what: str) -> bytes:
        digest = check_digest(descriptor.get("digest"), what)
        size = descriptor.get("size")
        if isinstance(size, int) and size > MAX_DOCUMENT:
            raise SquashError(f"{what}: {size} bytes is too large for a manifest or config")
        try:
            with open(self.blob_path(digest), "rb") as f:
                data = read_to_end(f, MAX_DOCUMENT, what)
        except FileNotFoundError:
            raise SquashError(f"{what}: blob {digest} is missing from the layout") from None
        return verify_bytes(data, digest, size if isinstance(size, int) else None, what)


def _select(index: dict, tag: str | None, platform: Platform, what: str) -> dict:
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
    if tag is not None:
        names = {(m.get("annotations") or {}).get(REF_NAME) for m in entries}
        entries = [m for m in entries if (m.get("annotations") or {}).get(REF_NAME) == tag]
        if not entries:
            known = ", ".join(sorted(n for n in names if n)) or "none"
            raise SquashError(f"{what}: no tag {tag!r} in the layout (tags: {known})")
    if not entries:
        raise SquashError(f"{what}: the layout's index.json lists no images")
    if len(entries) == 1:
        return entries[0]
    if tag is None and len({(m.get("annotations") or {}).get(REF_NAME) for m in entries}) > 1:
        known = ", ".join(sorted(str((m.get("annotations") or {}).get(REF_NAME)) for m in entries))
        raise SquashError(f"{what}: the layout holds several images ({known}); name one as :TAG")
    return choose_platform({"manifests": entries}, platform, what)


def _name_and_tag(root: str, top: dict, tag: str | None) -> tuple[str, str]:
    """Repository and tag for the default output tag: containerd's name annotation or a
    full reference in ref.name if there is one, else the directory's name."""
    annotations = top.get("annotations") or {}
    ref_name = annotations.get(REF_NAME)
    ref_name = ref_name if isinstance(ref_name, str) and ref_name else None
    for candidate in (annotations.get(CONTAINERD_NAME), ref_name):
        if isinstance(candidate, str) and ("/" in candidate or ":" in candidate):
            try:
                parsed = parse_docker_ref(candidate)
            except BadReference:
                continue
            name = familiar_name(f"{parsed.registry}/{parsed.repository}")
            return name, tag or parsed.tag or "latest"
    return sanitize_name(os.path.basename(os.path.abspath(root))), tag or ref_name or "latest"


def open_oci_layout(ref: SourceRef, platform: Platform | None) -> Image:
    what = f"image {ref.text}"
    layout = _Layout(ref.path, what)
    try:
        with open(os.path.join(ref.path, "index.json"), "rb") as f:
            data = read_to_end(f, MAX_DOCUMENT, f"{what}: index.json")
        index = parse_json(data, f"{what}: index.json")
    except FileNotFoundError:
        raise SquashError(f"{what}: the layout has no index.json") from None
    top = _select(index, ref.ref, platform or DEFAULT_PLATFORM, what)
    descriptor = top
    while True:
        kind = media_type({}, descriptor.get("mediaType"))
        check_supported(kind, what)
        if not is_index(kind):
            break
        nested = parse_json(layout.document(descriptor, what), f"{what}: index")
        descriptor = choose_platform(nested, platform or DEFAULT_PLATFORM, what)
    manifest_digest = check_digest(descriptor.get("digest"), what)
    config_desc, layer_descs = parse_manifest(layout.document(descriptor, what), what)
    config = parse_json(layout.document(config_desc, f"{what}: config"), f"{what}: config")
    if not isinstance(config, dict):
        raise SquashError(f"{what}: config is not a JSON object")
    name, tag = _name_and_tag(ref.path, top, ref.ref)
    image = Image(ref.text, name, tag, manifest_digest, config)
    for n, desc in enumerate(layer_descs):
        digest = check_digest(desc.get("digest"), what)
        label = layer_label(ref.text, n, len(layer_descs), digest)
        layer_compression(desc, label)
        path = layout.blob_path(digest)
        if not os.path.isfile(path):
            raise SquashError(f"{label}: blob is missing from the layout")
        size = desc.get("size") if isinstance(desc.get("size"), int) else None
        opener = functools.partial(open, path, "rb", buffering=0)
        image.layers.append(Layer(label, opener, digest, size, None, location=(path, 0)))
    return image
