"""The board's rules, shown for both implementations: Redis (a real redis-server) and
the embedded default's memory. The same assertions hold for each."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from storage.base import Artifact
from tasks.board import (
    BUILDING,
    FAILED,
    QUEUED,
    READY,
    Board,
    Job,
    Lifetimes,
    Usage,
    claimable,
    may_take,
)
from tasks.board.memory_board import MemoryBoard
from tasks.board.redis_board import RedisBoard
from tasks.spec import ExportSpec

LIFE = Lifetimes(lease=0.5, grace=30, failure=1, job=3600, artifact=1)
SPEC = ExportSpec("127.0.0.1:5000", "ns/app", "v1", "sha256:" + "a" * 64, "linux/amd64",
                  "127.0.0.1:5000/ns/app:v1.squash", "gzip")  # fmt: skip


@pytest.fixture(params=["redis", "memory"])
def board(request: pytest.FixtureRequest) -> Iterator[Board]:
    if request.param == "memory":
        yield MemoryBoard(LIFE)
        return
    redis = request.getfixturevalue("redis_db")
    yield RedisBoard(redis.url, LIFE)


def _artifact(key: str) -> Artifact:
    return Artifact(key, 1234, "b" * 64, SPEC.digest, time.time(), SPEC.name)


def test_claim_once_then_join(board) -> None:
    now = time.time()
    assert board.claim(SPEC, "t1", now)
    assert not board.claim(SPEC, "t2", now)  # queued and fresh: join it
    job = board.job(SPEC.key)
    assert job.state == QUEUED and job.task_id == "t1" and job.spec == SPEC
    assert board.claim(SPEC, "t3", now + LIFE.grace)  # queued too long: its message was lost


def test_pulled_digests_are_found_only_under_their_repository(board) -> None:
    digests = ["sha256:" + c * 64 for c in "123"]
    board.remember_digests(SPEC.name, digests, SPEC.key)
    assert [board.digest_key(SPEC.name, d) for d in digests] == [SPEC.key] * 3
    assert board.digest_key("127.0.0.1:5000/ns/other", digests[0]) is None
    assert board.digest_key(SPEC.name, "sha256:" + "9" * 64) is None
    board.remember_index(SPEC.name, digests[0], '{"record": 1}')
    assert board.remembered_index(SPEC.name, digests[0]) == '{"record": 1}'
    assert board.remembered_index("127.0.0.1:5000/ns/other", digests[0]) is None
    assert board.digest_key(SPEC.name, digests[0]) == SPEC.key, "an index is not an artifact"


def test_concurrent_claims_let_exactly_one_through(board) -> None:
    now, wins = time.time(), []
    barrier = threading.Barrier(16)

    def claim(n: int) -> None:
        barrier.wait()
        if board.claim(SPEC, f"t{n}", now):
            wins.append(n)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_a_build_holding_its_lease_is_joined_and_a_dead_one_redone(board) -> None:
    now = time.time()
    board.claim(SPEC, "t1", now)
    assert board.acquire(SPEC.key, "t1/a")
    board.started(SPEC, "t1", 5000, now)
    board.progress(SPEC.key, 1200, now)
    job = board.job(SPEC.key)
    assert (job.state, job.done, job.total, job.builds) == (BUILDING, 1200, 5000, 1)
    assert not board.claim(SPEC, "t2", now)
    assert board.renew(SPEC.key, "t1/a")
    time.sleep(LIFE.lease + 0.2)  # the worker died: nobody renews
    assert not board.renew(SPEC.key, "t1/a")
    assert board.claim(SPEC, "t2", time.time())
    assert board.job(SPEC.key).builds == 1  # the count survives the new claim


def test_lock_is_taken_over_only_by_a_redelivery_of_the_same_task(board) -> None:
    assert board.acquire(SPEC.key, "t1/a")
    assert not board.acquire(SPEC.key, "t2/b")
    assert board.acquire(SPEC.key, "t1/c")  # the same task id again: the earlier run died
    assert not board.renew(SPEC.key, "t1/a") and board.renew(SPEC.key, "t1/c")
    board.release(SPEC.key, "t1/a")  # not the owner: no effect
    assert not board.acquire(SPEC.key, "t2/b")
    board.release(SPEC.key, "t1/c")
    assert board.acquire(SPEC.key, "t2/b")


def test_ready_failed_and_requeued(board) -> None:
    now = time.time()
    board.claim(SPEC, "t1", now)
    board.requeue(SPEC.key, "t1", "retry 1 of 5 after: boom", now + 60, now)
    job = board.job(SPEC.key)
    assert job.state == QUEUED and job.due == pytest.approx(now + 60) and "boom" in job.error
    assert not board.claim(SPEC, "t2", now + LIFE.grace)  # its retry is not due yet
    board.failed(SPEC.key, "digest mismatch", now)
    assert board.job(SPEC.key).state == FAILED
    assert not board.claim(SPEC, "t3", now)  # the failure is reported, not rebuilt
    time.sleep(LIFE.failure + 1.1)  # until its record expires
    assert board.job(SPEC.key) is None and board.claim(SPEC, "t3", time.time())
    artifact = _artifact(SPEC.key)
    board.finished(SPEC.key, artifact, now)
    job = board.job(SPEC.key)
    assert (job.state, job.size, job.sha256) == (READY, 1234, "b" * 64)
    assert board.cached(SPEC.key) == artifact
    board.forget(SPEC.key)
    assert board.cached(SPEC.key) is None


def test_a_ready_job_is_claimed_again_only_when_seen_without_its_artifact(board) -> None:
    """A build that finished between a caller's artifact lookup and its claim is not
    sent again; a ready job whose artifact is gone (evicted) is."""
    now = time.time()
    board.claim(SPEC, "t1", now)
    board.finished(SPEC.key, _artifact(SPEC.key), now)
    assert not board.claim(SPEC, "t2", now)
    assert board.job(SPEC.key).state == READY
    assert board.claim(SPEC, "t3", now, ready_missing=True)
    assert board.job(SPEC.key).state == QUEUED


def test_unclaim_withdraws_only_its_own_claim(board) -> None:
    now = time.time()
    board.claim(SPEC, "t1", now)
    board.unclaim(SPEC.key, "t2")
    assert board.job(SPEC.key) is not None
    board.unclaim(SPEC.key, "t1")
    assert board.job(SPEC.key) is None


@pytest.mark.parametrize(
    ("state", "locked", "age", "expected"),
    [
        (None, False, 0, True),
        (READY, False, 0, True),  # ready, but the artifact was not found: gone, rebuild
        (FAILED, False, 0, False),
        (QUEUED, False, 0, False),
        (QUEUED, False, 31, True),
        (QUEUED, True, 31, False),
        (BUILDING, True, 0, False),
        (BUILDING, False, 0, True),
    ],
)
def test_claimable(state, locked, age, expected) -> None:
    job = None if state is None else Job("k", state, due=100.0)
    assert claimable(job, 100.0 + age, 30, locked=locked) is expected


def test_may_take() -> None:
    assert may_take(None, "a/1") and may_take("a/0", "a/1")
    assert not may_take("b/0", "a/1") and not may_take("ab/0", "a/1")


def test_request_counts_decay_and_survive_an_epoch_change(request) -> None:
    """Half-life 1 s: an epoch lasts 256 s. Counts halve each second; the ranking holds
    across the epoch boundary (the previous epoch's scores are scaled in)."""
    from tasks.board import decay as popularity

    life = Lifetimes(lease=1, grace=1, failure=1, job=60, artifact=1, half_life=1.0)
    boards: list[Usage] = [
        MemoryBoard(life),
        RedisBoard(request.getfixturevalue("redis_db").url, life),
    ]
    span = popularity.EPOCH_SPAN
    boundary = 7 * span + 0.0  # the start of epoch 7 (1 s half-lives)
    for board in boards:
        for _ in range(3):
            board.count_request("reg/a:1", boundary - 3)
        board.count_request("reg/b:1", boundary - 1)
        board.count_request("reg/c:1", boundary + 1)  # in the new epoch
        top = dict(board.popular(10, boundary + 1))
        assert list(top) == ["reg/c:1", "reg/b:1", "reg/a:1"]
        assert top["reg/a:1"] == pytest.approx(3 * 2**-4)
        assert top["reg/b:1"] == pytest.approx(2**-2)
        assert top["reg/c:1"] == pytest.approx(1.0)
        assert board.popular(1, boundary + 1) == [("reg/c:1", pytest.approx(1.0))]
        board.remember_tag("reg/a:1", "k1")
        assert board.tag_keys(["reg/a:1", "reg/x:1"]) == {"reg/a:1": "k1"}
