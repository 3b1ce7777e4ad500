"""A seed corpus for the fuzz target: small layer stacks that exercise every rule."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.hostile import header, member, pax, tar
from tests.layertar import layer
from tests.layertar import member as spec


def seeds() -> dict[str, bytes]:
    base = layer(spec("a", "dir"), spec("a/f", data=b"hello"), spec("a/l", "hardlink",
                 linkname="a/f"), spec("s", "symlink", linkname="a/f"),
                 spec("dev", "chr", devmajor=1, devminor=3), spec("fifo", "fifo"))  # fmt: skip
    top = layer(spec("a", "dir"), spec("a/.wh.f"), spec("a/.wh..wh..opq"), spec("b", "dir"),
                spec("b/x", data=b"x" * 2000))  # fmt: skip
    odd = tar(pax({"path": b"long/" + b"n" * 150, "SCHILY.xattr.user.k": b"v"}),
              member("short", b"data"), header("d/", type=b"\0"))  # fmt: skip
    return {
        "one": bytes([0]) + base,
        "two": bytes([1]) + base + top,
        "three": bytes([2]) + base + top + odd,
        "pax": bytes([0]) + odd,
    }


if __name__ == "__main__":
    corpus = Path(sys.argv[1])
    corpus.mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (corpus / name).write_bytes(data)
