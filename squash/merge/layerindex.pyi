"""Types of the compiled layer indexer (layerindex.pyx), for the type checker."""

from typing import Any, BinaryIO

from squash.merge.pathtable import PathTable

class Spool:
    file: BinaryIO
    label: str
    waiting: int
    def __init__(self, file: BinaryIO, label: str) -> None: ...
    def group(self, start: int, data: int) -> bytes: ...
    def close(self) -> None: ...

class LayerIndex:
    where: str
    spool: Spool
    count: int
    ended: bool
    position: int
    def __init__(
        self,
        paths: PathTable,
        where: str,
        file: BinaryIO | None = None,
        offset: int = 0,
        *,
        spool_out: bool = False,
        holes: bool = False,
    ) -> None: ...
    def __len__(self) -> int: ...
    def feed(self, chunk: bytes | bytearray | memoryview) -> None: ...
    def finish(self) -> None: ...
    def entry(self, i: int) -> dict[str, Any]: ...
