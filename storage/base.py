"""The artifact store interface and the choice of store from a URL."""

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from squash.sinks import Sink


@dataclass(frozen=True)
class Artifact:
    """A finished squashed archive in a store."""

    key: str
    size: int
    sha256: str  # hex, of the whole archive
    source_digest: str  # manifest digest of the image it was squashed from
    created: float  # unix time


class ArtifactSink(Sink, Protocol):
    def commit(self) -> Artifact:  # type: ignore[override]
        """Make the artifact visible; returns what was stored."""
        ...


class ArtifactStore(Protocol):
    def create(self, key: str, source_digest: str) -> ArtifactSink:
        """A sink for a new artifact; nothing is visible under `key` until it commits."""
        ...

    def stat(self, key: str) -> Artifact | None: ...

    def delete(self, key: str) -> None: ...


def sha256_of(file: BinaryIO) -> str:
    """sha256 of a whole file, from its start (an archive's final bytes, after patching)."""
    file.flush()
    file.seek(0)
    digest = hashlib.sha256()
    while chunk := file.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_key(key: str) -> str:
    """Artifact keys become file and object names: keep them plain."""
    if not _KEY.match(key):
        raise ValueError(f"artifact key {key!r} must be letters, digits, '.', '_' or '-'")
    return key


def now() -> float:
    return time.time()


def default_directory() -> Path:
    """Where the embedded default keeps artifacts: $XDG_CACHE_HOME/squashd/artifacts."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "squashd" / "artifacts"


def open_store(url: str | None) -> ArtifactStore:
    """`s3://bucket/prefix` (boto3's own settings) or a directory; none: the default dir."""
    if url and url.startswith("s3://"):
        from storage.s3 import S3Store

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return S3Store(bucket, prefix)
    from storage.local import LocalStore

    directory = url.removeprefix("file://") if url else None
    return LocalStore(Path(directory) if directory else default_directory())
