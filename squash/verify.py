"""A reader that checks, as bytes stream past, that they hash to the digest naming them."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import TYPE_CHECKING

from squash.errors import DigestMismatch, UnsupportedMediaType
from squash.streams import Readable

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_ALGORITHMS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


def hasher_for(digest: str, label: str) -> hashlib._Hash:
    algorithm, _, _ = digest.partition(":")
    try:
        return _ALGORITHMS[algorithm]()
    except KeyError:
        raise UnsupportedMediaType(f"{label}: unsupported digest algorithm in {digest}") from None


class VerifyingReader(io.RawIOBase):
    """Raw stream over `raw`; at its end, digest and size must match or it raises."""

    def __init__(
        self,
        raw: Readable,
        label: str,
        digest: str | None,
        size: int | None,
        progress: Callable[[int], object] | None,
    ) -> None:
        self._raw = raw
        self._label = label
        self._digest = digest
        self._size = size
        self._progress = progress
        self._hash = hasher_for(digest, label) if digest else None
        self._seen = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        n = self._raw.readinto(buffer)
        if n:
            view = memoryview(buffer)[:n]
            self._seen += n
            if self._hash is not None:
                self._hash.update(view)
            if self._progress is not None:
                self._progress(n)
            if self._size is not None and self._seen > self._size:
                raise DigestMismatch(
                    f"{self._label}: more than the {self._size} bytes its descriptor says"
                )
        else:
            self._check()
        return n or 0

    def drain(self) -> None:
        """Read whatever is left and check; a no-op once the end was seen."""
        buf = bytearray(1 << 20)
        while self.readinto(buf):
            pass

    def _check(self) -> None:
        if self._checked:
            return
        self._checked = True
        if self._size is not None and self._seen != self._size:
            raise DigestMismatch(
                f"{self._label}: size mismatch: expected {self._size} bytes, got {self._seen}"
            )
        if self._hash is not None and self._digest is not None:
            got = f"{self._digest.partition(':')[0]}:{self._hash.hexdigest()}"
            if got != self._digest:
                raise DigestMismatch(
                    f"{self._label}: digest mismatch: expected {self._digest}, got {got}"
                )


def verify_bytes(data: bytes, digest: str, size: int | None, what: str) -> bytes:
    """A whole small blob (manifest, config) against its digest and size."""
    algorithm, _, hexdigest = digest.partition(":")
    hasher = hasher_for(digest, what)
    hasher.update(data)
    got = hasher.hexdigest()
    if got != hexdigest:
        raise DigestMismatch(f"{what}: digest mismatch: expected {digest}, got {algorithm}:{got}")
    if size is not None and size != len(data):
        raise DigestMismatch(f"{what}: size mismatch: expected {size} bytes, got {len(data)}")
    return data
