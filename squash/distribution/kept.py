"""Idle connections kept for the next request to the same origin (the manifest HEADs'
sockets, the blob bodies' http.client connections)."""

from __future__ import annotations

import threading
from typing import Generic, Protocol, TypeVar


class Closeable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closeable)


class Kept(Generic[C]):
    """At most `limit` idle connections; one given back beyond them is closed."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._idle: list[C] = []
        self._mutex = threading.Lock()

    def take(self) -> C | None:
        with self._mutex:
            return self._idle.pop() if self._idle else None

    def give(self, conn: C) -> None:
        with self._mutex:
            if len(self._idle) < self._limit:
                self._idle.append(conn)
                return
        conn.close()

    def __len__(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        with self._mutex:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
