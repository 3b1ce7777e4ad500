# The strict tar header reader and the canonical header writer (see tarheader.pyx).

from libc.stdint cimport int64_t


cdef enum:
    BLOCK = 512
    MAX_EXTENSION = 16 << 20   # PAX / GNU long-name data held in memory, per header
    MAX_KEEP = 4096            # PAX records kept for one member (xattrs)


# What a member's header group (extension headers + the final header) says.
cdef struct Span:
    Py_ssize_t start
    Py_ssize_t length


cdef struct Keep:                # a PAX record written out again (an xattr)
    Span key
    Span value


cdef struct Header:
    char type                    # '0' '1' '2' '3' '4' '5' '6', after normalising
    bint sparse                  # GNU sparse (old 'S' or PAX GNU.sparse.*)
    int64_t mode, uid, gid, size, mtime, devmajor, devminor
    Py_ssize_t group             # bytes of the header group: where the data starts
    const unsigned char* name    # raw name (PAX path, GNU long name or ustar prefix/name)
    Py_ssize_t name_len
    const unsigned char* link
    Py_ssize_t link_len
    const unsigned char* uname
    Py_ssize_t uname_len
    const unsigned char* gname
    Py_ssize_t gname_len
    const unsigned char* mtime_text   # a PAX mtime with a fraction, written back as it is
    Py_ssize_t mtime_text_len


# What a header is written from (a parsed Header, or what the index kept of one).
cdef struct Fields:
    int64_t mode, uid, gid, mtime, devmajor, devminor
    const unsigned char* uname
    Py_ssize_t uname_len
    const unsigned char* gname
    Py_ssize_t gname_len
    const unsigned char* mtime_text
    Py_ssize_t mtime_text_len
    const unsigned char* base      # the buffer `keep` spans point into
    const Keep* keep
    int nkeep


cdef class HeaderReader:
    cdef Header h
    cdef unsigned char joined[260]       # prefix "/" name of a ustar header
    cdef Keep* keep
    cdef int nkeep
    cdef const unsigned char* base       # the group buffer the spans point into

    # 0: a member was read into `h`; -1: the end-of-archive block; N > 0: N bytes from
    # `buf` are needed first. Errors raise InvalidLayer naming `where` and the offset.
    cdef Py_ssize_t read(self, const unsigned char* buf, Py_ssize_t n, str where,
                         long long offset) except -2
    cdef void fields(self, Fields* f) noexcept
    cdef void _pax(self, const unsigned char* d, Py_ssize_t size, str where, long long at,
                   Span* path, Span* link, Span* uname, Span* gname, Span* sparse_name,
                   bint* sparse, bint* have_size, int64_t* psize, bint* have_uid,
                   int64_t* puid, bint* have_gid, int64_t* pgid, bint* have_mtime,
                   int64_t* pmtime) except *
    cdef void _keep(self, Py_ssize_t key, Py_ssize_t klen, Py_ssize_t value, Py_ssize_t vlen,
                    str where, long long at) except *


cdef class HeaderWriter:
    cdef unsigned char* out
    cdef Py_ssize_t cap
    cdef unsigned char* pax
    cdef Py_ssize_t pax_cap, pax_len

    # The canonical header (a PAX header when needed, then ustar) of `f` under `name`,
    # with `type`, `link` and `size` as given, in `out`; valid until the next call.
    cdef Py_ssize_t write(self, const Fields* f, const unsigned char* name,
                          Py_ssize_t name_len, char type, const unsigned char* link,
                          Py_ssize_t link_len, int64_t size) except -1
    cdef Py_ssize_t write_plain(self, const unsigned char* name, Py_ssize_t name_len,
                                char type, int64_t mode) except -1
    cdef void _room(self, Py_ssize_t extra) except *
    cdef void _record(self, const char* key, Py_ssize_t klen, const unsigned char* value,
                      Py_ssize_t vlen) except *
    cdef void _number(self, const char* key, int64_t value) except *
    cdef void _ustar(self, unsigned char* b, const unsigned char* name, Py_ssize_t name_len,
                     int64_t mode, int64_t uid, int64_t gid, int64_t size, int64_t mtime,
                     char type, const unsigned char* link, Py_ssize_t link_len,
                     const unsigned char* uname, Py_ssize_t uname_len,
                     const unsigned char* gname, Py_ssize_t gname_len,
                     int64_t devmajor, int64_t devminor) noexcept
    cdef Py_ssize_t _finish(self, const unsigned char* name, Py_ssize_t name_len, int64_t mode,
                            int64_t uid, int64_t gid, int64_t size, int64_t mtime, char type,
                            const unsigned char* link, Py_ssize_t link_len,
                            const unsigned char* uname, Py_ssize_t uname_len,
                            const unsigned char* gname, Py_ssize_t gname_len,
                            int64_t devmajor, int64_t devminor) except -1
