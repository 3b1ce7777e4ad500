"""How outcomes are answered: the artifact (a redirect or the file), a build still
running (202), a failed build (502), and the JSON that describes an export."""

from fastapi import Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from storage.base import Artifact, Location
from tasks.board import READY, Job

RETRY_AFTER = 5  # seconds a client is asked to wait before asking again
TAR = "application/x-tar"


def links(key: str) -> dict[str, str]:
    return {"self": f"/v1/exports/{key}", "download": f"/v1/exports/{key}/download"}


def document(key: str, job: Job | None, artifact: Artifact | None) -> dict:
    """An export as the status API shows it."""
    state = READY if artifact is not None else (job.state if job else "absent")
    out: dict = {"id": key, "state": state}
    spec = job.spec if job else None
    if spec is not None:
        out.update(
            image=spec.image,
            source=spec.source,
            digest=spec.digest,
            platform=spec.platform,
            tag=spec.tag,
            layer_compression=spec.compression,
            keep_base=spec.keep_base,
        )
    elif artifact is not None:
        out.update(image=artifact.image, digest=artifact.source_digest)
    if job is not None:
        done = job.total if state == READY and job.total else job.done
        out["progress"] = {"done": min(done, job.total) if job.total else done, "total": job.total}
        out.update(builds=job.builds, error=job.error or None, updated=job.updated)
    out["links"] = links(key)
    if artifact is not None:
        out.update(size=artifact.size, sha256=artifact.sha256, created=artifact.created)
        out["links"]["provenance"] = f"/v1/exports/{key}/provenance"
    return out


def deliver(request: Request, artifact: Artifact, location: Location, *, hit: bool) -> Response:
    """The artifact: a redirect to a presigned URL (S3), or the file itself with an exact
    Content-Length, a content ETag and Range support (a local directory)."""
    etag = f'"{artifact.sha256}"'
    headers = {
        "ETag": etag,
        "X-Squashd-Export": artifact.key,
        "X-Squashd-Cache": "hit" if hit else "miss",
        "Cache-Control": "no-store",
    }
    if location.url is not None:
        return RedirectResponse(location.url, status_code=302, headers=headers)
    assert location.path is not None
    if etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    headers["Cache-Control"] = "private, max-age=0, must-revalidate"
    return FileResponse(location.path, media_type=TAR, filename=location.filename, headers=headers)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def pending(request: Request, job: Job) -> Response:
    """202: the build is queued or running; ask again (or follow the status link)."""
    headers = {"Retry-After": str(RETRY_AFTER), "Location": links(job.key)["self"]}
    if request.method == "HEAD":
        return Response(status_code=202, headers=headers)
    return JSONResponse(document(job.key, job, None), status_code=202, headers=headers)


def failed(request: Request, job: Job) -> Response:
    """502: the build failed; the reason is the registry's or the image's."""
    if request.method == "HEAD":
        return Response(status_code=502)
    body = {"error": f"the export of {job.spec.image if job.spec else job.key} failed: {job.error}"}
    return JSONResponse({**document(job.key, job, None), **body}, status_code=502)
