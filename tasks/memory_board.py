"""The board in this process's memory: the embedded default, where the web process runs
the builds itself. Same decisions as the Redis board (`tasks.board`), under one lock."""

import dataclasses
import threading
import time

from storage.base import Artifact
from tasks.board import BUILDING, FAILED, QUEUED, READY, Job, Lifetimes, claimable, may_take
from tasks.spec import ExportSpec


class MemoryBoard:
    errors: tuple[type[Exception], ...] = ()  # nothing to reach

    def __init__(self, lifetimes: Lifetimes) -> None:
        self.life = lifetimes
        self._mutex = threading.Lock()
        self._jobs: dict[str, tuple[Job, float]] = {}  # key -> (job, expires)
        self._locks: dict[str, tuple[str, float]] = {}  # key -> (owner, expires)
        self._artifacts: dict[str, tuple[Artifact, float]] = {}

    def describe(self) -> str:
        return "the in-process board"

    def ping(self) -> None:
        pass

    @staticmethod
    def _live(table: dict, key: str):
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

    def claim(self, spec: ExportSpec, task_id: str, now: float) -> bool:
        key = spec.key
        with self._mutex:
            job = self._live(self._jobs, key)
            locked = self._live(self._locks, key) is not None
            if not claimable(job, locked, now, self.life.grace):
                return False
            builds = job.builds if job else 0
            fresh = Job(key, QUEUED, spec, task_id, builds=builds, created=now, updated=now)
            fresh.due = now
            self._put(fresh, self.life.job)
            return True

    def unclaim(self, key: str, task_id: str) -> None:
        with self._mutex:
            job = self._live(self._jobs, key)
            if job is not None and job.task_id == task_id and job.state == QUEUED:
                del self._jobs[key]

    def _change(self, key: str, ttl: float, spec: ExportSpec | None = None, **values) -> None:
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
        values = {"state": QUEUED, "task_id": task_id, "error": error, "due": due}
        self._change(key, self.life.job, **values, updated=now)

    def finished(self, key: str, artifact: Artifact, now: float) -> None:
        values = {"state": READY, "size": artifact.size, "sha256": artifact.sha256}
        self._change(key, self.life.job, **values, error="", updated=now)
        self.cache(artifact)

    def failed(self, key: str, error: str, now: float) -> None:
        self._change(key, self.life.failure, state=FAILED, error=error, updated=now)

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
