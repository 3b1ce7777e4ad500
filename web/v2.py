"""squashd as a read-only registry (distribution API v2) in front of SQUASHD_REGISTRY:
`docker pull SQUASHD_HOST/NS/REPO:TAG` gets the squashed image of the upstream's
NS/REPO:TAG, built once with the service's defaults (`TAG--keep-N` keeps the bottom N
layers as they are).

A manifest GET of a tag resolves it at the upstream with the caller's credentials,
starts or joins its build and waits up to SQUASHD_WAIT_SECONDS; HEAD never starts one
unless SQUASHD_HEAD_BUILDS says so (for containerd, which resolves with HEAD).
Config and manifests come from memory, layers by redirect to the store (S3) or as a
range of the archive (a local directory).
"""

import time
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.access import Caller
from service.front.artifacts import FrontArtifacts, keep_suffix
from service.front.auth import FrontAuth
from service.front.documents import Document
from service.front.referrers import FILTERS_APPLIED, referrers_index
from service.requests import Outcome, Requests
from squash.oci import JSONObject, is_index
from storage.base import Artifact, Gone, Location
from tasks.board import FAILED
from tasks.errors import ServiceError, TooMany
from tasks.spec import ExportSpec
from web.callers import CHALLENGE, caller_of
from web.waiting import wait_for

router = APIRouter(prefix="/v2")
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
_CHUNK = 1 << 20
MAX_FORM = 64 << 10  # bytes of a token request's form


def registry_error(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    """The spec's error body: `{"errors": [{"code", "message", "detail"}]}`."""
    body = {"errors": [{"code": code, "message": message, "detail": None}]}
    return JSONResponse(body, status_code=status, headers={**API_VERSION, **(headers or {})})


async def _refused(request: Request, exc: ServiceError, unknown: str, name: str) -> Response:
    """A service error as a registry client expects to hear it; a 401 challenges the
    client as the upstream would, for `name`."""
    codes = {401: "UNAUTHORIZED", 403: "DENIED", 404: unknown, 429: "TOOMANYREQUESTS"}
    code = codes.get(exc.status, "UNAVAILABLE" if exc.status == 503 else "UNKNOWN")
    if exc.status == 400:
        code = "NAME_INVALID"
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooMany) else {}
    if exc.status == 401:
        headers.update(await _challenge(request, f"repository:{name}:pull"))
    return registry_error(exc.status, code, str(exc), headers)


async def _challenge(request: Request, scope: str | None = None) -> dict[str, str]:
    auth: FrontAuth = request.app.state.front_auth
    try:
        return await run_in_threadpool(auth.header, str(request.base_url), scope)
    except ServiceError:  # the upstream cannot say how it asks: Basic, as /c1 does
        return dict(CHALLENGE)


def _front(request: Request) -> FrontArtifacts:
    return request.app.state.front


@router.get("/")
async def version_check(request: Request) -> Response:
    """The API version check every client starts with: 200 if the upstream lets the
    caller in (anyone, for an upstream that asks no credentials), else its challenge."""
    auth: FrontAuth = request.app.state.front_auth
    try:
        takes = await run_in_threadpool(auth.takes, request.headers.get("authorization"))
    except ServiceError as exc:
        return await _refused(request, exc, "UNKNOWN", "")
    if takes:
        return JSONResponse({}, headers=API_VERSION)
    message = "authentication required" if "authorization" not in request.headers else (
        "the upstream registry refused these credentials"
    )  # fmt: skip
    return registry_error(401, "UNAUTHORIZED", message, await _challenge(request))


@router.api_route("/token", methods=["GET", "POST"])
async def token(request: Request) -> Response:
    """A token of the upstream's realm, asked for with the client's own credentials and
    scope (the realm the front's challenge names, when the upstream issues tokens); a
    POST is OAuth2's form, relayed as it is."""
    auth: FrontAuth = request.app.state.front_auth
    query = list(request.query_params.multi_items())
    form = None
    if request.method == "POST":
        form = await request.body()
        if len(form) > MAX_FORM:
            return registry_error(413, "UNSUPPORTED", "a token request larger than 64 KiB")
    try:
        status, body, kind = await run_in_threadpool(
            auth.token, query, request.headers.get("authorization"), form
        )
    except ServiceError as exc:
        return await _refused(request, exc, "UNKNOWN", "")
    return Response(body, status_code=status, media_type=kind.split(";")[0])


@router.api_route("/{name:path}/manifests/{reference}", methods=["GET", "HEAD"])
async def manifest(request: Request, name: str, reference: str) -> Response:
    """The squashed manifest of tag `reference` (built or joined, and waited for), or a
    manifest handed out before, by its digest; a digest never handed out here is taken
    for the source's manifest digest."""
    front = _front(request)
    try:
        upstream = front.upstream(name)
        caller = caller_of(request)
        if reference.startswith("sha256:"):

            def by_digest() -> Document | None:
                known = _handed_out(front, upstream, reference, caller)
                return None if known is None else _pulled(front, known, request.method)

            known = await run_in_threadpool(by_digest)
            if known is not None:
                return _document(request, known)
        try:
            return await _squashed(request, front, upstream, reference, caller)
        except Gone:  # deleted behind the service's back: forgotten, so built again
            return await _squashed(request, front, upstream, reference, caller)
    except Gone as exc:
        return registry_error(404, "MANIFEST_UNKNOWN", f"{exc}; pull again")
    except ServiceError as exc:
        return await _refused(request, exc, "MANIFEST_UNKNOWN", name)


def _handed_out(front: FrontArtifacts, name: str, digest: str, caller: Caller) -> Document | None:
    """A manifest or index handed out here before, by its digest."""
    known = front.by_digest(name, digest, caller)
    if known is not None:
        return known[1].document(digest)
    return front.index_by_digest(name, digest, caller)


async def _squashed(
    request: Request, front: FrontArtifacts, upstream: str, reference: str, caller: Caller
) -> Response:
    """The squashed image of a tag (or of the source's digest): its manifest, or for a
    multi-platform source an index of every platform's, once all are built."""
    tag, keep = keep_suffix(reference)
    image = f"{upstream}@{tag}" if tag.startswith("sha256:") else f"{upstream}:{tag}"
    requests: Requests = request.app.state.requests
    start = request.method == "GET" or requests.settings.head_builds

    def look() -> tuple[ExportSpec, list[tuple[JSONObject | None, ExportSpec, Outcome]]]:
        spec, kind = requests.resolve_export(image, caller, keep_base=keep)
        children = front.platforms(spec, kind, caller)
        wanted: list[tuple[JSONObject | None, ExportSpec]] = [*children] or [(None, spec)]
        requests.count_request(spec)  # one request for the tag, however many platforms it has
        return spec, [
            (platform, each, requests.find_or_start(each, start=start, caller=caller, count=False))
            for platform, each in wanted
        ]

    spec, looks = await run_in_threadpool(look)
    deadline = time.monotonic() + requests.settings.wait_seconds
    done: list[tuple[JSONObject | None, Artifact]] = []
    for platform, each, outcome in looks:
        request.app.state.metrics.cache(hit=outcome.artifact is not None)
        if outcome.artifact is None and outcome.job is not None:
            left = max(deadline - time.monotonic(), 0)
            outcome = await wait_for(request, requests, each, outcome, left, hand_out=False)
        if outcome.artifact is None:
            return _unfinished(each, outcome)
        done.append((platform, outcome.artifact))
    accept = ", ".join(request.headers.getlist("accept"))  # Go clients send a line per type

    def answer() -> Document:  # published for the requests by digest that follow
        if len(done) == 1 and done[0][0] is None:
            document = front.publish(done[0][1]).manifest(accept)
        else:
            children = [(platform, artifact) for platform, artifact in done if platform]
            document = front.index(upstream, spec.digest, children, accept)
        return _pulled(front, document, request.method)

    return _document(request, await run_in_threadpool(answer))


def _pulled(front: FrontArtifacts, document: Document, method: str) -> Document:
    """A GET that hands out an image manifest is one pull, by tag or by digest (after
    containerd's HEAD of the tag, or an index); a HEAD, an index or a referrer is none."""
    if method == "GET" and not is_index(document.media_type) and not document.attached:
        front.count_pull()
    return document


def _unfinished(spec: ExportSpec, outcome: Outcome) -> Response:
    """A build not there: never started (HEAD), failed, or still running."""
    job = outcome.job
    if job is None:
        return registry_error(404, "MANIFEST_UNKNOWN", f"{spec.image} is not squashed yet; GET it")
    if job.state == FAILED:
        return registry_error(502, "UNKNOWN", f"the squash of {spec.image} failed: {job.error}")
    progress = f" ({job.done} of {job.total} bytes read)" if job.total else ""
    return registry_error(
        503, "UNAVAILABLE", f"{spec.image} ({spec.platform}) is still being squashed{progress}; "
        "pull again", {"Retry-After": "5"},
    )  # fmt: skip


def _document(request: Request, document: Document, media_type: str | None = None) -> Response:
    headers = {
        **API_VERSION,
        "Docker-Content-Digest": document.digest,
        "Content-Length": str(len(document.data)),
        "ETag": f'"{document.digest}"',
    }
    body = b"" if request.method == "HEAD" else document.data
    return Response(body, media_type=media_type or document.media_type, headers=headers)


@router.get("/{name:path}/referrers/{digest}")
async def referrers(request: Request, name: str, digest: str) -> Response:
    """The referrers of a manifest handed out here (its provenance), as an index; the
    `artifactType` query filters them (service/front/referrers.py)."""
    front = _front(request)
    artifact_type = request.query_params.get("artifactType")
    try:
        upstream = front.upstream(name)
        caller = caller_of(request)

        def find() -> Document:
            known = front.by_digest(upstream, digest, caller)
            return referrers_index(None if known is None else known[1], digest, artifact_type)

        found = await run_in_threadpool(find)
    except Gone as exc:
        return registry_error(404, "MANIFEST_UNKNOWN", f"{exc}; pull again")
    except ServiceError as exc:
        return await _refused(request, exc, "MANIFEST_UNKNOWN", name)
    response = _document(request, found)
    if artifact_type is not None:
        response.headers[FILTERS_APPLIED] = "artifactType"
    return response


@router.api_route("/{name:path}/blobs/{digest}", methods=["GET", "HEAD"])
async def blob(request: Request, name: str, digest: str) -> Response:
    """A config (from memory) or a layer (a redirect, or a range of the archive) of a
    manifest handed out here, to a caller the upstream lets read its source."""
    front = _front(request)
    try:
        upstream = front.upstream(name)
        caller = caller_of(request)

        def find() -> Document | Location | None:
            known = front.by_digest(upstream, digest, caller)
            return None if known is None else front.blob(*known, digest, request.method)

        found = await run_in_threadpool(find)
    except Gone as exc:  # forgotten: the next pull's manifest builds it again
        return registry_error(404, "BLOB_UNKNOWN", f"blob {digest}: {exc}; pull again")
    except ServiceError as exc:
        return await _refused(request, exc, "BLOB_UNKNOWN", name)
    if found is None:
        return registry_error(404, "BLOB_UNKNOWN", f"blob {digest} is unknown to {name}")
    if isinstance(found, Document):
        return _document(request, found, "application/octet-stream")
    if found.url is not None:
        return RedirectResponse(found.url, status_code=307, headers=API_VERSION)
    return _file_range(request, found, digest)


def _file_range(request: Request, location: Location, digest: str) -> Response:
    """A blob that is bytes [offset, offset + length) of a local file; one `Range`."""
    assert location.path is not None and location.length is not None
    size = location.length
    start, end = 0, size - 1
    headers = {**API_VERSION, "Docker-Content-Digest": digest, "Accept-Ranges": "bytes"}
    status = 200
    asked = request.headers.get("range", "")
    if asked:
        span = _range(asked, size)
        if span is None:
            headers["Content-Range"] = f"bytes */{size}"
            return Response(status_code=416, headers=headers)
        (start, end), status = span, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    path, first = location.path, location.offset + start

    def chunks() -> Iterator[bytes]:
        left = end - start + 1
        with open(path, "rb") as file:
            file.seek(first)
            while left > 0 and (data := file.read(min(_CHUNK, left))):
                left -= len(data)
                yield data

    return StreamingResponse(
        chunks(), status_code=status, headers=headers, media_type="application/octet-stream"
    )


def _range(header: str, size: int) -> tuple[int, int] | None:
    """`bytes=A-B`, `bytes=A-` or `bytes=-N` within `size`; None if unsatisfiable."""
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip() != "bytes" or not dash or "," in spec:
        return None
    try:
        if not first:
            count = int(last)
            return (max(size - count, 0), size - 1) if count > 0 and size else None
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    return (start, end) if 0 <= start <= end else None
