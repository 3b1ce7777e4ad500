"""What an export writes its image into: a `docker load` archive, an OCI layout, or a
registry. The exporter streams the squashed layer once, places the kept layers, adds the
config and manifest, tags the manifest, then attaches its provenance; nothing is visible
under the tag before `commit`, and `abort` leaves nothing that names a partial image."""

from collections.abc import Callable
from typing import Protocol, TypeVar

from squash.image import StoredLayer
from squash.oci import Blob, Referrer
from squash.streams import Chunk
from squash.verify import VerifyingReader

Committed = TypeVar("Committed", covariant=True)


def copy_stored(layer: StoredLayer, blob: Blob, write: Callable[[bytes], object]) -> None:
    """A kept layer's stored bytes handed to `write` as they are. Its digest and size are
    checked on the way: a mismatch raises (at the end, or once it is too long), and the
    destination is aborted."""
    with layer.open_stored() as raw:
        stream = VerifyingReader(raw, layer.label, blob.digest, blob.size, None)
        while data := stream.read(1 << 20):
            write(data)


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

    def tag(self, manifest: Blob, repo_tag: str, full_name: str) -> str:
        """Name `manifest` (an image manifest or an index, written with `document`):
        `repo_tag` is the output's NAME:TAG in its familiar form, `full_name` with its
        registry. Returns the name it has there (what a provenance statement calls it)."""
        ...

    def attach(self, referrer: Referrer) -> None:
        """An artifact that refers to an image manifest written here (its provenance),
        kept where this destination has a place for referrers, after the image."""
        ...

    def commit(self) -> Committed:
        """Make it visible; returns what the destination recorded (an artifact store's
        record, or None)."""
        ...

    def abort(self) -> None: ...
