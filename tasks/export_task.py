"""The export task (`squashd.export`): one artifact per call, keyed by the artifact key of
its spec, built by tasks.build.

Acknowledged late and rejected when its worker is lost, so a killed worker's build
is redelivered; transient failures are retried with exponential backoff, permanent
ones fail at once with their reason on the board.
"""

import logging
import time

from celery.utils.time import get_exponential_backoff_interval

from squash.errors import SquashError
from tasks import logs
from tasks.build import Busy, build, registry_options
from tasks.celery_app import BUILD_TASK, app
from tasks.errors import is_transient
from tasks.parts import process_parts
from tasks.spec import ExportSpec

log = logging.getLogger("squashd.export")
BACKOFF = 2  # seconds before the first retry, doubled each time
BACKOFF_MAX = 300


@app.task(bind=True, name=BUILD_TASK, acks_late=True, reject_on_worker_lost=True)
def export(self, spec: dict) -> dict:
    """Build the artifact of `spec` (an ExportSpec as a dict); returns its record."""
    wanted = ExportSpec.from_dict(spec)
    task_id = self.request.id
    with logs.context(key=wanted.key):  # task id, image and digest: worker.signals
        parts = process_parts()
        settings = parts.settings
        try:
            artifact = build(
                wanted,
                task_id,
                board=parts.board,
                store=parts.store,
                lease_seconds=settings.lease_seconds,
                options=registry_options(wanted, settings.plain_http_hosts),
                tmpdir=settings.tmpdir,
                limits=settings.limits,
                builder=settings.builder_id,
            )
        except Busy:
            log.info("another build of this artifact is running; leaving it to that one")
            return {"key": wanted.key, "state": "joined"}
        except Exception as exc:
            reason = _reason(exc)
            retries = self.request.retries
            transient = is_transient(exc, parts.board, parts.store)
            if transient and retries < settings.max_retries:
                countdown = get_exponential_backoff_interval(
                    BACKOFF, retries, BACKOFF_MAX, full_jitter=True
                )
                countdown = max(countdown, 1)
                log.warning("build failed, retry %d in %d s: %s", retries + 1, countdown, reason)
                now = time.time()
                error = f"retry {retries + 1} of {settings.max_retries} after: {reason}"
                _best_effort(parts.board.requeue, wanted.key, task_id, error, now + countdown, now)
                _best_effort(parts.board.count, "builds_retried")
                if self.request.is_eager:  # in-process builds: Celery retries at once
                    time.sleep(countdown)
                raise self.retry(exc=exc, countdown=countdown) from None
            log.error("build failed: %s", reason, exc_info=not isinstance(exc, SquashError))
            _best_effort(parts.board.failed, wanted.key, reason, time.time())
            raise  # Celery records the failure too
        return {
            "key": wanted.key,
            "state": "ready",
            "size": artifact.size,
            "sha256": artifact.sha256,
        }


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SquashError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _best_effort(call, *args) -> None:
    """A board update that must not hide the build's own error (Redis may be down too)."""
    try:
        call(*args)
    except Exception as exc:
        log.warning("could not record the build's state: %s", exc)
