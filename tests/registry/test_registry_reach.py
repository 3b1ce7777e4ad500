"""Where a hostile upstream may not send squashd (F3, F8): credentials go only to the
registry and to a token realm over HTTPS or on the registry's own host; redirects and
realms into loopback, link-local or private networks the registry does not live in are
refused."""

from __future__ import annotations

import json

import pytest

from .fixtures import TOKEN_PRIVATE, proxying
from .harness import export_fails

pytestmark = pytest.mark.integration

UNAUTHORIZED = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "token"}]}).encode()


def test_credentials_are_not_sent_to_a_realm_elsewhere_over_plain_http(
    tools, token_registry, token_pushed, token_proxy, work
) -> None:
    """The challenge names a plain-HTTP realm on another host name (a second listener,
    reached as `localhost`): squashd refuses, and the realm never sees the password."""
    with proxying(token_registry.tokens.port, "foreign realm") as realm:
        challenge = f'Bearer realm="http://localhost:{realm.port}/token",service="x"'
        token_proxy.respond(r"/manifests/", 401, UNAUTHORIZED,
                            {"WWW-Authenticate": challenge}, methods=("GET", "HEAD"))  # fmt: skip
        line = export_fails(
            token_proxy.ref(TOKEN_PRIVATE, "v1"), work, "--creds", token_registry.creds
        )
        assert "neither HTTPS nor on the registry's own host" in line, line
        assert realm.seen == [], realm.describe()


@pytest.mark.parametrize("target", ["169.254.169.254", "10.11.12.13"])
def test_redirects_into_other_networks_are_refused(
    tools, registry, pushed, fault_proxy, work, target: str
) -> None:
    """A blob redirect to the cloud metadata address (link-local) or a private address,
    from a registry on loopback, is not followed."""
    location = {"Location": f"http://{target}/latest/meta-data"}
    fault_proxy.respond(r"/blobs/sha256:", 307, b"", location, methods=("GET",))
    line = export_fails(fault_proxy.ref(pushed.oci, pushed.tag), work)
    assert f"refusing to follow the registry to {target}" in line, line
