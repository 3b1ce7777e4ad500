"""Types of the compiled tar header reader and writer (tarheader.pyx), for the type checker."""

from typing import Any

class HeaderReader:
    def __init__(self) -> None: ...
    def parse(
        self, group: bytes | bytearray | memoryview, where: str = "test"
    ) -> dict[str, Any] | int: ...

class HeaderWriter:
    def __init__(self) -> None: ...
    def header(
        self, source: HeaderReader, name: bytes, type: str, link: bytes, size: int
    ) -> bytes: ...
