"""The export API: `POST /v1/exports`, `GET /v1/exports/{id}`, `GET /v1/exports/{id}/download`."""

import functools
from typing import Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from service.access import Caller
from service.requests import Requests
from squash.oci import IN_TOTO
from storage.base import Artifact
from tasks.board import FAILED, Job
from tasks.errors import Denied, NotFound
from web.callers import caller_of
from web.responses import deliver, document, failed, links, pending
from web.waiting import wait_for

router = APIRouter(prefix="/v1/exports")
ExportId = Path(pattern=r"^[0-9a-f]{64}$", description="the artifact key")


class ExportRequest(BaseModel):
    image: str = Field(description="docker://HOST/NAME[:TAG|@DIGEST] or HOST/NAME:TAG")
    platform: str | None = Field(None, description="OS/ARCH[/VARIANT], default linux/amd64")
    tag: str | None = Field(None, description="NAME:TAG written into the archive")
    layer_compression: Literal["none", "gzip", "zstd"] | None = None
    keep_base: int = Field(0, ge=0, description="bottom layers kept as they are")


@router.post("", status_code=202)
async def create(
    request: Request,
    body: ExportRequest,
    wait: float = Query(0, ge=0, description="seconds to wait for the build"),
) -> Response:
    """Start (or join) an export: 202 with its id and links, 200 when already built."""
    requests: Requests = request.app.state.requests
    caller = caller_of(request)
    spec, _ = await run_in_threadpool(
        requests.resolve_export,
        body.image,
        caller,
        platform=body.platform,
        tag=body.tag,
        compression=body.layer_compression,
        keep_base=body.keep_base,
    )
    outcome = await run_in_threadpool(
        functools.partial(requests.find_or_start, spec, caller=caller)
    )
    request.app.state.metrics.cache(hit=outcome.artifact is not None)
    if outcome.artifact is None and wait:
        seconds = min(wait, requests.settings.wait_seconds)
        outcome = await wait_for(request, requests, spec, outcome, seconds)
    if outcome.job is not None and outcome.job.state == FAILED and outcome.artifact is None:
        return failed(request, outcome.job)
    status = 200 if outcome.artifact is not None else 202
    headers = {"Location": links(spec.key)["self"]}
    return JSONResponse(document(spec.key, outcome.job, outcome.artifact), status, headers)


def unknown(key: str) -> NotFound:
    """What an export answers that does not exist, or that the caller may not read (the
    two look the same: ids of private images leak nothing)."""
    return NotFound(
        f"no export {key} here (if you made it, squashd may have lost its state: "
        "POST /v1/exports again)"
    )


async def _find(request: Request, key: str) -> tuple[Job | None, Artifact | None]:
    """The export `key` if the caller may read its image; a build of it that died is
    sent again."""
    requests: Requests = request.app.state.requests
    caller: Caller = caller_of(request)

    def find() -> tuple[Job | None, Artifact | None]:  # one trip to a thread
        job, artifact = requests.find_job(key), requests.find_artifact(key)
        if job is not None and job.spec is not None:
            name, digest = job.spec.name, job.spec.digest
        elif artifact is not None and artifact.image:
            name, digest = artifact.image, artifact.source_digest
        else:
            raise unknown(key)
        try:
            requests.check_access(name, digest, caller)
        except Denied:
            raise unknown(key) from None
        if artifact is None:
            job = requests.resend_if_dead(job)
        return job, artifact

    return await run_in_threadpool(find)


@router.get("/{key}")
async def status(request: Request, key: str = ExportId) -> JSONResponse:
    """State (queued, building, ready, failed), progress, size, sha256, error."""
    job, artifact = await _find(request, key)
    return JSONResponse(document(key, job, artifact))


@router.get("/{key}/provenance")
async def provenance(request: Request, key: str = ExportId) -> Response:
    """The provenance statement of the built export (in-toto, SLSA provenance v1)."""
    requests: Requests = request.app.state.requests
    _, artifact = await _find(request, key)
    statement = None
    if artifact is not None:
        statement = await run_in_threadpool(requests.statement, artifact)
    if statement is None:
        raise NotFound(f"export {key} has no provenance statement (not built, or built before "
                       "squashd kept them)")  # fmt: skip
    return Response(statement, media_type=IN_TOTO)


@router.api_route("/{key}/download", methods=["GET", "HEAD"])
async def download(request: Request, key: str = ExportId) -> Response:
    """The archive once built (a redirect or the file); 202 while it builds."""
    requests: Requests = request.app.state.requests
    job, artifact = await _find(request, key)
    if artifact is not None:
        filename = job.spec.filename if job and job.spec else f"{key}.tar"
        location = await run_in_threadpool(requests.hand_out, artifact, request.method, filename)
        return deliver(request, artifact, location, hit=True)
    assert job is not None
    if job.state == FAILED:
        return failed(request, job)
    if job.active:
        return pending(request, job)
    raise NotFound(f"export {key} is not built (its artifact is gone); request it again")
