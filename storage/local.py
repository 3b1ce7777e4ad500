"""Artifacts as files in a directory: written under a temporary name, renamed when done.

`KEY.tar` is the archive and `KEY.json` its record (size, sha256, source digest,
created); the record is written first, so an archive is never visible without it.
`KEY.intoto.json` is its provenance statement. Unfinished archives are
`.KEY.tar.*.part` files beside them.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from squash.sinks import PlacedFile
from storage.base import (
    Artifact,
    Entry,
    Gone,
    Location,
    Member,
    Upload,
    check_key,
    now,
    sha256_of,
)

_PART = ".part"


class LocalSink(PlacedFile):
    """A file sink whose commit also records the artifact's size and sha256 beside it."""

    def __init__(self, store: LocalStore, key: str, source_digest: str, image: str) -> None:
        super().__init__(str(store.path(key)))
        self._store, self._key, self._source, self._image = store, key, source_digest, image

    def commit(self) -> Artifact:
        sha256 = sha256_of(self._file)
        artifact = Artifact(self._key, self._position, sha256, self._source, now(), self._image)
        self._store.write_metadata(artifact)  # before the archive appears under its name
        self.place()
        return artifact


class LocalStore:
    errors = (OSError,)

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def retryable(self, exc: BaseException) -> bool:
        return False  # a full disk is judged for every build, whatever the store

    def describe(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        return self.root / f"{check_key(key)}.tar"

    def _metadata_path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def create(self, key: str, source_digest: str, image: str = "") -> LocalSink:
        for upload in self.uploads():
            if upload.key == key:
                self.abort_upload(upload)
        return LocalSink(self, key, source_digest, image)

    def _statement_path(self, key: str) -> Path:
        return self.root / f"{check_key(key)}.intoto.json"

    def write_metadata(self, artifact: Artifact) -> None:
        _place(self._metadata_path(artifact.key), json.dumps(artifact.__dict__).encode())

    def write_statement(self, key: str, data: bytes) -> None:
        _place(self._statement_path(key), data)

    def read_statement(self, key: str) -> bytes | None:
        try:
            return self._statement_path(key).read_bytes()
        except FileNotFoundError:
            return None

    def stat(self, key: str) -> Artifact | None:
        if not self.path(key).is_file():
            return None
        try:
            return Artifact(**json.loads(self._metadata_path(key).read_text()))
        except (OSError, ValueError, TypeError):
            return None  # an archive without its record is not an artifact

    def delete(self, key: str) -> None:
        for path in (self.path(key), self._metadata_path(key), self._statement_path(key)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def entries(self) -> Iterator[Entry]:
        for path in sorted(self.root.glob("*.tar")):
            artifact = self.stat(path.stem)
            if artifact is not None:
                yield Entry(artifact.key, artifact.size, artifact.created)

    def uploads(self) -> Iterator[Upload]:
        for path in self.root.glob(f".*.tar.*{_PART}"):
            key = path.name[1:].rsplit(".tar.", 1)[0]  # keys may hold ".tar." too
            with contextlib.suppress(FileNotFoundError):
                yield Upload(key, str(path), path.stat().st_mtime)

    def abort_upload(self, upload: Upload) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(upload.ident)

    def locate(self, key: str, method: str = "GET", filename: str | None = None) -> Location:
        return Location(path=self.path(key), filename=filename)

    def read(self, key: str, offset: int, length: int) -> bytes:
        try:
            with open(self.path(key), "rb") as file:
                file.seek(offset)
                return file.read(length)
        except FileNotFoundError:
            raise Gone(key, self.describe()) from None

    def locate_member(self, key: str, member: Member, method: str = "GET") -> Location:
        if not self.path(key).is_file():
            raise Gone(key, self.describe())
        return Location(path=self.path(key), offset=member.offset, length=member.size)

    def ping(self) -> None:
        with tempfile.TemporaryFile(dir=self.root):
            pass


def _place(target: Path, data: bytes) -> None:
    """A small file written whole under a temporary name, then renamed."""
    temp = target.with_name(target.name + _PART)
    temp.write_bytes(data)
    os.replace(temp, target)
