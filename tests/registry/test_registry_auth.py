"""Authentication as real registries do it, against distribution with `auth: token:`:
the bearer-token flow from the `WWW-Authenticate` challenge, with credentials from
`--creds`, `REGISTRY_AUTH_FILE` or `~/.docker/config.json`, one token per repository
scope (reused, not fetched per request), anonymous tokens for public repositories,
plain Basic auth where a registry asks for it, and blob redirects to another host that
must not receive the registry's Authorization header.

The token registry's user is alice / secret; repositories under `public/` are
anonymously pullable.
"""

from __future__ import annotations

import re

import pytest

from testbed.process import HOST
from tests.integration.helpers import roundtrip

from .fixtures import TOKEN_PRIVATE, TOKEN_PUBLIC
from .harness import FaultProxy, Squashed, export, export_fails, export_ok, write_auth_file

pytestmark = pytest.mark.integration

PRIVATE, PUBLIC = TOKEN_PRIVATE, TOKEN_PUBLIC
AUTH_ERROR = re.compile(r"auth|401|unauthori[sz]ed|credential|denied|password", re.IGNORECASE)


# ---------------------------------------------------------------------------------------
# Good credentials
# ---------------------------------------------------------------------------------------


def test_creds_flag(tools, token_registry, token_pushed, images, baseline, work) -> None:
    source = token_registry.ref(PRIVATE, "v1")
    result = roundtrip(
        source, work, reference=images.umoci_rootfs, extra_args=["--creds", token_registry.creds]
    )
    assert Squashed.open(result.archive).diff_id == baseline["umoci"]


def test_token_is_reused(tools, token_registry, token_pushed, token_proxy, baseline, work) -> None:
    """One token for the repository scope, then every request (manifest, config, each
    layer) carries it; the token server is not asked per request."""
    out = work / "out.tar"
    export_ok(token_proxy.ref(PRIVATE, "v1"), out, "--creds", token_registry.creds)
    assert Squashed.open(out).diff_id == baseline["umoci"]

    requests = token_registry.tokens.requests
    for_repo = token_registry.tokens.requests_for(PRIVATE)
    authorized = [
        s for s in token_proxy.seen if s.headers.get("authorization", "").startswith("Bearer ")
    ]
    context = (
        f"token requests: {[(r.method, r.user, r.scopes, r.status) for r in requests]}\n"
        f"{token_proxy.describe()}"
    )
    assert len(authorized) >= 4, f"expected manifest + config + 3 layers with a token\n{context}"
    assert len(for_repo) == 1, f"expected one token request for {PRIVATE}\n{context}"
    assert len(requests) <= 2, f"at most one more (an unscoped one after /v2/)\n{context}"
    assert all(r.authenticated for r in requests), context
    assert f"repository:{PRIVATE}:pull" in for_repo[0].scopes, context
    assert not any("push" in s for r in requests for s in r.scopes), (
        f"an export only needs pull\n{context}"
    )


def test_registry_auth_file(
    tools, token_registry, token_pushed, baseline, work, monkeypatch
) -> None:
    auth_file = token_registry.auth_file(work / "auth" / "auth.json")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    out = work / "out.tar"
    export_ok(token_registry.ref(PRIVATE, "v1"), out)
    assert Squashed.open(out).diff_id == baseline["umoci"]
    assert token_registry.tokens.requests_for(PRIVATE), "no token was asked for"
    assert all(r.user == "alice" for r in token_registry.tokens.requests)


def test_docker_config_in_home(
    tools, token_registry, token_pushed, baseline, work, monkeypatch
) -> None:
    home = work / "home"
    write_auth_file(
        home / ".docker" / "config.json",
        token_registry.host,
        token_registry.user,
        token_registry.password,
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    out = work / "out.tar"
    export_ok(token_registry.ref(PRIVATE, "v1"), out)
    assert Squashed.open(out).diff_id == baseline["umoci"]


def test_creds_flag_wins_over_auth_file(
    tools, token_registry, token_pushed, baseline, work, monkeypatch
) -> None:
    auth_file = token_registry.auth_file(work / "auth.json", password="stale-password")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    out = work / "out.tar"
    export_ok(token_registry.ref(PRIVATE, "v1"), out, "--creds", token_registry.creds)


def test_anonymous_pull_of_a_public_repository(
    tools, token_registry, token_pushed, baseline, work
) -> None:
    out = work / "out.tar"
    export_ok(token_registry.ref(PUBLIC, "v1"), out)
    assert Squashed.open(out).diff_id == baseline["umoci"]
    requests = token_registry.tokens.requests
    assert requests and all(r.user is None for r in requests), requests


# ---------------------------------------------------------------------------------------
# Bad or missing credentials
# ---------------------------------------------------------------------------------------


def test_wrong_password(tools, token_registry, token_pushed, work) -> None:
    line = export_fails(token_registry.ref(PRIVATE, "v1"), work, "--creds", "alice:Zq9-not-it")
    assert AUTH_ERROR.search(line), f"the error should say authentication failed: {line}"
    assert "Zq9-not-it" not in line, f"the password must not be shown: {line}"


def test_wrong_password_in_auth_file(
    tools, token_registry, token_pushed, work, monkeypatch
) -> None:
    auth_file = token_registry.auth_file(work / "auth.json", password="wrong")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    line = export_fails(token_registry.ref(PRIVATE, "v1"), work)
    assert AUTH_ERROR.search(line), f"the error should say authentication failed: {line}"


def test_anonymous_pull_of_a_private_repository(tools, token_registry, token_pushed, work) -> None:
    line = export_fails(token_registry.ref(PRIVATE, "v1"), work)
    assert AUTH_ERROR.search(line), f"the error should say access was denied: {line}"


def test_malformed_creds(tools, token_registry, token_pushed, work) -> None:
    """A usage error (argparse may print its usage line too): non-zero, names --creds."""
    out = work / "out.tar"
    proc = export(token_registry.ref(PRIVATE, "v1"), out, "--creds", "no-colon-here")
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode != 0, stderr
    assert "--creds" in stderr and "Traceback" not in stderr, stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------
# Plain Basic auth (a proxy in front of the open registry asks for it)
# ---------------------------------------------------------------------------------------


@pytest.fixture
def basic_proxy(registry):
    proxy = FaultProxy((HOST, registry.port), name="basic-auth proxy", require_basic=("bob", "pw"))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_basic_auth(tools, basic_proxy, pushed, baseline, work) -> None:
    out = work / "out.tar"
    export_ok(basic_proxy.ref(pushed.oci, pushed.tag), out, "--creds", "bob:pw")
    assert Squashed.open(out).diff_id == baseline["umoci"]
    refused = [s for s in basic_proxy.seen if s.status == 401]
    assert len(refused) <= 1, f"credentials should be sent once asked for\n{basic_proxy.describe()}"


def test_basic_auth_wrong_password(tools, basic_proxy, pushed, work) -> None:
    line = export_fails(basic_proxy.ref(pushed.oci, pushed.tag), work, "--creds", "bob:nope")
    assert AUTH_ERROR.search(line), line


# ---------------------------------------------------------------------------------------
# Blob redirects to another host (object storage)
# ---------------------------------------------------------------------------------------


def test_blob_redirect_drops_the_authorization_header(
    tools, token_registry, token_pushed, token_proxy, baseline, work
) -> None:
    """Blob GETs answered 307 to a "store" on another port that, like S3 with a
    presigned URL, refuses requests carrying an Authorization header."""
    store_token = token_registry.tokens.mint(
        "store", [{"type": "repository", "name": PRIVATE, "actions": ["pull"]}]
    )
    store = FaultProxy(
        (HOST, token_registry.registry.port),
        name="object store",
        reject_authorization=True,
        inject_headers={"Authorization": f"Bearer {store_token}"},
    ).start()
    try:
        token_proxy.redirect_blobs(store)
        out = work / "out.tar"
        export_ok(token_proxy.ref(PRIVATE, "v1"), out, "--creds", token_registry.creds)
        assert Squashed.open(out).diff_id == baseline["umoci"]
        redirected = [s for s in token_proxy.seen if s.action == "redirect"]
        fetched = store.blob_gets()
        assert redirected and len(fetched) >= len(redirected), (
            f"{token_proxy.describe()}\n{store.describe()}"
        )
        leaked = [s for s in store.seen if "authorization" in s.headers]
        assert not leaked, f"the registry's token went to another host:\n{store.describe()}"
    finally:
        store.stop()


def test_redirect_to_the_same_host(tools, registry, pushed, fault_proxy, baseline, work) -> None:
    """A blob redirect to the registry's own host (same origin) is followed too."""
    fault_proxy.redirect_blobs(fault_proxy)
    out = work / "out.tar"
    export_ok(fault_proxy.ref(pushed.oci, pushed.tag), out)
    assert Squashed.open(out).diff_id == baseline["umoci"]
    assert any(s.action == "redirect" for s in fault_proxy.seen), fault_proxy.describe()


def test_a_resolution_with_its_token_at_hand_is_one_request(
    token_registry, token_pushed, token_proxy
) -> None:
    """The first resolution of a session authenticates (a 401, a token, the HEAD again);
    every later one is one manifest HEAD with the token it holds, and no token request."""
    from squash.distribution.client import Registry
    from squash.distribution.credentials import Credentials
    from squash.distribution.options import RegistryOptions

    credentials = Credentials(token_registry.user, token_registry.password)
    session = Registry(token_proxy.host, token_proxy.host, RegistryOptions(credentials=credentials))
    try:
        first = session.resolve(PRIVATE, "v1", "test")
        assert first[0] == token_pushed[PRIVATE]
        tokens, seen = len(token_registry.tokens.requests), len(token_proxy.seen)
        for _ in range(5):
            assert session.resolve(PRIVATE, "v1", "test") == first
        later = token_proxy.seen[seen:]
        assert [(s.method, s.status) for s in later] == [("HEAD", 200)] * 5, later
        assert len(token_registry.tokens.requests) == tokens
    finally:
        session.close()
