"""The upstream's own content, handed out unchanged: what a runtime asks for by a digest
squashd did not hand out (a pod pinned to the original's digest, `docker pull
…@sha256:`), the original of a tag not squashed yet (SQUASHD_MIRROR_COLD=original), and
a repository's tags. So a node that can reach nothing but squashd still pulls.

Everything is read with the caller's own credentials, from the upstream its request
named. Manifests are small and checked against their digest before they are served.
Blobs are streamed as they arrive and hashed on the way; the last piece is held back
until the digest and length are right, so a cut or a wrong upstream is a connection
the client sees end early, never a complete-looking wrong blob. Nothing is stored.
"""

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from service.access import Access, Caller
from service.front.documents import Document
from service.front.upstreams import Route
from squash.distribution.client import Registry, read_bounded
from squash.errors import DigestMismatch, RegistryError, SquashError
from squash.oci import JSONObject, parse_object
from tasks.errors import NotFound, ServiceError
from tasks.expiring import ExpiringCache

log = logging.getLogger("squashd.passthrough")
DOCUMENT_SECONDS = 3600.0  # what a digest names never changes; the caller is checked anyway
MAX_DOCUMENTS = 1024
MAX_TAGS = 8 << 20  # bytes of a tags list
CHUNK = 1 << 20
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
_NEXT = re.compile(r"<([^>]*)>\s*;\s*rel=\"?next\"?")


class BrokenPassThrough(Exception):
    """A blob the upstream cut, or whose bytes are not its digest's: the client's
    connection is dropped before the last byte."""


@dataclass
class PassingBlob:
    """A blob on its way from the upstream: its length (if the upstream said it) and
    its bytes, checked as they pass (`chunks`; nothing for a HEAD)."""

    digest: str
    length: int | None
    chunks: Iterator[bytes]


class PassThrough:
    def __init__(self, access: Access) -> None:
        self.access = access  # the callers' resolutions, remembered a few seconds
        self.resolver = access.resolver
        self._documents: ExpiringCache[tuple[str, str], Document] = ExpiringCache(
            DOCUMENT_SECONDS, MAX_DOCUMENTS
        )

    def manifest(self, route: Route, digest: str, caller: Caller) -> Document:
        """The upstream's manifest or index `digest` under the route's name, fetched with
        the caller's credentials (or found in memory once the caller is checked)."""
        ref = route.ref(digest)
        key = (route.name, digest)
        known = self._documents.get(key)
        if known is not None:
            self.access.resolve(ref, caller)  # may this caller read it?
            return known
        what = f"image {ref}"
        try:
            body, kind, _ = self.resolver.asking(
                ref, caller, lambda session: session.manifest(ref.repository, digest, what)
            )
        except DigestMismatch as exc:  # the upstream's fault
            raise ServiceError(str(exc), 502) from None
        if not kind or kind in ("application/json", "application/octet-stream"):
            media_type = _parsed(body, what).get("mediaType")  # as the body says it
            kind = media_type if isinstance(media_type, str) else kind
        document = Document(body, kind)
        self._documents.put(key, document)
        return document

    def blob(self, route: Route, digest: str, caller: Caller, method: str) -> PassingBlob:
        """The upstream's blob `digest` under the route's name, as the caller may read
        it: its length, and for a GET its bytes as they arrive, checked."""
        if not _SHA256.match(digest):
            raise NotFound(f"blob {digest}: only sha256 digests are passed through")
        ref = route.ref(digest)
        what = f"blob {digest} of {route.name}"

        def send(session: Registry) -> httpx.Response:
            return session.get(ref.repository, f"blobs/{digest}", None, what, method)

        response = self.resolver.asking(ref, caller, send)
        length_text = response.headers.get("content-length")
        length = int(length_text) if length_text and length_text.isdigit() else None
        if method == "HEAD":
            response.close()
            return PassingBlob(digest, length, iter(()))
        return PassingBlob(digest, length, _checked(response, digest, length, what))

    def tags(
        self, route: Route, n: str | None, last: str | None, caller: Caller
    ) -> tuple[bytes, str | None]:
        """The upstream's tags list of the route's name (`n` and `last` as the client
        gave them), read with the caller's credentials; the list as the client named
        the repository, and the query of the next page, if the upstream has one."""
        query = urlencode([(key, value) for key, value in (("n", n), ("last", last)) if value])
        path = f"tags/list?{query}" if query else "tags/list"
        what = f"the tags of {route.name}"

        def read(session: Registry) -> tuple[bytes, str]:
            response = session.get(route.repository, path, None, what)
            try:
                body = read_bounded(response, MAX_TAGS, f"{what}:")
            finally:
                response.close()
            return body, response.headers.get("link", "")

        body, link = self.resolver.asking(route.ref("latest"), caller, read)
        listed = _parsed(body, what)
        listed["name"] = route.asked
        return json.dumps(listed).encode(), _next_query(link)


def _parsed(body: bytes, what: str) -> JSONObject:
    """A JSON object the upstream sent; one that is not is the upstream's fault (502)."""
    try:
        return parse_object(body, what)
    except SquashError as exc:
        raise ServiceError(str(exc), 502) from None


def _next_query(link: str) -> str | None:
    """`n` and `last` of the upstream's next page (its `Link` header), if any."""
    found = _NEXT.search(link)
    if found is None:
        return None
    kept = [(k, v) for k, v in parse_qsl(urlsplit(found[1]).query) if k in ("n", "last")]
    return urlencode(kept)


def _checked(
    response: httpx.Response, digest: str, length: int | None, what: str
) -> Iterator[bytes]:
    """The blob's bytes as they arrive, the last piece held back until the whole blob is
    its digest (and length): BrokenPassThrough otherwise, before the client has it all."""
    hasher = hashlib.sha256()
    held = b""
    count = 0
    try:
        for chunk in response.iter_raw(CHUNK):
            if held:
                yield held
            hasher.update(chunk)
            count += len(chunk)
            held = chunk
    except httpx.HTTPError as exc:
        raise _broken(f"{what}: the upstream broke off after {count} bytes: {exc}") from None
    except RegistryError as exc:
        raise _broken(f"{what}: {exc}") from None
    finally:
        response.close()
    if length is not None and count != length:
        raise _broken(f"{what}: the upstream sent {count} of {length} bytes")
    if f"sha256:{hasher.hexdigest()}" != digest:
        raise _broken(f"{what}: the upstream's bytes are not this digest's")
    yield held


def _broken(message: str) -> BrokenPassThrough:
    log.warning("pass-through dropped: %s", message)
    return BrokenPassThrough(message)
