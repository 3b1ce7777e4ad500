"""One export: an image in, a squashed docker-loadable archive out, into a sink."""

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Generic

from squash.archive import ArchiveWriter, write_documents
from squash.errors import BadReference
from squash.image import Image, Progress, StoredLayer
from squash.image_config import squashed_config
from squash.limits import DEFAULT_LIMITS, Limits
from squash.merge import Merger, MergeStats
from squash.reference import check_repo_tag, full_name, squash_tag
from squash.sinks import Committed, Sink
from squash.streams import Stream


@dataclass
class ExportResult(Generic[Committed]):
    repo_tag: str  # as written into manifest.json, e.g. "alpine:3.19.squash"
    manifest_digest: str  # of the squashed image
    diff_id: str
    layer_digest: str
    layer_size: int
    stats: MergeStats
    committed: Committed  # what the sink's commit returned (an artifact store's record)


def output_tag(image: Image, tag: str | None) -> tuple[str, str]:
    """(familiar NAME:TAG, full name) written into the archive; default <name>:<tag>.squash."""
    if tag is None:
        tag = f"{image.name}:{squash_tag(image.tag)}"
        try:
            check_repo_tag(tag)
        except BadReference:
            raise BadReference(f"no valid default tag from {image.reference}; pass --tag") from None
    name, out_tag = check_repo_tag(tag)
    return f"{name}:{out_tag}", f"{full_name(name)}:{out_tag}"


class _Reporting:
    """A layer whose stored bytes are counted as they are read (the merger's TarSource)."""

    def __init__(self, layer: StoredLayer, progress: Progress) -> None:
        self.layer, self.progress, self.label = layer, progress, layer.label

    def open_tar(self) -> AbstractContextManager[Stream]:
        return self.layer.open_tar(self.progress)

    def peek(self) -> bytes:
        return self.layer.peek()

    def plain_file(self) -> tuple[str, int] | None:
        return self.layer.plain_file()


def export_image(
    image: Image,
    sink: Sink[Committed],
    *,
    tag: str | None = None,
    compression: str = "none",
    tmpdir: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
) -> ExportResult[Committed]:
    """Squash `image` into `sink`; the sink is committed on success, aborted on failure.
    `progress` is told of each stored layer byte read."""
    try:
        repo_tag, full = output_tag(image, tag)
        archive = ArchiveWriter(sink)
        archive.begin()
        layer = archive.layer(compression)
        try:
            layers = (
                image.layers
                if progress is None
                else [_Reporting(stored, progress) for stored in image.layers]
            )
            stats = Merger(layer.writer.write, tmpdir, limits).run(layers)
        except BaseException:
            layer.writer.abort()
            raise
        diff_id, blob = layer.close()
        comment = f"squashed by squashd from {image.manifest_digest}"
        config = squashed_config(image.config, diff_id, comment)
        manifest = write_documents(archive, config, blob, repo_tag, full)
        archive.finish()
        committed = sink.commit()
    except BaseException:
        sink.abort()
        raise
    return ExportResult(
        repo_tag, manifest.digest, diff_id, blob.digest, blob.size, stats, committed
    )
