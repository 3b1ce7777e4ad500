"""Talking to one registry: authentication, retries, redirects and resumable blobs."""

from __future__ import annotations

import hashlib
import http.client
import io
import ipaddress
import json
import re
import ssl
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import httpx

from squash.distribution.bodies import BodyPool
from squash.distribution.credentials import lookup
from squash.distribution.heads import HeadPool
from squash.distribution.options import RegistryOptions
from squash.distribution.reach import Reach
from squash.errors import RegistryError, TransientError
from squash.oci import DOCKER_LIST, DOCKER_MANIFEST, DOCKER_SCHEMA1_SIGNED, OCI_INDEX, OCI_MANIFEST
from squash.streams import Stream, read_up_to
from squash.verify import verify_bytes

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

ACCEPT = ", ".join(
    (
        OCI_INDEX,
        OCI_MANIFEST,
        DOCKER_LIST,
        DOCKER_MANIFEST,
        # asked for so that an old image gets a clear "schema 1" error, not a 404
        DOCKER_SCHEMA1_SIGNED,
    )
)
MAX_MANIFEST = 4 << 20
_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 1 << 20


def is_loopback(host: str) -> bool:
    name = urlsplit(f"//{host}").hostname or host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


_PARAM = re.compile(r'([\w-]+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Parse `Bearer realm="...",service="...",scope="..."` (RFC 7235 auth-params)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        key.lower(): re.sub(r"\\(.)", r"\1", quoted) if quoted else bare
        for key, quoted, bare in _PARAM.findall(rest)
    }
    return scheme.lower(), params


def _headed(headers: Mapping[str, str], reference: str) -> tuple[str, str]:
    """(digest, media type) a manifest HEAD's lower-cased headers give; no digest when
    there is none, or when asked by digest and another came back (only the body can
    prove it then)."""
    digest = headers.get("docker-content-digest", "")
    if ":" in reference and digest != reference:
        digest = ""
    return digest, headers.get("content-type", "").split(";")[0].strip()


def read_bounded(response: httpx.Response, limit: int, what: str) -> bytes:
    """A small document's whole body (a manifest, a tags list): more than `limit` bytes
    is the registry's error, not a reason to hold them all."""
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            raise RegistryError(f"{what} larger than {limit} bytes")
    return body


def _error_text(response: httpx.Response) -> str:
    """The registry's own words from an error body, if it sent any."""
    try:
        body = response.read()[:65536]
    except httpx.HTTPError:
        return ""
    return _said(body)


def _read_said(body: Stream) -> str:
    """The registry's own words from an error body read below httpx."""
    try:
        return _said(read_up_to(body, 65536))
    except (OSError, http.client.HTTPException):
        return ""


def _said(body: bytes) -> str:
    """The registry's own words in an error body: its errors' codes and messages, or
    the body's first line."""
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
    except (ValueError, AttributeError):
        line = body.decode("utf-8", "replace").strip().splitlines()
        return line[0][:200] if line else ""


class Registry:
    """A session with one registry (connections pooled, tokens reused until expiry)."""

    def __init__(self, name: str, api_host: str, options: RegistryOptions | None = None) -> None:
        self.name = name
        self.options = options or RegistryOptions()
        # Loopback registries speak plain HTTP, as Docker assumes, unless TLS was asked for.
        wants_tls = self.options.ca_file is not None or self.options.tls_verify is False
        plain = self.options.plain_http or (is_loopback(api_host) and not wants_tls)
        self.base = f"{'http' if plain else 'https'}://{api_host}"
        timeout = httpx.Timeout(self.options.timeout, connect=15.0)
        # one CA bundle loaded (20 ms) for both clients; none at all without TLS
        if self.options.ca_file and not plain:
            tls = ssl.create_default_context(cafile=self.options.ca_file)
        else:
            verify = not plain and self.options.tls_verify is not False
            tls = httpx.create_ssl_context(verify=verify)
        self._http = httpx.Client(
            verify=tls,
            timeout=timeout,
            follow_redirects=False,
            # blobs must arrive exactly as stored, or their digests cannot match
            headers={"Accept-Encoding": "identity", "User-Agent": "squashd"},
        )
        # resolve's HEAD without httpx's layers on top (see `_quick_head`)
        self._heads = HeadPool(self.base, tls, self.options.timeout)
        # blob bodies below httpx's pieces (see `body`), until the registry redirects one
        self._bodies = BodyPool(self.base, tls, self.options.timeout)
        self._direct_bodies = True
        self._credentials = self.options.credentials
        if self._credentials is None and self.options.ambient and not self.options.bearer:
            self._credentials = lookup(name)
        self._reach = Reach(api_host)
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (Authorization, expiry)
        self._basic = False  # the registry asked for basic auth
        self.token_requests = 0

    def close(self) -> None:
        self._http.close()
        self._heads.close()
        self._bodies.close()

    # -- requests

    def get(
        self,
        repository: str,
        path: str,
        headers: dict[str, str] | None = None,
        what: str = "",
        method: str = "GET",
    ) -> httpx.Response:
        """GET (or HEAD) /v2/<repository>/<path>, authenticated, retried; the response is
        streamed."""
        return self.request(method, repository, path, headers, what)

    def request(
        self,
        method: str,
        repository: str,
        path: str,
        headers: dict[str, str] | None = None,
        what: str = "",
        *,
        scope: str | None = None,
        content: bytes | list[bytes] | None = None,
        retry: bool = True,
        redirected: str | None = None,
    ) -> httpx.Response:
        """A request to /v2/<repository>/<path> (or to `path` itself if it is a URL, an
        upload's location), authenticated for `scope` (default: pull). Transient failures
        are retried if `retry`, else raised as TransientError; the response is streamed.
        `content` as pieces is sent as they are (the caller sets Content-Length).
        `redirected`: the registry already answered it with a redirect there (a body asked
        below httpx), followed first."""
        scope = scope or self._pull(repository)
        url = urljoin(f"{self.base}/v2/{repository}/", path)
        what = what or f"{self.name}/{repository}"
        authenticated = False
        failures = 0  # transient ones; pause() gives up after the last allowed attempt
        while True:
            first, redirected = redirected, None
            try:
                response = self._send(
                    method, url, {**(headers or {}), **self._authorization(scope)}, content, first
                )
            except httpx.TransportError as exc:
                self._again(retry, failures, None, f"{what}: {self._describe(exc)}")
                failures += 1
                continue
            status = response.status_code
            if status == 401 and not authenticated and not self.options.bearer:
                # once: a second 401 is a refusal
                challenge = response.headers.get("www-authenticate", "")
                _error_text(response)  # read (a few bytes), so the connection is kept
                response.close()
                self._authenticate(challenge, scope, what)
                authenticated = True
                continue
            if status == 429 or status >= 500:
                retry_after = response.headers.get("retry-after")
                response.close()
                self._again(retry, failures, retry_after, f"{what}: registry answered {status}")
                failures += 1
                continue
            if status >= 400:
                detail = _error_text(response)
                response.close()
                raise RegistryError(self._refusal(status, what, detail), status)
            return response

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        content: bytes | list[bytes] | None = None,
        redirected: str | None = None,
    ) -> httpx.Response:
        """Send, following redirects (from `redirected` on, if the answer was one
        already); Authorization never goes to another host.

        Pieces go as an iterator of their own per request: once sent, an exhausted
        iterator lets go of them. httpx keeps the request in a reference cycle with its
        response (the response's stream points back at it), freed only when the cyclic
        collector runs; with the list itself, every chunk a push sent stayed in memory
        until then (pushes peaked 120 MiB above a file's)."""
        for _ in range(8):
            if redirected is None:
                body = iter(content) if isinstance(content, list) else content
                request = self._http.build_request(method, url, headers=headers, content=body)
                response = self._http.send(request, stream=True)
                if response.status_code not in _REDIRECTS or "location" not in response.headers:
                    return response
                redirected = response.headers["location"]
                response.close()
            target, redirected = urljoin(url, redirected), None
            if urlsplit(target).netloc != urlsplit(url).netloc:
                self._reach.check(target, f"{self.name}: a redirect")
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url = target
        raise RegistryError(f"{self.name}: too many redirects")

    def _again(self, retry: bool, attempt: int, retry_after: str | None, message: str) -> None:
        """After a transient failure: pause before the next attempt, or, if the caller
        retries by itself (`retry` false), raise it as a TransientError at once."""
        if not retry:
            raise TransientError(message)
        self.pause(attempt, retry_after, message)

    def pause(self, attempt: int, retry_after: str | None, message: str) -> None:
        if attempt + 1 >= self.options.attempts:
            raise TransientError(f"{message} (gave up after {self.options.attempts} attempts)")
        delay = self.options.backoff * 2**attempt
        if retry_after and retry_after.isdigit():
            delay = max(delay, min(float(retry_after), 60.0))
        time.sleep(delay)

    @staticmethod
    def _describe(exc: Exception) -> str:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def _refusal(self, status: int, what: str, detail: str) -> str:
        said = f" ({detail})" if detail else ""
        if status == 401:
            given = self._credentials or self.options.bearer
            who = "with the given credentials" if given else "without credentials"
            return f"{what}: authentication failed {who} (401){said}"
        if status == 403:
            return f"{what}: access denied (403){said}"
        if status == 404:
            return f"{what}: not found (404){said}"
        return f"{what}: registry answered {status}{said}"

    # -- authentication

    def _authorization(self, scope: str) -> dict[str, str]:
        if self.options.bearer:
            return {"Authorization": f"Bearer {self.options.bearer}"}
        token = self._tokens.get(scope)
        if token and token[1] > time.monotonic():
            return {"Authorization": token[0]}
        if self._basic and self._credentials:
            return {"Authorization": self._credentials.basic()}
        return {}

    def _authenticate(self, challenge: str, scope: str, what: str) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self._credentials:
                raise RegistryError(f"{what}: authentication required (401); pass --creds", 401)
            self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError(f"{what}: unsupported authentication challenge {challenge!r}")
        realm = params["realm"]
        self._reach.check(realm, f"{what}: the token realm")
        if self._credentials and not self._reach.may_take_credentials(realm):
            raise RegistryError(
                f"{what}: the registry names the token realm {realm}, which is neither HTTPS "
                "nor on the registry's own host; its credentials are not sent there"
            )
        query = {"scope": params.get("scope") or scope}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {"Authorization": self._credentials.basic()} if self._credentials else {}
        self.token_requests += 1
        try:
            response = self._http.get(realm, params=query, headers=headers)
        except httpx.TransportError as exc:
            raise TransientError(f"{what}: token server: {self._describe(exc)}") from None
        if response.status_code in (401, 403):
            who = "wrong username or password" if self._credentials else "credentials needed"
            raise RegistryError(
                f"{what}: authentication failed ({who}, {response.status_code})",
                response.status_code,
            )
        if response.status_code != 200:
            raise RegistryError(f"{what}: token server answered {response.status_code}")
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except ValueError:
            token = None
        if not token:
            raise RegistryError(f"{what}: token server sent no token")
        lifetime = body.get("expires_in") if isinstance(body.get("expires_in"), int) else 60
        expiry = time.monotonic() + max(lifetime - 10, 1)  # renew a little early
        self._tokens[query["scope"]] = self._tokens[scope] = (f"Bearer {token}", expiry)

    # -- what a registry in front of this one relays (web/v2.py)

    def ping(self, authorization: str | None = None) -> tuple[int, str]:
        """(status, WWW-Authenticate) of `GET /v2/` sent with `authorization` as it is:
        how the registry asks for credentials, or whether it takes these."""
        headers = {"Authorization": authorization} if authorization else {}
        try:
            response = self._http.get(f"{self.base}/v2/", headers=headers)
        except httpx.TransportError as exc:
            raise TransientError(f"{self.name}: {self._describe(exc)}") from None
        return response.status_code, response.headers.get("www-authenticate", "")

    def relay_token(
        self,
        realm: str,
        query: list[tuple[str, str]],
        authorization: str | None,
        form: bytes | None = None,
    ) -> tuple[int, bytes, str]:
        """(status, body, content type) of the token realm's answer to a client's token
        request, sent on with the client's own credentials: a GET, or with `form` the
        OAuth2 POST (a password or refresh-token grant)."""
        self._reach.check(realm, f"{self.name}: the token realm")
        if authorization and not self._reach.may_take_credentials(realm):
            raise RegistryError(
                f"{self.name}: the token realm {realm} is neither HTTPS nor on the registry's "
                "own host; credentials are not sent there"
            )
        headers = {"Authorization": authorization} if authorization else {}
        method = "GET" if form is None else "POST"
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            response = self._http.request(
                method, realm, params=tuple(query), headers=headers, content=form
            )
        except httpx.TransportError as exc:
            raise TransientError(f"{self.name}: token server: {self._describe(exc)}") from None
        kind = response.headers.get("content-type", "application/json")
        return response.status_code, response.content[: 1 << 20], kind

    # -- the API

    def manifest(self, repository: str, reference: str, what: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest or index; a digest reference is checked."""
        for attempt in range(self.options.attempts):
            response = self.get(repository, f"manifests/{reference}", {"Accept": ACCEPT}, what)
            try:
                body = read_bounded(response, MAX_MANIFEST, f"{what}: manifest")
                break
            except httpx.TransportError as exc:
                self.pause(attempt, None, f"{what}: {self._describe(exc)}")
            finally:
                response.close()
        if ":" in reference:  # asked for by digest: it must be that one
            digest = reference
            verify_bytes(body, digest, None, f"{what}: manifest")
        else:
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        return body, media_type, digest

    def resolve(self, repository: str, reference: str, what: str) -> tuple[str, str]:
        """(digest, media type) of a tag or digest, from a manifest HEAD (not a pull).

        Registries that send no Docker-Content-Digest get a GET, hashed here."""
        quick = self._quick_head(repository, reference)
        if quick is not None:
            return quick
        response = self.get(repository, f"manifests/{reference}", {"Accept": ACCEPT}, what, "HEAD")
        response.read()  # nothing to read, but a response read to its end keeps its connection
        response.close()
        digest, media_type = _headed(response.headers, reference)
        if not digest:
            _, media_type, digest = self.manifest(repository, reference, what)
        return digest, media_type

    def _quick_head(self, repository: str, reference: str) -> tuple[str, str] | None:
        """The manifest HEAD on a kept connection with the credentials already at hand
        (squash/distribution/heads.py): the request every access check makes. Anything but a
        plain 200 with its digest (a 401 to authenticate, a redirect, an error, a lost
        connection) is None: the full path asks again and reports it."""
        headers = [("Accept", ACCEPT), ("User-Agent", "squashd")]
        headers += self._authorization(self._pull(repository)).items()
        answer = self._heads.head(f"/v2/{repository}/manifests/{reference}", headers)
        if answer is None or answer[0] != 200:
            return None
        digest, media_type = _headed(answer[1], reference)
        return (digest, media_type) if digest else None

    @staticmethod
    def _pull(repository: str) -> str:
        return f"repository:{repository}:pull"

    def blob(
        self, repository: str, digest: str, size: int | None, what: str, limit: int | None = None
    ) -> BlobStream:
        """A blob's bytes; with `limit`, only its first bytes (a Range request)."""
        return BlobStream(self, repository, digest, size, what, limit)

    def body(
        self, repository: str, path: str, headers: dict[str, str], what: str
    ) -> tuple[int, Stream]:
        """(status, body) of GET /v2/<repository>/<path>, a blob: read straight from its
        socket when the registry answers it plainly (squash/distribution/bodies.py), else
        through `get` (authentication, redirects, retries, errors). A registry that
        redirects blobs elsewhere is asked through `get` from then on."""
        redirected = None
        if self._direct_bodies:
            fields = {
                "User-Agent": "squashd",
                **headers,
                **self._authorization(self._pull(repository)),
            }
            answer = self._bodies.get(f"/v2/{repository}/{path}", fields)
            if answer is not None:
                status, body = answer
                if status in (200, 206):
                    return status, body
                refused = 400 <= status < 500 and status not in (401, 429)
                with body:
                    if refused:  # as `request` would say it, without asking again
                        raise RegistryError(self._refusal(status, what, _read_said(body)), status)
                    if status in _REDIRECTS:  # followed from here, and asked there from now on
                        self._direct_bodies = False
                        redirected = body.header("location")
                # else authenticate, or retry, as `request` does
        response = self.request("GET", repository, path, headers, what, redirected=redirected)
        return response.status_code, _Pieces(response)


class _Pieces(io.RawIOBase):
    """An httpx response's body as a stream, in the pieces httpcore reads (as bytes
    arrive: a cut loses nothing)."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = response.iter_raw()
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if not self._pending:
            self._pending = memoryview(next(self._chunks, b""))
        with memoryview(buffer) as view:
            n = min(len(view), len(self._pending))
            view[:n] = self._pending[:n]
        self._pending = self._pending[n:]  # a memoryview: no copy
        return n

    def close(self) -> None:
        self._response.close()
        super().close()


class BlobStream(io.RawIOBase):
    """A blob's bytes; a connection lost mid-way resumes with a Range request."""

    def __init__(
        self,
        registry: Registry,
        repository: str,
        digest: str,
        size: int | None,
        what: str,
        limit: int | None = None,
    ) -> None:
        self._registry, self._repository, self._digest = registry, repository, digest
        self._size, self._what, self._limit = size, what, limit
        self._position = 0
        self._body: Stream | None = None
        self._failures = 0

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        end = "" if self._limit is None else self._limit - 1
        headers = {"Range": f"bytes={self._position}-{end}"} if self._position or end else {}
        status, self._body = self._registry.body(
            self._repository, f"blobs/{self._digest}", headers, self._what
        )
        if self._position and status != 206:
            self._skip(self._body, self._position)  # the server ignored Range

    def _skip(self, body: Stream, count: int) -> None:
        """Read past what we have."""
        scratch = memoryview(bytearray(min(count, _CHUNK)))
        while count > 0:
            n = body.readinto(scratch[:count])
            if not n:
                raise TransientError(f"{self._what}: blob ended before the resume point")
            count -= n

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer)
        if self._limit is not None:
            view = view[: max(self._limit - self._position, 0)]
            if not len(view):
                return 0
        while True:
            if self._body is None:
                self._open()
                assert self._body is not None
            try:
                n = self._body.readinto(view) or 0
            except (httpx.TransportError, OSError, http.client.HTTPException) as exc:
                self._lost(Registry._describe(exc))
                continue
            if n:
                self._position += n
                self._failures = 0
                return n
            if self._position < self._expected():
                self._lost("connection closed early")
                continue
            return 0

    def _expected(self) -> int:
        """How many bytes this stream should deliver (0 when unknown)."""
        ends = [n for n in (self._size, self._limit) if n is not None]
        return min(ends) if ends else 0

    def _lost(self, why: str) -> None:
        """Drop the connection and resume after a pause; give up after repeated failures."""
        self._failures += 1
        self.close_response()
        self._registry.pause(self._failures - 1, None, f"{self._what}: {why}")

    def close_response(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self.close_response()
        super().close()
