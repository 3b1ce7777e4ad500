"""Where a server's time goes under load: py-spy samples its processes while wrk runs.

py-spy reads the processes' stacks from outside (`--nonblocking`: it never stops them, so
the rates measured meanwhile stay those of the unprofiled run, within its own CPU), only of
the thread holding the GIL (`--gil`: Python's own work, not a thread waiting on a socket or
a lock, nor the event loop waiting in epoll; C code that lets the GIL go is not seen), and
writes collapsed stacks (`frame;frame;... count`), which `hot_spots` sums into the
functions that were running (self) and the functions of ours they were called from
(inclusive).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RATE = 250  # samples a second
# our own packages, for the inclusive view (the frames a request goes through)
# (py-spy names a file by its path below sys.path: `squash/distribution/heads.py`)
OURS = re.compile(r"\((web|tasks|storage|squash)/[^()]+\.py:\d+\)$")


@dataclass
class HotSpots:
    """Sample counts: all of them, by running frame, and by frame of ours on the stack."""

    samples: int
    own: Counter[str]
    within: Counter[str]

    def by_package(self) -> Counter[str]:
        """Self samples by the package (or stdlib module) of the running frame."""
        packages: Counter[str] = Counter()
        for frame, n in self.own.items():
            where = frame.rpartition(" (")[2].rstrip(")").rsplit(":", 1)[0]
            first = where.split("/", 1)[0]
            packages[first.removesuffix(".py") or "?"] += n
        return packages

    def report(self, label: str, top: int = 12) -> str:
        """The heaviest packages and frames as tables of shares of all samples."""
        lines = [f"profile of {label}: {self.samples:,} samples of the web processes' GIL"]
        tables = (
            ("running, by package or module", self.by_package()),
            ("running (self)", self.own),
            ("inside, ours", self.within),
        )
        for title, counts in tables:
            lines.append(f"  {title}:")
            for frame, n in counts.most_common(top):
                lines.append(f"    {100 * n / (self.samples or 1):5.1f}%  {_short(frame)}")
        return "\n".join(lines)


@contextlib.contextmanager
def sampled(pids: list[int], seconds: int, out: Path) -> Iterator[list[Path]]:
    """py-spy on each of `pids` for `seconds`; the files it wrote are in the list once the
    block is done (a process py-spy could not read is left out, said on stderr)."""
    beside = Path(sys.executable).with_name("py-spy")  # the venv's, without it on PATH
    program = str(beside) if beside.exists() else shutil.which("py-spy")
    if program is None:
        raise FileNotFoundError("py-spy is not installed (make profile installs it)")
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{pid}.txt" for pid in pids]
    for stale in out.glob("*.txt"):  # an earlier run's
        stale.unlink()
    cmd = [program, "record", "--nonblocking", "--gil", "--format", "raw", "-r", str(RATE)]
    spies = [
        subprocess.Popen(
            [*cmd, "-d", str(seconds), "-o", str(f), "-p", str(pid)], stdout=subprocess.DEVNULL
        )
        for pid, f in zip(pids, files, strict=True)
    ]
    written: list[Path] = []
    try:
        yield written
    finally:
        for spy in spies:
            spy.wait(timeout=seconds + 60)
        written += [f for f in files if f.exists()]


def hot_spots(files: list[Path]) -> HotSpots:
    """Sum collapsed stacks: each line is `frame;frame;...;frame count`, outermost first."""
    own: Counter[str] = Counter()
    within: Counter[str] = Counter()
    samples = 0
    for path in files:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            samples += n
            own[frames[-1]] += n
            for frame in set(frames):
                if OURS.search(frame):
                    within[frame] += n
    return HotSpots(samples, own, within)


def _short(frame: str) -> str:
    """`handle (/x/y/web/app.py:12)` -> `handle (web/app.py:12)`; others keep a short path."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    parts = where.split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if where else name
