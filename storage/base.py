"""The artifact store interface and the choice of store from a URL."""

import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, TypeAlias

from squash.sinks import Sink


@dataclass(frozen=True)
class Artifact:
    """A finished squashed archive in a store."""

    key: str
    size: int
    sha256: str  # hex, of the whole archive
    source_digest: str  # manifest digest of the image it was squashed from
    created: float  # unix time
    image: str = ""  # the repository it was squashed from (host/name): who may read it


@dataclass(frozen=True)
class Entry:
    """An artifact as a listing shows it: enough to decide what to evict."""

    key: str
    size: int
    created: float  # unix time


@dataclass(frozen=True)
class Location:
    """Where a client fetches an artifact: a presigned URL to redirect to, or a local file."""

    url: str | None = None
    path: Path | None = None
    filename: str | None = None  # what a browser saves the local file as
    offset: int = 0  # where the bytes handed out start in the local file
    length: int | None = None  # how many (None: to its end)


@dataclass(frozen=True)
class Member:
    """A blob of an archive as a byte range of it: what a registry pull fetches alone."""

    digest: str
    offset: int
    size: int


@dataclass(frozen=True)
class Upload:
    """An unfinished upload: an object store's multipart upload, a local temporary file."""

    key: str  # the artifact key it would become
    ident: str  # what `abort_upload` needs
    started: float  # unix time, as the store reports it


class Gone(Exception):
    """The archive of a record is no longer in the store: deleted behind the service's
    back (a lifecycle rule, by hand) while its record was still cached."""

    def __init__(self, key: str, where: str) -> None:
        super().__init__(f"artifact {key} is no longer in {where}")


ArtifactSink: TypeAlias = Sink[Artifact]
"""A sink whose commit makes the artifact visible and returns what was stored."""


class ArtifactStore(Protocol):
    @property
    def errors(self) -> tuple[type[Exception], ...]:
        """What the store raises when it cannot be reached (the service answers 503)."""
        ...

    def retryable(self, exc: BaseException) -> bool:
        """Is `exc` a failure of the store that may pass (a build tried again later)?"""
        ...

    def create(self, key: str, source_digest: str, image: str = "") -> ArtifactSink:
        """A sink for a new artifact; nothing is visible under `key` until it commits.

        The caller builds `key` alone (it holds the build lock), so what an earlier,
        dead build of `key` left unfinished is cleared first."""
        ...

    def stat(self, key: str) -> Artifact | None: ...

    def write_statement(self, key: str, data: bytes) -> None:
        """The provenance statement of the artifact `key`, kept beside its archive: a
        build writes it before the archive's commit, so an archive is never visible
        without it; a later build of `key` writes it again."""
        ...

    def read_statement(self, key: str) -> bytes | None:
        """The statement of `key`; None when there is none (an artifact built before
        statements were kept)."""
        ...

    def delete(self, key: str) -> None:
        """The archive and everything kept beside it (its record, its statement)."""
        ...

    def entries(self) -> Iterator[Entry]:
        """Every stored artifact, from a listing (no per-artifact requests)."""
        ...

    def uploads(self) -> Iterator[Upload]:
        """Every unfinished upload (the janitor's)."""
        ...

    def abort_upload(self, upload: Upload) -> None: ...

    def locate(self, key: str, method: str = "GET", filename: str | None = None) -> Location:
        """How a client downloads `key`; `filename` is what a browser should save it as."""
        ...

    def read(self, key: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes of the archive `key` from `offset` (fewer at its end);
        Gone if it is not there."""
        ...

    def locate_member(self, key: str, member: Member, method: str = "GET") -> Location:
        """How a client downloads one blob of the archive `key` by itself (a registry
        pull's layer): a range of the local file, or an object of its own in S3; Gone
        if the archive is not there."""
        ...

    def ping(self) -> None:
        """Raise if the store cannot be reached or written (readiness)."""
        ...

    def describe(self) -> str:
        """The store in a few words for messages, e.g. 's3://bucket/prefix'."""
        ...


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
