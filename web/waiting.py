"""Waiting for a build without holding a thread: poll the board, asleep in between."""

import asyncio
import functools
import time

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from service.requests import Outcome, Requests
from tasks.spec import ExportSpec

POLL = 0.25  # seconds between looks at the board


async def wait_for(
    request: Request,
    requests: Requests,
    spec: ExportSpec,
    outcome: Outcome,
    seconds: float,
    *,
    hand_out: bool = True,
) -> Outcome:
    """Until the artifact is there, the build failed, `seconds` passed or the client
    went away. Each look also starts the build again if it died (see
    Requests.follow_build). The
    artifact found is handed out for the request's method if `hand_out`."""
    method = request.method if hand_out else None
    deadline = time.monotonic() + seconds
    while outcome.artifact is None and outcome.job is not None and outcome.job.active:
        left = deadline - time.monotonic()
        if left <= 0 or await request.is_disconnected():
            break
        await asyncio.sleep(min(POLL, left))
        outcome = await run_in_threadpool(
            functools.partial(requests.follow_build, spec, hand_out_for=method)
        )
    return outcome
