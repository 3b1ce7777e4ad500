"""A private dockerd and a private containerd, started and stopped by the tests and the
bench, each with every path of its own under one short directory (unix socket paths are
limited to 108 bytes).

Both run as root on this machine (Debian's `docker.io` brings dockerd, containerd and
runc): data root, exec root, pid file and API socket for dockerd; root, state, gRPC and
ttrpc sockets for containerd, whose CRI plugin is disabled. Nothing listens on TCP,
dockerd touches no iptables and makes no bridge. A daemon that does not start raises
StartFailed with the last lines of its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from testbed.process import StartFailed, log_tail, spawn, terminate
from testbed.tools import require_tool, run


def short_dir(prefix: str) -> Path:
    """A new directory under /tmp with a short path, for daemons' unix sockets."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def _unmount_under(root: Path) -> None:
    """Unmount whatever a daemon left mounted under `root` (deepest first)."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    prefix = str(root) + "/"
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


class Daemon:
    """A daemon process of ours: started in `root`, logged to `root/NAME.log`."""

    name = "daemon"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log_path = root / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def log(self, limit: int = 3000) -> str:
        return log_tail(self.log_path, limit)

    def start(self, timeout: float = 60) -> Daemon:
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(self._argv(), self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise StartFailed(f"{self.name} did not start; the end of its log:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout=30)
            self.proc = None
        _unmount_under(self.root)


class Dockerd(Daemon):
    """`dockerd` with its own data root, exec root, pid file and socket; overlay2;
    `config` as its daemon.json (e.g. `registry-mirrors`), none of the machine's."""

    name = "dockerd"

    def __init__(
        self,
        root: Path,
        insecure_registries: Sequence[str] = (),
        config: dict[str, object] | None = None,
    ) -> None:
        super().__init__(root)
        self.socket = root / "docker.sock"
        self.insecure_registries = list(insecure_registries)
        self.config = config or {}
        self._docker = require_tool("docker")
        self._dockerd = require_tool("dockerd")
        for tool in ("containerd", "runc"):
            require_tool(tool)

    def _argv(self) -> list[str]:
        argv = [
            self._dockerd,
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "dockerd.pid"),
            "--host", f"unix://{self.socket}",
            "--storage-driver", "overlay2",
            "--iptables=false", "--ip6tables=false", "--bridge=none",
        ]  # fmt: skip
        for registry in self.insecure_registries:
            argv += ["--insecure-registry", registry]
        config = self.root / "daemon.json"
        config.write_text(json.dumps(self.config))
        return [*argv, "--config-file", str(config)]

    def _ready(self) -> bool:
        if not self.socket.exists():
            return False
        probe = subprocess.run(
            [*self.argv(), "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            check=False,
            timeout=10,
        )
        return probe.returncode == 0

    def argv(self) -> list[str]:
        return [self._docker, "--host", f"unix://{self.socket}"]

    @property
    def version(self) -> str:
        return self.text("version", "--format", "{{.Server.Version}}")

    @property
    def reads_zstd(self) -> bool:
        """Docker decompresses zstd layers since 23.0 (Debian 12's docker.io is 20.10)."""
        return int(self.version.split(".")[0]) >= 23

    def env(self) -> dict[str, str]:
        """For the docker client: the legacy builder, no config of the machine's."""
        config = self.root / "client-config"
        config.mkdir(exist_ok=True)
        return {"DOCKER_BUILDKIT": "0", "DOCKER_CONFIG": str(config)}

    def docker(self, *args: str | os.PathLike, timeout: float = 300, **kw):
        """`docker ARGS` against this daemon; a failure shows the daemon's log too."""
        try:
            return run([*self.argv(), *args], timeout=timeout, env=self.env(), **kw)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- dockerd log ---\n{self.log()}") from None

    def text(self, *args: str | os.PathLike) -> str:
        return self.docker(*args).stdout.decode().strip()

    def logs(self, container: str) -> str:
        """`docker logs CONTAINER`: what it wrote to stdout and stderr, as text."""
        proc = self.docker("logs", container, check=False)
        return (proc.stdout + proc.stderr).decode(errors="replace")

    def load(self, archive: Path) -> list[str]:
        """`docker load -i ARCHIVE`: the names it reports ('Loaded image: X')."""
        out = self.text("load", "-i", archive)
        return [line.split(": ", 1)[1] for line in out.splitlines() if ": " in line]

    def exported(self, image: str) -> bytes:
        """`docker create` + `docker export` of `image`: its container's root as a tar."""
        container = self.text("create", "--network", "none", image)
        try:
            return self.docker("export", container).stdout
        finally:
            self.docker("rm", "-f", container)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                ids = self.text("ps", "-aq").split()
                if ids:
                    self.docker("rm", "-f", *ids)
        super().stop()


class Containerd(Daemon):
    """`containerd` with a config file of its own; `ctr` talks to it in namespace `squashd`."""

    name = "containerd"
    namespace = "squashd"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.address = root / "grpc.sock"
        self.config = root / "config.toml"
        self._containerd = require_tool("containerd")
        self._ctr = require_tool("ctr")
        require_tool("runc")

    def _argv(self) -> list[str]:
        self.config.write_text(
            "version = 2\n"
            f'root = "{self.root / "root"}"\n'
            f'state = "{self.root / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.address}"\n'
            f'[ttrpc]\n  address = "{self.root / "ttrpc.sock"}"\n'
            '[debug]\n  address = ""\n'
            '[metrics]\n  address = ""\n'
        )
        return [self._containerd, "--config", str(self.config)]

    def _ready(self) -> bool:
        if not self.address.exists():
            return False
        probe = subprocess.run(
            [*self.argv(), "version"], capture_output=True, check=False, timeout=10
        )
        return probe.returncode == 0

    def argv(self) -> list[str]:
        return [self._ctr, "--address", str(self.address), "--namespace", self.namespace]

    def ctr(self, *args: str | os.PathLike, timeout: float = 300, **kw):
        try:
            return run([*self.argv(), *args], timeout=timeout, **kw)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- containerd log ---\n{self.log()}") from None

    def text(self, *args: str | os.PathLike) -> str:
        return self.ctr(*args).stdout.decode().strip()

    def images(self) -> list[str]:
        return self.text("images", "list", "--quiet").split()

    def content(self, digest: str) -> bytes:
        return self.ctr("content", "get", digest).stdout


def remove_tree(root: Path) -> None:
    _unmount_under(root)
    shutil.rmtree(root, ignore_errors=True)


D = TypeVar("D", bound=Daemon)


@contextlib.contextmanager
def started(prefix: str, make: Callable[[Path], D]) -> Iterator[D]:
    """A daemon started in a short directory of its own (its sockets' paths must be
    short), stopped and the directory removed afterwards."""
    root = short_dir(prefix)
    daemon = make(root)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        remove_tree(root)
