"""The board: the service's shared state of builds (job states, leased build locks,
cached artifact records, popularity, counters), in Redis when there is a broker and in
memory in the embedded default. `open_board` picks one; consumers are typed against the
narrow protocols they use (`tasks.board.protocols`).
"""

from tasks.board.jobs import (
    BUILDING,
    FAILED,
    QUEUED,
    READY,
    Job,
    Lifetimes,
    claim_allowed,
    claimable,
    may_take,
)
from tasks.board.protocols import (
    ArtifactRecords,
    Board,
    BuildLocks,
    Counters,
    Jobs,
    PulledDigests,
    Usage,
)

__all__ = [
    "BUILDING", "FAILED", "QUEUED", "READY", "ArtifactRecords", "Board", "BuildLocks",
    "Counters", "Job", "Jobs", "Lifetimes", "PulledDigests", "Usage", "claim_allowed", "claimable",
    "may_take", "open_board",
]  # fmt: skip


def open_board(redis_url: str | None, lifetimes: Lifetimes) -> Board:
    """Redis at `redis_url`, or memory when there is none (the embedded default)."""
    if redis_url:
        from tasks.board.redis_board import RedisBoard

        return RedisBoard(redis_url, lifetimes)
    from tasks.board.memory_board import MemoryBoard

    return MemoryBoard(lifetimes)
