"""Differential: whatever header squashd's reader accepts, Python's tarfile and GNU tar
read the same way, from the input and from squashd's output.

Hypothesis builds one member's header group from tricky field encodings (leading NULs
and spaces, digits after terminators, base-256, odd magics and prefixes, PAX records,
GNU long names, names with dots and slashes, non-UTF-8 bytes). If squashd refuses it,
fine; if it accepts it, its reading must be tarfile's and GNU tar's reading of the same
bytes, and the header it writes must read back as the same fields everywhere. The long
run of the same idea, over random layer bytes, is `make fuzz` (tests/fuzz/).
"""

from __future__ import annotations

import io
import os
import re
import stat
import subprocess
import tarfile
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from squash.errors import InvalidLayer
from squash.merge.layerpass import Layers
from squash.merge.tarheader import HeaderReader
from tests.hostile import header, padded, pax, tar
from tests.integration.helpers import require_tool
from tests.layertar import squash

TYPES = [b"0", b"\0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"Z"]
COMPONENTS = ["a", "b", "é", "\udcff", ".", "..", "", "n" * 60, ".wh.x", "x y"]
MAGICS = [
    {"magic": b"ustar\0", "version": b"00"},
    {"magic": b"ustar ", "version": b" \0"},
    {"magic": b"", "version": b""},
    {"magic": b"ustar\0", "version": b"  "},
]


def numbers(width: int, value: int) -> st.SearchStrategy[bytes]:
    digits = b"%o" % value
    return st.sampled_from(
        [
            x[:width]
            for x in [
                b"%0*o\0" % (width - 1, value),
                b" " * 2 + digits + b"\0",
                digits.rjust(width, b"0")[-width:],
                digits + b" ",
                b"\0" + digits,
                digits + b"\0" + b"7",
                b"\x80" + value.to_bytes(width - 1, "big"),
                b"",
                b" " * width,
                b"8" + digits,
            ]
        ]
    )


@st.composite
def names(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=4))
    text = "/".join(parts)
    text = draw(st.sampled_from(["", "/", "./"])) + text + draw(st.sampled_from(["", "/"]))
    return text.encode("utf-8", "surrogateescape")


@st.composite
def groups(draw: st.DrawFn) -> bytes:
    """One member's header group (PAX, GNU long name, header) and its data."""
    kind = draw(st.sampled_from(TYPES))
    data = draw(st.sampled_from([b"", b"x", b"y" * 600])) if kind in (b"0", b"\0", b"7") else b""
    fields: dict[str, bytes] = dict(draw(st.sampled_from(MAGICS)))
    for field, width, value in (("mode", 8, 0o644), ("uid", 8, 1000), ("gid", 8, 70),
                                ("mtime", 12, 1_700_000_000)):  # fmt: skip
        if draw(st.booleans()):
            fields[field] = draw(numbers(width, value))
    if draw(st.booleans()):
        fields["size"] = draw(numbers(12, len(data)))
    if kind in (b"3", b"4"):
        fields["devmajor"] = draw(numbers(8, 1))
        fields["devminor"] = draw(numbers(8, 3))
    if kind in (b"1", b"2"):
        fields["linkname"] = draw(names())[:100]
    if draw(st.booleans()):
        fields["uname"] = draw(st.sampled_from([b"root", b"r\xc3\xa9", b"", b"u" * 32]))
    if draw(st.integers(0, 4)) == 0:
        fields["prefix"] = draw(names())[:155]
    name = draw(names())
    before = b""
    if draw(st.integers(0, 3)) == 0:
        records = draw(
            st.dictionaries(
                st.sampled_from(["path", "linkpath", "size", "uid", "mtime", "comment",
                                 "SCHILY.xattr.user.a", "atime", "uname"]),
                st.sampled_from([b"p", b"12", b"1_2", b" 3", b"1700000000.5", b"-1",
                                 b"\xff\xfe", b"a\0b", b"n" * 120]),
                max_size=3,
            )
        )  # fmt: skip
        before += pax(records)
    if len(name) > 100 or draw(st.integers(0, 5)) == 0:
        before += header("././@LongLink", length=len(name) + 1, type=b"L", magic=b"ustar ",
                         version=b" \0") + padded(name + b"\0")  # fmt: skip
        name = name[:100]
    return before + header(name[:100], length=len(data), type=kind, **fields) + padded(data)


# -- the three readings


def squashd_reads(group: bytes) -> dict | None:
    """squashd's reading of a member's header group, or None if it refuses it."""
    try:
        fields = HeaderReader().parse(group)
    except InvalidLayer:
        return None
    return fields if isinstance(fields, dict) else None


def python_reads(data: bytes) -> tarfile.TarInfo:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", errors="surrogateescape") as t:
        members = t.getmembers()
    assert len(members) == 1, f"tarfile read {len(members)} members: {members}"
    return members[0]


_GNU_LINE = re.compile(
    r"^(?P<mode>\S{10}) (?P<uid>\d+)/(?P<gid>\d+) +(?P<size>[\d,]+) "
    r"(?P<date>\S+ \S+) (?P<rest>.*)$"
)


def gnu_reads(data: bytes) -> dict:
    """`tar -tv` of one member: mode string, ids, size (or device), mtime, name, link."""
    proc = subprocess.run(
        [require_tool("tar"), "-tv", "--numeric-owner", "--full-time",
         "--quoting-style=escape", "-f", "-"],
        input=data, capture_output=True, env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
        check=False, timeout=30,
    )  # fmt: skip
    lines = proc.stdout.decode("latin-1").splitlines()
    assert proc.returncode == 0 and len(lines) == 1, (
        f"GNU tar did not read one member (exit {proc.returncode}): {lines} {proc.stderr!r}"
    )
    m = _GNU_LINE.match(lines[0])
    assert m, lines[0]
    rest, link = m["rest"], None
    for arrow in (" -> ", " link to "):
        if arrow in rest:
            rest, link = rest.split(arrow, 1)
    when = datetime.strptime(m["date"].split(".")[0], "%Y-%m-%d %H:%M:%S")
    return {
        "mode": m["mode"], "uid": int(m["uid"]), "gid": int(m["gid"]), "size": m["size"],
        "mtime": int(when.replace(tzinfo=UTC).timestamp()),
        "name": _unescape(rest), "link": None if link is None else _unescape(link),
    }  # fmt: skip


def _unescape(text: str) -> bytes:
    return re.sub(rb"\\([0-7]{3}|.)", lambda m: bytes([int(m[1], 8)]) if len(m[1]) == 3
                  else {b"n": b"\n", b"t": b"\t", b"\\": b"\\", b" ": b" "}.get(m[1], m[1]),
                  text.encode("latin-1"))  # fmt: skip


# -- the comparison


def _mode_string(kind: str, mode: int) -> str:
    return stat.filemode({"0": stat.S_IFREG, "1": stat.S_IFREG, "2": stat.S_IFLNK,
                          "3": stat.S_IFCHR, "4": stat.S_IFBLK, "5": stat.S_IFDIR,
                          "6": stat.S_IFIFO}[kind] | (mode & 0o7777))  # fmt: skip


def agree(ours: dict, data: bytes, what: str) -> None:
    """tarfile's and GNU tar's readings of `data` are `ours`."""
    py = python_reads(data)
    name = ours["name"].decode("utf-8", "surrogateescape")
    assert (py.name.rstrip("/"), py.name) == (name.rstrip("/"), py.name if ours["type"] == "5"
                                                else name), what  # fmt: skip
    if ours["type"] == "0":
        assert py.isreg(), what
    else:
        assert py.type == ours["type"].encode(), what
    assert (py.mode & 0o7777, py.uid, py.gid, int(py.mtime)) == (
        ours["mode"] & 0o7777, ours["uid"], ours["gid"], ours["mtime"]), what  # fmt: skip
    assert py.size == (ours["size"] if ours["type"] == "0" else 0), what
    if ours["type"] in "12":
        assert py.linkname.encode("utf-8", "surrogateescape") == ours["link"], what
    if ours["type"] in "34":
        assert (py.devmajor, py.devminor) == (ours["devmajor"], ours["devminor"]), what
    gnu = gnu_reads(data)
    assert gnu["name"].rstrip(b"/") == ours["name"].rstrip(b"/"), what
    gnu_mode = gnu["mode"].replace("C", "-", 1) if gnu["mode"][0] == "C" else gnu["mode"]
    assert gnu_mode == _mode_string(ours["type"], ours["mode"]) or ours["type"] == "1", what
    assert (gnu["uid"], gnu["gid"], gnu["mtime"]) == (ours["uid"], ours["gid"], ours["mtime"]), what
    if ours["type"] in "34":
        assert gnu["size"] == f"{ours['devmajor']},{ours['devminor']}", what
    elif ours["type"] == "0":
        assert gnu["size"] == str(ours["size"]), what
    if ours["type"] == "2":
        assert gnu["link"] == ours["link"], what
    if ours["type"] == "1" and b".." not in ours["link"].split(b"/"):
        # GNU tar shows hard link targets made safe (no leading "/" or "../")
        assert gnu["link"] == (ours["link"].lstrip(b"/") or b"."), what


@settings(max_examples=int(os.environ.get("SQUASHD_DIFFERENTIAL_EXAMPLES", "300")),
          deadline=None, suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(groups())
@example(header("a", size=b"\x0000000001000") + bytes(512))
@example(header("d/", type=b"0"))
@example(header("f", magic=b"ustar ", version=b" \0", prefix=b"atime"))
def test_what_squashd_accepts_everyone_reads_alike(group: bytes) -> None:
    ours = squashd_reads(group)
    data = tar(group)
    if ours is None or not indexed(data):
        return
    agree(ours, data, "the input")
    try:
        out = squash(data)
    except InvalidLayer:
        return  # a merge rule refused it (a hard link to nothing, a root that is a file)
    blocks = split_members(out)
    if not blocks:
        return  # a whiteout or an opaque marker: nothing to write
    written = squashd_reads(blocks[-1])
    assert written is not None, "squashd refuses its own output"
    agree(written, tar(blocks[-1]), "squashd's output")
    same = ("type", "mode", "uid", "gid", "mtime", "size", "devmajor", "devminor", "xattrs")
    if ours["type"] in "34":
        assert {k: written[k] for k in same} == {k: ours[k] for k in same}
    else:
        keep = [k for k in same if k not in ("devmajor", "devminor")]
        assert {k: written[k] for k in keep} == {k: ours[k] for k in keep}
    if ours["type"] == "2":
        assert written["link"] == ours["link"]


def indexed(data: bytes) -> bool:
    """Does squashd's indexer take the whole layer (no merge rules applied)?"""
    index = Layers(lambda _: None, None).index("test")
    try:
        index.feed(data)
        index.finish()
    except InvalidLayer:
        return False
    return True


def python_reads_all(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", errors="surrogateescape") as t:
        return t.getmembers()


def split_members(data: bytes) -> list[bytes]:
    """The header groups (with data) of a tar squashd wrote, in order."""
    reader = HeaderReader()
    out, pos = [], 0
    while pos + 512 <= len(data) and any(data[pos : pos + 512]):
        fields = reader.parse(data[pos:])
        assert isinstance(fields, dict)
        end = pos + fields["group"] + -(-fields["size"] // 512) * 512 * (fields["type"] == "0")
        out.append(data[pos:end])
        pos = end
    return out


@pytest.mark.parametrize("kind", ["0", "2", "3", "5"])
def test_the_writer_reads_back_alike_in_every_reader(kind: str) -> None:
    """A long non-UTF-8 name, a large uid, a sub-second mtime: PAX records, read alike."""
    name = ("d/" + "é" * 60 + "\udcff").encode("utf-8", "surrogateescape")
    records = {"path": name, "uid": b"3000000", "mtime": b"1700000000.25"}
    if kind == "2":
        records["linkpath"] = b"../" + b"t" * 120
    fields = {"devmajor": b"0000001\0", "devminor": b"0000003\0"} if kind in "34" else {}
    group = pax(records) + header("short", length=3 if kind == "0" else 0, type=kind.encode(),
                                  **fields) + (padded(b"abc") if kind == "0" else b"")  # fmt: skip
    ours = squashd_reads(group)
    assert ours is not None and ours["uid"] == 3_000_000 and ours["name"] == name
    agree(ours, tar(group), "the input")
    out = squash(tar(header("d", type=b"5"), group))
    last = split_members(out)[-1]
    written = squashd_reads(last)
    assert written is not None
    agree(written, tar(last), "squashd's output")
