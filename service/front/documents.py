"""An artifact as a registry serves it: its manifest (OCI, or Docker schema 2 for
clients that take no OCI), its config and its layers, read out of the archive itself.

The archive is an OCI image layout already (see docs/archive-format.md): `index.json`
names the manifest, the manifest names the config and the layers, and each is a member
`blobs/sha256/HEX`. Nothing is recorded beside the archive, so every artifact ever built
can be pulled; finding the members costs a few ranged reads, once per process.
"""

import hashlib
from dataclasses import dataclass
from typing import Any

from squash.archive_index import Span, members
from squash.errors import SquashError
from squash.oci import (
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    Blob,
    docker_manifest,
    parse_manifest,
    parse_object,
)
from storage.base import Artifact, ArtifactStore, Member


def accepts(accept: str, ours: str, docker: str) -> bool:
    """Does a client that sends `accept` want the Docker form rather than our OCI one?"""
    wanted = {kind.split(";")[0].strip() for kind in accept.split(",") if kind.strip()}
    return docker in wanted and ours not in wanted


MAX_DOCUMENT = 8 << 20  # a config or manifest larger than this is not one squashd wrote


@dataclass(frozen=True)
class Document:
    """A manifest or config, served from memory."""

    data: bytes
    media_type: str
    attached: bool = False  # part of a referrer (the provenance), not of the image

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class PullView:
    key: str  # the artifact's
    manifests: dict[str, Document]  # by media type: the OCI one, the Docker one if it has one
    config: Document
    layers: dict[str, Member]  # by digest: ranges of the archive
    # the provenance referrer (service/front/referrers.py): its manifest and blobs, and
    # its descriptor as the referrers API lists it
    attached: tuple[Document, ...] = ()
    referrers: tuple[dict[str, Any], ...] = ()

    def manifest(self, accept: str) -> Document:
        """The manifest in the form the client accepts: OCI, unless it names only Docker's."""
        docker = self.manifests.get(DOCKER_MANIFEST)
        if docker is not None and accepts(accept, OCI_MANIFEST, DOCKER_MANIFEST):
            return docker
        return self.manifests[OCI_MANIFEST]

    def document(self, digest: str) -> Document | None:
        """A manifest, the config, or a piece of its referrer, by its digest."""
        return next((d for d in self.documents if d.digest == digest), None)

    @property
    def documents(self) -> list[Document]:
        return [*self.manifests.values(), self.config, *self.attached]

    @property
    def digests(self) -> list[str]:
        """Everything a pull may ask for by digest."""
        return [d.digest for d in self.documents] + list(self.layers)


def read_view(store: ArtifactStore, artifact: Artifact) -> PullView:
    """The pull view of `artifact`; SquashError if its archive is not what squashd writes."""
    what = f"artifact {artifact.key}"
    key = artifact.key
    found = members(lambda offset, length: store.read(key, offset, length), artifact.size, what)

    def blob(digest: str) -> Span:
        span = found.get("blobs/sha256/" + digest.removeprefix("sha256:"))
        if span is None or not digest.startswith("sha256:"):
            raise SquashError(f"{what}: the archive has no blob {digest}")
        return span

    def document(name: str, span: Span, digest: str | None) -> bytes:
        if span.size > MAX_DOCUMENT:
            raise SquashError(f"{what}: {name} is too large ({span.size} bytes)")
        data = store.read(key, span.offset, span.size)
        if len(data) != span.size or (digest and Document(data, "").digest != digest):
            raise SquashError(f"{what}: {name} does not match its digest")
        return data

    if "index.json" not in found:
        raise SquashError(f"{what}: the archive has no index.json")
    index = parse_object(document("index.json", found["index.json"], None), what)
    try:
        entry = index["manifests"][0]
        manifest_digest, manifest_type = entry["digest"], entry["mediaType"]
    except (KeyError, IndexError, TypeError):
        raise SquashError(f"{what}: index.json names no manifest") from None
    if manifest_type != OCI_MANIFEST:
        raise SquashError(f"{what}: index.json names a {manifest_type}, not an image manifest")
    manifest = document("the manifest", blob(manifest_digest), manifest_digest)
    config_entry, layer_entries = parse_manifest(manifest, what)
    config = document("the config", blob(config_entry["digest"]), config_entry["digest"])
    layers: dict[str, Member] = {}
    described = []
    for entry in layer_entries:
        span = blob(entry["digest"])
        if span.size != entry.get("size"):
            raise SquashError(f"{what}: layer {entry['digest']} is not the size its manifest says")
        layers[entry["digest"]] = Member(entry["digest"], span.offset, span.size)
        described.append(Blob(entry["digest"], span.size, str(entry.get("mediaType"))))
    config_blob = Blob(config_entry["digest"], len(config), str(config_entry.get("mediaType")))
    manifests = {OCI_MANIFEST: Document(manifest, OCI_MANIFEST)}
    docker = docker_manifest(config_blob, described)
    if docker is not None:
        manifests[DOCKER_MANIFEST] = Document(docker, DOCKER_MANIFEST)
    return PullView(key, manifests, Document(config, config_blob.media_type), layers)
