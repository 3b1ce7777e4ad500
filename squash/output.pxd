# The squashed layer's output: members in an order where parents and link targets come
# first, each header written anew (see output.pyx).

from libc.stdint cimport uint32_t

from squash.pathtable cimport PathTable
from squash.tarheader cimport HeaderReader, HeaderWriter


cdef class Spool:
    cdef readonly object file     # the Python file object (tarfile reads sparse members)
    cdef readonly str label       # the layer, for errors
    cdef int fd
    cdef public int waiting       # items not written yet that read from it
    cdef unsigned char* window
    cdef long long window_start, window_end

    cdef void read(self, unsigned char* dst, long long at, Py_ssize_t n) except *
    cdef void _pread(self, unsigned char* dst, long long at, Py_ssize_t n) except *


cdef class Item:
    cdef uint32_t key, need_parent, need_link
    cdef int what                 # MEMBER, LINK, PLAIN_DIR, ROOT_DIR
    cdef char type
    cdef Spool spool              # where its header group (and data) are, or None
    cdef bytes saved              # its header group, kept in memory (no spool)
    cdef long long start, data, size
    cdef bint sparse


cdef class Output:
    cdef object write_out         # write(bytes): the merged layer's consumer
    cdef object expand_sparse     # expand_sparse(file, start, name) -> chunks
    cdef PathTable paths
    cdef HeaderReader reader
    cdef HeaderWriter writer
    cdef dict waiting             # path id -> items waiting for it to be written
    cdef unsigned char* buf
    cdef Py_ssize_t used
    cdef unsigned char* group
    cdef Py_ssize_t group_cap
    cdef unsigned char* target
    cdef readonly long long bytes_written, members_written

    cdef void member(self, Spool spool, long long start, long long data, long long size,
                     char type, bint sparse, uint32_t key) except *
    cdef void link(self, Spool spool, bytes saved, long long start, long long data,
                   uint32_t key, uint32_t target) except *
    cdef void plain_dir(self, uint32_t key) except *
    cdef void root(self, bytes saved) except *
    cdef bint _ready(self, uint32_t key, uint32_t other) noexcept
    cdef void _wait(self, Item item) except *
    cdef void _written(self, uint32_t key) except *
    cdef void _release(self, uint32_t key, list stack) except *
    cdef void _write(self, Item item) except *
    cdef void _write_member(self, Spool spool, long long start, long long data,
                            long long size, char type, uint32_t key) except *
    cdef void _write_link(self, Spool spool, bytes saved, long long start, long long data,
                          uint32_t key, uint32_t target) except *
    cdef const unsigned char* _group(self, Spool spool, bytes saved, long long start,
                                     long long data) except NULL
    cdef void _append(self, const unsigned char* p, Py_ssize_t n) except *
    cdef void _copy(self, Spool spool, long long at, long long n) except *
    cdef void _flush(self) except *
