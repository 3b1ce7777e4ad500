"""The `docker://HOST/NAME[:TAG|@DIGEST]` source: an image in a registry, streamed."""

from squash.distribution.client import Registry
from squash.distribution.options import RegistryOptions
from squash.image import Image, StoredLayer
from squash.oci import JSONObject
from squash.reference import (
    DEFAULT_PLATFORM,
    Platform,
    SourceRef,
    familiar_name,
    parse_docker_ref,
    source_tag,
)
from squash.sources.descriptors import MAX_DOCUMENT, check_digest
from squash.sources.walk import descriptor_size, resolve, top_platforms
from squash.streams import Stream, read_exactly, read_to_end
from squash.verify import verify_bytes


class RemoteLayer(StoredLayer):
    """A layer blob in a registry; its start alone is fetched with a Range request."""

    def __init__(self, registry: Registry, repository: str, descriptor: JSONObject, label: str):
        digest = check_digest(descriptor.get("digest"), label)
        super().__init__(label, digest, descriptor_size(descriptor), None)
        self.registry, self.repository, self.blob_digest = registry, repository, digest

    def open_stored(self) -> Stream:
        return self._blob(None)

    def open_start(self, limit: int) -> Stream:
        return self._blob(limit)

    def origin(self) -> tuple[str, str]:
        return self.registry.name, self.repository

    def _blob(self, limit: int | None) -> Stream:
        return self.registry.blob(self.repository, self.blob_digest, self.size, self.label, limit)


class _Repository:
    """One repository's manifests and blobs, as the shared walk asks for them."""

    def __init__(self, registry: Registry, repository: str, what: str) -> None:
        self.registry, self.repository, self.what = registry, repository, what

    def manifest(self, descriptor: JSONObject) -> tuple[bytes, str | None]:
        digest = check_digest(descriptor.get("digest"), self.what)
        body, kind, _ = self.registry.manifest(self.repository, digest, self.what)
        return body, kind or None

    def config(self, descriptor: JSONObject) -> bytes:
        what = f"{self.what}: config"
        digest = check_digest(descriptor.get("digest"), what)
        size = descriptor_size(descriptor)
        with self.registry.blob(self.repository, digest, size, what) as stream:
            if size is None:
                data = read_to_end(stream, MAX_DOCUMENT, what)
            else:
                data = read_exactly(stream, size, what)
        return verify_bytes(data, digest, size, what)

    def layer(self, descriptor: JSONObject, label: str) -> StoredLayer:
        return RemoteLayer(self.registry, self.repository, descriptor, label)


def open_registry_image(
    ref: SourceRef, platform: Platform | None, options: RegistryOptions | None = None
) -> Image:
    docker = parse_docker_ref(ref.text.removeprefix("docker://"))
    what = f"image {docker}"
    registry = Registry(docker.registry, docker.api_host, options)
    try:
        repository = _Repository(registry, docker.repository, what)
        body, kind, digest = registry.manifest(docker.repository, docker.reference, what)
        found = resolve(
            repository, body, kind or None, digest, platform or DEFAULT_PLATFORM, str(docker)
        )
    except BaseException:
        registry.close()
        raise
    tag = source_tag(docker.tag or docker.digest or "latest")
    name = familiar_name(f"{docker.registry}/{docker.repository}")
    return Image(
        ref.text, name, tag, found.manifest_digest, found.config, found.layers, holds=registry
    )


def registry_platforms(ref: SourceRef, options: RegistryOptions | None = None) -> list[JSONObject]:
    """The platforms of the image's index (none for a single image)."""
    docker = parse_docker_ref(ref.text.removeprefix("docker://"))
    what = f"image {docker}"
    registry = Registry(docker.registry, docker.api_host, options)
    try:
        body, kind, _ = registry.manifest(docker.repository, docker.reference, what)
        return top_platforms(body, kind or None, what)
    finally:
        registry.close()
