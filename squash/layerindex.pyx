# cython: language_level=3, boundscheck=True, wraparound=False, cdivision=True
"""The spool side of a layer: its tar, fed chunk by chunk, is indexed and written to a
spool file in one pass.

Each member's header group is read strictly (tarheader) and kept as a few offsets, its
name as a path id (pathtable); whiteouts and opaque markers are recognised here. Data of
large regular files that the layers above already hide is not written: the spool gets a
hole there (decisions only add, so such a file stays hidden).
"""

from libc.errno cimport errno
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy
from posix.unistd cimport ftruncate, pwrite

from squash.pathtable cimport META, NO_PATH, PLAIN, ROOT, PathTable
from squash.tarheader cimport BLOCK, HeaderReader

from squash.errors import InvalidLayer

cdef long long HOLE_MIN = 64 << 10  # hidden files at least this large are not spooled


cdef inline long long padded(long long size) noexcept nogil:
    return (size + BLOCK - 1) // BLOCK * BLOCK


cdef class LayerIndex:
    """Feed it a layer's tar in chunks; `count` members are indexed, in stream order.

    `offset`: where the stream starts in the file members are read from later; `spool`:
    the file descriptor the stream is written to (-1: the layer is read in place);
    `holes`: leave out data the layers above hide."""

    def __cinit__(self, PathTable paths, str where, long long offset=0, int spool=-1,
                  bint holes=False):
        self.paths = paths
        self.where = where
        self.reader = HeaderReader()
        self.cap = 256
        self.members = <Member*>malloc(self.cap * sizeof(Member))
        self.held_cap = 2 * BLOCK
        self.held = <unsigned char*>malloc(self.held_cap)
        self.holes_cap = 64
        self.holes = <Hole*>malloc(self.holes_cap * sizeof(Hole))
        if self.members == NULL or self.held == NULL or self.holes == NULL:
            raise MemoryError()
        self.position = self.next = offset
        self.want = BLOCK
        self.spool = spool
        self.holes_wanted = holes and spool >= 0

    def __dealloc__(self):
        free(self.members)
        free(self.held)
        free(self.holes)

    def __len__(self):
        return self.count

    def feed(self, const unsigned char[::1] chunk):
        """Index (and spool) the next bytes of the stream."""
        cdef Py_ssize_t n = chunk.shape[0]
        cdef long long base = self.position
        if self.ended or n == 0:
            return
        self.position += n
        self._scan(&chunk[0], n, base)
        if self.spool >= 0:
            self._write_around(&chunk[0], n, base)

    cdef void _scan(self, const unsigned char* chunk, Py_ssize_t n, long long base) except *:
        cdef Py_ssize_t take, avail, got
        cdef Py_ssize_t pos = 0  # bytes of the chunk already appended to `held`
        cdef long long off
        cdef const unsigned char* buf
        while not self.ended:
            if self.held_len:  # a header group straddles chunks: gather `want` bytes
                take = min(self.want - self.held_len, n - pos)
                self._hold(chunk + pos, take)
                pos += take
                if self.held_len < self.want:
                    return
                buf, avail = self.held, self.held_len
            else:
                off = self.next - base
                if off >= n:
                    return  # the next header is further on (this chunk is data)
                buf, avail = chunk + off, n - off
                if avail < self.want:
                    self._hold(buf, avail)
                    return
            if self.zero_blocks:  # the block after an end-of-archive block must be one too
                if any_set(buf, BLOCK):
                    raise InvalidLayer(
                        f"{self.where}: a header after the end-of-archive block at byte {self.next}"
                    )
                self.ended = True
                return
            got = self.reader.read(buf, avail, self.where, self.next)
            if got > 0:  # an extension header: read again once `got` bytes are here
                self.want = got
                if not self.held_len:
                    self._hold(buf, avail)
                    pos = n
                continue
            self.held_len = 0
            self.want = BLOCK
            if got < 0:
                self.zero_blocks = 1
                self.next += BLOCK
                continue
            self._add()

    cdef void _hold(self, const unsigned char* p, Py_ssize_t n) except *:
        cdef unsigned char* grown
        if self.held_len + n > self.held_cap:
            while self.held_len + n > self.held_cap:
                self.held_cap *= 2
            grown = <unsigned char*>realloc(self.held, self.held_cap)
            if grown == NULL:
                raise MemoryError()
            self.held = grown
        memcpy(self.held + self.held_len, p, n)
        self.held_len += n

    cdef void _add(self) except *:
        cdef HeaderReader r = self.reader
        cdef int kind
        cdef Member* m
        cdef Member* grown
        cdef uint32_t path, link = NO_PATH
        if self.count == self.cap:
            self.cap *= 2
            grown = <Member*>realloc(self.members, self.cap * sizeof(Member))
            if grown == NULL:
                raise MemoryError()
            self.members = grown
        where = self.where
        path = self.paths.clean(r.h.name, r.h.name_len, &kind, where)
        if kind == PLAIN and path == ROOT and r.h.type != b'5':
            raise InvalidLayer(
                f"{where}: {_kind(r.h.type)} {_show(r.h.name, r.h.name_len)} is named like the "
                f"root directory at byte {self.next}"
            )
        if r.h.type == b'1':
            link = self.paths.clean(r.h.link, r.h.link_len, NULL, where)
            if link == ROOT:
                raise InvalidLayer(
                    f"{where}: hard link {_show(r.h.name, r.h.name_len)} points to the root "
                    f"directory at byte {self.next}"
                )
        m = &self.members[self.count]
        m.start = self.next
        m.data = self.next + r.h.group
        m.size = r.h.size
        m.path = path
        m.link = link
        m.type = r.h.type
        m.kind = kind
        m.sparse = r.h.sparse
        m.skipped = 0
        self.count += 1
        self.next = m.data + padded(m.size)
        if self.holes_wanted and m.type == b'0' and kind == PLAIN and m.size >= HOLE_MIN \
                and self.paths.hidden(path, False):
            m.skipped = 1
            self._hole(m.data, m.data + m.size)

    cdef void _hole(self, long long start, long long end) except *:
        cdef Hole* grown
        if self.nholes == self.holes_cap:
            self.holes_cap *= 2
            grown = <Hole*>realloc(self.holes, self.holes_cap * sizeof(Hole))
            if grown == NULL:
                raise MemoryError()
            self.holes = grown
        self.holes[self.nholes].start, self.holes[self.nholes].end = start, end
        self.nholes += 1

    cdef void _write_around(self, const unsigned char* chunk, Py_ssize_t n,
                            long long base) except *:
        """Write stream bytes [base, base + n) to the spool, except the holes."""
        cdef long long end = base + n, position = base, start
        cdef Py_ssize_t i = self.first_hole
        while i < self.nholes and self.holes[i].end <= base:
            i += 1
        self.first_hole = i
        while i < self.nholes:
            start = self.holes[i].start
            if start >= end:
                break
            if start > position:
                self._put(chunk + (position - base), start - position, position)
            position = max(position, min(self.holes[i].end, end))
            i += 1
        if position < end:
            self._put(chunk + (position - base), end - position, position)

    cdef void _put(self, const unsigned char* p, Py_ssize_t n, long long at) except *:
        cdef Py_ssize_t done
        cdef int fd = self.spool
        while n > 0:
            with nogil:
                done = pwrite(fd, p, n, at)
            if done < 0:
                raise OSError(errno, "cannot write the spool file")
            p += done
            n -= done
            at += done

    def finish(self):
        """At the end of the stream: a tar cut short is an error; the spool gets its full
        length (holes at its end included)."""
        if not self.ended and (self.next > self.position or self.held_len):
            raise InvalidLayer(f"{self.where}: tar stream ends inside a member (truncated layer)")
        if self.spool >= 0 and ftruncate(self.spool, self.position) < 0:
            raise OSError(errno, "cannot size the spool file")

    def entry(self, Py_ssize_t i):
        """For tests and the root entry: member `i` as a dict."""
        if not 0 <= i < self.count:
            raise IndexError(i)
        m = &self.members[i]
        return {
            "start": m.start, "data": m.data, "size": m.size, "key": self.paths.text(m.path),
            "link": None if m.link == NO_PATH else self.paths.text(m.link),
            "type": chr(m.type), "kind": m.kind, "skipped": bool(m.skipped),
            "sparse": bool(m.sparse),
        }


cdef inline bint any_set(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i]:
            return True
    return False


cdef str _kind(char t):
    return {b'0': "file", b'1': "hard link", b'2': "symlink", b'3': "character device",
            b'4': "block device", b'6': "fifo"}.get(bytes([t]), "member")


cdef str _show(const unsigned char* p, Py_ssize_t n):
    return repr(p[:n].decode("utf-8", "surrogateescape"))
