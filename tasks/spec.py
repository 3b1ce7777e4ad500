"""What one export builds, and the artifact key that names its bytes.

The key is a hash of everything that determines the archive's bytes (the source's
manifest digest, platform, the tag written into it, layer compression, the layers kept
as they are, the archive format's version) plus the repository it comes from, whose
readers may have it. A moved tag gets a new key; an unchanged one is never rebuilt.
"""

import hashlib
import json
import re
from dataclasses import dataclass, fields

from squash.export import FORMAT_VERSION
from squash.reference import check_repo_tag, familiar_name, source_tag, squash_tag


@dataclass(frozen=True)
class ExportSpec:
    registry: str  # host[:port] as docker names it ("docker.io", "127.0.0.1:5000")
    repository: str  # "ns/repo"
    reference: str  # the tag (or digest) asked for
    digest: str  # the manifest or index digest it resolved to
    platform: str  # "linux/amd64"
    tag: str  # NAME:TAG written into the archive
    compression: str  # of the squashed layer
    keep_base: int = 0  # bottom layers kept as they are (a partial squash)
    level: int | None = None  # of the compression (None: its default)

    @property
    def key(self) -> str:
        determinants: dict[str, object] = {
            "format": FORMAT_VERSION,
            "source": f"{self.registry}/{self.repository}",
            "digest": self.digest,
            "platform": self.platform,
            "tag": self.tag,
            "compression": self.compression,
        }
        if self.keep_base:  # absent for a full squash: the keys built before it stay valid
            determinants["keep_base"] = self.keep_base
        if self.level is not None:  # absent at the default level, likewise
            determinants["level"] = self.level
        return hashlib.sha256(json.dumps(determinants, sort_keys=True).encode()).hexdigest()

    @property
    def name(self) -> str:
        """`host/ns/repo`, the repository it is squashed from."""
        return f"{self.registry}/{self.repository}"

    @property
    def image(self) -> str:
        """The image as it was asked for, e.g. `127.0.0.1:5000/ns/repo:v1`."""
        sep = "@" if ":" in self.reference else ":"
        return f"{self.name}{sep}{self.reference}"

    @property
    def source(self) -> str:
        """What the build pulls: pinned to the digest, so a tag moving meanwhile is moot."""
        return f"docker://{self.name}@{self.digest}"

    @property
    def filename(self) -> str:
        """What a browser saves the archive as: `ns_app_v1.squash.tar`."""
        name, _, tag = self.tag.rpartition(":")
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            name = rest  # the registry's host is not part of a file name
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name}_{tag}") + ".tar"

    def to_dict(self) -> dict[str, str]:
        """As flat strings (a Redis hash, a task's arguments); the default level as ""."""
        return {
            f.name: "" if (v := getattr(self, f.name)) is None else str(v) for f in fields(self)
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ExportSpec":
        """From `to_dict`'s strings (a record written before keep_base or level existed
        keeps 0 or the default)."""
        numbers = ("keep_base", "level")
        text = {f.name: str(data[f.name]) for f in fields(cls) if f.name not in numbers}
        level = data.get("level")
        return cls(
            **text, keep_base=int(data.get("keep_base") or 0), level=int(level) if level else None
        )


def default_tag(registry: str, repository: str, reference: str) -> str:
    """`<name>:<tag>.squash`, as the command line writes it; by digest, `digest-<12 hex>`."""
    tag = squash_tag(source_tag(reference))
    name, out = check_repo_tag(f"{familiar_name(f'{registry}/{repository}')}:{tag}")
    return f"{name}:{out}"
