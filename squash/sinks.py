"""Where an archive's bytes go. A sink can reserve a span and fill it in later.

The writer reserves the layer's tar header, streams the layer, then patches the header
with the real size and name: exact sizes in one pass. A sink commits atomically, so a
half-written archive is never visible under its final name.
"""

import contextlib
import os
import shutil
import sys
import tempfile
from typing import BinaryIO, Protocol, TypeVar

from squash.streams import Chunk

Committed = TypeVar("Committed", covariant=True)


class Patchable(Protocol):
    """What the archive writer needs: bytes in order, and spans to fill in later."""

    def write(self, data: Chunk) -> None: ...

    def reserve(self, size: int) -> int:
        """Write `size` placeholder bytes; return a token for `patch`."""
        ...

    def patch(self, token: int, data: bytes) -> None:
        """Replace the reserved bytes at `token` (same length)."""
        ...


class Sink(Patchable, Protocol[Committed]):
    """A destination that is finished as a whole or not at all."""

    def commit(self) -> Committed:
        """Make the bytes visible under their final name; returns what the sink recorded
        (None for a plain file, the stored record for an artifact store)."""
        ...

    def abort(self) -> None: ...


class _TempFile:
    """A sink into a new temporary file; subclasses say where its bytes end up."""

    def __init__(self, directory: str | None, prefix: str, suffix: str) -> None:
        fd, self._temp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
        self._file: BinaryIO = os.fdopen(fd, "w+b", buffering=1 << 20)
        self._position = 0

    def write(self, data: Chunk) -> None:
        self._file.write(data)
        self._position += len(data)

    def reserve(self, size: int) -> int:
        token = self._position
        self.write(bytes(size))
        return token

    def patch(self, token: int, data: bytes) -> None:
        self._file.flush()
        os.pwrite(self._file.fileno(), data, token)

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp)


class PlacedFile(_TempFile):
    """A temporary file beside `path` that `place` renames into place."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        directory, name = os.path.split(self.path)
        super().__init__(directory, f".{name}.", ".part")

    def place(self) -> None:
        self._file.flush()
        os.fchmod(self._file.fileno(), 0o666 & ~_umask())  # as a plain open() would
        self._file.close()
        os.replace(self._temp, self.path)


class FileSink(PlacedFile):
    """Writes to a temporary file beside `path` and renames it into place on commit."""

    def commit(self) -> None:
        self.place()


class StreamSink(_TempFile):
    """For pipes (stdout), which cannot seek back: spool to a temporary file, then copy."""

    def __init__(self, stream: BinaryIO | None = None, tmpdir: str | None = None) -> None:
        super().__init__(tmpdir, "squashd-", ".tar")
        self._stream = stream if stream is not None else sys.stdout.buffer

    def commit(self) -> None:
        self._file.flush()
        self._file.seek(0)
        try:
            shutil.copyfileobj(self._file, self._stream, 1 << 20)
            self._stream.flush()
        finally:
            self.abort()


def _umask() -> int:
    """The process umask, read without changing it (threads may be creating files)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022
