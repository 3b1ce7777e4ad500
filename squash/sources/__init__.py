"""Image sources: each turns a reference into the same small `Image`.

`oci:` reads an OCI image layout directory, `docker-archive:` a `docker save` tar,
`docker://` (or a bare NAME[:TAG]) an image in a registry.
"""

from squash.distribution.options import RegistryOptions
from squash.errors import BadReference
from squash.image import Image
from squash.oci import JSONObject
from squash.reference import Platform, SourceRef, parse_source


def open_image(
    source: str | SourceRef,
    platform: Platform | None = None,
    registry: RegistryOptions | None = None,
) -> Image:
    """Resolve SOURCE to one image; `platform` picks from an index (default linux/amd64)."""
    ref = parse_source(source) if isinstance(source, str) else source
    if ref.transport == "docker":
        from squash.sources.registry import open_registry_image

        return open_registry_image(ref, platform, registry)
    if ref.transport == "oci":
        from squash.sources.oci_layout import open_oci_layout

        return open_oci_layout(ref, platform)
    if ref.transport == "docker-archive":
        from squash.sources.docker_archive import open_docker_archive

        return open_docker_archive(ref, platform)
    raise BadReference(f"{ref.text!r}: unsupported transport {ref.transport!r}")


def list_platforms(
    source: str | SourceRef, registry: RegistryOptions | None = None
) -> list[JSONObject]:
    """The `platform` of each image SOURCE's index holds (attestations left out); empty
    when SOURCE is a single image."""
    ref = parse_source(source) if isinstance(source, str) else source
    if ref.transport == "docker":
        from squash.sources.registry import registry_platforms

        return registry_platforms(ref, registry)
    if ref.transport == "oci":
        from squash.sources.oci_layout import layout_platforms

        return layout_platforms(ref)
    return []  # a docker save archive holds one image per tag
