"""Jobs as the board records them, and the decisions both backends take from here
(so they cannot drift apart): when a build may be claimed, who may take a build lock.

A job is `queued` (claimed, its message on the way or waiting for a retry), `building`
(a worker holds the build lock, renewing its lease), `ready` or `failed`. A job whose
build died (the lock's lease ran out while it said `building`), or that stayed queued
past a grace period, may be claimed again: that is how a killed worker's build is redone.
"""

from dataclasses import dataclass, fields

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
    job: Job | None, now: float, grace: float, *, locked: bool, ready_missing: bool
) -> bool:
    """`claimable`, except that a ready job is left alone unless seen without its artifact."""
    if job is not None and job.state == READY and not ready_missing:
        return False
    return claimable(job, now, grace, locked=locked)


def claimable(job: Job | None, now: float, grace: float, *, locked: bool) -> bool:
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
    for bound in BUILD_SECONDS_BUCKETS:
        if seconds <= bound:
            added[f"build_seconds_bucket:{bound}"] = 1
    added["build_seconds_bucket:+Inf"] = 1
    return added
