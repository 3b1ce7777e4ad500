"""One build: pull the image by digest, squash it into the store, report on the board.

Plain Python, called by the Celery task (tasks.export); holding the build lock is
what makes it the only build of its artifact.
"""

import contextlib
import logging
import threading
import time
import uuid

from squash.export import export_image
from squash.reference import Platform
from squash.registry.options import RegistryOptions
from squash.sources import open_image
from storage.base import Artifact, ArtifactStore
from tasks.board import Board
from tasks.errors import LeaseLost
from tasks.spec import ExportSpec

log = logging.getLogger("squashd.build")
PROGRESS_EVERY = 0.5  # seconds between progress reports to the board


class Busy(Exception):
    """Another live build holds the lock of this artifact."""


class Lease:
    """Keeps the build lock alive from a thread; `lost` once it could not be renewed.

    Renewals happen three times a lease. A renewal that finds the lock taken, or no
    successful renewal for a whole lease (Redis down), loses it."""

    def __init__(self, board: Board, key: str, owner: str, seconds: float) -> None:
        self._board, self._key, self._owner, self._seconds = board, key, owner, seconds
        self._stop = threading.Event()
        self.lost: str | None = None
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(Exception):  # if Redis is down the lease simply runs out
            self._board.release(self._key, self._owner)

    def _run(self) -> None:
        renewed = time.monotonic()
        while not self._stop.wait(self._seconds / 3):
            try:
                if not self._board.renew(self._key, self._owner):
                    self.lost = "the build lock was taken over"
                    return
                renewed = time.monotonic()
            except Exception as exc:
                if time.monotonic() - renewed >= self._seconds:
                    self.lost = f"the build lock could not be renewed: {exc}"
                    return

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(self.lost)


class Progress:
    """The source's stored bytes read so far, reported to the board now and then."""

    def __init__(self, board: Board, key: str, lease: Lease) -> None:
        self._board, self._key, self._lease = board, key, lease
        self.done = 0
        self._reported = 0.0

    def __call__(self, count: int) -> None:
        self.done += count
        now = time.time()
        if now - self._reported >= PROGRESS_EVERY:
            self._lease.check()
            self._reported = now
            with contextlib.suppress(Exception):  # progress is not worth failing a build
                self._board.progress(self._key, self.done, now)


def registry_options(spec: ExportSpec, plain_http_registry: str | None) -> RegistryOptions:
    """The service pulls with its own credentials (SQUASHD_REGISTRY_USERNAME or auth files)."""
    return RegistryOptions(plain_http=spec.registry == plain_http_registry)


def build(
    spec: ExportSpec,
    task_id: str,
    *,
    board: Board,
    store: ArtifactStore,
    lease_seconds: float,
    options: RegistryOptions,
    tmpdir: str | None = None,
) -> Artifact:
    """Build `spec` into `store` unless it is there; raises Busy if another build runs."""
    key = spec.key
    artifact = store.stat(key)
    if artifact is not None:
        board.finished(key, artifact, time.time())
        return artifact
    owner = f"{task_id}/{uuid.uuid4().hex[:12]}"
    if not board.acquire(key, owner):
        raise Busy(key)
    with Lease(board, key, owner, lease_seconds) as lease:
        artifact = store.stat(key)  # finished by another build a moment ago?
        if artifact is None:
            artifact = _squash(spec, task_id, board, store, lease, options, tmpdir)
        board.finished(key, artifact, time.time())
    return artifact


def _squash(
    spec: ExportSpec,
    task_id: str,
    board: Board,
    store: ArtifactStore,
    lease: Lease,
    options: RegistryOptions,
    tmpdir: str | None,
) -> Artifact:
    started = time.monotonic()
    image = open_image(spec.source, Platform.parse(spec.platform), options)
    with contextlib.closing(image):
        board.started(spec, task_id, image.total_size, time.time())
        log.info("build started: %d layers, %d bytes", len(image.layers), image.total_size)
        progress = Progress(board, spec.key, lease)
        image.set_progress(progress)
        sink = store.create(spec.key, spec.digest, spec.name)
        result = export_image(
            image, sink, tag=spec.tag, compression=spec.compression, tmpdir=tmpdir
        )
    artifact: Artifact = result.committed
    log.info(
        "build done in %.1f s: %d bytes, sha256 %s",
        time.monotonic() - started,
        artifact.size,
        artifact.sha256,
    )
    return artifact
