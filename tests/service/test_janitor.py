"""The janitor against real stores: moto's S3 server with the Redis board, and a local
directory with the memory board. Time is passed in (`now`), so nothing waits."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest

from storage.base import ArtifactStore
from storage.local import LocalStore
from storage.s3 import S3Store
from tasks.board import Board, Lifetimes
from tasks.board.memory_board import MemoryBoard
from tasks.board.redis_board import RedisBoard
from tasks.janitor import Policy, sweep

pytestmark = pytest.mark.integration

LIFE = Lifetimes(lease=30, grace=30, failure=60, job=3600, artifact=60)
DAY = 86400.0


@dataclass
class Place:
    store: ArtifactStore
    board: Board


@pytest.fixture(params=["s3+redis", "local+memory"])
def place(request, tmp_path) -> Place:
    if request.param == "local+memory":
        return Place(LocalStore(tmp_path / "artifacts"), MemoryBoard(LIFE))
    moto, redis = request.getfixturevalue("moto_s3"), request.getfixturevalue("redis_db")
    bucket = request.getfixturevalue("bucket")
    return Place(S3Store(bucket, "artifacts", moto.client()), RedisBoard(redis.url, LIFE))


def _store(place: Place, key: str, size: int) -> None:
    sink = place.store.create(key, "sha256:" + "0" * 64, "127.0.0.1:5000/ns/app")
    sink.write(os.urandom(size))
    sink.commit()


def _policy(**changes) -> Policy:
    values = {"ttl": 7 * DAY, "budget": 0, "in_use_for": 300, "stale_upload": 3600}
    return Policy(**{**values, **changes})


def _keys(place: Place) -> set[str]:
    return {entry.key for entry in place.store.entries()}


def test_ttl_evicts_what_nobody_downloaded(place) -> None:
    for key in ("cold", "warm", "new"):
        _store(place, key, 1000)
    t0 = time.time()
    place.board.touch("warm", t0 + 6 * DAY)  # downloaded a day before the sweep
    place.board.cache(place.store.stat("cold"))
    result = sweep(place.store, place.board, _policy(), t0 + 7 * DAY + 60)
    assert result.evicted == ["cold", "new"]  # the least recently used first
    assert _keys(place) == {"warm"}
    assert place.board.cached("cold") is None and "cold" not in place.board.downloads()
    assert (result.stored, result.stored_bytes) == (1, 1000)
    assert place.board.metrics()["artifacts"] == 1


def test_budget_evicts_least_recently_used_first(place) -> None:
    for key in ("a", "b", "c", "d"):
        _store(place, key, 10_000)
    t0 = time.time()
    for offset, key in enumerate(("c", "a", "d", "b")):  # least recently used: c
        place.board.touch(key, t0 + 1000 + offset)
    now = t0 + 5000  # long after the downloads: none of them still in use
    result = sweep(place.store, place.board, _policy(budget=25_000), now)
    assert result.evicted == ["c", "a"]
    assert _keys(place) == {"d", "b"}
    assert result.freed == 20_000 and result.stored_bytes == 20_000


def test_an_artifact_in_use_is_kept(place) -> None:
    for key in ("building", "handed-out", "idle"):
        _store(place, key, 10_000)
    t0 = time.time()
    now = t0 + 8 * DAY
    assert place.board.acquire("building", "task/1")  # a build of it holds the lock
    place.board.touch("handed-out", now - 10)  # its presigned URL is still valid
    result = sweep(place.store, place.board, _policy(budget=1), now)
    assert result.evicted == ["idle"]
    assert _keys(place) == {"building", "handed-out"}
    assert sorted(result.kept_in_use) == ["building", "handed-out"]


def test_abandoned_uploads_are_aborted_live_ones_kept(place) -> None:
    dead = place.store.create("dead", "sha256:" + "0" * 64)
    dead.write(os.urandom(1000))
    live = place.store.create("live", "sha256:" + "0" * 64)
    live.write(os.urandom(1000))
    assert place.board.acquire("live", "task/2")
    assert {u.key for u in place.store.uploads()} == {"dead", "live"}
    result = sweep(place.store, place.board, _policy(), time.time() + 3601)
    assert result.aborted == 1
    assert {u.key for u in place.store.uploads()} == {"live"}
    live.abort()


def test_a_fresh_upload_is_not_abandoned(tmp_path) -> None:
    """A local store knows when an upload was last written to (moto dates every upload
    2010, so only the lock protects a live one there: the test above)."""
    place = Place(LocalStore(tmp_path), MemoryBoard(LIFE))
    fresh = place.store.create("fresh", "sha256:" + "0" * 64)
    fresh.write(b"x" * 100)
    old = place.store.create("old", "sha256:" + "0" * 64)
    old.write(b"x" * 100)
    (upload,) = [u for u in place.store.uploads() if u.key == "old"]
    os.utime(upload.ident, (time.time() - 7200, time.time() - 7200))
    result = sweep(place.store, place.board, _policy(), time.time())
    assert result.aborted == 1 and [u.key for u in place.store.uploads()] == ["fresh"]
    fresh.abort()
