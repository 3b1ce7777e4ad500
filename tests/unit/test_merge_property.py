"""Property: squashing a random layer stack gives the tree that unpacking its layers one by
one gives (docs/merge-rules.md; docker's ApplyLayer and OCI image-spec layer.md).

The reference is `apply_model`, which knows nothing of the merger: it applies the layers
bottom-up onto a dict. The squashed tar is read back into the same kind of tree and the two
are compared: paths, types, file contents, symlink targets, mode, uid/gid, mtime (not for
directories no layer had an entry for) and hard-link groups. The output's structure is
checked on the way: no path twice, parents and link targets before the members that need
them, clean link targets, no whiteout markers.

Where layer semantics leave room, the generators stay on the defined side:
- whiteout and opaque markers create no parent directories (docker's UnpackLayer would
  MkdirAll a marker's missing parent; OCI says nothing of it, and the merger does not);
- an opaque marker over a lower non-directory always comes with a directory entry of its
  layer (a marker alone there is malformed: runtimes fail, or keep the file);
- a hard link's header carries its target's attributes, as tar writers do (runtimes take the
  inode's attributes and mostly ignore the link header's);
- a hard link always names a regular file that exists when the link is unpacked.
Layers with repeated paths are unpacked member by member, as runtimes do: an earlier member
of a layer can remove lower content (a file over a lower directory) even if a later member
of the same layer puts a directory back at that path.
"""

import io
import posixpath
import tarfile
from typing import Unpack

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.layertar import Metadata, layer, member, squash
from tests.unit.apply_model import OPAQUE, WHITEOUT, Tree, ancestors, apply_layers, clean

NAMES = ["a", "b", "c", "ab"]  # few names, so paths collide; "ab" next to "a" (rule 4)
MTIMES = [1_700_000_000, 1_700_000_100, 1_700_000_200]
IDS = [0, 1000]
FILE_MODES = [0o644, 0o600, 0o755, 0o4755]
DIR_MODES = [0o755, 0o700, 0o1777]
SYMLINK_TARGETS = ["a", "../b", "/c/ab", "a/b/c", "nowhere", "."]
KINDS = ["file", "file", "file", "dir", "dir", "symlink", "hardlink", "hardlink"]
KINDS += ["whiteout", "whiteout", "opaque"]

paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)


# -- member specs (tests.layertar.member tuples)


def F(name: str, data: bytes = b"", **attrs: Unpack[Metadata]) -> tuple:
    return member(name, "file", data, **attrs)


def D(name: str, **attrs: Unpack[Metadata]) -> tuple:
    return member(name, "dir", **attrs)


def S(name: str, target: str, **attrs: Unpack[Metadata]) -> tuple:
    return member(name, "symlink", linkname=target, **attrs)


def L(name: str, target: str, **attrs: Unpack[Metadata]) -> tuple:
    return member(name, "hardlink", linkname=target, **attrs)


def WH(path: str) -> tuple:
    directory, base = posixpath.split(path)
    return member(posixpath.join(directory, WHITEOUT + base))


def OPQ(directory: str) -> tuple:
    return member(posixpath.join(directory, OPAQUE))


# -- generators


@st.composite
def attributes(draw: st.DrawFn, kind: str) -> Metadata:
    modes = {"file": FILE_MODES, "dir": DIR_MODES, "symlink": [0o777]}[kind]
    uid = draw(st.sampled_from(IDS))
    return {
        "mode": draw(st.sampled_from(modes)),
        "uid": uid,
        "gid": uid,
        "mtime": draw(st.sampled_from(MTIMES)),
    }


def _path(draw: st.DrawFn, known: list[str]) -> str:
    """A fresh random path, or (often) one that lower layers or this layer already use."""
    if bool(known) and draw(st.booleans()):
        return draw(st.sampled_from(known))
    return draw(paths)


@st.composite
def layer_members(
    draw: st.DrawFn, below: Tree, named: frozenset[str] = frozenset()
) -> tuple[list[tuple], Tree]:
    """The members of one layer over `below`, and the tree after it (from the model).
    `named`: paths lower layers had, gone or not, so that higher layers often name what
    is no longer there (a whiteout of a path whose directory a layer between removed)."""
    plan: list[tuple[str, str]] = []  # (kind, path); hard-link targets are chosen later
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(KINDS))
        known = sorted(set(below.nodes) | named | {p for _, p in plan if p})
        if kind == "opaque":
            directory = "" if draw(st.integers(0, 4)) == 0 else _path(draw, known)
            lower = below.nodes.get(directory)
            if lower is not None and lower.kind != "dir":
                # An opaque marker says its directory is a directory in this layer; over a
                # lower non-directory the layer must say so with an entry of its own. (A
                # marker alone over a file is malformed: runtimes fail or keep the file.)
                plan.append(("dir", directory))
            plan.append((kind, directory))
        else:
            plan.append((kind, _path(draw, known)))

    # Most layers list every parent directory before its children, as tar writers do; the
    # others leave parents out (implicit directories).
    if draw(st.integers(0, 3)):
        latest: dict[str, str] = {}
        with_parents = []
        for kind, path in plan:
            needed = ancestors(path)  # for a whiteout: the directories holding its marker
            if kind == "opaque" and path:
                needed.append(path)  # the marker lives in the opaque directory itself
            for directory in needed:
                if latest.get(directory) != "dir":
                    with_parents.append(("dir", directory))
                    latest[directory] = "dir"
            with_parents.append((kind, path))
            if kind not in ("whiteout", "opaque"):
                latest[path] = kind
        plan = with_parents

    markers = [WH(p) if k == "whiteout" else OPQ(p) for k, p in plan if k in ("whiteout", "opaque")]
    tree = below.copy()
    tree.apply_markers(markers)
    members = []
    for kind, path in plan:
        if kind == "whiteout":
            m = WH(path)
        elif kind == "opaque":
            m = OPQ(path)
        elif kind == "hardlink":
            # A valid link: to a regular file as the tree holds it when the link is applied.
            probe = tree.copy()
            probe.make_room(path, is_dir=False)
            files = sorted(p for p, n in probe.nodes.items() if n.kind == "file")
            if files:
                target = draw(st.sampled_from(files))
                node = probe.nodes[target]
                m = L(path, target, mode=node.mode, uid=node.uid, gid=node.gid, mtime=node.mtime)
            else:
                m = F(path, draw(st.binary(max_size=3)), **draw(attributes("file")))
        elif kind == "file":
            m = F(path, draw(st.binary(max_size=3)), **draw(attributes("file")))
        elif kind == "dir":
            m = D(path, **draw(attributes("dir")))
        else:
            m = S(path, draw(st.sampled_from(SYMLINK_TARGETS)), **draw(attributes("symlink")))
        tree.apply_member(*m)
        members.append(m)
    tree.check()
    return members, tree


@st.composite
def stacks(draw: st.DrawFn, fewest: int = 1, most: int = 5) -> list[list[tuple]]:
    """`fewest` to `most` layers, bottom first."""
    tree = Tree()
    named: frozenset[str] = frozenset()
    layers = []
    for _ in range(draw(st.integers(fewest, most))):
        members, tree = draw(layer_members(tree, named))
        named |= tree.nodes.keys()
        layers.append(members)
    return layers


# -- reading the squashed tar back


def squashed_members(tar_bytes: bytes, markers: bool = False) -> list[tuple]:
    """The members of a squashed tar, checking its structure on the way: clean names, no
    path twice, parents (also of markers) and link targets first; whiteout and opaque
    markers only if `markers` (a partial squash) and only where the layer has a
    directory for them."""
    members = []
    kinds: dict[str, str] = {"": "dir"}
    with tarfile.open(
        fileobj=io.BytesIO(tar_bytes), encoding="utf-8", errors="surrogateescape"
    ) as tar:
        for info in tar:
            name = info.name.rstrip("/")
            assert name and name == clean(name), f"unclean name {info.name!r}"
            directory, base = posixpath.split(name)
            assert kinds.get(directory) == "dir", f"{name!r} is not in a directory before it"
            attrs: Metadata = {
                "mode": info.mode,
                "uid": info.uid,
                "gid": info.gid,
                "mtime": info.mtime,
            }
            if base.startswith(WHITEOUT):
                assert markers, f"marker {name!r} written"
                assert info.isreg() and not info.size, f"marker {name!r} is not an empty file"
                members.append(member(name))
                continue
            assert name not in kinds, f"{name!r} twice in the output"
            if info.islnk():
                target = info.linkname
                assert target == clean(target), f"unclean link target {target!r}"
                assert target in kinds, f"hard link {name!r} comes before {target!r}"
                assert kinds[target] == "file", f"hard link {name!r} to a non-file"
                members.append(member(name, "hardlink", linkname=target, **attrs))
                kinds[name] = "file"
            elif info.isreg():
                extracted = tar.extractfile(info)
                assert extracted is not None, name
                members.append(member(name, "file", extracted.read(), **attrs))
                kinds[name] = "file"
            elif info.isdir():
                members.append(member(name, "dir", **attrs))
                kinds[name] = "dir"
            elif info.issym():
                members.append(member(name, "symlink", linkname=info.linkname, **attrs))
                kinds[name] = "symlink"
            else:
                raise AssertionError(f"{name!r}: unexpected member type {info.type!r}")
    return members


def read_squashed(tar_bytes: bytes) -> Tree:
    """The tree a squashed tar holds, checking its structure on the way."""
    tree = Tree()
    tree.apply_layer(squashed_members(tar_bytes))
    return tree


# -- the property


@settings(max_examples=300, deadline=None)
@given(stacks())
# A directory deleted and re-created in one layer shows only its new children (rule 5).
@example(
    [[D("d"), F("d/old", b"o"), D("d/s"), F("d/s/x")], [WH("d"), D("d", mode=0o700), F("d/n")]]
)
@example([[D("d"), F("d/old", b"o")], [D("d", mode=0o700), F("d/n", b"n"), WH("d")]])
# A file re-added beside its own whiteout stays, in either order (rule 1).
@example([[D("a"), F("a/f", b"old"), F("a/g", b"g")], [D("a"), WH("a/f"), F("a/f", b"new")]])
@example([[D("a"), F("a/f", b"old"), F("a/g", b"g")], [D("a"), F("a/f", b"new"), WH("a/f")]])
# Hard links whose target is deleted higher up keep the content (rule 8).
@example([[F("t", b"x"), L("l", "t"), L("m", "t")], [WH("t")]])
@example([[F("t", b"old")], [F("t", b"new"), L("l", "t")], [WH("t")]])
@example([[F("t", b"x")], [L("l", "t")], [WH("t")]])
# Hard links whose target is replaced higher up keep the content (rule 8).
@example([[F("t", b"x"), L("l", "t"), L("m", "l")], [F("t", b"y")]])
@example([[D("d"), F("d/t", b"x"), L("l", "d/t")], [F("d", b"now a file")]])
# A link to a lower file names that file as it is when the link is unpacked, even when the
# same layer rewrites the target afterwards (the link must not join the new file's group).
@example([[F("t", b"x")], [L("l", "t"), F("t", b"y")]])
# An opaque directory keeps its same-layer children, before or after the marker (rule 2).
@example(
    [
        [D("d"), F("d/old"), D("d/s"), F("d/s/x"), F("e")],
        [D("d", mode=0o700), F("d/n1"), OPQ("d"), D("d/s"), F("d/s/y")],
    ]
)
# An opaque marker at the root hides everything below (runtimes apply `/.wh..wh..opq`).
@example([[F("a"), D("d"), F("d/x")], [OPQ(""), F("b")]])
# A middle-layer file over a directory hides that directory's lower children even though a
# higher layer puts a directory back (rule 5).
@example([[D("a"), F("a/old")], [F("a", b"f")], [D("a"), F("a/new")]])
# A child after a non-directory at its parent in one layer: the parent becomes a directory
# (the output never holds a member under a file); and a non-directory after a directory with
# children in one layer replaces the directory and those children.
@example([[F("a", b"f"), F("a/b")]])
@example([[D("a"), F("a/x"), F("a", b"f")]])
# A directory that a lower layer made implicitly stays when its children are whited out.
@example([[F("d/f")], [WH("d/f")]])
def test_squash_equals_applying_layers_one_by_one(layers: list[list[tuple]]) -> None:
    expected = apply_layers(layers)
    actual = read_squashed(squash(*(layer(*members) for members in layers)))
    assert actual.view(expected.implicit_dirs()) == expected.view()
    assert actual.link_groups() == expected.link_groups()


# -- partial squashes: the squashed layer put on the kept layers gives the same tree


def split_by_layer(groups: list[list[str]], written: set[str]) -> list[list[str]]:
    """Hard-link groups as a partial squash leaves them: a link of the squashed layer to a
    file of a kept one cannot cross the layers (docker's overlay2 applies a layer into a
    directory of its own), so it holds a copy, and each group splits into its part in
    the squashed layer and its part in the kept ones."""
    parts = [[p for p in g if p in written] for g in groups]
    parts += [[p for p in g if p not in written] for g in groups]
    return sorted(p for p in parts if len(p) > 1)


def check_partial(layers: list[list[tuple]], keep: int) -> None:
    expected = apply_layers(layers)
    members = squashed_members(squash(*(layer(*m) for m in layers), keep=keep), markers=True)
    actual = apply_layers(layers[:keep])
    actual.apply_layer(members)
    assert actual.view(expected.implicit_dirs()) == expected.view()
    written = {clean(m[0]) for m in members}
    assert actual.link_groups() == split_by_layer(expected.link_groups(), written)


@st.composite
def partial_stacks(draw: st.DrawFn) -> tuple[list[list[tuple]], int]:
    """2-6 layers, bottom first, and how many of them are kept (at least one, not all)."""
    layers = draw(stacks(2, 6))
    return layers, draw(st.integers(1, len(layers) - 1))


@settings(max_examples=400, deadline=None)
@given(partial_stacks())
# Deleted in the squashed part: a whiteout, also of a directory the kept layer only implies.
@example(([[F("a/f"), F("b")], [WH("a")]], 1))
# Re-created after a delete, or opaque: an opaque marker in the squashed layer's directory.
@example(([[D("d"), F("d/old")], [WH("d")], [D("d", mode=0o700), F("d/n")]], 1))
@example(([[D("d", mode=0o700), F("d/old")], [OPQ("d")]], 1))
# A file put in a kept directory: the directory's kept entry comes along (its mode).
@example(([[D("t", mode=0o1777)], [F("t/x")]], 1))
# A whiteout in a kept directory whose entry came before the hidden file.
@example(([[D("e", mode=0o700), D("e/s", mode=0o700), F("e/s/x")], [WH("e/s/x")]], 1))
# A file over a kept directory needs no marker; a directory over a kept file neither.
@example(([[D("a"), F("a/x")], [F("a", b"f")]], 1))
@example(([[F("a", b"f")], [D("a"), F("a/x")]], 1))
# Hard links to kept files hold a copy; those of one group share it.
@example(([[F("t", b"x")], [L("l", "t"), L("m", "t")]], 1))
@example(([[F("t", b"x"), L("u", "t")], [L("l", "u")], [WH("t")]], 1))
# A whiteout of a kept name the kept layers deleted themselves may be written or not.
@example(([[F("a")], [WH("a")], [F("a", b"again")], [WH("a")]], 2))
# What the kept layers hid themselves needs no marker: one would make its parent a
# directory over a kept file, or where a kept whiteout or opaque root removed it.
@example(([[F("b/a")], [F("b", b"f")], [WH("b/a")]], 2))
@example(([[F("b/a")], [WH("b")], [WH("b/a")]], 2))
@example(([[F("b/a")], [OPQ(""), F("x")], [WH("b/a")]], 2))
# ... but a kept directory whose lower children the kept layers hid is still there to hide,
# and so are the lower children of a directory a kept layer only gave new attributes.
@example(([[F("b/a")], [OPQ("b")], [WH("b")]], 2))
@example(([[D("a"), D("a/a")], [D("a", mode=0o700)], [OPQ("a")]], 2))
def test_partial_squash_on_the_kept_layers_equals_applying_all(
    case: tuple[list[list[tuple]], int],
) -> None:
    check_partial(*case)
