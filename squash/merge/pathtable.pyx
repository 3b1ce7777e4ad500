# cython: language_level=3, boundscheck=True, wraparound=False, cdivision=True
"""Path keys as small integers, and what the layers decided about each path.

A key is a cleaned member name: `./a`, `/a`, `a/` and `a//b` name one path, `..` is
resolved lexically and one that climbs out of the root is an error (merge rule 4). Keys
are interned component by component (id, parent id, name bytes), so a path costs a few
tens of bytes however long it is, and "the parent of" is an array read. Beside each id
sit the decisions of the layers read so far (bit flags that only accumulate, rules 1, 2,
5 and 7), this layer's own decisions until it is done, and the marks the output needs.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset

from squash.errors import InvalidLayer

cdef uint64_t TAG = 0xFFFFFFFF00000000ULL
cdef const unsigned char* WHITEOUT_PREFIX = b".wh."
cdef const unsigned char* META_PREFIX = b".wh..wh."
cdef const unsigned char* OPAQUE_NAME = b".wh..wh..opq"


cdef inline uint64_t hash_of(uint32_t parent, const unsigned char* name, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = 14695981039346656037ULL ^ (<uint64_t>parent * 0x9E3779B97F4A7C15ULL)
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ name[i]) * 1099511628211ULL
    return h ^ (h >> 29)


cdef inline void zero_tail(void* arr, Py_ssize_t size, Py_ssize_t old, Py_ssize_t cap) noexcept:
    memset(<char*>arr + old * size, 0, (cap - old) * size)


cdef void* grow(void* p, Py_ssize_t size) except NULL:
    cdef void* q = realloc(p, size)
    if q == NULL:
        raise MemoryError()
    return q


cdef inline bint overrules(uint8_t state, bint is_dir) noexcept:
    """Do the decisions `state` at a path overrule a lower member there? Any entry above
    hides a non-directory; a directory is hidden by a non-directory, a whiteout, or a
    directory entry (whose attributes win), not by one that is only implied (rules 5, 7)."""
    return state != 0 and (state & HIDES_SELF != 0 or not is_dir)


cdef class PathTable:
    def __cinit__(self):
        self.count = 0
        self.cap = 0
        self.arena_cap = 1 << 16
        self.arena = <unsigned char*>malloc(self.arena_cap)
        self.nslots = 1 << 12
        self.slots = <uint64_t*>calloc(self.nslots, sizeof(uint64_t))
        self.touched_cap = 1024
        self.touched = <uint32_t*>malloc(self.touched_cap * sizeof(uint32_t))
        self.last_dir = <unsigned char*>malloc(MAX_NAME)
        self.keybuf = <unsigned char*>malloc(MAX_NAME + 2)
        self.stack = <uint32_t*>malloc((MAX_NAME // 2 + 2) * sizeof(uint32_t))
        if not (self.arena and self.slots and self.touched and self.last_dir and self.keybuf
                and self.stack):
            raise MemoryError()
        self.last_dir_len = -1
        self.generation = 1
        self.implied_order = []
        self._grow(1 << 12)
        self.count = 1  # the root: id 0, its own parent, no name
        self.parent[ROOT] = ROOT
        self.marks[ROOT] = EMITTED  # written first, or not at all

    def __dealloc__(self):
        free(self.parent)
        free(self.name_at)
        free(self.name_len)
        free(self.flags)
        free(self.lflags)
        free(self.upper)
        free(self.kept)
        free(self.marks)
        free(self.state)
        free(self.child)
        free(self.sibling)
        free(self.hidden_gen)
        free(self.hidden_below)
        free(self.arena)
        free(self.slots)
        free(self.touched)
        free(self.last_dir)
        free(self.keybuf)
        free(self.stack)

    cdef void _grow(self, Py_ssize_t cap) except *:
        cdef Py_ssize_t old = self.cap
        self.parent = <uint32_t*>grow(self.parent, cap * sizeof(uint32_t))
        self.name_at = <uint32_t*>grow(self.name_at, cap * sizeof(uint32_t))
        self.name_len = <uint16_t*>grow(self.name_len, cap * sizeof(uint16_t))
        self.flags = <uint8_t*>grow(self.flags, cap)
        self.lflags = <uint8_t*>grow(self.lflags, cap)
        self.marks = <uint8_t*>grow(self.marks, cap)
        self.state = <uint32_t*>grow(self.state, cap * sizeof(uint32_t))
        self.child = <uint32_t*>grow(self.child, cap * sizeof(uint32_t))
        self.sibling = <uint32_t*>grow(self.sibling, cap * sizeof(uint32_t))
        self.hidden_gen = <uint32_t*>grow(self.hidden_gen, cap * sizeof(uint32_t))
        self.hidden_below = <uint8_t*>grow(self.hidden_below, cap)
        zero_tail(self.parent, 4, old, cap)
        zero_tail(self.name_at, 4, old, cap)
        zero_tail(self.name_len, 2, old, cap)
        zero_tail(self.flags, 1, old, cap)
        zero_tail(self.lflags, 1, old, cap)
        zero_tail(self.marks, 1, old, cap)
        zero_tail(self.state, 4, old, cap)
        zero_tail(self.child, 4, old, cap)
        zero_tail(self.sibling, 4, old, cap)
        zero_tail(self.hidden_gen, 4, old, cap)
        zero_tail(self.hidden_below, 1, old, cap)
        if self.kept != NULL:
            self.kept = <uint8_t*>grow(self.kept, cap)
            zero_tail(self.kept, 1, old, cap)
        self.cap = cap

    cdef void _rehash(self) except *:
        cdef Py_ssize_t n = self.nslots * 2, at
        cdef uint64_t* slots = <uint64_t*>calloc(n, sizeof(uint64_t))
        cdef uint64_t h
        cdef uint32_t id
        if slots == NULL:
            raise MemoryError()
        for id in range(1, self.count):
            h = hash_of(self.parent[id], self.arena + self.name_at[id], self.name_len[id])
            at = h & (n - 1)
            while slots[at]:
                at = (at + 1) & (n - 1)
            slots[at] = (h & TAG) | id
        free(self.slots)
        self.slots, self.nslots = slots, n

    cdef uint32_t intern(self, uint32_t parent, const unsigned char* name,
                         Py_ssize_t n) except NO_PATH:
        """The id of component `name` under `parent`, made if new. A slot holds the id
        and the hash's high bits, so most other keys are passed over without a look at
        their names."""
        cdef uint64_t h = hash_of(parent, name, n), slot
        cdef Py_ssize_t at = h & (self.nslots - 1)
        cdef uint32_t id
        while True:
            slot = self.slots[at]
            if slot == 0:
                break
            id = <uint32_t>(slot & 0xFFFFFFFF)
            if (slot & TAG) == (h & TAG) and self.parent[id] == parent and \
                    self.name_len[id] == n and memcmp(self.arena + self.name_at[id], name, n) == 0:
                return id
            at = (at + 1) & (self.nslots - 1)
        if self.count >= 0xFFFFFFF0:
            raise InvalidLayer("more than 4 billion paths")
        if n > 0xFFFF:
            raise InvalidLayer(f"a path component of {n} bytes")
        if self.count == self.cap:
            self._grow(self.cap * 2)
        while self.arena_len + n > self.arena_cap:
            self.arena_cap *= 2
            self.arena = <unsigned char*>grow(self.arena, self.arena_cap)
        id = <uint32_t>self.count
        self.count += 1
        memcpy(self.arena + self.arena_len, name, n)
        self.name_at[id] = <uint32_t>self.arena_len
        self.name_len[id] = <uint16_t>n
        self.arena_len += n
        self.parent[id] = parent
        self.slots[at] = (h & TAG) | id
        if self.count * 2 > self.nslots:
            self._rehash()
        return id

    cdef uint32_t clean(self, const unsigned char* raw, Py_ssize_t n, int* kind,
                        str where) except NO_PATH:
        """The id of a member name's key; `kind` says whether it is a whiteout (then the
        id is what it hides) or an opaque marker (the id is its directory). With `kind`
        NULL (a hard link's target) names are not classified."""
        cdef Py_ssize_t i = 0, j, last = 0, depth = 0, slash
        cdef uint32_t cur = ROOT, dir_id
        cdef bint simple
        if kind != NULL:
            kind[0] = PLAIN
        if n > MAX_NAME:
            raise InvalidLayer(f"{where}: a member name of {n} bytes (more than {MAX_NAME})")
        while n and raw[n - 1] == b'/':
            n -= 1
        # the common case: a plain relative name in the directory of the previous one
        simple = n > 0 and raw[0] != b'/' and raw[0] != b'.'
        slash = -1
        if simple:
            for i in range(n - 1):
                if raw[i] == b'/':
                    if raw[i + 1] == b'/' or raw[i + 1] == b'.':
                        simple = False
                        break
                    slash = i
        if simple and slash == self.last_dir_len and slash > 0 and \
                memcmp(raw, self.last_dir, slash) == 0:
            return self._leaf(self.last_dir_id, raw + slash + 1, n - slash - 1, kind, raw, n, where)
        if simple and slash < 0:
            return self._leaf(ROOT, raw, n, kind, raw, n, where)
        # the general case, component by component
        i = 0
        while True:
            while i < n and raw[i] == b'/':
                i += 1
            if i >= n:
                break
            j = i
            while j < n and raw[j] != b'/':
                j += 1
            if j == n:
                last = i
                break
            if j - i == 1 and raw[i] == b'.':
                pass
            elif j - i == 2 and raw[i] == b'.' and raw[i + 1] == b'.':
                if depth == 0:
                    raise InvalidLayer(f"{where}: member {_show(raw, n)} escapes the root")
                depth -= 1
                cur = self.stack[depth]
            else:
                if kind != NULL and raw[i] == b'.' and j - i >= 8 and \
                        memcmp(raw + i, META_PREFIX, 8) == 0 and cur == ROOT:
                    kind[0] = META  # aufs bookkeeping at the root, and all under it
                    return ROOT
                self.stack[depth] = cur
                depth += 1
                cur = self.intern(cur, raw + i, j - i)
            i = j
        if i >= n:  # the name ends in a directory part: ".", "..", or nothing at all
            return cur
        if n - last == 1 and raw[last] == b'.':
            return cur
        if n - last == 2 and raw[last] == b'.' and raw[last + 1] == b'.':
            if depth == 0:
                raise InvalidLayer(f"{where}: member {_show(raw, n)} escapes the root")
            return self.stack[depth - 1]
        dir_id = cur
        if simple:
            memcpy(self.last_dir, raw, slash)
            self.last_dir_len, self.last_dir_id = slash, dir_id
        return self._leaf(dir_id, raw + last, n - last, kind, raw, n, where)

    cdef uint32_t _leaf(self, uint32_t directory, const unsigned char* name, Py_ssize_t n,
                        int* kind, const unsigned char* raw, Py_ssize_t rawn,
                        str where) except NO_PATH:
        """The last component of a name: a whiteout, an opaque marker, or a plain name."""
        if kind == NULL:
            return self.intern(directory, name, n)
        if n >= 4 and memcmp(name, WHITEOUT_PREFIX, 4) == 0:
            if n == 12 and memcmp(name, OPAQUE_NAME, 12) == 0:
                kind[0] = OPAQUE_MARK
                return directory
            if n >= 8 and memcmp(name, META_PREFIX, 8) == 0:
                kind[0] = META
                return directory
            if n == 4:
                raise InvalidLayer(f"{where}: bare whiteout {_show(raw, rawn)} names nothing")
            if (n == 5 and name[4] == b'.') or (n == 6 and name[4] == b'.' and name[5] == b'.'):
                raise InvalidLayer(f"{where}: whiteout {_show(raw, rawn)} names no file")
            kind[0] = WHITEOUT
            return self.intern(directory, name + 4, n - 4)
        if directory == ROOT and n >= 8 and memcmp(name, META_PREFIX, 8) == 0:
            kind[0] = META
            return ROOT
        return self.intern(directory, name, n)

    cdef Py_ssize_t key(self, uint32_t id, bint directory) except -1:
        """Write the key of `id` into `keybuf` (a trailing "/" for a directory, "./" for
        the root directory); return its length."""
        cdef Py_ssize_t total = 0, at
        cdef uint32_t p = id
        if id == ROOT:
            memcpy(self.keybuf, b"./", 2)
            return 2
        while p != ROOT:
            total += self.name_len[p] + 1
            p = self.parent[p]
        total -= 1
        at = total
        if directory:
            self.keybuf[total] = b'/'
            total += 1
        p = id
        while p != ROOT:
            at -= self.name_len[p]
            memcpy(self.keybuf + at, self.arena + self.name_at[p], self.name_len[p])
            if at:
                at -= 1
                self.keybuf[at] = b'/'
            p = self.parent[p]
        return total

    def text(self, uint32_t id) -> str:
        """A key as error messages show it."""
        if id == ROOT:
            return ""
        cdef Py_ssize_t n = self.key(id, False)
        return self.keybuf[:n].decode("utf-8", "surrogateescape")

    def lookup(self, str key) -> int:
        """For tests: the id of a clean key, made if new."""
        cdef int kind
        raw = key.encode("utf-8", "surrogateescape")
        return self.clean(raw, len(raw), &kind, "test")

    cdef bint hidden(self, uint32_t id, bint is_dir) noexcept:
        """Is a member at `id` of a lower layer overruled by the layers above it?"""
        if overrules(self.flags[id], is_dir):
            return True
        return id != ROOT and self.below_hidden(self.parent[id])

    cdef bint below_hidden(self, uint32_t directory) noexcept:
        """Is everything under `directory` hidden (it or an ancestor is opaque, gone or not a
        directory)? Cached until the decisions change."""
        cdef uint32_t p = directory, q
        cdef bint answer = False
        while True:
            if self.hidden_gen[p] == self.generation:
                answer = self.hidden_below[p]
                break
            if self.flags[p] & HIDES_BELOW:
                answer = True
                break
            if p == ROOT:
                break
            p = self.parent[p]
        q = directory
        while q != p:
            self.hidden_gen[q], self.hidden_below[q] = self.generation, answer
            q = self.parent[q]
        self.hidden_gen[p], self.hidden_below[p] = self.generation, answer or (self.flags[p] & HIDES_BELOW != 0)
        return answer

    def freeze_upper(self):
        """Keep what the layers read so far decided: they are squashed, the rest kept."""
        self.upper = <uint8_t*>grow(self.upper, max(self.count, 1))
        memcpy(self.upper, self.flags, self.count)
        self.upper_count = self.count
        if self.kept == NULL:
            self.kept = <uint8_t*>calloc(self.cap, 1)
            if self.kept == NULL:
                raise MemoryError()

    cdef uint8_t upper_flags(self, uint32_t id) noexcept:
        """What the squashed layers decided about `id` (0 for a path they never named)."""
        return self.upper[id] if id < self.upper_count else 0

    cdef bint kept_hidden(self, uint32_t id, bint is_dir) noexcept:
        """Is a member at `id` of a kept layer removed, or replaced by another entry, by
        the kept layers above it?"""
        if overrules(self.kept[id], is_dir):
            return True
        while id != ROOT:
            id = self.parent[id]
            if self.kept[id] & HIDES_BELOW:
                return True
        return False

    cdef void touch(self, uint32_t id) except *:
        """Mark `id` (and its ancestors) as touched by this layer, in this layer's tree."""
        cdef uint32_t p
        while not self.marks[id] & IN_LAYER:
            self.marks[id] |= IN_LAYER
            if self.ntouched == self.touched_cap:
                self.touched_cap *= 2
                self.touched = <uint32_t*>grow(self.touched, self.touched_cap * sizeof(uint32_t))
            self.touched[self.ntouched] = id
            self.ntouched += 1
            if id == ROOT:
                return
            p = self.parent[id]
            self.sibling[id] = self.child[p]
            self.child[p] = id
            id = p

    cdef void add_layer(self) noexcept:
        """The layer is done: its decisions join those of the layers above."""
        cdef Py_ssize_t i
        cdef uint32_t id
        for i in range(self.ntouched):
            id = self.touched[i]
            self.flags[id] |= self.lflags[id]
            if self.kept != NULL:
                self.kept[id] |= self.lflags[id]
            self.lflags[id] = 0
            self.state[id] = 0
            self.child[id] = 0
            self.sibling[id] = 0
            self.marks[id] &= ~(BELOW | IN_LAYER)
        self.ntouched = 0
        self.generation += 1

    def discard_layer(self):
        """Forget what this layer decided so far (it is read again, whole)."""
        cdef Py_ssize_t i
        for i in range(self.ntouched):
            self.lflags[self.touched[i]] = 0
        self.add_layer()

    def memory(self) -> int:
        """Bytes held, for the benchmark's per-path figure."""
        per_id = 32 if self.kept != NULL else 31
        return (self.cap * per_id + self.upper_count + self.arena_cap + self.nslots * 8
                + self.touched_cap * 4)

    def __len__(self):
        return self.count


cdef str _show(const unsigned char* p, Py_ssize_t n):
    return repr(p[:n].decode("utf-8", "surrogateescape"))
