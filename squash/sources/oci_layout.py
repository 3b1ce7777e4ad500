"""The `oci:DIR[:TAG]` source: an OCI image layout directory."""

import json
import os

from squash.errors import BadReference, SquashError
from squash.image import Image, StoredLayer
from squash.oci import OCI_INDEX, REF_NAME, JSONObject, choose_platform, parse_object
from squash.reference import (
    DEFAULT_PLATFORM,
    Platform,
    SourceRef,
    familiar_name,
    parse_docker_ref,
    sanitize_name,
)
from squash.sources.descriptors import MAX_DOCUMENT, check_digest
from squash.sources.files import FileLayer
from squash.sources.walk import descriptor_size, resolve, top_platforms
from squash.streams import read_to_end
from squash.verify import verify_bytes

CONTAINERD_NAME = "io.containerd.image.name"


class _Layout:
    """The layout's blobs, as the shared walk asks for them (a ManifestStore)."""

    def __init__(self, root: str, what: str) -> None:
        self.root, self.what = root, what
        if not os.path.isdir(root):
            raise SquashError(f"{what}: {root} is not a directory")
        if not os.path.isfile(os.path.join(root, "oci-layout")):
            raise SquashError(f"{what}: {root} is not an OCI image layout (no oci-layout file)")

    def blob_path(self, digest: str) -> str:
        algorithm, _, hexdigest = check_digest(digest, self.what).partition(":")
        return os.path.join(self.root, "blobs", algorithm, hexdigest)

    def document(self, descriptor: JSONObject, what: str) -> bytes:
        digest = check_digest(descriptor.get("digest"), what)
        size = descriptor_size(descriptor)
        if size is not None and size > MAX_DOCUMENT:
            raise SquashError(f"{what}: {size} bytes is too large for a manifest or config")
        try:
            with open(self.blob_path(digest), "rb") as f:
                data = read_to_end(f, MAX_DOCUMENT, what)
        except FileNotFoundError:
            raise SquashError(f"{what}: blob {digest} is missing from the layout") from None
        return verify_bytes(data, digest, size, what)

    def manifest(self, descriptor: JSONObject) -> tuple[bytes, str | None]:
        return self.document(descriptor, self.what), descriptor.get("mediaType")

    def config(self, descriptor: JSONObject) -> bytes:
        return self.document(descriptor, f"{self.what}: config")

    def layer(self, descriptor: JSONObject, label: str) -> StoredLayer:
        digest = check_digest(descriptor.get("digest"), label)
        path = self.blob_path(digest)
        if not os.path.isfile(path):
            raise SquashError(f"{label}: blob is missing from the layout")
        return FileLayer(label, path, size=descriptor_size(descriptor), digest=digest)


def _entries(index: JSONObject) -> list[JSONObject]:
    """The index's images: not the artifacts that refer to them (a provenance statement
    squashd attached, listed with its `artifactType`)."""
    return [
        m for m in index.get("manifests") or [] if isinstance(m, dict) and "artifactType" not in m
    ]


def _select(index: JSONObject, tag: str | None, platform: Platform, what: str) -> JSONObject:
    entries = _entries(index)
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


def _name_and_tag(root: str, top: JSONObject, tag: str | None) -> tuple[str, str]:
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


def _index(ref: SourceRef, what: str) -> tuple[_Layout, JSONObject]:
    layout = _Layout(ref.path, what)
    try:
        with open(os.path.join(ref.path, "index.json"), "rb") as f:
            data = read_to_end(f, MAX_DOCUMENT, f"{what}: index.json")
    except FileNotFoundError:
        raise SquashError(f"{what}: the layout has no index.json") from None
    return layout, parse_object(data, f"{what}: index.json")


def layout_platforms(ref: SourceRef) -> list[JSONObject]:
    """The platforms of the tag's index (none for a single image)."""
    what = f"image {ref.text}"
    layout, index = _index(ref, what)
    entries = _entries(index)
    if ref.ref is not None:
        entries = [m for m in entries if (m.get("annotations") or {}).get(REF_NAME) == ref.ref]
    if len(entries) > 1:  # the layout's own index lists the platforms
        return top_platforms(json.dumps({"manifests": entries}).encode(), OCI_INDEX, what)
    top = _select(index, ref.ref, DEFAULT_PLATFORM, what)
    return top_platforms(*layout.manifest(top), what)


def open_oci_layout(ref: SourceRef, platform: Platform | None) -> Image:
    what = f"image {ref.text}"
    layout, index = _index(ref, what)
    top = _select(index, ref.ref, platform or DEFAULT_PLATFORM, what)
    document, declared = layout.manifest(top)
    digest = check_digest(top.get("digest"), what)
    found = resolve(layout, document, declared, digest, platform or DEFAULT_PLATFORM, ref.text)
    name, tag = _name_and_tag(ref.path, top, ref.ref)
    return Image(ref.text, name, tag, found.manifest_digest, found.config, found.layers)
