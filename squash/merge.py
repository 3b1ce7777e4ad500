"""The streaming layer merger: many layer tars in, one squashed layer tar out.

Layers are read from the top (newest) down. Each layer is decompressed once into a
spool file while its members are indexed; then the members that survive the higher
layers' decisions are copied out, mostly as long contiguous byte ranges. Memory holds
path bookkeeping only; file contents stay in the spool (one layer at a time).

The rules are DESIGN.md's "Merge rules"; comments name them by number.
"""

import io
import os
import tarfile
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from squash.errors import InvalidLayer
from squash.paths import parent, split_whiteout
from squash.tarindex import BLOCK, DIR, LNK, REG, Member, TarIndexer

CHUNK = 1 << 20
_HOLE_MIN = 64 << 10  # hidden files at least this large are not spooled
_PEEK = 64 << 10  # of each layer's start, to find its root entry
END_OF_ARCHIVE = bytes(2 * BLOCK)

# What higher layers decided about a path (bit flags, they only accumulate).
NONDIR = 1  # a non-directory is there: hides lower entries at and under it (rule 5)
GONE = 2  # whited out: hides lower entries at and under it (rule 1)
ISDIR = 4  # a directory entry is there: lower entries at it are hidden (rule 7)
IMPLICIT = 8  # a directory only because something lives under it
OPAQUE = 16  # opaque directory: lower children are hidden (rule 2)
HIDES_SELF = NONDIR | GONE | ISDIR
HIDES_BELOW = NONDIR | GONE | OPAQUE

Write = Callable[[bytes | memoryview], None]


class _Stopped(Exception):
    """The merge failed elsewhere; a layer still being read gives up."""


class TarSource(Protocol):
    """A layer as the merger needs it: a label for errors and its uncompressed tar."""

    label: str

    def open_tar(self) -> AbstractContextManager[BinaryIO]:
        """The layer's tar stream; leaving the context verifies what was read."""
        ...

    def peek(self) -> bytes:
        """The first bytes of the layer's tar, cheaply and unverified."""
        ...

    def plain_file(self) -> tuple[str, int] | None:
        """(file, offset) of the uncompressed tar if it lies in a local file as it is."""
        ...


@dataclass
class MergeStats:
    members_read: int = 0
    members_written: int = 0
    bytes_written: int = 0


# A piece of output: ("r", fd, start, end) copies a spool range, ("b", data) writes bytes,
# ("f", fileobj, size) copies a stream (sparse members expanded by tarfile).
Piece = tuple


@dataclass(slots=True)
class _Item:
    """One output member: its key, the keys that must be written before it, its bytes."""

    key: str
    needs: tuple[str, ...]
    pieces: list[Piece]
    spool: BinaryIO | None  # the layer spool its pieces read from


@dataclass(slots=True)
class _PendingLink:
    """A hard link from a higher layer whose target lives in a lower layer (rule 8)."""

    key: str
    info: tarfile.TarInfo  # its own header, already renamed to its key
    label: str


class _Output:
    """Writes pieces in order, merging adjacent spool ranges into large copies."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._fd = -1
        self._start = self._end = 0
        self.bytes = 0

    def piece(self, piece: Piece) -> None:
        kind = piece[0]
        if kind == "r":
            _, fd, start, end = piece
            if fd == self._fd and start == self._end:
                self._end = end
                return
            self.flush()
            self._fd, self._start, self._end = fd, start, end
            return
        self.flush()
        if kind == "b":
            self._emit(piece[1])
        else:
            _, stream, size = piece
            left = size
            while left:
                data = stream.read(min(CHUNK, left))
                if not data:
                    raise InvalidLayer("sparse member ends early")
                self._emit(data)
                left -= len(data)

    def flush(self) -> None:
        if self._fd < 0:
            return
        fd, pos, end = self._fd, self._start, self._end
        self._fd = -1
        while pos < end:
            data = os.pread(fd, min(CHUNK, end - pos), pos)
            if not data:
                raise OSError("spool file is shorter than its index")
            self._emit(data)
            pos += len(data)

    def _emit(self, data: bytes | memoryview) -> None:
        self._write(data)
        self.bytes += len(data)


def _write_around(spool: BinaryIO, chunk: memoryview, base: int, holes: deque) -> None:
    """Write the stream bytes [base, base+len(chunk)) to the spool, except the holes."""
    end = base + len(chunk)
    while holes and holes[0][1] <= base:
        holes.popleft()
    position = base
    for start, stop in holes:
        if start >= end:
            break
        if start > position:
            spool.seek(position)
            spool.write(chunk[position - base : start - base])
        position = max(position, min(stop, end))
    if position < end:
        spool.seek(position)
        spool.write(chunk[position - base :])


def _padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


def _strip_pax(info: tarfile.TarInfo) -> None:
    """Drop PAX records that tarfile would let override the name, link or size we set."""
    for key in list(info.pax_headers):
        if key in ("path", "linkpath", "size") or key.startswith("GNU.sparse."):
            del info.pax_headers[key]


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class Decisions:
    """What the layers read so far decided about paths; they only ever add."""

    def __init__(self, flags: dict[str, int] | None = None) -> None:
        self.flags: dict[str, int] = flags or {}
        self._hidden_below: dict[str, bool] = {}  # cache, valid until the next add

    def hidden(self, key: str, is_dir: bool) -> bool:
        """Is a member at `key` of a lower layer overruled?"""
        state = self.flags.get(key)
        if state is not None and (state & HIDES_SELF or not is_dir):
            return True
        return bool(key) and self._below_hidden(parent(key))

    def _below_hidden(self, directory: str) -> bool:
        cached = self._hidden_below.get(directory)
        if cached is None:
            cached = bool(self.flags.get(directory, 0) & HIDES_BELOW) or (
                directory != "" and self._below_hidden(parent(directory))
            )
            self._hidden_below[directory] = cached
        return cached

    def add(self, flags: dict[str, int]) -> None:
        current = self.flags
        for key, value in flags.items():
            current[key] = current.get(key, 0) | value
        self._hidden_below.clear()

    def snapshot(self) -> "Decisions":
        return Decisions(dict(self.flags))


class Merger:
    """Merges layers (bottom first, as manifests list them) into one tar via `write`.

    `write` is called with bytes-like chunks that are only valid during the call.
    """

    def __init__(self, write: Write, tmpdir: str | None = None) -> None:
        self._out = _Output(write)
        self._tmpdir = tmpdir
        self.decisions = Decisions()
        self._emitted: set[str] = {""}
        self._waiting: dict[str, list[_Item]] = {}  # missing key -> items waiting for it
        self._spools: dict[BinaryIO, int] = {}  # open layer spools -> items still waiting
        self._pending: dict[str, list[_PendingLink]] = {}
        self.implied: set[str] = set()  # directories that exist only as parents
        self.stats = MergeStats()

    def run(self, layers: Sequence[TarSource]) -> MergeStats:
        """Merge; while one layer's members are decided, the next one is decompressed."""
        order = list(reversed(layers))
        stop = threading.Event()
        with ThreadPoolExecutor(1, thread_name_prefix="layer-reader") as reader:
            upcoming = reader.submit(self._index, order[0], stop, None) if order else None
            try:
                self._root_first(layers)
                for n, layer in enumerate(order):
                    assert upcoming is not None
                    members, spool = upcoming.result()
                    self._spools[spool] = 0
                    if n + 1 < len(order):  # what is decided by now stays decided below
                        snapshot = self.decisions.snapshot()
                        upcoming = reader.submit(self._index, order[n + 1], stop, snapshot)
                    else:
                        upcoming = None
                    layer_pass = _LayerPass(self, layer.label, members, spool)
                    if layer_pass.needs_skipped():  # rare: read the layer again, whole
                        del self._spools[spool]
                        spool.close()
                        members, spool = self._index(layer, stop, None)
                        self._spools[spool] = 0
                        layer_pass = _LayerPass(self, layer.label, members, spool)
                    self.stats.members_read += len(members)
                    layer_pass.run()
                    self._release()
                self._finish()
                self._out.piece(("b", END_OF_ARCHIVE))
                self._out.flush()
            finally:
                stop.set()
                if upcoming is not None and upcoming.exception() is None:
                    upcoming.result()[1].close()
                for spool in self._spools:
                    spool.close()
        self.stats.bytes_written = self._out.bytes
        return self.stats

    def _root_first(self, layers: Sequence[TarSource]) -> None:
        """Write the root directory before anything else (rule 7).

        Its attributes belong to the highest layer that has a root entry, which may be
        read long after higher layers' members were written. Tar writers put "./" first,
        so the first member of each layer, top down, tells.
        """
        for layer in reversed(layers):
            head = layer.peek()[:_PEEK]
            indexer = TarIndexer(layer.label)
            try:
                indexer.feed(memoryview(head))
            except InvalidLayer:
                continue  # the full, digest-checked read says what is wrong
            if not indexer.members:
                continue
            first = indexer.members[0]
            if first.key != "" or first.type != DIR or first.data > len(head):
                continue
            info = tarfile.TarFile(fileobj=io.BytesIO(head), errors="surrogateescape").next()
            assert info is not None
            _strip_pax(info)
            info.name = "."
            self.offer(_Item("", (), [("b", _header(info))], None))
            self.decisions.add({"": ISDIR})
            return

    # -- phase A: decompress once into the spool, indexing members as they pass

    def _index(
        self, layer: TarSource, stop: threading.Event, above: Decisions | None
    ) -> tuple[list[Member], BinaryIO]:
        """Decompress a layer into a new spool file, indexing its members on the way.

        Data of large files that `above` (decisions of higher layers) already hides is
        not written: the spool gets a hole there. Decisions only add, so such a file
        stays hidden; `_LayerPass.needs_skipped` catches the rare link that wants it.
        """
        in_place = layer.plain_file()
        if in_place is not None:  # an uncompressed local layer is its own spool
            spool = open(in_place[0], "rb")  # noqa: SIM115 - closed by run()
            above = None
        else:
            spool = tempfile.TemporaryFile(dir=self._tmpdir)  # noqa: SIM115 - closed by run()
        try:
            indexer = TarIndexer(layer.label, in_place[1] if in_place else 0)
            members = indexer.members
            holes: deque[tuple[int, int]] = deque()
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            base = known = 0
            with layer.open_tar() as stream:
                while n := stream.readinto(buf):
                    if stop.is_set():
                        raise _Stopped
                    if indexer.ended:
                        continue
                    indexer.feed(view[:n])
                    if in_place is not None:
                        continue
                    if above is not None:
                        for m in members[known:]:
                            if m.type == REG and m.size >= _HOLE_MIN and above.hidden(m.key, False):
                                m.skipped = True
                                holes.append((m.data, m.data + m.size))
                        known = len(members)
                    _write_around(spool, view[:n], base, holes)
                    base += n
            indexer.finish()
            if in_place is None:
                spool.truncate(base)
                spool.flush()
        except BaseException:
            spool.close()
            raise
        return members, spool

    # -- output, in an order where parents and link targets come first (rules 7, 8)

    def offer(self, item: _Item) -> None:
        """Write `item` now if what it needs is written, else when that is."""
        for need in item.needs:
            if need not in self._emitted:
                self._waiting.setdefault(need, []).append(item)
                if item.spool is not None:
                    self._spools[item.spool] += 1
                return
        ready = [item]
        while ready:  # writing one member may release others waiting for it
            item = ready.pop()
            for piece in item.pieces:
                self._out.piece(piece)
            self._emitted.add(item.key)
            self.stats.members_written += 1
            for waiter in reversed(self._waiting.pop(item.key, ())):
                if waiter.spool is not None:
                    self._spools[waiter.spool] -= 1
                missing = next((n for n in waiter.needs if n not in self._emitted), None)
                if missing is None:
                    ready.append(waiter)
                else:
                    self._waiting.setdefault(missing, []).append(waiter)
                    if waiter.spool is not None:
                        self._spools[waiter.spool] += 1

    def _release(self) -> None:
        """Close the spools no waiting member reads from any more."""
        self._out.flush()
        for spool, users in list(self._spools.items()):
            if not users:
                spool.close()
                del self._spools[spool]

    def _finish(self) -> None:
        if self._pending:
            key, links = next(iter(self._pending.items()))
            raise InvalidLayer(
                f"{links[0].label}: hard link {links[0].key!r} points to {key!r}, "
                "which no layer below it holds"
            )
        # Directories that exist only as parents, never as an entry: plain ones.
        for key in sorted(self.implied - self._emitted, key=lambda k: k.count("/")):
            if key not in self._emitted:
                info = tarfile.TarInfo(key)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                self.offer(_Item(key, (), [("b", _header(info))], None))
        if self._waiting:
            key, items = next(iter(self._waiting.items()))
            raise InvalidLayer(f"member {items[0].key!r} needs {key!r}, which no layer holds")

    # -- hard links whose targets live in lower layers

    def pending_keys(self) -> list[str]:
        return list(self._pending)

    def pending_for(self, key: str) -> list[_PendingLink]:
        return self._pending.pop(key, [])

    def add_pending(self, target: str, link: _PendingLink) -> None:
        self._pending.setdefault(target, []).append(link)


@dataclass
class _LayerPass:
    """Phase B for one layer: decide each member against the higher layers and emit it."""

    merger: Merger
    label: str
    members: list[Member]
    spool: BinaryIO
    flags: dict[str, int] = field(default_factory=dict)
    _visible: set[int] = field(default_factory=set)
    _materialised: dict[int, str] = field(default_factory=dict)
    _new_pending: list[tuple[str, _PendingLink]] = field(default_factory=list)
    _tar: tarfile.TarFile | None = None

    def __post_init__(self) -> None:
        self._plan = self._apply_in_order()

    def needs_skipped(self) -> bool:
        """Would this pass read the data of a member the spool left out?

        Only hard links do: to a target replaced or deleted higher up, from this layer
        or from a higher one waiting for it.
        """
        members = self.members
        _, resolved, final = self._plan
        sources = list(resolved.values())
        for key in self.merger.pending_keys():
            if key in final:
                sources.append(resolved.get(final[key], ("here", final[key])))
        return any(where == "here" and members[ref].skipped for where, ref in sources)

    def run(self) -> None:
        members = self.members
        survivors, resolved, _ = self._plan  # a survivor is the last member at its key
        merger = self.merger
        flags = self.flags
        for i in survivors:
            m = members[i]
            key = m.key
            is_dir = m.type == DIR
            hidden = merger.decisions.hidden(key, is_dir)
            self._imply_parents(key)
            if not hidden:
                self._visible.add(i)
                if is_dir:
                    flags[key] = flags.get(key, 0) | ISDIR
                if m.type == LNK:
                    self._emit_link(m, resolved[i])
                else:
                    self._emit(m)
            self._resolve_pending(key, i, resolved, visible=not hidden)
        for target, link in self._new_pending:  # only lower layers may resolve these
            merger.add_pending(target, link)
        merger.decisions.add(flags)

    def _apply_in_order(self) -> tuple[list[int], dict[int, tuple[str, int | str]], dict[str, int]]:
        """Which members are still there once the layer is unpacked in order.

        A runtime unpacks member by member: a later member at the same path replaces an
        earlier one (rule 6), a non-directory replaces a directory and what this layer
        put under it (rule 5), and a member under a non-directory turns that into a
        directory. Whiteouts and opaque markers only act on lower layers (rules 1-3).
        Returns the surviving members in order, hard-link sources, and key -> member.
        """
        members, flags = self.members, self.flags
        state: dict[str, int] = {}  # what this layer has at each path so far
        below: set[str] = set()  # directories this layer has put something under
        alive = [False] * len(members)
        resolved: dict[int, tuple[str, int | str]] = {}
        for i, m in enumerate(members):
            key = m.key
            whiteout = split_whiteout(key, self.label)
            if whiteout is not None:
                kind, target = whiteout
                if kind == "whiteout":
                    flags[target] = flags.get(target, 0) | GONE
                elif kind == "opaque":
                    flags[target] = flags.get(target, 0) | OPAQUE
                continue  # rule 3: markers are never written
            if m.type == LNK:  # the target as it is at this moment (rule 8)
                j = state.get(m.link)
                resolved[i] = ("lower", m.link) if j is None else resolved.get(j, ("here", j))
            directory = parent(key)
            while directory and directory not in below:
                j = state.get(directory)
                if j is not None and members[j].type != DIR:
                    alive[j] = False  # a file with children becomes a directory
                    del state[directory]
                below.add(directory)
                directory = parent(directory)
            j = state.get(key)
            if j is not None:
                alive[j] = False
            if m.type != DIR and key in below:  # replaces a directory and all under it
                prefix = key + "/"
                for k in [k for k in state if k.startswith(prefix)]:
                    alive[state.pop(k)] = False
                below -= {d for d in below if d == key or d.startswith(prefix)}
            if m.type != DIR:  # whatever lower layers had at and under `key` is replaced
                flags[key] = flags.get(key, 0) | NONDIR
            state[key] = i
            alive[i] = True
        return [i for i, keep in enumerate(alive) if keep], resolved, state

    def _imply_parents(self, key: str) -> None:
        """Parents of a member exist as directories unless higher layers removed them."""
        flags = self.flags
        directory = parent(key)
        while directory and not flags.get(directory, 0) & (ISDIR | IMPLICIT):
            flags[directory] = flags.get(directory, 0) | IMPLICIT
            if not self.merger.decisions.hidden(directory, True):
                self.merger.implied.add(directory)
            directory = parent(directory)

    # -- building output items

    def _info(self, m: Member) -> tarfile.TarInfo:
        """Full header of a member, parsed by tarfile (the rare, slow path)."""
        if self._tar is None:
            self.spool.seek(0)
            self._tar = tarfile.TarFile(
                fileobj=self.spool, encoding="utf-8", errors="surrogateescape"
            )
        self.spool.seek(m.start)
        try:
            return tarfile.TarInfo.fromtarfile(self._tar)
        except tarfile.TarError as exc:
            raise InvalidLayer(f"{self.label}: malformed member {m.key!r}: {exc}") from None

    def _content(self, m: Member, info: tarfile.TarInfo) -> list[Piece]:
        """The data pieces of a member as a plain (never sparse) file."""
        if not info.isreg() or info.size == 0:
            return []
        if info.sparse is not None:  # rule 9: GNU sparse becomes a regular file
            assert self._tar is not None
            stream = self._tar.extractfile(info)
            info.sparse = None
            info.type = tarfile.REGTYPE
            return [("f", stream, info.size), ("b", _padding(info.size))]
        fd = self.spool.fileno()
        return [("r", fd, m.data, m.data + m.size), ("b", _padding(m.size))]

    def _rewritten(self, source: Member, key: str) -> list[Piece]:
        """`source`'s header and data under the name `key`."""
        info = self._info(source)
        content = self._content(source, info)
        _strip_pax(info)
        info.name = key or "."  # the root directory is written as "./"
        return [("b", _header(info)), *content]

    def _emit(self, m: Member) -> None:
        if m.verbatim:
            pieces: list[Piece] = [("r", self.spool.fileno(), m.start, m.end)]
        else:
            pieces = self._rewritten(m, m.key)
        self.merger.offer(_Item(m.key, (parent(m.key),), pieces, self.spool))

    def _link_item(self, key: str, info: tarfile.TarInfo, target: str) -> _Item:
        _strip_pax(info)
        info.name, info.type, info.linkname, info.size = key, tarfile.LNKTYPE, target, 0
        return _Item(key, (parent(key), target), [("b", _header(info))], None)

    def _emit_link(self, m: Member, source: tuple[str, int | str]) -> None:
        where, ref = source
        if where == "lower":
            assert isinstance(ref, str)
            info = self._info(m)
            info.name = m.key
            self._new_pending.append((ref, _PendingLink(m.key, info, self.label)))
            return
        assert isinstance(ref, int)
        target = self.members[ref]
        if ref in self._visible:  # the target is in the output as it is: stay linked
            if m.verbatim and m.link == target.key:
                pieces: list[Piece] = [("r", self.spool.fileno(), m.start, m.end)]
                self.merger.offer(_Item(m.key, (parent(m.key), target.key), pieces, self.spool))
            else:
                self.merger.offer(self._link_item(m.key, self._info(m), target.key))
        elif ref in self._materialised:  # the group already has a materialised member
            self.merger.offer(self._link_item(m.key, self._info(m), self._materialised[ref]))
        else:  # rule 8: the target was replaced or deleted, keep the content it had here
            self._materialised[ref] = m.key
            pieces = self._rewritten(target, m.key)
            self.merger.offer(_Item(m.key, (parent(m.key),), pieces, self.spool))

    def _resolve_pending(
        self, key: str, i: int, resolved: dict[int, tuple[str, int | str]], visible: bool
    ) -> None:
        """Links from higher layers to `key` get what `key` is after this layer (rule 8)."""
        links = self.merger.pending_for(key)
        if not links:
            return
        m = self.members[i]
        if visible:  # `key` is in the output: the links join its group
            for link in links:
                self.merger.offer(self._link_item(link.key, link.info, key))
            return
        source: tuple[str, int | str] = resolved.get(i, ("here", i))
        if source[0] == "lower":  # `key` is itself a link to a lower layer's file
            self._new_pending.extend((str(source[1]), link) for link in links)
            return
        ref = source[1]
        assert isinstance(ref, int)
        target = self.members[ref] if ref != i else m
        rest = links
        if ref in self._visible:  # the target is in the output: join its group
            group = target.key
        elif ref in self._materialised:  # a link of this layer already holds the content
            group = self._materialised[ref]
        else:  # the first link becomes the file, the others link to it
            first, rest = links[0], links[1:]
            group = self._materialised[ref] = first.key
            pieces = self._rewritten(target, first.key)
            self.merger.offer(_Item(first.key, (parent(first.key),), pieces, self.spool))
        for link in rest:
            self.merger.offer(self._link_item(link.key, link.info, group))
