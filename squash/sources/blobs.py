"""Helpers shared by the local sources: digest checks and byte-range readers."""

import io
import re

from squash.errors import SquashError, UnsupportedMediaType
from squash.image import LAYER_TYPES

_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
MAX_DOCUMENT = 64 << 20  # manifests and configs are read whole; bound them


def check_digest(digest: object, what: str) -> str:
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise SquashError(f"{what}: malformed digest {digest!r}")
    return digest


def layer_compression(descriptor: dict, what: str) -> str:
    kind = descriptor.get("mediaType")
    if kind not in LAYER_TYPES:
        raise UnsupportedMediaType(f"{what}: unsupported layer media type {kind!r}")
    return LAYER_TYPES[kind]


def layer_label(image: str, index: int, count: int, digest: str | None) -> str:
    short = f" {digest[:19]}" if digest else ""
    return f"image {image}, layer {index + 1}/{count}{short}"


class FileSlice(io.RawIOBase):
    """Reads `size` bytes of a file from `offset` on (a layer inside a tar)."""

    def __init__(self, path: str, offset: int, size: int) -> None:
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        self._file.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: self._left]
        n = self._file.readinto(view) or 0
        self._left -= n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()
