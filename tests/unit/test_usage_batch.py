"""Request counts and downloads reach the board in batches (service.usage)."""

import time

from service.usage import BatchedUsage


class Recording:
    """The board's Usage methods the batcher calls, recorded; `down` makes them fail."""

    def __init__(self) -> None:
        self.counts: list[tuple[str, str | None, int]] = []
        self.touches: list[str] = []
        self.down = False

    def count_request(self, tag: str, now: float, key: str | None = None, times: int = 1) -> None:
        if self.down:
            raise ConnectionError("redis is down")
        self.counts.append((tag, key, times))

    def touch(self, key: str, now: float) -> None:
        self.touches.append(key)


def test_requests_are_gathered_and_written_once_per_tag() -> None:
    board = Recording()
    usage = BatchedUsage(board, 0.2)  # type: ignore[arg-type]
    for _ in range(3):
        usage.count_request("reg/a:1", None)
    usage.count_request("reg/a:1", "k1")
    usage.count_request("reg/b:1", None)
    usage.touch("k1")
    usage.touch("k1")
    assert board.counts == []  # nothing written before the interval
    deadline = time.monotonic() + 5
    while not board.counts and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(board.counts) == [("reg/a:1", "k1", 4), ("reg/b:1", None, 1)]
    assert board.touches == ["k1"]
    usage.count_request("reg/c:1", None)
    usage.close()  # what is still gathered is written on the way out
    assert ("reg/c:1", None, 1) in board.counts


def test_zero_interval_writes_at_once_and_a_down_board_loses_only_its_batch() -> None:
    board = Recording()
    usage = BatchedUsage(board, 0)  # type: ignore[arg-type]
    usage.count_request("reg/a:1", None)
    assert board.counts == [("reg/a:1", None, 1)]
    board.down = True
    usage.count_request("reg/a:1", None)  # logged, not raised
    board.down = False
    usage.count_request("reg/a:1", None)
    assert board.counts == [("reg/a:1", None, 1), ("reg/a:1", None, 1)]
