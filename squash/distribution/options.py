"""How to reach registries; kept apart from the client so that naming it costs no imports."""

from dataclasses import dataclass

from squash.distribution.credentials import Credentials

DEFAULT_CHUNK = 8 << 20  # bytes per PATCH of a push (registries that want a minimum ask 5 MiB)


@dataclass(kw_only=True)
class RegistryOptions:
    plain_http: bool = False  # http:// even for registries that are not on loopback
    tls_verify: bool | None = None  # None: verify; False also means TLS on loopback
    ca_file: str | None = None
    credentials: Credentials | None = None  # else looked up (see `ambient`)
    # False: only what is given here (a caller's credentials, checked on its behalf),
    # never the service's own or the auth files'.
    ambient: bool = True
    bearer: str | None = None  # a registry token sent as it is, instead of the token flow
    attempts: int = 5  # per request, for transient failures
    backoff: float = 0.5  # seconds, doubled each retry
    timeout: float = 60.0
