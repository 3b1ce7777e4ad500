"""A small in-process cache whose entries live for a few seconds, the least recently used
dropped beyond a bound; safe to share between threads. What this process remembers for
a moment (a caller's granted resolution, an artifact just found)."""

import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    """Entries kept for `seconds` (0: nothing is kept), at most `limit` of them."""

    def __init__(self, seconds: float, limit: int) -> None:
        self.seconds, self.limit = seconds, limit
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._mutex = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._mutex:
            found = self._entries.get(key)
            if found is None:
                return None
            if found[0] <= time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return found[1]

    def put(self, key: K, value: V) -> None:
        if self.seconds <= 0:
            return
        with self._mutex:
            self._entries[key] = (time.monotonic() + self.seconds, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.limit:
                self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        with self._mutex:
            self._entries.pop(key, None)
