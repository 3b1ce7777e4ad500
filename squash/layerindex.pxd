# A layer's members, indexed as its tar streams past (see layerindex.pyx).

from libc.stdint cimport uint8_t, uint32_t

from squash.pathtable cimport PathTable
from squash.tarheader cimport HeaderReader


cdef struct Member:
    long long start        # first byte of its header group (extension headers included)
    long long data         # first byte of its data
    long long size         # bytes of data stored in the archive
    uint32_t path          # its key; for a whiteout what it hides, for an opaque marker
                           # the directory
    uint32_t link          # a hard link's target, else NO_PATH
    uint8_t type           # '0' '1' '2' '3' '4' '5' '6'
    uint8_t kind           # PLAIN, WHITEOUT, OPAQUE_MARK, META
    uint8_t skipped        # its data was not spooled (hidden by higher layers)
    uint8_t sparse         # GNU sparse: expanded by tarfile when written


cdef struct Hole:
    long long start
    long long end


cdef class LayerIndex:
    cdef readonly str where
    cdef PathTable paths
    cdef HeaderReader reader
    cdef Member* members
    cdef readonly Py_ssize_t count
    cdef Py_ssize_t cap
    cdef readonly bint ended      # saw the end-of-archive block
    cdef int zero_blocks          # end-of-archive blocks seen so far (a second one is checked)
    cdef readonly long long position   # stream bytes fed so far (plus the start offset)
    cdef long long next           # stream offset of the next header group
    cdef unsigned char* held      # bytes from `next` on while they straddle chunks
    cdef Py_ssize_t held_len, held_cap
    cdef Py_ssize_t want          # bytes from `next` needed to read the header group there
    cdef int spool                # fd the stream is written to, or -1 (read in place)
    cdef bint holes_wanted        # leave out the data of big members hidden from above
    cdef Hole* holes
    cdef Py_ssize_t nholes, holes_cap, first_hole

    cdef void _scan(self, const unsigned char* chunk, Py_ssize_t n, long long base) except *
    cdef void _hold(self, const unsigned char* p, Py_ssize_t n) except *
    cdef void _add(self) except *
    cdef void _hole(self, long long start, long long end) except *
    cdef void _write_around(self, const unsigned char* chunk, Py_ssize_t n,
                            long long base) except *
    cdef void _put(self, const unsigned char* p, Py_ssize_t n, long long at) except *
