"""The base of `make image` where Docker Hub is out of reach: Debian bookworm's minbase
root with python3 and python3-venv, trimmed of what a service never reads, as a tar that
`docker import` makes an image of. Built once and kept (a few minutes of debootstrap);
the Dockerfile's default base, python:3.11-slim, is the same kind of root.

Trimmed: the package lists and downloaded .debs (apt-get update fetches them again),
documentation but the copyright files, man and info pages, translations (squashd speaks
English), logs, and /dev (the runtime makes its own). dpkg is told to leave the same out
of packages installed later.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from testbed import debian
from testbed.tools import require_tool

#: Bump when the packages or the trimming change: a kept base of another recipe is rebuilt.
RECIPE = "1"
PACKAGES = ("python3", "python3-venv")
#: What `docker import` gives the image: a root tar has no configuration of its own.
CONFIG = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
)

#: dpkg's own filter, so that a later `apt-get install` in a derived image stays trimmed.
DPKG_EXCLUDES = """\
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
"""


def _emptied(directory: Path, keep: Callable[[Path], bool] = lambda path: False) -> int:
    """Everything under `directory` removed but what `keep` says yes to (and the
    directories that hold it); the bytes removed."""
    removed = 0
    for path in sorted(directory.rglob("*"), reverse=True):  # children before parents
        if keep(path):
            continue
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        else:
            removed += path.lstat().st_size
            path.unlink()
    return removed


def trim(root: Path) -> int:
    """Remove from a fresh root what the image never reads (the module docstring); the
    bytes removed."""
    usr_share = root / "usr/share"
    removed = _emptied(usr_share / "doc", keep=lambda path: path.name == "copyright")
    removed += _emptied(usr_share / "locale", keep=lambda path: path.name == "locale.alias")
    for directory in ("man", "info", "lintian"):
        removed += _emptied(usr_share / directory)
    lists = root / "var/lib/apt/lists"
    removed += _emptied(lists, keep=lambda path: path.name in ("lock", "partial"))
    removed += _emptied(root / "var/cache/apt", keep=lambda path: path.is_dir())
    removed += _emptied(
        root / "var/cache/debconf", keep=lambda path: not path.name.endswith("-old")
    )
    removed += _emptied(root / "var/log", keep=lambda path: path.is_dir())
    removed += _emptied(root / "dev")
    (root / "etc/dpkg/dpkg.cfg.d/squashd-trim").write_text(DPKG_EXCLUDES)
    return removed


def base_tar(cache: Path, log: Callable[[str], None]) -> Path:
    """The trimmed root as a tar in `cache`, made if it is not there yet."""
    tar = cache / f"debian-{debian.SUITE}-python3.recipe-{RECIPE}.tar"
    if tar.exists():
        return tar
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob("debian-*.tar"):
        stale.unlink()
    root = cache / "rootfs.tmp"
    shutil.rmtree(root, ignore_errors=True)
    log(f"debootstrap --variant=minbase {debian.SUITE} + {', '.join(PACKAGES)} (a few minutes)")
    debian.debootstrap(root, cache / "debootstrap.log", PACKAGES)
    log(f"trimmed {trim(root) / 2**20:.0f} MiB")
    partial = tar.with_suffix(".part")
    argv = [require_tool("tar"), "--create", "--numeric-owner", "--xattrs", "--sort=name"]
    subprocess.run([*argv, "--file", str(partial), "--directory", str(root), "."], check=True)
    shutil.rmtree(root)
    partial.rename(tar)
    return tar
