"""A server in a process of its own on 127.0.0.1 and a free port, and small HTTP helpers.

`ServerProcess` is the base of every server of the testbed: subclasses say how to run it
(`_argv`, `_env`) and when it answers (`_ready`); `start()` chooses a free port (and keeps
it across `stop()` / `start()`), waits until the server answers and raises `StartFailed`,
with the end of its log, when it does not.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Self

HOST = "127.0.0.1"


class StartFailed(RuntimeError):
    """A server did not start (it exited, or did not answer in time); the message names
    it and its address and ends with the last lines of its log."""


# ---------------------------------------------------------------------------------------
# Small network helpers
# ---------------------------------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    """A port nobody listens on right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def http_get(
    url: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    timeout: float = 10,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one request; HTTP errors too."""
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context) if context else urllib.request.HTTPHandler,
        _NoRedirect,
    )
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def answers(url: str) -> bool:
    """A GET of `url` answers 200 (False too while nothing listens there yet)."""
    try:
        return http_get(url, timeout=2)[0] == 200
    except OSError:
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> None:
        return None


def log_tail(path: Path, limit: int = 4000) -> str:
    """The end of a server's log, for failure messages."""
    try:
        return path.read_text("utf-8", "replace")[-limit:]
    except OSError as e:
        return f"<no log: {e}>"


def spawn(
    argv: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """`argv` in a session of its own (a signal to the group reaches all of it), stdin
    closed, stdout and stderr appended to `log_path`; `env` None: this process's own,
    `cwd` None: this process's working directory."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it lingers; waits for the process either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


# ---------------------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------------------


class ServerProcess:
    """A server in its own process on 127.0.0.1: a free port chosen at the first
    `start()` and kept across `stop()` / `start()`; its log under `root`.
    Subclasses say how to run it (`_argv`, `_env`) and when it answers (`_ready`)."""

    what = "server"

    def __init__(self, root: Path, log_name: str) -> None:
        self.root = root
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / log_name

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None  # the starting process's own

    def _cwd(self) -> Path | None:
        return None  # the starting process's own

    def _ready(self) -> bool:
        raise NotImplementedError

    def log(self) -> str:
        return log_tail(self.log_path)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30) -> Self:
        """Starts the server (a no-op when it runs). The first start picks a free port;
        later ones reuse it, and fail loudly (`StartFailed`) if someone else took it
        meanwhile."""
        if self.running:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        fixed = self.port != 0
        for _attempt in range(1 if fixed else 3):  # a free port may be taken before bind
            if not fixed:
                self.port = free_port()
            self.proc = spawn(self._argv(), self.log_path, self._env(), self._cwd())
            if self._wait_ready(timeout):
                return self
            if fixed or "address already in use" not in self.log().lower():
                break
        self.stop()
        raise StartFailed(f"{self.what} did not start on {HOST}:{self.port}; log:\n{self.log()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                if self._ready():
                    return True
            time.sleep(0.02)
        return False

    def children(self) -> list[int]:
        """PIDs of the main process's children (a worker's pool, uvicorn's workers)."""
        assert self.proc is not None
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                found.append(int(stat.parent.name))
        return found

    def stop(self) -> None:
        """SIGTERM (then SIGKILL); the port is kept for the next `start()`."""
        if self.proc is None:
            return
        terminate(self.proc)
        self.proc = None
