# A layer's members, indexed as its tar streams past, and its spool (see layerindex.pyx).

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t

from squash.merge.pathtable cimport NO_PATH, PathTable
from squash.merge.tarheader cimport Fields, HeaderReader


# flags of a member; its kind (PLAIN, WHITEOUT, OPAQUE_MARK, META) sits above them
cdef enum:
    SKIPPED = 1            # its data was not spooled (hidden by higher layers)
    REREAD = 2             # its header says more than the index keeps: read it again
    SPARSE = 4             # GNU sparse: expanded by tarfile when written
    KIND_SHIFT = 3


# 32 bytes: a member of a layer of two million costs 64 MiB here
cdef struct Member:
    long long data         # its data, in the spool or the layer's own file; a symlink's
                           # target or a device's numbers (unless REREAD): in the text arena
    long long size         # bytes of that; a hard link, which has none, keeps its
                           # target's key here (`link_of`)
    uint32_t path          # its key; for a whiteout what it hides, for an opaque marker
                           # the directory
    uint32_t mtime         # seconds (later or sub-second mtimes: REREAD)
    uint32_t group         # bytes of its header group just before `data`, when it can be
                           # read there again (0: it cannot)
    uint16_t attrs         # mode, owner and group, in the layer's attribute table
    uint8_t type           # '0' '1' '2' '3' '4' '5' '6'
    uint8_t flags          # SKIPPED, REREAD, SPARSE; the kind above KIND_SHIFT (`kind_of`)


cdef inline uint32_t link_of(const Member* m) noexcept nogil:
    """A hard link's target, else NO_PATH."""
    return <uint32_t>m.size if m.type == b'1' else NO_PATH


cdef inline int kind_of(const Member* m) noexcept nogil:
    """PLAIN, WHITEOUT, OPAQUE_MARK or META."""
    return m.flags >> KIND_SHIFT


cdef struct Attrs:
    uint32_t mode, uid, gid
    uint16_t uname, gname  # in the layer's owner table


cdef class Spool:
    cdef readonly object file     # the Python file object (tarfile reads sparse members)
    cdef readonly str label       # the layer, for errors
    cdef int fd
    cdef public int waiting       # members not written yet that read from it
    cdef unsigned char* window
    cdef long long window_start, window_end

    cdef void read(self, unsigned char* dst, long long at, Py_ssize_t n) except *
    cdef void _pread(self, unsigned char* dst, long long at, Py_ssize_t n) except *


cdef class LayerIndex:
    cdef readonly str where
    cdef readonly Spool spool      # where its members' bytes are read from (None: nowhere)
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
    cdef int out                  # fd of the spool, or -1 (read in place)
    cdef bint holes_wanted        # leave out the data of big members hidden from above
    cdef unsigned char* stage     # data gathered for the spool
    cdef Py_ssize_t staged
    cdef long long spooled        # bytes appended to the spool (the staged ones included)
    cdef long long copy_at        # stream offset of the data still to be spooled
    cdef long long copy_left
    cdef bint copy_skip           # that data is hidden: skip it
    cdef unsigned char* text      # symlink targets, device numbers and owner names
    cdef Py_ssize_t text_len, text_cap
    cdef uint32_t* owner_at       # owner table: offset and length in `text`
    cdef uint16_t* owner_len
    cdef int nowners
    cdef Attrs* attrs             # attribute table: what members share (mode, owners)
    cdef Py_ssize_t nattrs, attrs_cap
    cdef uint32_t* attr_slots     # its hash slots: index + 1
    cdef Py_ssize_t nattr_slots

    cdef void fields(self, const Member* m, Fields* f) noexcept
    cdef void _scan(self, const unsigned char* chunk, Py_ssize_t n, long long base) except *
    cdef void _hold(self, const unsigned char* p, Py_ssize_t n) except *
    cdef void _add(self, const unsigned char* group) except *
    cdef uint32_t _text(self, const unsigned char* p, Py_ssize_t n) except? 0xFFFFFFFF
    cdef int _owner(self, const unsigned char* p, Py_ssize_t n) except -2
    cdef long _attrs(self, uint32_t mode, uint32_t uid, uint32_t gid, int uname,
                     int gname) except -2
    cdef void _spool(self, const unsigned char* p, Py_ssize_t n) except *
    cdef void _flush(self) except *
    cdef void _put(self, const unsigned char* p, Py_ssize_t n, long long at) except *
