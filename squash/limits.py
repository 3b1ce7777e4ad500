"""What one image may cost the machine squashing it: tar members, uncompressed bytes,
free space in the spool directory. A gzip bomb or a layer of millions of empty members
is refused with one line, before the disk or the memory runs out."""

from dataclasses import dataclass

from squash.errors import SquashError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class LimitExceeded(SquashError):
    """An image is larger than the limits allow (a bomb, or too big for this host)."""


@dataclass(frozen=True)
class Limits:
    """Limits of one image; None: no limit."""

    members: int | None = 5_000_000  # tar members of all layers (about 100 bytes of memory each)
    uncompressed: int | None = 64 << 30  # bytes of all layers' tars
    free_space: int = 512 << 20  # bytes the spool directory keeps free


DEFAULT_LIMITS = Limits()


def parse_size(text: str) -> int:
    """`500M`, `20G`, `1.5T` or a number of bytes (`K`, `M`, `G`, `T` are powers of 1024)."""
    clean = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = clean[-1] if clean and clean[-1] in _UNITS else ""
    try:
        value = float(clean.removesuffix(unit))
    except ValueError:
        raise ValueError(f"{text!r} is not a size (e.g. 500M, 20G)") from None
    if value < 0:
        raise ValueError(f"{text!r} is not a size (e.g. 500M, 20G)")
    return int(value * _UNITS[unit])
