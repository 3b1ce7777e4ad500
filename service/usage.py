"""Request counts and downloads, gathered in this process and written to the board in
batches: one write per tag and per artifact every SQUASHD_USAGE_FLUSH_SECONDS, instead
of one per request. Best effort, as the counts always were: a process that dies loses
at most one interval of them, and a board that is down loses that batch."""

import logging
import threading
import time

from tasks.board.protocols import Usage

log = logging.getLogger("squashd.service")


class BatchedUsage:
    def __init__(self, board: Usage, interval: float) -> None:
        self._board, self._interval = board, interval
        self._requests: dict[str, tuple[int, str | None]] = {}  # tag -> (times, key)
        self._downloads: dict[str, float] = {}  # artifact key -> last handed out
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def count_request(self, tag: str, key: str | None) -> None:
        with self._mutex:
            times, known = self._requests.get(tag, (0, None))
            self._requests[tag] = (times + 1, key or known)
        self._flush_soon()

    def touch(self, key: str) -> None:
        with self._mutex:
            self._downloads[key] = time.time()
        self._flush_soon()

    def _flush_soon(self) -> None:
        if self._interval <= 0:
            self.flush()
        elif self._thread is None:
            with self._mutex:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="usage-flush", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def flush(self) -> None:
        """Write what was gathered (the board's failures are logged, not raised)."""
        with self._mutex:
            requests, self._requests = self._requests, {}
            downloads, self._downloads = self._downloads, {}
        now = time.time()
        try:
            for tag, (times, key) in requests.items():
                self._board.count_request(tag, now, key, times)
            for key, when in downloads.items():
                self._board.touch(key, when)
        except Exception as exc:
            log.warning("request counts not written: %s", exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
