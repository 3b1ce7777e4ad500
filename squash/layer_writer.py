"""The squashed layer's bytes on their way out: hashed (its diff_id), compressed and
hashed again (its blob digest), in a thread of their own."""

import hashlib
import queue
import threading
from typing import Protocol

from squash.codec import Compressor
from squash.oci import OCI_LAYER, Blob
from squash.streams import Chunk

_BATCH = 1 << 20
_QUEUE_DEPTH = 4  # chunks of about 1 MiB in flight to the writer thread


class Writable(Protocol):
    def write(self, data: Chunk) -> None: ...


class LayerWriter:
    """Receives the merged layer tar; hashes, compresses and writes it in a thread.

    Hashing, compression and file writes release the GIL, so they overlap with the
    merger's Python work. Chunks are queued (a bounded few MiB) and copied if the
    caller may reuse them.
    """

    def __init__(self, sink: Writable, compression: str, level: int | None = None) -> None:
        self._sink = sink
        self._plain = compression == "none"
        self._diff = hashlib.sha256()
        self._blob = self._diff if self._plain else hashlib.sha256()
        self._batch = bytearray()
        self._queue: queue.Queue[bytes | bytearray | None] = queue.Queue(_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self.size = 0
        self.media_type = OCI_LAYER[compression]
        self._compressor = Compressor(compression, self._emit, level)  # may emit a header
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
