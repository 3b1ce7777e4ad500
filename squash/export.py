"""One export: an image in, its squashed image out, into a destination (a `docker load`
archive, an OCI layout, a registry)."""

import contextlib
import hashlib
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from squash.codec import compression_of
from squash.destination import Committed, Destination
from squash.errors import BadReference, SquashError
from squash.image import Image, Progress, StoredLayer
from squash.image_config import diff_ids, squashed_config
from squash.layer_writer import LayerWriter
from squash.limits import DEFAULT_LIMITS, Limits
from squash.merge.merger import Merger, MergeStats
from squash.oci import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Blob,
    JSONObject,
    image_index,
    image_manifest,
    platform_text,
)
from squash.provenance import Asked, Provenance, attestation, statement
from squash.reference import check_repo_tag, full_name, squash_tag
from squash.retained import RetainedLayer
from squash.streams import Stream, read_up_to

T = TypeVar("T")

#: Bump when the writer's output changes for the same input (the service's artifact keys
#: hash it; a provenance statement records it).
FORMAT_VERSION = 2  # 2: every member header written anew from the fields read


@dataclass
class ExportResult(Generic[Committed]):
    repo_tag: str  # as written into manifest.json, e.g. "alpine:3.19.squash"
    manifest_digest: str  # of the squashed image
    diff_id: str
    layer_digest: str
    layer_size: int
    stats: MergeStats
    committed: Committed  # what the sink's commit returned (an artifact store's record)
    kept: int = 0  # bottom layers kept as they are (a partial squash)
    # its provenance, an in-toto statement (squash.provenance): not what makes two equal
    statement: bytes = field(default=b"", compare=False)


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


def check_keep(image: Image, keep: int) -> None:
    """A partial squash keeps fewer layers than the image has, and the config lists them."""
    count = len(image.layers)
    if keep < 0 or (keep and keep >= count):
        raise SquashError(
            f"image {image.reference}: cannot keep {keep} of its {count} layers as they are; "
            f"keep between 0 and {count - 1}"
        )
    if keep and len(diff_ids(image.config, f"image {image.reference}")) != count:
        raise SquashError(f"image {image.reference}: its config does not list its {count} layers")


def _kept_blob(layer: StoredLayer) -> Blob:
    """The descriptor of a kept layer as it is stored: its digest, size and compression."""
    with layer.open_start(4) as start:
        compression = compression_of(read_up_to(start, 4))
    digest = layer.digest or (layer.diff_id if compression == "none" else None)
    size = layer.size
    if digest is None or size is None:  # a docker save member: measure it
        hasher, size = hashlib.sha256(), 0
        with layer.open_stored() as raw:
            while data := raw.read(1 << 20):
                hasher.update(data)
                size += len(data)
        digest = digest or "sha256:" + hasher.hexdigest()
    if not digest.startswith("sha256:"):
        raise SquashError(f"{layer.label}: a kept layer needs a sha256 digest, not {digest}")
    return Blob(digest, size, OCI_LAYER[compression])


@dataclass
class Options:
    """How an image is squashed (the same for every platform of an index)."""

    tag: str | None = None  # NAME:TAG of the output (default <name>:<tag>.squash)
    compression: str = "none"
    keep: int = 0  # bottom layers kept as they are
    tmpdir: str | None = None
    limits: Limits = DEFAULT_LIMITS
    progress: Progress | None = None  # told of each stored layer byte read
    provenance: Provenance = field(default_factory=Provenance)  # the builder, a --base
    level: int | None = None  # of the compression (None: its default)


@dataclass
class Squashed:
    """One image squashed into a destination, not tagged yet."""

    repo_tag: str
    full_name: str
    manifest: Blob
    diff_id: str
    layer: Blob
    stats: MergeStats
    kept: int
    asked: Asked  # what its provenance says was asked
    started: float  # when its squash started (unix time)
    statement: bytes = b""  # made once it is tagged (`attest`)

    def result(self, committed: T) -> ExportResult[T]:
        return ExportResult(
            self.repo_tag, self.manifest.digest, self.diff_id, self.layer.digest,
            self.layer.size, self.stats, committed, self.kept, self.statement,
        )  # fmt: skip

    def attest(self, name: str, destination: Destination[object], recorded: Provenance) -> None:
        """Its provenance statement, attached in `destination` to its manifest (known
        there as `name`) as a referrer (unless `recorded` says not to)."""
        self.statement = statement(
            name, self.manifest, self.asked, recorded, self.started, time.time()
        )
        if recorded.referrer:
            destination.attach(attestation(self.statement, self.manifest))


def squash_into(image: Image, destination: Destination[object], options: Options) -> Squashed:
    """Squash `image` into `destination`: the layer, the kept layers, config and manifest.
    With `options.keep`, the bottom layers stay as they are and the rest become one
    layer on top of them."""
    keep, progress, started = options.keep, options.progress, time.time()
    check_keep(image, keep)
    repo_tag, full = output_tag(image, options.tag)
    with contextlib.ExitStack() as retained:
        stored_layers = [
            retained.enter_context(contextlib.closing(RetainedLayer(stored, options.tmpdir)))
            if n < keep and stored.location() is None  # read once from far away
            else stored
            for n, stored in enumerate(image.layers)
        ]
        upload = destination.layer()
        writer = LayerWriter(upload, options.compression, options.level)
        try:
            layers = (
                stored_layers
                if progress is None
                else [_Reporting(stored, progress) for stored in stored_layers]
            )
            stats = Merger(writer.write, options.tmpdir, options.limits).run(layers, keep)
        except BaseException:
            writer.abort()
            raise
        diff_id, blob = writer.close()
        upload.done(blob)
        kept = []
        for stored in stored_layers[:keep]:
            kept.append(_kept_blob(stored))
            destination.kept(stored, kept[-1])
    comment = f"squashed by squashd from {image.manifest_digest}"
    config = destination.document(squashed_config(image.config, keep, diff_id, comment), OCI_CONFIG)
    base = options.provenance.base
    annotations = base.annotations() if base is not None else None
    manifest = destination.document(
        image_manifest(config, [*kept, blob], annotations), OCI_MANIFEST
    )
    asked = Asked(
        options.provenance.source or image.reference, image.manifest_digest,
        platform_text(image.config), repo_tag, options.compression, keep, FORMAT_VERSION,
    )  # fmt: skip
    return Squashed(repo_tag, full, manifest, diff_id, blob, stats, keep, asked, started)


def export_image(
    image: Image,
    destination: Destination[Committed],
    *,
    tag: str | None = None,
    compression: str = "none",
    level: int | None = None,
    keep: int = 0,
    tmpdir: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
    provenance: Provenance | None = None,
) -> ExportResult[Committed]:
    """Squash `image` into `destination`, tag it and attach its provenance (see
    `Options`); the destination is committed on success, aborted on failure."""
    recorded = provenance or Provenance()
    options = Options(tag, compression, keep, tmpdir, limits, progress, recorded, level)
    try:
        squashed = squash_into(image, destination, options)
        name = destination.tag(squashed.manifest, squashed.repo_tag, squashed.full_name)
        squashed.attest(name, destination, recorded)
        committed = destination.commit()
    except BaseException:
        destination.abort()
        raise
    return squashed.result(committed)


def export_index(
    images: Iterable[tuple[Image, JSONObject]],
    destination: Destination[Committed],
    options: Options | None = None,
) -> tuple[str, list[ExportResult[Committed]]]:
    """Squash each platform's image (with its index entry's `platform`) into
    `destination`, tag an index of them and attach each image's provenance; returns the
    index digest and each result."""
    options = options or Options()
    try:
        done: list[tuple[Squashed, JSONObject]] = []
        for image, platform in images:
            with contextlib.closing(image):
                done.append((squash_into(image, destination, options), platform))
        if not done:
            raise SquashError("the index lists no platform to squash")
        index = image_index([(s.manifest, p) for s, p in done])
        blob = destination.document(index, OCI_INDEX)
        first = done[0][0]
        name = destination.tag(blob, first.repo_tag, first.full_name)
        for squashed, _ in done:
            squashed.attest(name, destination, options.provenance)
        committed = destination.commit()
    except BaseException:
        destination.abort()
        raise
    return blob.digest, [s.result(committed) for s, _ in done]
