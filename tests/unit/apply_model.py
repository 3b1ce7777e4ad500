"""A reference model of layer extraction, independent of `squash.merge`.

It applies layer member lists bottom-up onto a dict (path -> Node), the way a container
runtime unpacks layers (docker's pkg/archive UnpackLayer, OCI image-spec layer.md), one
member at a time:

- whiteouts (`.wh.NAME`, `.wh..wh..opq`) apply to what the lower layers left only: all of
  a layer's markers are applied first, against the state before the layer, so a member of
  the same layer survives its own whiteout in whatever order the two come;
- then the other members in tar order: a non-directory replacing anything (or a directory
  replacing a non-directory) removes the old path and its subtree; a directory over a
  directory keeps the children and takes the new attributes; missing parents, and parents
  that are non-directories, become implicit directories; a hard link names the node its
  target holds at that moment; a later member for the same path simply replaces an earlier
  one, so the last one in a layer wins.

Hard links are shared `Node` objects. Nodes are never changed in place (dir-over-dir puts a
new node), so a shallow copy of the dict is an independent snapshot.

Members are the tuples of `tests.layertar.member`: (name, kind, data, attrs).
"""

import posixpath
from dataclasses import dataclass

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
META = ".wh..wh."

# What `tests.layertar.layer` writes when an attribute is not given.
DEFAULT_MTIME = 1_700_000_000


@dataclass(eq=False)
class Node:
    kind: str  # "file" | "dir" | "symlink"
    body: bytes | str | None  # file content, symlink target, None for a directory
    mode: int
    uid: int
    gid: int
    mtime: float  # tarfile reads a PAX mtime as a float
    implicit: bool = False  # a directory made only because something lives under it


def clean(name: str) -> str:
    path = posixpath.normpath("/" + name).lstrip("/")
    return "" if path == "." else path


def ancestors(path: str) -> list[str]:
    """Proper ancestors of `path`, top-down, without the root."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def marker(name: str) -> tuple[str, str] | None:
    """('whiteout', hidden path) | ('opaque', dir) | ('meta', dir) for a marker, else None."""
    key = clean(name)
    directory, base = posixpath.split(key)
    if not base.startswith(WHITEOUT):
        return None
    if base == OPAQUE:
        return "opaque", directory
    if base.startswith(META):
        return "meta", directory
    return "whiteout", posixpath.join(directory, base[len(WHITEOUT) :])


def node_of(kind: str, data: bytes, attrs: dict) -> Node:
    mode = attrs.get("mode", 0o755 if kind == "dir" else 0o644)
    uid, gid = attrs.get("uid", 0), attrs.get("gid", 0)
    mtime = attrs.get("mtime", DEFAULT_MTIME)
    if kind == "file":
        return Node("file", data, mode, uid, gid, mtime)
    if kind == "dir":
        return Node("dir", None, mode, uid, gid, mtime)
    if kind == "symlink":
        return Node("symlink", attrs["linkname"], mode, uid, gid, mtime)
    raise ValueError(f"the model does not know member kind {kind!r}")


class InvalidLink(AssertionError):
    """A hard link whose target is not a regular file when the link is applied."""


class Tree:
    def __init__(self, nodes: dict[str, Node] | None = None) -> None:
        self.nodes: dict[str, Node] = dict(nodes or {})

    def copy(self) -> "Tree":
        return Tree(self.nodes)

    # -- primitive operations

    def remove(self, path: str) -> None:
        """Remove `path` and its subtree."""
        prefix = path + "/"
        for p in [p for p in self.nodes if p == path or p.startswith(prefix)]:
            del self.nodes[p]

    def remove_children(self, directory: str) -> None:
        """Remove everything under `directory` (the whole tree for the root)."""
        prefix = directory + "/" if directory else ""
        for p in [p for p in self.nodes if p.startswith(prefix) and p != directory]:
            del self.nodes[p]

    def make_room(self, path: str, is_dir: bool) -> None:
        """Make parents directories (implicit ones where needed) and clear `path` for a new
        member, keeping an existing directory when the new member is a directory too."""
        for a in ancestors(path):
            existing = self.nodes.get(a)
            if existing is None or existing.kind != "dir":
                self.nodes[a] = Node("dir", None, 0o755, 0, 0, 0, implicit=True)
        existing = self.nodes.get(path)
        if existing is not None and not (is_dir and existing.kind == "dir"):
            self.remove(path)

    # -- applying layers

    def apply_markers(self, members: list[tuple]) -> None:
        """Phase 1 of a layer: its whiteouts and opaque markers, against lower content."""
        for name, _kind, _data, _attrs in members:
            found = marker(name)
            if found is None:
                continue
            what, path = found
            if what == "whiteout":
                self.remove(path)
            elif what == "opaque":
                self.remove_children(path)

    def apply_member(self, name: str, kind: str, data: bytes, attrs: dict) -> None:
        """Phase 2 of a layer: one non-marker member, in tar order."""
        path = clean(name)
        if not path or marker(name) is not None:
            return
        self.make_room(path, kind == "dir")
        if kind == "hardlink":
            target = self.nodes.get(clean(attrs["linkname"]))
            if target is None or target.kind != "file":
                raise InvalidLink(f"hard link {path!r} -> {attrs['linkname']!r}: no such file")
            self.nodes[path] = target
        else:
            self.nodes[path] = node_of(kind, data, attrs)

    def apply_layer(self, members: list[tuple]) -> None:
        self.apply_markers(members)
        for name, kind, data, attrs in members:
            self.apply_member(name, kind, data, attrs)
        self.check()

    def check(self) -> None:
        """The model's own invariant: every path's parent is a directory."""
        for p in self.nodes:
            for a in ancestors(p):
                assert a in self.nodes and self.nodes[a].kind == "dir", (p, a)

    # -- views for comparing

    def view(self, implicit: set[str] | None = None) -> dict[str, tuple]:
        """path -> (kind, body, attributes); attributes are None for implicit directories
        (of this tree, or named in `implicit`), whose mode and mtime no layer decided."""
        implicit = implicit or set()
        out = {}
        for p, n in sorted(self.nodes.items()):
            attrs = None if n.implicit or p in implicit else (n.mode, n.uid, n.gid, n.mtime)
            out[p] = (n.kind, n.body, attrs)
        return out

    def implicit_dirs(self) -> set[str]:
        return {p for p, n in self.nodes.items() if n.implicit}

    def link_groups(self) -> list[list[str]]:
        """Paths that share one node, as sorted groups of two or more."""
        by_node: dict[int, list[str]] = {}
        for p, n in self.nodes.items():
            by_node.setdefault(id(n), []).append(p)
        return sorted(sorted(g) for g in by_node.values() if len(g) > 1)


def apply_layers(layers: list[list[tuple]]) -> Tree:
    """The tree that unpacking `layers` (bottom first) one by one gives."""
    tree = Tree()
    for members in layers:
        tree.apply_layer(members)
    return tree
