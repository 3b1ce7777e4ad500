"""Where a session with a registry may send requests, and where its credentials may go.

A registry's answers name other places: blob redirects (to object stores, CDNs) and the
token realm of its `WWW-Authenticate` challenge. Followed blindly, a hostile upstream
points the client at the machine's own network (blind SSRF: metadata services on
link-local addresses, admin ports on loopback) or collects the pull account's password
at a realm of its choosing. So:

- a redirect or a realm that resolves to a loopback, link-local or private address is
  refused, unless the registry itself lives in that kind of network;
- credentials go to the registry, and to a token realm only over HTTPS or on the
  registry's own host.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from squash.errors import RegistryError

PUBLIC = "public"


def address_kinds(host: str) -> set[str]:
    """What kinds of addresses `host` resolves to: loopback, link-local, private, public."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return set()  # it does not resolve: the request itself will fail, clearly
    return {_kind(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos}


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_private or address.is_reserved or address.is_multicast:
        return "private"
    return PUBLIC


class Reach:
    """The places a session with the registry at `home` (host[:port]) may go."""

    def __init__(self, home: str) -> None:
        self.home = urlsplit(f"//{home}").hostname or home
        self._allowed: set[str] | None = None

    def allowed(self) -> set[str]:
        if self._allowed is None:  # resolved once, when first needed
            self._allowed = {PUBLIC} | address_kinds(self.home)
        return self._allowed

    def check(self, url: str, what: str) -> None:
        """Refuse `url` if it leads into a network the registry does not live in."""
        host = urlsplit(url).hostname or ""
        if host == self.home:
            return
        refused = address_kinds(host) - self.allowed()
        if refused:
            raise RegistryError(
                f"{what}: refusing to follow the registry to {host} "
                f"(a {'/'.join(sorted(refused))} address, outside the registry's network)"
            )

    def may_take_credentials(self, realm: str) -> bool:
        """May the registry's credentials be sent to this token realm?"""
        parts = urlsplit(realm)
        return parts.scheme == "https" or parts.hostname == self.home
