"""The registry decides who may read an image: resolve a tag with the caller's own
credentials (a manifest HEAD, not a pull) and mirror the registry's refusal.

Sessions are kept per (registry, caller), so a caller's registry token is reused
until it expires, as docker reuses its own. A granted resolution is remembered for a few
seconds (SQUASHD_RESOLVE_CACHE_SECONDS) for that caller only: a moved tag or a revoked
account takes effect within that time, as the registry's own bearer tokens already
allow; a refusal is never remembered.
"""

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from squash.distribution.client import Registry
from squash.distribution.credentials import Credentials
from squash.distribution.options import RegistryOptions
from squash.errors import RegistryError, SquashError, TransientError
from squash.oci import JSONObject
from squash.reference import DockerRef
from squash.sources.walk import top_platforms
from tasks.errors import Denied, ServiceError, Unavailable
from tasks.expiring import ExpiringCache

MAX_SESSIONS = 256
MAX_RESOLVED = 4096  # remembered resolutions, least recently used dropped beyond
PLATFORMS_SECONDS = 3600.0  # how long an index's platforms are remembered
T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    """Who asks: HTTP Basic credentials, a registry Bearer token, nobody, or the
    service itself (its scheduled work, with its own credentials)."""

    credentials: Credentials | None = None
    bearer: str | None = None
    service: bool = False
    address: str = ""  # where an anonymous caller's requests come from (its quota)

    @property
    def anonymous(self) -> bool:
        return not (self.service or self.credentials is not None or self.bearer is not None)

    @property
    def quota_key(self) -> str:
        """Whose builds count together: an account's, a token's, an address's."""
        return f"address:{self.address}" if self.anonymous else self.fingerprint

    @property
    def fingerprint(self) -> str:
        if self.service:
            return "service"
        if self.credentials is not None:
            secret = f"basic:{self.credentials.username}:{self.credentials.password}"
        elif self.bearer is not None:
            secret = f"bearer:{self.bearer}"
        else:
            return "anonymous"
        return hashlib.sha256(secret.encode()).hexdigest()


#: The service asking for itself (pre-squash): SQUASHD_REGISTRY_USERNAME or auth files.
SERVICE = Caller(service=True)


class Sessions:
    """Registry sessions for callers, least recently used dropped beyond MAX_SESSIONS;
    granted resolutions remembered for `resolve_seconds` (0: never)."""

    def __init__(self, plain_http_registry: str | None = None, resolve_seconds: float = 0) -> None:
        self._plain = plain_http_registry
        self._sessions: OrderedDict[tuple[str, str], Registry] = OrderedDict()
        self._mutex = threading.Lock()
        # granted resolutions: (caller, registry, repository, reference) -> (digest, type)
        self.resolved: ExpiringCache[tuple[str, ...], tuple[str, str]] = ExpiringCache(
            resolve_seconds, MAX_RESOLVED
        )
        # an index's platforms by its digest (what a digest names never changes); only
        # asked for once the caller's access to it is checked
        self._platforms: ExpiringCache[str, list[JSONObject]] = ExpiringCache(
            PLATFORMS_SECONDS, MAX_RESOLVED
        )

    def _session(self, ref: DockerRef, caller: Caller) -> Registry:
        key = (ref.registry, caller.fingerprint)
        with self._mutex:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                return session
            options = RegistryOptions(
                plain_http=ref.registry == self._plain,
                credentials=caller.credentials,
                bearer=caller.bearer,
                # never the service's own credentials on a caller's behalf
                ambient=caller.service,
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

    def remembered(self, ref: DockerRef, caller: Caller) -> tuple[str, str] | None:
        """The caller's granted resolution of `ref`, if one is remembered (no request)."""
        return self.resolved.get(self._resolution_key(ref, caller))

    @staticmethod
    def _resolution_key(ref: DockerRef, caller: Caller) -> tuple[str, ...]:
        return (caller.fingerprint, ref.registry, ref.repository, ref.reference)

    def resolve(self, ref: DockerRef, caller: Caller) -> tuple[str, str]:
        """(digest, media type) of `ref` as the caller may read it; raises Denied with
        the registry's status (401, 403, 404), Unavailable when it cannot be reached."""
        key = self._resolution_key(ref, caller)
        known = self.resolved.get(key)
        if known is None:
            known = self._asking(ref, caller, lambda session: session.resolve)
            self.resolved.put(key, known)
        return known

    def platforms(self, ref: DockerRef, caller: Caller) -> list[JSONObject]:
        """The platform of each image of the index `ref` (by digest), fetched as the
        caller may read it; attestations left out."""
        known = self._platforms.get(ref.reference)
        if known is None:
            document, kind, _ = self._asking(ref, caller, lambda session: session.manifest)
            try:
                known = top_platforms(document, kind or None, f"image {ref}")
            except SquashError as exc:
                raise ServiceError(str(exc), 502) from None
            self._platforms.put(ref.reference, known)
        return known

    def _asking(
        self,
        ref: DockerRef,
        caller: Caller,
        method: Callable[[Registry], Callable[[str, str, str], T]],
    ) -> T:
        """`method(session)(repository, reference, what)` of the caller's session, the
        registry's refusals as the service's: Denied with its status (401, 403, 404),
        Unavailable when it cannot be reached."""
        try:
            call = method(self._session(ref, caller))
            return call(ref.repository, ref.reference, f"image {ref}")
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
