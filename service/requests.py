"""The request path: what /c1, /v1/exports and the registry front call.

An image asked for is resolved with the caller's credentials (the registry checks the
caller's access), its finished artifact found (seen moments ago in this process, its
cached record, the store) or its build started or joined, and a finished artifact handed
out; the board makes "start" happen once however many callers ask.
"""

import functools
import logging
from dataclasses import KW_ONLY, dataclass

from service.access import Access, Caller
from service.usage import BatchedUsage
from storage.base import Artifact, Gone, Location
from tasks.asked import ask, has_default_options
from tasks.board import FAILED, READY, Job
from tasks.enqueue import Admission, ensure_queued, resend_if_dead
from tasks.errors import TooMany
from tasks.expiring import ExpiringCache
from tasks.parts import Parts
from tasks.spec import ExportSpec

log = logging.getLogger("squashd.service")
RETRY_LATER = 30  # seconds a client turned away for a full queue is asked to wait
MAX_RECENT = 4096  # artifacts remembered in the process for requests answered from memory
RECENT_SECONDS = 5.0  # how long: an artifact is evicted cold, not while it is asked for


@dataclass
class Outcome:
    """Where a request stands: a finished artifact (and where to fetch it, when asked
    for), or the job building it."""

    artifact: Artifact | None
    job: Job | None
    _: KW_ONLY
    hit: bool = False  # the artifact was there at the first look
    location: Location | None = None


class Requests:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        settings = self.settings = parts.settings
        self.access = Access(parts.resolver, settings.resolve_cache_seconds)
        self.usage = BatchedUsage(parts.board, settings.usage_flush_seconds)
        # artifacts found moments ago: no board round trip for a popular one
        self._recent: ExpiringCache[str, Artifact] = ExpiringCache(
            min(RECENT_SECONDS, settings.artifact_cache_seconds), MAX_RECENT
        )

    def close(self) -> None:
        """Write the counts still gathered."""
        self.usage.close()

    # -- what is asked for

    def resolve_export(
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

    def answer_from_memory(
        self,
        image: str,
        caller: Caller,
        *,
        hand_out_for: str | None,
        platform: str | None = None,
        compression: str | None = None,
        keep_base: int = 0,
    ) -> tuple[ExportSpec, Outcome] | None:
        """A request answered from this process's memory alone: the caller's remembered
        resolution and an artifact seen moments ago (counted, and handed out for the
        method `hand_out_for`, if given); None when the registry or the board must be
        asked (`resolve_export`, `find_or_start`)."""
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
        self.count_request(spec)
        return spec, self._found(spec, artifact, None, hand_out_for, hit=True)

    def check_access(self, name: str, digest: str, caller: Caller) -> None:
        """May the caller read `name@digest`? (Before anything about it is handed out.)"""
        self.access.check(name, digest, caller)

    def count_request(self, spec: ExportSpec) -> None:
        """Count a request for a tag (the pre-squash's popularity); best effort."""
        if ":" in spec.reference:
            return  # by digest: nothing that could move, nothing to pre-squash
        tag = f"{spec.name}:{spec.reference}"
        default = has_default_options(spec, self.settings)
        self.usage.count_request(tag, spec.key if default else None)

    def count_download(self, key: str) -> None:
        """Count a download of the artifact `key` (the janitor keeps what is pulled)."""
        self.usage.touch(key)

    # -- artifacts and builds

    def find_artifact(self, key: str) -> Artifact | None:
        """The finished artifact of `key`: found moments ago, else its cached record,
        else the store's."""
        recent = self._recent.get(key)
        if recent is not None:
            return recent
        artifact = self.parts.find_artifact(key)
        if artifact is not None:
            self._recent.put(artifact.key, artifact)  # for `answer_from_memory`, a while
        return artifact

    def statement(self, artifact: Artifact) -> bytes | None:
        """The provenance statement stored beside `artifact` (None: built before
        statements were kept)."""
        return self.parts.on_store(self.parts.store.read_statement, artifact.key)

    def forget_gone(self, key: str) -> None:
        """The archive of `key` was found missing from the store although its record
        said it was there: forget the record, so the next request builds it again."""
        log.warning("artifact %s is gone from the store; it will be built again", key)
        self._recent.pop(key)
        try:
            self.parts.board.forget(key)
        except Exception as exc:  # its record expires soon anyway
            log.warning("artifact cache unavailable: %s", exc)

    def hand_out(self, artifact: Artifact, method: str, filename: str) -> Location:
        """Where the caller downloads `artifact`; a GET counts as a download for the
        janitor, which evicts the least recently used. Gone, and forgotten, if it is a
        local file no longer there (a presigned URL is not checked: that would cost a
        request)."""
        if method == "GET":
            self.count_download(artifact.key)
        store = self.parts.store
        location = store.locate(artifact.key, method, filename)
        if location.path is not None and not location.path.is_file():  # removed by hand
            self.forget_gone(artifact.key)
            raise Gone(artifact.key, store.describe())
        return location

    def find_or_start(
        self,
        spec: ExportSpec,
        *,
        start: bool = True,
        hand_out_for: str | None = None,
        caller: Caller | None = None,
        count: bool = True,
    ) -> Outcome:
        """The artifact if it is there (handed out for the method `hand_out_for`, if
        given); else its build, started (or joined) if `start`. A request counts for its
        tag (unless `count` is false: the caller counted it, one of several one pull
        makes)."""
        if count:
            self.count_request(spec)
        artifact = self.find_artifact(spec.key)
        if artifact is not None:
            return self._found(spec, artifact, None, hand_out_for, hit=True)
        if not start:
            return Outcome(None, self.find_job(spec.key))
        return self.follow_build(spec, hand_out_for=hand_out_for, caller=caller)

    def follow_build(
        self, spec: ExportSpec, *, hand_out_for: str | None = None, caller: Caller | None = None
    ) -> Outcome:
        """Where a started build stands; a build that died is started again."""
        job = self.find_job(spec.key)
        if job is not None and job.state == FAILED:
            return Outcome(None, job)
        admit = self._admission(caller)
        if job is not None and job.state == READY:
            artifact = self.find_artifact(spec.key)
            if artifact is not None:
                return self._found(spec, artifact, job, hand_out_for)
            job = ensure_queued(self.parts, spec, ready_missing=True, admit=admit)
            return Outcome(None, job)
        job = ensure_queued(self.parts, spec, admit=admit)
        if job.state == READY:  # it finished between the two looks: hand it out
            return self.follow_build(spec, hand_out_for=hand_out_for, caller=caller)
        return Outcome(None, job)

    def _found(
        self,
        spec: ExportSpec,
        artifact: Artifact,
        job: Job | None,
        hand_out_for: str | None,
        *,
        hit: bool = False,
    ) -> Outcome:
        location = self.hand_out(artifact, hand_out_for, spec.filename) if hand_out_for else None
        return Outcome(artifact, job, hit=hit, location=location)

    def find_job(self, key: str) -> Job | None:
        return self.parts.on_board(self.parts.board.job, key)

    def resend_if_dead(self, job: Job | None) -> Job | None:
        """The build of `job` sent again if its worker died or its message was lost
        (see tasks.enqueue); any look at an export does this."""
        return resend_if_dead(self.parts, job)

    def _admission(self, caller: Caller | None) -> Admission | None:
        """What a new build this caller starts must pass: the quotas."""
        if caller is None:
            return None
        return functools.partial(self._admit, caller)

    def _admit(self, caller: Caller, now: float) -> None:
        """Quotas of a new build: 429 when too many are queued, or the caller started
        too many in its window."""
        settings, board, on_board = self.settings, self.parts.board, self.parts.on_board
        if settings.max_queued and on_board(board.active_count) >= settings.max_queued:
            raise TooMany(
                f"{settings.max_queued} builds are queued or running; try again later",
                RETRY_LATER,
            )
        if settings.caller_builds and not on_board(
            board.take_quota, caller.quota_key, now, settings.caller_window,
            settings.caller_builds,
        ):  # fmt: skip
            window = settings.caller_window
            raise TooMany(
                f"this caller started {settings.caller_builds} builds in the last "
                f"{window:g} s; try again later",
                int(window - now % window) + 1,
            )
