"""Pushing to a registry: blobs looked up, mounted across repositories, or uploaded in
chunks (POST, a PATCH per chunk, PUT with the digest), and manifests put by tag.

A chunk is kept until the registry has acknowledged it, so a PATCH that fails (a cut
connection, a 5xx) is resumed from what the upload's status says the registry holds;
one pass over the data, no temporary copy of the blob."""

from __future__ import annotations

import contextlib

import httpx

from squash.distribution.client import Registry
from squash.distribution.options import DEFAULT_CHUNK
from squash.errors import RegistryError, TransientError
from squash.streams import Chunk


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def has_blob(registry: Registry, repository: str, digest: str, what: str) -> bool:
    """Does the repository hold the blob (a HEAD, as the pusher's scope)?"""
    try:
        response = registry.request(
            "HEAD", repository, f"blobs/{digest}", None, what, scope=push_scope(repository)
        )
    except RegistryError as exc:
        if exc.status == 404:
            return False
        raise
    response.close()
    return True


def _location(response: httpx.Response, what: str) -> str:
    location = response.headers.get("location")
    if not location:
        raise RegistryError(f"{what}: the registry named no upload location")
    return str(response.url.join(location))


class BlobUpload:
    """One blob uploaded in chunks of `chunk_size`; `finish` names its digest. With
    `mount` = (digest, repository), the registry is first asked to mount the blob from
    that repository of its own (`mounted` says whether it did: then there is nothing to
    write)."""

    def __init__(
        self,
        registry: Registry,
        repository: str,
        what: str,
        chunk_size: int = DEFAULT_CHUNK,
        *,
        mount: tuple[str, str] | None = None,  # (digest, repository it is in)
    ) -> None:
        self._registry, self._repository, self._what = registry, repository, what
        self._chunk_size = chunk_size
        self._pieces: list[bytes] = []  # written, not sent yet: held as given, not copied
        self._pending = 0  # their length
        self._offset = 0  # bytes the registry has acknowledged
        scope = push_scope(repository)
        path = "blobs/uploads/"
        if mount is not None:
            path += f"?mount={mount[0]}&from={mount[1]}"
            scope += f" repository:{mount[1]}:pull"
        response = registry.request("POST", repository, path, None, what, scope=scope)
        response.read()
        response.close()
        self.mounted = response.status_code == 201
        self._url = "" if self.mounted else _location(response, what)

    def write(self, data: Chunk) -> None:
        self._pieces.append(data if isinstance(data, bytes) else bytes(data))
        self._pending += len(data)
        while self._pending >= self._chunk_size:
            self._patch(self._take(self._chunk_size))

    def _take(self, n: int) -> list[bytes]:
        """The first `n` bytes of what is pending."""
        taken, self._pieces = _split(self._pieces, n)
        self._pending -= n
        return taken

    def _request(
        self, method: str, headers: dict[str, str], content: list[bytes] | None = None
    ) -> httpx.Response:
        return self._registry.request(
            method,
            self._repository,
            self._url,
            headers,
            self._what,
            scope=push_scope(self._repository),
            content=content,
            retry=False,
        )

    def _patch(self, chunk: list[bytes]) -> None:
        """Send one chunk (its pieces); after a failure, ask what the registry holds and
        go on from there (or give up after the client's attempts)."""
        failures = 0
        size = sum(len(piece) for piece in chunk)
        while size:
            end = self._offset + size - 1
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{self._offset}-{end}",
                "Content-Length": str(size),
            }
            try:
                response = self._request("PATCH", headers, chunk)
                response.read()
                response.close()
                self._url = _location(response, self._what)
                self._offset, size = end + 1, 0
            except TransientError as exc:
                self._registry.pause(failures, None, str(exc))
                failures += 1
                held = self._held()
                if not self._offset <= held <= end + 1:
                    raise RegistryError(
                        f"{self._what}: the registry holds {held} bytes of the upload, "
                        f"expected {self._offset} to {end + 1}"
                    ) from None
                chunk = _split(chunk, held - self._offset)[1]
                size -= held - self._offset
                self._offset = held

    def _held(self) -> int:
        """How many bytes the registry holds of this upload (its status: `Range: 0-N`,
        the last byte's offset; distribution says `0-0` for an empty upload too, and a
        PATCH is all or nothing there, so before the first one it means nothing)."""
        response = self._request("GET", {})
        response.read()
        response.close()
        self._url = _location(response, self._what)
        _, _, last = response.headers.get("range", "").partition("-")
        if not last.isdigit() or (last == "0" and self._offset == 0):
            return 0
        return int(last) + 1

    def finish(self, digest: str) -> None:
        """The last bytes, then PUT with the digest: the registry checks it."""
        if self._pending:
            self._patch(self._take(self._pending))
        sep = "&" if "?" in self._url else "?"
        self._url += f"{sep}digest={digest}"
        response = self._request("PUT", {"Content-Length": "0"}, [])
        response.read()
        response.close()
        said = response.headers.get("docker-content-digest")
        if said and said != digest:
            raise RegistryError(f"{self._what}: the registry stored {said}, not {digest}")
        self._url = ""

    def abort(self) -> None:
        """Cancel an upload still open (best effort: registries expire them anyway)."""
        if self._url:
            with contextlib.suppress(RegistryError, httpx.HTTPError):
                self._request("DELETE", {}).close()
            self._url = ""


def _split(pieces: list[bytes], n: int) -> tuple[list[bytes], list[bytes]]:
    """The first `n` bytes of `pieces`, and the rest (only a piece cut in two is copied)."""
    head: list[bytes] = []
    for at, piece in enumerate(pieces):
        if not n:
            return head, pieces[at:]
        if len(piece) > n:
            return [*head, piece[:n]], [piece[n:], *pieces[at + 1 :]]
        head.append(piece)
        n -= len(piece)
    return head, []


def put_manifest(
    registry: Registry, repository: str, tag: str, data: bytes, media_type: str, what: str
) -> None:
    """PUT a manifest (or index) under `tag` (or its digest)."""
    response = registry.request(
        "PUT",
        repository,
        f"manifests/{tag}",
        {"Content-Type": media_type},
        what,
        scope=push_scope(repository),
        content=data,
    )
    response.read()
    response.close()
