"""The small image interface every source yields and the writer consumes.

An `Image` is a config plus an ordered list of `StoredLayer`s; a layer opens as the raw
stored bytes (compressed or not) and, through `open_tar`, as its verified tar. Sources
never decompress or merge; the writer never knows where the bytes came from.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from squash.codec import compression_of, decompress_prefix, open_decompressed
from squash.errors import InvalidLayer
from squash.oci import JSONObject
from squash.streams import Stream, read_up_to
from squash.verify import VerifyingReader

Progress = Callable[[int], object]  # told of bytes read; what it returns is ignored
PEEK_BYTES = 256 << 10  # stored bytes read when only a layer's start is wanted
PEEK_TAR = 64 << 10  # and at most this much of the tar they hold is made of them


class StoredLayer(ABC):
    """One layer: where its stored bytes are, and what they must hash to. A source
    says how to open them; reading them as a verified tar is the same for all."""

    def __init__(
        self, label: str, digest: str | None, size: int | None, diff_id: str | None
    ) -> None:
        self.label = label  # how errors name it, e.g. "image oci:x:1, layer 2/3 sha256:ab12…"
        self.digest = digest  # of the stored bytes, when the source names it
        self.size = size  # of the stored bytes, when known
        self.diff_id = diff_id  # of the uncompressed tar (checked when there is no digest)

    @abstractmethod
    def open_stored(self) -> Stream:
        """The stored bytes, from their start."""

    def open_start(self, limit: int) -> Stream:
        """At least the first `limit` stored bytes (a source may fetch no more)."""
        return self.open_stored()

    def location(self) -> tuple[str, int] | None:
        """(file, offset) of the stored bytes if they lie in a local file."""
        return None

    def origin(self) -> tuple[str, str] | None:
        """(registry, repository) the stored blob is in, if it is in one (a push to the
        same registry can mount it instead of copying it)."""
        return None

    @contextmanager
    def open_tar(self, progress: Progress | None = None) -> Iterator[Stream]:
        """The uncompressed tar; leaving the context checks digest and size. `progress`
        is told of each stored byte read."""
        with self.open_stored() as raw:
            stored = VerifyingReader(raw, self.label, self.digest, self.size, progress)
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
        location = self.location()
        if location is None:
            return None
        path, offset = location
        with open(path, "rb") as f:
            f.seek(offset)
            plain = compression_of(read_up_to(f, 4)) == "none"
        return location if plain else None

    def peek(self) -> bytes:
        """The start of the uncompressed tar (up to PEEK_TAR bytes), from the first stored
        bytes only (unchecked)."""
        with self.open_start(PEEK_BYTES) as raw:
            return decompress_prefix(read_up_to(raw, PEEK_BYTES), PEEK_TAR)


def _drain(stream: Stream) -> None:
    while stream.read(1 << 20):
        pass


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclass
class Image:
    """An image resolved to one platform."""

    reference: str  # the source as the user wrote it
    name: str  # familiar repository name, for the default tag
    tag: str  # source tag, or "latest"
    manifest_digest: str
    config: JSONObject
    layers: list[StoredLayer] = field(default_factory=list)
    holds: Closeable | None = None  # what the source keeps open (a registry session)

    def close(self) -> None:
        if self.holds is not None:
            self.holds.close()

    @property
    def total_size(self) -> int:
        return sum(layer.size or 0 for layer in self.layers)
