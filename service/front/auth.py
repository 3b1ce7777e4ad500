"""How the registry front asks for credentials: as the upstream does.

An upstream that asks for none is answered with 200 at /v2/. One that asks for Basic
credentials gets the same challenge, and the client's credentials go to it with every
check. One with a token realm gets a realm of squashd's own, /v2/token, which relays the
client's token request (its credentials, its scope) to the upstream's realm and the
answer back: the client then holds an upstream token, which squashd passes on with each
check, as it passes on Basic credentials. Nothing is kept but the upstream's challenge,
for a minute.
"""

from dataclasses import dataclass

from squash.distribution.client import Registry, parse_challenge
from squash.distribution.options import RegistryOptions
from squash.errors import RegistryError, TransientError
from squash.reference import parse_docker_ref
from tasks.errors import ServiceError, Unavailable
from tasks.expiring import ExpiringCache

CHALLENGE_SECONDS = 60.0  # how long the upstream's challenge is trusted


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "" (none asked for), "basic" or "bearer"
    params: dict[str, str]


class FrontAuth:
    def __init__(self, registry: str, *, plain_http: bool) -> None:
        ref = parse_docker_ref(f"{registry}/library/x:y")
        options = RegistryOptions(plain_http=plain_http, ambient=False, attempts=1, timeout=15.0)
        self._upstream = Registry(registry, ref.api_host, options)
        self._known: ExpiringCache[str, Challenge] = ExpiringCache(CHALLENGE_SECONDS, 1)

    def close(self) -> None:
        self._upstream.close()

    def challenge(self) -> Challenge:
        """The upstream's own challenge (asked anonymously, remembered for a minute)."""
        known = self._known.get("")
        if known is None:
            status, header = self._ping(None)
            scheme, params = parse_challenge(header) if status == 401 else ("", {})
            known = Challenge(scheme, params)
            self._known.put("", known)
        return known

    def header(self, realm: str, scope: str | None = None) -> dict[str, str]:
        """The WWW-Authenticate of the front's 401s (`realm`: the front's own token URL)."""
        challenge = self.challenge()
        if challenge.scheme != "bearer":
            return {"WWW-Authenticate": 'Basic realm="squashd"'}
        params = {"realm": realm}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        if scope:
            params["scope"] = scope
        text = ",".join(f'{key}="{value}"' for key, value in params.items())
        return {"WWW-Authenticate": f"Bearer {text}"}

    def takes(self, authorization: str | None) -> bool:
        """Does the upstream let this caller in at all (`GET /v2/`, the login check)?"""
        challenge = self.challenge()
        if not authorization:
            return challenge.scheme == ""
        if challenge.scheme == "bearer" and authorization.lower().startswith("basic "):
            service = challenge.params.get("service")  # a token for no scope: a login
            return self.token([("service", service)] if service else [], authorization)[0] == 200
        return self._ping(authorization)[0] == 200

    def token(
        self, query: list[tuple[str, str]], authorization: str | None, form: bytes | None = None
    ) -> tuple[int, bytes, str]:
        """The upstream realm's answer to the client's token request (`form`: its OAuth2
        POST, which docker sends once a realm gave it a refresh token)."""
        challenge = self.challenge()
        realm = challenge.params.get("realm")
        if challenge.scheme != "bearer" or not realm:
            raise ServiceError("the upstream registry issues no tokens; use Basic credentials", 404)
        try:
            return self._upstream.relay_token(realm, query, authorization, form)
        except TransientError as exc:
            raise Unavailable(f"the upstream's token realm is unreachable: {exc}") from None
        except RegistryError as exc:
            raise ServiceError(str(exc), 502) from None

    def _ping(self, authorization: str | None) -> tuple[int, str]:
        try:
            return self._upstream.ping(authorization)
        except TransientError as exc:
            raise Unavailable(f"registry {self._upstream.name} is unreachable: {exc}") from None
