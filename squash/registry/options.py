"""How to reach registries; kept apart from the client so that naming it costs no imports."""

from dataclasses import dataclass

from squash.registry.credentials import Credentials


@dataclass
class RegistryOptions:
    plain_http: bool = False  # http:// even for registries that are not on loopback
    tls_verify: bool | None = None  # None: verify; False also means TLS on loopback
    ca_file: str | None = None
    credentials: Credentials | None = None  # else looked up in auth files
    attempts: int = 5  # per request, for transient failures
    backoff: float = 0.5  # seconds, doubled each retry
    timeout: float = 60.0
