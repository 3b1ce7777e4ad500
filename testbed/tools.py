"""The programs and Python packages the servers need, and running a program.

Missing ones raise `MissingTool` (never skip): the caller decides what a missing tool
means (tests/conftest.py fails the test with the message; the bench exits with it).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from typing import IO, Any


class MissingTool(RuntimeError):
    """A program or a Python package needed to run a server is not installed."""


def require_tool(name: str) -> str:
    """The path of an external program on PATH; `MissingTool` when there is none."""
    path = shutil.which(name)
    if path is None:
        raise MissingTool(
            f"required tool {name!r} is not on PATH; install the Debian package "
            f"(`make debs DEBS={name}`)"
        )
    return path


def require_module(module: str, package: str) -> None:
    """`MissingTool` when the Python package `package` (module `module`) is missing."""
    if importlib.util.find_spec(module) is None:
        raise MissingTool(
            f"the Python package {package!r} is missing (module {module!r}); "
            "run `make test-install` (it installs the `test` dependency group of pyproject.toml)"
        )


def show(value: bytes | str) -> str:
    """Bytes as text for a message, undecodable bytes as backslash escapes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    timeout: float = 120,
    stdout: int | IO[Any] | None = subprocess.PIPE,
    env: dict[str, str] | None = None,
    cwd: os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command; with `check`, a non-zero exit fails with the command and its output.

    `env` adds to (does not replace) this process's environment.
    """
    argv = [os.fspath(c) for c in cmd]
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=timeout,
        check=False,
        env={**os.environ, **env} if env else None,
        cwd=cwd,
    )
    if check and proc.returncode != 0:
        out = proc.stdout if isinstance(proc.stdout, bytes) else b""
        raise AssertionError(
            f"command failed (exit {proc.returncode}): {shlex.join(argv)}\n"
            f"--- stdout ---\n{show(out[-4000:])}\n"
            f"--- stderr ---\n{show(proc.stderr[-4000:])}"
        )
    return proc
