"""Image references in skopeo's words: transports, repository names, tags, platforms."""

import os
import re
from dataclasses import dataclass
from typing import Any

from squash.errors import BadReference

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?"
_NAME_RE = re.compile(rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DOCKER_HUB = "docker.io"


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Platform":
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise BadReference(f"platform {text!r} is not OS/ARCH[/VARIANT]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, entry: dict[str, Any]) -> bool:
        """Does an index entry's `platform` object describe this platform?"""
        if entry.get("os") != self.os or entry.get("architecture") != self.architecture:
            return False
        if self.variant is None:
            return True
        variant = entry.get("variant")
        if self.architecture == "arm64" and self.variant == "v8":
            return variant in (None, "v8")
        return variant == self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


DEFAULT_PLATFORM = Platform("linux", "amd64")


@dataclass(frozen=True)
class SourceRef:
    """A parsed SOURCE argument: transport, local path or registry name, tag/reference."""

    transport: str  # "oci", "docker-archive" or "docker"
    path: str  # a directory or file; for "docker", the full repository name
    ref: str | None  # tag (oci), NAME:TAG (docker-archive), tag or digest (docker)
    text: str


_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")


@dataclass(frozen=True)
class DockerRef:
    """A registry image: `registry/repository` plus a tag or a digest."""

    registry: str  # as docker names it: "docker.io", "quay.io", "127.0.0.1:5000"
    repository: str  # "library/alpine"
    tag: str | None
    digest: str | None

    @property
    def api_host(self) -> str:
        """Where the distribution API lives (Docker Hub's is not docker.io)."""
        return "registry-1.docker.io" if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        """What to ask the manifests endpoint for."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        tail = f"@{self.digest}" if self.digest else f":{self.tag or 'latest'}"
        return f"{self.registry}/{self.repository}{tail}"


def parse_docker_ref(text: str) -> DockerRef:
    """Parse `[HOST[:PORT]/]NAME[:TAG][@DIGEST]` as docker does (Docker Hub by default)."""
    name, _, digest = text.partition("@")
    if digest and not _DIGEST_RE.match(digest):
        raise BadReference(f"{text!r}: malformed digest {digest!r}")
    name, tag = split_name_tag(name)
    if tag is not None and not _TAG_RE.match(tag):
        raise BadReference(f"{text!r}: malformed tag {tag!r}")
    full = full_name(name)
    if not _NAME_RE.match(full):
        raise BadReference(f"{text!r} is not a valid image name (lowercase NAME[:TAG])")
    registry, _, repository = full.partition("/")
    return DockerRef(registry, repository, tag, digest or None)


def parse_source(text: str) -> SourceRef:
    transport, sep, rest = text.partition(":")
    if sep and transport in ("oci", "docker-archive"):
        if not rest:
            raise BadReference(f"{text!r}: no path after '{transport}:'")
        path, ref = _split_path(rest)
        return SourceRef(transport, path, ref, text)
    name = text.removeprefix("docker://")
    if name != text and not name:
        raise BadReference(f"{text!r}: no image name after 'docker://'")
    parsed = parse_docker_ref(name)
    return SourceRef("docker", f"{parsed.registry}/{parsed.repository}", parsed.reference, text)


@dataclass(frozen=True)
class DestinationRef:
    """A parsed -o DEST argument, in skopeo's words."""

    transport: str  # "docker-archive" (a file, or "-": standard output), "oci", "docker"
    path: str  # the file or directory; for "docker", HOST/NAME
    tag: str | None  # the OCI layout's or the registry's tag, if given
    text: str


def parse_destination(text: str) -> DestinationRef:
    """`FILE`, `-`, `docker-archive:FILE`, `oci:DIR[:TAG]` or `docker://HOST/NAME[:TAG]`."""
    transport, sep, rest = text.partition(":")
    if sep and transport in ("oci", "docker-archive"):
        if not rest:
            raise BadReference(f"{text!r}: no path after '{transport}:'")
        if transport == "docker-archive":
            return DestinationRef(transport, rest, None, text)
        path, tag = _split_path(rest)
        if tag is not None and not _TAG_RE.match(tag):
            raise BadReference(f"{text!r}: malformed tag {tag!r}")
        return DestinationRef(transport, path, tag, text)
    if text.startswith("docker://"):
        parsed = parse_docker_ref(text.removeprefix("docker://"))
        if parsed.digest:
            raise BadReference(f"{text!r}: a push names a tag, not a digest")
        return DestinationRef("docker", f"{parsed.registry}/{parsed.repository}", parsed.tag, text)
    return DestinationRef("docker-archive", text, None, text)


def _split_path(rest: str) -> tuple[str, str | None]:
    """Split `PATH[:REF]`; a path that exists as written wins over a split."""
    if os.path.exists(rest) or ":" not in rest:
        return rest, None
    path, _, ref = rest.partition(":")
    return path, ref or None


def split_name_tag(reference: str) -> tuple[str, str | None]:
    """'host:5000/a/b:tag' -> ('host:5000/a/b', 'tag'); digests are dropped."""
    reference = reference.split("@", 1)[0]
    colon = reference.rfind(":")
    if colon > reference.rfind("/"):
        return reference[:colon], reference[colon + 1 :]
    return reference, None


def full_name(name: str) -> str:
    """'alpine' (and 'docker.io/alpine') -> 'docker.io/library/alpine', as docker
    normalises names."""
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = f"{DOCKER_HUB}/{name}" if rest else f"{DOCKER_HUB}/library/{name}"
    elif first == DOCKER_HUB and "/" not in rest:
        name = f"{DOCKER_HUB}/library/{rest}"
    return name


def familiar_name(name: str) -> str:
    """'docker.io/library/alpine' -> 'alpine', as `docker images` shows names."""
    for prefix in (f"{DOCKER_HUB}/library/", f"{DOCKER_HUB}/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def check_repo_tag(text: str) -> tuple[str, str]:
    """Validate NAME[:TAG] for the output; returns (familiar name, tag)."""
    name, tag = split_name_tag(text)
    tag = tag or "latest"
    if not _NAME_RE.match(name) or not _TAG_RE.match(tag):
        raise BadReference(f"{text!r} is not a valid NAME:TAG for an image")
    return familiar_name(full_name(name)), tag


def sanitize_name(text: str) -> str:
    """A repository name made from arbitrary text (a directory or file name)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    name = re.sub(r"^[._-]+|[._-]+$", "", name)
    name = re.sub(r"[._-]{2,}", "-", name)
    return name or "image"


def source_tag(reference: str) -> str:
    """What an image's default output tag is made from: a tag as it is, a digest as
    `digest-<12 hex>`."""
    return f"digest-{reference.partition(':')[2][:12]}" if ":" in reference else reference


def squash_tag(tag: str) -> str:
    """The default output tag: '<tag>.squash', kept within docker's 128 characters."""
    return f"{tag[:121]}.squash"
