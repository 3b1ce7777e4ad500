"""The board in Redis: what every web and worker process of a deployment shares.

Keys, all under `squashd:`: `job:KEY` (a hash: state, progress, the spec), `lock:KEY`
(the build lock, a lease that the running build renews) and `artifact:KEY` (the
artifact's record, cached so that a cache hit costs no request to the store).
Decisions that must be atomic run inside WATCH/MULTI transactions.
"""

import json
from collections.abc import Callable
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from storage.base import Artifact
from tasks.board import BUILDING, FAILED, QUEUED, READY, Job, Lifetimes, claimable, may_take
from tasks.spec import ExportSpec

PREFIX = "squashd:"


def connect(url: str) -> redis.Redis:
    """A client that fails fast when Redis is down (a request answers 503 at once) and
    reconnects by itself when it is back."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=10,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=15,
    )


class RedisBoard:
    #: What it raises when Redis cannot be reached (the service answers 503).
    errors = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)

    def __init__(self, url: str, lifetimes: Lifetimes) -> None:
        self.url = url
        self.redis = connect(url)
        self.life = lifetimes

    def describe(self) -> str:
        parts = urlsplit(self.url)
        return f"Redis at {parts.hostname}:{parts.port or 6379}"

    def ping(self) -> None:
        self.redis.ping()

    @staticmethod
    def _job_key(key: str) -> str:
        return f"{PREFIX}job:{key}"

    @staticmethod
    def _lock_key(key: str) -> str:
        return f"{PREFIX}lock:{key}"

    def _read(self, client, key: str) -> Job | None:
        data = client.hgetall(self._job_key(key))
        return Job.from_fields(key, data) if data else None

    def job(self, key: str) -> Job | None:
        return self._read(self.redis, key)

    def _transaction(self, key: str, decide: Callable) -> bool:
        """WATCH the job and its lock, let `decide(pipe, job, lock)` read and queue writes
        (or return False), and commit them only if nobody changed either meanwhile."""
        job_key, lock_key = self._job_key(key), self._lock_key(key)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(job_key, lock_key)
                    job, lock = self._read(pipe, key), pipe.get(lock_key)
                    pipe.multi()
                    if not decide(pipe, job, lock):
                        pipe.reset()
                        return False
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def claim(self, spec: ExportSpec, task_id: str, now: float) -> bool:
        key = spec.key

        def decide(pipe, job: Job | None, lock: str | None) -> bool:
            if not claimable(job, lock is not None, now, self.life.grace):
                return False
            builds = job.builds if job else 0
            fresh = Job(key, QUEUED, spec, task_id, builds=builds, created=now, updated=now)
            fresh.due = now
            pipe.delete(self._job_key(key))
            pipe.hset(self._job_key(key), mapping=fresh.to_fields())
            pipe.expire(self._job_key(key), int(self.life.job))
            return True

        return self._transaction(key, decide)

    def unclaim(self, key: str, task_id: str) -> None:
        def decide(pipe, job: Job | None, lock: str | None) -> bool:
            if job is None or job.task_id != task_id or job.state != QUEUED:
                return False
            pipe.delete(self._job_key(key))
            return True

        self._transaction(key, decide)

    def _update(self, key: str, ttl: float, **values: object) -> None:
        mapping = {k: "" if v is None else str(v) for k, v in values.items()}
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._job_key(key), mapping=mapping)
            pipe.expire(self._job_key(key), int(ttl))
            pipe.execute()

    def started(self, spec: ExportSpec, task_id: str, total: int, now: float) -> None:
        key = spec.key
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self._job_key(key), "created", str(now))
            pipe.hincrby(self._job_key(key), "builds", 1)
            pipe.execute()
        fields = {**spec.to_dict(), "state": BUILDING, "task_id": task_id, "done": 0}
        self._update(key, self.life.job, **fields, total=total, error="", updated=now)

    def progress(self, key: str, done: int, now: float) -> None:
        self.redis.hset(self._job_key(key), mapping={"done": str(done), "updated": str(now)})

    def requeue(self, key: str, task_id: str, error: str, due: float, now: float) -> None:
        fields = {"state": QUEUED, "task_id": task_id, "error": error, "due": due}
        self._update(key, self.life.job, **fields, updated=now)

    def finished(self, key: str, artifact: Artifact, now: float) -> None:
        fields = {"state": READY, "size": artifact.size, "sha256": artifact.sha256}
        self._update(key, self.life.job, **fields, error="", updated=now)
        self.cache(artifact)

    def failed(self, key: str, error: str, now: float) -> None:
        self._update(key, self.life.failure, state=FAILED, error=error, updated=now)

    # -- the build lock

    def acquire(self, key: str, owner: str) -> bool:
        lease = int(self.life.lease * 1000)

        def decide(pipe, job: Job | None, lock: str | None) -> bool:
            if not may_take(lock, owner):
                return False
            pipe.set(self._lock_key(key), owner, px=lease)
            return True

        return self._transaction(key, decide)

    def renew(self, key: str, owner: str) -> bool:
        lease = int(self.life.lease * 1000)

        def decide(pipe, job: Job | None, lock: str | None) -> bool:
            if lock != owner:
                return False
            pipe.pexpire(self._lock_key(key), lease)
            return True

        return self._transaction(key, decide)

    def release(self, key: str, owner: str) -> None:
        def decide(pipe, job: Job | None, lock: str | None) -> bool:
            if lock != owner:
                return False
            pipe.delete(self._lock_key(key))
            return True

        self._transaction(key, decide)

    # -- cached artifact records

    def cached(self, key: str) -> Artifact | None:
        text = self.redis.get(f"{PREFIX}artifact:{key}")
        return Artifact(**json.loads(text)) if text else None

    def cache(self, artifact: Artifact) -> None:
        record = json.dumps(artifact.__dict__)
        self.redis.set(f"{PREFIX}artifact:{artifact.key}", record, ex=int(self.life.artifact))

    def forget(self, key: str) -> None:
        self.redis.delete(f"{PREFIX}artifact:{key}")
