"""Destinations of an export (the protocol is `squash.destination`); `open_destination`
picks one from -o DEST. Each is imported when it is picked, so a tar or a layout costs
no HTTP client (the registry's pulls in httpx)."""

from squash.destination import Destination
from squash.distribution.options import DEFAULT_CHUNK, RegistryOptions
from squash.reference import DestinationRef, parse_docker_ref


def open_destination(
    ref: DestinationRef,
    options: RegistryOptions,
    tmpdir: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Destination[None]:
    if ref.transport == "oci":
        from squash.outputs.oci_layout import OCILayout

        return OCILayout(ref.path, ref.tag)
    if ref.transport == "docker":
        from squash.outputs.registry import RegistryOutput

        docker = parse_docker_ref(ref.path if ref.tag is None else f"{ref.path}:{ref.tag}")
        return RegistryOutput(docker, options, chunk_size)
    from squash.outputs.docker_archive import DockerArchive
    from squash.sinks import FileSink, StreamSink

    sink = StreamSink(tmpdir=tmpdir) if ref.path == "-" else FileSink(ref.path)
    return DockerArchive(sink)
