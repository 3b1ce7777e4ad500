"""`/healthz`: the process answers. `/readyz`: what it needs answers too."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service.overview import Overview

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 when the board (Redis), the store and the broker answer; 503 says which not."""
    overview: Overview = request.app.state.overview
    report = await run_in_threadpool(overview.readiness)
    ready = all(value == "ok" for value in report.values())
    return JSONResponse({"ready": ready, **report}, status_code=200 if ready else 503)
