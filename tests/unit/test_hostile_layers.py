"""Hostile layers: one reading of a header, the strictest one, and only what was read is
written. Each test builds its hostile bytes by hand (tests/hostile.py)."""

import io
import tarfile

import pytest

from squash.errors import InvalidLayer
from tests.hostile import header, member, padded, pax, python_names, tar
from tests.layertar import layer, listing, squash
from tests.layertar import member as spec


def members_of(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), errors="surrogateescape") as t:
        return t.getmembers()


def refused(*layers: bytes) -> str:
    with pytest.raises(InvalidLayer) as caught:
        squash(*layers)
    return str(caught.value)


# -- F1: numeric fields readers disagree on


def test_a_size_field_with_a_leading_nul_is_refused() -> None:
    """GNU tar and Go's archive/tar read b"\\0" b"00000001000" as 512 bytes, Python's
    tarfile as 0: the next 512 bytes are a member for some readers and data for others."""
    smuggled = header("etc/smuggled")
    data = tar(header("a", size=b"\x0000000001000"), smuggled)
    assert [n for n, _, _ in python_names(data)] == ["a", "etc/smuggled"]  # the mismatch
    message = refused(data)
    assert message == ("layer 0: malformed size field b'\\x0000000001000' at byte 0")


@pytest.mark.parametrize(
    ("field", "block"),
    [
        ("mode", header("f", mode=b"000644\x001")),  # a digit after the terminator
        ("uid", header("f", uid=b"\x00000001")),
        ("mtime", header("f", mtime=b"1234567x")),
        ("size", header("f", size=b"\xff" + bytes(11))),  # GNU's negative base-256
    ],
    ids=["mode", "uid", "mtime", "size"],
)
def test_numbers_readers_could_read_differently_are_refused(field: str, block: bytes) -> None:
    assert f"malformed {field} field" in refused(tar(block))


def test_octal_with_leading_spaces_and_base_256_are_read_and_written_plainly() -> None:
    data = tar(
        header("f", uid=b"   1750\0", gid=b"\x80" + (70000).to_bytes(7, "big"), mode=b" 755 \0")
    )
    out = squash(data)
    (info,) = members_of(out)
    assert (info.uid, info.gid, info.mode) == (0o1750, 70000, 0o755)
    block = out[:512]
    assert block[108:116] == b"0001750\0" and block[116:124] == b"0210560\0"


def test_a_regular_file_named_like_a_directory_is_refused() -> None:
    """Type '0' with a trailing slash: GNU tar makes a directory, Go and tarfile a file."""
    assert "regular file 'd/' is named like a directory" in refused(tar(header("d/", type=b"0")))


def test_an_old_style_regular_file_named_like_a_directory_is_a_directory() -> None:
    """Type NUL with a trailing slash: a directory for every reader (pre-POSIX tars)."""
    out = listing(squash(tar(header("d/", type=b"\0"))))
    assert out["d"][0] == tarfile.DIRTYPE


def test_a_prefix_in_a_gnu_header_is_refused() -> None:
    """GNU keeps atime there; tarfile would read it as the name's prefix."""
    block = header("f", magic=b"ustar ", version=b" \0", prefix=b"evil")
    assert "GNU header with data where POSIX keeps" in refused(tar(block))


# -- F2: PAX global headers, and PAX blocks readers read differently


def test_a_pax_global_header_is_refused() -> None:
    data = tar(pax({"path": b"../../escaped"}, type=b"g"), member("f", b"x"))
    assert "PAX global header" in refused(data)


def test_two_pax_headers_for_one_member_are_refused() -> None:
    """Go takes the last one, tarfile lets the first win."""
    data = tar(pax({"path": b"one"}), pax({"path": b"two"}), member("f", b"x"))
    assert "two PAX headers for one member" in refused(data)


def test_a_pax_and_a_gnu_long_name_for_one_member_are_refused() -> None:
    long_name = header("././@LongLink", length=4, type=b"L") + padded(b"gnu\0")
    data = tar(pax({"path": b"pax"}), long_name, member("f", b"x"))
    assert "two long names for one member" in refused(data)


@pytest.mark.parametrize(
    "body",
    [
        b"11 path=a\n\0\0\0",  # padding after the records: Go refuses, tarfile stops there
        b"9 size=1_0\n",  # Python's int() reads 10
        b"7 uid= 5\n",
        b"6 path\n",
    ],
)
def test_malformed_pax_records_are_refused(body: bytes) -> None:
    block = header("././@PaxHeader", length=len(body), type=b"x") + padded(body)
    assert "PAX" in refused(tar(block, member("f", b"x")))


def test_a_header_after_a_single_end_of_archive_block_is_refused() -> None:
    """Go refuses it, GNU tar and tarfile stop at the zero block."""
    data = member("a", b"1") + bytes(512) + member("b", b"2") + bytes(1024)
    assert "a header after the end-of-archive block" in refused(data)


# -- F11: names that clean to the root


@pytest.mark.parametrize("name", ["x/..", ".", "a/b/../.."])
def test_a_non_directory_named_like_the_root_is_refused(name: str) -> None:
    """`x/..` as a regular file became a file named "." that hid every lower layer."""
    assert "named like the root directory" in refused(tar(header(name, type=b"0")))
    assert "named like the root directory" in refused(tar(header(name, type=b"2")))


def test_a_directory_named_like_the_root_is_the_root() -> None:
    out = squash(tar(header("x/..", type=b"5", mode=b"0000700\0")))
    (info,) = members_of(out)
    assert (info.name, info.mode) == (".", 0o700)


# -- only what was read is written


def test_headers_are_written_anew_from_what_was_read() -> None:
    """A GNU long name becomes a PAX path; fields the reader dropped (atime, comment,
    unknown vendor records) are not passed on; xattrs and sub-second mtimes are."""
    long = "d/" + "n" * 150
    long_name = header("././@LongLink", length=len(long) + 1, type=b"L") + padded(
        long.encode() + b"\0"
    )
    records = {
        "atime": b"1700000001.5",
        "comment": b"hello",
        "VENDOR.thing": b"x",
        "mtime": b"1700000000.123456789",
        "SCHILY.xattr.user.k": b"\x00\xffbinary",
    }
    data = tar(header("d", type=b"5"), long_name, pax(records), member("ignored", b"data"))
    out = squash(data)
    info = members_of(out)[-1]
    assert info.name == long
    assert info.pax_headers["mtime"] == "1700000000.123456789"
    assert info.pax_headers["SCHILY.xattr.user.k"] == "\x00\udcffbinary"
    assert not {"atime", "comment", "VENDOR.thing"} & set(info.pax_headers)
    assert b"././@LongLink" not in out


def test_the_output_of_a_python_written_layer_is_what_tarfile_wrote() -> None:
    """For a layer tarfile wrote, writing headers anew changes no byte."""
    data = layer(
        spec("etc", "dir"), spec("etc/f", data=b"x" * 700), spec("etc/l", "symlink", linkname="f")
    )
    assert squash(data) == data[: len(squash(data))]
