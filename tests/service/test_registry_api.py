"""The registry front's API as the distribution spec words it, spoken to over HTTP in the
embedded default: media types as the client accepts them, digests and exact lengths,
ranges of layers, HEAD that never builds, the spec's error codes, partial squashes by a
tag suffix, and the source's digest passed through."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from squash.oci import DOCKER_MANIFEST, OCI_MANIFEST
from testbed.registry import Registry
from testbed.service import WebServer
from tests.integration.helpers import digest_of
from tests.service.fixtures import embedded_web
from tests.service.test_export_service import push_image, wait_until

pytestmark = pytest.mark.integration
DOCKER_ONLY = {"Accept": DOCKER_MANIFEST}


@pytest.fixture(scope="module")
def web(registry: Registry, tmp_path_factory) -> Iterator[WebServer]:
    with embedded_web(registry, tmp_path_factory.mktemp("front-api")) as server:
        yield server


@pytest.fixture(scope="module")
def pushed(registry: Registry, tmp_path_factory) -> str:
    """svc/front:v1, two layers (the second whites out a file of the first)."""
    push_image(registry, tmp_path_factory.mktemp("front-image"), "front", seed=701)
    return "svc/front"


def _error(body: bytes) -> str:
    (error,) = json.loads(body)["errors"]
    assert error["message"], error
    return error["code"]


def _get(web: WebServer, path: str, headers: dict[str, str] | None = None, **kw):
    return web.get(path, headers, timeout=120, **kw)


def test_manifests_in_the_form_the_client_accepts(web: WebServer, pushed: str) -> None:
    status, headers, oci = _get(web, f"/v2/{pushed}/manifests/v1")
    assert status == 200, oci
    assert headers["content-type"] == OCI_MANIFEST
    assert headers["docker-content-digest"] == digest_of(oci)
    assert int(headers["content-length"]) == len(oci)
    assert headers["docker-distribution-api-version"] == "registry/2.0"
    status, headers, docker = _get(web, f"/v2/{pushed}/manifests/v1", DOCKER_ONLY)
    assert status == 200 and headers["content-type"] == DOCKER_MANIFEST, docker
    assert headers["docker-content-digest"] == digest_of(docker)
    first, second = json.loads(oci), json.loads(docker)
    assert [layer["digest"] for layer in first["layers"]] == [
        layer["digest"] for layer in second["layers"]
    ]
    assert second["layers"][0]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert second["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    for body in (oci, docker):  # by digest, whatever the client accepts
        status, headers, again = _get(web, f"/v2/{pushed}/manifests/{digest_of(body)}", DOCKER_ONLY)
        assert (status, again) == (200, body)
        status, headers, head = _get(
            web, f"/v2/{pushed}/manifests/{digest_of(body)}", method="HEAD"
        )
        assert status == 200 and head == b"" and int(headers["content-length"]) == len(body)


def test_blobs_by_digest_with_ranges(web: WebServer, pushed: str) -> None:
    _, _, body = _get(web, f"/v2/{pushed}/manifests/v1")
    manifest = json.loads(body)
    config = manifest["config"]
    status, headers, data = _get(web, f"/v2/{pushed}/blobs/{config['digest']}")
    assert status == 200 and digest_of(data) == config["digest"] and len(data) == config["size"]
    (layer,) = manifest["layers"]
    path = f"/v2/{pushed}/blobs/{layer['digest']}"
    status, headers, data = _get(web, path)
    assert status == 200 and digest_of(data) == layer["digest"], headers
    assert int(headers["content-length"]) == layer["size"] == len(data)
    status, headers, part = _get(web, path, {"Range": "bytes=100-4195"})
    assert status == 206 and part == data[100:4196]
    assert headers["content-range"] == f"bytes 100-4195/{len(data)}"
    status, headers, tail = _get(web, path, {"Range": "bytes=-10"})
    assert status == 206 and tail == data[-10:]
    status, headers, _ = _get(web, path, {"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(data)}"
    status, headers, head = _get(web, path, method="HEAD")
    assert status == 200 and head == b"" and int(headers["content-length"]) == len(data)


def test_head_never_builds(web: WebServer, registry: Registry, tmp_path: Path) -> None:
    push_image(registry, tmp_path, "front-head", seed=702)
    status, _, body = _get(web, "/v2/svc/front-head/manifests/v1", method="HEAD")
    assert status == 404, body
    status, headers, _ = _get(web, "/c1/squash/svc/front-head/v1", method="HEAD")
    assert headers.get("x-squashd-state") == "absent", "a HEAD started a build"
    status, _, body = _get(web, "/v2/svc/front-head/manifests/v1")
    assert status == 200, body
    status, _, _ = _get(web, "/v2/svc/front-head/manifests/v1", method="HEAD")
    assert status == 200


def test_unknown_things_get_the_spec_codes(web: WebServer, pushed: str) -> None:
    status, _, body = _get(web, f"/v2/{pushed}/manifests/no-such-tag")
    assert status == 404 and _error(body) == "MANIFEST_UNKNOWN", body
    status, _, body = _get(web, "/v2/svc/no-such-repo/manifests/v1")
    assert status == 404 and _error(body) == "MANIFEST_UNKNOWN", body
    unknown = "sha256:" + "0" * 64
    status, _, body = _get(web, f"/v2/{pushed}/blobs/{unknown}")
    assert status == 404 and _error(body) == "BLOB_UNKNOWN", body
    status, _, body = _get(web, f"/v2/{pushed}/manifests/{unknown}")
    assert status == 404 and _error(body) == "MANIFEST_UNKNOWN", body
    # a blob of one repository is not found under another
    _, _, manifest = _get(web, f"/v2/{pushed}/manifests/v1")
    layer = json.loads(manifest)["layers"][0]["digest"]
    status, _, body = _get(web, f"/v2/svc/other/blobs/{layer}")
    assert status == 404 and _error(body) == "BLOB_UNKNOWN", body
    status, _, body = _get(web, "/v2/")
    assert status == 200 and json.loads(body) == {}


def test_keep_suffix_and_sourcedigest_of(web: WebServer, registry: Registry, pushed: str) -> None:
    """`v1--keep-1` keeps the source's bottom layer as it is; the source's own manifest
    digest is the source's manifest, passed through unchanged."""
    source = registry.manifest(pushed, "v1")
    assert source is not None
    status, _, body = _get(web, f"/v2/{pushed}/manifests/v1--keep-1")
    assert status == 200, body
    layers = json.loads(body)["layers"]
    assert len(layers) == 2 and layers[0]["digest"] == source["layers"][0]["digest"], layers
    status, headers, original = registry.get(f"/v2/{pushed}/manifests/v1", {"Accept": OCI_MANIFEST})
    source_digest = headers["docker-content-digest"]
    status, headers, by_digest = _get(web, f"/v2/{pushed}/manifests/{source_digest}")
    assert status == 200, by_digest
    assert by_digest == original and headers["docker-content-digest"] == source_digest


def test_pulls_count_for_popularity_and_metrics(web: WebServer, pushed: str) -> None:
    """A manifest GET is a pull, by tag or by the digest handed out (containerd's pull:
    a HEAD of the tag, then a GET by digest); a HEAD is not. The pre-squash ranks the
    tag like a /c1 request."""
    before = web.metrics().get("squashd_registry_pulls_total", 0)
    status, headers, _ = _get(web, f"/v2/{pushed}/manifests/v1")
    assert status == 200
    assert web.metrics()["squashd_registry_pulls_total"] == before + 1
    _get(web, f"/v2/{pushed}/manifests/v1", method="HEAD")
    _get(web, f"/v2/{pushed}/manifests/{headers['docker-content-digest']}", method="HEAD")
    assert web.metrics()["squashd_registry_pulls_total"] == before + 1
    _get(web, f"/v2/{pushed}/manifests/{headers['docker-content-digest']}")
    assert web.metrics()["squashd_registry_pulls_total"] == before + 2

    def ranked() -> bool:  # counts reach the board in batches (SQUASHD_USAGE_FLUSH_SECONDS)
        status, _, page = _get(web, "/")
        assert status == 200 and b"registry pulls" in page
        return pushed.encode() in page

    wait_until("the pulled tag among the most requested", ranked, timeout=10)


def test_an_accept_header_sent_as_several_lines_counts_whole(web: WebServer, pushed: str) -> None:
    """Go clients (docker, containerd) send one `Accept` line per media type, in map
    order: the OCI manifest is chosen whichever line comes first."""
    import http.client

    _, expected, _ = _get(web, f"/v2/{pushed}/manifests/v1")
    for lines in ([DOCKER_MANIFEST, OCI_MANIFEST], [OCI_MANIFEST, DOCKER_MANIFEST]):
        connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=60)
        try:
            connection.putrequest("GET", f"/v2/{pushed}/manifests/v1")
            for kind in lines:
                connection.putheader("Accept", kind)
            connection.endheaders()
            response = connection.getresponse()
            response.read()
        finally:
            connection.close()
        assert response.status == 200
        assert response.getheader("content-type") == OCI_MANIFEST, lines
        assert response.getheader("docker-content-digest") == expected["docker-content-digest"]
