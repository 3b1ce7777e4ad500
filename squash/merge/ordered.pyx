# cython: language_level=3, boundscheck=True, wraparound=False, cdivision=True
"""The output side: members go out in an order where parents and link targets come
first (rules 7 and 8), each with a header written anew from its parsed fields.

A member whose parent (or link target) is not written yet waits for it; the rest go out
at once. Bytes are gathered into blocks of about 1 MiB before they are handed to the
layer writer; data is read from the layer spools through a window, so small members
cost no system call each.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint32_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

from squash.merge.layerindex cimport REREAD, SPARSE, LayerIndex, Member, Spool
from squash.merge.pathtable cimport EMITTED, MAX_NAME, NO_PATH, ROOT, PathTable
from squash.merge.tarheader cimport BLOCK, Fields, HeaderReader, HeaderWriter

from squash.errors import InvalidLayer

cdef enum:
    BIG = 256 << 10    # data at least this large is read straight into its own block
    FLUSH = 1 << 20    # output gathered before it is handed on

cdef enum What:
    MEMBER = 0         # a member's header and data, under a key
    LINK = 1           # a hard link to a target, with the link member's header
    PREPARED = 2       # a header made earlier (a kept directory, a whiteout marker)

cdef unsigned char ZEROS[BLOCK]
memset(ZEROS, 0, BLOCK)


cdef class Item:
    """A member that waits for its parent or link target to be written."""


cdef class Output:
    """`write_out(bytes)` receives the merged layer tar."""

    def __cinit__(self, PathTable paths, object write_out, object expand_sparse):
        self.paths = paths
        self.write_out = write_out
        self.expand_sparse = expand_sparse
        self.reader = HeaderReader()
        self.writer = HeaderWriter()
        self.waiting = {}
        self.buf = <unsigned char*>malloc(FLUSH + 4 * BLOCK)
        self.group_cap = 4 * BLOCK
        self.group = <unsigned char*>malloc(self.group_cap)
        self.target = <unsigned char*>malloc(MAX_NAME + 2)
        if self.buf == NULL or self.group == NULL or self.target == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.buf)
        free(self.group)
        free(self.target)

    # -- offering members: written now if what they need is written, else later

    cdef void member(self, LayerIndex index, Py_ssize_t i, uint32_t key) except *:
        """Member `i` of `index` (header, then data) under `key`."""
        cdef Item item
        if self._ready(self.paths.parent[key], NO_PATH):
            self._write_member(index, i, key)
            self._written(key)
            return
        item = Item()
        item.what, item.key, item.index, item.member = MEMBER, key, index, i
        item.need_parent, item.need_link = self.paths.parent[key], NO_PATH
        self._wait(item)

    cdef void link(self, LayerIndex index, Py_ssize_t i, bytes saved, uint32_t key,
                   uint32_t target) except *:
        """A hard link `key` -> `target`, with the header of link member `i` of `index`
        (or the header group `saved`, when its layer is gone)."""
        cdef Item item
        if self._ready(self.paths.parent[key], target):
            self._write_link(index, i, saved, key, target)
            self._written(key)
            return
        item = Item()
        item.what, item.key, item.index, item.member, item.saved = LINK, key, index, i, saved
        item.need_parent, item.need_link = self.paths.parent[key], target
        self._wait(item)

    cdef void plain_dir(self, uint32_t key) except *:
        cdef Py_ssize_t n = self.paths.key(key, True)
        cdef Py_ssize_t h = self.writer.write_plain(self.paths.keybuf, n, b'5', 0o755)
        self._append(self.writer.out, h)
        self._written(key)

    cdef bytes header_of(self, LayerIndex index, Py_ssize_t i, uint32_t key):
        """The header member `i` of `index` would be written with under `key`, to be
        written later (it holds no data: a directory)."""
        cdef const Member* m = &index.members[i]
        cdef Py_ssize_t n = self.paths.key(key, True)
        cdef Py_ssize_t h = self._build(index, m, None, self.paths.keybuf, n, m.type, NULL, 0, 0)
        return self.writer.out[:h]

    cdef bytes marker_header(self, uint32_t directory, bytes base):
        """An empty whiteout or opaque marker `base` in `directory`."""
        cdef Py_ssize_t n = 0 if directory == ROOT else self.paths.key(directory, True), h
        cdef bytes name = self.paths.keybuf[:n] + base
        h = self.writer.write_plain(name, len(name), b'0', 0o644)
        return self.writer.out[:h]

    cdef void prepared(self, uint32_t key, uint32_t parent, bytes header) except *:
        """A header made earlier, written once `parent` is; `key` is what it writes
        (NO_PATH for a marker, which names no path)."""
        cdef Item item
        if self._ready(parent, NO_PATH):
            self._append(header, len(header))
            self._written(key)
            return
        item = Item()
        item.what, item.key, item.index, item.saved = PREPARED, key, None, header
        item.need_parent, item.need_link = parent, NO_PATH
        self._wait(item)

    cdef void root(self, bytes saved) except *:
        """The root directory entry, first: its header group is `saved`."""
        self._header(None, NULL, saved, <const unsigned char*>b"./", 2, b'5', NULL, 0, 0)
        self.members_written += 1

    cdef bint _ready(self, uint32_t key, uint32_t other) noexcept:
        cdef unsigned char* marks = self.paths.marks
        return marks[key] & EMITTED and (other == NO_PATH or marks[other] & EMITTED)

    cdef void _wait(self, Item item) except *:
        cdef uint32_t need = item.need_parent
        if self.paths.marks[need] & EMITTED:
            need = item.need_link
        self.waiting.setdefault(need, []).append(item)
        if item.index is not None:
            item.index.spool.waiting += 1

    cdef void _written(self, uint32_t key) except *:
        """`key` is out: write, in order, what waited for it (and what waited for those)."""
        cdef list stack
        cdef Item item
        self.members_written += 1
        if key == NO_PATH:
            return
        self.paths.marks[key] |= EMITTED
        if not self.waiting:
            return
        stack = []
        self._release(key, stack)
        while stack:
            item = stack.pop()
            self._write(item)
            self.members_written += 1
            if item.key != NO_PATH:
                self.paths.marks[item.key] |= EMITTED
                self._release(item.key, stack)

    cdef void _release(self, uint32_t key, list stack) except *:
        cdef Item waiter
        waiters = self.waiting.pop(key, None)
        if waiters is None:
            return
        for waiter in reversed(waiters):
            if waiter.index is not None:
                waiter.index.spool.waiting -= 1
            if self._ready(waiter.need_parent, waiter.need_link):
                stack.append(waiter)
            else:
                self._wait(waiter)

    def unresolved(self):
        """(a member still waiting, the key it waits for), or None."""
        for need, items in self.waiting.items():
            return self.paths.text((<Item>items[0]).key), self.paths.text(need)
        return None

    def finish(self):
        """The end-of-archive blocks, then everything still gathered."""
        self._append(ZEROS, BLOCK)
        self._append(ZEROS, BLOCK)
        self._flush()

    # -- writing

    cdef void _write(self, Item item) except *:
        if item.what == MEMBER:
            self._write_member(item.index, item.member, item.key)
        elif item.what == PREPARED:
            self._append(item.saved, len(item.saved))
        else:
            self._write_link(item.index, item.member, item.saved, item.key, item.need_link)

    cdef void _write_member(self, LayerIndex index, Py_ssize_t i, uint32_t key) except *:
        cdef const Member* m = &index.members[i]
        cdef Py_ssize_t n = self.paths.key(key, m.type == b'5')
        if m.flags & SPARSE:  # rule 9: GNU sparse becomes a regular file (tarfile expands it)
            self._flush()
            start = m.data - m.group
            for chunk in self.expand_sparse(index.spool.file, start, self.paths.keybuf[:n]):
                self._append(chunk, len(chunk))
            return
        self._header(index, m, None, self.paths.keybuf, n, m.type, NULL, 0, m.size)
        if m.type == b'0' and m.size:
            self._copy(index.spool, m.data, m.size)
            self._append(ZEROS, (BLOCK - m.size % BLOCK) % BLOCK)

    cdef void _write_link(self, LayerIndex index, Py_ssize_t i, bytes saved, uint32_t key,
                          uint32_t target) except *:
        cdef const Member* m = NULL if index is None else &index.members[i]
        cdef Py_ssize_t t = self.paths.key(target, False), n
        memcpy(self.target, self.paths.keybuf, t)
        n = self.paths.key(key, False)
        self._header(index, m, saved, self.paths.keybuf, n, b'1', self.target, t, 0)

    cdef void _header(self, LayerIndex index, const Member* m, bytes saved,
                      const unsigned char* name, Py_ssize_t name_len, char type,
                      const unsigned char* link, Py_ssize_t link_len, long long size) except *:
        cdef Py_ssize_t h = self._build(index, m, saved, name, name_len, type, link, link_len,
                                        size)
        self._append(self.writer.out, h)

    cdef Py_ssize_t _build(self, LayerIndex index, const Member* m, bytes saved,
                           const unsigned char* name, Py_ssize_t name_len, char type,
                           const unsigned char* link, Py_ssize_t link_len,
                           long long size) except -1:
        """The header of member `m` (or of the header group `saved`) as `name`, in the
        writer's buffer; a symlink keeps its own target, a hard link gets `link`."""
        cdef Fields f
        cdef Py_ssize_t n
        cdef unsigned char* grown
        cdef const unsigned char* g
        if m != NULL and not m.flags & REREAD:
            index.fields(m, &f)
            if type == b'2':
                link, link_len = index.text + m.data, m.size
        else:  # read the header group again: it says more than the index kept
            if saved is not None:
                g, n = <const unsigned char*>PyBytes_AS_STRING(saved), len(saved)
            else:
                n = m.group
                if n > self.group_cap:
                    grown = <unsigned char*>realloc(self.group, n)
                    if grown == NULL:
                        raise MemoryError()
                    self.group, self.group_cap = grown, n
                index.spool.read(self.group, m.data - n, n)
                g = self.group
            if self.reader.read(g, n, "a header read again", 0) != 0:
                raise InvalidLayer("a header group read again is not one")
            self.reader.fields(&f)
            if type == b'2':
                link, link_len = self.reader.h.link, self.reader.h.link_len
        return self.writer.write(&f, name, name_len, type, link, link_len, size)

    cdef void _append(self, const unsigned char* p, Py_ssize_t n) except *:
        cdef Py_ssize_t take
        while n > 0:
            take = min(n, FLUSH - self.used)
            memcpy(self.buf + self.used, p, take)
            self.used += take
            self.bytes_written += take
            p += take
            n -= take
            if self.used >= FLUSH:
                self._flush()

    cdef void _copy(self, Spool spool, long long at, long long n) except *:
        """Data from the spool: large pieces straight into blocks of their own."""
        cdef Py_ssize_t take
        if n < BIG:
            if self.used + n > FLUSH:
                self._flush()
            spool.read(self.buf + self.used, at, n)
            self.used += n
            self.bytes_written += n
            return
        self._flush()
        while n > 0:
            take = min(n, FLUSH)
            block = PyBytes_FromStringAndSize(NULL, take)
            spool.read(<unsigned char*>PyBytes_AS_STRING(block), at, take)
            self.write_out(block)
            self.bytes_written += take
            at += take
            n -= take

    cdef void _flush(self) except *:
        if self.used:
            block = PyBytes_FromStringAndSize(<char*>self.buf, self.used)
            self.used = 0
            self.write_out(block)

