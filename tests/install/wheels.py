"""squashd built and installed as users get it: the checkout's files copied apart, an
sdist and wheels built from them with `python -m build`, a wheel read (its files and
modules), and a fresh venv with a wheel installed from PyPI's dependencies."""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from testbed.tools import require_tool, run

#: How long a build of the compiled core, or an install with its dependencies, may take.
SLOW = 900
#: The environment of the installed programs adds this: nothing of the checkout's (or
#: the user's) on their path, whatever the tests' environment says.
ISOLATED = {"PYTHONPATH": "", "PYTHONNOUSERSITE": "1"}

#: Imports each module named on the command line; prints {module: its file or the error}.
IMPORT_ALL = """
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = importlib.import_module(name).__file__
    except Exception as exc:
        found[name] = f"ERROR {exc!r}"
print(json.dumps(found))
"""


def import_problems(output: bytes, home: PurePosixPath) -> dict[str, str]:
    """Of IMPORT_ALL's output: each module that did not import, or not from under `home`
    (a site-packages), and why."""
    found: dict[str, str] = json.loads(output)
    return {
        name: where
        for name, where in found.items()
        if where.startswith("ERROR") or not PurePosixPath(where).is_relative_to(home)
    }


def checkout_files(repo: Path) -> list[Path]:
    """The checkout's files as git sees them (tracked, and new ones not ignored), relative:
    what the build gets, without the .venv, the compiled core or an earlier build."""
    listed = run(
        [require_tool("git"), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
    ).stdout.decode()
    return sorted(Path(name) for name in set(listed.split("\0")) if (repo / name).is_file())


def copy_checkout(repo: Path, dest: Path) -> list[Path]:
    """The checkout's files copied under `dest`, so that a build leaves nothing in the
    checkout and finds nothing an earlier build left there; the files copied."""
    files = checkout_files(repo)
    for relative in files:
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / relative, dest / relative)
    return files


def build(source: Path, out: Path, kind: str) -> Path:
    """`python -m build --KIND` of `source` (a directory or an sdist) into `out`: the
    sdist or the wheel it made."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    run([sys.executable, "-m", "build", f"--{kind}", "--outdir", out, source], timeout=SLOW)
    (made,) = set(out.iterdir()) - before
    return made


@dataclass(frozen=True)
class Wheel:
    path: Path

    def names(self) -> list[str]:
        with zipfile.ZipFile(self.path) as archive:
            return sorted(archive.namelist())

    def read(self, name: str) -> bytes:
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(name)

    def record_rows(self) -> list[str]:
        """RECORD's lines: a file, its hash and its size."""
        (record,) = [n for n in self.names() if n.endswith(".dist-info/RECORD")]
        return self.read(record).decode().splitlines()

    def record(self) -> list[str]:
        """The files RECORD lists."""
        return [row.split(",")[0] for row in self.record_rows()]

    def shipped(self) -> list[str]:
        """The files of the project in it: everything but the .dist-info."""
        return [n for n in self.record() if ".dist-info/" not in n]

    def modules(self) -> list[str]:
        """The importable modules RECORD lists: Python files and the compiled core."""
        names = set()
        for name in self.shipped():
            path = Path(name)
            if path.suffix == ".py":
                names.add(module_name(path))
            elif path.suffix == ".so":  # squash/x.cpython-311-x86_64-linux-gnu.so
                names.add(module_name(path.with_name(path.name.split(".")[0])))
        return sorted(names)


def module_name(path: Path) -> str:
    """squash/cli.py: squash.cli; squash/__init__.py: squash."""
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@dataclass(frozen=True)
class Venv:
    """A venv of its own (`python -m venv`), nothing of the checkout on its path."""

    root: Path

    @classmethod
    def create(cls, root: Path) -> Venv:
        run([sys.executable, "-m", "venv", root])
        return cls(root)

    def bin(self, name: str) -> Path:
        return self.root / "bin" / name

    def install(self, *requirements: str | Path) -> None:
        """pip install, dependencies from the package index (through pip's cache)."""
        run([self.bin("python"), "-m", "pip", "install", "--quiet", *requirements], timeout=SLOW)

    def site_packages(self) -> Path:
        (found,) = (self.root / "lib").glob("python3*/site-packages")
        return found
