"""The shared board of builds: job states, build locks, cached artifact records.

Two implementations of one interface: Redis (`tasks.redis_board`) when there is a
broker, memory (`tasks.memory_board`) in the embedded default. Both take their
decisions from the functions here, so they cannot drift apart.

It also keeps what the scheduled work and the operators need: decaying request counts
per tag (`tasks.popularity`), when each artifact was last handed out (the janitor's
LRU), the jobs in progress, recent failures and the build counters behind /metrics.

A job is `queued` (claimed, its message on the way or waiting for a retry), `building`
(a worker holds the build lock, renewing its lease), `ready` or `failed`. A job whose
build died (the lock's lease ran out while it said `building`), or that stayed queued
past a grace period, may be claimed again: that is how a killed worker's build is redone.
"""

from dataclasses import dataclass, fields
from typing import Protocol

from storage.base import Artifact
from tasks.spec import ExportSpec

QUEUED, BUILDING, READY, FAILED = "queued", "building", "ready", "failed"
#: Upper bounds (seconds) of the build-time histogram's buckets.
BUILD_SECONDS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
RECENT_FAILURES = 50  # failures kept for the status page


@dataclass
class Job:
    key: str
    state: str
    spec: ExportSpec | None = None
    task_id: str = ""
    done: int = 0  # stored bytes of the source read so far
    total: int = 0  # stored bytes of the source
    size: int | None = None  # of the archive, once ready
    sha256: str | None = None
    error: str = ""  # why it failed, or why it is being retried
    builds: int = 0  # builds started for this key (retries and redos count)
    created: float = 0.0
    updated: float = 0.0
    due: float = 0.0  # queued: when it is expected to start (a retry waits)

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, BUILDING)

    def to_fields(self) -> dict[str, str]:
        """The job as flat strings (a Redis hash)."""
        out = {f.name: "" if (v := getattr(self, f.name)) is None else str(v) for f in _SCALARS}
        if self.spec is not None:
            out.update(self.spec.to_dict())
        return out

    @classmethod
    def from_fields(cls, key: str, data: dict[str, str]) -> "Job":
        def number(name: str, kind: type) -> float:
            return kind(float(data.get(name) or 0))

        try:
            spec = ExportSpec.from_dict(data)
        except KeyError:
            spec = None
        return cls(
            key=key,
            state=data.get("state", ""),
            spec=spec,
            task_id=data.get("task_id", ""),
            done=int(number("done", int)),
            total=int(number("total", int)),
            size=int(data["size"]) if data.get("size") else None,
            sha256=data.get("sha256") or None,
            error=data.get("error", ""),
            builds=int(number("builds", int)),
            created=number("created", float),
            updated=number("updated", float),
            due=number("due", float),
        )


_SCALARS = [f for f in fields(Job) if f.name not in ("key", "spec")]


def claim_allowed(
    job: Job | None, locked: bool, now: float, grace: float, ready_missing: bool
) -> bool:
    """`claimable`, except that a ready job is left alone unless seen without its artifact."""
    if job is not None and job.state == READY and not ready_missing:
        return False
    return claimable(job, locked, now, grace)


def claimable(job: Job | None, locked: bool, now: float, grace: float) -> bool:
    """May a new build of this job be enqueued? (It would be a duplicate otherwise.)"""
    if job is None or job.state == READY:  # ready, yet the artifact was not found: gone
        return True
    if job.state == FAILED:  # reported until its record expires
        return False
    if locked:  # a build is running and renewing its lease
        return False
    if job.state == QUEUED:
        return now >= job.due + grace
    return True  # building, but nobody holds the lock: the build died


def may_take(current: str | None, owner: str) -> bool:
    """May `owner` (`TASK_ID/NONCE`) take a build lock held by `current`?

    Free, or held by an earlier run of the same Celery task: a task id runs once at a
    time, so that run is dead (its worker was lost and the message redelivered)."""
    return current is None or current.rpartition("/")[0] == owner.rpartition("/")[0]


class Board(Protocol):
    errors: tuple[type[Exception], ...]  # raised when the board cannot be reached

    def describe(self) -> str: ...

    def ping(self) -> None:
        """Raise if the board cannot be reached."""
        ...

    def job(self, key: str) -> Job | None: ...

    def claim(
        self, spec: ExportSpec, task_id: str, now: float, ready_missing: bool = False
    ) -> bool:
        """Record a new queued job for `spec` unless one is alive (see `claimable`). A
        ready job is claimed again only with `ready_missing`: the caller saw it ready and
        then found no artifact (without it, a build that finished a moment ago)."""
        ...

    def unclaim(self, key: str, task_id: str) -> None:
        """Forget a claim whose message could not be sent."""
        ...

    def started(self, spec: ExportSpec, task_id: str, total: int, now: float) -> None: ...

    def progress(self, key: str, done: int, now: float) -> None: ...

    def requeue(self, key: str, task_id: str, error: str, due: float, now: float) -> None: ...

    def finished(self, key: str, artifact: Artifact, now: float) -> None:
        """Ready; the artifact's record is cached too."""
        ...

    def failed(self, key: str, error: str, now: float) -> None: ...

    def acquire(self, key: str, owner: str) -> bool:
        """Take the build lock of `key` for one lease (see `may_take`)."""
        ...

    def renew(self, key: str, owner: str) -> bool:
        """Extend the lease; False if the lock is no longer ours."""
        ...

    def release(self, key: str, owner: str) -> None: ...

    def cached(self, key: str) -> Artifact | None: ...

    def cache(self, artifact: Artifact) -> None: ...

    def forget(self, key: str) -> None:
        """Drop the cached record (the artifact was deleted)."""
        ...

    def locked(self, key: str) -> bool:
        """Is a build of `key` running (holding its lease)?"""
        ...

    # -- what the scheduled work and the operators need

    def count_request(self, tag: str, now: float, key: str | None = None) -> None:
        """A request for `tag` (`registry/name:tag`); `key`: the artifact it resolved to
        with the default options, remembered as `remember_tag` does (in the same trip)."""
        ...

    def remember_tag(self, tag: str, key: str) -> None:
        """The artifact `tag` resolved to with the default options (the status page)."""
        ...

    def popular(self, limit: int, now: float) -> list[tuple[str, float]]:
        """The most requested tags with their decayed counts, most first."""
        ...

    def tag_keys(self, tags: list[str]) -> dict[str, str]:
        """The artifact key each tag last resolved to (default options)."""
        ...

    def trim_popular(self, now: float) -> None:
        """Forget the least requested tags beyond popularity.MAX_TAGS."""
        ...

    def touch(self, key: str, now: float) -> None:
        """The artifact was just handed out (a redirect or the file)."""
        ...

    def downloads(self) -> dict[str, float]:
        """When each artifact was last handed out."""
        ...

    def drop(self, key: str) -> None:
        """The artifact was evicted: forget its job, cached record and downloads."""
        ...

    def active(self) -> list[Job]:
        """Jobs queued or building."""
        ...

    def active_count(self) -> int:
        """How many builds are queued or running (the cap on queued builds)."""
        ...

    def take_quota(self, who: str, now: float, window: float, limit: int) -> bool:
        """Count a build started by `who` in this `window`; False (and not counted) if
        `limit` builds were started in it already."""
        ...

    def failures(self) -> list[dict]:
        """Recent failures, newest first: key, image, error, time."""
        ...

    def count(self, name: str, amount: float = 1) -> None:
        """Add to a counter behind /metrics (builds_started, builds_failed, ...)."""
        ...

    def observe_build(self, seconds: float, size: int) -> None:
        """A build succeeded in `seconds`, writing `size` bytes."""
        ...

    def set_stored(self, count: int, size: int) -> None:
        """What the store holds, as the janitor last counted it."""
        ...

    def metrics(self) -> dict[str, float]:
        """Every counter and gauge by name."""
        ...


@dataclass(frozen=True)
class Lifetimes:
    """How long the board keeps what (seconds), from the settings."""

    lease: float
    grace: float  # a queued job's, before it may be claimed again
    failure: float  # a failed job's record
    job: float  # any other job record
    artifact: float  # a cached artifact record
    half_life: float = 86400.0  # of a request's weight in the popularity counts


def queued_job(previous: Job | None, spec: ExportSpec, task_id: str, now: float) -> Job:
    """The record a successful claim writes: queued now, the count of builds kept."""
    builds = previous.builds if previous else 0
    return Job(spec.key, QUEUED, spec, task_id, builds=builds, created=now, updated=now, due=now)


def failure_record(key: str, job: Job | None, error: str, now: float) -> dict:
    """A failure as the status page lists it."""
    image = job.spec.image if job and job.spec else ""
    return {"key": key, "image": image, "error": error, "time": now}


def build_observation(seconds: float, size: int) -> dict[str, float]:
    """The counters one successful build adds to (histogram buckets are cumulative), the
    artifact it stored included."""
    added = {
        "builds_succeeded": 1,
        "build_seconds_sum": seconds,
        "build_bytes_sum": size,
        "artifacts": 1,
        "artifact_bytes": size,
    }
    for bound in (*BUILD_SECONDS_BUCKETS, "+Inf"):
        if bound == "+Inf" or seconds <= bound:
            added[f"build_seconds_bucket:{bound}"] = 1
    return added
