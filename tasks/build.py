"""One build: pull the image by digest, squash it into the store, report on the board.

Plain Python, called by the Celery task (tasks.export_task); holding the build lock is
what makes it the only build of its artifact.
"""

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Collection
from typing import Protocol

from squash.distribution.options import RegistryOptions
from squash.export import export_image
from squash.limits import DEFAULT_LIMITS, Limits
from squash.oci import Referrer
from squash.outputs.docker_archive import DockerArchive
from squash.provenance import SERVICE_BUILDER, Provenance
from squash.reference import Platform
from squash.sources import open_image
from storage.base import Artifact, ArtifactStore
from tasks.board import BuildLocks, Counters, Jobs
from tasks.errors import LeaseLost
from tasks.spec import ExportSpec

log = logging.getLogger("squashd.build")
PROGRESS_EVERY = 0.5  # seconds between progress reports to the board


class BuildBoard(Jobs, BuildLocks, Counters, Protocol):
    """What a build uses of the board: its job's states, its lock, the build counters."""


class Busy(Exception):
    """Another live build holds the lock of this artifact."""


class Heartbeat:
    """A build's thread beside it: renews the build lock's lease and reports progress.

    Progress (stored bytes of the source read so far, counted by `advance`) goes to
    the board every PROGRESS_EVERY seconds, also while a download stalls; the lease is
    renewed three times a lease. A renewal that finds the lock taken, or no successful
    renewal for a whole lease (Redis down), loses it: the next `advance` raises."""

    def __init__(self, board: BuildBoard, key: str, owner: str, lease: float) -> None:
        self._board, self._key, self._owner, self._lease = board, key, owner, lease
        self._stop = threading.Event()
        self.lost: str | None = None
        self.done = 0
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(Exception):  # if Redis is down the lease simply runs out
            self._board.release(self._key, self._owner)

    def advance(self, count: int) -> None:
        """The progress callback of the image's layers (called as bytes are read)."""
        if self.lost:
            raise LeaseLost(self.lost)
        self.done += count

    def _run(self) -> None:
        renewed = due = time.monotonic()
        reported = 0
        while not self._stop.wait(PROGRESS_EVERY):
            if self.done != reported:
                reported = self.done
                with contextlib.suppress(Exception):  # progress is not worth failing for
                    self._board.progress(self._key, reported, time.time())
            if time.monotonic() < due + self._lease / 3:
                continue
            due = time.monotonic()
            try:
                if not self._board.renew(self._key, self._owner):
                    self.lost = "the build lock was taken over"
                    return
                renewed = time.monotonic()
            except Exception as exc:
                if time.monotonic() - renewed >= self._lease:
                    self.lost = f"the build lock could not be renewed: {exc}"
                    return


def registry_options(spec: ExportSpec, plain_http_hosts: Collection[str]) -> RegistryOptions:
    """The service pulls with its own credentials (SQUASHD_REGISTRY_USERNAME or auth files)."""
    return RegistryOptions(plain_http=spec.registry in plain_http_hosts)


def build(
    spec: ExportSpec,
    task_id: str,
    *,
    board: BuildBoard,
    store: ArtifactStore,
    lease_seconds: float,
    options: RegistryOptions,
    tmpdir: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    builder: str = SERVICE_BUILDER,
) -> Artifact:
    """Build `spec` into `store` unless it is there; raises Busy if another build runs.
    Its provenance statement (`builder` named as the builder) is stored beside it."""
    key = spec.key
    artifact = store.stat(key)
    if artifact is not None:
        board.finished(key, artifact, time.time())
        return artifact
    owner = f"{task_id}/{uuid.uuid4().hex[:12]}"
    if not board.acquire(key, owner):
        raise Busy(key)
    with Heartbeat(board, key, owner, lease_seconds) as heartbeat:
        artifact = store.stat(key)  # finished by another build a moment ago?
        if artifact is None:
            recorded = Provenance(builder=builder, source=spec.image, invocation=key)
            artifact = _squash(spec, task_id, board, store, heartbeat, options, tmpdir, limits,
                               recorded)  # fmt: skip
        board.finished(key, artifact, time.time())
    return artifact


def _squash(
    spec: ExportSpec,
    task_id: str,
    board: BuildBoard,
    store: ArtifactStore,
    heartbeat: Heartbeat,
    options: RegistryOptions,
    tmpdir: str | None,
    limits: Limits,
    recorded: Provenance,
) -> Artifact:
    started = time.monotonic()
    image = open_image(spec.source, Platform.parse(spec.platform), options)
    with contextlib.closing(image):
        board.started(spec, task_id, image.total_size, time.time())
        log.info("build started: %d layers, %d bytes", len(image.layers), image.total_size)
        sink = store.create(spec.key, spec.digest, spec.name)

        def beside(referrer: Referrer) -> None:  # before the archive is committed
            store.write_statement(spec.key, referrer.payload)

        result = export_image(
            image,
            DockerArchive(sink, beside),
            tag=spec.tag,
            compression=spec.compression,
            level=spec.level,
            keep=spec.keep_base,
            tmpdir=tmpdir,
            limits=limits,
            progress=heartbeat.advance,
            provenance=recorded,
        )
    artifact: Artifact = result.committed
    seconds = time.monotonic() - started
    log.info("build done in %.1f s: %d bytes, sha256 %s", seconds, artifact.size, artifact.sha256)
    with contextlib.suppress(Exception):  # counters are not worth failing a build
        board.observe_build(seconds, artifact.size)
    return artifact
