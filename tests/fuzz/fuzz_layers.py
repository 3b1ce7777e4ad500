"""The fuzz target of the merger's compiled core (atheris, libFuzzer's engine).

Each input is cut into up to three layer tars (its first byte says where) and merged,
the bottom ones kept as they are when the first byte says so (a partial squash); every
header group is also read on its own. A SquashError (an invalid layer, a limit) is
a fine answer; anything else is a bug, and so are a hang (libFuzzer's -timeout) and
memory without bound (-rss_limit_mb). An accepted merge must be a tar that squashd's
own reader and Python's tarfile read back whole.

    python tests/fuzz/fuzz_layers.py CORPUS_DIR -max_total_time=600   # make fuzz
"""

import contextlib
import io
import sys
import tarfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from squash.errors import SquashError
    from squash.limits import Limits
    from squash.merge.layerpass import Layers
    from squash.merge.merger import Merger
    from squash.merge.tarheader import HeaderReader

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.layertar import BytesLayer

LIMITS = Limits(members=20_000, uncompressed=32 << 20, free_space=0)


def split(data: bytes) -> tuple[list[bytes], int]:
    """Up to three layers, and how many of them to keep; the first byte picks both."""
    if not data:
        return [], 0
    count = 1 + data[0] % 3
    keep = (data[0] // 3) % count  # never all of them
    body = data[1:]
    cuts = sorted({(len(body) * k) // count // 512 * 512 for k in range(1, count)})
    parts, start = [], 0
    for cut in [*cuts, len(body)]:
        parts.append(body[start:cut])
        start = cut
    return parts, keep


def check_output(out: bytes) -> None:
    index = Layers(lambda _: None, None).index("the output")
    index.feed(out)
    index.finish()
    with tarfile.open(fileobj=io.BytesIO(out), mode="r:", errors="surrogateescape") as t:
        for member in t:
            if member.isreg():
                extracted = t.extractfile(member)
                assert extracted is not None and extracted.read() is not None


def one_input(data: bytes) -> None:
    with contextlib.suppress(SquashError):
        HeaderReader().parse(data[:8192])
    out = io.BytesIO()
    parts, keep = split(data)
    layers = [BytesLayer(f"layer {n}", part) for n, part in enumerate(parts)]
    try:
        Merger(out.write, limits=LIMITS).run(layers, keep)
    except SquashError:
        return
    check_output(out.getvalue())


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
