"""The board in this process's memory: the embedded default, where the web process runs
the builds itself. Same decisions as the Redis board (`tasks.board`), under one lock."""

import collections
import dataclasses
import threading
import time
from collections import defaultdict

from storage.base import Artifact
from tasks.board import decay as popularity
from tasks.board.jobs import (
    BUILDING,
    FAILED,
    QUEUED,
    READY,
    RECENT_FAILURES,
    Job,
    Lifetimes,
    build_observation,
    claim_allowed,
    failure_record,
    may_take,
    queued_job,
)
from tasks.spec import ExportSpec

MAX_DIGESTS = 1 << 16  # remembered pull digests; half are forgotten beyond


class MemoryBoard:
    errors: tuple[type[Exception], ...] = ()  # nothing to reach

    def __init__(self, lifetimes: Lifetimes) -> None:
        self.life = lifetimes
        self._mutex = threading.Lock()
        self._jobs: dict[str, tuple[Job, float]] = {}  # key -> (job, expires)
        self._locks: dict[str, tuple[str, float]] = {}  # key -> (owner, expires)
        self._artifacts: dict[str, tuple[Artifact, float]] = {}
        self._popular: dict[int, defaultdict[str, float]] = {}  # epoch -> tag scores
        self._tags: dict[str, str] = {}
        self._downloads: dict[str, float] = {}
        self._failures: collections.deque[dict] = collections.deque(maxlen=RECENT_FAILURES)
        self._metrics: defaultdict[str, float] = defaultdict(float)
        self._quotas: dict[tuple[str, int], int] = {}  # (caller, window number) -> builds
        self._digests: dict[tuple[str, str], tuple[str, float]] = {}  # (name, digest) -> key

    def retryable(self, exc: BaseException) -> bool:
        return False  # it never fails to be reached

    def describe(self) -> str:
        return "the in-process board"

    def ping(self) -> None:
        pass

    @staticmethod
    def _live(table: dict, key: object):
        entry = table.get(key)
        if entry is None or entry[1] <= time.monotonic():
            table.pop(key, None)
            return None
        return entry[0]

    def _put(self, job: Job, ttl: float) -> None:
        self._jobs[job.key] = (job, time.monotonic() + ttl)

    def job(self, key: str) -> Job | None:
        with self._mutex:
            job = self._live(self._jobs, key)
            return dataclasses.replace(job) if job else None

    def claim(
        self, spec: ExportSpec, task_id: str, now: float, *, ready_missing: bool = False
    ) -> bool:
        key = spec.key
        with self._mutex:
            job = self._live(self._jobs, key)
            locked = self._live(self._locks, key) is not None
            if not claim_allowed(
                job, now, self.life.grace, locked=locked, ready_missing=ready_missing
            ):
                return False
            self._put(queued_job(job, spec, task_id, now), self.life.job)
            return True

    def unclaim(self, key: str, task_id: str) -> None:
        with self._mutex:
            job = self._live(self._jobs, key)
            if job is not None and job.task_id == task_id and job.state == QUEUED:
                del self._jobs[key]

    def _change(
        self, key: str, ttl: float, spec: ExportSpec | None = None, **values: object
    ) -> None:
        with self._mutex:
            job = self._live(self._jobs, key) or Job(key, QUEUED, spec)
            for name, value in values.items():
                setattr(job, name, value)
            if spec is not None:
                job.spec = spec
            self._put(job, ttl)

    def started(self, spec: ExportSpec, task_id: str, total: int, now: float) -> None:
        with self._mutex:
            job = self._live(self._jobs, spec.key)
            builds = job.builds + 1 if job else 1
            created = job.created if job else now
            self._metrics["builds_started"] += 1
        self._change(
            spec.key,
            self.life.job,
            spec,
            state=BUILDING,
            task_id=task_id,
            done=0,
            total=total,
            error="",
            builds=builds,
            created=created,
            updated=now,
        )

    def progress(self, key: str, done: int, now: float) -> None:
        self._change(key, self.life.job, done=done, updated=now)

    def requeue(self, key: str, task_id: str, error: str, due: float, now: float) -> None:
        self._change(
            key, self.life.job, state=QUEUED, task_id=task_id, error=error, due=due, updated=now
        )

    def finished(self, key: str, artifact: Artifact, now: float) -> None:
        self._change(
            key,
            self.life.job,
            state=READY,
            size=artifact.size,
            sha256=artifact.sha256,
            error="",
            updated=now,
        )
        self.cache(artifact)

    def failed(self, key: str, error: str, now: float) -> None:
        self._change(key, self.life.failure, state=FAILED, error=error, updated=now)
        record = failure_record(key, self.job(key), error, now)
        with self._mutex:
            self._failures.appendleft(record)
            self._metrics["builds_failed"] += 1

    def acquire(self, key: str, owner: str) -> bool:
        with self._mutex:
            if not may_take(self._live(self._locks, key), owner):
                return False
            self._locks[key] = (owner, time.monotonic() + self.life.lease)
            return True

    def renew(self, key: str, owner: str) -> bool:
        with self._mutex:
            if self._live(self._locks, key) != owner:
                return False
            self._locks[key] = (owner, time.monotonic() + self.life.lease)
            return True

    def release(self, key: str, owner: str) -> None:
        with self._mutex:
            if self._live(self._locks, key) == owner:
                del self._locks[key]

    def cached(self, key: str) -> Artifact | None:
        with self._mutex:
            return self._live(self._artifacts, key)

    def cache(self, artifact: Artifact) -> None:
        with self._mutex:
            self._artifacts[artifact.key] = (artifact, time.monotonic() + self.life.artifact)

    def forget(self, key: str) -> None:
        with self._mutex:
            self._artifacts.pop(key, None)

    def locked(self, key: str) -> bool:
        with self._mutex:
            return self._live(self._locks, key) is not None

    # -- what registry pulls ask for by digest

    def remember_digests(self, name: str, digests: list[str], key: str) -> None:
        now = time.monotonic()
        expires = now + self.life.job
        with self._mutex:
            if len(self._digests) > MAX_DIGESTS:  # the oldest go first
                oldest = sorted(self._digests.items(), key=lambda item: item[1][1])
                self._digests = dict(oldest[len(oldest) // 2 :])
            for digest in digests:
                self._digests[(name, digest)] = (key, expires)

    def digest_key(self, name: str, digest: str) -> str | None:
        with self._mutex:
            return self._live(self._digests, (name, digest))

    def remember_index(self, name: str, digest: str, record: str) -> None:
        self.remember_digests(name, [f"index:{digest}"], record)

    def remembered_index(self, name: str, digest: str) -> str | None:
        return self.digest_key(name, f"index:{digest}")

    # -- popularity

    def count_request(self, tag: str, now: float, key: str | None = None, times: int = 1) -> None:
        half_life = self.life.half_life
        if key is not None:
            self.remember_tag(tag, key)
        with self._mutex:
            current = popularity.epoch(now, half_life)
            for old in [e for e in self._popular if e < current - 1]:
                del self._popular[old]
            scores = self._popular.setdefault(current, defaultdict(float))
            scores[tag] += times * popularity.weight(now, half_life)

    def remember_tag(self, tag: str, key: str) -> None:
        with self._mutex:
            self._tags[tag] = key

    def popular(self, limit: int, now: float) -> list[tuple[str, float]]:
        half_life = self.life.half_life
        current = popularity.epoch(now, half_life)
        with self._mutex:
            merged = defaultdict(float, self._popular.get(current, {}))
            for tag, score in self._popular.get(current - 1, {}).items():
                merged[tag] += score * popularity.PREVIOUS_EPOCH_FACTOR
        top = sorted(merged.items(), key=lambda item: (-item[1], item[0]))[:limit]
        return [(tag, popularity.decayed(score, now, half_life)) for tag, score in top]

    def tag_keys(self, tags: list[str]) -> dict[str, str]:
        with self._mutex:
            return {tag: self._tags[tag] for tag in tags if tag in self._tags}

    def trim_popular(self, now: float) -> None:
        kept = {tag for tag, _ in self.popular(popularity.MAX_TAGS, now)}
        with self._mutex:
            for scores in self._popular.values():
                for tag in [t for t in scores if t not in kept]:
                    del scores[tag]
            self._tags = {tag: key for tag, key in self._tags.items() if tag in kept}

    # -- downloads, for the janitor

    def touch(self, key: str, now: float) -> None:
        with self._mutex:
            self._downloads[key] = now

    def downloads(self) -> dict[str, float]:
        with self._mutex:
            return dict(self._downloads)

    def drop(self, key: str) -> None:
        with self._mutex:
            for table in (self._jobs, self._artifacts, self._downloads):
                table.pop(key, None)

    # -- what is going on

    def active(self) -> list[Job]:
        with self._mutex:
            keys = list(self._jobs)
        return [job for key in keys if (job := self.job(key)) is not None and job.active]

    def active_count(self) -> int:
        return len(self.active())

    def take_quota(self, who: str, now: float, window: float, limit: int) -> bool:
        key = (who, int(now // window))
        with self._mutex:
            self._quotas = {k: v for k, v in self._quotas.items() if k[1] == key[1]}
            if self._quotas.get(key, 0) >= limit:
                return False
            self._quotas[key] = self._quotas.get(key, 0) + 1
            return True

    def failures(self) -> list[dict]:
        with self._mutex:
            return [dict(failure) for failure in self._failures]

    def count(self, name: str, amount: float = 1) -> None:
        with self._mutex:
            self._metrics[name] += amount

    def observe_build(self, seconds: float, size: int) -> None:
        with self._mutex:
            for name, amount in build_observation(seconds, size).items():
                self._metrics[name] += amount

    def set_stored(self, count: int, size: int) -> None:
        with self._mutex:
            self._metrics["artifacts"] = count
            self._metrics["artifact_bytes"] = size

    def metrics(self) -> dict[str, float]:
        with self._mutex:
            return {name: float(value) for name, value in self._metrics.items()}
