"""Hand-built hostile tar bytes: header blocks with any field set to any bytes (the
checksum made right unless asked otherwise), PAX records, and whole layers of them."""

from __future__ import annotations

import io
import tarfile

BLOCK = 512
#: ustar fields: (offset, length)
FIELDS = {
    "name": (0, 100),
    "mode": (100, 8),
    "uid": (108, 8),
    "gid": (116, 8),
    "size": (124, 12),
    "mtime": (136, 12),
    "chksum": (148, 8),
    "type": (156, 1),
    "linkname": (157, 100),
    "magic": (257, 6),
    "version": (263, 2),
    "uname": (265, 32),
    "gname": (297, 32),
    "devmajor": (329, 8),
    "devminor": (337, 8),
    "prefix": (345, 155),
}


def octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def header(name: bytes | str, *, length: int = 0, type: bytes = b"0", **fields: bytes) -> bytes:
    """A POSIX ustar header block for `length` bytes of data; `fields` set any field to
    raw bytes (NUL-padded to the field's length); the checksum is made right unless given."""
    if isinstance(name, str):
        name = name.encode()
    block = bytearray(BLOCK)
    values = {
        "name": name,
        "mode": octal(0o644 if type != b"5" else 0o755, 8),
        "uid": octal(0, 8),
        "gid": octal(0, 8),
        "size": octal(length, 12),
        "mtime": octal(1_700_000_000, 12),
        "type": type,
        "magic": b"ustar\0",
        "version": b"00",
    }
    values.update(fields)
    for key, value in values.items():
        offset, length = FIELDS[key]
        assert len(value) <= length, (key, value)
        block[offset : offset + len(value)] = value
    if "chksum" not in fields:
        block[148:156] = b" " * 8
        block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def member(name: bytes | str, data: bytes = b"", **fields: bytes) -> bytes:
    """A header and its padded data."""
    return header(name, length=len(data), **fields) + padded(data)


def pax(records: dict[str, bytes], type: bytes = b"x") -> bytes:
    """A PAX extended (or global, type g) header block with its records."""
    body = b""
    for key, value in records.items():
        rest = b" " + key.encode() + b"=" + value + b"\n"
        length = len(rest) + 1
        while len(str(length)) + len(rest) != length:
            length = len(str(length)) + len(rest)
        body += str(length).encode() + rest
    return header("././@PaxHeader", length=len(body), type=type) + padded(body)


def tar(*members: bytes) -> bytes:
    """Members then the end-of-archive blocks."""
    return b"".join(members) + bytes(2 * BLOCK)


def python_names(data: bytes) -> list[tuple[str, str, int]]:
    """(name, type, size) of each member as Python's tarfile reads the bytes."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", errors="surrogateescape") as t:
        return [(m.name, m.type.decode("latin-1"), m.size) for m in t]
