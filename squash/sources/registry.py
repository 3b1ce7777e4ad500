"""The `docker://HOST/NAME[:TAG|@DIGEST]` source: an image in a registry, streamed."""

import functools

from squash.errors import SquashError
from squash.image import Image, Layer, parse_json
from squash.manifest import check_supported, choose_platform, is_index, media_type, parse_manifest
from squash.reference import (
    DEFAULT_PLATFORM,
    Platform,
    SourceRef,
    familiar_name,
    parse_docker_ref,
    source_tag,
)
from squash.registry.client import Registry
from squash.registry.options import RegistryOptions
from squash.sources.blobs import (
    MAX_DOCUMENT,
    check_digest,
    layer_compression,
    layer_label,
)
from squash.streams import read_exactly, read_to_end
from squash.verify import verify_bytes


def open_registry_image(
    ref: SourceRef, platform: Platform | None, options: RegistryOptions | None = None
) -> Image:
    docker = parse_docker_ref(ref.text.removeprefix("docker://"))
    what = f"image {docker}"
    registry = Registry(docker.registry, docker.api_host, options)
    repository = docker.repository
    body, kind, digest = registry.manifest(repository, docker.reference, what)
    document = parse_json(body, f"{what}: manifest")
    kind = media_type(document, kind or None)
    check_supported(kind, what)
    if is_index(kind):
        entry = choose_platform(document, platform or DEFAULT_PLATFORM, what)
        entry_digest = check_digest(entry.get("digest"), what)
        body, kind, digest = registry.manifest(repository, entry_digest, what)
        check_supported(media_type(parse_json(body, f"{what}: manifest"), kind or None), what)
    config_desc, layer_descs = parse_manifest(body, what)
    config_digest = check_digest(config_desc.get("digest"), what)
    size = config_desc.get("size") if isinstance(config_desc.get("size"), int) else None
    if size is not None and size > MAX_DOCUMENT:
        raise SquashError(f"{what}: config of {size} bytes is too large")
    with registry.blob(repository, config_digest, size, f"{what}: config") as stream:
        if size is None:
            config_bytes = read_to_end(stream, MAX_DOCUMENT, f"{what}: config")
        else:
            config_bytes = read_exactly(stream, size, f"{what}: config")
    config = parse_json(
        verify_bytes(config_bytes, config_digest, size, f"{what}: config"), f"{what}: config"
    )
    if not isinstance(config, dict):
        raise SquashError(f"{what}: config is not a JSON object")
    tag = source_tag(docker.tag or docker.digest or "latest")
    name = familiar_name(f"{docker.registry}/{repository}")
    image = Image(ref.text, name, tag, digest, config, on_close=registry.close)
    for n, desc in enumerate(layer_descs):
        layer_digest = check_digest(desc.get("digest"), what)
        label = layer_label(str(docker), n, len(layer_descs), layer_digest)
        layer_compression(desc, label)
        size = desc.get("size") if isinstance(desc.get("size"), int) else None
        opener = functools.partial(registry.blob, repository, layer_digest, size, label)
        image.layers.append(Layer(label, opener, layer_digest, size, None, head=opener))
    return image
