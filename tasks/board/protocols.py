"""What the board offers, cut to what each consumer needs.

The board is the service's shared blackboard of builds, in Redis (`redis_board`) or, in
the embedded default, in memory (`memory_board`); one class implements all of these, so
writes that belong together stay one round trip. Consumers are typed against the part
they use: the build against `Jobs`, `BuildLocks` and `Counters`, the janitor against
`Usage` and `BuildLocks`, `/metrics` against `Counters`, the registry front against
`PulledDigests`, the service against `Board`.
"""

from typing import Protocol

from storage.base import Artifact
from tasks.board.jobs import Job
from tasks.spec import ExportSpec


class Reachable(Protocol):
    @property
    def errors(self) -> tuple[type[Exception], ...]:
        """What the board raises when it cannot be reached (the service answers 503)."""
        ...

    def retryable(self, exc: BaseException) -> bool:
        """Is `exc` a failure of the board that may pass (a build tried again later)?"""
        ...

    def describe(self) -> str: ...

    def ping(self) -> None:
        """Raise if the board cannot be reached."""
        ...


class Jobs(Reachable, Protocol):
    """Job states: claimed (queued), started, progressing, finished or failed."""

    def job(self, key: str) -> Job | None: ...

    def claim(
        self, spec: ExportSpec, task_id: str, now: float, *, ready_missing: bool = False
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


class BuildLocks(Reachable, Protocol):
    """The build lock of an artifact key, held for a lease and renewed."""

    def acquire(self, key: str, owner: str) -> bool:
        """Take the build lock of `key` for one lease (see `may_take`)."""
        ...

    def renew(self, key: str, owner: str) -> bool:
        """Extend the lease; False if the lock is no longer ours."""
        ...

    def release(self, key: str, owner: str) -> None: ...

    def locked(self, key: str) -> bool:
        """Is a build of `key` running (holding its lease)?"""
        ...


class ArtifactRecords(Reachable, Protocol):
    """Cached records of finished artifacts (a cache hit costs no store request)."""

    def cached(self, key: str) -> Artifact | None: ...

    def cache(self, artifact: Artifact) -> None: ...

    def forget(self, key: str) -> None:
        """Drop the cached record (the artifact was deleted)."""
        ...


class PulledDigests(Reachable, Protocol):
    """Which artifact a digest of a squashed image (its manifests, config, layers) comes
    from, per repository: a registry pull asks for them by digest alone."""

    def remember_digests(self, name: str, digests: list[str], key: str) -> None:
        """`digests`, asked for under repository `name` (`host/ns/repo`), are artifact
        `key`'s; remembered for the job lifetime, renewed each time."""
        ...

    def digest_key(self, name: str, digest: str) -> str | None:
        """The artifact whose manifest, config or layer `digest` is, under `name`."""
        ...

    def remember_index(self, name: str, digest: str, record: str) -> None:
        """An index of squashed images handed out under `name` (it is no artifact's):
        `record` is what `remembered_index` gives back, for the job lifetime."""
        ...

    def remembered_index(self, name: str, digest: str) -> str | None: ...


class Usage(Reachable, Protocol):
    """What the scheduled work needs: decaying request counts per tag, downloads."""

    def count_request(self, tag: str, now: float, key: str | None = None, times: int = 1) -> None:
        """`times` requests for `tag` (`registry/name:tag`); `key`: the artifact it
        resolved to with the default options, remembered as `remember_tag` does (in the
        same trip)."""
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


class Counters(Reachable, Protocol):
    """The counters and gauges behind /metrics."""

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


class Board(Jobs, BuildLocks, ArtifactRecords, PulledDigests, Usage, Counters, Protocol):
    """All of it: what the service holds."""
