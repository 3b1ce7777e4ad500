# Interned path keys and what the layers decided about them (see pathtable.pyx).

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef enum:
    ROOT = 0
    NO_PATH = 0xFFFFFFFF
    MAX_NAME = 32768          # bytes of a member name, after PAX or GNU long names

# What higher layers decided about a path (bit flags, they only accumulate).
cdef enum:
    NONDIR = 1       # a non-directory is there: hides lower entries at and under it (rule 5)
    GONE = 2         # whited out: hides lower entries at and under it (rule 1)
    ISDIR = 4        # a directory entry is there: lower entries at it are hidden (rule 7)
    IMPLICIT = 8     # a directory only because something lives under it
    OPAQUE = 16      # opaque directory: lower children are hidden (rule 2)
    HIDES_SELF = NONDIR | GONE | ISDIR
    HIDES_BELOW = NONDIR | GONE | OPAQUE

# Marks of a path.
cdef enum:
    EMITTED = 1      # written to the output
    IMPLIED = 2      # needed as a parent: written as a plain directory at the end if no
                     # layer has an entry for it
    BELOW = 4        # this layer has put something under it
    IN_LAYER = 8     # touched by this layer (its per-layer fields are to be reset)
    NONDIR_OUT = 16  # a non-directory of the squashed layers is written there
    MARKED = 32      # a partial squash has written the whiteout or opaque marker it needs

# Kinds of member names.
cdef enum:
    PLAIN = 0
    WHITEOUT = 1     # `.wh.NAME`: the id is NAME's
    OPAQUE_MARK = 2  # `.wh..wh..opq`: the id is the directory's
    META = 3         # aufs bookkeeping (`.wh..wh.*`): ignored


cdef class PathTable:
    cdef Py_ssize_t count, cap
    cdef uint32_t* parent
    cdef uint32_t* name_at
    cdef uint16_t* name_len
    cdef uint8_t* flags          # decisions of the layers above the one being read
    cdef uint8_t* lflags         # this layer's decisions, added when it is done
    cdef uint8_t* upper          # a partial squash: the decisions of the squashed layers,
    cdef Py_ssize_t upper_count  # frozen when the kept layers begin (ids below upper_count)
    cdef uint8_t* kept           # and the decisions of the kept layers read since (NULL before)
    cdef uint8_t* marks
    cdef uint32_t* state         # this layer's member at the path, + 1 (0: none)
    cdef uint32_t* child         # this layer's tree of touched paths
    cdef uint32_t* sibling
    cdef uint32_t* hidden_gen    # below-hidden cache: generation it is valid for
    cdef uint8_t* hidden_below
    cdef uint32_t generation
    cdef unsigned char* arena
    cdef Py_ssize_t arena_len, arena_cap
    cdef uint64_t* slots
    cdef Py_ssize_t nslots
    cdef uint32_t* touched
    cdef Py_ssize_t ntouched, touched_cap
    cdef unsigned char* last_dir
    cdef Py_ssize_t last_dir_len
    cdef uint32_t last_dir_id
    cdef unsigned char* keybuf
    cdef uint32_t* stack
    cdef list implied_order       # ids marked IMPLIED, in the order they were

    cdef uint32_t intern(self, uint32_t parent, const unsigned char* name,
                         Py_ssize_t n) except NO_PATH
    cdef uint32_t clean(self, const unsigned char* raw, Py_ssize_t n, int* kind,
                        str where) except NO_PATH
    cdef Py_ssize_t key(self, uint32_t id, bint directory) except -1
    cdef bint hidden(self, uint32_t id, bint is_dir) noexcept
    cdef uint8_t upper_flags(self, uint32_t id) noexcept
    cdef bint kept_hidden(self, uint32_t id, bint is_dir) noexcept
    cdef bint below_hidden(self, uint32_t directory) noexcept
    cdef void touch(self, uint32_t id) except *
    cdef void add_layer(self) noexcept
    cdef uint32_t _leaf(self, uint32_t directory, const unsigned char* name, Py_ssize_t n,
                        int* kind, const unsigned char* raw, Py_ssize_t rawn,
                        str where) except NO_PATH
    cdef void _grow(self, Py_ssize_t cap) except *
    cdef void _rehash(self) except *
