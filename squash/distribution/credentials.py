"""Registry credentials: --creds, the service's environment, REGISTRY_AUTH_FILE and
docker's config.json."""

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squash.errors import SquashError
from squash.reference import DOCKER_HUB

# Docker Hub's credentials are stored under its legacy v1 address, among others.
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    @classmethod
    def parse(cls, text: str) -> "Credentials":
        """USER:PASS, as skopeo's --creds takes them."""
        username, sep, password = text.partition(":")
        if not sep or not username:
            raise SquashError("credentials must be USER:PASSWORD")
        return cls(username, password)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def auth_files() -> list[Path]:
    """Where credentials are looked up, first match wins (as podman and docker do)."""
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    docker_dir = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    files.append(Path(docker_dir) / "config.json")
    return files


def _keys(registry: str) -> tuple[str, ...]:
    if registry == DOCKER_HUB:
        return _HUB_KEYS
    return (registry, f"https://{registry}", f"http://{registry}")


def _entry(entry: dict[str, Any], where: Path) -> Credentials | None:
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"]).decode()
        except (ValueError, UnicodeDecodeError):
            raise SquashError(f"{where}: an 'auth' entry is not base64 USER:PASSWORD") from None
        return Credentials.parse(decoded)
    if entry.get("username"):
        return Credentials(entry["username"], entry.get("password", ""))
    return None


def from_environment(registry: str) -> Credentials | None:
    """The service's own credentials: SQUASHD_REGISTRY_USERNAME/PASSWORD, for the
    upstream named by SQUASHD_REGISTRY only, so they never reach another registry."""
    upstream = os.environ.get("SQUASHD_REGISTRY", "").removeprefix("https://")
    upstream = upstream.removeprefix("http://").rstrip("/")
    username = os.environ.get("SQUASHD_REGISTRY_USERNAME")
    if not username or not upstream or upstream.split("/")[0] != registry:
        return None
    return Credentials(username, os.environ.get("SQUASHD_REGISTRY_PASSWORD", ""))


def lookup(registry: str) -> Credentials | None:
    """Credentials for `registry` (host[:port], docker.io for Docker Hub): the service's
    environment first, then the auth files."""
    found = from_environment(registry)
    if found is not None:
        return found
    for path in auth_files():
        try:
            config = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise SquashError(f"cannot read credentials from {path}: {exc}") from None
        auths = config.get("auths") if isinstance(config, dict) else None
        if not isinstance(auths, dict):
            continue
        for key in _keys(registry):
            if isinstance(auths.get(key), dict):
                found = _entry(auths[key], path)
                if found is not None:
                    return found
    return None
