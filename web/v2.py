"""squashd as a read-only registry (distribution API v2) in front of SQUASHD_REGISTRY,
and the mirror of the registries `?ns=` and SQUASHD_MIRROR_PREFIXES name
(service/front/upstreams.py): `docker pull SQUASHD_HOST/NS/REPO:TAG` gets the squashed
image of the upstream's NS/REPO:TAG, built once with the service's defaults
(`TAG--keep-N` keeps the bottom N layers as they are).

A manifest GET of a tag resolves it at the upstream with the caller's credentials,
starts or joins its build and waits up to SQUASHD_WAIT_SECONDS, or with
SQUASHD_MIRROR_COLD=original hands out the upstream's own manifest until it is built
(service/front/cold_tags.py, which also says when a HEAD starts a build). Config and
manifests come from memory, layers by redirect to the store (S3) or as a range of the
archive (a local directory); what squashd did not hand out is the upstream's, passed
through (service/front/passthrough.py).
"""

import time
from collections.abc import Iterator
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.access import Caller
from service.front.artifacts import FrontArtifacts, keep_suffix
from service.front.cold_tags import original_meanwhile, starts_build
from service.front.documents import Document
from service.front.passthrough import PassingBlob, PassThrough
from service.front.pull_counts import ORIGINAL, SQUASHED, is_pull
from service.front.referrers import FILTERS_APPLIED, referrers_index
from service.front.upstreams import NotServed, Route, Upstreams, is_reference
from service.requests import Outcome, Requests
from squash.oci import JSONObject
from storage.base import Artifact, Gone, Location
from tasks.board import FAILED
from tasks.errors import ServiceError, TooMany
from tasks.spec import ExportSpec
from web.callers import CHALLENGE, caller_of
from web.namespace import echo_namespace
from web.waiting import wait_for

router = APIRouter(prefix="/v2")
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
_CHUNK = 1 << 20
MAX_FORM = 64 << 10  # bytes of a token request's form


def registry_error(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    """The spec's error body: `{"errors": [{"code", "message", "detail"}]}`."""
    body = {"errors": [{"code": code, "message": message, "detail": None}]}
    return JSONResponse(body, status_code=status, headers={**API_VERSION, **(headers or {})})


async def _refused(
    request: Request, exc: ServiceError, unknown: str, route: Route | None
) -> Response:
    """A service error as a registry client expects to hear it; a 401 challenges the
    client as the upstream of `route` would, for its name."""
    codes = {401: "UNAUTHORIZED", 403: "DENIED", 404: unknown, 429: "TOOMANYREQUESTS"}
    code = codes.get(exc.status, "UNAVAILABLE" if exc.status == 503 else "UNKNOWN")
    if exc.status == 400:
        code = "NAME_INVALID"
    if isinstance(exc, NotServed):
        code = "NAME_UNKNOWN"
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooMany) else {}
    if exc.status == 401:
        scope = f"repository:{route.asked}:pull" if route and route.asked else None
        headers.update(await _challenge(request, route, scope))
    return registry_error(exc.status, code, str(exc), headers)


async def _challenge(
    request: Request, route: Route | None, scope: str | None = None
) -> dict[str, str]:
    upstreams = _upstreams(request)
    auth = upstreams.auth(route.host if route else upstreams.default)
    realm = upstreams.realm(str(request.base_url), route)
    try:
        return await run_in_threadpool(auth.header, realm, scope)
    except ServiceError:  # the upstream cannot say how it asks: Basic, as /c1 does
        return dict(CHALLENGE)


def _front(request: Request) -> FrontArtifacts:
    return request.app.state.front


def _upstreams(request: Request) -> Upstreams:
    return request.app.state.upstreams


def _route(request: Request, name: str) -> Route:
    """The upstream NAME is asked of; an `ns` it names is echoed (OCI-Namespace)."""
    route = _upstreams(request).route(name, request.query_params.get("ns"))
    echo_namespace(request, route.ns)
    return route


@router.get("/")
async def version_check(request: Request) -> Response:
    """The API version check every client starts with: 200 if the upstream lets the
    caller in (anyone, for an upstream that asks no credentials), else its challenge."""
    upstreams = _upstreams(request)
    ns = request.query_params.get("ns")
    route = None
    try:
        if ns is not None:
            route = upstreams.namespace(ns)
            echo_namespace(request, ns)
        auth = upstreams.auth(route.host if route else upstreams.default)
        takes = await run_in_threadpool(auth.takes, request.headers.get("authorization"))
    except ServiceError as exc:
        return await _refused(request, exc, "UNKNOWN", None)
    if takes:
        return JSONResponse({}, headers=API_VERSION)
    message = "authentication required" if "authorization" not in request.headers else (
        "the upstream registry refused these credentials"
    )  # fmt: skip
    return registry_error(401, "UNAUTHORIZED", message, await _challenge(request, route))


@router.api_route("/token", methods=["GET", "POST"])
async def token(request: Request) -> Response:
    """A token of the upstream's realm, asked for with the client's own credentials and
    scope (the realm the front's challenge names, when the upstream issues tokens); a
    repository scope's upstream is the one a path of that name reaches. A POST is
    OAuth2's form, relayed as it is."""
    upstreams = _upstreams(request)
    form = None
    if request.method == "POST":
        form = await request.body()
        if len(form) > MAX_FORM:
            return registry_error(413, "UNSUPPORTED", "a token request larger than 64 KiB")

    def relay() -> tuple[int, bytes, str]:
        host, query = upstreams.token_request(list(request.query_params.multi_items()))
        return upstreams.auth(host).token(query, request.headers.get("authorization"), form)

    try:
        status, body, kind = await run_in_threadpool(relay)
    except ServiceError as exc:
        return await _refused(request, exc, "UNKNOWN", None)
    return Response(body, status_code=status, media_type=kind.split(";")[0])


@router.api_route("/{name:path}/manifests/{reference}", methods=["GET", "HEAD"])
async def manifest(request: Request, name: str, reference: str) -> Response:
    """The squashed manifest of tag `reference` (built or joined, and waited for), or a
    manifest handed out before, by its digest; a digest never handed out here is the
    upstream's own manifest or index, passed through. What can be no tag or digest is
    unknown, as the distribution registry answers."""
    front = _front(request)
    route = None
    try:
        route = _route(request, name)
        upstream = route.name
        caller = caller_of(request)
        if not is_reference(reference):
            return registry_error(404, "MANIFEST_UNKNOWN", f"{reference!r} is no tag or digest")
        if ":" in reference and not keep_suffix(reference)[1]:
            passing: PassThrough = request.app.state.passthrough
            named = route

            def by_digest() -> Document:
                known = _handed_out(front, upstream, reference, caller)
                if known is None:  # not ours: the upstream's own, passed through
                    original = passing.manifest(named, reference, caller)
                    return _pulled(front, original, request.method, named.host, ORIGINAL)
                return _pulled(front, known, request.method, named.host, SQUASHED)

            return _document(request, await run_in_threadpool(by_digest))
        try:
            return await _squashed(request, front, route, reference, caller)
        except Gone:  # deleted behind the service's back: forgotten, so built again
            return await _squashed(request, front, route, reference, caller)
    except Gone as exc:
        return registry_error(404, "MANIFEST_UNKNOWN", f"{exc}; pull again")
    except ServiceError as exc:
        return await _refused(request, exc, "MANIFEST_UNKNOWN", route)


def _handed_out(front: FrontArtifacts, name: str, digest: str, caller: Caller) -> Document | None:
    """A manifest or index handed out here before, by its digest."""
    known = front.by_digest(name, digest, caller)
    if known is not None:
        return known[1].document(digest)
    return front.index_by_digest(name, digest, caller)


async def _squashed(
    request: Request, front: FrontArtifacts, route: Route, reference: str, caller: Caller
) -> Response:
    """The squashed image of a tag (or of the source's digest): its manifest, or for a
    multi-platform source an index of every platform's, once all are built. Until then,
    with SQUASHD_MIRROR_COLD=original, the upstream's own (the builds started)."""
    upstream = route.name
    tag, keep = keep_suffix(reference)
    image = f"{upstream}@{tag}" if tag.startswith("sha256:") else f"{upstream}:{tag}"
    requests: Requests = request.app.state.requests
    settings = requests.settings
    start = starts_build(settings, request.method, route)

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
    if original_meanwhile(settings, (outcome for _, _, outcome in looks)):
        passing: PassThrough = request.app.state.passthrough

        def upstreams_own() -> Document:
            document = passing.manifest(route, spec.digest, caller)
            return _pulled(front, document, request.method, route.host, ORIGINAL)

        return _document(request, await run_in_threadpool(upstreams_own))
    deadline = time.monotonic() + settings.wait_seconds
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
        return _pulled(front, document, request.method, route.host, SQUASHED)

    return _document(request, await run_in_threadpool(answer))


def _pulled(
    front: FrontArtifacts, document: Document, method: str, upstream: str, served: str
) -> Document:
    """A GET that hands out an image manifest is one pull from `upstream`, by tag or by
    digest (after containerd's HEAD of the tag, or an index); a HEAD, an index or a
    referrer is none (service/front/pull_counts.py)."""
    if is_pull(document, method):
        front.count_pull(upstream, served)
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
    route = None
    try:
        route = _route(request, name)
        caller = caller_of(request)

        def find() -> Document:
            known = front.by_digest(route.name, digest, caller)
            return referrers_index(None if known is None else known[1], digest, artifact_type)

        found = await run_in_threadpool(find)
    except Gone as exc:
        return registry_error(404, "MANIFEST_UNKNOWN", f"{exc}; pull again")
    except ServiceError as exc:
        return await _refused(request, exc, "MANIFEST_UNKNOWN", route)
    response = _document(request, found)
    if artifact_type is not None:
        response.headers[FILTERS_APPLIED] = "artifactType"
    return response


@router.api_route("/{name:path}/blobs/{digest}", methods=["GET", "HEAD"])
async def blob(request: Request, name: str, digest: str) -> Response:
    """A config (from memory) or a layer (a redirect, or a range of the archive) of a
    manifest handed out here, to a caller the upstream lets read its source; any other
    blob is the upstream's, passed through as the caller may read it."""
    front = _front(request)
    route = None
    try:
        route = _route(request, name)
        upstream = route.name
        caller = caller_of(request)

        passing: PassThrough = request.app.state.passthrough
        named = route

        def find() -> Document | Location | PassingBlob:
            known = front.by_digest(upstream, digest, caller)
            if known is None:  # not ours: the upstream's own, passed through
                return passing.blob(named, digest, caller, request.method)
            return front.blob(*known, digest, request.method)

        found = await run_in_threadpool(find)
    except Gone as exc:  # forgotten: the next pull's manifest builds it again
        return registry_error(404, "BLOB_UNKNOWN", f"blob {digest}: {exc}; pull again")
    except ServiceError as exc:
        return await _refused(request, exc, "BLOB_UNKNOWN", route)
    if isinstance(found, PassingBlob):
        return _passing(request, found)
    if isinstance(found, Document):
        return _document(request, found, "application/octet-stream")
    if found.url is not None:
        return RedirectResponse(found.url, status_code=307, headers=API_VERSION)
    return _file_range(request, found, digest)


def _passing(request: Request, blob: PassingBlob) -> Response:
    """The upstream's blob as it arrives (its digest checked on the way: a broken one
    ends the connection before its last byte); the whole blob, whatever `Range` says."""
    headers = {**API_VERSION, "Docker-Content-Digest": blob.digest}
    if blob.length is not None:
        headers["Content-Length"] = str(blob.length)
    kind = "application/octet-stream"
    if request.method == "HEAD":
        return Response(headers=headers, media_type=kind)
    return StreamingResponse(blob.chunks, headers=headers, media_type=kind)


@router.get("/{name:path}/tags/list")
async def tags(
    request: Request, name: str, n: str | None = None, last: str | None = None
) -> Response:
    """The upstream's tags of NAME (`n`, `last`: a page of them), read with the caller's
    credentials; the next page's `Link` names it as the client asked for it."""
    passing: PassThrough = request.app.state.passthrough
    route = None
    try:
        route = _route(request, name)
        body, after = await run_in_threadpool(passing.tags, route, n, last, caller_of(request))
    except ServiceError as exc:
        return await _refused(request, exc, "NAME_UNKNOWN", route)
    headers = dict(API_VERSION)
    if after is not None:
        query = after + (f"&{urlencode({'ns': route.ns})}" if route.ns else "")
        headers["Link"] = f'</v2/{name}/tags/list?{query}>; rel="next"'
    return Response(body, media_type="application/json", headers=headers)


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
