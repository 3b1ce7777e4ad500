"""Asking a registry about an image without pulling it: what a tag resolves to (a
manifest HEAD) and the platforms of an index, as someone: a caller with its own
credentials (the web's access checks, `service.access`), or the service itself with its
own (the scheduled pre-squash).

Sessions are kept per (registry, asker), so a registry token is reused until it expires,
as docker reuses its own. The registry's refusals become the service's errors: Denied
with its status (401, 403, 404), Unavailable when it cannot be reached.
"""

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Protocol, TypeVar

from squash.distribution.client import Registry
from squash.distribution.credentials import Credentials
from squash.distribution.options import RegistryOptions
from squash.errors import RegistryError, SquashError, TransientError
from squash.oci import JSONObject, is_index
from squash.reference import DockerRef, Platform, parse_docker_ref
from squash.sources.walk import top_platforms
from tasks.errors import Denied, ServiceError, Unavailable
from tasks.expiring import ExpiringCache
from tasks.spec import ExportSpec

MAX_SESSIONS = 256
MAX_PLATFORMS = 4096  # indexes whose platforms are remembered
PLATFORMS_SECONDS = 3600.0  # how long an index's platforms are remembered
T = TypeVar("T")


class Asker(Protocol):
    """Who a registry session asks as."""

    @property
    def fingerprint(self) -> str:
        """Whose session it is (a hash of its secret: sessions are kept by it)."""
        ...

    @property
    def credentials(self) -> Credentials | None: ...

    @property
    def bearer(self) -> str | None:
        """A registry token, sent as it is."""
        ...

    @property
    def ambient(self) -> bool:
        """May the session use the service's own credentials (SQUASHD_REGISTRY_USERNAME,
        auth files)? Never on a caller's behalf."""
        ...


@dataclasses.dataclass(frozen=True)
class _ServiceItself:
    fingerprint: str = "service"
    credentials: None = None
    bearer: None = None
    ambient: bool = True


#: The service asking for itself (the pre-squash): SQUASHD_REGISTRY_USERNAME or auth files.
SERVICE_ITSELF = _ServiceItself()


class Resolver:
    """Registry sessions by (registry, asker), the least recently used dropped beyond
    MAX_SESSIONS; an index's platforms remembered by its digest."""

    def __init__(self, plain_http: Collection[str] = ()) -> None:
        self._plain = plain_http  # hosts spoken to over plain HTTP
        self._sessions: OrderedDict[tuple[str, str], Registry] = OrderedDict()
        self._mutex = threading.Lock()
        # an index's platforms by its digest (what a digest names never changes); only
        # asked for once the asker's access to it is checked
        self._platforms: ExpiringCache[str, list[JSONObject]] = ExpiringCache(
            PLATFORMS_SECONDS, MAX_PLATFORMS
        )

    def _session(self, ref: DockerRef, asker: Asker) -> Registry:
        key = (ref.registry, asker.fingerprint)
        with self._mutex:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                return session
            options = RegistryOptions(
                plain_http=ref.registry in self._plain,
                credentials=asker.credentials,
                bearer=asker.bearer,
                ambient=asker.ambient,
                attempts=2,
                backoff=0.2,
                timeout=15.0,
            )
            session = Registry(ref.registry, ref.api_host, options)
            self._sessions[key] = session
            while len(self._sessions) > MAX_SESSIONS:
                _, old = self._sessions.popitem(last=False)
                old.close()
            return session

    def resolve(self, ref: DockerRef, asker: Asker) -> tuple[str, str]:
        """(digest, media type) of `ref` as the asker may read it; raises Denied with
        the registry's status (401, 403, 404), Unavailable when it cannot be reached."""
        return self.asking(ref, asker, lambda session: session.resolve(*_asked(ref)))

    def platforms(self, ref: DockerRef, asker: Asker) -> list[JSONObject]:
        """The platform of each image of the index `ref` (by digest), fetched as the
        asker may read it; attestations left out."""
        known = self._platforms.get(ref.reference)
        if known is None:
            document, kind, _ = self.asking(ref, asker, lambda s: s.manifest(*_asked(ref)))
            try:
                known = top_platforms(document, kind or None, f"image {ref}")
            except SquashError as exc:
                raise ServiceError(str(exc), 502) from None
            self._platforms.put(ref.reference, known)
        return known

    def exports_per_platform(
        self, spec: ExportSpec, kind: str, asker: Asker
    ) -> list[tuple[JSONObject, ExportSpec]]:
        """One export per platform when the source is an index (`kind`, the media type
        `spec` resolved to; attestations left out), each with the index entry's
        `platform`; none for a single image."""
        if not is_index(kind):
            return []
        ref = parse_docker_ref(f"{spec.name}@{spec.digest}")
        found: dict[str, tuple[JSONObject, ExportSpec]] = {}
        for entry in self.platforms(ref, asker):
            text = str(Platform(entry["os"], entry.get("architecture", ""), entry.get("variant")))
            found.setdefault(text, (entry, dataclasses.replace(spec, platform=text)))
        return list(found.values())

    def asking(self, ref: DockerRef, asker: Asker, call: Callable[[Registry], T]) -> T:
        """`call(session)` of the asker's session with `ref`'s registry, the registry's
        refusals as the service's: Denied with its status (401, 403, 404), Unavailable
        when it cannot be reached."""
        try:
            return call(self._session(ref, asker))
        except TransientError as exc:
            raise Unavailable(f"registry {ref.registry} is unreachable: {exc}") from None
        except RegistryError as exc:
            if exc.status in (401, 403, 404):
                raise Denied(str(exc), exc.status) from None
            raise ServiceError(str(exc), 502) from None

    def close(self) -> None:
        with self._mutex:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()


def _asked(ref: DockerRef) -> tuple[str, str, str]:
    """(repository, reference, what) of a manifest request about `ref`."""
    return ref.repository, ref.reference, f"image {ref}"
