# cython: language_level=3, boundscheck=True, wraparound=False, cdivision=True
"""The spool side of a layer: its tar, fed chunk by chunk, is indexed and its file data
written to a spool file in one pass.

Each member's header group is read strictly (tarheader) and kept as its fields and a few
offsets, its name as a path id (pathtable); whiteouts and opaque markers are recognised
here. The spool holds only file data, back to back (and the header groups that say more
than the fields kept: xattrs, hard links, sparse files), so an image of many small files
spools a fraction of its tar. Data of large regular files that the layers above already
hide is not spooled at all (decisions only add, so such a file stays hidden).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.errno cimport errno
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy
from posix.unistd cimport pread, pwrite

from squash.merge.pathtable cimport MAX_NAME, NO_PATH, PLAIN, ROOT, PathTable
from squash.merge.tarheader cimport BLOCK, Fields, HeaderReader

from squash.errors import InvalidLayer

cdef long long HOLE_MIN = 64 << 10  # hidden files at least this large are not spooled
cdef enum:
    WINDOW = 1 << 20    # bytes of a spool read at once
    STAGE = 1 << 20     # small pieces of data gathered before they are written
    MAX_OWNERS = 64     # distinct owner names kept per layer (more: headers are read again)
cdef uint32_t U32 = 0xFFFFFFFF


cdef inline long long padded(long long size) noexcept nogil:
    return (size + BLOCK - 1) // BLOCK * BLOCK


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

    def close(self):
        self.file.close()


cdef class LayerIndex:
    """Feed it a layer's tar in chunks; `count` members are indexed, in stream order.

    `file`: where the members' bytes are read later (None: nowhere, for a peek); with
    `spool_out` the stream is written to it at its own offsets, else it is the layer's own
    file with the stream starting at `offset`. `holes`: leave out data the layers above
    hide."""

    def __cinit__(self, PathTable paths, str where, object file=None, long long offset=0, *,
                  bint spool_out=False, bint holes=False):
        self.paths = paths
        self.where = where
        self.reader = HeaderReader()
        self.cap = 256
        self.members = <Member*>malloc(self.cap * sizeof(Member))
        self.held_cap = 2 * BLOCK
        self.held = <unsigned char*>malloc(self.held_cap)
        self.text_cap = 4096
        self.text = <unsigned char*>malloc(self.text_cap)
        self.owner_at = <uint32_t*>malloc(MAX_OWNERS * sizeof(uint32_t))
        self.owner_len = <uint16_t*>malloc(MAX_OWNERS * sizeof(uint16_t))
        self.attrs_cap = 64
        self.attrs = <Attrs*>malloc(self.attrs_cap * sizeof(Attrs))
        self.nattr_slots = 128
        self.attr_slots = <uint32_t*>calloc(self.nattr_slots, sizeof(uint32_t))
        if not (self.members and self.held and self.text and self.owner_at and self.owner_len
                and self.attrs and self.attr_slots):
            raise MemoryError()
        self.position = self.next = offset
        self.want = BLOCK
        self.spool = None if file is None else Spool(file, where)
        self.out = file.fileno() if spool_out else -1
        self.holes_wanted = holes and spool_out
        self.stage = <unsigned char*>malloc(STAGE) if spool_out else NULL
        if spool_out and self.stage == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.members)
        free(self.held)
        free(self.stage)
        free(self.text)
        free(self.owner_at)
        free(self.owner_len)
        free(self.attrs)
        free(self.attr_slots)

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

    cdef void _scan(self, const unsigned char* chunk, Py_ssize_t n, long long base) except *:
        cdef Py_ssize_t take, avail, got
        cdef Py_ssize_t pos = 0  # bytes of the chunk already appended to `held`
        cdef long long off
        cdef const unsigned char* buf
        while not self.ended:
            if self.copy_left:  # the data of the member just read goes to the spool
                off = self.copy_at - base
                if off >= n:
                    return
                take = min(n - off, self.copy_left)
                if not self.copy_skip:
                    self._spool(chunk + off, take)
                self.copy_at += take
                self.copy_left -= take
                if self.copy_left:
                    return
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
            self.held_len = 0 if got <= 0 else self.held_len
            if got > 0:  # an extension header: read again once `got` bytes are here
                self.want = got
                if not self.held_len:
                    self._hold(buf, avail)
                    pos = n
                continue
            self.want = BLOCK
            if got < 0:
                self.zero_blocks = 1
                self.next += BLOCK
                continue
            self._add(buf)

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

    cdef void _add(self, const unsigned char* group) except *:
        cdef HeaderReader r = self.reader
        cdef int kind
        cdef Member* m
        cdef Member* grown
        cdef uint32_t path, link = NO_PATH
        cdef int uname, gname
        cdef long attrs
        cdef long long copy_at
        cdef uint32_t numbers[2]
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
        m.data = self.next + r.h.group
        m.size = r.h.size
        m.path = path
        m.type = r.h.type
        m.group = r.h.group  # the stream (a layer's own file, a peek) holds it
        m.flags = (kind << KIND_SHIFT) | (SPARSE if r.h.sparse else 0)
        m.mtime = <uint32_t>r.h.mtime
        uname = self._owner(r.h.uname, r.h.uname_len)
        gname = self._owner(r.h.gname, r.h.gname_len)
        attrs = -1
        if uname >= 0 and gname >= 0 and r.h.mode <= U32 and r.h.uid <= U32 and r.h.gid <= U32:
            attrs = self._attrs(<uint32_t>r.h.mode, <uint32_t>r.h.uid, <uint32_t>r.h.gid,
                                uname, gname)
        m.attrs = max(attrs, 0)
        if (attrs < 0 or r.nkeep > 0 or r.h.mtime_text != NULL or r.h.mtime > U32
                or r.h.devmajor > U32 or r.h.devminor > U32):
            m.flags |= REREAD
        if m.type == b'2' and r.h.link_len > MAX_NAME:
            raise InvalidLayer(
                f"{where}: symlink {_show(r.h.name, r.h.name_len)} has a target of "
                f"{r.h.link_len} bytes (more than {MAX_NAME}) at byte {self.next}"
            )
        self.count += 1
        self.next = m.data + padded(m.size)
        if m.type == b'1':  # no data: its size is 0, and holds the target instead
            m.size = link
        copy_at = m.data
        if self.out >= 0:  # the spool holds the data, and the header group if it is needed
            m.group = 0
            if m.flags & (REREAD | SPARSE) or m.type == b'1':
                self._spool(group, r.h.group)
                m.group = <uint32_t>r.h.group
            m.data = self.spooled
            if m.type == b'0' and m.size:
                self.copy_at, self.copy_left = copy_at, m.size
                self.copy_skip = (self.holes_wanted and kind == PLAIN and not m.flags & SPARSE
                                  and m.size >= HOLE_MIN and self.paths.hidden(path, False))
                if self.copy_skip:
                    m.flags |= SKIPPED
        if m.flags & REREAD:
            return
        if m.type == b'2':  # its target (the header is not read again)
            m.data, m.size, m.group = self._text(r.h.link, r.h.link_len), r.h.link_len, 0
        elif m.type == b'3' or m.type == b'4':
            numbers[0], numbers[1] = <uint32_t>r.h.devmajor, <uint32_t>r.h.devminor
            m.data, m.size, m.group = self._text(<const unsigned char*>numbers, 8), 8, 0

    cdef uint32_t _text(self, const unsigned char* p, Py_ssize_t n) except? 0xFFFFFFFF:
        """Keep `n` bytes in the text arena; return where."""
        cdef unsigned char* grown
        cdef uint32_t at = <uint32_t>self.text_len
        if self.text_len + n > 0xFFFFFFF0:
            raise InvalidLayer(f"{self.where}: more than 4 GiB of symlink targets")
        if self.text_len + n > self.text_cap:
            while self.text_len + n > self.text_cap:
                self.text_cap *= 2
            grown = <unsigned char*>realloc(self.text, self.text_cap)
            if grown == NULL:
                raise MemoryError()
            self.text = grown
        if n:
            memcpy(self.text + at, p, n)
        self.text_len += n
        return at

    cdef int _owner(self, const unsigned char* p, Py_ssize_t n) except -2:
        """The owner table's entry for this name (-1: the table is full)."""
        cdef int i
        if p == NULL:
            p, n = self.text, 0
        for i in range(self.nowners):
            if self.owner_len[i] == n and memcmp(self.text + self.owner_at[i], p, n) == 0:
                return i
        if self.nowners == MAX_OWNERS or n > 0xFFFF:
            return -1
        self.owner_at[self.nowners] = self._text(p, n)
        self.owner_len[self.nowners] = <uint16_t>n
        self.nowners += 1
        return self.nowners - 1

    cdef long _attrs(self, uint32_t mode, uint32_t uid, uint32_t gid, int uname,
                     int gname) except -2:
        """The attribute table's entry for these (-1: the table is full)."""
        cdef uint64_t h = ((<uint64_t>mode * 0x9E3779B97F4A7C15ULL) ^ (<uint64_t>uid << 17)
                           ^ (<uint64_t>gid << 41) ^ (<uint64_t>uname << 7) ^ <uint64_t>gname)
        cdef Py_ssize_t at, i
        cdef uint32_t slot
        cdef Attrs* a
        h ^= h >> 29
        at = h & (self.nattr_slots - 1)
        while True:
            slot = self.attr_slots[at]
            if slot == 0:
                break
            a = &self.attrs[slot - 1]
            if a.mode == mode and a.uid == uid and a.gid == gid and a.uname == uname \
                    and a.gname == gname:
                return slot - 1
            at = (at + 1) & (self.nattr_slots - 1)
        if self.nattrs == 0xFFFF:
            return -1
        if self.nattrs == self.attrs_cap:
            self.attrs_cap *= 2
            self.attrs = <Attrs*>_grown(self.attrs, self.attrs_cap * sizeof(Attrs))
        a = &self.attrs[self.nattrs]
        a.mode, a.uid, a.gid, a.uname, a.gname = mode, uid, gid, uname, gname
        self.nattrs += 1
        self.attr_slots[at] = <uint32_t>self.nattrs
        if self.nattrs * 2 > self.nattr_slots:
            free(self.attr_slots)
            self.nattr_slots *= 2
            self.attr_slots = <uint32_t*>calloc(self.nattr_slots, sizeof(uint32_t))
            if self.attr_slots == NULL:
                raise MemoryError()
            for i in range(self.nattrs):
                a = &self.attrs[i]
                h = ((<uint64_t>a.mode * 0x9E3779B97F4A7C15ULL) ^ (<uint64_t>a.uid << 17)
                     ^ (<uint64_t>a.gid << 41) ^ (<uint64_t>a.uname << 7) ^ <uint64_t>a.gname)
                h ^= h >> 29
                at = h & (self.nattr_slots - 1)
                while self.attr_slots[at]:
                    at = (at + 1) & (self.nattr_slots - 1)
                self.attr_slots[at] = <uint32_t>(i + 1)
        return self.nattrs - 1

    cdef void fields(self, const Member* m, Fields* f) noexcept:
        """What the header writer needs of `m` (one that need not be read again)."""
        cdef const Attrs* a = &self.attrs[m.attrs]
        cdef uint32_t numbers[2]
        f.mode, f.uid, f.gid, f.mtime = a.mode, a.uid, a.gid, m.mtime
        f.devmajor = f.devminor = 0
        if m.type == b'3' or m.type == b'4':
            memcpy(numbers, self.text + m.data, 8)
            f.devmajor, f.devminor = numbers[0], numbers[1]
        f.uname, f.uname_len = self.text + self.owner_at[a.uname], self.owner_len[a.uname]
        f.gname, f.gname_len = self.text + self.owner_at[a.gname], self.owner_len[a.gname]
        f.mtime_text, f.mtime_text_len = NULL, 0
        f.base, f.keep, f.nkeep = NULL, NULL, 0

    cdef void _spool(self, const unsigned char* p, Py_ssize_t n) except *:
        """Append to the spool: small pieces gathered, large ones written as they are."""
        if n >= STAGE // 4:
            self._flush()
            self._put(p, n, self.spooled)
        else:
            if self.staged + n > STAGE:
                self._flush()
            memcpy(self.stage + self.staged, p, n)
            self.staged += n
        self.spooled += n

    cdef void _flush(self) except *:
        if self.staged:
            self._put(self.stage, self.staged, self.spooled - self.staged)
            self.staged = 0

    cdef void _put(self, const unsigned char* p, Py_ssize_t n, long long at) except *:
        cdef Py_ssize_t done
        cdef int fd = self.out
        while n > 0:
            with nogil:
                done = pwrite(fd, p, n, at)
            if done < 0:
                raise OSError(errno, "cannot write the spool file")
            p += done
            n -= done
            at += done

    def finish(self):
        """At the end of the stream: a tar cut short is an error; the spool is complete."""
        if not self.ended and (self.next > self.position or self.held_len or self.copy_left):
            raise InvalidLayer(f"{self.where}: tar stream ends inside a member (truncated layer)")
        if self.out >= 0:
            self._flush()

    def entry(self, Py_ssize_t i):
        """For tests and the root entry: member `i` as a dict."""
        if not 0 <= i < self.count:
            raise IndexError(i)
        m = &self.members[i]
        return {
            "data": m.data, "size": 0 if m.type == b'1' else m.size, "group": m.group,
            "key": self.paths.text(m.path),
            "link": None if link_of(m) == NO_PATH else self.paths.text(link_of(m)),
            "type": chr(m.type), "kind": kind_of(m), "skipped": bool(m.flags & SKIPPED),
            "reread": bool(m.flags & REREAD), "sparse": bool(m.flags & SPARSE),
        }


cdef void* _grown(void* p, Py_ssize_t size) except NULL:
    cdef void* q = realloc(p, size)
    if q == NULL:
        raise MemoryError()
    return q


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
