"""Destinations of an export (the protocol is `squash.destination`); `open_destination`
picks one from -o DEST."""

from squash.destination import Destination
from squash.outputs.docker_archive import DockerArchive
from squash.outputs.oci_layout import OCILayout
from squash.outputs.registry import RegistryOutput
from squash.reference import DestinationRef, parse_docker_ref
from squash.registry.options import RegistryOptions
from squash.registry.push import DEFAULT_CHUNK
from squash.sinks import FileSink, StreamSink


def open_destination(
    ref: DestinationRef,
    options: RegistryOptions,
    tmpdir: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Destination[None]:
    if ref.transport == "oci":
        return OCILayout(ref.path, ref.tag)
    if ref.transport == "docker":
        docker = parse_docker_ref(ref.path if ref.tag is None else f"{ref.path}:{ref.tag}")
        return RegistryOutput(docker, options, chunk_size)
    if ref.path == "-":
        return DockerArchive(StreamSink(tmpdir=tmpdir))
    return DockerArchive(FileSink(ref.path))
