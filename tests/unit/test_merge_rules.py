"""One test (or a few) per merge rule of docs/merge-rules.md, including where peers got it wrong."""

import io
import os
import subprocess
import tarfile

import pytest

from squash.errors import InvalidLayer
from tests.layertar import layer, listing, member, names, squash

F, D = "file", "dir"


def tree(*layers: bytes) -> dict[str, tuple]:
    return listing(squash(*layers))


def content(out: dict, path: str) -> bytes:
    return out[path][1]


# -- rule 1: whiteouts hide lower layers only


def test_whiteout_hides_lower_file_and_subtree() -> None:
    base = layer(member("a", D), member("a/f", data=b"1"), member("d", D), member("d/x", data=b"x"))
    top = layer(member("a", D), member("a/.wh.f"), member(".wh.d"))
    out = tree(base, top)
    assert sorted(out) == ["a"]


@pytest.mark.parametrize("whiteout_first", [True, False])
def test_file_readded_beside_its_own_whiteout_stays(whiteout_first: bool) -> None:
    """docker-squash drops a file re-added next to its own whiteout."""
    base = layer(member("a", D), member("a/f", data=b"old"), member("a/g", data=b"g"))
    pair = [member("a/.wh.f"), member("a/f", data=b"new")]
    top = layer(member("a", D), *(pair if whiteout_first else reversed(pair)))
    out = tree(base, top)
    assert content(out, "a/f") == b"new"
    assert content(out, "a/g") == b"g"


def test_whiteout_in_middle_layer_hides_only_below() -> None:
    bottom = layer(member("f", data=b"bottom"))
    middle = layer(member(".wh.f"))
    top = layer(member("f", data=b"top"))
    assert content(tree(bottom, middle, top), "f") == b"top"
    assert "f" not in tree(bottom, middle)


# -- rule 2: opaque directories


def test_opaque_dir_hides_lower_children_keeps_dir_and_own_children() -> None:
    """Quay ignored opaque markers and leaked the lower children."""
    base = layer(
        member("d", D, mode=0o700),
        member("d/old", data=b"o"),
        member("d/sub", D),
        member("d/sub/deep", data=b"d"),
        member("e", data=b"e"),
    )
    top = layer(member("d", D, mode=0o750), member("d/.wh..wh..opq"), member("d/new", data=b"n"))
    out = tree(base, top)
    assert sorted(out) == ["d", "d/new", "e"]
    assert out["d"][2] == 0o750


def test_opaque_marker_after_children_in_same_layer() -> None:
    base = layer(member("d", D), member("d/old", data=b"o"))
    top = layer(member("d", D), member("d/new", data=b"n"), member("d/.wh..wh..opq"))
    assert sorted(tree(base, top)) == ["d", "d/new"]


# -- rule 3: what is a whiteout


def test_whiteout_is_recognised_by_basename_prefix_only() -> None:
    base = layer(member("b", data=b"keep"), member("a.wh.b", data=b"plain"))
    top = layer(member("x.wh.b", data=b"also plain"))
    out = tree(base, top)
    assert content(out, "b") == b"keep"
    assert content(out, "a.wh.b") == b"plain"
    assert content(out, "x.wh.b") == b"also plain"


def test_bare_whiteout_is_an_error() -> None:
    with pytest.raises(InvalidLayer, match="bare whiteout"):
        squash(layer(member("d", D), member("d/.wh.")))


def test_aufs_metadata_is_skipped_and_no_marker_is_written() -> None:
    base = layer(member("d", D), member("d/x", data=b"x"))
    top = layer(
        member(".wh..wh.plnk", D),
        member(".wh..wh.plnk/123.456", data=b"l"),
        member(".wh..wh.aufs", data=b""),
        member("d", D),
        member("d/.wh..wh..opq"),
        member(".wh.gone"),
    )
    out_names = names(squash(base, top))
    assert out_names == ["d"]


# -- rule 4: names


def test_deleting_foo_never_hides_foobar() -> None:
    base = layer(
        member("foo", data=b"1"),
        member("foobar", data=b"2"),
        member("foo.d", D),
        member("foo.d/x", data=b"3"),
    )
    top = layer(member(".wh.foo"))
    assert sorted(tree(base, top)) == ["foo.d", "foo.d/x", "foobar"]


def test_name_forms_are_one_key() -> None:
    base = layer(member("./a", D), member("./a/b", data=b"1"), member("/c", data=b"c"))
    top = layer(member("a/", D), member("a//b", data=b"2"), member("/a/./c", data=b"3"))
    out = squash(base, top)
    assert sorted(names(out)) == ["a", "a/b", "a/c", "c"]
    assert content(listing(out), "a/b") == b"2"


def test_escaping_dotdot_is_an_error() -> None:
    with pytest.raises(InvalidLayer, match="escapes the root"):
        squash(layer(member("a/../../etc/passwd", data=b"x")))


def test_dotdot_inside_the_root_is_cleaned() -> None:
    out = tree(layer(member("a", D), member("b", D), member("a/../b/f", data=b"f")))
    assert sorted(out) == ["a", "b", "b/f"]


# -- rule 5: type changes


def test_file_over_directory_hides_lower_subtree() -> None:
    base = layer(member("p", D), member("p/x", data=b"x"), member("p/y", D), member("p/y/z"))
    top = layer(member("p", data=b"now a file"))
    out = tree(base, top)
    assert sorted(out) == ["p"]
    assert content(out, "p") == b"now a file"


def test_symlink_over_directory_hides_lower_subtree() -> None:
    base = layer(member("p", D), member("p/x", data=b"x"))
    top = layer(member("p", "symlink", linkname="/elsewhere"))
    out = tree(base, top)
    assert sorted(out) == ["p"] and out["p"][1] == "/elsewhere"


def test_directory_over_file() -> None:
    base = layer(member("p", data=b"file"))
    top = layer(member("p", D), member("p/x", data=b"x"))
    out = tree(base, top)
    assert out["p"][0] == tarfile.DIRTYPE and sorted(out) == ["p", "p/x"]


def test_directory_deleted_and_recreated_in_one_layer_shows_only_new_children() -> None:
    base = layer(member("p", D), member("p/old", data=b"o"))
    top = layer(member(".wh.p"), member("p", D), member("p/new", data=b"n"))
    assert sorted(tree(base, top)) == ["p", "p/new"]


def test_directory_deleted_then_recreated_in_a_higher_layer() -> None:
    base = layer(member("p", D), member("p/old", data=b"o"))
    middle = layer(member(".wh.p"))
    top = layer(member("p", D), member("p/new", data=b"n"))
    assert sorted(tree(base, middle, top)) == ["p", "p/new"]


# -- rule 6: same path twice in one layer


def test_last_entry_in_a_layer_wins_and_output_has_no_duplicates() -> None:
    base = layer(member("f", data=b"lower"))
    top = layer(
        member("f", data=b"first"),
        member("g", D),
        member("f", data=b"second"),
        member("g", D, mode=0o711),
    )
    out = squash(base, top)
    assert sorted(names(out)) == ["f", "g"]  # listing() also asserts no duplicates
    assert content(listing(out), "f") == b"second"
    assert listing(out)["g"][2] == 0o711


# -- rule 7: directory attributes, parents first


def test_directory_attributes_come_from_the_highest_layer() -> None:
    base = layer(member("d", D, mode=0o700, uid=1, mtime=100), member("d/x", data=b"x"))
    top = layer(member("d", D, mode=0o755, uid=2, mtime=200), member("d/y", data=b"y"))
    out = tree(base, top)
    assert out["d"][2:6] == (0o755, 2, 0, 200)


def test_parents_come_before_children_when_a_higher_layer_lacks_the_parent() -> None:
    base = layer(member("usr", D, mode=0o711, mtime=5), member("usr/lib", D, mtime=6))
    top = layer(member("usr/lib/new", data=b"n"), member("top", data=b"t"))
    out = squash(base, top)
    order = names(out)
    assert order.index("usr") < order.index("usr/lib") < order.index("usr/lib/new")
    tree_ = listing(out)
    assert tree_["usr"][2] == 0o711 and tree_["usr"][5] == 5  # attributes of the real entry


def test_parent_after_child_in_one_layer_is_reordered() -> None:
    out = squash(layer(member("d/f", data=b"f"), member("d", D, mode=0o701)))
    assert names(out) == ["d", "d/f"]
    assert listing(out)["d"][2] == 0o701


def test_missing_parent_everywhere_is_created_as_a_plain_directory() -> None:
    out = squash(layer(member("x/y/f", data=b"f")))
    assert names(out) == ["x", "x/y", "x/y/f"]
    assert listing(out)["x"][0] == tarfile.DIRTYPE


# -- rule 8: hard links


def test_link_to_visible_target_stays_a_link() -> None:
    out = tree(
        layer(
            member("bin", D),
            member("bin/a", data=b"A"),
            member("bin/b", "hardlink", linkname="bin/a"),
        )
    )
    assert out["bin/b"][0] == tarfile.LNKTYPE and out["bin/b"][1] == "bin/a"


def test_link_whose_target_is_deleted_higher_keeps_the_content() -> None:
    """docker-squash and crane lose this link; Quay re-read the layer."""
    base = layer(
        member("a", data=b"A", mode=0o4755),
        member("b", "hardlink", linkname="a"),
        member("c", "hardlink", linkname="a"),
    )
    top = layer(member(".wh.a"))
    out = squash(base, top)
    got = listing(out)
    assert sorted(got) == ["b", "c"]
    assert got["b"][0] == tarfile.REGTYPE and got["b"][1] == b"A" and got["b"][2] == 0o4755
    assert got["c"][0] == tarfile.LNKTYPE and got["c"][1] == "b"  # the group stays one inode


def test_link_whose_target_is_replaced_higher_keeps_the_old_content() -> None:
    base = layer(member("a", data=b"old"), member("b", "hardlink", linkname="a"))
    top = layer(member("a", data=b"new"))
    got = tree(base, top)
    assert content(got, "a") == b"new"
    assert got["b"][0] == tarfile.REGTYPE and got["b"][1] == b"old"


def test_cross_layer_link_to_a_lower_target_comes_after_it() -> None:
    base = layer(member("d", D), member("d/a", data=b"A"))
    top = layer(member("b", "hardlink", linkname="./d/a"))
    out = squash(base, top)
    order = names(out)
    assert order.index("d/a") < order.index("b")
    assert listing(out)["b"][:2] == (tarfile.LNKTYPE, "d/a")  # clean and relative


def test_cross_layer_link_whose_target_is_deleted_in_its_own_layer() -> None:
    base = layer(member("a", data=b"A"))
    top = layer(member("b", "hardlink", linkname="/a"), member(".wh.a"))
    got = tree(base, top)
    assert sorted(got) == ["b"] and got["b"][:2] == (tarfile.REGTYPE, b"A")


def test_link_to_a_target_replaced_later_in_the_same_layer() -> None:
    got = tree(
        layer(
            member("a", data=b"first"),
            member("b", "hardlink", linkname="a"),
            member("a", data=b"second"),
        )
    )
    assert content(got, "a") == b"second"
    assert got["b"][:2] == (tarfile.REGTYPE, b"first")


def test_link_with_a_target_no_layer_has_is_an_error() -> None:
    with pytest.raises(InvalidLayer, match="hard link"):
        squash(layer(member("b", "hardlink", linkname="nowhere")))


def test_link_names_are_written_clean() -> None:
    out = squash(layer(member("a", data=b"A"), member("b", "hardlink", linkname="/./a")))
    assert listing(out)["b"][1] == "a"


# -- rule 9: byte-exact attributes


def test_attributes_are_kept() -> None:
    long_name = "d/" + "n" * 150
    caps = {
        "SCHILY.xattr.security.capability": "\x01\x00\x00\x02 \x00\x00\x00\x00\x00\x00\x00"
        "\x00\x00\x00\x00\x00\x00\x00\x00",
        "SCHILY.xattr.user.note": "hello",
    }
    members = [
        member("d", D, mode=0o1777),
        member("d/suid", data=b"s", mode=0o6755, uid=2_000_000, gid=3_000_000, mtime=123),
        member(long_name, data=b"long"),
        member("d/caps", data=b"c", pax_headers=caps),
        member("d/fifo", "fifo", mode=0o600),
        member("d/null", "chr", devmajor=1, devminor=3),
        member("d/loop", "blk", devmajor=7, devminor=0),
        member("d/dangling", "symlink", linkname="../../no/such/target"),
        member("d/caf\udce9", data=b"latin-1 name"),
    ]
    original = listing(layer(*members))
    got = tree(layer(*members))
    assert got == original


def test_attributes_survive_a_rewrite_of_the_header() -> None:
    """A materialised hard link is written by tarfile: its xattrs and ids must survive."""
    xattr = {"SCHILY.xattr.user.k": "v"}
    base = layer(
        member("a", data=b"A", uid=2_000_000, mtime=7, pax_headers=xattr),
        member("b", "hardlink", linkname="a"),
    )
    got = tree(base, layer(member(".wh.a")))
    assert got["b"] == (tarfile.REGTYPE, b"A", 0o644, 2_000_000, 0, 7, {"SCHILY.xattr.user.k": "v"})


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_gnu_sparse_becomes_a_regular_file(tmp_path, fmt: str) -> None:
    sparse = tmp_path / "src" / "sparse"
    sparse.parent.mkdir()
    with open(sparse, "wb") as f:
        f.write(b"head")
        f.seek(3 << 20)
        f.write(b"tail")
    archive = tmp_path / "layer.tar"
    subprocess.run(
        [
            "tar",
            "--sparse",
            f"--format={fmt}",
            "-cf",
            str(archive),
            "-C",
            str(sparse.parent),
            "sparse",
        ],
        check=True,
    )
    got = tree(archive.read_bytes())
    assert got["sparse"][0] == tarfile.REGTYPE
    assert got["sparse"][1] == sparse.read_bytes()


# -- rule 10: degenerate layers


def test_empty_layers_zero_byte_blobs_and_duplicate_layers() -> None:
    one = layer(member("a", data=b"A"))
    got = tree(b"", layer(), one, one, b"")
    assert sorted(got) == ["a"]


def test_truncated_layer_is_an_error() -> None:
    data = layer(member("a", data=b"A" * 5000))
    with pytest.raises(InvalidLayer, match="truncated"):
        squash(data[:2048])


def test_garbage_is_not_a_tar() -> None:
    with pytest.raises(InvalidLayer, match="not a tar header"):
        squash(os.urandom(4096))


def test_output_ends_with_the_end_of_archive_blocks() -> None:
    out = squash(layer(member("a", data=b"A")))
    assert out.endswith(bytes(1024)) and len(out) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        assert tar.getnames() == ["a"]


def test_root_entry_comes_first_with_the_highest_layers_attributes() -> None:
    base = layer(member(".", D, mode=0o711, mtime=11), member("a", data=b"a"))
    middle = layer(member("./", D, mode=0o755, mtime=22), member("b", data=b"b"))
    top = layer(member("c", data=b"c"))
    out = squash(base, middle, top)
    assert names(out)[0] == "."
    root = listing(out)["."]
    assert (root[0], root[2], root[5]) == (tarfile.DIRTYPE, 0o755, 22)
    assert sorted(names(out)) == [".", "a", "b", "c"]


def test_gnu_long_names_and_base256_ids_are_written_as_pax() -> None:
    long_name = "d/" + "g" * 200
    gnu = layer(
        member("d", D),
        member(long_name, data=b"x", uid=10_000_000),
        member("d/link", "symlink", linkname="t" * 150),
        fmt=tarfile.GNU_FORMAT,
    )
    assert b"././@LongLink" in gnu
    out = squash(gnu)
    assert b"././@LongLink" not in out
    assert listing(out) == listing(gnu)


# -- large files hidden by higher layers are not spooled; links that need them still work

BIG_A, BIG_B = os.urandom(200_000), os.urandom(150_000)


def test_hidden_large_files_leave_the_rest_intact() -> None:
    base = layer(member("a", data=BIG_A), member("b", data=BIG_B), member("c", data=b"c"))
    middle = layer(member("m", data=b"m"))
    top = layer(member(".wh.a"))
    got = tree(base, middle, top)
    assert sorted(got) == ["b", "c", "m"]
    assert content(got, "b") == BIG_B and content(got, "c") == b"c"


def test_link_to_a_hidden_large_file_in_its_own_layer() -> None:
    base = layer(member("a", data=BIG_A), member("l", "hardlink", linkname="a"))
    got = tree(base, layer(member("m", data=b"m")), layer(member(".wh.a")))
    assert got["l"][:2] == (tarfile.REGTYPE, BIG_A)


def test_link_from_a_higher_layer_to_a_hidden_large_file() -> None:
    base = layer(member("a", data=BIG_A), member("b", data=BIG_B))
    top = layer(member("l", "hardlink", linkname="a"), member(".wh.a"))
    got = tree(base, layer(member("m", data=b"m")), top)
    assert got["l"][:2] == (tarfile.REGTYPE, BIG_A)
    assert content(got, "b") == BIG_B
