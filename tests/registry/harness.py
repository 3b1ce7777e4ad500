"""A token server and a fault proxy for the `docker://` source tests, and what the tests
do with the registries of the testbed (`testbed.registry.Registry`, `push`).

The servers here run in threads of the test process, on 127.0.0.1 and a free port; a
fixture (fixtures.py) starts them and stops them when it ends.

- `TokenServer`: the Docker token protocol (`GET realm?service=..&scope=..` with HTTP
  Basic credentials, and the OAuth2 `POST` form), signing RS256 JWTs whose `x5c` header
  carries the certificate the registry trusts (`rootcertbundle`). It records every
  token request, so tests can check that a client reuses its token.
- `FaultProxy`: an HTTP/1.1 proxy in front of a registry that can cut a blob response
  after N bytes, flip a byte of a blob, answer a status (429, 503, ...) or a canned
  response for a path, redirect blob GETs to another listener (an "object store" that,
  as S3 does, rejects requests that carry an Authorization header), and records every
  request it saw, with its headers (`Range` ...).
- `upload_verbatim`: an OCI layout's image uploaded byte for byte (no skopeo).

Missing tools fail loudly (`require_tool`), nothing here skips.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import http.client
import io
import json
import os
import random
import re
import secrets
import shlex
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from testbed.process import HOST
from testbed.registry import Registry, make_keypair, push, reference
from testbed.tools import run
from tests.integration.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    SQUASHD,
    LayerBuilder,
    SquashedArchive,
    _json_bytes,
    image_manifest,
    require_tool,
    write_blob,
    write_index,
)

# ---------------------------------------------------------------------------------------
# Small network helpers
# ---------------------------------------------------------------------------------------


class QuietHTTPServer(ThreadingHTTPServer):
    """A threaded server that does not print a traceback when a client drops its
    connection (clients under test do that on purpose: cut, retried, resumed)."""

    daemon_threads = True
    piece_size: int | None = None  # a FaultProxy's: see `_write`

    def handle_error(self, request, client_address) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="..",service="..",scope=".."` -> ("Bearer", {realm, service, scope})."""
    scheme, _, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme, params


# ---------------------------------------------------------------------------------------
# Uploading images byte for byte
# ---------------------------------------------------------------------------------------


def upload_verbatim(registry: Registry, name: str, tag: str, layout: Path, digest: str) -> str:
    """Upload an image of an OCI layout byte for byte with the plain distribution API
    (monolithic blob uploads, then the manifest), to an unauthenticated registry.

    skopeo gzips uncompressed layers on the way to a registry; this does not, so an image
    with an uncompressed `tar` layer reaches the registry as it is. Returns the digest.
    """
    from tests.integration.helpers import blob_path

    raw = blob_path(layout, digest).read_bytes()
    manifest = json.loads(raw)
    for desc in [manifest["config"], *manifest["layers"]]:
        if registry.get(f"/v2/{name}/blobs/{desc['digest']}", method="HEAD")[0] == 200:
            continue  # already there (as a client would, skip it)
        data = blob_path(layout, desc["digest"]).read_bytes()
        status, headers, body = registry.get(f"/v2/{name}/blobs/uploads/", method="POST")
        assert status == 202, (status, body)
        location = headers["location"]
        if location.startswith("/"):
            location = registry.url + location
        sep = "&" if "?" in location else "?"
        req = urllib.request.Request(
            f"{location}{sep}digest={desc['digest']}",
            data=data,
            method="PUT",
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 201, resp.status
    req = urllib.request.Request(
        f"{registry.url}/v2/{name}/manifests/{tag}",
        data=raw,
        method="PUT",
        headers={"Content-Type": manifest.get("mediaType", OCI_MANIFEST)},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 201, resp.status
        return resp.headers["Docker-Content-Digest"]


# ---------------------------------------------------------------------------------------
# Source images
# ---------------------------------------------------------------------------------------


def random_bytes(size: int, seed: int) -> bytes:
    """Incompressible, reproducible bytes (gzip does not shrink them)."""
    return random.Random(seed).randbytes(size)


@dataclasses.dataclass
class PlatformImage:
    platform: str  # os/arch[/variant]
    manifest_digest: str
    config: dict


@dataclasses.dataclass
class IndexLayout:
    layout: Path
    tag: str
    index_digest: str
    images: dict[str, PlatformImage]  # by platform text
    attestation_digest: str | None

    @property
    def ref(self) -> str:
        return f"{self.layout}:{self.tag}"


def platform_layers(platform: str) -> list[bytes]:
    """Two layers whose squashed result says which platform it came from."""
    arch = platform.split("/")[1]
    lower = (
        LayerBuilder()
        .dir("etc")
        .file("etc/platform", f"{platform}\n".encode())
        .file("etc/stale", b"removed by the upper layer\n")
        .dir("opt")
        .file(f"opt/only-{arch}", random_bytes(4096, seed=len(platform)))
    )
    upper = LayerBuilder().whiteout("etc/stale").file("etc/upper", f"upper {arch}\n".encode())
    return [lower.tar(), upper.tar()]


ATTESTATION_LAYER = "application/vnd.in-toto+json"


def write_platform_index(
    layout: Path,
    platforms: Sequence[str] = ("linux/arm64", "linux/amd64", "linux/arm/v7"),
    *,
    tag: str = "multi",
    attestation: bool = True,
) -> IndexLayout:
    """An OCI layout whose tag names an image index of one image per platform.

    With `attestation`, the index starts with a BuildKit-style attestation manifest
    (platform unknown/unknown) that must never be chosen. linux/amd64 is deliberately
    not the first entry, so "take the first" is caught.
    """
    layout.mkdir(parents=True, exist_ok=True)
    entries, images = [], {}
    for text in platforms:
        parts = text.split("/")
        variant = parts[2] if len(parts) > 2 else None
        _manifest, cfg, desc = image_manifest(
            layout,
            platform_layers(text),
            compression="gzip",
            config={"Env": [f"PLATFORM={text}"], "Cmd": ["/bin/true"]},
            architecture=parts[1],
            os_name=parts[0],
            variant=variant,
        )
        entries.append(desc)
        images[text] = PlatformImage(text, desc["digest"], cfg)
    attestation_digest = None
    if attestation:
        statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1"}).encode()
        layer = {"mediaType": ATTESTATION_LAYER, **write_blob(layout, statement)}
        cfg = {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **write_blob(layout, b"{}"),
        }
        att = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cfg,
            "layers": [layer],
        }
        att_desc = {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            **write_blob(layout, _json_bytes(att)),
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {
                "vnd.docker.reference.digest": entries[0]["digest"],
                "vnd.docker.reference.type": "attestation-manifest",
            },
        }
        attestation_digest = att_desc["digest"]
        entries.insert(0, att_desc)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    index_desc = {"mediaType": OCI_INDEX, **write_blob(layout, _json_bytes(index))}
    write_index(layout, {tag: index_desc})
    return IndexLayout(layout, tag, index_desc["digest"], images, attestation_digest)


# ---------------------------------------------------------------------------------------
# Docker token server
# ---------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclasses.dataclass
class TokenRequest:
    method: str  # GET (Docker token protocol) or POST (OAuth2 password grant)
    user: str | None  # the user name presented (None: anonymous)
    authenticated: bool  # right password
    service: str
    scopes: tuple[str, ...]
    status: int
    granted: tuple[dict, ...] = ()

    def repositories(self) -> set[str]:
        return {s.split(":")[1] for s in self.scopes if s.startswith("repository:")}


class TokenServer:
    """The Docker token protocol in a thread: GET /token?service=S&scope=repository:N:pull.

    Users (`users`, name -> password) get every action they ask for, or, if `grants`
    names them, only on repositories under the prefixes it lists; anonymous callers get
    `pull` on repositories under `public_prefixes` and a token with no access elsewhere; a
    wrong password gets 401. Tokens are RS256 JWTs with the signing certificate in `x5c`.
    """

    def __init__(
        self,
        root: Path,
        *,
        users: dict[str, str] | None = None,
        grants: dict[str, Sequence[str]] | None = None,
        public_prefixes: Sequence[str] = ("public/",),
        issuer: str = "squashd-test-issuer",
        service: str = "squashd-test-registry",
        expires_in: int = 300,
    ):
        self.root = root
        self.users = dict(users or {"alice": "secret"})
        self.grants = {user: tuple(prefixes) for user, prefixes in (grants or {}).items()}
        self.public_prefixes = tuple(public_prefixes)
        self.issuer = issuer
        self.service = service
        self.expires_in = expires_in
        self.signer = make_keypair(root, "token-signer", common_name="squashd test token signer")
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- protocol -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def realm(self) -> str:
        return f"http://{HOST}:{self.port}/token"

    def registry_auth(self) -> dict:
        """The registry config's `auth:` mapping that trusts this server."""
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.signer.cert_path),
            }
        }

    def mint(self, subject: str, access: Sequence[dict], *, ttl: int | None = None) -> str:
        """A signed token for `access` ([{type, name, actions}]), as the registry wants it."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(self.signer.cert_der).decode()],
        }
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + (self.expires_in if ttl is None else ttl),
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": list(access),
        }
        signing_input = f"{_b64url(_json_bytes(header))}.{_b64url(_json_bytes(claims))}"
        signature = self.signer.key.sign(
            signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{_b64url(signature)}"

    def _grant(self, scope: str, user: str | None) -> dict | None:
        parts = scope.split(":")
        if len(parts) < 3:
            return None
        type_, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
        if user is not None:
            prefixes = self.grants.get(user)
            mine = prefixes is None or (type_ == "repository" and name.startswith(prefixes))
            allowed = {"pull", "push", "delete", "*"} if mine else set()
        elif type_ == "repository" and name.startswith(self.public_prefixes):
            allowed = {"pull"}
        else:
            allowed = set()
        return {"type": type_, "name": name, "actions": [a for a in actions if a in allowed]}

    def _issue(self, handler: BaseHTTPRequestHandler, method: str, params: dict) -> None:
        service = params.get("service", [""])[0]
        scopes = tuple(s for value in params.get("scope", []) for s in value.split(" ") if s)
        user, password = None, None
        auth = handler.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", None
        elif method == "POST" and params.get("grant_type", [""])[0] == "password":
            user = params.get("username", [""])[0]
            password = params.get("password", [""])[0]
        authenticated = user is not None and self.users.get(user) == password
        subject = user if authenticated else None  # whose access the token grants
        record = TokenRequest(method, user, authenticated, service, scopes, 200)
        headers: dict[str, str] = {}
        body: dict[str, object]
        if service != self.service:
            record.status = 400
            body = {"errors": [{"code": "DENIED", "message": f"unknown service {service!r}"}]}
        elif user is not None and not authenticated:
            record.status = 401
            body = {
                "errors": [{"code": "UNAUTHORIZED", "message": "incorrect username or password"}]
            }
            headers = {"WWW-Authenticate": f'Basic realm="{self.realm}"'}
        else:
            access = [g for g in (self._grant(s, subject) for s in scopes) if g]
            record.granted = tuple(access)
            token = self.mint(subject or "", access)
            issued = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            body = {
                "token": token,
                "access_token": token,
                "expires_in": self.expires_in,
                "issued_at": issued,
            }
        # Recorded before answering, so a client that got its answer sees the record.
        with self._lock:
            self._requests.append(record)
        self._answer(handler, record.status, body, headers)

    @staticmethod
    def _answer(handler, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(data)

    # -- records --------------------------------------------------------------------------

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()

    def requests_for(self, repository: str) -> list[TokenRequest]:
        return [r for r in self.requests if repository in r.repositories()]

    # -- life -----------------------------------------------------------------------------

    def start(self) -> TokenServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                url = urlsplit(self.path)
                if url.path != "/token":
                    owner._answer(self, 404, {"errors": [{"code": "NOT_FOUND"}]})
                    return
                owner._issue(self, "GET", parse_qs(url.query))

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
                if urlsplit(self.path).path != "/token":
                    owner._answer(self, 404, {"errors": [{"code": "NOT_FOUND"}]})
                    return
                owner._issue(self, "POST", form)

            def log_message(self, *args):
                pass

        self._server = QuietHTTPServer((HOST, 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="token-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclasses.dataclass
class TokenRegistry:
    """A registry with `auth: token:` and the token server it trusts."""

    registry: Registry
    tokens: TokenServer
    user: str
    password: str

    @property
    def host(self) -> str:
        return self.registry.host

    @property
    def creds(self) -> str:
        return f"{self.user}:{self.password}"

    def ref(self, name: str, ref: str = "latest", *, transport: bool = True) -> str:
        return self.registry.ref(name, ref, transport=transport)

    def push(self, source, name: str, tag: str, **kw) -> str:
        return push(source, self.ref(name, tag), creds=self.creds, **kw)

    def auth_file(self, path: Path, *, password: str | None = None) -> Path:
        """A docker config.json with `auths` for this registry (REGISTRY_AUTH_FILE)."""
        return write_auth_file(path, self.host, self.user, password or self.password)


def write_auth_file(path: Path, host: str, user: str, password: str) -> Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}, indent=2))
    return path


# ---------------------------------------------------------------------------------------
# The fault proxy
# ---------------------------------------------------------------------------------------

BLOB_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[a-z0-9]+:[0-9a-f]+)$")
MANIFEST_PATH = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


@dataclasses.dataclass
class Seen:
    """One request the proxy received, and what it did with it."""

    method: str
    path: str  # with the query
    headers: dict[str, str]  # lower-case names
    status: int | None = None  # status sent back (None: connection cut before it was sent)
    action: str = "forwarded"  # forwarded | cut@N | flipped@N | status | respond | redirect
    sent: int = 0  # body bytes written to the client (for blobs: what the client cost)

    @property
    def range(self) -> str | None:
        return self.headers.get("range")

    @property
    def is_head(self) -> bool:
        """A request for a blob's first bytes only (`Range: bytes=0-N`)."""
        return bool(self.range and re.fullmatch(r"bytes=0-\d+", self.range.strip()))

    @property
    def is_resume(self) -> bool:
        """A request that continues a download (`Range: bytes=N-` with N > 0)."""
        return bool(self.range) and not self.is_head

    @property
    def bare_path(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def digest(self) -> str | None:
        m = BLOB_PATH.match(self.bare_path)
        return m["digest"] if m else None


@dataclasses.dataclass
class _Rule:
    kind: str  # cut | flip | hold | status | respond | redirect
    pattern: re.Pattern
    methods: tuple[str, ...]
    times: int | None  # None: every time
    status: int = 0
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    offset: int | None = None  # cut after / flip at (None: the middle of the blob)
    target: FaultProxy | None = None
    fired: int = 0
    gate: threading.Event = dataclasses.field(default_factory=threading.Event)
    reached: threading.Event = dataclasses.field(default_factory=threading.Event)

    def release(self) -> None:
        """Let a held download go on (`FaultProxy.hold`)."""
        self.gate.set()


def _path_pattern(what: str) -> re.Pattern:
    """A digest (`sha256:...`) means that blob's path; anything else is a regex."""
    if re.fullmatch(r"[a-z0-9]+:[0-9a-f]{32,}", what):
        return re.compile(rf"/blobs/{re.escape(what)}$")
    return re.compile(what)


class FaultProxy:
    """An HTTP/1.1 proxy in front of `upstream` (host, port) that misbehaves on request.

    Rules match the request path (without the query) and fire `times` times (None:
    always); the first rule that matches and has shots left acts. Every request is
    recorded (`seen`). With `require_basic` = (user, password) it plays a registry that
    asks for plain HTTP Basic auth (401 + `WWW-Authenticate: Basic`), and strips the
    header before forwarding. With `reject_authorization`, requests carrying an Authorization
    header get 400, as an object store answers a presigned URL sent with credentials;
    `inject_headers` are added to what goes upstream (the store's own access). With
    `piece_size`, every response body goes out in writes of that many bytes, each sent at
    once (TCP_NODELAY, a pause between pieces), so clients see short reads every time, as
    they do from a registry far away.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        name: str = "proxy",
        reject_authorization: bool = False,
        inject_headers: dict[str, str] | None = None,
        upstream_tls: bool = False,
        require_basic: tuple[str, str] | None = None,
        piece_size: int | None = None,
    ):
        self.upstream = upstream
        self.piece_size = piece_size
        self.require_basic = require_basic
        self.name = name
        self.reject_authorization = reject_authorization
        self.inject_headers = dict(inject_headers or {})
        self.upstream_tls = upstream_tls
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._seen: list[Seen] = []
        self._server: ThreadingHTTPServer | None = None
        self._sockets: set[socket.socket] = set()

    # -- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def ref(self, name: str, ref: str = "latest", *, transport: bool = True) -> str:
        return reference(self.host, name, ref, transport=transport)

    # -- telling it what to do ------------------------------------------------------------

    def _add(self, rule: _Rule) -> _Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def cut(self, blob: str, after: int | None = None, *, times: int | None = 1) -> _Rule:
        """Close the connection of a GET of `blob` (digest or path regex) after `after`
        body bytes (default: half of it), `times` times, then behave."""
        return self._add(_Rule("cut", _path_pattern(blob), ("GET",), times, offset=after))

    def flip(self, blob: str, offset: int | None = None, *, times: int | None = None) -> _Rule:
        """Flip every bit of the byte at `offset` of the blob (default: the middle) in
        GET responses of `blob`; every time unless `times`."""
        return self._add(_Rule("flip", _path_pattern(blob), ("GET",), times, offset=offset))

    def hold(self, blob: str, after: int = 0, *, times: int | None = 1) -> _Rule:
        """Pause GETs of `blob` after `after` body bytes until `rule.release()` (or two
        minutes); `rule.reached` is set once a download is paused there. For tests that
        need a build to be in the middle of a download (kill it, look at its progress)."""
        return self._add(_Rule("hold", _path_pattern(blob), ("GET",), times, offset=after))

    def fail(
        self,
        path: str,
        status: int = 503,
        *,
        times: int | None = 1,
        retry_after: str | None = "0",
        methods: Sequence[str] = ("GET", "HEAD"),
    ) -> _Rule:
        """Answer `status` (with a registry-style JSON error) for `path`, then behave."""
        code = {
            401: "UNAUTHORIZED",
            403: "DENIED",
            404: "BLOB_UNKNOWN",
            429: "TOOMANYREQUESTS",
            503: "UNAVAILABLE",
        }.get(status, "UNKNOWN")
        body = json.dumps({"errors": [{"code": code, "message": f"injected {status}"}]})
        headers = {"Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        return self._add(
            _Rule(
                "status",
                _path_pattern(path),
                tuple(methods),
                times,
                status=status,
                body=body.encode(),
                headers=headers,
            )
        )

    def respond(
        self,
        path: str,
        status: int,
        body: bytes,
        headers: dict[str, str],
        *,
        times: int | None = None,
        methods: Sequence[str] = ("GET", "HEAD"),
    ) -> _Rule:
        """Answer `path` with a canned response (e.g. a schema 1 manifest)."""
        return self._add(
            _Rule(
                "respond",
                _path_pattern(path),
                tuple(methods),
                times,
                status=status,
                body=body,
                headers=dict(headers),
            )
        )

    def redirect_blobs(self, target: FaultProxy, *, times: int | None = None) -> _Rule:
        """Answer blob GETs with 307 to the same path (plus a signature query) on `target`."""
        return self._add(
            _Rule("redirect", re.compile(r"^/v2/.+/blobs/[^/]+$"), ("GET",), times, target=target)
        )

    def reset(self) -> None:
        with self._lock:
            for rule in self._rules:
                rule.release()  # nothing stays held
            self._rules.clear()
            self._seen.clear()

    # -- what it saw ----------------------------------------------------------------------

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def requests(self, path: str | None = None, method: str | None = None) -> list[Seen]:
        pattern = _path_pattern(path) if path else None
        return [
            s
            for s in self.seen
            if (method is None or s.method == method)
            and (pattern is None or pattern.search(s.bare_path))
        ]

    def blob_gets(self, digest: str | None = None) -> list[Seen]:
        return [
            s
            for s in self.seen
            if s.method == "GET" and s.digest and (digest is None or s.digest == digest)
        ]

    def range_requests(self, digest: str | None = None) -> list[Seen]:
        """Requests that resumed a download (a peek at a blob's start is not one)."""
        return [s for s in self.blob_gets(digest) if s.is_resume]

    def describe(self) -> str:
        """Every request seen, one line each, for assertion messages."""
        lines = [
            f"{s.method} {s.path} -> {s.status} [{s.action}] {s.sent} bytes"
            + (f" Range: {s.range}" if s.range else "")
            for s in self.seen
        ]
        return f"{self.name} saw {len(lines)} request(s):\n  " + "\n  ".join(lines)

    # -- life -----------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                if owner.piece_size:
                    self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with owner._lock:
                    owner._sockets.add(self.connection)

            def finish(self):
                with contextlib.suppress(OSError):
                    super().finish()
                with owner._lock:
                    owner._sockets.discard(self.connection)

            def handle_one(self):
                owner._handle(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_one

            def log_message(self, *args):
                pass

        self._server = QuietHTTPServer((HOST, 0), Handler)
        self._server.piece_size = self.piece_size  # read by _write
        threading.Thread(
            target=self._server.serve_forever, name=f"{self.name}-server", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        with self._lock:
            for rule in self._rules:
                rule.release()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:  # wake handler threads blocked on a keep-alive read
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self._server = None

    # -- the proxying ---------------------------------------------------------------------

    def _take_rule(self, kinds: Iterable[str], method: str, path: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if (
                    rule.kind in kinds
                    and method in rule.methods
                    and (rule.times is None or rule.times > 0)
                    and rule.pattern.search(path)
                ):
                    if rule.times is not None:
                        rule.times -= 1
                    rule.fired += 1
                    return rule
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        method, full_path = h.command, h.path
        path = full_path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in h.headers.items()}
        body = _read_request_body(h)
        seen = Seen(method, full_path, headers)
        with self._lock:
            self._seen.append(seen)

        if self.reject_authorization and "authorization" in headers:
            seen.action = "rejected: Authorization header"
            msg = b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed"
            _send(h, seen, 400, msg + b"</Message></Error>", {"Content-Type": "application/xml"})
            return

        if (
            self.require_basic is not None
            and path.startswith("/v2/")
            and headers.get("authorization") != basic_auth(*self.require_basic)
        ):
            seen.action = "basic auth required"
            body = json.dumps(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
            ).encode()
            challenge = {
                "WWW-Authenticate": 'Basic realm="squashd-test"',
                "Content-Type": "application/json",
            }
            _send(h, seen, 401, body, challenge)
            return

        rule = self._take_rule(("status", "respond"), method, path)
        if rule is not None:
            seen.action = rule.kind
            _send(h, seen, rule.status, rule.body, rule.headers)
            return
        if BLOB_PATH.match(path) and "X-Amz-Signature=" not in full_path:
            rule = self._take_rule(("redirect",), method, path)
            if rule is not None and rule.target is not None:
                seen.action = "redirect"
                location = f"{rule.target.url}{path}?X-Amz-Signature={secrets.token_hex(8)}"
                _send(h, seen, 307, b"", {"Location": location})
                return

        try:
            resp, conn = self._forward(method, full_path, h.headers, body)
        except OSError as e:
            seen.action = f"upstream error: {e}"
            _send(h, seen, 502, str(e).encode(), {"Content-Type": "text/plain"})
            return
        try:
            self._relay(h, seen, method, path, resp)
        finally:
            conn.close()

    def _forward(self, method, full_path, headers, body):
        host, port = self.upstream
        if self.upstream_tls:
            conn = http.client.HTTPSConnection(
                host, port, timeout=60, context=ssl._create_unverified_context()
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=60)
        drop = HOP_BY_HOP | ({"authorization"} if self.require_basic else set())
        out = {k: v for k, v in headers.items() if k.lower() not in drop}
        out.update(self.inject_headers)
        if body is not None:
            out["Content-Length"] = str(len(body))
        conn.request(method, full_path, body=body, headers=out)
        return conn.getresponse(), conn

    def _relay(self, h, seen: Seen, method: str, path: str, resp) -> None:
        status = resp.status
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
        length_text = resp.getheader("Content-Length")
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        cut = flip = hold = None
        if (
            method == "GET"
            and status in (200, 206)
            and BLOB_PATH.match(path)
            and length_text is not None
            and not seen.is_head
        ):  # faults hit downloads, not a client's look at a blob's first bytes
            cut = self._take_rule(("cut",), method, path)
            flip = self._take_rule(("flip",), method, path)
            hold = self._take_rule(("hold",), method, path)

        if no_body or length_text is not None:
            h.send_response_only(status, resp.reason)
            for k, v in headers:
                h.send_header(k, v)
            seen.status = status  # before the client can have it: a HEAD returns on it
            h.end_headers()
            if no_body:
                return
            length = int(length_text)
            start, total = 0, length
            content_range = resp.getheader("Content-Range") or ""
            m = re.match(r"bytes (\d+)-\d+/(\d+)", content_range)
            if status == 206 and m:
                start, total = int(m[1]), int(m[2])
            self._stream(h, seen, resp, length, start, total, cut, flip, hold)
            return
        # No length (chunked upstream): small bodies only; send them with a length.
        data = resp.read()
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        h.send_response_only(status, resp.reason)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        seen.status = status
        h.end_headers()
        _write(h, data)

    def _stream(self, h, seen: Seen, resp, length, start, total, cut, flip, hold) -> None:
        """Relay `length` body bytes (blob bytes `start`.. of `total`), flipping the
        byte at blob offset `flip.offset`, cutting after `cut.offset` body bytes and
        pausing after `hold.offset` body bytes until the hold is released."""
        cut_at = flip_at = None
        hold_at = hold.offset if hold is not None else None
        actions = [] if hold is None else [f"held@{hold_at}"]
        if flip is not None:
            flip_at = flip.offset if flip.offset is not None else total // 2
            actions.append(f"flipped@{flip_at}")
        if cut is not None:
            cut_at = cut.offset if cut.offset is not None else length // 2
            actions.append(f"cut@{cut_at}")
        if actions:
            seen.action = " ".join(actions)
        sent, pos = 0, start
        while sent < length:
            if hold_at is not None and sent >= hold_at:
                h.wfile.flush()
                hold.reached.set()
                hold.gate.wait(120)
                hold_at = None
            step = 65536 if hold_at is None else max(min(65536, hold_at - sent), 1)
            chunk = resp.read(min(step, length - sent))
            if not chunk:
                break
            if flip_at is not None and pos <= flip_at < pos + len(chunk):
                buf = bytearray(chunk)
                buf[flip_at - pos] ^= 0xFF
                chunk = bytes(buf)
            if cut_at is not None and sent + len(chunk) >= cut_at:
                _write(h, chunk[: cut_at - sent])
                h.wfile.flush()
                seen.sent = cut_at
                _abort(h)
                return
            _write(h, chunk)
            sent += len(chunk)
            pos += len(chunk)
            seen.sent = sent
        if sent < length:  # upstream ended early: do not pretend otherwise
            _abort(h)


def _write(h, data: bytes) -> None:
    """Send `data` to the client: at once, or in the proxy's small pieces."""
    piece = getattr(h.server, "piece_size", None)
    if not piece:
        h.wfile.write(data)
        return
    h.wfile.flush()
    for start in range(0, len(data), piece):
        h.wfile.write(data[start : start + piece])
        h.wfile.flush()
        time.sleep(0.0002)  # lets each piece leave as its own segment


def _abort(h: BaseHTTPRequestHandler) -> None:
    """Close the client connection mid-body: the client sees a premature end of data."""
    h.close_connection = True
    with contextlib.suppress(OSError):
        h.connection.shutdown(socket.SHUT_RDWR)


def _send(h, seen: Seen, status: int, body: bytes, headers: dict[str, str]) -> None:
    h.send_response_only(status)
    for k, v in headers.items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.send_header("Docker-Distribution-Api-Version", "registry/2.0")
    seen.status = status  # before the client can have it: a HEAD returns on it
    h.end_headers()
    if h.command != "HEAD":
        _write(h, body)


def _read_request_body(h: BaseHTTPRequestHandler) -> bytes | None:
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(h.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            parts.append(h.rfile.read(size))
            h.rfile.readline()
        return b"".join(parts)
    length = h.headers.get("Content-Length")
    if length is not None:
        return h.rfile.read(int(length))
    return None


class Listener:
    """A TCP port that counts who connects and answers nobody: an address nothing may
    reach, or a server nothing should need."""

    def __init__(self) -> None:
        self._socket = socket.create_server((HOST, 0))
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"{HOST}:{self._socket.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._socket.close()


# ---------------------------------------------------------------------------------------
# Running the CLI
# ---------------------------------------------------------------------------------------


def export(
    source: str,
    out: Path | str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """`squashd export SOURCE -o OUT ARGS...` without checking its exit status."""
    require_tool("squashd")
    return run(
        [SQUASHD, "export", source, "-o", out, "-q", *args], check=False, env=env, timeout=timeout
    )


def export_ok(source: str, out: Path, *args: str, env: dict[str, str] | None = None) -> None:
    proc = export(source, out, *args, env=env)
    assert proc.returncode == 0, (
        f"`squashd export {source} -o {out} {shlex.join(args)}` failed "
        f"(exit {proc.returncode}):\n{proc.stderr.decode('utf-8', 'replace')[-4000:]}"
    )
    assert out.is_file(), f"exit 0 but no {out}"


def export_fails(
    source: str, work: Path, *args: str, env: dict[str, str] | None = None, describe=None
) -> str:
    """Run an export that must fail: non-zero exit, a one-line error on stderr, no
    traceback, nothing left in OUT's directory. Returns that line."""
    outdir = work / "failing-out"
    outdir.mkdir(parents=True, exist_ok=True)
    out = outdir / "out.tar"
    proc = export(source, out, *args, env=env)
    stderr = proc.stderr.decode("utf-8", "replace")
    context = f"\n{describe()}" if callable(describe) else ""
    cmd = f"squashd export {source} -o {out} {shlex.join(args)}"
    assert proc.returncode != 0, f"`{cmd}` succeeded, but must fail{context}"
    assert "Traceback" not in stderr, f"`{cmd}` crashed:\n{stderr}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"`{cmd}`: expected a one-line error, got:\n{stderr}{context}"
    left = sorted(os.listdir(outdir))
    assert left == [], f"`{cmd}` failed but left {left} in the output directory"
    return lines[0]


@dataclasses.dataclass
class Squashed:
    """What a test wants to know of a squashed archive."""

    archive: SquashedArchive

    @classmethod
    def open(cls, path: Path) -> Squashed:
        return cls(SquashedArchive.open(path))

    @property
    def config(self) -> dict:
        return self.archive.config

    @property
    def diff_id(self) -> str:
        diff_ids = self.config["rootfs"]["diff_ids"]
        assert len(diff_ids) == 1, f"expected one layer, rootfs.diff_ids = {diff_ids}"
        return diff_ids[0]

    @property
    def repo_tags(self) -> list[str]:
        return self.archive.manifest_json[0]["RepoTags"]

    @property
    def history_text(self) -> str:
        return json.dumps(self.config.get("history", []))

    def files(self) -> dict[str, bytes]:
        """Regular files of the squashed layer, by clean name."""
        out: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(self.archive.layer_tar()), mode="r:") as tar:
            for m in tar:
                if m.isfile():
                    f = tar.extractfile(m)
                    assert f is not None
                    out[m.name.removeprefix("./").lstrip("/")] = f.read()
        return out
