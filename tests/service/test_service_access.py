"""The registry decides who may read an image, before anything is built or served.

A token-auth registry with three users: alice reads everything, bob only `public/`,
and `robot` is the service's own account (SQUASHD_REGISTRY_USERNAME), which pulls for
the builds but is never used to decide what a caller may have.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request

import pytest

from testbed.registry import Registry
from testbed.service import Stack, fetch
from tests.registry.fixtures import USERS
from tests.registry.harness import basic_auth
from tests.service.fixtures import RESOLVE_CACHE, private_deployment

pytestmark = pytest.mark.integration

PRIVATE = "team/private"


@pytest.fixture(scope="module")
def stack(make_module_stack, private_registry, tmp_path_factory) -> Stack:
    work = tmp_path_factory.mktemp("private-image")
    return private_deployment(make_module_stack, private_registry[0], work, PRIVATE, seed=401)


def _as(user: str | None, password: str | None = None) -> dict[str, str]:
    return {} if user is None else {"Authorization": basic_auth(user, password or USERS[user])}


def test_callers_the_registry_refuses_get_its_answer(stack: Stack) -> None:
    received = stack.tasks_received()
    status, headers, body = stack.c1(f"{PRIVATE}/v1")
    assert status == 401 and headers["www-authenticate"].startswith("Basic"), body
    status, _, body = stack.c1(f"{PRIVATE}/v1", _as("alice", "wrong"))
    assert status == 401 and "wrong username or password" in json.loads(body)["error"]
    status, _, body = stack.c1(f"{PRIVATE}/v1", _as("bob"))
    assert status in (401, 403), body
    assert stack.tasks_received() == received, "a refused caller started a build"


def test_a_cached_private_artifact_is_never_handed_to_a_refused_caller(stack, tmp_path):
    status, headers, body = stack.c1(f"{PRIVATE}/v1", _as("alice"))
    assert status == 302, f"{body!r}\n{stack.describe()}"
    key = headers["x-squashd-export"]
    assert fetch(headers["location"], tmp_path / "private.tar")

    for refused in (None, ("alice", "wrong"), ("bob", None)):
        ask = _as(*refused) if refused else {}
        status, headers, _ = stack.c1(f"{PRIVATE}/v1", ask)
        assert status in (401, 403) and "location" not in headers, (refused, status)
        for path in (f"/v1/exports/{key}", f"/v1/exports/{key}/download"):
            # exactly as an export that does not exist (F9: ids of private images leak
            # neither their existence nor their names)
            status, headers, body = stack.web.get(path, ask)
            unknown = path.replace(key, "f" * 64)
            status_u, _, body_u = stack.web.get(unknown, ask)
            assert (status, "location" in headers) == (404, False), (refused, path, status)
            assert (status_u, body.replace(key.encode(), b"f" * 64)) == (404, body_u)
            assert PRIVATE.encode() not in body

    status, headers, _ = stack.c1(f"{PRIVATE}/v1", _as("alice"))
    assert status == 302 and headers["x-squashd-cache"] == "hit"
    assert stack.web.get(f"/v1/exports/{key}", _as("alice"))[0] == 200


def test_a_registry_bearer_token_is_passed_through(stack, private_registry) -> None:
    _, tokens = private_registry
    scope = f"repository:{PRIVATE}:pull"
    url = f"{tokens.realm}?service={tokens.service}&scope={scope}"
    request = urllib.request.Request(url, headers=_as("alice"))
    with urllib.request.urlopen(request) as response:
        token = json.loads(response.read())["token"]
    status, _, body = stack.c1(f"{PRIVATE}/v1", {"Authorization": f"Bearer {token}"})
    assert status == 302, body
    status, _, body = stack.c1(f"{PRIVATE}/v1", {"Authorization": "Bearer not-a-token"})
    assert status == 401, body


def test_malformed_credentials_are_a_clear_400(stack) -> None:
    garbage = base64.b64encode(b"no-colon").decode()
    status, _, body = stack.c1(f"{PRIVATE}/v1", {"Authorization": f"Basic {garbage}"})
    assert status == 400 and "USER:PASSWORD" in json.loads(body)["error"]
    status, _, body = stack.c1(f"{PRIVATE}/v1", {"Authorization": "Digest abc"})
    assert status == 400 and "Basic or Bearer" in json.loads(body)["error"]


def _manifest_heads(registry: Registry) -> int:
    """HEADs of the private tag the registry has answered (its access log)."""
    text = registry.log_path.read_text(errors="replace")
    return text.count(f'"HEAD /v2/{PRIVATE}/manifests/v1 ')


def test_a_remembered_resolution_serves_only_its_caller_until_it_runs_out(
    stack: Stack, private_registry
) -> None:
    """alice's granted resolution is reused (no HEAD at the registry) for the resolve
    cache's time; bob and a wrong password still get the registry's own refusal, each
    asked anew; after that time alice is asked again."""
    registry, _ = private_registry
    status, _, body = stack.c1(f"{PRIVATE}/v1", _as("alice"), timeout=120)  # built
    assert status == 302, body
    time.sleep(RESOLVE_CACHE + 0.2)  # what earlier requests remembered has run out
    status, _, body = stack.c1(f"{PRIVATE}/v1", _as("alice"))  # asked, and remembered
    assert status == 302, body
    heads = _manifest_heads(registry)
    status, headers, _ = stack.c1(f"{PRIVATE}/v1", _as("alice"))
    assert status == 302 and headers["x-squashd-cache"] == "hit"
    assert _manifest_heads(registry) == heads, "alice's remembered answer was not used"
    for refused in (("bob", None), ("alice", "wrong"), (None, None)):
        status, headers, _ = stack.c1(f"{PRIVATE}/v1", _as(*refused) if refused[0] else {})
        assert status in (401, 403) and "location" not in headers, (refused, status)
    assert _manifest_heads(registry) > heads, "a refused caller was not asked at the registry"
    heads = _manifest_heads(registry)
    time.sleep(RESOLVE_CACHE + 0.2)
    status, _, _ = stack.c1(f"{PRIVATE}/v1", _as("alice"))
    assert status == 302 and _manifest_heads(registry) == heads + 1
