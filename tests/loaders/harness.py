"""What the loader tests judge with beside the daemons (testbed/daemons.py): podman with
state of its own, and a container's root as `docker export` shows it (`RootTree`)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from testbed.tools import run

#: Files and directories a container runtime makes in every container's root itself.
RUNTIME_MADE = (
    ".dockerenv",
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/mtab",
    "dev",
    "proc",
    "sys",
)


class Podman:
    """podman with all its state under `root` (and a short run root: podman wants its
    path under 50 characters)."""

    def __init__(self, binary: str, root: Path, runroot: Path):
        for sub in ("storage", "tmp", "net", "vartmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        conf = root / "containers.conf"
        conf.write_text('[network]\nnetwork_backend = "cni"\n')
        auth = root / "auth.json"  # credentials of its own: none
        auth.write_text("{}")
        self.env = {
            "CONTAINERS_CONF": str(conf),
            "TMPDIR": str(root / "vartmp"),
            "REGISTRY_AUTH_FILE": str(auth),
        }
        self.argv = [
            binary,
            "--root",
            str(root / "storage"),
            "--runroot",
            str(runroot),
            "--tmpdir",
            str(root / "tmp"),
            "--network-config-dir",
            str(root / "net"),
            "--storage-driver",
            "vfs",
            "--events-backend",
            "file",
            "--cgroup-manager",
            "cgroupfs",
        ]

    def __call__(self, *args: str, check: bool = True):
        return run([*self.argv, *args], env=self.env, check=check)

    def inspect(self, ref: str) -> dict:
        out = self("image", "inspect", ref).stdout
        data = json.loads(out)
        assert len(data) == 1, data
        return data[0]


# ---------------------------------------------------------------------------------------
# What a container's root holds, read from `docker export`
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One path of a container's root as the loaders' export tar shows it."""

    kind: str  # file, dir, symlink, fifo, chr, blk
    mode: int
    uid: int
    gid: int
    content: str | None  # sha256 of a file's bytes
    target: str | None  # of a symlink
    device: tuple[int, int] | None
    xattrs: tuple[tuple[str, str], ...]
    mtime: int | None  # of non-directories (directories' change with what runs in them)


_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.FIFOTYPE: "fifo",
    tarfile.CHRTYPE: "chr",
    tarfile.BLKTYPE: "blk",
}


@dataclass
class RootTree:
    entries: dict[str, Entry]
    links: list[frozenset[str]]  # hard-link groups of two or more names

    @classmethod
    def of_export(cls, data: bytes, ignore: Sequence[str] = RUNTIME_MADE) -> RootTree:
        entries: dict[str, Entry] = {}
        groups: dict[str, set[str]] = {}
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:", errors="surrogateescape") as tar:
            for m in tar:
                name = m.name.removeprefix("./").strip("/")
                if not name or any(name == x or name.startswith(x + "/") for x in ignore):
                    continue
                xattrs = tuple(
                    sorted(
                        (k.removeprefix("SCHILY.xattr."), v)
                        for k, v in m.pax_headers.items()
                        if k.startswith("SCHILY.xattr.")
                    )
                )
                if m.islnk():
                    target = m.linkname.removeprefix("./").strip("/")
                    first = entries[target]
                    entries[name] = first
                    group = groups.setdefault(target, {target})
                    group.add(name)
                    groups[name] = group
                    continue
                kind = _KINDS[m.type]
                content = None
                if kind == "file":
                    f = tar.extractfile(m)
                    assert f is not None
                    content = sha256(f.read()).hexdigest()
                entries[name] = Entry(
                    kind,
                    m.mode & 0o7777,  # Go writers add the type bits, others not
                    m.uid,
                    m.gid,
                    content,
                    m.linkname if kind == "symlink" else None,
                    (m.devmajor, m.devminor) if kind in ("chr", "blk") else None,
                    xattrs,
                    None if kind == "dir" else int(m.mtime),
                )
        links = {frozenset(g) for g in groups.values()}
        return cls(entries, sorted(links, key=sorted))

    def differences(self, other: RootTree) -> list[str]:
        """What differs between two roots, one line each (empty when equal)."""
        out = []
        for name in sorted(self.entries.keys() | other.entries.keys()):
            mine, theirs = self.entries.get(name), other.entries.get(name)
            if mine != theirs:
                out.append(f"{show(name)}: {mine} != {theirs}")
        if self.links != other.links:
            out.append(f"hard-link groups: {self.links} != {other.links}")
        return out


def show(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
