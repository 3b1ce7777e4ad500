"""The board in Redis: what every web and worker process of a deployment shares.

Keys, all under `squashd:`: `job:KEY` (a hash: state, progress, the spec), `lock:KEY`
(the build lock, a lease that the running build renews) and `artifact:KEY` (the
artifact's record, cached so that a cache hit costs no request to the store).
Decisions that must be atomic run inside WATCH/MULTI transactions.

For the scheduled work and the operators: `popular:EPOCH` (sorted set of tags by
decaying request count), `tags` (tag -> artifact key), `downloads` (sorted set of
artifact keys by last download), `digest:NAME@DIGEST` (the artifact a registry pull
of NAME finds that digest in), `index:NAME@DIGEST` (an index of squashed images handed
out), `active` (jobs queued or building), `failures`
(recent ones, a capped list) and `metrics` (a hash of counters).
"""

import json
from collections.abc import Callable
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

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

PREFIX = "squashd:"
ACTIVE, FAILURES, METRICS = f"{PREFIX}active", f"{PREFIX}failures", f"{PREFIX}metrics"
TAGS, DOWNLOADS = f"{PREFIX}tags", f"{PREFIX}downloads"


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

    def retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, self.errors)

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

    @staticmethod
    def _artifact_key(key: str) -> str:
        return f"{PREFIX}artifact:{key}"

    def _transaction(self, key: str, decide: Callable, *, with_job: bool = True) -> bool:
        """WATCH the lock (and, `with_job`, the job), let `decide(pipe, job, lock)` read
        and queue writes (or return False), and commit them only if nobody changed what
        was watched meanwhile. Lock operations leave the job out: progress updates to it
        would only make them retry."""
        job_key, lock_key = self._job_key(key), self._lock_key(key)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*((job_key, lock_key) if with_job else (lock_key,)))
                    job = self._read(pipe, key) if with_job else None
                    lock = pipe.get(lock_key)
                    pipe.multi()
                    if not decide(pipe, job, lock):
                        pipe.reset()
                        return False
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def claim(
        self, spec: ExportSpec, task_id: str, now: float, *, ready_missing: bool = False
    ) -> bool:
        key = spec.key

        def decide(pipe, job: Job | None, lock: str | None) -> bool:
            if not claim_allowed(
                job, now, self.life.grace, locked=lock is not None, ready_missing=ready_missing
            ):
                return False
            pipe.delete(self._job_key(key))
            pipe.hset(self._job_key(key), mapping=queued_job(job, spec, task_id, now).to_fields())
            pipe.expire(self._job_key(key), int(self.life.job))
            pipe.zadd(ACTIVE, {key: now})
            return True

        return self._transaction(key, decide)

    def unclaim(self, key: str, task_id: str) -> None:
        def decide(pipe, job: Job | None, lock: str | None) -> bool:
            if job is None or job.task_id != task_id or job.state != QUEUED:
                return False
            pipe.delete(self._job_key(key))
            pipe.zrem(ACTIVE, key)
            return True

        self._transaction(key, decide)

    def _update(self, key: str, ttl: float, pipe=None, **values: object) -> None:
        """Set fields of the job and its lifetime, in `pipe` if given (else at once)."""
        mapping = {k: "" if v is None else str(v) for k, v in values.items()}
        if pipe is None:
            with self.redis.pipeline(transaction=True) as own:
                self._update(key, ttl, own, **values)
                own.execute()
            return
        pipe.hset(self._job_key(key), mapping=mapping)
        pipe.expire(self._job_key(key), int(ttl))

    def started(self, spec: ExportSpec, task_id: str, total: int, now: float) -> None:
        key = spec.key
        fields = {**spec.to_dict(), "state": BUILDING, "task_id": task_id, "done": 0}
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self._job_key(key), "created", str(now))
            pipe.hincrby(self._job_key(key), "builds", 1)
            self._update(key, self.life.job, pipe, **fields, total=total, error="", updated=now)
            pipe.zadd(ACTIVE, {key: now})
            pipe.hincrbyfloat(METRICS, "builds_started", 1)
            pipe.execute()

    def progress(self, key: str, done: int, now: float) -> None:
        self.redis.hset(self._job_key(key), mapping={"done": str(done), "updated": str(now)})

    def requeue(self, key: str, task_id: str, error: str, due: float, now: float) -> None:
        fields = {"state": QUEUED, "task_id": task_id, "error": error, "due": due}
        self._update(key, self.life.job, **fields, updated=now)

    def finished(self, key: str, artifact: Artifact, now: float) -> None:
        fields = {"state": READY, "size": artifact.size, "sha256": artifact.sha256}
        self._update(key, self.life.job, **fields, error="", updated=now)
        self.redis.zrem(ACTIVE, key)
        self.cache(artifact)

    def failed(self, key: str, error: str, now: float) -> None:
        record = failure_record(key, self.job(key), error, now)
        with self.redis.pipeline(transaction=True) as pipe:
            self._update(key, self.life.failure, pipe, state=FAILED, error=error, updated=now)
            pipe.zrem(ACTIVE, key)
            pipe.lpush(FAILURES, json.dumps(record))
            pipe.ltrim(FAILURES, 0, RECENT_FAILURES - 1)
            pipe.hincrbyfloat(METRICS, "builds_failed", 1)
            pipe.execute()

    # -- the build lock

    def acquire(self, key: str, owner: str) -> bool:
        lease = int(self.life.lease * 1000)

        def decide(pipe, job: Job | None, lock: str | None) -> bool:
            if not may_take(lock, owner):
                return False
            pipe.set(self._lock_key(key), owner, px=lease)
            return True

        return self._transaction(key, decide, with_job=False)

    def renew(self, key: str, owner: str) -> bool:
        lease = int(self.life.lease * 1000)

        def decide(pipe, job: Job | None, lock: str | None) -> bool:
            if lock != owner:
                return False
            pipe.pexpire(self._lock_key(key), lease)
            return True

        return self._transaction(key, decide, with_job=False)

    def release(self, key: str, owner: str) -> None:
        def decide(pipe, job: Job | None, lock: str | None) -> bool:
            if lock != owner:
                return False
            pipe.delete(self._lock_key(key))
            return True

        self._transaction(key, decide, with_job=False)

    # -- cached artifact records

    def cached(self, key: str) -> Artifact | None:
        text = self.redis.get(self._artifact_key(key))
        return Artifact(**json.loads(text)) if text else None

    def cache(self, artifact: Artifact) -> None:
        record = json.dumps(artifact.__dict__)
        self.redis.set(self._artifact_key(artifact.key), record, ex=int(self.life.artifact))

    def forget(self, key: str) -> None:
        self.redis.delete(self._artifact_key(key))

    def locked(self, key: str) -> bool:
        return bool(self.redis.exists(self._lock_key(key)))

    # -- what registry pulls ask for by digest

    @staticmethod
    def _digest_key(name: str, digest: str) -> str:
        return f"{PREFIX}digest:{name}@{digest}"

    def remember_digests(self, name: str, digests: list[str], key: str) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.set(self._digest_key(name, digest), key, ex=int(self.life.job))
            pipe.execute()

    def digest_key(self, name: str, digest: str) -> str | None:
        return self.redis.get(self._digest_key(name, digest))

    def remember_index(self, name: str, digest: str, record: str) -> None:
        self.redis.set(f"{PREFIX}index:{name}@{digest}", record, ex=int(self.life.job))

    def remembered_index(self, name: str, digest: str) -> str | None:
        return self.redis.get(f"{PREFIX}index:{name}@{digest}")

    # -- popularity

    def _popular_key(self, epoch: int) -> str:
        return f"{PREFIX}popular:{epoch}"

    def count_request(self, tag: str, now: float, key: str | None = None, times: int = 1) -> None:
        half_life = self.life.half_life
        scores = self._popular_key(popularity.epoch(now, half_life))
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zincrby(scores, times * popularity.weight(now, half_life), tag)
            pipe.expire(scores, popularity.epoch_ttl(half_life))
            if key is not None:
                pipe.hset(TAGS, tag, key)
            pipe.execute()

    def remember_tag(self, tag: str, key: str) -> None:
        self.redis.hset(TAGS, tag, key)

    def popular(self, limit: int, now: float) -> list[tuple[str, float]]:
        half_life = self.life.half_life
        current = popularity.epoch(now, half_life)
        merged = f"{PREFIX}popular:merged:{current}"
        with self.redis.pipeline(transaction=True) as pipe:
            weights = {
                self._popular_key(current): 1.0,
                self._popular_key(current - 1): popularity.PREVIOUS_EPOCH_FACTOR,
            }
            pipe.zunionstore(merged, weights)
            pipe.zrevrange(merged, 0, limit - 1, withscores=True)
            pipe.delete(merged)
            _, top, _ = pipe.execute()
        return [(tag, popularity.decayed(score, now, half_life)) for tag, score in top]

    def tag_keys(self, tags: list[str]) -> dict[str, str]:
        if not tags:
            return {}
        return {t: k for t, k in zip(tags, self.redis.hmget(TAGS, tags), strict=True) if k}

    def trim_popular(self, now: float) -> None:
        scores = self._popular_key(popularity.epoch(now, self.life.half_life))
        self.redis.zremrangebyrank(scores, 0, -(popularity.MAX_TAGS + 1))
        kept = set(self.redis.zrange(scores, 0, -1))
        stale = [tag for tag in self.redis.hkeys(TAGS) if tag not in kept]
        if stale:
            self.redis.hdel(TAGS, *stale)

    # -- downloads, for the janitor

    def touch(self, key: str, now: float) -> None:
        self.redis.zadd(DOWNLOADS, {key: now})

    def downloads(self) -> dict[str, float]:
        return dict(self.redis.zrange(DOWNLOADS, 0, -1, withscores=True))

    def drop(self, key: str) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._job_key(key), self._artifact_key(key))
            pipe.zrem(DOWNLOADS, key)
            pipe.zrem(ACTIVE, key)
            pipe.execute()

    # -- what is going on

    def active(self) -> list[Job]:
        keys = self.redis.zrange(ACTIVE, 0, -1)
        with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(self._job_key(key))
            found = pipe.execute()
        jobs = [Job.from_fields(k, data) for k, data in zip(keys, found, strict=True) if data]
        gone = [k for k, data in zip(keys, found, strict=True) if not data]
        if gone:  # expired records
            self.redis.zrem(ACTIVE, *gone)
        return [job for job in jobs if job.active]

    def active_count(self) -> int:
        return int(self.redis.zcard(ACTIVE))

    def take_quota(self, who: str, now: float, window: float, limit: int) -> bool:
        key = f"{PREFIX}quota:{who}:{int(now // window)}"
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, int(window) + 1)
            count, _ = pipe.execute()
        if count > limit:
            self.redis.decr(key)
            return False
        return True

    def failures(self) -> list[dict]:
        return [json.loads(item) for item in self.redis.lrange(FAILURES, 0, -1)]

    def count(self, name: str, amount: float = 1) -> None:
        self.redis.hincrbyfloat(METRICS, name, amount)

    def observe_build(self, seconds: float, size: int) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            for name, amount in build_observation(seconds, size).items():
                pipe.hincrbyfloat(METRICS, name, amount)
            pipe.execute()

    def set_stored(self, count: int, size: int) -> None:
        self.redis.hset(METRICS, mapping={"artifacts": count, "artifact_bytes": size})

    def metrics(self) -> dict[str, float]:
        return {name: float(value) for name, value in self.redis.hgetall(METRICS).items()}
