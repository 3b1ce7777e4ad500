"""Hand-made layers (what umoci never writes) squash to the root filesystem umoci unpacks.

Every layer here is written byte by byte (helpers.LayerBuilder). Each test first checks
that umoci's unpack of the multi-layer source is what the OCI layer rules say (so a
failure of that check is about umoci or the scenario, not squashd), then compares it
with the squashed image. Parent directories are always written explicitly: umoci gives a
directory it has to invent the current time as mtime, which no comparison can match.

Left to the engine's unit tests, because umoci (the judge here) cannot take part:
- a bare `.wh.` entry and a `..` escaping the root are errors (test_cli_errors.py checks
  the CLI's side of it);
- GNU sparse entries (tarfile cannot write them);
- layers bigger than a test should write (sizes over 8 GiB, which need PAX sizes).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from .helpers import (
    COMPRESSIONS,
    T0,
    LayerBuilder,
    Node,
    compare_trees,
    handmade_roundtrip,
    snapshot,
)

pytestmark = pytest.mark.integration

T1, T2, T3 = T0 + 1000, T0 + 2000, T0 + 3000

# security.capability, VFS_CAP_REVISION_2, effective, permitted = cap_net_bind_service
CAP_NET_BIND_SERVICE = bytes.fromhex("0100000200040000000000000000000000000000")


@pytest.fixture(params=COMPRESSIONS)
def compression(request) -> str:
    """The squashed layer's compression."""
    return request.param


def p(name: str | bytes) -> str:
    """A rootfs-relative name as a path string (bytes names via surrogate escapes)."""
    return os.fsdecode(name) if isinstance(name, bytes) else name


def children(fs: Path, directory: str | bytes) -> list[str]:
    return sorted(os.listdir(fs / p(directory)))


def content(fs: Path, name: str | bytes) -> bytes:
    return (fs / p(name)).read_bytes()


def node(fs: Path, name: str | bytes) -> Node:
    tree = snapshot(fs)
    key = os.fsencode(p(name))
    assert key in tree, f"{name!r} missing from {fs}"
    return tree[key]


def test_opaque_directories(tools, work: Path, compression: str) -> None:
    l1 = (
        LayerBuilder(mtime=T1)
        .dir("a")
        .file("a/x", b"lower x")
        .dir("a/sub")
        .file("a/sub/y", b"lower y")
        .dir("c")
        .file("c/old", b"old")
        .dir("d", mode=0o711)
        .file("d/old", b"old")
        .dir("keep")
        .file("keep/k", b"k")
    )
    l2 = (
        LayerBuilder(mtime=T2)
        # marker after the directory, before the same-layer child
        .dir("a", mode=0o700)
        .opaque("a")
        .file("a/new", b"new")
        # marker after the same-layer child
        .dir("c", mode=0o750)
        .file("c/new-before", b"before the marker")
        .opaque("c")
        # no directory entry in this layer: d keeps its lower attributes
        .opaque("d")
        .file("d/n", b"n")
        # opaque directory with nothing below it
        .dir("e")
        .opaque("e")
        .file("e/z", b"z")
    )
    l3 = LayerBuilder(mtime=T3).file("a/third", b"added above the opaque layer")
    rt = handmade_roundtrip(work, [l1, l2, l3], compression=compression, check=False)

    fs = rt.original
    assert children(fs, "a") == ["new", "third"]
    assert children(fs, "c") == ["new-before"]
    assert children(fs, "d") == ["n"]
    assert children(fs, "e") == ["z"]
    assert children(fs, "keep") == ["k"]
    assert node(fs, "a").mode == 0o700
    assert node(fs, "a").mtime_ns == T2 * 10**9
    assert node(fs, "d").mode == 0o711
    rt.assert_ok()


def test_whiteout_beside_readd_in_the_same_layer(tools, work: Path, compression: str) -> None:
    """A whiteout hides lower entries only, never the same layer's, in either order."""
    l1 = (
        LayerBuilder(mtime=T1)
        .file("f1", b"old 1")
        .file("f2", b"old 2")
        .dir("g1")
        .file("g1/lower", b"lower")
        .dir("g2")
        .file("g2/lower", b"lower")
        .file("keepme", b"keep")
    )
    l2 = (
        LayerBuilder(mtime=T2)
        .whiteout("f1")
        .file("f1", b"new 1")
        .file("f2", b"new 2")
        .whiteout("f2")
        .whiteout("g1")
        .dir("g1", mode=0o700)
        .file("g1/upper", b"upper")
        .dir("g2", mode=0o700)
        .file("g2/upper", b"upper")
        .whiteout("g2")
        # a whiteout of a path that only this layer has
        .file("f3", b"new 3")
        .whiteout("f3")
    )
    rt = handmade_roundtrip(work, [l1, l2], compression=compression, check=False)

    fs = rt.original
    assert sorted(os.listdir(fs)) == ["f1", "f2", "f3", "g1", "g2", "keepme"]
    assert content(fs, "f1") == b"new 1"
    assert content(fs, "f2") == b"new 2"
    assert content(fs, "f3") == b"new 3"
    assert children(fs, "g1") == ["upper"]
    assert children(fs, "g2") == ["upper"]
    # umoci removes g2's lower child after creating g2 and does not restore g2's mtime,
    # so its unpack shows the time of the unpack there; the layer says T2.
    assert node(rt.squashed, "g2").mtime_ns == T2 * 10**9
    rt.assert_ok(umoci_artifacts=["'g2': mtime "])


def test_whiteout_names(tools, work: Path, compression: str) -> None:
    """`.wh.foo` hides foo only (not foobar); `a.wh.b` is a file; aufs markers are skipped."""
    l1 = (
        LayerBuilder(mtime=T1)
        .file("foo", b"foo")
        .file("foobar", b"foobar")
        .dir("foo.d")
        .file("foo.d/x", b"x")
        .file("a.wh.b", b"an ordinary file")
        .dir("dir1")
        .file("dir1/foo", b"nested foo")
    )
    l2 = LayerBuilder(mtime=T2).whiteout("foo").file(".wh..wh.plnk", b"").file(".wh..wh.aufs", b"")
    rt = handmade_roundtrip(work, [l1, l2], compression=compression, check=False)

    fs = rt.original
    assert sorted(os.listdir(fs)) == ["a.wh.b", "dir1", "foo.d", "foobar"]
    assert children(fs, "dir1") == ["foo"]
    rt.assert_ok()


def test_replacing_directories_files_and_symlinks(tools, work: Path, compression: str) -> None:
    """A higher non-directory hides the lower subtree; a re-created directory only has
    its new children."""
    l1 = (
        LayerBuilder(mtime=T1)
        .dir("x")
        .file("x/child", b"c")
        .dir("x/sub")
        .file("x/sub/grand", b"g")
        .dir("s")
        .file("s/a", b"a")
        .file("f", b"a file")
        .dir("r")
        .file("r/old", b"old")
    )
    l2 = (
        LayerBuilder(mtime=T2)
        .file("x", b"now a file")
        .symlink("s", "/elsewhere")
        .dir("f", mode=0o750)
        .file("f/inner", b"inner")
        .whiteout("r")
    )
    l3 = (
        LayerBuilder(mtime=T3)
        .whiteout("x")
        .dir("x", mode=0o711)
        .file("x/newchild", b"new")
        .dir("r")
        .file("r/new", b"new")
    )
    rt = handmade_roundtrip(work, [l1, l2, l3], compression=compression, check=False)

    fs = rt.original
    assert children(fs, "x") == ["newchild"]
    assert node(fs, "x").mode == 0o711
    assert node(fs, "s").kind == "symlink"
    assert children(fs, "f") == ["inner"]
    assert children(fs, "r") == ["new"]
    rt.assert_ok()


def test_hard_links_whose_target_goes_away(tools, work: Path, compression: str) -> None:
    """A link keeps the content its target had in the link's own layer (merge rule 8)."""
    payload = b"linked content\n" * 100
    l1 = (
        LayerBuilder(mtime=T1)
        .dir("data")
        .file("data/orig", payload, mode=0o640, uid=7, gid=8)
        .hardlink("data/l1", "data/orig")
        .dir("other")
        .hardlink("other/l2", "data/orig")
        .file("x", b"X1")
        .hardlink("y", "x")
        .dir("d")
        .file("d/t", b"T")
        .dir("e")
        .hardlink("e/h", "d/t")
        .dir("o")
        .file("o/t", b"O")
        .dir("q")
        .hardlink("q/h", "o/t")
        .dir("k")
        .file("k/t", b"K")
        .hardlink("k/h", "k/t")
    )
    l2 = (
        LayerBuilder(mtime=T2)
        .whiteout("data/orig")  # deleted
        .file("x", b"X2")  # replaced
        .whiteout("d")  # its directory deleted
        .dir("o")
        .opaque("o")  # hidden by an opaque directory
    )
    rt = handmade_roundtrip(work, [l1, l2], compression=compression, check=False)

    fs = rt.original
    assert not (fs / "data/orig").exists()
    l1_node, l2_node = node(fs, "data/l1"), node(fs, "other/l2")
    assert l1_node.ino == l2_node.ino, "data/l1 and other/l2 should still be one inode"
    assert (l1_node.mode, l1_node.uid, l1_node.gid) == (0o640, 7, 8)
    assert content(fs, "data/l1") == payload
    assert content(fs, "x") == b"X2"
    assert content(fs, "y") == b"X1"
    assert node(fs, "x").ino != node(fs, "y").ino
    assert not (fs / "d").exists()
    assert content(fs, "e/h") == b"T"
    assert children(fs, "o") == []
    assert content(fs, "q/h") == b"O"
    assert node(fs, "k/t").ino == node(fs, "k/h").ino
    rt.assert_ok()


def test_hard_link_to_a_lower_layer(tools, work: Path, compression: str) -> None:
    """Links to a file of a lower layer; the target is then deleted or replaced above."""
    l1 = LayerBuilder(mtime=T1).dir("a").file("a/t", b"T1").file("a/u", b"U1").file("a/v", b"V1")
    l2 = (
        LayerBuilder(mtime=T2)
        .dir("b")
        .hardlink("b/h", "a/t")
        .hardlink("b/i", "a/u")
        .hardlink("b/j", "a/v")
    )
    l3 = (
        LayerBuilder(mtime=T3)
        .whiteout("a/t")  # deleted above the link
        .file("a/u", b"U2")  # replaced above the link
    )
    rt = handmade_roundtrip(work, [l1, l2, l3], compression=compression, check=False)

    fs = rt.original
    assert sorted(os.listdir(fs / "a")) == ["u", "v"]
    assert content(fs, "b/h") == b"T1"
    assert content(fs, "a/u") == b"U2", "umoci wrote through the hard link"
    assert content(fs, "b/i") == b"U1", "umoci wrote through the hard link"
    assert node(fs, "a/v").ino == node(fs, "b/j").ino
    rt.assert_ok()


def test_xattrs(tools, work: Path, compression: str) -> None:
    """PAX SCHILY.xattr.* records, binary values and security.capability survive."""
    l1 = (
        LayerBuilder(mtime=T1)
        .file(
            "f",
            b"with xattrs",
            mode=0o755,
            xattrs={
                "user.foo": "bar",
                "user.bin": b"\xff\x00\x01",
                "security.capability": CAP_NET_BIND_SERVICE,
            },
        )
        .dir("d", xattrs={"user.dir": "d1"})
        .file("g", b"loses its xattrs", xattrs={"user.a": "1"})
        .file("h", b"keeps its xattrs", xattrs={"user.keep": "k"})
    )
    l2 = (
        LayerBuilder(mtime=T2)
        .file("g", b"replaced without xattrs")
        .dir("d", xattrs={"user.dir": "d2"})
    )
    rt = handmade_roundtrip(work, [l1, l2], compression=compression, check=False)

    fs = rt.original
    expected_f = {
        "security.capability": CAP_NET_BIND_SERVICE,
        "user.bin": b"\xff\x00\x01",
        "user.foo": b"bar",
    }
    assert dict(node(fs, "f").xattrs) == expected_f, (
        "umoci could not set these xattrs on this machine, so the squashed side cannot be "
        "judged for them"
    )
    assert dict(node(fs, "d").xattrs) == {"user.dir": b"d2"}
    assert dict(node(fs, "g").xattrs) == {}
    assert dict(node(fs, "h").xattrs) == {"user.keep": b"k"}
    rt.assert_ok()


def test_special_files_modes_and_ids(tools, work: Path, compression: str) -> None:
    """FIFOs, devices, setuid/setgid/sticky, big ids (ustar, PAX, GNU base-256), symlinks
    (dangling, long target), sub-second PAX mtimes, sizes around the 512-byte block."""
    long_target = "/" + "/".join(["t" * 50] * 6)  # 306 bytes
    l1 = (
        LayerBuilder(mtime=T1)
        .dir("dev")
        .fifo("dev/fifo", mode=0o640)
        .chardev("dev/null", 1, 3, mode=0o666)
        .chardev("dev/tty", 5, 0, mode=0o620, gid=5)
        .blockdev("dev/loop0", 7, 0, mode=0o660, gid=6)
        .chardev("dev/becomes-file", 1, 5)
        .dir("bin")
        .file("bin/suid", b"suid", mode=0o4755)
        .file("bin/sgid", b"sgid", mode=0o2755)
        .file("bin/all", b"all special bits", mode=0o7755)
        .file("bin/nothing", b"no permissions", mode=0o000)
        .dir("shared", mode=0o2775, gid=100)
        .dir("tmp", mode=0o1777)
        .dir("ids")
        .file("ids/ustar", b"2000000 fits ustar octal", uid=2000000, gid=2000000)
        .file("ids/pax", b"needs PAX", uid=4000000, gid=4000001, uname="big", gname="big")
        .file("ids/gnu", b"GNU base-256", uid=5000000, gid=6000000, fmt=tarfile.GNU_FORMAT)
        .dir("links")
        .symlink("links/dangling", "/nowhere/at/all")
        .symlink("links/relative", "../bin/suid")
        .symlink("links/long", long_target)
        .symlink("links/dir", "../tmp")
        .dir("sizes")
        .file("sizes/empty", b"")
        .file("sizes/one", b"1")
        .file("sizes/511", b"a" * 511)
        .file("sizes/512", b"b" * 512)
        .file("sizes/513", b"c" * 513)
        .file("sizes/64k", bytes(range(256)) * 256)
        .file("frac", b"sub-second mtime", pax={"mtime": f"{T1}.123456789"})
        .dir("fracdir", pax={"mtime": f"{T1}.5"})
    )
    l2 = (
        LayerBuilder(mtime=T2)
        .dir("dev")
        .fifo("dev/fifo", mode=0o600)  # attributes change
        .file("dev/becomes-file", b"was a device")
        .file("bin/sgid", b"sgid", mode=0o755)  # special bit dropped above
    )
    rt = handmade_roundtrip(work, [l1, l2], compression=compression, check=False)

    fs = rt.original
    assert node(fs, "dev/fifo").kind == "fifo" and node(fs, "dev/fifo").mode == 0o600
    null = node(fs, "dev/null")
    assert (null.kind, null.rdev) == ("char device", (1, 3)), (
        "umoci could not create a character device here"
    )
    loop = node(fs, "dev/loop0")
    assert (loop.kind, loop.rdev) == ("block device", (7, 0)), (
        "umoci could not create a block device here"
    )
    assert node(fs, "dev/becomes-file").kind == "regular file"
    assert node(fs, "bin/suid").mode == 0o4755
    assert node(fs, "bin/all").mode == 0o7755
    assert node(fs, "bin/sgid").mode == 0o755
    assert node(fs, "shared").mode == 0o2775
    assert node(fs, "tmp").mode == 0o1777
    assert (node(fs, "ids/ustar").uid, node(fs, "ids/ustar").gid) == (2000000, 2000000)
    assert (node(fs, "ids/pax").uid, node(fs, "ids/pax").gid) == (4000000, 4000001)
    assert (node(fs, "ids/gnu").uid, node(fs, "ids/gnu").gid) == (5000000, 6000000)
    assert node(fs, "links/long").target == long_target.encode()
    assert node(fs, "frac").mtime_ns == T1 * 10**9 + 123456789
    assert node(fs, "fracdir").mtime_ns == T1 * 10**9 + 500_000_000
    rt.assert_ok()


def test_long_names(tools, work: Path, compression: str) -> None:
    """Names and link targets over 100 bytes: PAX records, the ustar prefix field, GNU
    long-name/long-link entries; paths over 255 bytes."""
    d1 = "long-" + "d" * 95  # 100 bytes
    d2 = d1 + "/" + "e" * 120
    pax_name = f"{d1}/{'p' * 150}"
    ustar_name = f"{d1}/{'u' * 90}"  # prefix field d1, name field u*90
    gnu_name = f"{d2}/{'g' * 200}"  # > 255 bytes, GNU ././@LongLink
    deep = f"{d2}/{'z' * 200}"
    l1 = (
        LayerBuilder(mtime=T1)
        .dir(d1)
        .dir(d2)
        .file(pax_name, b"pax")
        .file(ustar_name, b"ustar prefix", fmt=tarfile.USTAR_FORMAT)
        .file(gnu_name, b"gnu", fmt=tarfile.GNU_FORMAT)
        .file(deep, b"to be deleted")
        .symlink(f"{d1}/sym-pax", "/" + "s" * 200)
        .symlink(f"{d1}/sym-gnu", "/" + "k" * 200, fmt=tarfile.GNU_FORMAT)
        .hardlink(f"{d2}/hl-pax", pax_name)
        .hardlink(f"{d2}/hl-gnu", gnu_name, fmt=tarfile.GNU_FORMAT)
    )
    l2 = (
        LayerBuilder(mtime=T2)
        .whiteout(deep)  # the whiteout's own name is long
        .file(ustar_name, b"modified", fmt=tarfile.GNU_FORMAT)
    )
    rt = handmade_roundtrip(work, [l1, l2], compression=compression, check=False)

    fs = rt.original
    assert content(fs, pax_name) == b"pax"
    assert content(fs, ustar_name) == b"modified"
    assert content(fs, gnu_name) == b"gnu"
    assert not (fs / deep).exists()
    assert node(fs, f"{d2}/hl-pax").ino == node(fs, pax_name).ino
    assert node(fs, f"{d2}/hl-gnu").ino == node(fs, gnu_name).ino
    assert node(fs, f"{d1}/sym-gnu").target == b"/" + b"k" * 200
    rt.assert_ok()


def test_non_utf8_names(tools, work: Path, compression: str) -> None:
    """Names and link targets that are not UTF-8 stay byte-exact, in ustar, GNU and PAX
    headers (Python writes PAX ones with hdrcharset=BINARY)."""
    l1 = (
        LayerBuilder(mtime=T1)
        .dir(b"lat\xe9n")  # PAX path
        .file(b"lat\xe9n/caf\xe9", b"latin-1 name", fmt=tarfile.USTAR_FORMAT)
        .file(b"\xff\xfe", b"gnu raw", fmt=tarfile.GNU_FORMAT)
        .symlink(b"ln\xe9", b"target\xe9")
        .hardlink(b"hl\xe9", b"lat\xe9n/caf\xe9")
        .file("naïve-ü.txt", b"valid UTF-8, not ASCII")
        .file(b"gone\xe9", b"to be deleted", fmt=tarfile.USTAR_FORMAT)
        .file(b"x" * 120 + b"\xe9", b"long and not UTF-8")
    )
    l2 = LayerBuilder(mtime=T2).whiteout(b"gone\xe9").file("naïve-ü.txt", b"modified")
    rt = handmade_roundtrip(work, [l1, l2], compression=compression, check=False)

    fs = rt.original
    names = sorted(os.listdir(os.fsencode(fs)))
    assert names == sorted(
        [
            b"lat\xe9n",
            b"\xff\xfe",
            b"ln\xe9",
            b"hl\xe9",
            "naïve-ü.txt".encode(),
            b"x" * 120 + b"\xe9",
        ]
    )
    assert content(fs, b"lat\xe9n/caf\xe9") == b"latin-1 name"
    assert node(fs, b"ln\xe9").target == b"target\xe9"
    assert node(fs, b"hl\xe9").ino == node(fs, b"lat\xe9n/caf\xe9").ino
    assert content(fs, "naïve-ü.txt") == b"modified"
    rt.assert_ok()


def test_repeated_paths_empty_and_duplicate_layers(tools, work: Path, compression: str) -> None:
    """The last entry of a repeated path wins; empty layers, a zero-byte blob and the same
    layer twice are fine (merge rules 6 and 10)."""
    base = LayerBuilder(mtime=T1).dir("etc").file("etc/base", b"base")
    repeats = (
        LayerBuilder(mtime=T2)
        .file("f", b"first", mode=0o644)
        .file("f", b"second", mode=0o600)
        .dir("d", mode=0o755)
        .file("d/child", b"child")
        .dir("d", mode=0o700)
        .symlink("s", "first")
        .symlink("s", "second")
    )
    layers = [base, LayerBuilder(), b"", base, repeats, LayerBuilder()]
    comps = ["gzip", "none", "none", "gzip", "gzip", "gzip"]
    rt = handmade_roundtrip(
        work, layers, compression=compression, input_compression=comps, check=False
    )

    fs = rt.original
    assert content(fs, "f") == b"second" and node(fs, "f").mode == 0o600
    assert node(fs, "d").mode == 0o700 and children(fs, "d") == ["child"]
    assert node(fs, "s").target == b"second"
    assert content(fs, "etc/base") == b"base"
    rt.assert_ok()


def test_name_cleaning(tools, work: Path, compression: str) -> None:
    """`./a`, `/a`, `a/` and `a//b` name the same path (merge rule 4)."""
    l1 = (
        LayerBuilder(mtime=T1)
        .dir("./", mode=0o755)
        .dir("./dot/")
        .file("./dot/x", b"x")
        .file("./dot/y", b"y")
        .dir("/abs/")
        .file("/abs/file", b"1")
        .dir("b")
        .file("b//c", b"c1")
    )
    l2 = (
        LayerBuilder(mtime=T2)
        .file("dot/.wh.x", b"")
        .file("abs//file", b"2")
        .file("./b/./c", b"c2")
        .dir("/dot", mode=0o700)
    )
    rt = handmade_roundtrip(work, [l1, l2], compression=compression, check=False)

    fs = rt.original
    assert children(fs, "dot") == ["y"]
    assert node(fs, "dot").mode == 0o700
    assert content(fs, "abs/file") == b"2"
    assert content(fs, "b/c") == b"c2"
    rt.assert_ok()


@pytest.mark.parametrize(
    "input_compression",
    [("none", "gzip", "zstd"), ("zstd", "zstd", "zstd"), ("none", "none", "none")],
    ids=["mixed", "zstd", "none"],
)
def test_input_layer_compressions(tools, work: Path, input_compression: tuple[str, ...]) -> None:
    """Layers stored as tar, tar+gzip and tar+zstd, mixed in one image."""
    l1 = (
        LayerBuilder(mtime=T1)
        .dir("app")
        .file("app/a", b"a" * 5000)
        .file("app/b", b"b")
        .hardlink("app/a-link", "app/a")
    )
    l2 = LayerBuilder(mtime=T2).whiteout("app/b").file("app/c", bytes(range(256)) * 40)
    l3 = LayerBuilder(mtime=T3).dir("app", mode=0o700).opaque("app").file("app/d", b"d")
    rt = handmade_roundtrip(
        work,
        [l1, l2, l3],
        compression="gzip",
        input_compression=list(input_compression),
        check=False,
    )
    assert children(rt.original, "app") == ["d"]
    rt.assert_ok()


def test_compare_trees_reports_each_kind_of_difference(work: Path) -> None:
    """The judge itself: every kind of difference shows up, readably."""
    trees = []
    for side in ("a", "b"):
        fs = work / side
        (fs / "d").mkdir(parents=True)
        (fs / "d/f").write_bytes(b"same")
        (fs / "mode").write_bytes(b"m")
        (fs / "owner").write_bytes(b"o")
        (fs / "data").write_bytes(b"data")
        (fs / "x").write_bytes(b"x")
        (fs / "t").write_bytes(b"t")
        os.link(fs / "t", fs / "t-link")
        os.symlink("target", fs / "sym")
        os.mkfifo(fs / "kind")
        os.utime(fs / "d", (T0, T0))
        os.utime(fs, (T0, T0))
        trees.append(fs)
    a, b = trees
    os.chmod(b / "mode", 0o4755)
    os.chown(b / "owner", 5, 6)
    (b / "data").write_bytes(b"DATA")
    os.setxattr(b / "x", "user.k", b"v")
    os.unlink(b / "sym")
    os.symlink("other", b / "sym")
    os.unlink(b / "kind")
    (b / "kind").write_bytes(b"")
    (b / "t-link").unlink()
    (b / "t-link").write_bytes(b"t")
    (b / "extra").write_bytes(b"")
    (b / "d/f").unlink()
    os.utime(b / "d", (T0 + 1, T0 + 1))
    os.utime(b, (T0, T0))
    os.utime(a, (T0, T0))

    diffs = "\n".join(compare_trees(a, b))
    for expected in (
        "'d/f': only in original",
        "'extra': only in squashed",
        "'mode': mode original=0644 squashed=4755",
        "'owner': uid:gid original=0:0 squashed=5:6",
        "'data': content",
        "'x': xattrs",
        "'sym': symlink target original=b'target' squashed=b'other'",
        "'kind': type original=fifo squashed=regular file",
        "'d': mtime",
        "'t': hard links original={'t', 't-link'} squashed={'t'}",
    ):
        assert expected in diffs, f"{expected!r} not reported in:\n{diffs}"
    assert compare_trees(a, a) == []
