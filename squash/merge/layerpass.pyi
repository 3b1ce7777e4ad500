"""Types of the compiled per-layer decisions (layerpass.pyx), for the type checker."""

from collections.abc import Callable, Iterator
from typing import BinaryIO

from squash.merge.layerindex import LayerIndex
from squash.merge.ordered import Output
from squash.merge.pathtable import PathTable

class Layers:
    paths: PathTable
    output: Output
    members_read: int
    def __init__(
        self,
        write_out: Callable[[bytes], object],
        expand_sparse: Callable[[BinaryIO, int, bytes], Iterator[bytes]] | None,
    ) -> None: ...
    def index(
        self,
        where: str,
        file: BinaryIO | None = None,
        offset: int = 0,
        *,
        spool_out: bool = False,
        holes: bool = False,
    ) -> LayerIndex: ...
    def keep_below(self) -> None: ...
    def plan(self, index: LayerIndex) -> LayerPlan: ...
    def root_entry(self, head: LayerIndex, data: bytes) -> bool: ...
    def finish(self) -> None: ...

class LayerPlan:
    def needs_skipped(self) -> bool: ...
    def discard(self) -> None: ...
    def run(self) -> None: ...
