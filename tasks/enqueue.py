"""Starting a build once however many ask for it: it is claimed on the board (which says
whether a live build is there to join, see Board.claim), then sent to whoever runs it. A
build whose lease ran out (its worker died) or whose message was lost is sent again.
The web's requests, the scheduled pre-squash and the sweep all start builds here.
"""

import logging
import time
import uuid
from collections.abc import Callable

from tasks.board import QUEUED, Job, claim_allowed
from tasks.errors import Unavailable
from tasks.parts import Parts
from tasks.queues import EXPORT_QUEUE
from tasks.spec import ExportSpec

log = logging.getLogger("squashd.service")

#: What a new build must pass before it is claimed, given the time (the web's quotas):
#: it raises to refuse.
Admission = Callable[[float], None]


def enqueue(
    parts: Parts,
    spec: ExportSpec,
    queue: str,
    *,
    ready_missing: bool = False,
    admit: Admission | None = None,
) -> bool:
    """Send a build of `spec` unless one is alive; True if this call sent it. A job
    that is ready is built again only with `ready_missing` (see Board.claim). A new
    build must pass `admit` first."""
    board = parts.board
    task_id = str(uuid.uuid4())
    now = time.time()
    current = parts.on_board(board.job, spec.key)
    locked = current is not None and parts.on_board(board.locked, spec.key)
    grace = parts.settings.queued_grace
    if not claim_allowed(current, now, grace, locked=locked, ready_missing=ready_missing):
        return False  # a live build to join, or a failure still reported
    if admit is not None:
        admit(now)
    if not parts.on_board(board.claim, spec, task_id, now, ready_missing=ready_missing):
        return False
    try:
        parts.dispatcher.send(spec, task_id, queue)
    except Exception as exc:
        try:
            board.unclaim(spec.key, task_id)
        except Exception as again:
            log.warning("could not withdraw the claim of %s: %s", spec.key, again)
        raise Unavailable(f"cannot queue the build, the broker is unreachable: {exc}") from None
    return True


def ensure_queued(
    parts: Parts,
    spec: ExportSpec,
    *,
    ready_missing: bool = False,
    admit: Admission | None = None,
) -> Job:
    """The job of `spec`, its build sent on the export queue unless one is alive."""
    enqueue(parts, spec, EXPORT_QUEUE, ready_missing=ready_missing, admit=admit)
    return parts.on_board(parts.board.job, spec.key) or Job(spec.key, QUEUED, spec)


def resend_if_dead(parts: Parts, job: Job | None) -> Job | None:
    """A build whose lease ran out (its worker died) or whose message was lost is sent
    again; any look at an export does this, and so does the beat's sweep."""
    if job is None or job.spec is None or not job.active:
        return job
    ensure_queued(parts, job.spec)
    return parts.on_board(parts.board.job, job.key) or job
