"""The `docker-archive:FILE[:NAME:TAG]` source: a `docker save` tar.

Both layouts: the classic one (`<id>/layer.tar`, layers possibly symlinks to another
layer's tar) and Docker 25+'s (`blobs/sha256/<digest>`). Layers are read in place.
"""

import hashlib
import os
import posixpath
import re
import tarfile

from squash.errors import SquashError
from squash.image import Image, StoredLayer
from squash.oci import JSONObject, parse_json, parse_object
from squash.reference import (
    Platform,
    SourceRef,
    familiar_name,
    full_name,
    sanitize_name,
    split_name_tag,
)
from squash.sources.descriptors import MAX_DOCUMENT, check_digest, layer_label
from squash.sources.files import FileLayer
from squash.streams import read_exactly
from squash.verify import verify_bytes

_BLOB_PATH = re.compile(r"^blobs/(sha256|sha512)/([a-f0-9]+)$")


class _Archive:
    def __init__(self, path: str, what: str) -> None:
        self.path, self.what = path, what
        try:
            with tarfile.open(path, "r:") as tar:
                self.members = {posixpath.normpath(m.name.lstrip("/")): m for m in tar.getmembers()}
        except FileNotFoundError:
            raise SquashError(f"{what}: no such file {path}") from None
        except (tarfile.TarError, IsADirectoryError) as exc:
            raise SquashError(f"{what}: {path} is not a tar archive ({exc})") from None

    def member(self, name: str) -> tarfile.TarInfo:
        """The regular file behind `name`, following links inside the archive."""
        key = posixpath.normpath(name.lstrip("/"))
        for _ in range(16):
            info = self.members.get(key)
            if info is None:
                raise SquashError(f"{self.what}: the archive has no {name!r}")
            if info.isreg():
                return info
            if info.issym():
                key = posixpath.normpath(posixpath.join(posixpath.dirname(key), info.linkname))
            elif info.islnk():
                key = posixpath.normpath(info.linkname.lstrip("/"))
            else:
                raise SquashError(f"{self.what}: {name!r} in the archive is not a file")
        raise SquashError(f"{self.what}: too many links from {name!r} in the archive")

    def read(self, name: str) -> bytes:
        info = self.member(name)
        if info.size > MAX_DOCUMENT:
            raise SquashError(f"{self.what}: {name!r} is too large for a JSON document")
        with open(self.path, "rb") as f:
            f.seek(info.offset_data)
            return read_exactly(f, info.size, f"{self.what}: {name!r} in the archive")


def _choose(documents: list[object], wanted: str | None, what: str) -> JSONObject:
    entries: list[JSONObject] = [e for e in documents if isinstance(e, dict)]
    if wanted is None:
        if len(entries) != 1:
            tags = ", ".join(t for e in entries for t in e.get("RepoTags") or []) or "untagged"
            raise SquashError(
                f"{what}: the archive holds {len(entries)} images ({tags}); "
                "name one as docker-archive:FILE:NAME:TAG"
            )
        return entries[0]
    name, tag = split_name_tag(wanted)
    want = f"{full_name(name)}:{tag or 'latest'}"
    for entry in entries:
        for repo_tag in entry.get("RepoTags") or []:
            n, t = split_name_tag(repo_tag)
            if f"{full_name(n)}:{t or 'latest'}" == want:
                return entry
    raise SquashError(f"{what}: the archive has no image tagged {wanted!r}")


def _expected_digest(path: str) -> str | None:
    match = _BLOB_PATH.match(posixpath.normpath(path))
    return f"{match.group(1)}:{match.group(2)}" if match else None


def open_docker_archive(ref: SourceRef, platform: Platform | None) -> Image:
    what = f"image {ref.text}"
    archive = _Archive(ref.path, what)
    entries = parse_json(archive.read("manifest.json"), f"{what}: manifest.json")
    if not isinstance(entries, list):
        raise SquashError(f"{what}: manifest.json is not a list")
    entry = _choose(entries, ref.ref, what)
    config_path = entry.get("Config")
    layer_paths = entry.get("Layers")
    if not isinstance(config_path, str) or not isinstance(layer_paths, list):
        raise SquashError(f"{what}: manifest.json entry has no Config or Layers")
    config_bytes = archive.read(config_path)
    config_digest = _expected_digest(config_path)
    if config_digest:
        verify_bytes(config_bytes, config_digest, None, f"{what}: config")
    config = parse_object(config_bytes, f"{what}: config")
    if platform is not None and not platform.matches(config):
        raise SquashError(
            f"{what}: the image is for {config.get('os')}/"
            f"{config.get('architecture')}, not {platform}"
        )
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layer_paths):
        raise SquashError(
            f"{what}: config lists {len(diff_ids)} layers, manifest.json {len(layer_paths)}"
        )
    repo_tags = entry.get("RepoTags") or []
    if ref.ref:
        name, tag = split_name_tag(ref.ref)
    elif repo_tags:
        name, tag = split_name_tag(repo_tags[0])
    else:
        name, tag = sanitize_name(os.path.basename(ref.path).removesuffix(".tar")), None
    digest_of_image = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    layers: list[StoredLayer] = []
    for n, path in enumerate(layer_paths):
        info = archive.member(path)
        digest = _expected_digest(path)
        diff_id = check_digest(diff_ids[n], what)
        label = layer_label(ref.text, n, len(layer_paths), digest or diff_id)
        layers.append(
            FileLayer(
                label,
                ref.path,
                offset=info.offset_data,
                size=info.size,
                digest=digest,
                diff_id=diff_id,
            )
        )
    name = familiar_name(full_name(name))
    return Image(ref.text, name, tag or "latest", digest_of_image, config, layers)
