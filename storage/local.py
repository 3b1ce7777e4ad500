"""Artifacts as files in a directory: written under a temporary name, renamed when done."""

import contextlib
import json
import os
from pathlib import Path

from squash.sinks import FileSink
from storage.base import Artifact, check_key, now, sha256_of


class LocalSink(FileSink):
    """A file sink whose commit also records the artifact's size and sha256 beside it."""

    def __init__(self, store: "LocalStore", key: str, source_digest: str) -> None:
        super().__init__(str(store.path(key)))
        self._store, self._key, self._source = store, key, source_digest

    def commit(self) -> Artifact:  # type: ignore[override]
        artifact = Artifact(self._key, self._position, sha256_of(self._file), self._source, now())
        self._store.write_metadata(artifact)  # before the archive appears under its name
        super().commit()
        return artifact


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / f"{check_key(key)}.tar"

    def _metadata_path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def create(self, key: str, source_digest: str) -> LocalSink:
        return LocalSink(self, key, source_digest)

    def write_metadata(self, artifact: Artifact) -> None:
        target = self._metadata_path(artifact.key)
        temp = target.with_suffix(".json.part")
        temp.write_text(json.dumps(artifact.__dict__))
        os.replace(temp, target)

    def stat(self, key: str) -> Artifact | None:
        if not self.path(key).is_file():
            return None
        try:
            return Artifact(**json.loads(self._metadata_path(key).read_text()))
        except (OSError, ValueError, TypeError):
            return None  # an archive without its record is not an artifact

    def delete(self, key: str) -> None:
        for path in (self.path(key), self._metadata_path(key)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
