"""The streaming layer merger: many layer tars in, one squashed layer tar out.

Layers are read from the top (newest) down. Each layer is decompressed once into a
spool file while its members are indexed (`squash.merge.layerindex`); then it is decided
against the layers above it (`squash.merge.layerpass`) and what survives is written out
(`squash.merge.ordered`), every header anew from the fields read (`squash.merge.tarheader`). While
one layer is decided, the next one is decompressed on a second thread. Memory holds
path bookkeeping only (`squash.merge.pathtable`); file contents stay in the spool.

The rules are those of docs/merge-rules.md; comments name them by number. The per-member
work is compiled (Cython); this module runs the layers through it.
"""

import shutil
import tarfile
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from squash.errors import InvalidLayer
from squash.limits import DEFAULT_LIMITS, LimitExceeded, Limits
from squash.merge.layerindex import LayerIndex, Spool
from squash.merge.layerpass import Layers
from squash.streams import Stream

CHUNK = 1 << 20
READ_AHEAD = 2  # layers decompressed (and spooled) ahead of the one being decided
_FREE_SPACE_EVERY = 64 << 20  # spooled bytes between looks at the spool's free space

Write = Callable[[bytes], object]  # what a write returns is ignored


class _Stopped(Exception):
    """The merge failed elsewhere; a layer still being read gives up."""


class TarSource(Protocol):
    """A layer as the merger needs it: a label for errors and its uncompressed tar."""

    label: str

    def open_tar(self) -> AbstractContextManager[Stream]:
        """The layer's tar stream; leaving the context verifies what was read."""
        ...

    def peek(self) -> bytes:
        """The first bytes of the layer's tar (tens of KiB), cheaply and unverified."""
        ...

    def plain_file(self) -> tuple[str, int] | None:
        """(file, offset) of the uncompressed tar if it lies in a local file as it is."""
        ...


@dataclass
class MergeStats:
    members_read: int = 0
    members_written: int = 0
    bytes_written: int = 0


class Merger:
    """Merges layers (bottom first, as manifests list them) into one tar via `write`."""

    def __init__(self, write: Write, tmpdir: str | None = None, limits: Limits = DEFAULT_LIMITS):
        self._layers = Layers(write, _expand_sparse)
        self._tmpdir = tmpdir
        self._limits = limits
        self._spools: list[Spool] = []
        self._members = 0  # of the layers indexed so far
        self._bytes = 0

    def run(self, layers: Sequence[TarSource], keep: int = 0) -> MergeStats:
        """Merge; while one layer's members are decided, the next ones are decompressed.
        With `keep`, the bottom `keep` layers stay as they are and the merged layer is the
        one to put on top of them (docs/merge-rules.md, "Partial squashes")."""
        order = list(reversed(layers))
        stop = threading.Event()
        upcoming: deque[Future[tuple[LayerIndex, Spool]]] = deque()
        with ThreadPoolExecutor(READ_AHEAD, thread_name_prefix="layer-reader") as reader:
            try:
                for layer in order[:READ_AHEAD]:
                    upcoming.append(reader.submit(self._index, layer, stop, holes=True))
                self._root_first(layers)
                for n, layer in enumerate(order):
                    index, spool = upcoming.popleft().result()
                    self._spools.append(spool)
                    if n + READ_AHEAD < len(order):
                        upcoming.append(
                            reader.submit(self._index, order[n + READ_AHEAD], stop, holes=True)
                        )
                    if n == len(order) - keep:
                        self._layers.keep_below()
                    plan = self._layers.plan(index)
                    if plan.needs_skipped():  # rare: read the layer again, whole
                        plan.discard()
                        self._spools.remove(spool)
                        spool.close()
                        index, spool = self._index(layer, stop, holes=False)
                        self._spools.append(spool)
                        plan = self._layers.plan(index)
                    plan.run()
                    self._release()
                self._layers.finish()
            finally:
                stop.set()
                for future in upcoming:
                    if future.exception() is None:
                        future.result()[1].close()
                for spool in self._spools:
                    spool.close()
        output = self._layers.output
        return MergeStats(self._layers.members_read, output.members_written, output.bytes_written)

    def _release(self) -> None:
        """Close the spools no waiting member reads from any more."""
        for spool in [s for s in self._spools if not s.waiting]:
            spool.close()
            self._spools.remove(spool)

    def _root_first(self, layers: Sequence[TarSource]) -> None:
        """Write the root directory before anything else (rule 7).

        Its attributes belong to the highest layer that has a root entry, which may be
        read long after higher layers' members were written. Tar writers put "./" first,
        so the first member of each layer, top down, tells.
        """
        for layer in reversed(layers):
            head = layer.peek()
            index = self._layers.index(layer.label)
            try:
                index.feed(head)
            except InvalidLayer:
                continue  # the full, digest-checked read says what is wrong
            if self._layers.root_entry(index, head):
                return

    def _index(
        self, layer: TarSource, stop: threading.Event, *, holes: bool
    ) -> tuple[LayerIndex, Spool]:
        """Decompress a layer into a new spool file, indexing its members on the way
        (an uncompressed local layer is its own spool). With `holes`, data of large files
        the layers above hide is not written."""
        in_place = layer.plain_file()
        file: BinaryIO
        if in_place is not None:
            file = open(in_place[0], "rb")  # noqa: SIM115 - closed with its Spool
            index = self._layers.index(layer.label, file, in_place[1])
        else:
            file = tempfile.TemporaryFile(dir=self._tmpdir)  # noqa: SIM115 - as above
            index = self._layers.index(layer.label, file, 0, spool_out=True, holes=holes)
        try:
            if in_place is None:
                self._check_space(layer.label)
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            checked = 0
            with layer.open_tar() as stream:
                while n := stream.readinto(buf):
                    if stop.is_set():
                        raise _Stopped
                    index.feed(view[:n])
                    self._check(layer.label, index)
                    if in_place is None and index.position - checked >= _FREE_SPACE_EVERY:
                        checked = index.position
                        self._check_space(layer.label)
            index.finish()
        except BaseException:
            file.close()
            raise
        self._members += len(index)
        self._bytes += index.position - (in_place[1] if in_place else 0)
        return index, index.spool

    def _check(self, label: str, index: LayerIndex) -> None:
        limits = self._limits
        if limits.members is not None and self._members + len(index) > limits.members:
            raise LimitExceeded(f"{label}: more than {limits.members} tar members in the image")
        if limits.uncompressed is not None and self._bytes + index.position > limits.uncompressed:
            raise LimitExceeded(
                f"{label}: more than {limits.uncompressed} uncompressed bytes in the image"
            )

    def _check_space(self, label: str) -> None:
        free = shutil.disk_usage(self._tmpdir or tempfile.gettempdir()).free
        if free < self._limits.free_space:
            raise LimitExceeded(
                f"{label}: the spool directory has {free} bytes free, less than the "
                f"{self._limits.free_space} it must keep"
            )


def _expand_sparse(spool: BinaryIO, start: int, name: bytes) -> Iterator[bytes]:
    """A GNU sparse member as a plain regular file (rule 9), expanded by tarfile."""
    spool.seek(0)
    tar = tarfile.TarFile(fileobj=spool, encoding="utf-8", errors="surrogateescape")
    spool.seek(start)
    try:
        info = tarfile.TarInfo.fromtarfile(tar)
    except tarfile.TarError as exc:
        raise InvalidLayer(f"malformed sparse member at byte {start}: {exc}") from None
    stream = tar.extractfile(info)
    assert stream is not None
    info.sparse = None
    info.type = tarfile.REGTYPE
    info.name = name.decode("utf-8", "surrogateescape")
    info.pax_headers = {
        k: v for k, v in info.pax_headers.items() if k.startswith("SCHILY.xattr.") or k == "mtime"
    }
    yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    left = info.size
    while left:
        data = stream.read(min(CHUNK, left))
        if not data:
            raise InvalidLayer(f"sparse member {info.name!r} ends early")
        yield data
        left -= len(data)
    yield bytes(-info.size % tarfile.BLOCKSIZE)
