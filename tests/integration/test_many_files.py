"""The many-files recipe of the benchmark (a tenth of each lower layer whited out, another
tenth rewritten), at a size the suite can afford, judged like every image: skopeo +
umoci give the same tree as umoci's unpack of the original layers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .helpers import roundtrip

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import many_files

pytestmark = pytest.mark.integration


def test_many_small_files_squash_to_the_original_tree(tools, work: Path) -> None:
    image = many_files.write_image(work / "layout", many_files.many_files_layers(files=3000))
    assert image.entries > 12_000
    result = roundtrip(f"oci:{image.layout}:{image.tag}", work, reference=f"{image.layout}:bench")
    assert len(list((result.squashed / "srv/l0/d000").iterdir())) == 900
