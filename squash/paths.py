"""Path keys inside a layer: the cleaned, relative form every rule compares by.

`./a`, `/a`, `a/` and `a//b` name one path; a `..` that climbs out of the root is an error.
"""

import posixpath

from squash.errors import InvalidLayer

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
AUFS_META_PREFIX = ".wh..wh."


def clean(name: str, where: str) -> str:
    """Return the key of a tar member name; '' is the root. `where` names the layer for errors."""
    if name and name[0] not in "./" and "//" not in name and "/." not in name:
        return name.rstrip("/")  # the common, already clean case
    path = posixpath.normpath(name.lstrip("/") or ".")
    if path == ".":
        return ""
    if path == ".." or path.startswith("../"):
        raise InvalidLayer(f"{where}: member {name!r} escapes the root")
    return path


def parent(key: str) -> str:
    """The key of the directory holding `key` ('' for top-level names)."""
    slash = key.rfind("/")
    return key[:slash] if slash >= 0 else ""


def split_whiteout(key: str, where: str) -> tuple[str, str] | None:
    """For a whiteout member return ('whiteout'|'opaque'|'meta', target key), else None."""
    if key == OPAQUE_MARKER:  # the root itself is opaque
        return "opaque", ""
    if key.startswith(AUFS_META_PREFIX):  # aufs bookkeeping at the root, and all under it
        return "meta", key
    slash = key.rfind("/")
    base = key[slash + 1 :]
    if not base.startswith(WHITEOUT_PREFIX):
        return None
    directory = key[:slash] if slash >= 0 else ""
    if base == OPAQUE_MARKER:
        return "opaque", directory
    if base.startswith(AUFS_META_PREFIX):
        return "meta", directory
    name = base[len(WHITEOUT_PREFIX) :]
    if not name:
        raise InvalidLayer(f"{where}: bare whiteout {key!r} names nothing")
    return "whiteout", clean(f"{directory}/{name}", where)
