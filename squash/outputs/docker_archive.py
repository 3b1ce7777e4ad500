"""The output archive: the layout `docker save` writes since Docker 25.

One tar holding an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`)
plus Docker's `manifest.json` and legacy `repositories`, all pointing at the same blobs.
The squashed layer goes first, under a reserved header patched once its size and digest
are known; a partial squash's kept layers follow it as they are stored, then the small
files that depend on the digests.

A `docker load` tar has no place a loader reads a referrer (the provenance) from: it is
handed to `beside`, if given (an artifact store keeps the statement beside the
archive), and the archive's bytes never depend on it.
"""

import json
import tarfile
from collections.abc import Callable
from typing import Any, Generic

from squash.destination import Committed, copy_stored
from squash.errors import SquashError
from squash.image import StoredLayer
from squash.oci import (
    OCI_LAYOUT,
    OCI_MANIFEST,
    REF_NAME,
    Blob,
    Referrer,
    blob_of,
    descriptor,
    dumps,
    index_of,
)
from squash.sinks import Sink
from squash.streams import Chunk

BLOCK = tarfile.BLOCKSIZE
_USTAR_SIZE_LIMIT = 8**11  # larger sizes need GNU base-256 in the same single block


def _member_header(name: str, size: int, *, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o755 if directory else 0o644, 0
    if directory:
        info.type, info.size = tarfile.DIRTYPE, 0
    fmt = tarfile.USTAR_FORMAT if size < _USTAR_SIZE_LIMIT else tarfile.GNU_FORMAT
    header = info.tobuf(fmt, "utf-8", "strict")  # type: ignore[arg-type]  # 0 or 1: Literal
    assert len(header) == BLOCK, "a reserved header must be exactly one block"
    return header


class DockerArchive(Generic[Committed]):
    """A `docker load` archive written into `sink`: the layer first (its header reserved
    and patched once its size and digest are known), then the kept layers and documents."""

    def __init__(
        self, sink: Sink[Committed], beside: Callable[[Referrer], object] | None = None
    ) -> None:
        self._sink, self._beside = sink, beside
        self._manifests: dict[str, dict[str, Any]] = {}
        self._write(_member_header("blobs", 0, directory=True))
        self._write(_member_header("blobs/sha256", 0, directory=True))

    def _write(self, data: bytes) -> None:
        self._sink.write(data)

    def layer(self) -> "_ReservedLayer":
        return _ReservedLayer(self._sink, self._sink.reserve(BLOCK))

    def kept(self, layer: StoredLayer, blob: Blob) -> None:
        """The kept layer's blob copied as it is stored, its digest checked on the way."""
        self._write(_member_header(_blob_path(blob.digest), blob.size))
        copy_stored(layer, blob, self._write)
        self._write(bytes(-blob.size % BLOCK))

    def _add(self, name: str, data: bytes) -> None:
        self._write(_member_header(name, len(data)))
        self._write(data)
        self._write(bytes(-len(data) % BLOCK))

    def document(self, data: bytes, media_type: str) -> Blob:
        blob = blob_of(data, media_type)
        self._add(_blob_path(blob.digest), data)
        if media_type == OCI_MANIFEST:  # what manifest.json will say of it
            self._manifests[blob.digest] = json.loads(data)
        return blob

    def tag(self, manifest: Blob, repo_tag: str, full_name: str) -> str:
        """The index files of both layouts, then the end of the archive."""
        if manifest.digest not in self._manifests:
            raise SquashError("a docker load archive holds one image, not an index")
        written = self._manifests[manifest.digest]
        config = written["config"]["digest"]
        layers = [layer["digest"] for layer in written["layers"]]
        repository, _, tag = repo_tag.rpartition(":")
        annotations = {
            "io.containerd.image.name": full_name,
            REF_NAME: tag,
        }
        self._add("oci-layout", dumps(OCI_LAYOUT))
        self._add("index.json", dumps(index_of([descriptor(manifest, annotations)])))
        docker_manifest = [
            {
                "Config": _blob_path(config),
                "RepoTags": [repo_tag],
                "Layers": [_blob_path(layer) for layer in layers],
            }
        ]
        self._add("manifest.json", dumps(docker_manifest))
        self._add("repositories", dumps({repository: {tag: layers[-1].removeprefix("sha256:")}}))
        self._write(bytes(2 * BLOCK))
        return full_name

    def attach(self, referrer: Referrer) -> None:
        if self._beside is not None:
            self._beside(referrer)

    def commit(self) -> Committed:
        return self._sink.commit()

    def abort(self) -> None:
        self._sink.abort()


def _blob_path(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


class _ReservedLayer:
    """The layer blob being streamed into the archive; `done` pads it and patches its
    header."""

    def __init__(self, sink: Sink[object], token: int) -> None:
        self._sink, self._token = sink, token

    def write(self, data: Chunk) -> None:
        self._sink.write(data)

    def done(self, blob: Blob) -> None:
        self._sink.write(bytes(-blob.size % BLOCK))
        self._sink.patch(self._token, _member_header(_blob_path(blob.digest), blob.size))
