"""The `oci:DIR[:TAG]` destination: an OCI image layout, new or existing.

Blobs are written under a temporary name in `blobs/sha256/` and renamed to their digest
once complete (one already there is kept); the manifest joins `index.json` at commit,
replacing an entry of the same tag, by an atomic rename of the new index. A failed export
leaves no index entry and no partial blob, and no layout at all if it made the
directory.

A referrer (the image's provenance) joins the index too, without a ref name, so tools
that list a layout's tags see the image alone; it replaces a statement squashd attached
to the same image before."""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, BinaryIO

from squash.destination import copy_stored
from squash.errors import SquashError
from squash.image import StoredLayer
from squash.oci import (
    OCI_LAYOUT,
    OCI_MANIFEST,
    REF_NAME,
    Blob,
    JSONObject,
    Referrer,
    blob_of,
    descriptor,
    dumps,
    index_of,
)
from squash.provenance import is_ours
from squash.streams import Chunk


class OCILayout:
    def __init__(self, directory: str, tag: str | None) -> None:
        self.directory, self.tag_name = directory, tag
        self._created = not os.path.exists(directory)  # removed again if the export fails
        self._blobs = os.path.join(directory, "blobs", "sha256")
        marker = os.path.join(directory, "oci-layout")
        if os.path.exists(marker):
            with open(marker, "rb") as f:
                version = json.loads(f.read() or b"{}").get("imageLayoutVersion")
            if version != OCI_LAYOUT["imageLayoutVersion"]:
                raise SquashError(f"{directory}: an OCI layout of version {version!r}")
        elif os.path.isdir(directory) and os.listdir(directory):
            raise SquashError(f"{directory}: not empty and not an OCI layout")
        os.makedirs(self._blobs, exist_ok=True)
        if not os.path.exists(marker):
            self._place(marker, dumps(OCI_LAYOUT))
        self._temps: set[str] = set()
        self._entry: dict[str, Any] | None = None
        self._referrers: list[Referrer] = []

    def _path(self, digest: str) -> str:
        return os.path.join(self._blobs, digest.removeprefix("sha256:"))

    def _temp(self) -> tuple[str, BinaryIO]:
        fd, path = tempfile.mkstemp(prefix=".squashd-", suffix=".part", dir=self._blobs)
        self._temps.add(path)
        return path, os.fdopen(fd, "wb", buffering=1 << 20)

    def _settle(self, temp: str, digest: str) -> None:
        """A finished temporary blob under its digest's name."""
        os.replace(temp, self._path(digest))
        self._temps.discard(temp)

    def _place(self, path: str, data: bytes) -> None:
        """A small file written whole under a temporary name, then renamed."""
        directory = os.path.dirname(path)
        fd, temp = tempfile.mkstemp(prefix=".squashd-", suffix=".part", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(temp, 0o644)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def layer(self) -> "_FileUpload":
        return _FileUpload(self, *self._temp())

    def kept(self, layer: StoredLayer, blob: Blob) -> None:
        if _has(self._path(blob.digest), blob.size):
            return
        temp, out = self._temp()
        with out:
            copy_stored(layer, blob, out.write)
        self._settle(temp, blob.digest)

    def document(self, data: bytes, media_type: str) -> Blob:
        blob = blob_of(data, media_type)
        if not _has(self._path(blob.digest), blob.size):
            self._place(self._path(blob.digest), data)
        return blob

    def tag(self, manifest: Blob, repo_tag: str, full_name: str) -> str:
        name = self.tag_name or repo_tag.rpartition(":")[2]
        self._entry = descriptor(manifest, {REF_NAME: name})
        return name

    def attach(self, referrer: Referrer) -> None:
        for blob, data in referrer.blobs:
            self.document(data, blob.media_type)
        self.document(referrer.manifest, OCI_MANIFEST)
        self._referrers.append(referrer)

    def _replaced(self, entry: JSONObject) -> bool:
        """Is `entry` a statement of ours about an image this export attaches one to?"""
        if not is_ours(entry):
            return False
        try:
            with open(self._path(entry["digest"]), "rb") as f:
                subject = json.load(f)["subject"]["digest"]
        except (OSError, ValueError, KeyError, TypeError):
            return False  # not ours to judge: left as it is
        return any(referrer.subject.digest == subject for referrer in self._referrers)

    def commit(self) -> None:
        """The manifest joins the index (an entry of the same tag is replaced), and its
        referrers after it (replacing our earlier statements of the same image)."""
        assert self._entry is not None, "commit before tag"
        path = os.path.join(self.directory, "index.json")
        index = index_of([])
        if os.path.exists(path):
            with open(path, "rb") as f:
                try:
                    index = json.load(f)
                except ValueError as exc:
                    raise SquashError(f"{path}: not an OCI index ({exc})") from None
            if not isinstance(index, dict):
                raise SquashError(f"{path}: not an OCI index")
        name = self._entry["annotations"][REF_NAME]
        index["manifests"] = [
            m
            for m in index.get("manifests") or []
            if (m.get("annotations") or {}).get(REF_NAME) != name and not self._replaced(m)
        ] + [self._entry, *(referrer.entry() for referrer in self._referrers)]
        self._place(path, dumps(index))

    def abort(self) -> None:
        for temp in list(self._temps):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        self._temps.clear()
        if self._created:
            shutil.rmtree(self.directory, ignore_errors=True)


def _has(path: str, size: int) -> bool:
    try:
        return os.path.getsize(path) == size
    except OSError:
        return False


class _FileUpload:
    def __init__(self, layout: OCILayout, temp: str, file: BinaryIO) -> None:
        self._layout, self._temp, self._file = layout, temp, file

    def write(self, data: Chunk) -> None:
        self._file.write(data)

    def done(self, blob: Blob) -> None:
        self._file.close()
        os.chmod(self._temp, 0o644)
        self._layout._settle(self._temp, blob.digest)
