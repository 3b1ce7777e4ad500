"""The registry decides who may read an image: a tag is resolved with the caller's own
credentials (a manifest HEAD, not a pull, see tasks.resolver) and the registry's refusal
mirrored.

A granted resolution is remembered for a few seconds (SQUASHD_RESOLVE_CACHE_SECONDS) for
that caller only: a moved tag or a revoked account takes effect within that time, as the
registry's own bearer tokens already allow; a refusal is never remembered.
"""

import hashlib
from dataclasses import dataclass

from squash.distribution.credentials import Credentials
from squash.reference import DockerRef, parse_docker_ref
from tasks.expiring import ExpiringCache
from tasks.resolver import Resolver

MAX_RESOLVED = 4096  # remembered resolutions, least recently used dropped beyond


@dataclass(frozen=True)
class Caller:
    """Who asks: HTTP Basic credentials, a registry Bearer token, or nobody."""

    credentials: Credentials | None = None
    bearer: str | None = None
    address: str = ""  # where an anonymous caller's requests come from (its quota)

    @property
    def anonymous(self) -> bool:
        return self.credentials is None and self.bearer is None

    @property
    def ambient(self) -> bool:
        """Never the service's own credentials on a caller's behalf."""
        return False

    @property
    def quota_key(self) -> str:
        """Whose builds count together: an account's, a token's, an address's."""
        return f"address:{self.address}" if self.anonymous else self.fingerprint

    @property
    def fingerprint(self) -> str:
        if self.credentials is not None:
            secret = f"basic:{self.credentials.username}:{self.credentials.password}"
        elif self.bearer is not None:
            secret = f"bearer:{self.bearer}"
        else:
            return "anonymous"
        return hashlib.sha256(secret.encode()).hexdigest()


class Access:
    """Callers' resolutions asked of the registry through `resolver`, granted ones
    remembered for `resolve_seconds` (0: never)."""

    def __init__(self, resolver: Resolver, resolve_seconds: float = 0) -> None:
        self.resolver = resolver
        # granted resolutions: (caller, registry, repository, reference) -> (digest, type)
        self.resolved: ExpiringCache[tuple[str, ...], tuple[str, str]] = ExpiringCache(
            resolve_seconds, MAX_RESOLVED
        )

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
            known = self.resolver.resolve(ref, caller)
            self.resolved.put(key, known)
        return known

    def check(self, name: str, digest: str, caller: Caller) -> None:
        """May the caller read `name@digest`? (Before anything about it is handed out.)"""
        self.resolve(parse_docker_ref(f"{name}@{digest}"), caller)
