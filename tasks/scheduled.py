"""The scheduled work that Celery beat sends to the `squashd.scheduled` queue (or a
thread runs in the embedded default): pre-squash the most requested tags, and the
janitor."""

import logging
import threading
import time

from tasks import logs
from tasks.asked import ask
from tasks.celery_app import app
from tasks.enqueue import enqueue, resend_if_dead
from tasks.janitor import Policy, sweep
from tasks.parts import process_parts
from tasks.queues import SCHEDULED_QUEUE
from tasks.resolver import SERVICE_ITSELF

log = logging.getLogger("squashd.scheduled")


@app.task(name="squashd.presquash")
def presquash() -> dict[str, int]:
    """Resolve each of the most requested tags to its current digest (a manifest HEAD,
    no pull) and build, on the scheduled queue, what is not built yet: the default
    platform, and every other one of a multi-platform tag (what a registry pull of it
    needs). A tag the registry refuses or does not answer for is skipped; the others go
    on."""
    parts = process_parts()
    board, resolver = parts.board, parts.resolver
    now = time.time()
    board.trim_popular(now)
    summary = {"tags": 0, "ready": 0, "building": 0, "enqueued": 0, "errors": 0}
    for tag, _count in board.popular(parts.settings.presquash_top, now):
        summary["tags"] += 1
        with logs.context(image=tag):
            try:
                asked = ask(tag, parts.settings)
                digest, kind = resolver.resolve(asked.ref, SERVICE_ITSELF)
                spec = asked.spec(digest)
                board.remember_tag(tag, spec.key)
                platforms = resolver.exports_per_platform(spec, kind, SERVICE_ITSELF)
                others = [each for _, each in platforms if each != spec]
                for each in [spec, *others]:
                    if parts.find_artifact(each.key) is not None:
                        summary["ready"] += 1
                    elif enqueue(parts, each, SCHEDULED_QUEUE, ready_missing=True):
                        summary["enqueued"] += 1
                        log.info("pre-squash of %s (%s) queued", each.image, each.platform)
                    else:
                        summary["building"] += 1
            except Exception as exc:
                summary["errors"] += 1
                log.warning("pre-squash of %s skipped: %s", tag, exc)
    log.info("pre-squash: %s", summary)
    return summary


@app.task(name="squashd.sweep")
def sweep_builds() -> dict[str, int]:
    """Send again the builds whose lease ran out (a worker died) or whose message was lost,
    even when nobody is asking about them: recovery does not wait for the broker's
    visibility timeout."""
    parts = process_parts()
    summary = {"active": 0, "resent": 0}
    for job in parts.board.active():
        summary["active"] += 1
        after = resend_if_dead(parts, job)
        if after is not None and after.task_id != job.task_id:
            summary["resent"] += 1
    if summary["resent"]:
        log.info("sweep: %s", summary)
    return summary


@app.task(name="squashd.janitor")
def janitor() -> dict[str, object]:
    """Evict cold artifacts and abort abandoned uploads (see tasks.janitor)."""
    parts = process_parts()
    settings = parts.settings
    policy = Policy(
        ttl=settings.artifact_ttl,
        budget=settings.storage_budget,
        in_use_for=settings.url_lifetime,
        stale_upload=settings.max_build_seconds,
    )
    summary = sweep(parts.store, parts.board, policy, time.time()).summary()
    log.info("janitor: %s", summary)
    return summary


class LocalBeat:
    """The embedded default's beat: celeryconfig's schedule, run by a thread of the
    web process with `Task.apply` (no broker, no beat process)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-beat", daemon=True)

    def start(self) -> "LocalBeat":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        schedule = app.conf.beat_schedule
        due = {name: time.monotonic() + entry["schedule"] for name, entry in schedule.items()}
        while not self._stop.wait(1.0):
            for name, entry in schedule.items():
                if time.monotonic() < due[name]:
                    continue
                due[name] = time.monotonic() + entry["schedule"]
                result = app.tasks[entry["task"]].apply()
                if result.failed():
                    log.error("%s failed: %s", entry["task"], result.result)
