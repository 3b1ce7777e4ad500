"""A Debian bookworm root made by `debootstrap --variant=minbase` from Debian's mirror:
the bench's image is built on one, squashd's own image (deploy/) too."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from testbed.process import log_tail
from testbed.tools import require_tool

DEBIAN_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"


def debootstrap(target: Path, log_path: Path, include: Sequence[str] = ()) -> None:
    """A minbase root in `target` (a new directory), with the packages `include` and
    their dependencies; debootstrap's output in `log_path`. Takes minutes."""
    argv = [require_tool("debootstrap"), "--variant=minbase"]
    if include:
        argv.append(f"--include={','.join(include)}")
    argv += [SUITE, str(target), DEBIAN_MIRROR]
    with open(log_path, "wb") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed; the end of its log:\n{log_tail(log_path)}")
