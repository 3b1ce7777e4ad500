"""Waiting for a build without holding a thread: poll the board, asleep in between."""

import asyncio
import time

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from service.runtime import Outcome, Service
from tasks.spec import ExportSpec

POLL = 0.25  # seconds between looks at the board


async def wait_for(
    request: Request,
    service: Service,
    spec: ExportSpec,
    outcome: Outcome,
    seconds: float,
    hand_out: bool = True,
) -> Outcome:
    """Until the artifact is there, the build failed, `seconds` passed or the client
    went away. Each look also starts the build again if it died (see Service.poll). The
    artifact found is handed out for the request's method if `hand_out`."""
    method = request.method if hand_out else None
    deadline = time.monotonic() + seconds
    while outcome.artifact is None and outcome.job is not None and outcome.job.active:
        left = deadline - time.monotonic()
        if left <= 0 or await request.is_disconnected():
            break
        await asyncio.sleep(min(POLL, left))
        outcome = await run_in_threadpool(service.poll, spec, method)
    return outcome
