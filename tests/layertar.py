"""Build layer tars in memory and squash them, for the engine's unit tests."""

import io
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypedDict, Unpack

from squash.merge.merger import Merger


class Metadata(TypedDict, total=False):
    """A member's mode, owner and mtime (`tarfile.TarInfo` attributes)."""

    mode: int
    uid: int
    gid: int
    mtime: float


class TarAttrs(Metadata, total=False):
    """The `tarfile.TarInfo` attributes a member spec may set (`layer` sets them)."""

    linkname: str
    devmajor: int
    devminor: int
    pax_headers: dict[str, str]


def member(name: str, kind: str = "file", data: bytes = b"", **attrs: Unpack[TarAttrs]) -> tuple:
    """A member spec: kind is file, dir, symlink, hardlink, fifo, chr, blk."""
    return (name, kind, data, attrs)


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
}


def layer(*members: tuple, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A layer tar holding `members` in the given order."""
    out = io.BytesIO()
    with tarfile.open(
        fileobj=out, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape"
    ) as tar:
        for name, kind, data, attrs in members:
            info = tarfile.TarInfo(name)
            info.type = _TYPES[kind]
            info.mode = 0o755 if kind == "dir" else 0o644
            info.mtime = 1_700_000_000
            for key, value in attrs.items():
                setattr(info, key, value)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return out.getvalue()


@dataclass
class BytesLayer:
    """A TarSource over an in-memory tar."""

    label: str
    data: bytes

    @contextmanager
    def open_tar(self) -> Iterator[io.BytesIO]:
        yield io.BytesIO(self.data)

    def peek(self) -> bytes:
        return self.data[:65536]

    def plain_file(self) -> None:
        return None


def squash(*layers: bytes, keep: int = 0) -> bytes:
    """Merge layer tars (bottom first) and return the squashed tar (the one to put on the
    bottom `keep` layers)."""
    out = io.BytesIO()
    sources = [BytesLayer(f"layer {n}", data) for n, data in enumerate(layers)]
    Merger(out.write).run(sources, keep)
    return out.getvalue()


def listing(tar_bytes: bytes) -> dict[str, tuple]:
    """name -> (type, content or link target, mode, uid, gid, mtime, xattrs) of a tar."""
    result: dict[str, tuple] = {}
    with tarfile.open(
        fileobj=io.BytesIO(tar_bytes), encoding="utf-8", errors="surrogateescape"
    ) as tar:
        for info in tar:
            name = info.name.rstrip("/")
            assert name not in result, f"{name} twice in the output"
            if info.isreg():
                extracted = tar.extractfile(info)
                assert extracted is not None, name
                body: object = extracted.read()
            elif info.issym() or info.islnk():
                body = info.linkname
            else:
                body = None
            xattrs = {k: v for k, v in info.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            result[name] = (info.type, body, info.mode, info.uid, info.gid, info.mtime, xattrs)
    return result


def names(tar_bytes: bytes) -> list[str]:
    """Member names in output order."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return [info.name.rstrip("/") for info in tar]
