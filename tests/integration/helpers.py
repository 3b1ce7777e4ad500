"""Helpers for the integration tests: real tools judge what `squashd export` writes.

The check (docs/archive-format.md, the judges): squash an image with the CLI, turn the
squashed archive back into an OCI layout with `skopeo copy docker-archive:OUT oci:DIR:t`,
unpack it with `umoci unpack`, and compare that root filesystem with `umoci unpack` of the
original multi-layer image. `compare_trees` lists every difference in a readable form.

Two ways to make source images:
- `UmociImage`: a real umoci bundle, modified on disk and repacked (one layer per
  `commit()`; deletions become whiteouts written by umoci itself);
- `LayerBuilder` + `write_oci_layout`: layers written byte by byte with `tarfile`, for
  what umoci never writes (opaque markers, same-layer whiteouts, GNU long names, ...).

Missing tools fail the tests loudly; nothing here skips.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import posixpath
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeAlias

import pytest

import testbed.tools
from testbed.tools import run, show

# ---------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------

#: The CLI under test: the console script next to the interpreter running pytest
#: (the project's venv), else whatever `squashd` is on PATH.
SQUASHD = str(Path(sys.executable).with_name("squashd"))
if not os.access(SQUASHD, os.X_OK):
    SQUASHD = shutil.which("squashd") or SQUASHD

COMPRESSIONS = ("none", "gzip", "zstd")

#: A fixed mtime for hand-made entries (2023-11-14).
T0 = 1_700_000_000


def require_tool(name: str) -> str:
    """The path of an external tool; fails the test (never skips) when it is missing."""
    if name == "squashd":
        if os.access(SQUASHD, os.X_OK):
            return SQUASHD
        pytest.fail(
            f"the CLI under test is missing: {SQUASHD} is not executable (run `make install`)",
            pytrace=False,
        )
    return testbed.tools.require_tool(name)  # MissingTool fails the test (tests/conftest.py)


def squashd_export(
    source: str,
    out: Path | str,
    *args: str,
    check: bool = True,
    stdout=subprocess.PIPE,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """`squashd export SOURCE -o OUT [args...]`."""
    return run([SQUASHD, "export", source, "-o", out, *args], check=check, stdout=stdout, env=env)


# ---------------------------------------------------------------------------------------
# Small JSON / blob helpers
# ---------------------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(data: bytes) -> str:
    """The OCI digest of `data` (a manifest, a config, a blob)."""
    return f"sha256:{sha256_hex(data)}"


def compress(data: bytes, compression: str) -> bytes:
    if compression == "none":
        return data
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    raise ValueError(f"unknown compression {compression!r}")


def decompress(data: bytes) -> bytes:
    """Undo gzip or zstd by magic number; anything else is returned as it is."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
            return reader.read()
    return data


def read_json(path: Path):
    return json.loads(Path(path).read_bytes())


# ---------------------------------------------------------------------------------------
# Images made with umoci
# ---------------------------------------------------------------------------------------


class UmociImage:
    """An OCI layout built the way people build images with umoci.

    Modify `rootfs` on disk, then `commit()`: `umoci repack --refresh-bundle` writes one
    layer with what changed (deletions as whiteouts). Call `config()` only after the last
    commit: repack starts from the manifest the bundle was unpacked from.
    """

    def __init__(self, root: Path, name: str = "img", tag: str = "t"):
        root.mkdir(parents=True, exist_ok=True)
        self.layout = root / name
        self.bundle = root / f"{name}.bundle"
        self.tag = tag
        run(["umoci", "init", "--layout", self.layout])
        run(["umoci", "new", "--image", self.ref])
        run(["umoci", "unpack", "--image", self.ref, self.bundle])

    @property
    def ref(self) -> str:
        return f"{self.layout}:{self.tag}"

    @property
    def source(self) -> str:
        """The squashd source reference."""
        return f"oci:{self.layout}:{self.tag}"

    @property
    def rootfs(self) -> Path:
        return self.bundle / "rootfs"

    def commit(self, comment: str = "") -> None:
        cmd: list[str | os.PathLike[str]] = ["umoci", "repack", "--refresh-bundle"]
        cmd += ["--image", self.ref, self.bundle]
        if comment:
            cmd[2:2] = ["--history.comment", comment]
        run(cmd)

    def config(self, *args: str) -> None:
        """`umoci config --image REF ARGS...`, e.g. ("--config.env", "A=1")."""
        run(["umoci", "config", "--image", self.ref, *args])

    def manifest(self) -> dict:
        return manifest_of(self.layout, self.tag)


def manifest_of(layout: Path, tag: str) -> dict:
    index = read_json(layout / "index.json")
    for desc in index["manifests"]:
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return read_json(blob_path(layout, desc["digest"]))
    raise AssertionError(f"tag {tag!r} not in {layout}/index.json")


def blob_path(layout: Path, digest: str) -> Path:
    algo, hexd = digest.split(":", 1)
    return Path(layout) / "blobs" / algo / hexd


# ---------------------------------------------------------------------------------------
# Hand-made layers
# ---------------------------------------------------------------------------------------


def _str_name(name: str | bytes) -> str:
    """tarfile wants str; bytes that are not UTF-8 ride along as surrogate escapes."""
    if isinstance(name, bytes):
        return name.decode("utf-8", "surrogateescape")
    return name


#: tarfile.USTAR_FORMAT, GNU_FORMAT or PAX_FORMAT.
TarFormat: TypeAlias = Literal[0, 1, 2]


class LayerBuilder:
    """A layer tar written entry by entry, each in the tar format asked for.

    PAX by default (xattrs as `SCHILY.xattr.*` records, long names and big ids as PAX
    records); `fmt=tarfile.GNU_FORMAT` writes GNU long-name entries and base-256 numbers;
    `fmt=tarfile.USTAR_FORMAT` a plain header. Names may be bytes (non-UTF-8 kept).
    """

    def __init__(self, fmt: TarFormat = tarfile.PAX_FORMAT, mtime: float = T0):
        self.fmt = fmt
        self.mtime = mtime  # the default for entries of this layer
        self.members: list[tuple[tarfile.TarInfo, bytes, TarFormat]] = []

    def _info(
        self,
        name: str | bytes,
        type_: bytes,
        *,
        mode: int,
        uid: int = 0,
        gid: int = 0,
        mtime: float | None = None,
        xattrs: dict[str, bytes | str] | None = None,
        pax: dict[str, str] | None = None,
        uname: str = "",
        gname: str = "",
    ) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(_str_name(name))
        ti.type = type_
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname, ti.gname = uname, gname
        ti.mtime = self.mtime if mtime is None else mtime
        headers: dict[str, str] = dict(pax or {})
        for key, value in (xattrs or {}).items():
            if isinstance(value, bytes):
                value = value.decode("utf-8", "surrogateescape")
            headers[f"SCHILY.xattr.{key}"] = value
        ti.pax_headers = headers
        return ti

    def add(self, ti: tarfile.TarInfo, data: bytes = b"", fmt: TarFormat | None = None):
        ti.size = len(data) if ti.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
        self.members.append((ti, data, self.fmt if fmt is None else fmt))
        return self

    def file(self, name, data: bytes = b"", *, mode=0o644, fmt=None, **kw):
        return self.add(self._info(name, tarfile.REGTYPE, mode=mode, **kw), data, fmt)

    def dir(self, name, *, mode=0o755, fmt=None, **kw):
        return self.add(self._info(name, tarfile.DIRTYPE, mode=mode, **kw), b"", fmt)

    def symlink(self, name, target: str | bytes, *, mode=0o777, fmt=None, **kw):
        ti = self._info(name, tarfile.SYMTYPE, mode=mode, **kw)
        ti.linkname = _str_name(target)
        return self.add(ti, b"", fmt)

    def hardlink(self, name, target: str | bytes, *, mode=0o644, fmt=None, **kw):
        ti = self._info(name, tarfile.LNKTYPE, mode=mode, **kw)
        ti.linkname = _str_name(target)
        return self.add(ti, b"", fmt)

    def fifo(self, name, *, mode=0o644, fmt=None, **kw):
        return self.add(self._info(name, tarfile.FIFOTYPE, mode=mode, **kw), b"", fmt)

    def chardev(self, name, major: int, minor: int, *, mode=0o666, fmt=None, **kw):
        ti = self._info(name, tarfile.CHRTYPE, mode=mode, **kw)
        ti.devmajor, ti.devminor = major, minor
        return self.add(ti, b"", fmt)

    def blockdev(self, name, major: int, minor: int, *, mode=0o660, fmt=None, **kw):
        ti = self._info(name, tarfile.BLKTYPE, mode=mode, **kw)
        ti.devmajor, ti.devminor = major, minor
        return self.add(ti, b"", fmt)

    def whiteout(self, path: str | bytes, **kw):
        """`DIR/.wh.NAME`: hides NAME (and its subtree) in lower layers."""
        path = _str_name(path)
        head, _, base = path.rpartition("/")
        return self.file(f"{head}/.wh.{base}" if head else f".wh.{base}", mode=0o600, **kw)

    def opaque(self, directory: str | bytes, **kw):
        """`DIR/.wh..wh..opq`: hides every lower child of DIR."""
        directory = _str_name(directory).rstrip("/")
        return self.file(f"{directory}/.wh..wh..opq", mode=0o600, **kw)

    def tar(self) -> bytes:
        """The uncompressed layer: headers, data padded to 512, two zero blocks."""
        buf = io.BytesIO()
        for ti, data, fmt in self.members:
            buf.write(ti.tobuf(fmt, "utf-8", "surrogateescape"))
            if data:
                buf.write(data)
                buf.write(b"\0" * (-len(data) % tarfile.BLOCKSIZE))
        buf.write(b"\0" * (2 * tarfile.BLOCKSIZE))
        return buf.getvalue()


OCI_LAYER_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def write_blob(layout: Path, data: bytes) -> dict:
    """Store `data` under blobs/sha256/ and return its (media-type-less) descriptor."""
    digest = sha256_hex(data)
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


@dataclasses.dataclass
class HandmadeImage:
    layout: Path
    tag: str
    manifest: dict
    config: dict
    manifest_digest: str

    @property
    def source(self) -> str:
        return f"oci:{self.layout}:{self.tag}"

    @property
    def ref(self) -> str:
        return f"{self.layout}:{self.tag}"


def image_manifest(
    layout: Path,
    layers: Sequence[bytes],
    *,
    compression: str | Sequence[str] = "gzip",
    config: dict | None = None,
    architecture: str = "amd64",
    os_name: str = "linux",
    variant: str | None = None,
) -> tuple[dict, dict, dict]:
    """Write layers + config + manifest blobs; return (manifest, config, manifest descriptor).

    `layers` are uncompressed layer tars (`LayerBuilder.tar()`); `compression` is one
    name for all or one per layer.
    """
    comps = [compression] * len(layers) if isinstance(compression, str) else list(compression)
    assert len(comps) == len(layers)
    layer_descs, diff_ids = [], []
    for tar_bytes, comp in zip(layers, comps, strict=True):
        desc = write_blob(layout, compress(tar_bytes, comp))
        layer_descs.append({"mediaType": OCI_LAYER_TYPES[comp], **desc})
        diff_ids.append(f"sha256:{sha256_hex(tar_bytes)}")
    cfg = {
        "architecture": architecture,
        "os": os_name,
        "created": "2023-11-14T22:13:20Z",
        "config": dict(config or {}),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "2023-11-14T22:13:20Z", "created_by": f"hand-made layer {i}"}
            for i in range(len(layers))
        ],
    }
    if variant:
        cfg["variant"] = variant
    cfg_desc = {"mediaType": OCI_CONFIG, **write_blob(layout, _json_bytes(cfg))}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": cfg_desc,
        "layers": layer_descs,
    }
    man_desc = {"mediaType": OCI_MANIFEST, **write_blob(layout, _json_bytes(manifest))}
    platform = {"architecture": architecture, "os": os_name}
    if variant:
        platform["variant"] = variant
    man_desc["platform"] = platform
    return manifest, cfg, man_desc


def write_index(layout: Path, tagged: dict[str, dict]) -> None:
    """index.json naming each descriptor by `org.opencontainers.image.ref.name`; oci-layout."""
    manifests = []
    for tag, desc in tagged.items():
        desc = dict(desc)
        desc["annotations"] = {
            **desc.get("annotations", {}),
            "org.opencontainers.image.ref.name": tag,
        }
        manifests.append(desc)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_bytes(
        _json_bytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
    )


def write_oci_layout(
    layout: Path,
    layers: Sequence[bytes | LayerBuilder],
    *,
    tag: str = "t",
    compression: str | Sequence[str] = "gzip",
    config: dict | None = None,
) -> HandmadeImage:
    """A complete single-image OCI layout made of hand-made layers."""
    layout.mkdir(parents=True, exist_ok=True)
    tars = [x.tar() if isinstance(x, LayerBuilder) else x for x in layers]
    manifest, cfg, desc = image_manifest(layout, tars, compression=compression, config=config)
    desc.pop("platform")
    write_index(layout, {tag: desc})
    return HandmadeImage(layout, tag, manifest, cfg, desc["digest"])


# ---------------------------------------------------------------------------------------
# Root filesystem trees and their comparison
# ---------------------------------------------------------------------------------------

_KINDS = {
    stat.S_IFDIR: "directory",
    stat.S_IFREG: "regular file",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "char device",
    stat.S_IFBLK: "block device",
    stat.S_IFSOCK: "socket",
}


@dataclasses.dataclass(frozen=True)
class Node:
    kind: str
    mode: int  # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    mtime_ns: int
    sha256: str | None  # regular files
    size: int | None  # regular files
    target: bytes | None  # symlinks
    rdev: tuple[int, int] | None  # devices
    xattrs: tuple[tuple[str, bytes], ...]
    ino: int


def _file_sha256(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _xattrs(path: bytes) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return (("<listxattr failed>", b""),)
    out = []
    for name in sorted(names):
        try:
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError as e:
            out.append((name, f"<getxattr failed: {e.strerror}>".encode()))
    return tuple(out)


def snapshot(root: Path | str) -> dict[bytes, Node]:
    """Every path under `root` (bytes, relative; the root itself is b".") and its metadata."""
    root_b = os.fsencode(root)
    tree: dict[bytes, Node] = {}

    def visit(rel: bytes) -> None:
        full = os.path.join(root_b, rel) if rel != b"." else root_b
        st = os.lstat(full)
        fmt = stat.S_IFMT(st.st_mode)
        kind = _KINDS.get(fmt, f"type {fmt:o}")
        is_reg = fmt == stat.S_IFREG
        tree[rel] = Node(
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            mtime_ns=st.st_mtime_ns,
            sha256=_file_sha256(full) if is_reg else None,
            size=st.st_size if is_reg else None,
            target=os.readlink(full) if fmt == stat.S_IFLNK else None,
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev))
            if fmt in (stat.S_IFCHR, stat.S_IFBLK)
            else None,
            xattrs=_xattrs(full),
            ino=st.st_ino,
        )
        if fmt == stat.S_IFDIR:
            for name in sorted(os.listdir(full)):
                visit(name if rel == b"." else os.path.join(rel, name))

    visit(b".")
    return tree


def hardlink_groups(tree: dict[bytes, Node]) -> dict[bytes, frozenset[bytes]]:
    """For every non-directory path, the set of paths in the tree sharing its inode."""
    by_ino: dict[int, set[bytes]] = {}
    for path, node in tree.items():
        if node.kind != "directory":
            by_ino.setdefault(node.ino, set()).add(path)
    return {p: frozenset(group) for group in by_ino.values() for p in group}


def show_path(path: bytes) -> str:
    return repr(path.decode("utf-8", "backslashreplace")) if path != b"." else "'/' (root)"


def _group(paths: frozenset[bytes]) -> str:
    return "{" + ", ".join(show_path(p) for p in sorted(paths)) + "}"


def _fmt_mtime(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def compare_trees(
    a: Path | str,
    b: Path | str,
    *,
    a_name: str = "original",
    b_name: str = "squashed",
) -> list[str]:
    """Differences between two root filesystems, one readable line each ([] when equal).

    Compared per path: type, mode (with setuid/setgid/sticky), uid/gid, content
    (sha256), symlink target, device numbers, xattrs, mtime (lstat, directories too);
    and the hard-link groups (paths sharing an inode) must partition both trees alike.
    """
    ta, tb = snapshot(a), snapshot(b)
    diffs: list[str] = []
    for path in sorted(ta.keys() - tb.keys()):
        diffs.append(f"{show_path(path)}: only in {a_name} ({ta[path].kind})")
    for path in sorted(tb.keys() - ta.keys()):
        diffs.append(f"{show_path(path)}: only in {b_name} ({tb[path].kind})")

    def differ(path: bytes, what: str, va, vb) -> None:
        diffs.append(f"{show_path(path)}: {what} {a_name}={va} {b_name}={vb}")

    for path in sorted(ta.keys() & tb.keys()):
        na, nb = ta[path], tb[path]
        if na.kind != nb.kind:
            differ(path, "type", na.kind, nb.kind)
            continue
        if na.mode != nb.mode:
            differ(path, "mode", f"{na.mode:04o}", f"{nb.mode:04o}")
        if (na.uid, na.gid) != (nb.uid, nb.gid):
            differ(path, "uid:gid", f"{na.uid}:{na.gid}", f"{nb.uid}:{nb.gid}")
        if na.sha256 != nb.sha256:
            # Of the same kind, and only regular files have a sha256: both have one.
            assert na.sha256 is not None and nb.sha256 is not None, path
            differ(
                path,
                "content",
                f"{na.size}B/sha256:{na.sha256[:12]}",
                f"{nb.size}B/sha256:{nb.sha256[:12]}",
            )
        if na.target != nb.target:
            differ(path, "symlink target", na.target, nb.target)
        if na.rdev != nb.rdev:
            differ(path, "device major,minor", na.rdev, nb.rdev)
        if na.xattrs != nb.xattrs:
            differ(path, "xattrs", dict(na.xattrs), dict(nb.xattrs))
        if na.mtime_ns != nb.mtime_ns:
            differ(path, "mtime", _fmt_mtime(na.mtime_ns), _fmt_mtime(nb.mtime_ns))

    ga, gb = hardlink_groups(ta), hardlink_groups(tb)
    reported: set[frozenset[bytes]] = set()
    common = ta.keys() & tb.keys()
    for path in sorted(ga.keys() & gb.keys()):
        group_a, group_b = ga[path], gb[path]
        if (group_a & common) != (group_b & common) and group_a not in reported:
            reported.add(group_a)
            reported.add(group_b)
            diffs.append(
                f"{show_path(path)}: hard links {a_name}={_group(group_a)} "
                f"{b_name}={_group(group_b)}"
            )
    return diffs


def format_diffs(diffs: list[str], limit: int = 60) -> str:
    shown = diffs[:limit]
    more = f"\n  ... and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return f"{len(diffs)} difference(s):\n  " + "\n  ".join(shown) + more


# ---------------------------------------------------------------------------------------
# The round trip
# ---------------------------------------------------------------------------------------


def umoci_unpack(ref: str, bundle: Path) -> Path:
    """`umoci unpack --image LAYOUT:TAG BUNDLE` (as root); returns BUNDLE/rootfs."""
    run(["umoci", "unpack", "--image", ref, bundle])
    return bundle / "rootfs"


def skopeo_to_oci(archive: Path, layout: Path, tag: str = "t") -> str:
    """`skopeo copy docker-archive:ARCHIVE oci:LAYOUT:TAG`; returns the umoci ref."""
    run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            f"docker-archive:{archive}",
            f"oci:{layout}:{tag}",
        ]
    )
    return f"{layout}:{tag}"


def _tar_key(name: str) -> str:
    """A tar member name as one key: `./a`, `/a`, `a/` and `a//b` all clean to `a`, `a/b`."""
    cleaned = posixpath.normpath("/" + name).lstrip("/")
    return cleaned or "."


def layer_problems(layer_tar: bytes) -> list[str]:
    """What the squashed layer must never hold (docs/merge-rules.md, rules 3, 6, 7, 8).

    The same path twice; a whiteout or opaque marker; an entry before its parent
    directory; a hard link before its target or with a target that is not clean and
    relative.
    """
    problems: list[str] = []
    with tarfile.open(fileobj=io.BytesIO(layer_tar), mode="r:", errors="surrogateescape") as t:
        members = t.getmembers()
    dirs = {_tar_key(m.name) for m in members if m.isdir()}
    seen: dict[str, tarfile.TarInfo] = {}
    for m in members:
        key = _tar_key(m.name)
        shown = repr(show(m.name.encode("utf-8", "surrogateescape")))
        if key in seen:
            problems.append(f"{shown}: the same path twice in the layer")
        if posixpath.basename(key).startswith(".wh."):
            problems.append(f"{shown}: a whiteout/opaque marker in the squashed layer")
        parent = posixpath.dirname(key) or "."
        if parent in dirs and parent not in seen and key != ".":
            problems.append(f"{shown}: comes before its parent directory {parent!r}")
        if m.islnk():
            target = m.linkname
            if target != _tar_key(target) or target.startswith("/"):
                problems.append(f"{shown}: hard link target {target!r} is not clean, relative")
            elif target not in seen:
                problems.append(f"{shown}: hard link comes before its target {target!r}")
        seen[key] = m
    return problems


@dataclasses.dataclass
class Roundtrip:
    source: str
    compression: str
    archive: Path
    original: Path  # umoci unpack of the source image: rootfs
    squashed: Path  # umoci unpack of the squashed image (via skopeo): rootfs
    diffs: list[str]

    def assert_ok(self, umoci_artifacts: Sequence[str] = ()) -> None:
        """The squashed image unpacks to the same tree as the original.

        `umoci_artifacts`: starts of difference lines that come from umoci's unpack of the
        original being wrong (the caller checks the squashed side for them by itself).
        (The squashed layer's own form, `layer_problems`, is judged in
        test_archive_format.py, so that one bug there does not fail every round trip.)
        """
        diffs = [d for d in self.diffs if not d.startswith(tuple(umoci_artifacts))]
        assert not diffs, (
            f"`squashd export {self.source} --layer-compression {self.compression}` does "
            f"not give the root filesystem of the original image; {format_diffs(diffs)}"
        )


def roundtrip(
    source: str,
    work: Path,
    *,
    reference: str | Path,
    compression: str = "none",
    extra_args: Sequence[str] = (),
    check: bool = True,
) -> Roundtrip:
    """Squash `source`, bring it back through skopeo + umoci, compare with the reference.

    `reference` is either a umoci ref (`LAYOUT:TAG`) of the original image, unpacked
    here, or an already unpacked rootfs directory (reuse one across compressions).
    With `check`, any difference fails the test with the list of differences (else call
    `assert_ok()` after checking the reference itself).
    """
    work.mkdir(parents=True, exist_ok=True)
    archive = work / f"squashed-{compression}.tar"
    squashd_export(source, archive, "--layer-compression", compression, *extra_args)
    ref_layout = skopeo_to_oci(archive, work / f"squashed-{compression}.oci")
    squashed = umoci_unpack(ref_layout, work / f"squashed-{compression}.bundle")
    if isinstance(reference, Path):
        original = reference
    else:
        original = umoci_unpack(reference, work / "original.bundle")
    result = Roundtrip(
        source, compression, archive, original, squashed, compare_trees(original, squashed)
    )
    if check:
        result.assert_ok()
    return result


def handmade_roundtrip(
    work: Path,
    layers: Sequence[LayerBuilder | bytes],
    *,
    compression: str = "none",
    input_compression: str | Sequence[str] = "gzip",
    config: dict | None = None,
    check: bool = True,
) -> Roundtrip:
    """Write the layers as an OCI layout, squash it, compare with umoci's unpack of it.

    umoci 0.4.7 cannot read tar+zstd layers, so when an input layer is zstd the
    reference is umoci's unpack of a twin layout holding the same tars gzip-compressed.
    """
    tars = [x.tar() if isinstance(x, LayerBuilder) else x for x in layers]
    if isinstance(input_compression, str):
        input_compression = [input_compression] * len(tars)
    img = write_oci_layout(work / "source", tars, compression=input_compression, config=config)
    reference = img.ref
    if "zstd" in input_compression:
        twin = ["gzip" if c == "zstd" else c for c in input_compression]
        reference = write_oci_layout(work / "twin", tars, compression=twin).ref
    return roundtrip(img.source, work, reference=reference, compression=compression, check=check)


# ---------------------------------------------------------------------------------------
# Reading squashed archives
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class SquashedArchive:
    """The parsed top of a squashed `docker save` archive."""

    members: dict[str, bytes]  # every regular file in the outer tar

    @classmethod
    def open(cls, path: Path) -> SquashedArchive:
        members: dict[str, bytes] = {}
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                if m.isfile():
                    assert m.name not in members, f"{m.name} twice in {path}"
                    f = tar.extractfile(m)
                    assert f is not None
                    members[m.name] = f.read()
        return cls(members)

    def json(self, name: str):
        assert name in self.members, f"{name} missing; archive has {sorted(self.members)}"
        return json.loads(self.members[name])

    @property
    def manifest_json(self) -> list:
        return self.json("manifest.json")

    @property
    def config(self) -> dict:
        return self.json(self.manifest_json[0]["Config"])

    @property
    def layer_name(self) -> str:
        layers = self.manifest_json[0]["Layers"]
        assert len(layers) == 1, f"expected exactly one layer, manifest.json has {layers}"
        return layers[0]

    @property
    def layer_blob(self) -> bytes:
        return self.members[self.layer_name]

    def layer_tar(self) -> bytes:
        return decompress(self.layer_blob)
