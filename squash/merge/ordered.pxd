# The squashed layer's output: members in an order where parents and link targets come
# first, each header written anew (see ordered.pyx).

from libc.stdint cimport uint32_t

from squash.merge.layerindex cimport LayerIndex, Member, Spool
from squash.merge.pathtable cimport PathTable
from squash.merge.tarheader cimport HeaderReader, HeaderWriter


cdef class Item:
    cdef uint32_t key, need_parent, need_link
    cdef int what                 # MEMBER, LINK, PREPARED
    cdef LayerIndex index         # the member whose header (and data) it writes,
    cdef Py_ssize_t member        # or None with the header group `saved`
    cdef bytes saved


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

    cdef void member(self, LayerIndex index, Py_ssize_t i, uint32_t key) except *
    cdef void link(self, LayerIndex index, Py_ssize_t i, bytes saved, uint32_t key,
                   uint32_t target) except *
    cdef void plain_dir(self, uint32_t key) except *
    cdef void root(self, bytes saved) except *
    cdef bytes header_of(self, LayerIndex index, Py_ssize_t i, uint32_t key)
    cdef bytes marker_header(self, uint32_t directory, bytes base)
    cdef void prepared(self, uint32_t key, uint32_t parent, bytes header) except *
    cdef bint _ready(self, uint32_t key, uint32_t other) noexcept
    cdef void _wait(self, Item item) except *
    cdef void _written(self, uint32_t key) except *
    cdef void _release(self, uint32_t key, list stack) except *
    cdef void _write(self, Item item) except *
    cdef void _write_member(self, LayerIndex index, Py_ssize_t i, uint32_t key) except *
    cdef void _write_link(self, LayerIndex index, Py_ssize_t i, bytes saved, uint32_t key,
                          uint32_t target) except *
    cdef void _header(self, LayerIndex index, const Member* m, bytes saved,
                      const unsigned char* name, Py_ssize_t name_len, char type,
                      const unsigned char* link, Py_ssize_t link_len, long long size) except *
    cdef Py_ssize_t _build(self, LayerIndex index, const Member* m, bytes saved,
                           const unsigned char* name, Py_ssize_t name_len, char type,
                           const unsigned char* link, Py_ssize_t link_len,
                           long long size) except -1
    cdef void _append(self, const unsigned char* p, Py_ssize_t n) except *
    cdef void _copy(self, Spool spool, long long at, long long n) except *
    cdef void _flush(self) except *
