"""A kept layer from far away, read once: its stored bytes go into a temporary file as
the merge reads them, and the destination is given them from there.

A partial squash reads each kept layer for the merge (what it holds decides what the
squashed layer must hide), then places it in the destination as it is stored: a
second download of it from a registry, without this."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from squash.image import StoredLayer
from squash.streams import Stream

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class RetainedLayer(StoredLayer):
    """`layer`, whose stored bytes are kept in a file under `tmpdir` by the first read
    to their end; later reads are read from that file. Close it to let the file go."""

    def __init__(self, layer: StoredLayer, tmpdir: str | None) -> None:
        super().__init__(layer.label, layer.digest, layer.size, layer.diff_id)
        self._layer, self._tmpdir = layer, tmpdir
        self._copy: BinaryIO | None = None
        self._complete = False

    def open_stored(self) -> Stream:
        if self._complete:
            assert self._copy is not None
            return _Copy(self._copy.fileno())
        self.close()  # a read that did not reach the end: start again
        self._copy = tempfile.TemporaryFile(dir=self._tmpdir)  # noqa: SIM115 - closed by close()
        return _Tee(self._layer.open_stored(), self._copy, self._completed)

    def open_start(self, limit: int) -> Stream:
        return self.open_stored() if self._complete else self._layer.open_start(limit)

    def origin(self) -> tuple[str, str] | None:
        return self._layer.origin()

    def _completed(self) -> None:
        self._complete = True

    def close(self) -> None:
        if self._copy is not None:
            self._copy.close()
            self._copy, self._complete = None, False


class _Tee(io.RawIOBase):
    """Reads `stream`, writing what it reads into `copy`; `done` is called at its end."""

    def __init__(self, stream: Stream, copy: BinaryIO, done: Callable[[], None]) -> None:
        self._stream, self._copy, self._done = stream, copy, done

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        n = self._stream.readinto(buffer) or 0
        with memoryview(buffer) as view:
            if n:
                self._copy.write(view[:n])
            elif view.nbytes:
                self._copy.flush()
                self._done()
        return n

    def close(self) -> None:
        self._stream.close()
        super().close()


class _Copy(io.RawIOBase):
    """The kept file from its start (reads at offsets: the file's own position is the
    writer's)."""

    def __init__(self, fd: int) -> None:
        self._fd, self._at = fd, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        n = os.preadv(self._fd, [buffer], self._at)
        self._at += n
        return n
