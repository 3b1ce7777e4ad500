"""The export service as the web endpoint (and the tasks) see it: one per process.

It resolves what a caller asks for (checking with the registry that the caller may
read it), finds finished artifacts (cached record, then the store), and starts or
joins builds; the board makes "start" happen once however many callers ask.
"""

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from service.access import Access, Caller
from service.usage import BatchedUsage
from storage.base import Artifact, Gone, Location
from tasks.asked import ask, has_default_options
from tasks.board import FAILED, READY, Board, Job
from tasks.dispatch import Dispatcher
from tasks.enqueue import Admission, ensure_queued, resend_if_dead
from tasks.errors import TooMany
from tasks.expiring import ExpiringCache
from tasks.parts import Parts, process_parts
from tasks.spec import ExportSpec

log = logging.getLogger("squashd.service")
RETRY_LATER = 30  # seconds a client turned away for a full queue is asked to wait
MAX_RECENT = 4096  # artifacts remembered in the process for requests answered from memory
RECENT_SECONDS = 5.0  # how long: an artifact is evicted cold, not while it is asked for
T = TypeVar("T")


@dataclass
class Outcome:
    """Where a request stands: a finished artifact (and where to fetch it, when asked
    for), or the job building it."""

    artifact: Artifact | None
    job: Job | None
    hit: bool = False  # the artifact was there at the first look
    location: Location | None = None


class Service:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        settings = self.settings = parts.settings
        self.board: Board = parts.board
        self.store = parts.store
        self.dispatcher: Dispatcher = parts.dispatcher
        self.plain_http_registry = parts.plain_http_registry
        self.access = Access(parts.resolver, settings.resolve_cache_seconds)
        self.usage = BatchedUsage(self.board, settings.usage_flush_seconds)
        # artifacts found moments ago: no board round trip for a popular one
        self._recent: ExpiringCache[str, Artifact] = ExpiringCache(
            min(RECENT_SECONDS, settings.artifact_cache_seconds), MAX_RECENT
        )

    def close(self) -> None:
        """Write the counts still gathered; close the registry sessions."""
        self.usage.close()
        self.parts.close()

    # -- what is asked for

    def resolved(
        self,
        image: str,
        caller: Caller,
        *,
        platform: str | None = None,
        tag: str | None = None,
        compression: str | None = None,
        keep_base: int = 0,
    ) -> tuple[ExportSpec, str]:
        """The export of `image` (`[HOST/]NAME[:TAG|@DIGEST]`) the caller asks for, its
        tag resolved to a digest with the caller's credentials (access is checked here),
        and the media type it resolved to (an index, or one image)."""
        asked = ask(
            image, self.settings, platform=platform, tag=tag, compression=compression,
            keep_base=keep_base,
        )  # fmt: skip
        digest, kind = self.access.resolve(asked.ref, caller)
        return asked.spec(digest), kind

    def quick(
        self,
        image: str,
        caller: Caller,
        method: str | None,
        *,
        platform: str | None = None,
        compression: str | None = None,
        keep_base: int = 0,
    ) -> tuple[ExportSpec, Outcome] | None:
        """A request answered from this process's memory alone: the caller's remembered
        resolution and an artifact seen moments ago (counted, and handed out for
        `method`, if given); None when the registry or the board must be asked (`resolved`,
        `request`)."""
        asked = ask(
            image, self.settings, platform=platform, compression=compression,
            keep_base=keep_base,
        )  # fmt: skip
        known = self.access.remembered(asked.ref, caller)
        if known is None:
            return None
        spec = asked.spec(known[0])
        artifact = self._recent.get(spec.key)
        if artifact is None:
            return None
        self.count(spec)
        return spec, self._found(spec, artifact, None, method, hit=True)

    def check(self, name: str, digest: str, caller: Caller) -> None:
        """May the caller read `name@digest`? (Before anything about it is handed out.)"""
        self.access.check(name, digest, caller)

    # -- artifacts and builds

    def lookup(self, key: str) -> Artifact | None:
        """The finished artifact of `key`: found moments ago, else its cached record,
        else the store's."""
        recent = self._recent.get(key)
        if recent is not None:
            return recent
        artifact = self.parts.find_artifact(key)
        return self._seen(artifact) if artifact is not None else None

    def gone(self, key: str) -> None:
        """The archive of `key` was found missing from the store although its record
        said it was there: forget the record, so the next request builds it again."""
        log.warning("artifact %s is gone from the store; it will be built again", key)
        self._recent.pop(key)
        try:
            self.board.forget(key)
        except Exception as exc:  # its record expires soon anyway
            log.warning("artifact cache unavailable: %s", exc)

    def _seen(self, artifact: Artifact) -> Artifact:
        """Remember a found artifact in this process for `quick` (a few seconds)."""
        self._recent.put(artifact.key, artifact)
        return artifact

    def count(self, spec: ExportSpec) -> None:
        """Count a request for a tag (the pre-squash's popularity); best effort."""
        if ":" in spec.reference:
            return  # by digest: nothing that could move, nothing to pre-squash
        tag = f"{spec.name}:{spec.reference}"
        self.usage.count_request(
            tag, spec.key if has_default_options(spec, self.settings) else None
        )

    def hand_out(self, artifact: Artifact, method: str, filename: str) -> Location:
        """Where the caller downloads `artifact`; a GET counts as a download for the
        janitor, which evicts the least recently used. Gone, and forgotten, if it is a
        local file no longer there (a presigned URL is not checked: that would cost a
        request)."""
        if method == "GET":
            self.usage.touch(artifact.key)
        location = self.store.locate(artifact.key, method, filename)
        if location.path is not None and not location.path.is_file():  # removed by hand
            self.gone(artifact.key)
            raise Gone(artifact.key, self.store.describe())
        return location

    def request(
        self,
        spec: ExportSpec,
        start: bool = True,
        method: str | None = None,
        caller: Caller | None = None,
        count: bool = True,
    ) -> Outcome:
        """The artifact if it is there (handed out for `method`, if given); else its
        build, started (or joined) if `start`. A request counts for its tag (unless
        `count` is false: the caller counted it, one of several one pull makes)."""
        if count:
            self.count(spec)
        artifact = self.lookup(spec.key)
        if artifact is not None:
            return self._found(spec, artifact, None, method, hit=True)
        if not start:
            return Outcome(None, self.on_board(self.board.job, spec.key))
        return self.poll(spec, method, caller)

    def poll(
        self, spec: ExportSpec, method: str | None = None, caller: Caller | None = None
    ) -> Outcome:
        """Where a started build stands; a build that died is started again."""
        job = self.on_board(self.board.job, spec.key)
        if job is not None and job.state == FAILED:
            return Outcome(None, job)
        if job is not None and job.state == READY:
            artifact = self.lookup(spec.key)
            if artifact is not None:
                return self._found(spec, artifact, job, method)
            return Outcome(None, self._ensure(spec, True, caller))
        job = self._ensure(spec, False, caller)
        if job.state == READY:  # it finished between the two looks: hand it out
            return self.poll(spec, method, caller)
        return Outcome(None, job)

    def _found(
        self,
        spec: ExportSpec,
        artifact: Artifact,
        job: Job | None,
        method: str | None,
        hit: bool = False,
    ) -> Outcome:
        location = self.hand_out(artifact, method, spec.filename) if method else None
        return Outcome(artifact, job, hit, location)

    def job(self, key: str) -> Job | None:
        return self.on_board(self.board.job, key)

    def _admission(self, caller: Caller | None) -> Admission | None:
        """What a new build this caller starts must pass: the quotas."""
        if caller is None:
            return None
        return functools.partial(self._admit, caller)

    def _admit(self, caller: Caller, now: float) -> None:
        """Quotas of a new build: 429 when too many are queued, or the caller started
        too many in its window."""
        settings = self.settings
        if settings.max_queued and self.on_board(self.board.active_count) >= settings.max_queued:
            raise TooMany(
                f"{settings.max_queued} builds are queued or running; try again later",
                RETRY_LATER,
            )
        if settings.caller_builds and not self.on_board(
            self.board.take_quota, caller.quota_key, now, settings.caller_window,
            settings.caller_builds,
        ):  # fmt: skip
            window = settings.caller_window
            raise TooMany(
                f"this caller started {settings.caller_builds} builds in the last "
                f"{window:g} s; try again later",
                int(window - now % window) + 1,
            )

    def revive(self, job: Job | None) -> Job | None:
        """A build whose lease ran out (its worker died) or whose message was lost is
        sent again; any look at an export does this, and so does the beat's sweep."""
        return resend_if_dead(self.parts, job)

    def _ensure(
        self, spec: ExportSpec, ready_missing: bool = False, caller: Caller | None = None
    ) -> Job:
        admit = self._admission(caller)
        return ensure_queued(self.parts, spec, ready_missing=ready_missing, admit=admit)

    # -- what the operators see (the status page, /metrics)

    @property
    def state_errors(self) -> tuple[type[Exception], ...]:
        """What reading the board raises when Redis is unreachable."""
        return self.board.errors

    def describe_store(self) -> str:
        return self.store.describe()

    def counters(self) -> dict[str, float]:
        return self.board.metrics()

    def active_jobs(self, revive: bool = False) -> list[Job]:
        """Exports queued or building, oldest first; with `revive`, a look that sends
        dead builds again (the status page's)."""
        jobs = self.board.active()
        if revive:
            jobs = [job for j in jobs if (job := self.revive(j)) is not None and job.active]
        return sorted(jobs, key=lambda job: job.created)

    def failures(self) -> list[dict[str, Any]]:
        return self.board.failures()

    def popular_tags(self, now: float) -> list[tuple[str, float, str | None]]:
        """The most requested tags: (tag, decayed count, artifact key of its default)."""
        top = self.board.popular(self.settings.presquash_top, now)
        keys = self.board.tag_keys([tag for tag, _ in top])
        return [(tag, count, keys.get(tag)) for tag, count in top]

    def queue_depths(self) -> dict[str, int]:
        return self.dispatcher.depths()

    # -- health

    def readiness(self) -> dict[str, str]:
        """What each part this process needs answers: "ok" or what went wrong."""
        checks = {
            "board": self.board.ping,
            "store": self.store.ping,
            "broker": self.dispatcher.ping,
        }
        report = {}
        for name, check in checks.items():
            try:
                check()
                report[name] = "ok"
            except Exception as exc:
                report[name] = f"{type(exc).__name__}: {exc}"
        return report

    # -- errors of the parts, as the caller should hear them

    def on_board(self, call: Callable[..., T], *args: object) -> T:
        return self.parts.on_board(call, *args)

    def on_store(self, call: Callable[..., T], *args: object) -> T:
        return self.parts.on_store(call, *args)


@functools.cache
def service() -> Service:
    """This process's service, on this process's parts."""
    return Service(process_parts())
