"""The test machinery itself: the registries, the token server and the fault proxy behave
as the `docker://` tests assume. These tests use plain urllib, not squashd, so a
failure here is the harness's (or the registry's), never the engine's."""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl

import pytest

from testbed.process import HOST, http_get
from testbed.registry import push
from tests.integration.helpers import OCI_INDEX, OCI_MANIFEST

from .harness import FaultProxy, basic_auth, parse_challenge

pytestmark = pytest.mark.integration

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST])


def test_registry_serves_pushed_images(registry, pushed, images) -> None:
    status, _, body = registry.get("/v2/")
    assert status == 200, body

    status, headers, body = registry.get(
        f"/v2/{pushed.oci}/manifests/{pushed.tag}", {"Accept": ACCEPT}
    )
    assert status == 200, body
    assert headers["content-type"] == OCI_MANIFEST
    assert headers["docker-content-digest"] == pushed.digests["oci"]
    assert "sha256:" + hashlib.sha256(body).hexdigest() == pushed.digests["oci"]

    status, headers, body = registry.get(
        f"/v2/{pushed.v2s2}/manifests/{pushed.tag}", {"Accept": ACCEPT}
    )
    assert status == 200, body
    assert headers["content-type"] == DOCKER_MANIFEST

    status, headers, body = registry.get(
        f"/v2/{pushed.multi}/manifests/{pushed.tag}", {"Accept": ACCEPT}
    )
    assert status == 200, body
    assert headers["content-type"] == OCI_INDEX
    platforms = [
        "{os}/{architecture}".format(**m["platform"]) for m in json.loads(body)["manifests"]
    ]
    assert platforms == ["unknown/unknown", "linux/arm64", "linux/amd64", "linux/arm"]


def test_registry_answers_unknown_tag_and_repository(registry, pushed) -> None:
    status, _, body = registry.get(f"/v2/{pushed.oci}/manifests/no-such-tag")
    assert status == 404
    assert json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    # distribution 2.8 says MANIFEST_UNKNOWN (not NAME_UNKNOWN) for a missing repository
    status, _, body = registry.get("/v2/no/such-repo/manifests/v1")
    assert status == 404
    assert json.loads(body)["errors"][0]["code"] in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")


def _token(token_registry, scope: str, creds: tuple[str, str] | None) -> tuple[int, dict]:
    tokens = token_registry.tokens
    url = f"{tokens.realm}?service={tokens.service}&scope={scope}"
    headers = {"Authorization": basic_auth(*creds)} if creds else {}
    status, _, body = http_get(url, headers)
    return status, json.loads(body)


def test_token_flow_against_the_registry(token_registry, images) -> None:
    name = "harness/private"
    token_registry.push(images.mixed, name, "v1")
    reg = token_registry.registry

    status, headers, _ = reg.get("/v2/")
    assert status == 401
    scheme, params = parse_challenge(headers["www-authenticate"])
    assert scheme == "Bearer"
    assert params == {"realm": token_registry.tokens.realm, "service": "squashd-test-registry"}

    status, headers, _ = reg.get(f"/v2/{name}/manifests/v1")
    assert status == 401
    _, params = parse_challenge(headers["www-authenticate"])
    assert params["scope"] == f"repository:{name}:pull"

    token_registry.tokens.reset()
    status, body = _token(token_registry, f"repository:{name}:pull", ("alice", "secret"))
    assert status == 200
    assert body["token"] == body["access_token"] and body["expires_in"] > 0
    status, _, manifest = reg.get(
        f"/v2/{name}/manifests/v1",
        {"Authorization": f"Bearer {body['token']}", "Accept": ACCEPT},
    )
    assert status == 200, manifest
    assert [r.repositories() for r in token_registry.tokens.requests] == [{name}]

    # anonymous: a token without access; the registry says insufficient_scope
    status, body = _token(token_registry, f"repository:{name}:pull", None)
    assert status == 200
    status, headers, _ = reg.get(
        f"/v2/{name}/manifests/v1", {"Authorization": f"Bearer {body['token']}"}
    )
    assert status == 401
    assert 'error="insufficient_scope"' in headers["www-authenticate"]

    # a wrong password: the token server refuses
    status, body = _token(token_registry, f"repository:{name}:pull", ("alice", "wrong"))
    assert status == 401


def test_public_repository_is_anonymously_pullable(token_registry, images) -> None:
    token_registry.push(images.mixed, "public/harness", "v1")
    status, body = _token(token_registry, "repository:public/harness:pull", None)
    assert status == 200
    status, _, _ = token_registry.registry.get(
        "/v2/public/harness/manifests/v1",
        {"Authorization": f"Bearer {body['token']}", "Accept": ACCEPT},
    )
    assert status == 200


def _big_layer(registry, pushed) -> dict:
    _, _, body = registry.get(f"/v2/{pushed.oci}/manifests/{pushed.tag}", {"Accept": ACCEPT})
    return max(json.loads(body)["layers"], key=lambda d: d["size"])


def _raw_get(proxy: FaultProxy, path: str, headers: dict | None = None):
    conn = http.client.HTTPConnection(HOST, proxy.port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    try:
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_proxy_cuts_then_behaves_and_forwards_ranges(registry, pushed, fault_proxy) -> None:
    layer = _big_layer(registry, pushed)
    path = f"/v2/{pushed.oci}/blobs/{layer['digest']}"
    fault_proxy.cut(layer["digest"], after=100_000)
    with pytest.raises(http.client.IncompleteRead) as e:
        _raw_get(fault_proxy, path)
    assert len(e.value.partial) == 100_000
    status, _, body = _raw_get(fault_proxy, path, {"Range": "bytes=100000-"})
    assert status == 206
    whole = e.value.partial + body
    assert "sha256:" + hashlib.sha256(whole).hexdigest() == layer["digest"]
    status, _, body = _raw_get(fault_proxy, path)
    assert status == 200 and len(body) == layer["size"]
    assert [s.range for s in fault_proxy.blob_gets(layer["digest"])] == [
        None,
        "bytes=100000-",
        None,
    ]


def test_proxy_flips_a_byte(registry, pushed, fault_proxy) -> None:
    layer = _big_layer(registry, pushed)
    path = f"/v2/{pushed.oci}/blobs/{layer['digest']}"
    _, _, good = registry.get(path)
    fault_proxy.flip(layer["digest"])
    status, _, bad = _raw_get(fault_proxy, path)
    assert status == 200 and len(bad) == len(good)
    differing = [i for i in range(len(good)) if good[i] != bad[i]]
    assert differing == [layer["size"] // 2]
    # a resumed read from the middle gets the same flipped byte
    start = layer["size"] // 2 - 10
    status, _, part = _raw_get(fault_proxy, path, {"Range": f"bytes={start}-"})
    assert status == 206 and part == bad[start:]


@pytest.mark.parametrize("status", [429, 503])
def test_proxy_fails_once(registry, pushed, fault_proxy, status) -> None:
    path = f"/v2/{pushed.oci}/manifests/{pushed.tag}"
    fault_proxy.fail("/manifests/", status)
    assert _raw_get(fault_proxy, path, {"Accept": ACCEPT})[0] == status
    assert _raw_get(fault_proxy, path, {"Accept": ACCEPT})[0] == 200


def test_proxy_redirects_blobs_to_a_store_that_rejects_authorization(
    registry, pushed, fault_proxy
) -> None:
    layer = _big_layer(registry, pushed)
    store = FaultProxy((HOST, registry.port), name="store", reject_authorization=True).start()
    try:
        fault_proxy.redirect_blobs(store)
        path = f"/v2/{pushed.oci}/blobs/{layer['digest']}"
        status, headers, _ = _raw_get(fault_proxy, path)
        assert status == 307
        location = headers["Location"]
        assert location.startswith(f"{store.url}{path}?")
        status, _, body = http_get(location)
        assert status == 200 and len(body) == layer["size"]
        status, _, _ = http_get(location, {"Authorization": "Bearer x"})
        assert status == 400
    finally:
        store.stop()


def test_tls_registry_is_trusted_with_its_ca(tls_registry) -> None:
    reg, ca = tls_registry
    ctx = ssl.create_default_context(cafile=str(ca))
    status, _, _ = http_get(f"{reg.url}/v2/", context=ctx)
    assert status == 200
    with pytest.raises(OSError):
        http_get(f"{reg.url}/v2/", context=ssl.create_default_context())


def test_skopeo_pushes_through_the_proxy(registry, fault_proxy, images) -> None:
    """The proxy forwards uploads too (chunked PATCH, PUT with Location rewriting)."""
    digest = push(images.mixed, fault_proxy.ref("harness/through-proxy", "v1"))
    status, headers, _ = registry.get("/v2/harness/through-proxy/manifests/v1", {"Accept": ACCEPT})
    assert status == 200 and headers["docker-content-digest"] == digest
