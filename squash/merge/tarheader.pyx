# cython: language_level=3, boundscheck=True, wraparound=False, cdivision=True
"""One reading of a tar header, the strictest one, and a canonical writer.

Every reader of layers (Go's archive/tar in Docker, containerd and umoci, GNU tar,
Python's tarfile) must see in squashd's output exactly what squashd saw in its input.
So a header is read once, strictly: anything those readers could read differently
(a numeric field with a leading NUL, a prefix field in a GNU or V7 header, a '0' member
named like a directory, two PAX headers for one member, a PAX global header, trailing
bytes in a PAX block, ...) is an error naming the layer and the byte offset. And the
output never copies input header bytes: every header is written anew from the parsed
fields (PAX records only for what ustar cannot hold), so nothing squashd did not read
reaches a consumer.

The field offsets are POSIX's (IEEE 1003.1 ustar) and GNU's; all reads are bounds
checked against the bytes given.
"""

from libc.stdint cimport int64_t, uint64_t, INT64_MAX
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memset

from squash.errors import InvalidLayer

# ustar header fields: (offset, length)
cdef enum:
    NAME = 0
    NAME_LEN = 100
    MODE = 100
    UID = 108
    GID = 116
    IDS_LEN = 8
    SIZE = 124
    MTIME = 136
    NUMBER12_LEN = 12
    CHKSUM = 148
    CHKSUM_LEN = 8
    TYPEFLAG = 156
    LINKNAME = 157
    LINKNAME_LEN = 100
    MAGIC = 257
    VERSION = 263
    UNAME = 265
    GNAME = 297
    OWNER_LEN = 32
    DEVMAJOR = 329
    DEVMINOR = 337
    PREFIX = 345
    PREFIX_LEN = 155
    PREFIX_END = 500
    # GNU's old sparse header: the flag saying more sparse maps follow the header
    GNU_ISEXTENDED = 482
    GNU_EXT_ISEXTENDED = 504

cdef enum Format:
    V7 = 0
    POSIX = 1
    GNU = 2

cdef const unsigned char* POSIX_MAGIC = b"ustar\x0000"
cdef const unsigned char* GNU_MAGIC = b"ustar  \x00"
cdef const unsigned char* PAX_NAME = b"././@PaxHeader"
cdef const unsigned char* BINARY = b"BINARY"
cdef const unsigned char* EMPTY = b""
cdef int64_t OCTAL7 = 8 ** 7     # largest + 1 in 7 octal digits (mode, ids, devices)
cdef int64_t OCTAL11 = 8 ** 11   # largest + 1 in 11 octal digits (size, mtime)


cdef inline Py_ssize_t padded(int64_t size) noexcept nogil:
    return <Py_ssize_t>((size + BLOCK - 1) // BLOCK * BLOCK)


cdef inline bint all_zero(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i]:
            return False
    return True


cdef inline Py_ssize_t field_len(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """Length of a NUL-terminated string field of at most `n` bytes."""
    cdef const void* nul = memchr(p, 0, n)
    return n if nul == NULL else <const unsigned char*>nul - p


cdef int parse_number(const unsigned char* f, Py_ssize_t n, int64_t* out) noexcept nogil:
    """A numeric field: base-256 (0x80 first: positive only), or optional leading spaces,
    octal digits, then only NULs and spaces (not only spaces). 0 if valid, -1 if not."""
    cdef Py_ssize_t i = 0
    cdef int64_t value = 0
    if f[0] & 0x80:
        if f[0] != 0x80:
            return -1  # negative, or GNU's 0xff form: nobody needs it in a layer
        for i in range(1, n):
            if value > (INT64_MAX >> 8):
                return -1
            value = (value << 8) | f[i]
        out[0] = value
        return 0
    while i < n and f[i] == 32:
        i += 1
    if i == n:
        return -1  # only blanks: GNU tar refuses what the others read as 0
    while i < n and 48 <= f[i] <= 55:
        if value > (INT64_MAX >> 3):
            return -1
        value = value * 8 + (f[i] - 48)
        i += 1
    while i < n:
        if f[i] != 0 and f[i] != 32:
            return -1  # a digit after a terminator: readers disagree on such fields
        i += 1
    out[0] = value
    return 0


cdef int parse_decimal(const unsigned char* p, Py_ssize_t n, int64_t* out) noexcept nogil:
    """A PAX decimal: digits only (no sign, space or underscore). 0 if valid, -1 if not."""
    cdef Py_ssize_t i
    cdef int64_t value = 0
    if n == 0:
        return -1
    for i in range(n):
        if not 48 <= p[i] <= 57 or value > (INT64_MAX - 9) // 10:
            return -1
        value = value * 10 + (p[i] - 48)
    out[0] = value
    return 0


cdef bint all_digits(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if n == 0:
        return False
    for i in range(n):
        if not 48 <= p[i] <= 57:
            return False
    return True


cdef inline long byte_sum(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """The sum of `n` bytes, eight at a time (16-bit lanes: at most 1024 bytes)."""
    cdef uint64_t w, lanes = 0
    cdef Py_ssize_t i = 0
    cdef long total = 0
    while i + 8 <= n:
        memcpy(&w, p + i, 8)
        lanes += (w & 0x00FF00FF00FF00FFULL) + ((w >> 8) & 0x00FF00FF00FF00FFULL)
        i += 8
    lanes = (lanes & 0x0000FFFF0000FFFFULL) + ((lanes >> 16) & 0x0000FFFF0000FFFFULL)
    total = <long>((lanes & 0xFFFFFFFFULL) + (lanes >> 32))
    while i < n:
        total += p[i]
        i += 1
    return total


cdef bint checksum_ok(const unsigned char* b) noexcept nogil:
    """The stored checksum is the sum of the header's bytes, the checksum field counted as
    spaces (unsigned bytes, as POSIX says; signed, as some old writers did)."""
    cdef int64_t stored
    cdef long unsigned_sum, signed_sum = 0
    cdef Py_ssize_t i
    if parse_number(b + CHKSUM, CHKSUM_LEN, &stored) < 0:
        return False
    unsigned_sum = byte_sum(b, CHKSUM) + byte_sum(b + CHKSUM + CHKSUM_LEN, BLOCK - CHKSUM - CHKSUM_LEN)
    if stored == unsigned_sum + 8 * 32:
        return True
    for i in range(BLOCK):
        if not CHKSUM <= i < CHKSUM + CHKSUM_LEN:
            signed_sum += <signed char>b[i]
    return stored == signed_sum + 8 * 32


cdef inline bint same(const unsigned char* p, Py_ssize_t n, const char* word) noexcept nogil:
    cdef Py_ssize_t i = 0
    while word[i]:
        if i >= n or p[i] != <unsigned char>word[i]:
            return False
        i += 1
    return i == n


cdef inline bint starts(const unsigned char* p, Py_ssize_t n, const char* word) noexcept nogil:
    cdef Py_ssize_t i = 0
    while word[i]:
        if i >= n or p[i] != <unsigned char>word[i]:
            return False
        i += 1
    return True


cdef class HeaderReader:
    """Reads one member's header group: PAX ('x') and GNU long-name ('L', 'K') headers,
    then the member's own header. Spans and pointers in `h` point into the buffer given
    to `read` (and into `joined`), valid until the next `read`."""

    def __cinit__(self):
        self.keep = <Keep*>malloc(MAX_KEEP * sizeof(Keep))
        if self.keep == NULL:
            raise MemoryError()
        self.nkeep = 0

    def __dealloc__(self):
        free(self.keep)

    cdef Py_ssize_t read(self, const unsigned char* buf, Py_ssize_t n, str where,
                         long long offset) except -2:
        cdef Py_ssize_t pos = 0, size_at, need, nlen, plen, llen, extended
        cdef const unsigned char* blk
        cdef const unsigned char* data
        cdef unsigned char t
        cdef int64_t size, value
        cdef bint named_dir
        cdef Format fmt
        cdef Span pax_path, pax_link, pax_uname, pax_gname, sparse_name, long_name, long_link
        cdef bint have_pax = False, have_size = False, have_uid = False, have_gid = False
        cdef bint have_mtime = False, sparse = False
        cdef int64_t pax_size = 0, pax_uid = 0, pax_gid = 0, pax_mtime = 0
        cdef Header* h = &self.h
        pax_path.length = pax_link.length = pax_uname.length = pax_gname.length = -1
        sparse_name.length = long_name.length = long_link.length = -1
        memset(h, 0, sizeof(Header))
        h.mtime_text = NULL
        self.nkeep = 0
        self.base = buf
        while True:
            if n - pos < BLOCK:
                return pos + BLOCK
            blk = buf + pos
            if all_zero(blk, BLOCK):
                if pos:
                    _fail(where, offset + pos, "an end-of-archive block where a member's header should be")
                return -1
            if not checksum_ok(blk):
                _fail(where, offset + pos, "not a tar header (bad checksum)")
            fmt = _format(blk, where, offset + pos)
            t = blk[TYPEFLAG]
            if parse_number(blk + SIZE, NUMBER12_LEN, &size) < 0:
                _fail(where, offset + pos, f"malformed size field {_show(blk + SIZE, NUMBER12_LEN)}")
            if t == b'x' or t == b'L' or t == b'K':
                if size > MAX_EXTENSION:
                    _fail(where, offset + pos, f"an extension header of {size} bytes")
                need = pos + BLOCK + padded(size)
                if n < need:
                    return need
                data = blk + BLOCK
                if t == b'x':
                    if have_pax:
                        _fail(where, offset + pos, "two PAX headers for one member")
                    have_pax = True
                    self._pax(data, <Py_ssize_t>size, where, offset + pos, &pax_path, &pax_link,
                              &pax_uname, &pax_gname, &sparse_name, &sparse,
                              &have_size, &pax_size, &have_uid, &pax_uid, &have_gid, &pax_gid,
                              &have_mtime, &pax_mtime)
                elif t == b'L':
                    if long_name.length >= 0:
                        _fail(where, offset + pos, "two GNU long names for one member")
                    long_name.start = pos + BLOCK
                    long_name.length = field_len(data, <Py_ssize_t>size)
                else:
                    if long_link.length >= 0:
                        _fail(where, offset + pos, "two GNU long link names for one member")
                    long_link.start = pos + BLOCK
                    long_link.length = field_len(data, <Py_ssize_t>size)
                pos = need
                continue
            if t == b'g':
                _fail(where, offset + pos, "a PAX global header (readers apply it differently; refused)")
            break
        # the member's own header, at `pos`
        if t == b'S':
            if fmt != GNU:
                _fail(where, offset + pos, "a GNU sparse member without the GNU magic")
            sparse = True
            extended = blk[GNU_ISEXTENDED]
            size_at = pos + BLOCK
            while extended:  # more sparse maps follow the header
                if n < size_at + BLOCK:
                    return size_at + BLOCK
                extended = buf[size_at + GNU_EXT_ISEXTENDED]
                size_at += BLOCK
            h.group = size_at
        else:
            h.group = pos + BLOCK
        # names
        if pax_path.length >= 0 and (long_name.length >= 0 or sparse_name.length >= 0):
            _fail(where, offset + pos, "two long names for one member (PAX and GNU)")
        if pax_link.length >= 0 and long_link.length >= 0:
            _fail(where, offset + pos, "two long link names for one member (PAX and GNU)")
        if sparse_name.length >= 0:
            h.name, h.name_len = buf + sparse_name.start, sparse_name.length
        elif pax_path.length >= 0:
            h.name, h.name_len = buf + pax_path.start, pax_path.length
        elif long_name.length >= 0:
            h.name, h.name_len = buf + long_name.start, long_name.length
        else:
            nlen = field_len(blk + NAME, NAME_LEN)
            plen = field_len(blk + PREFIX, PREFIX_LEN) if fmt == POSIX else 0
            if plen:
                memcpy(self.joined, blk + PREFIX, plen)
                self.joined[plen] = b'/'
                memcpy(self.joined + plen + 1, blk + NAME, nlen)
                h.name, h.name_len = self.joined, plen + 1 + nlen
            else:
                h.name, h.name_len = blk + NAME, nlen
        if h.name_len == 0:
            _fail(where, offset + pos, "a member with an empty name")
        if pax_link.length >= 0:
            h.link, h.link_len = buf + pax_link.start, pax_link.length
        elif long_link.length >= 0:
            h.link, h.link_len = buf + long_link.start, long_link.length
        else:
            h.link, h.link_len = blk + LINKNAME, field_len(blk + LINKNAME, LINKNAME_LEN)
        if pax_uname.length >= 0:
            h.uname, h.uname_len = buf + pax_uname.start, pax_uname.length
        elif fmt != V7:
            h.uname, h.uname_len = blk + UNAME, field_len(blk + UNAME, OWNER_LEN)
        if pax_gname.length >= 0:
            h.gname, h.gname_len = buf + pax_gname.start, pax_gname.length
        elif fmt != V7:
            h.gname, h.gname_len = blk + GNAME, field_len(blk + GNAME, OWNER_LEN)
        # numbers
        if parse_number(blk + MODE, IDS_LEN, &h.mode) < 0:
            _fail(where, offset + pos, f"malformed mode field {_show(blk + MODE, IDS_LEN)}")
        if parse_number(blk + UID, IDS_LEN, &h.uid) < 0:
            _fail(where, offset + pos, f"malformed uid field {_show(blk + UID, IDS_LEN)}")
        if parse_number(blk + GID, IDS_LEN, &h.gid) < 0:
            _fail(where, offset + pos, f"malformed gid field {_show(blk + GID, IDS_LEN)}")
        if parse_number(blk + MTIME, NUMBER12_LEN, &h.mtime) < 0:
            _fail(where, offset + pos, f"malformed mtime field {_show(blk + MTIME, NUMBER12_LEN)}")
        if fmt != V7:
            if parse_number(blk + DEVMAJOR, IDS_LEN, &h.devmajor) < 0:
                _fail(where, offset + pos, "malformed devmajor field")
            if parse_number(blk + DEVMINOR, IDS_LEN, &h.devminor) < 0:
                _fail(where, offset + pos, "malformed devminor field")
        h.size = pax_size if have_size else size
        if have_uid:
            h.uid = pax_uid
        if have_gid:
            h.gid = pax_gid
        if have_mtime:
            h.mtime = pax_mtime
        # the type, as every reader takes it
        named_dir = h.name[h.name_len - 1] == b'/'
        if t == 0:  # pre-POSIX: a directory by its trailing slash; readers look at the
            # header's own name or at the long one, so the two must agree
            nlen = field_len(blk + NAME, NAME_LEN)
            if nlen == 0 or (blk[NAME + nlen - 1] == b'/') != named_dir or \
                    not _has_name(h.name, h.name_len):
                _fail(where, offset + pos, f"old-style member {_name(h.name, h.name_len)}: its "
                      "header's name and its long name disagree on whether it is a directory")
            t = b'5' if named_dir else b'0'
            if named_dir and (size != 0 or (have_size and pax_size != 0)):
                _fail(where, offset + pos, f"{_name(h.name, h.name_len)} of type '5' has data")
        elif t == b'0' or t == b'7' or t == b'S':
            if named_dir:
                _fail(where, offset + pos, f"regular file {_name(h.name, h.name_len)} is named like a directory")
            t = b'0'
        elif b'1' <= t <= b'6':
            if named_dir and t != b'5':
                _fail(where, offset + pos, f"non-directory {_name(h.name, h.name_len)} is named like a directory")
            if size != 0 or (have_size and pax_size != 0):
                _fail(where, offset + pos, f"{_name(h.name, h.name_len)} of type {chr(t)!r} has data")
        else:
            _fail(where, offset + pos, f"member {_name(h.name, h.name_len)} has unsupported type {bytes([t])!r}")
        if sparse and t != b'0':
            _fail(where, offset + pos, "sparse records on a member that is not a regular file")
        h.type = t
        h.sparse = sparse
        return 0

    cdef void _pax(self, const unsigned char* d, Py_ssize_t size, str where, long long at,
                   Span* path, Span* link, Span* uname, Span* gname, Span* sparse_name,
                   bint* sparse, bint* have_size, int64_t* psize, bint* have_uid,
                   int64_t* puid, bint* have_gid, int64_t* pgid, bint* have_mtime,
                   int64_t* pmtime) except *:
        """Parse PAX records: `LEN KEY=VALUE\\n`, filling the data exactly."""
        cdef Py_ssize_t p = 0, q, length, key, eq, value, vlen, klen, i, dot
        cdef const void* found
        cdef Py_ssize_t base = d - self.base
        cdef int64_t number
        while p < size:
            q = p
            length = 0
            while q < size and 48 <= d[q] <= 57 and length <= size:
                length = length * 10 + (d[q] - 48)
                q += 1
            if q == p or q >= size or d[q] != 32 or length < 5 or length > size - p:
                _fail(where, at, "malformed PAX record")
            if d[p + length - 1] != 10:
                _fail(where, at, "malformed PAX record (no newline at its end)")
            key = q + 1
            found = memchr(d + key, b'=', p + length - 1 - key)
            if found == NULL or <const unsigned char*>found == d + key:
                _fail(where, at, "malformed PAX record (no key)")
            eq = <const unsigned char*>found - d
            klen = eq - key
            value = eq + 1
            vlen = p + length - 1 - value
            if same(d + key, klen, "path") or same(d + key, klen, "linkpath") or \
                    same(d + key, klen, "uname") or same(d + key, klen, "gname") or \
                    same(d + key, klen, "GNU.sparse.name"):
                if memchr(d + value, 0, vlen) != NULL:
                    _fail(where, at, f"PAX {_show(d + key, klen)} holds a NUL byte")
                if d[key] == b'p':
                    path.start, path.length = base + value, vlen
                elif d[key] == b'l':
                    link.start, link.length = base + value, vlen
                elif d[key] == b'u':
                    uname.start, uname.length = base + value, vlen
                elif d[key] == b'g':
                    gname.start, gname.length = base + value, vlen
                else:
                    sparse_name.start, sparse_name.length = base + value, vlen
                    sparse[0] = True
            elif same(d + key, klen, "size") or same(d + key, klen, "uid") or \
                    same(d + key, klen, "gid"):
                if parse_decimal(d + value, vlen, &number) < 0:
                    _fail(where, at, f"malformed PAX {_show(d + key, klen)} {_show(d + value, vlen)}")
                if d[key] == b's':
                    have_size[0], psize[0] = True, number
                elif d[key] == b'u':
                    have_uid[0], puid[0] = True, number
                else:
                    have_gid[0], pgid[0] = True, number
            elif same(d + key, klen, "mtime"):
                found = memchr(d + value, b'.', vlen)
                dot = vlen if found == NULL else <const unsigned char*>found - (d + value)
                if parse_decimal(d + value, dot, &number) < 0 or (
                        dot < vlen and not all_digits(d + value + dot + 1, vlen - dot - 1)):
                    _fail(where, at, f"malformed PAX mtime {_show(d + value, vlen)}")
                have_mtime[0], pmtime[0] = True, number
                if dot < vlen:
                    self.h.mtime_text = d + value
                    self.h.mtime_text_len = vlen
                else:
                    self.h.mtime_text = NULL
            elif same(d + key, klen, "atime") or same(d + key, klen, "ctime"):
                # not written out, but a reader that finds it malformed refuses the layer
                found = memchr(d + value, b'.', vlen)
                dot = vlen if found == NULL else <const unsigned char*>found - (d + value)
                i = 1 if vlen and d[value] == b'-' else 0
                if not all_digits(d + value + i, dot - i) or (
                        dot < vlen and not all_digits(d + value + dot + 1, vlen - dot - 1)):
                    _fail(where, at, f"malformed PAX {_show(d + key, klen)} {_show(d + value, vlen)}")
            elif starts(d + key, klen, "GNU.sparse."):
                sparse[0] = True
            elif starts(d + key, klen, "SCHILY.xattr.") and klen > 13:
                self._keep(base + key, klen, base + value, vlen, where, at)
            # anything else (atime, ctime, comment, charset, hdrcharset, other vendors'
            # records) is not written out, so no reader sees it
            p += length

    cdef void fields(self, Fields* f) noexcept:
        """What the writer needs of the member just read."""
        cdef Header* h = &self.h
        f.mode, f.uid, f.gid, f.mtime = h.mode, h.uid, h.gid, h.mtime
        f.devmajor, f.devminor = h.devmajor, h.devminor
        f.uname, f.uname_len, f.gname, f.gname_len = h.uname, h.uname_len, h.gname, h.gname_len
        f.mtime_text, f.mtime_text_len = h.mtime_text, h.mtime_text_len
        f.base, f.keep, f.nkeep = self.base, self.keep, self.nkeep

    cdef void _keep(self, Py_ssize_t key, Py_ssize_t klen, Py_ssize_t value, Py_ssize_t vlen,
                    str where, long long at) except *:
        cdef int i
        for i in range(self.nkeep):  # the same key again: the last value counts
            if self.keep[i].key.length == klen and \
                    memcmp(self.base + self.keep[i].key.start, self.base + key, klen) == 0:
                self.keep[i].value.start, self.keep[i].value.length = value, vlen
                return
        if self.nkeep >= MAX_KEEP:
            _fail(where, at, f"more than {MAX_KEEP} xattrs on one member")
        self.keep[self.nkeep].key.start, self.keep[self.nkeep].key.length = key, klen
        self.keep[self.nkeep].value.start, self.keep[self.nkeep].value.length = value, vlen
        self.nkeep += 1

    def parse(self, const unsigned char[::1] group, str where="test"):
        """For tests and the fuzz target: the fields of the first member in `group`, or
        -1 (the end-of-archive block) or the bytes needed first."""
        cdef Py_ssize_t got
        if group.shape[0] < BLOCK:
            return BLOCK
        got = self.read(&group[0], group.shape[0], where, 0)
        if got:
            return got
        h = &self.h
        return {
            "type": chr(h.type), "sparse": bool(h.sparse), "mode": h.mode, "uid": h.uid,
            "gid": h.gid, "size": h.size, "mtime": h.mtime, "devmajor": h.devmajor,
            "devminor": h.devminor, "group": h.group, "name": h.name[:h.name_len],
            "link": h.link[:h.link_len],
            "uname": h.uname[:h.uname_len] if h.uname != NULL else b"",
            "gname": h.gname[:h.gname_len] if h.gname != NULL else b"",
            "xattrs": {
                (self.base + self.keep[i].key.start)[13:self.keep[i].key.length]:
                (self.base + self.keep[i].value.start)[:self.keep[i].value.length]
                for i in range(self.nkeep)
            },
        }


cdef Format _format(const unsigned char* blk, str where, long long at) except *:
    """Which header layout this is; fields one layout uses and another reads differently
    must be empty."""
    if memcmp(blk + MAGIC, POSIX_MAGIC, 8) == 0:
        return POSIX
    if memcmp(blk + MAGIC, GNU_MAGIC, 8) == 0:
        if blk[TYPEFLAG] != b'S' and not all_zero(blk + PREFIX, PREFIX_END - PREFIX):
            _fail(where, at, "a GNU header with data where POSIX keeps the name's prefix")
        return GNU
    if not all_zero(blk + MAGIC, BLOCK - MAGIC):
        _fail(where, at, f"unknown tar header format (magic {_show(blk + MAGIC, 8)})")
    return V7


cdef bint _has_name(const unsigned char* p, Py_ssize_t n) noexcept:
    """Has it more than slashes and dots (readers strip those differently)?"""
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] != b'/' and p[i] != b'.':
            return True
    return False


cdef str _show(const unsigned char* p, Py_ssize_t n):
    return repr(bytes(p[:n]))


cdef str _name(const unsigned char* p, Py_ssize_t n):
    return repr(p[:n].decode("utf-8", "surrogateescape"))


cdef void _fail(str where, long long at, str what) except *:
    raise InvalidLayer(f"{where}: {what} at byte {at}")


# ---------------------------------------------------------------------------------------
# Writing


cdef inline void put_octal(unsigned char* f, Py_ssize_t width, int64_t value) noexcept nogil:
    """`width - 1` octal digits and a NUL; base-256 if it does not fit."""
    cdef Py_ssize_t i
    if value < 0 or value >= (<int64_t>1 << (3 * (width - 1))):
        f[0] = 0x80
        for i in range(width - 1, 0, -1):
            f[i] = value & 0xFF
            value >>= 8
        return
    f[width - 1] = 0
    for i in range(width - 2, -1, -1):
        f[i] = 48 + (value & 7)
        value >>= 3


cdef inline bint ascii(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] >= 0x80 or p[i] == 0:
            return False
    return True


cdef bint utf8(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """Is it valid UTF-8 (no surrogates, no overlong forms)?"""
    cdef Py_ssize_t i = 0, k, more
    cdef unsigned int c, cp
    while i < n:
        c = p[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            more, cp = 1, c & 0x1F
        elif 0xE0 <= c <= 0xEF:
            more, cp = 2, c & 0x0F
        elif 0xF0 <= c <= 0xF4:
            more, cp = 3, c & 0x07
        else:
            return False
        for k in range(1, more + 1):
            if i + k >= n or (p[i + k] & 0xC0) != 0x80:
                return False
            cp = (cp << 6) | (p[i + k] & 0x3F)
        if (more == 2 and (cp < 0x800 or 0xD800 <= cp <= 0xDFFF)) or \
                (more == 3 and not 0x10000 <= cp <= 0x10FFFF):
            return False
        i += more + 1
    return True


cdef inline Py_ssize_t digits(Py_ssize_t v) noexcept nogil:
    cdef Py_ssize_t d = 1
    while v >= 10:
        v //= 10
        d += 1
    return d


cdef class HeaderWriter:
    """Writes headers from parsed fields: ustar, with a PAX header before it only for
    what ustar cannot hold (long or non-ASCII names, large numbers, sub-second mtimes,
    xattrs)."""

    def __cinit__(self):
        self.cap = 4 * BLOCK
        self.out = <unsigned char*>malloc(self.cap)
        self.pax_cap = BLOCK
        self.pax = <unsigned char*>malloc(self.pax_cap)
        if self.out == NULL or self.pax == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.out)
        free(self.pax)

    cdef void _room(self, Py_ssize_t extra) except *:
        cdef unsigned char* grown
        if self.pax_len + extra <= self.pax_cap:
            return
        while self.pax_len + extra > self.pax_cap:
            self.pax_cap *= 2
        grown = <unsigned char*>realloc(self.pax, self.pax_cap)
        if grown == NULL:
            raise MemoryError()
        self.pax = grown

    cdef void _record(self, const char* key, Py_ssize_t klen, const unsigned char* value,
                      Py_ssize_t vlen) except *:
        cdef Py_ssize_t body = klen + vlen + 3, total = body + 1, at
        cdef bytes number
        while digits(total) + body != total:
            total = digits(total) + body
        number = str(total).encode()
        self._room(total)
        at = self.pax_len
        memcpy(self.pax + at, <const char*>number, len(number))
        at += len(number)
        self.pax[at] = 32
        memcpy(self.pax + at + 1, key, klen)
        at += 1 + klen
        self.pax[at] = 61
        memcpy(self.pax + at + 1, value, vlen)
        at += 1 + vlen
        self.pax[at] = 10
        self.pax_len = at + 1

    cdef void _ustar(self, unsigned char* b, const unsigned char* name, Py_ssize_t name_len,
                     int64_t mode, int64_t uid, int64_t gid, int64_t size, int64_t mtime,
                     char type, const unsigned char* link, Py_ssize_t link_len,
                     const unsigned char* uname, Py_ssize_t uname_len,
                     const unsigned char* gname, Py_ssize_t gname_len,
                     int64_t devmajor, int64_t devminor) noexcept:
        cdef Py_ssize_t i
        cdef long total = 0
        memset(b, 0, BLOCK)
        _placeholder(b + NAME, NAME_LEN, name, name_len)
        put_octal(b + MODE, IDS_LEN, mode & 0o7777)
        put_octal(b + UID, IDS_LEN, uid if uid < OCTAL7 else 0)
        put_octal(b + GID, IDS_LEN, gid if gid < OCTAL7 else 0)
        put_octal(b + SIZE, NUMBER12_LEN, size if size < OCTAL11 else 0)
        put_octal(b + MTIME, NUMBER12_LEN, mtime if 0 <= mtime < OCTAL11 else 0)
        b[TYPEFLAG] = type
        _placeholder(b + LINKNAME, LINKNAME_LEN, link, link_len)
        memcpy(b + MAGIC, POSIX_MAGIC, 8)
        _placeholder(b + UNAME, OWNER_LEN, uname, uname_len)
        _placeholder(b + GNAME, OWNER_LEN, gname, gname_len)
        if type == b'3' or type == b'4':  # other members leave the device fields empty
            put_octal(b + DEVMAJOR, IDS_LEN, devmajor)
            put_octal(b + DEVMINOR, IDS_LEN, devminor)
        memset(b + CHKSUM, 32, CHKSUM_LEN)
        total = byte_sum(b, PREFIX)  # the prefix and the padding are left empty
        put_octal(b + CHKSUM, 7, total)
        b[CHKSUM + 7] = 32

    cdef Py_ssize_t _finish(self, const unsigned char* name, Py_ssize_t name_len, int64_t mode,
                            int64_t uid, int64_t gid, int64_t size, int64_t mtime, char type,
                            const unsigned char* link, Py_ssize_t link_len,
                            const unsigned char* uname, Py_ssize_t uname_len,
                            const unsigned char* gname, Py_ssize_t gname_len,
                            int64_t devmajor, int64_t devminor) except -1:
        """The PAX block (if records were made) and the ustar block, into `out`."""
        cdef Py_ssize_t total = BLOCK, pad
        cdef unsigned char* grown
        if self.pax_len:
            total += BLOCK + padded(self.pax_len)
        if total > self.cap:
            grown = <unsigned char*>realloc(self.out, total)
            if grown == NULL:
                raise MemoryError()
            self.out, self.cap = grown, total
        if self.pax_len:
            self._ustar(self.out, PAX_NAME, 14, 0, 0, 0, self.pax_len, 0, b'x',
                        NULL, 0, NULL, 0, NULL, 0, 0, 0)
            memcpy(self.out + BLOCK, self.pax, self.pax_len)
            pad = padded(self.pax_len) - self.pax_len
            memset(self.out + BLOCK + self.pax_len, 0, pad)
        self._ustar(self.out + total - BLOCK, name, name_len, mode, uid, gid, size, mtime,
                    type, link, link_len, uname, uname_len, gname, gname_len, devmajor,
                    devminor)
        return total

    cdef Py_ssize_t write(self, const Fields* f, const unsigned char* name,
                          Py_ssize_t name_len, char type, const unsigned char* link,
                          Py_ssize_t link_len, int64_t size) except -1:
        cdef const Keep* k
        cdef int i
        cdef bint binary
        cdef const unsigned char* uname = f.uname if f.uname != NULL else EMPTY
        cdef const unsigned char* gname = f.gname if f.gname != NULL else EMPTY
        cdef bint device = type == b'3' or type == b'4'
        cdef bint name_ascii, link_ascii, uname_ascii, gname_ascii
        if type != b'0':
            size = 0
        if type != b'1' and type != b'2':
            link_len = 0
        name_ascii, link_ascii = ascii(name, name_len), ascii(link, link_len)
        uname_ascii, gname_ascii = ascii(uname, f.uname_len), ascii(gname, f.gname_len)
        self.pax_len = 0
        if not (name_ascii and link_ascii and uname_ascii and gname_ascii):
            binary = not (utf8(name, name_len) and utf8(link, link_len) and
                          utf8(uname, f.uname_len) and utf8(gname, f.gname_len))
        else:
            binary = False
        for i in range(f.nkeep):
            k = &f.keep[i]
            binary = binary or not utf8(f.base + k.value.start, k.value.length)
        if binary:
            self._record("hdrcharset", 10, BINARY, 6)
        for i in range(f.nkeep):  # the input's own records first, as tarfile does
            k = &f.keep[i]
            self._record(<const char*>(f.base + k.key.start), k.key.length,
                         f.base + k.value.start, k.value.length)
        if f.mtime_text != NULL:
            self._record("mtime", 5, f.mtime_text, f.mtime_text_len)
        if name_len > NAME_LEN or not name_ascii:
            self._record("path", 4, name, name_len)
        if link_len > LINKNAME_LEN or not link_ascii:
            self._record("linkpath", 8, link, link_len)
        if f.uname_len > OWNER_LEN or not uname_ascii:
            self._record("uname", 5, uname, f.uname_len)
        if f.gname_len > OWNER_LEN or not gname_ascii:
            self._record("gname", 5, gname, f.gname_len)
        if f.uid >= OCTAL7:
            self._number("uid", f.uid)
        if f.gid >= OCTAL7:
            self._number("gid", f.gid)
        if size >= OCTAL11:
            self._number("size", size)
        if f.mtime_text == NULL and f.mtime >= OCTAL11:
            self._number("mtime", f.mtime)
        return self._finish(name, name_len, f.mode, f.uid, f.gid, size, f.mtime, type, link,
                            link_len, uname, f.uname_len, gname, f.gname_len,
                            f.devmajor if device else 0, f.devminor if device else 0)

    cdef void _number(self, const char* key, int64_t value) except *:
        cdef bytes text = str(value).encode()
        cdef Py_ssize_t klen = len(key)
        self._record(key, klen, text, len(text))

    cdef Py_ssize_t write_plain(self, const unsigned char* name, Py_ssize_t name_len,
                                char type, int64_t mode) except -1:
        """A member no layer has an entry for (a directory that exists only as a parent, a
        whiteout marker): owned by root, mtime 0, no data."""
        self.pax_len = 0
        if name_len > NAME_LEN or not ascii(name, name_len):
            if not utf8(name, name_len):
                self._record("hdrcharset", 10, BINARY, 6)
            self._record("path", 4, name, name_len)
        return self._finish(name, name_len, mode, 0, 0, 0, 0, type, NULL, 0, EMPTY, 0, EMPTY, 0,
                            0, 0)

    def header(self, HeaderReader source, bytes name, str type, bytes link, int64_t size):
        """For tests: the header of what `source` read last, written as `name`."""
        cdef Fields f
        cdef Py_ssize_t n
        source.fields(&f)
        n = self.write(&f, name, len(name), ord(type), link, len(link), size)
        return self.out[:n]


cdef inline void _placeholder(unsigned char* f, Py_ssize_t width, const unsigned char* s,
                              Py_ssize_t n) noexcept:
    """A string field: the value if it is ASCII, else '?' for each non-ASCII character
    (as tarfile writes it: the PAX record before it holds the real value); at most
    `width` bytes."""
    cdef Py_ssize_t i = 0, at = 0, more
    cdef unsigned char c
    if s == NULL:
        return
    while i < n and at < width:
        c = s[i]
        if 0 < c < 0x80:
            f[at] = c
            i += 1
        else:
            more = 1 if 0xC2 <= c <= 0xDF else 2 if 0xE0 <= c <= 0xEF else 3 if 0xF0 <= c <= 0xF4 else 0
            if more and i + more < n and utf8(s + i, more + 1):
                i += more + 1
            else:
                i += 1
            f[at] = 63
        at += 1
