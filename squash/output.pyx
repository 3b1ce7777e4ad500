# cython: language_level=3, boundscheck=True, wraparound=False, cdivision=True
"""The output side: members go out in an order where parents and link targets come
first (rules 7 and 8), each with a header written anew from its parsed fields.

A member whose parent (or link target) is not written yet waits for it; the rest go out
at once. Bytes are gathered into blocks of about 1 MiB before they are handed to the
layer writer; data is read from the layer spools through a window, so small members
cost no system call each.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.errno cimport errno
from libc.stdint cimport uint32_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset
from posix.unistd cimport pread

from squash.pathtable cimport EMITTED, MAX_NAME, NO_PATH, ROOT, PathTable
from squash.tarheader cimport BLOCK, HeaderReader, HeaderWriter

from squash.errors import InvalidLayer

cdef enum:
    WINDOW = 1 << 20   # bytes of a spool read at once
    BIG = 256 << 10    # data at least this large is read straight into its own block
    FLUSH = 1 << 20    # output gathered before it is handed on

cdef enum What:
    MEMBER = 0         # a member's header and data, under its key
    LINK = 1           # a hard link to `target`, with the link member's header
    PLAIN_DIR = 2      # a directory that exists only as a parent
    ROOT_DIR = 3       # the root entry, from a header group kept in memory

cdef unsigned char ZEROS[BLOCK]
memset(ZEROS, 0, BLOCK)


cdef class Spool:
    """A layer's spool (or the layer's own file, read in place) as the output reads it."""

    def __cinit__(self, object file, str label):
        self.file = file
        self.fd = file.fileno()
        self.label = label
        self.window = <unsigned char*>malloc(WINDOW)
        if self.window == NULL:
            raise MemoryError()
        self.window_start = self.window_end = 0

    def __dealloc__(self):
        free(self.window)

    cdef void read(self, unsigned char* dst, long long at, Py_ssize_t n) except *:
        """Bytes [at, at + n) of the spool into `dst`."""
        cdef Py_ssize_t got
        if n >= WINDOW // 2:
            self._pread(dst, at, n)
            return
        if at < self.window_start or at + n > self.window_end:
            with nogil:
                got = pread(self.fd, self.window, WINDOW, at)
            if got < 0:
                raise OSError(errno, f"cannot read the spool of {self.label}")
            self.window_start, self.window_end = at, at + got
            if got < n:
                raise OSError(f"the spool of {self.label} is shorter than its index")
        memcpy(dst, self.window + (at - self.window_start), n)

    cdef void _pread(self, unsigned char* dst, long long at, Py_ssize_t n) except *:
        cdef Py_ssize_t got
        while n > 0:
            with nogil:
                got = pread(self.fd, dst, n, at)
            if got <= 0:
                if got < 0:
                    raise OSError(errno, f"cannot read the spool of {self.label}")
                raise OSError(f"the spool of {self.label} is shorter than its index")
            dst += got
            at += got
            n -= got

    def group(self, long long start, long long data) -> bytes:
        """A member's header group, kept after its spool is closed (pending hard links)."""
        out = PyBytes_FromStringAndSize(NULL, data - start)
        self.read(<unsigned char*>PyBytes_AS_STRING(out), start, data - start)
        return out


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

    cdef void member(self, Spool spool, long long start, long long data, long long size,
                     char type, bint sparse, uint32_t key) except *:
        """The member at `start` of `spool` (header group, then data), under `key`."""
        cdef Item item
        if self._ready(self.paths.parent[key], NO_PATH):
            self._write_member(spool, start, data, size, type, key)
            self._written(key)
            return
        item = Item()
        item.what, item.key, item.type, item.spool = MEMBER, key, type, spool
        item.start, item.data, item.size, item.sparse = start, data, size, sparse
        item.need_parent, item.need_link = self.paths.parent[key], NO_PATH
        self._wait(item)

    cdef void link(self, Spool spool, bytes saved, long long start, long long data,
                   uint32_t key, uint32_t target) except *:
        """A hard link `key` -> `target`, with the header of the link member (in `spool`
        at `start`, or `saved`)."""
        cdef Item item
        if self._ready(self.paths.parent[key], target):
            self._write_link(spool, saved, start, data, key, target)
            self._written(key)
            return
        item = Item()
        item.what, item.key, item.spool, item.saved = LINK, key, spool, saved
        item.start, item.data = start, data
        item.need_parent, item.need_link = self.paths.parent[key], target
        self._wait(item)

    cdef void plain_dir(self, uint32_t key) except *:
        cdef Py_ssize_t n = self.paths.key(key, True)
        cdef Py_ssize_t h = self.writer.write_plain_dir(self.paths.keybuf, n)
        self._append(self.writer.out, h)
        self._written(key)

    cdef void root(self, bytes saved) except *:
        """The root directory entry, first: its header group is `saved`."""
        cdef const unsigned char* g = self._group(None, saved, 0, len(saved))
        cdef Py_ssize_t h
        self.reader.read(g, len(saved), "the root entry", 0)
        h = self.writer.write(self.reader, <const unsigned char*>b"./", 2, b'5', NULL, 0, 0)
        self._append(self.writer.out, h)
        self.members_written += 1

    cdef bint _ready(self, uint32_t key, uint32_t other) noexcept:
        cdef unsigned char* marks = self.paths.marks
        return marks[key] & EMITTED and (other == NO_PATH or marks[other] & EMITTED)

    cdef void _wait(self, Item item) except *:
        cdef uint32_t need = item.need_parent
        if self.paths.marks[need] & EMITTED:
            need = item.need_link
        self.waiting.setdefault(need, []).append(item)
        if item.spool is not None:
            item.spool.waiting += 1

    cdef void _written(self, uint32_t key) except *:
        """`key` is out: write, in order, what waited for it (and what waited for those)."""
        cdef list stack
        cdef Item item
        self.paths.marks[key] |= EMITTED
        self.members_written += 1
        if not self.waiting:
            return
        stack = []
        self._release(key, stack)
        while stack:
            item = stack.pop()
            self._write(item)
            self.paths.marks[item.key] |= EMITTED
            self.members_written += 1
            self._release(item.key, stack)

    cdef void _release(self, uint32_t key, list stack) except *:
        cdef Item waiter
        waiters = self.waiting.pop(key, None)
        if waiters is None:
            return
        for waiter in reversed(waiters):
            if waiter.spool is not None:
                waiter.spool.waiting -= 1
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
            self._write_member(item.spool, item.start, item.data, item.size, item.type, item.key)
        elif item.what == LINK:
            self._write_link(item.spool, item.saved, item.start, item.data, item.key,
                             item.need_link)

    cdef const unsigned char* _group(self, Spool spool, bytes saved, long long start,
                                     long long data) except NULL:
        """A header group, from the spool or from memory."""
        cdef Py_ssize_t n = data - start
        cdef unsigned char* grown
        if saved is not None:
            return <const unsigned char*>PyBytes_AS_STRING(saved)
        if n > self.group_cap:
            grown = <unsigned char*>realloc(self.group, n)
            if grown == NULL:
                raise MemoryError()
            self.group, self.group_cap = grown, n
        spool.read(self.group, start, n)
        return self.group

    cdef void _write_member(self, Spool spool, long long start, long long data,
                            long long size, char type, uint32_t key) except *:
        cdef const unsigned char* g = self._group(spool, None, start, data)
        cdef Py_ssize_t n, h
        if self.reader.read(g, data - start, spool.label, start) != 0:
            raise InvalidLayer(f"{spool.label}: the spool does not match its index at byte {start}")
        n = self.paths.key(key, type == b'5')
        if self.reader.h.sparse:  # rule 9: GNU sparse becomes a regular file (tarfile)
            self._flush()
            for chunk in self.expand_sparse(spool.file, start, self.paths.keybuf[:n]):
                self._append(chunk, len(chunk))
            return
        h = self.writer.write(self.reader, self.paths.keybuf, n, type, self.reader.h.link,
                              self.reader.h.link_len, size)
        self._append(self.writer.out, h)
        if type == b'0' and size:
            self._copy(spool, data, size)
            self._append(ZEROS, (BLOCK - size % BLOCK) % BLOCK)

    cdef void _write_link(self, Spool spool, bytes saved, long long start, long long data,
                          uint32_t key, uint32_t target) except *:
        cdef const unsigned char* g = self._group(spool, saved, start, data)
        cdef Py_ssize_t t, n, h
        self.reader.read(g, data - start, "a hard link", start)
        t = self.paths.key(target, False)
        memcpy(self.target, self.paths.keybuf, t)
        n = self.paths.key(key, False)
        h = self.writer.write(self.reader, self.paths.keybuf, n, b'1', self.target, t, 0)
        self._append(self.writer.out, h)

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

    @property
    def waiting_items(self) -> int:
        return sum(len(items) for items in self.waiting.values())
