"""The output archive: the layout `docker save` writes since Docker 25.

One tar holding an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`)
plus Docker's `manifest.json` and legacy `repositories`, all pointing at the same blobs.
The squashed layer goes first, under a reserved header patched once its size and digest
are known; a partial squash's kept layers follow it as they are stored, then the small
files that depend on the digests.
"""

import hashlib
import json
import queue
import tarfile
import threading
from dataclasses import dataclass
from typing import Any

from squash.codec import Compressor
from squash.errors import InvalidLayer
from squash.image import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST
from squash.sinks import Patchable
from squash.streams import Chunk, Stream

LAYER_MEDIA_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
BLOCK = tarfile.BLOCKSIZE
_USTAR_SIZE_LIMIT = 8**11  # larger sizes need GNU base-256 in the same single block
_BATCH = 1 << 20
_QUEUE_DEPTH = 8  # chunks of about 1 MiB in flight to the writer thread


@dataclass
class Blob:
    digest: str
    size: int
    media_type: str


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _member_header(name: str, size: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o755 if directory else 0o644, 0
    if directory:
        info.type, info.size = tarfile.DIRTYPE, 0
    fmt = tarfile.USTAR_FORMAT if size < _USTAR_SIZE_LIMIT else tarfile.GNU_FORMAT
    header = info.tobuf(fmt, "utf-8", "strict")  # type: ignore[arg-type]  # 0 or 1: Literal
    assert len(header) == BLOCK, "a reserved header must be exactly one block"
    return header


class LayerWriter:
    """Receives the merged layer tar; hashes, compresses and writes it in a thread.

    Hashing, compression and file writes release the GIL, so they overlap with the
    merger's Python work. Chunks are queued (a bounded few MiB) and copied if the
    caller may reuse them.
    """

    def __init__(self, sink: Patchable, compression: str) -> None:
        self._sink = sink
        self._plain = compression == "none"
        self._diff = hashlib.sha256()
        self._blob = self._diff if self._plain else hashlib.sha256()
        self._batch = bytearray()
        self._queue: queue.Queue[bytes | bytearray | None] = queue.Queue(_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self.size = 0
        self.media_type = LAYER_MEDIA_TYPES[compression]
        self._compressor = Compressor(compression, self._emit)  # may emit a header at once
        self._thread = threading.Thread(target=self._run, name="layer-writer", daemon=True)
        self._thread.start()

    def write(self, data: Chunk) -> None:
        if len(data) < 65536:
            self._batch += data
            if len(self._batch) >= _BATCH:
                self._push()
            return
        self._push()
        self._put(data if isinstance(data, bytes) else bytes(data))

    def _push(self) -> None:
        if self._batch:
            self._put(self._batch)
            self._batch = bytearray()

    def _put(self, data: bytes | bytearray | None) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(data)

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep draining so the producer never blocks
            try:
                self._diff.update(data)
                self._compressor.write(data)
            except BaseException as exc:  # handed to the producer
                self._error = exc

    def _emit(self, data: Chunk) -> None:
        if data:
            if not self._plain:
                self._blob.update(data)
            self.size += len(data)
            self._sink.write(data)

    def abort(self) -> None:
        """Stop the thread after a failure elsewhere."""
        self._error = self._error or RuntimeError("aborted")
        self._queue.put(None)
        self._thread.join()

    def close(self) -> tuple[str, Blob]:
        """Finish; return the diff_id and the stored blob's descriptor."""
        self._push()
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        self._compressor.close()
        diff_id = "sha256:" + self._diff.hexdigest()
        return diff_id, Blob("sha256:" + self._blob.hexdigest(), self.size, self.media_type)


class ArchiveWriter:
    """Writes the archive into a sink: the layer first, then the documents naming it."""

    def __init__(self, sink: Patchable) -> None:
        self._sink = sink

    def _write(self, data: bytes) -> None:
        self._sink.write(data)

    def begin(self) -> None:
        self._write(_member_header("blobs", 0, directory=True))
        self._write(_member_header("blobs/sha256", 0, directory=True))

    def layer(self, compression: str) -> "ReservedLayer":
        token = self._sink.reserve(BLOCK)
        return ReservedLayer(self, token, LayerWriter(self._sink, compression))

    def add(self, name: str, data: bytes) -> None:
        self._write(_member_header(name, len(data)))
        self._write(data)
        self._write(bytes(-len(data) % BLOCK))

    def copy_blob(self, blob: Blob, stream: Stream, what: str) -> None:
        """A blob whose digest and size are known, copied from `stream` as it is (the
        stream checks the digest; the size is checked here)."""
        self._write(
            _member_header("blobs/sha256/" + blob.digest.removeprefix("sha256:"), blob.size)
        )
        left = blob.size
        while left:
            data = stream.read(min(_BATCH, left))
            if not data:
                raise InvalidLayer(f"{what}: ends after {blob.size - left} of {blob.size} bytes")
            self._write(data)
            left -= len(data)
        if stream.read(1):
            raise InvalidLayer(f"{what}: longer than its {blob.size} bytes")
        self._write(bytes(-blob.size % BLOCK))

    def add_blob(self, data: bytes, media_type: str) -> Blob:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.add("blobs/sha256/" + digest.removeprefix("sha256:"), data)
        return Blob(digest, len(data), media_type)

    def finish(self) -> None:
        self._write(bytes(2 * BLOCK))


class ReservedLayer:
    """The layer blob being streamed; `close` pads it and patches its header."""

    def __init__(self, archive: ArchiveWriter, token: int, writer: LayerWriter) -> None:
        self._archive, self._token, self.writer = archive, token, writer

    def close(self) -> tuple[str, Blob]:
        diff_id, blob = self.writer.close()
        sink = self._archive._sink
        sink.write(bytes(-blob.size % BLOCK))
        name = "blobs/sha256/" + blob.digest.removeprefix("sha256:")
        sink.patch(self._token, _member_header(name, blob.size))
        return diff_id, blob


def descriptor(blob: Blob, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}
    if annotations:
        value["annotations"] = annotations
    return value


def write_documents(
    archive: ArchiveWriter, config: bytes, layers: list[Blob], repo_tag: str, full_name: str
) -> Blob:
    """Config, manifest and the index files of both layouts for `layers` (bottom first);
    returns the manifest blob."""
    config_blob = archive.add_blob(config, OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config_blob),
        "layers": [descriptor(layer) for layer in layers],
    }
    manifest_blob = archive.add_blob(_dumps(manifest), OCI_MANIFEST)
    repository, _, tag = repo_tag.rpartition(":")
    annotations = {"io.containerd.image.name": full_name, "org.opencontainers.image.ref.name": tag}
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(manifest_blob, annotations)],
    }
    archive.add("oci-layout", _dumps({"imageLayoutVersion": "1.0.0"}))
    archive.add("index.json", _dumps(index))
    docker_manifest = [
        {
            "Config": "blobs/sha256/" + config_blob.digest.removeprefix("sha256:"),
            "RepoTags": [repo_tag],
            "Layers": ["blobs/sha256/" + layer.digest.removeprefix("sha256:") for layer in layers],
        }
    ]
    archive.add("manifest.json", _dumps(docker_manifest))
    top_layer_id = layers[-1].digest.removeprefix("sha256:")
    archive.add("repositories", _dumps({repository: {tag: top_layer_id}}))
    return manifest_blob
