"""A fast, forward-only index of a tar stream's members, fed chunk by chunk.

`tarfile` costs tens of microseconds a member; an image has tens of thousands, so the
hot loop reads only what merging needs (name, type, size, link target, where the member
starts and ends) and leaves full header parsing to `tarfile` for the rare member that
must be rewritten.
"""

from dataclasses import dataclass

from squash.errors import InvalidLayer
from squash.paths import clean

BLOCK = 512
# Type flags as merging sees them.
REG, LNK, SYM, CHR, BLK, DIR, FIFO = b"0", b"1", b"2", b"3", b"4", b"5", b"6"
_REGULAR_ALIASES = {b"\0": REG, b"7": REG, b"0": REG}
_EXTENSIONS = {b"x", b"g", b"L", b"K"}
_KNOWN = {REG, LNK, SYM, CHR, BLK, DIR, FIFO, b"S"}
_SIMPLE = {b"0": REG, b"\0": REG, b"5": DIR, b"2": SYM}  # types the fast path takes
MAX_EXTENSION = 16 << 20  # PAX / GNU long-name data we are willing to hold in memory


@dataclass(slots=True)
class Member:
    """One member of a layer tar, located by byte offsets in the uncompressed stream."""

    key: str  # cleaned path
    type: bytes  # one of REG, LNK, SYM, CHR, BLK, DIR, FIFO
    start: int  # first byte of its headers (PAX / GNU extension blocks included)
    data: int  # first byte of its data
    size: int  # bytes of data stored in the archive
    end: int  # first byte after its padded data
    link: str | None  # cleaned hard-link target, raw symlink target is not kept
    verbatim: bool  # its header blocks can be copied as they are
    skipped: bool = False  # its data was not kept (hidden by higher layers)


def _number(field: bytes, where: str) -> int:
    """Decode an octal or base-256 numeric header field."""
    if field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise InvalidLayer(f"{where}: malformed tar header (numeric field {field!r})") from None


def _checksum_ok(block: bytes) -> bool:
    stored = block[148:156].split(b"\0", 1)[0].strip()
    try:
        want = int(stored, 8)
    except ValueError:
        return False
    total = sum(block[:148]) + sum(block[156:]) + 8 * 32
    return want == total


def _parse_pax(data: bytes, where: str) -> dict[str, bytes]:
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise InvalidLayer(f"{where}: malformed PAX header") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise InvalidLayer(f"{where}: malformed PAX header")
        key, value = record[:-1].split(b"=", 1)
        records[key.decode("utf-8", "surrogateescape")] = value
        pos += length
    return records


def _names_or_sizes(pax: dict[str, bytes]) -> bool:
    """Do PAX records override what the fast path reads from the ustar header?"""
    return any(k in ("path", "linkpath", "size") or k.startswith("GNU.sparse.") for k in pax)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _is_verbatim_name(raw: str, key: str) -> bool:
    """True when the raw name already is the key, give or take './' and a trailing '/'."""
    return not raw.startswith("/") and raw.removeprefix("./").rstrip("/") == key


class TarIndexer:
    """Feed it a tar stream in chunks; `members` lists what it holds, in stream order."""

    def __init__(self, where: str, offset: int = 0) -> None:
        """`offset`: where the stream starts in the file members will be read from."""
        self.where = where
        self.members: list[Member] = []
        self.ended = False  # saw the end-of-archive block
        self._base = offset  # stream offset of the chunk being fed
        self._next = offset  # stream offset of the next header block
        self._want = BLOCK  # bytes from _next needed to parse the header there
        self._held: bytearray | None = None  # bytes from _next on, while they straddle chunks
        self._start: int | None = None  # start of the current member's extension headers
        self._pax: dict[str, bytes] = {}
        self._long_name: bytes | None = None
        self._long_link: bytes | None = None

    def feed(self, chunk: memoryview) -> None:
        base = self._base
        self._base = base + len(chunk)
        pos = 0  # bytes of this chunk already appended to _held
        while not self.ended:
            if self._held is not None:
                take = chunk[pos : pos + self._want - len(self._held)]
                self._held += take
                pos += len(take)
                if len(self._held) < self._want:
                    return
                view = memoryview(bytes(self._held))
            else:
                offset = self._next - base
                if offset >= len(chunk):
                    return
                if offset + self._want > len(chunk):
                    self._held = bytearray(chunk[offset:])
                    pos = len(chunk)
                    return
                view = chunk[offset : offset + self._want]
            more = self._parse(view)
            if more:  # an extension header: parse again once its data is here
                self._want = more
                continue
            self._held = None
            self._want = BLOCK

    def finish(self) -> None:
        """Call at end of stream: a tar cut short is an error."""
        if not self.ended and (self._next > self._base or self._held is not None):
            raise InvalidLayer(f"{self.where}: tar stream ends inside a member (truncated layer)")

    def _parse(self, block: memoryview) -> int:
        """Parse the header at _next; return bytes still needed (0 when it was consumed)."""
        header = block[:BLOCK].tobytes()
        typeflag = header[156:157]
        if header[257:262] != b"ustar":
            if not any(header):
                self.ended = True
                return 0
            if not _checksum_ok(header):
                raise InvalidLayer(f"{self.where}: not a tar header at byte {self._next}")
        size = _number(header[124:136], self.where)
        padded = BLOCK + (size + BLOCK - 1) // BLOCK * BLOCK
        if typeflag in _EXTENSIONS:
            if size > MAX_EXTENSION:
                raise InvalidLayer(f"{self.where}: extension header of {size} bytes")
            if len(block) < padded:
                return padded
            data = block[BLOCK : BLOCK + size].tobytes()
            if self._start is None:
                self._start = self._next
            if typeflag == b"x":
                self._pax.update(_parse_pax(data, self.where))
            elif typeflag == b"L":
                self._long_name = data.split(b"\0", 1)[0]
            elif typeflag == b"K":
                self._long_link = data.split(b"\0", 1)[0]
            # global headers ('g') carry nothing merging needs
            self._next += padded
            return 0
        self._add(header, typeflag, size)
        return 0

    def _add(self, header: bytes, typeflag: bytes, size: int) -> None:
        if (
            typeflag in _SIMPLE
            and self._long_name is None
            and self._long_link is None
            and not (self._pax and _names_or_sizes(self._pax))
            and not (header[108] | header[116] | header[124] | header[136]) & 0x80
            and (header[345] == 0 or header[257:263] != b"ustar\0")
        ):  # the common case: the name is in the ustar header and needs no cleaning
            nul = header.find(0, 0, 100)
            raw = header[: nul if nul >= 0 else 100].decode("utf-8", "surrogateescape")
            if raw and raw[0] not in "./" and "//" not in raw and "/." not in raw:
                kind = _SIMPLE[typeflag]
                if kind == REG and raw[-1] == "/":
                    kind = DIR
                if kind != REG:
                    size = 0
                data = self._next + BLOCK
                end = data + (size + BLOCK - 1) // BLOCK * BLOCK
                start = self._next if self._start is None else self._start
                self.members.append(
                    Member(raw.rstrip("/"), kind, start, data, size, end, None, True)
                )
                self._next = end
                self._start = None
                self._pax = {}
                return
        pax = self._pax
        start = self._start if self._start is not None else self._next
        if "GNU.sparse.name" in pax:  # PAX sparse 1.0 keeps the real name here
            raw_name = _text(pax["GNU.sparse.name"])
        elif "path" in pax:
            raw_name = _text(pax["path"])
        elif self._long_name is not None:
            raw_name = _text(self._long_name)
        else:
            name = header[0:100].split(b"\0", 1)[0]
            prefix = header[345:500].split(b"\0", 1)[0]
            if prefix and header[257:263] == b"ustar\0":
                name = prefix + b"/" + name
            raw_name = _text(name)
        sparse = typeflag == b"S" or (bool(pax) and any(k.startswith("GNU.sparse.") for k in pax))
        if "size" in pax and not sparse:
            try:
                size = int(pax["size"])
            except ValueError:
                raise InvalidLayer(f"{self.where}: malformed PAX size for {raw_name!r}") from None
        kind = _REGULAR_ALIASES.get(typeflag, typeflag)
        if kind not in _KNOWN:
            raise InvalidLayer(f"{self.where}: member {raw_name!r} has unsupported type {kind!r}")
        if kind == REG and raw_name.endswith("/"):
            kind = DIR  # pre-POSIX archives mark directories by the trailing slash
        key = clean(raw_name, self.where)
        # GNU long names and base-256 numbers are rewritten as PAX, the portable form.
        verbatim = (
            not sparse
            and self._long_name is None
            and self._long_link is None
            and not (header[108] | header[116] | header[124] | header[136]) & 0x80
            and _is_verbatim_name(raw_name, key)
        )
        link = None
        if kind == LNK:
            if "linkpath" in pax:
                raw_link = _text(pax["linkpath"])
            elif self._long_link is not None:
                raw_link = _text(self._long_link)
            else:
                raw_link = _text(header[157:257].split(b"\0", 1)[0])
            link = clean(raw_link, self.where)
            verbatim = verbatim and raw_link == link
        if kind in (LNK, SYM, CHR, BLK, DIR, FIFO):
            size = 0  # header-only types carry no data, whatever the size field says
        data = self._next + BLOCK
        end = data + (size + BLOCK - 1) // BLOCK * BLOCK
        self.members.append(
            Member(key, REG if kind == b"S" else kind, start, data, size, end, link, verbatim)
        )
        self._next = end
        self._start = None
        self._pax = {}
        self._long_name = self._long_link = None
