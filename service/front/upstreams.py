"""Which upstream a registry-front request is for: squashd as the mirror a node pulls
through, for several registries.

- `?ns=HOST[:PORT]` (containerd sends the registry it means so to a mirror of its
  hosts.toml): that registry, if SQUASHD_ALLOWED_REGISTRIES lists it. Otherwise the request
  is refused before anything leaves for that host: `ns` is an address the client chose.
- A first path component that SQUASHD_MIRROR_PREFIXES names (podman's and CRI-O's
  `[[registry.mirror]]` location `squashd.example/hub` stands before the repository name):
  that upstream, the rest of the path its repository.
- Neither (docker's `registry-mirrors`, and names that say squashd itself):
  SQUASHD_REGISTRY.

Each upstream's own challenge is mirrored (service/front/auth.py); the token realm squashd
names for an `ns` carries it, and a token request's repository scope picks its upstream as
a path does. A caller's credentials go only to the upstream its request named.
"""

import threading
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from service.front.auth import FrontAuth
from squash.distribution.reach import PUBLIC, address_kinds
from squash.errors import BadReference
from squash.reference import DockerRef, parse_docker_ref
from tasks.errors import BadRequest, ServiceError
from tasks.expiring import ExpiringCache
from tasks.settings import Settings

MAX_AUTHS = 64  # upstreams whose challenge is kept (more only with SQUASHD_ALLOWED_REGISTRIES=*)
PUBLIC_SECONDS = 60.0  # how long an `ns`'s addresses are known public (allow-list `*`)


class NotServed(ServiceError):
    """An `ns` this squashd does not mirror: the registry's NAME_UNKNOWN."""

    status = 404


@dataclass(frozen=True)
class Route:
    """Where a request's NAME lives."""

    host: str  # the upstream, host[:port] as references name it ("docker.io")
    repository: str  # at the upstream ("library/alpine")
    asked: str  # NAME as the client asked for it
    ns: str | None = None  # the `ns` it was asked with
    prefix: str | None = None  # the mirror prefix it was asked with

    @property
    def mirrored(self) -> bool:
        """Asked for by a runtime's mirror configuration (`ns` or a prefix)?"""
        return self.ns is not None or self.prefix is not None

    @property
    def name(self) -> str:
        """`host/repository`, as builds and the board record it."""
        return f"{self.host}/{self.repository}"

    def ref(self, reference: str) -> DockerRef:
        """The upstream's image of a tag or digest under this name."""
        sep = "@" if ":" in reference else ":"
        return parse_docker_ref(f"{self.name}{sep}{reference}")


def _is_host(text: str) -> bool:
    """Is `text` a registry's host[:port] as references name one?"""
    try:
        return parse_docker_ref(f"{text}/x:y").registry == text
    except BadReference:
        return False


def is_reference(text: str) -> bool:
    """Can `text` be a tag or a digest at all? (The distribution registry answers
    MANIFEST_UNKNOWN for one that cannot, as for a tag it does not have.)"""
    try:
        parse_docker_ref(f"x@{text}" if ":" in text else f"x:{text}")
    except BadReference:
        return False
    return True


class Upstreams:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._auths: OrderedDict[str, FrontAuth] = OrderedDict()
        self._public: ExpiringCache[str, bool] = ExpiringCache(PUBLIC_SECONDS, MAX_AUTHS)
        self._mutex = threading.Lock()

    def route(self, name: str, ns: str | None) -> Route:
        """The upstream of NAME asked for with `ns` (None: no `ns` in the query); 400 for
        a malformed name, NotServed for an `ns` not mirrored here."""
        host, asked, prefix = self.default, name, None
        if ns is not None:
            host = self.served(ns)
        else:
            first, _, rest = name.partition("/")
            if rest and first in self.settings.mirror_prefixes:
                host, name, prefix = self.settings.mirror_prefixes[first], rest, first
        try:
            ref = parse_docker_ref(f"{host}/{name}:latest")
        except BadReference as exc:
            raise BadRequest(str(exc)) from None
        return Route(ref.registry, ref.repository, asked, ns, prefix)

    def namespace(self, ns: str) -> Route:
        """The route of a request that names an upstream but no repository (`/v2/?ns=`)."""
        return Route(self.served(ns), "", "", ns)

    @property
    def default(self) -> str:
        return self.settings.registry

    def served(self, ns: str) -> str:
        """`ns` if it is a registry mirrored here: on the allow-list, or with the
        allow-list `*` one whose every address is public. Nothing is sent to it before."""
        settings = self.settings
        if settings.allowed_registries:
            served = ns in settings.allowed_registries
        else:
            configured = {settings.registry, *settings.mirror_prefixes.values()}
            served = ns in configured or self._is_public(ns)
        if served and _is_host(ns):
            return ns
        raise NotServed(f"registry {ns} is not mirrored here (SQUASHD_ALLOWED_REGISTRIES)")

    def _is_public(self, host: str) -> bool:
        """Every address `host` resolves to is public: a client's `ns` never points squashd
        at its own machine or network (metadata services, admin ports)."""
        known = self._public.get(host)
        if known is None:
            known = address_kinds(urlsplit(f"//{host}").hostname or host) == {PUBLIC}
            self._public.put(host, known)
        return known

    # -- how each upstream asks for credentials

    def auth(self, host: str) -> FrontAuth:
        """The front's view of `host`'s challenge and token realm (made on first use)."""
        with self._mutex:
            auth = self._auths.get(host)
            if auth is None:
                plain = host in self.settings.plain_http_hosts
                auth = self._auths[host] = FrontAuth(host, plain_http=plain)
                while len(self._auths) > MAX_AUTHS:
                    self._auths.popitem(last=False)[1].close()
            self._auths.move_to_end(host)
            return auth

    def realm(self, base_url: str, route: Route | None) -> str:
        """squashd's token realm for a challenge about `route`: an `ns` is carried in it,
        for the token request that follows."""
        query = f"?{urlencode({'ns': route.ns})}" if route and route.ns else ""
        return f"{base_url.rstrip('/')}/v2/token{query}"

    def token_request(self, query: list[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
        """The upstream a token request is for and the query to send its realm: each
        repository scope's name routed as a path is (a mirror prefix picks the upstream
        and is left out of the name), `ns` as the realm carried it, `service` the
        upstream's own."""
        ns = next((value for key, value in query if key == "ns"), None)
        hosts: set[str] = set()
        relayed = []
        for key, value in query:
            kind, _, scoped = value.partition(":")
            name, sep, actions = scoped.rpartition(":")
            if key == "scope" and kind == "repository" and sep:
                route = self.route(name, ns)
                hosts.add(route.host)
                value = f"repository:{route.repository}:{actions}"
            if key not in ("ns", "service"):
                relayed.append((key, value))
        if len(hosts) > 1:
            raise BadRequest("a token request's scopes name repositories of several upstreams")
        host = hosts.pop() if hosts else (self.served(ns) if ns is not None else self.default)
        service = self.auth(host).challenge().params.get("service")
        if service:
            relayed.append(("service", service))
        return host, relayed

    def close(self) -> None:
        with self._mutex:
            for auth in self._auths.values():
                auth.close()
            self._auths.clear()
