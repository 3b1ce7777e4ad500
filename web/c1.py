"""Quay's squash route, `GET|HEAD /c1/squash/NAMESPACE/REPOSITORY/TAG`, against the
upstream registry SQUASHD_REGISTRY: `curl -fL URL | docker load` just works."""

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from service.requests import Outcome, Requests
from storage.base import Gone
from tasks.board import FAILED
from tasks.errors import NotFound
from tasks.spec import ExportSpec
from web.callers import caller_of
from web.responses import deliver, failed, pending
from web.waiting import wait_for

router = APIRouter()


def _image(registry: str, path: str) -> str:
    """`ns/repo/tag` (deeper names too; a digest for the tag) as an image reference."""
    name, _, reference = path.strip("/").rpartition("/")
    if not name or not reference:
        raise NotFound("expected /c1/squash/NAMESPACE/REPOSITORY/TAG")
    sep = "@" if ":" in reference else ":"
    return f"{registry}/{name}{sep}{reference}"


@router.api_route("/c1/squash/{path:path}", methods=["GET", "HEAD"])
async def squash(
    request: Request,
    path: str,
    platform: str | None = Query(None, description="OS/ARCH[/VARIANT], default linux/amd64"),
    compression: str | None = Query(None, description="none, gzip or zstd"),
    keep_base: int = Query(0, ge=0, description="bottom layers kept as they are"),
    wait: float | None = Query(None, ge=0, description="seconds to wait for a build"),
) -> Response:
    """The squashed archive: redirect to it (S3) or serve it (local directory). A build
    is started (or joined) and waited for; HEAD never starts one."""
    requests: Requests = request.app.state.requests
    image = _image(requests.settings.registry, path)

    def look() -> tuple[ExportSpec, Outcome]:  # the registry or the board must be asked
        spec, _ = requests.resolve_export(
            image, caller, platform=platform, compression=compression, keep_base=keep_base
        )
        outcome = requests.find_or_start(
            spec, start=request.method != "HEAD", hand_out_for=request.method, caller=caller
        )
        return spec, outcome

    caller = caller_of(request)
    try:
        # from this process's memory when it can (no thread, no registry, no board)
        found = requests.answer_from_memory(
            image, caller, hand_out_for=request.method, platform=platform,
            compression=compression, keep_base=keep_base,
        )  # fmt: skip
        spec, outcome = found if found is not None else await run_in_threadpool(look)
    except Gone:  # a local file removed by hand: forgotten, so built again
        spec, outcome = await run_in_threadpool(look)
    request.app.state.metrics.cache(hit=outcome.artifact is not None)
    if outcome.artifact is None and request.method != "HEAD":
        limit = requests.settings.wait_seconds
        seconds = limit if wait is None else min(wait, limit)
        outcome = await wait_for(request, requests, spec, outcome, seconds)
    if outcome.artifact is not None and outcome.location is not None:
        return deliver(request, outcome.artifact, outcome.location, hit=outcome.hit)
    job = outcome.job
    if job is None:  # HEAD, and nothing built or building
        return Response(status_code=404, headers={"X-Squashd-State": "absent"})
    if job.state == FAILED:
        return failed(request, job)
    return pending(request, job)
