"""The small image interface every source yields and the writer consumes.

An `Image` is a config plus an ordered list of `Layer`s; a layer opens as the raw
stored bytes (compressed or not). Sources never decompress or merge; the writer never
knows where the bytes came from.
"""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import BinaryIO

from squash.codec import compression_of, decompress_prefix, open_decompressed
from squash.errors import InvalidLayer, SquashError
from squash.streams import read_up_to
from squash.verify import VerifyingReader

# Media types we read (Docker and OCI names).
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}

Progress = Callable[[int], None]
PEEK_BYTES = 256 << 10  # stored bytes read when only a layer's start is wanted


@dataclass
class Layer:
    """One layer: how to open its stored bytes and what they must hash to."""

    label: str  # how errors name it, e.g. "image oci:x:1, layer 2/3 sha256:ab12…"
    opener: Callable[[], BinaryIO]
    digest: str | None  # of the stored bytes, when the source names it
    size: int | None  # of the stored bytes, when known
    diff_id: str | None  # of the uncompressed tar (checked when there is no digest)
    progress: Progress | None = None
    head: Callable[..., BinaryIO] | None = None  # head(limit=N): the first N bytes, if cheaper
    location: tuple[str, int] | None = None  # (file, offset) of the stored bytes, if local

    @contextmanager
    def open_tar(self) -> Iterator[BinaryIO]:
        """The uncompressed tar; leaving the context checks digest and size."""
        with self.opener() as raw:
            stored = VerifyingReader(raw, self.label, self.digest, self.size, self.progress)
            with open_decompressed(stored, self.label) as tar:
                checked = tar
                if self.digest is None and self.diff_id is not None:
                    checked = VerifyingReader(tar, self.label, self.diff_id, None, None)
                try:
                    yield checked
                except InvalidLayer:
                    # A malformed tar is most often a corrupt blob: if the digest
                    # says so, that is the error to report.
                    _drain(checked)
                    stored.drain()
                    raise
                _drain(checked)  # to the end, so the digest covers bytes past the tar's end
            stored.drain()

    def plain_file(self) -> tuple[str, int] | None:
        """(file, offset) where the uncompressed tar can be read in place, if it can."""
        if self.location is None:
            return None
        path, offset = self.location
        with open(path, "rb") as f:
            f.seek(offset)
            plain = compression_of(read_up_to(f, 4)) == "none"
        return self.location if plain else None

    def peek(self) -> bytes:
        """The start of the uncompressed tar, from the first stored bytes only (unchecked)."""
        opener = partial(self.head, limit=PEEK_BYTES) if self.head else self.opener
        with opener() as raw:
            return decompress_prefix(read_up_to(raw, PEEK_BYTES))


def _drain(stream: BinaryIO) -> None:
    while stream.read(1 << 20):
        pass


@dataclass
class Image:
    """An image resolved to one platform."""

    reference: str  # the source as the user wrote it
    name: str  # familiar repository name, for the default tag
    tag: str  # source tag, or "latest"
    manifest_digest: str
    config: dict
    layers: list[Layer] = field(default_factory=list)
    on_close: Callable[[], None] | None = None  # releases what the source holds open

    def close(self) -> None:
        if self.on_close is not None:
            self.on_close()

    def set_progress(self, progress: Progress | None) -> None:
        for layer in self.layers:
            layer.progress = progress

    @property
    def total_size(self) -> int:
        return sum(layer.size or 0 for layer in self.layers)


def parse_json(data: bytes, what: str) -> dict:
    """Decode a JSON document, naming it in the error."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SquashError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict | list):
        raise SquashError(f"{what} is not a JSON object")
    return value
