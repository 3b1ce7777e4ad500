# cython: language_level=3, boundscheck=True, wraparound=False, cdivision=True
"""One layer decided against the layers above it, and the hard-link bookkeeping.

A layer is applied as a runtime unpacks it, member by member: a later member at a path
replaces an earlier one (rule 6), a non-directory replaces a directory and what this
layer put under it (rule 5), a member under a non-directory turns it into a directory.
Whiteouts and opaque markers act on lower layers only (rules 1-3). Each member that is
still there and that no higher layer hides goes to the output.

Hard links (rule 8): a link whose target was deleted or replaced keeps the content the
target had in the link's layer (the first such link becomes the file, the others link
to it); a link to a file of a lower layer waits ("pending") until that layer is read.

A partial squash keeps the bottom layers as they are and squashes the rest into a layer
that goes on top of them (docs/merge-rules.md, "Partial squashes"): the kept layers are
read like the others, but what they hold is written only where the squashed layer needs
it: a whiteout or opaque marker for what it hides there, the kept entry of a directory it
puts something in, the content of a file its hard links point to.
"""

from libc.stdint cimport uint8_t, uint32_t
from libc.stdlib cimport calloc, free

from squash.merge.layerindex cimport SKIPPED, LayerIndex, Member, kind_of, link_of
from squash.merge.ordered cimport Output
from squash.merge.pathtable cimport (
    BELOW, EMITTED, GONE, HIDES_BELOW, IMPLICIT, IMPLIED, IN_LAYER, ISDIR, MARKED, META,
    NO_PATH, NONDIR, NONDIR_OUT, OPAQUE, OPAQUE_MARK, PLAIN, ROOT, WHITEOUT, PathTable,
)

from squash.errors import InvalidLayer


cdef class Layers:
    """What a merge holds across layers: the paths and their decisions, the output, and
    hard links of higher layers waiting for their targets."""

    cdef readonly PathTable paths
    cdef readonly Output output
    cdef dict pending            # target id -> [(link key id, header group, layer label)]
    cdef readonly long long members_read
    cdef bint keeping            # the layers planned from now on are kept
    cdef dict deferred           # kept directory id -> its header, written if it is needed

    def __cinit__(self, object write_out, object expand_sparse):
        self.paths = PathTable()
        self.output = Output(self.paths, write_out, expand_sparse)
        self.pending = {}
        self.deferred = {}

    def keep_below(self):
        """The layers read so far are squashed; those planned from now on are kept."""
        self.paths.freeze_upper()
        self.keeping = True

    def index(self, str where, object file=None, long long offset=0, *, bint spool_out=False,
              bint holes=False):
        """A new index of a layer, interning into this merge's paths (see LayerIndex)."""
        return LayerIndex(self.paths, where, file, offset, spool_out=spool_out, holes=holes)

    def plan(self, LayerIndex index):
        """The layer applied in order; `run` it to write what survives."""
        return LayerPlan(self, index)

    def root_entry(self, LayerIndex head, bytes data) -> bool:
        """Write the root directory first if `head` (the start of a layer) begins with it:
        its attributes belong to the highest layer that has one (rule 7)."""
        if not head.count:
            return False
        m = &head.members[0]
        if m.path != ROOT or kind_of(m) != PLAIN or m.type != b'5' or m.data > len(data):
            return False
        self.output.root(data[m.data - m.group:m.data])
        self.paths.flags[ROOT] |= ISDIR
        return True

    def finish(self):
        """Links whose target no layer held are an error; directories that exist only as
        parents are written as plain ones; then the end of the archive."""
        cdef PathTable paths = self.paths
        cdef uint32_t d
        for target, links in self.pending.items():
            key, _, label = links[0]
            raise InvalidLayer(
                f"{label}: hard link {paths.text(key)!r} points to {paths.text(target)!r}, "
                "which no layer below it holds"
            )
        implied = [d for d in paths.implied_order if not paths.marks[d] & EMITTED]
        implied.sort(key=self._depth)
        for d in implied:
            if not paths.marks[d] & EMITTED:
                self.output.plain_dir(d)
        missing = self.output.unresolved()
        if missing is not None:
            raise InvalidLayer(f"member {missing[0]!r} needs {missing[1]!r}, which no layer holds")
        self.output.finish()

    def _depth(self, uint32_t id) -> int:
        cdef int depth = 0
        while id != ROOT:
            id = self.paths.parent[id]
            depth += 1
        return depth


cdef class LayerPlan:
    cdef Layers layers
    cdef LayerIndex index
    cdef bint kept               # a kept layer of a partial squash
    cdef uint8_t* alive          # still there once the layer is unpacked in order
    cdef uint8_t* visible        # and not hidden by a higher layer: written
    cdef dict resolved           # hard link's member -> its source: j >= 0 member j here,
                                 # -(id + 1) the file at id in a lower layer
    cdef dict materialised       # member -> the link key that holds its content
    cdef list new_pending

    def __cinit__(self, Layers layers, LayerIndex index):
        self.layers = layers
        self.index = index
        self.kept = layers.keeping
        self.alive = <uint8_t*>calloc(max(index.count, 1), 1)
        self.visible = <uint8_t*>calloc(max(index.count, 1), 1)
        if self.alive == NULL or self.visible == NULL:
            raise MemoryError()
        self.resolved = {}
        self.materialised = {}
        self.new_pending = []
        self._apply_in_order()

    def __dealloc__(self):
        free(self.alive)
        free(self.visible)

    cdef void _apply_in_order(self) except *:
        cdef PathTable P = self.layers.paths
        cdef Member* ms = self.index.members
        cdef Member* m
        cdef Py_ssize_t i
        cdef long j
        cdef uint32_t key, directory
        for i in range(self.index.count):
            m = &ms[i]
            if kind_of(m) == WHITEOUT:
                P.touch(m.path)
                P.lflags[m.path] |= GONE
                continue
            if kind_of(m) == OPAQUE_MARK:
                P.touch(m.path)
                P.lflags[m.path] |= OPAQUE
                continue
            if kind_of(m) == META:
                continue
            key = m.path
            if m.type == b'1':  # the target as it is at this moment (rule 8)
                j = <long>P.state[link_of(m)] - 1
                self.resolved[i] = -(<long>link_of(m) + 1) if j < 0 else self.resolved.get(j, j)
            directory = P.parent[key]
            while directory != ROOT and not P.marks[directory] & BELOW:
                j = <long>P.state[directory] - 1
                if j >= 0 and ms[j].type != b'5':
                    self.alive[j] = 0  # a file with children becomes a directory
                    P.state[directory] = 0
                P.touch(directory)
                P.marks[directory] |= BELOW
                directory = P.parent[directory]
            P.touch(key)
            j = <long>P.state[key] - 1
            if j >= 0:
                self.alive[j] = 0
            if m.type != b'5':
                if P.marks[key] & BELOW:  # replaces a directory and all this layer put under it
                    self._remove_under(key)
                P.lflags[key] |= NONDIR  # what lower layers have at and under it is replaced
            P.state[key] = <uint32_t>(i + 1)
            self.alive[i] = 1

    cdef void _remove_under(self, uint32_t key) except *:
        cdef PathTable P = self.layers.paths
        cdef uint32_t d, c
        cdef long j
        todo = [P.child[key]]
        P.child[key] = 0
        P.marks[key] &= ~BELOW
        while todo:
            d = todo.pop()
            while d:
                j = <long>P.state[d] - 1
                if j >= 0:
                    self.alive[j] = 0
                    P.state[d] = 0
                P.marks[d] &= ~(BELOW | IN_LAYER)  # touched again, it is linked again
                c = P.child[d]
                if c:
                    todo.append(c)
                P.child[d] = 0
                d = P.sibling[d]

    def needs_skipped(self) -> bool:
        """Would this layer's links read data its spool left out? Only hard links do:
        to a target replaced or deleted higher up, from this layer or a higher one."""
        cdef PathTable P = self.layers.paths
        cdef Member* ms = self.index.members
        cdef long j
        sources = list(self.resolved.values())
        for key in self.layers.pending:
            j = <long>P.state[<uint32_t>key] - 1
            if j >= 0:
                sources.append(self.resolved.get(j, j))
        return any(s >= 0 and ms[<long>s].flags & SKIPPED for s in sources)

    def discard(self):
        """Forget this layer's decisions (it is read again, whole)."""
        self.layers.paths.discard_layer()

    def run(self):
        """Write the members that survive (or keep them waiting), then add this layer's
        decisions to those of the layers above."""
        cdef Layers layers = self.layers
        cdef PathTable P = layers.paths
        cdef Output out = layers.output
        cdef Member* ms = self.index.members
        cdef Member* m
        cdef Py_ssize_t i
        cdef uint32_t key
        cdef bint hidden, is_dir
        for i in range(self.index.count):
            if not self.alive[i]:
                continue
            m = &ms[i]
            key = m.path
            is_dir = m.type == b'5'
            hidden = P.hidden(key, is_dir)
            self._imply_parents(key, not self.kept)
            if self.kept:
                self._keep(i, hidden)
            elif not hidden:
                self.visible[i] = 1
                if is_dir:
                    P.lflags[key] |= ISDIR
                else:
                    P.marks[key] |= NONDIR_OUT
                if m.type == b'1':
                    self._link(i)
                else:
                    out.member(self.index, i, key)
            if layers.pending:
                self._resolve_pending(i, self.visible[i])
        for target, link in self.new_pending:  # only lower layers may resolve these
            layers.pending.setdefault(target, []).append(link)
        P.add_layer()
        layers.members_read += self.index.count

    cdef void _imply_parents(self, uint32_t key, bint written) except *:
        """Parents of a member exist as directories unless higher layers removed them;
        those of a `written` member are written too."""
        cdef PathTable P = self.layers.paths
        cdef uint32_t d = P.parent[key]
        while d != ROOT and not P.lflags[d] & (ISDIR | IMPLICIT):
            P.touch(d)
            P.lflags[d] |= IMPLICIT
            if written and not P.marks[d] & IMPLIED and not P.hidden(d, True):
                P.marks[d] |= IMPLIED
                P.implied_order.append(d)
            d = P.parent[d]

    cdef void _keep(self, Py_ssize_t i, bint hidden) except *:
        """A member of a kept layer: the layer itself stays in the image, so only what the
        squashed layer needs of it is written."""
        cdef Layers layers = self.layers
        cdef PathTable P = layers.paths
        cdef Member* m = &self.index.members[i]
        cdef uint32_t key = m.path
        self._hide_from_above(key, m.type == b'5')
        if hidden or m.type != b'5':
            return  # a kept file is read only if a link of the squashed layers needs it
        P.lflags[key] |= ISDIR
        if P.marks[key] & IMPLIED:  # the squashed layer puts something in it
            self.visible[i] = 1
            layers.output.member(self.index, i, key)
        elif key not in layers.deferred:  # the highest entry, in case a marker needs it
            layers.deferred[key] = layers.output.header_of(self.index, i, key)

    cdef void _hide_from_above(self, uint32_t key, bint is_dir) except *:
        """If the squashed layers hide this kept entry, write the marker that does it: at
        the highest path that hides it, a whiteout where the squashed layer has nothing, an
        opaque marker where it has a directory (a non-directory there replaces it anyway).
        None where the kept layers above removed what the marker would hide (the path, or
        for an opaque marker the child this entry is or lies under): the kept image has
        nothing there to hide, and a marker would make its parent a directory. Where they
        replaced it instead, the entry that replaced it was here first."""
        cdef Layers layers = self.layers
        cdef PathTable P = layers.paths
        cdef Output out = layers.output
        cdef uint32_t h = NO_PATH, a = key, top
        cdef uint8_t f
        cdef bint opaque
        if P.upper_flags(key) & (GONE | NONDIR):
            h = key
        while a != ROOT:
            a = P.parent[a]
            if P.upper_flags(a) & HIDES_BELOW:
                h = a
        if h == NO_PATH or P.marks[h] & (MARKED | NONDIR_OUT):
            return
        f = P.upper_flags(h)
        opaque = f & ISDIR or P.marks[h] & IMPLIED or not f & (GONE | NONDIR)
        top = h
        if opaque:
            top = key
            while top != h and P.parent[top] != h:
                top = P.parent[top]
        if P.kept_hidden(top, top != key or is_dir):
            return
        P.marks[h] |= MARKED
        if opaque:
            self._need_dir(h)
            out.prepared(NO_PATH, h, out.marker_header(h, b".wh..wh..opq"))
        else:
            a = P.parent[h]
            self._need_dir(a)
            name = P.arena[P.name_at[h]:P.name_at[h] + P.name_len[h]]
            out.prepared(NO_PATH, a, out.marker_header(a, b".wh." + name))

    cdef void _need_dir(self, uint32_t d) except *:
        """Make directory `d` (and its parents) part of the squashed layer: the kept entry
        already seen, else the next one, else a plain one at the end."""
        cdef Layers layers = self.layers
        cdef PathTable P = layers.paths
        cdef uint32_t a = d
        chain = []
        while a != ROOT and not P.marks[a] & (EMITTED | IMPLIED) and not P.upper_flags(a) & ISDIR:
            chain.append(a)
            a = P.parent[a]
        for a in reversed(chain):
            P.marks[a] |= IMPLIED
            P.implied_order.append(a)
            header = layers.deferred.pop(a, None)
            if header is not None:
                layers.output.prepared(a, P.parent[a], header)

    cdef void _link(self, Py_ssize_t i) except *:
        cdef LayerIndex index = self.index
        cdef Member* m = &index.members[i]
        cdef Member* t
        cdef Output out = self.layers.output
        cdef long source = self.resolved[i]
        if source < 0:  # the target lives in a lower layer
            link = (m.path, index.spool.group(m.data - m.group, m.data), index.where)
            self.new_pending.append((<uint32_t>(-source - 1), link))
            return
        t = &index.members[source]
        if self.visible[source]:  # the target is in the output as it is: stay linked
            out.link(index, i, None, m.path, t.path)
        elif source in self.materialised:  # the group already has a materialised member
            out.link(index, i, None, m.path, self.materialised[source])
        else:  # rule 8: the target was replaced or deleted, keep the content it had here
            self.materialised[source] = m.path
            out.member(index, source, m.path)

    cdef void _resolve_pending(self, Py_ssize_t i, bint visible) except *:
        """Links from higher layers to this member's key get what it is after this layer."""
        cdef LayerIndex index = self.index
        cdef Member* m = &index.members[i]
        cdef Output out = self.layers.output
        cdef long source
        cdef uint32_t group
        links = self.layers.pending.pop(m.path, None)
        if not links:
            return
        if visible:  # the key is in the output: the links join its group
            for key, saved, _ in links:
                out.link(None, 0, saved, key, m.path)
            return
        source = self.resolved.get(i, i)
        if source < 0:  # the key is itself a link to a lower layer's file
            self.new_pending.extend((<uint32_t>(-source - 1), link) for link in links)
            return
        rest = links
        if self.visible[source]:
            group = index.members[source].path
        elif source in self.materialised:
            group = self.materialised[source]
        else:  # the first link becomes the file, the others link to it
            first, rest = links[0], links[1:]
            group = self.materialised[source] = first[0]
            out.member(index, source, group)
        for key, saved, _ in rest:
            out.link(None, 0, saved, key, group)
