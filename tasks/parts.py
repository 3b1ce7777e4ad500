"""The parts of squashd in one process: its settings, the board, the artifact store, the
dispatcher that sends builds and the registry sessions, built once per process
(`process_parts()`). The worker's tasks use them as they are; the web's service builds
on the same ones, so in the embedded default the web and its in-process builds share
one board."""

import functools
import logging
from collections.abc import Callable
from typing import TypeVar

from storage import open_store
from storage.base import Artifact, ArtifactStore
from tasks.board import Board, Lifetimes, open_board
from tasks.dispatch import CeleryDispatcher, Dispatcher, LocalDispatcher
from tasks.errors import Unavailable
from tasks.resolver import Resolver
from tasks.settings import Settings

log = logging.getLogger("squashd.service")
T = TypeVar("T")


class Parts:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        lifetimes = Lifetimes(
            lease=settings.lease_seconds,
            grace=settings.queued_grace,
            failure=settings.failure_ttl,
            job=max(2 * settings.max_build_seconds, 86400),
            artifact=settings.artifact_cache_seconds,
            half_life=settings.popularity_half_life,
        )
        self.board: Board = open_board(settings.redis_url, lifetimes)
        self.store: ArtifactStore = open_store(settings.storage_url, settings.url_lifetime)
        self.dispatcher: Dispatcher = (
            LocalDispatcher(settings.local_workers) if settings.embedded else CeleryDispatcher()
        )
        self.resolver = Resolver(settings.plain_http_hosts)

    def close(self) -> None:
        """Close the registry sessions."""
        self.resolver.close()

    def find_artifact(self, key: str) -> Artifact | None:
        """The finished artifact of `key`: its cached record, else the store's (then
        cached). The board down is logged, not raised: the store still knows."""
        try:
            cached = self.board.cached(key)
        except Exception as exc:
            log.warning("artifact cache unavailable: %s", exc)
            cached = None
        if cached is not None:
            return cached
        artifact = self.on_store(self.store.stat, key)
        if artifact is not None:
            try:
                self.board.cache(artifact)
            except Exception as exc:
                log.warning("artifact cache unavailable: %s", exc)
        return artifact

    # -- errors of the parts, as a caller should hear them

    def on_board(self, call: Callable[..., T], *args: object, **kwargs: object) -> T:
        """`call(*args, **kwargs)` of the board; Redis unreachable is a 503 that says so."""
        what = "so builds can be neither queued nor followed"
        where = self.board.describe()
        return _reaching(self.board.errors, where, what, functools.partial(call, *args, **kwargs))

    def on_store(self, call: Callable[..., T], *args: object) -> T:
        """`call(*args)` of the store; the store unreachable is a 503 that says so."""
        where = f"the artifact store {self.store.describe()}"
        return _reaching(self.store.errors, where, "", functools.partial(call, *args))


def _reaching(
    errors: tuple[type[Exception], ...], where: str, what: str, call: Callable[[], T]
) -> T:
    """`call()`; a failure to reach `where` becomes a 503 that names it."""
    try:
        return call()
    except errors as exc:
        consequence = f", {what}" if what else ""
        raise Unavailable(f"{where} is unreachable{consequence}: {exc}") from None


@functools.cache
def process_parts() -> Parts:
    """This process's parts, from the environment."""
    return Parts(Settings.from_env())
