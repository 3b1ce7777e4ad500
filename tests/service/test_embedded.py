"""The embedded default: no broker, no storage URL, one process. Artifacts are served
from the local directory with an exact Content-Length, a content ETag and Range."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.registry import Registry
from testbed.service import WebServer
from tests.service.fixtures import embedded_web
from tests.service.harness import assert_same_rootfs
from tests.service.test_export_service import push_image

pytestmark = pytest.mark.integration


@pytest.fixture
def web(registry: Registry, tmp_path: Path) -> Iterator[WebServer]:
    with embedded_web(registry, tmp_path / "web") as server:
        yield server


def test_embedded_serves_the_file_with_range_and_etag(web, registry, tmp_path) -> None:
    _, rootfs = push_image(registry, tmp_path, "embedded", seed=501)
    assert json.loads(web.get("/readyz")[2]) == {
        "ready": True, "board": "ok", "store": "ok", "broker": "ok"
    }  # fmt: skip
    status, headers, data = web.get("/c1/squash/svc/embedded/v1", timeout=120)
    assert status == 200, f"{data[:300]!r}\n{web.log()}"
    assert int(headers["content-length"]) == len(data)
    assert headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert headers["content-type"] == "application/x-tar"
    assert "attachment" in headers["content-disposition"]
    archive = tmp_path / "embedded.tar"
    archive.write_bytes(data)
    assert_same_rootfs(archive, rootfs, tmp_path)

    store = web.root / "cache" / "squashd" / "artifacts"  # $XDG_CACHE_HOME/squashd/artifacts
    key = headers["x-squashd-export"]
    assert (store / f"{key}.tar").read_bytes() == data
    assert not [p for p in os.listdir(store) if p.endswith(".part")]

    status, part_headers, part = web.get("/c1/squash/svc/embedded/v1", {"Range": "bytes=1000-1999"})
    assert status == 206 and part == data[1000:2000]
    assert part_headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    status, _, _ = web.get("/c1/squash/svc/embedded/v1", {"If-None-Match": headers["etag"]})
    assert status == 304
    status, head, body = web.get("/c1/squash/svc/embedded/v1", method="HEAD")
    assert status == 200 and body == b"" and int(head["content-length"]) == len(data)
    status, again, _ = web.get(f"/v1/exports/{key}/download")
    assert status == 200 and again["etag"] == headers["etag"]


def test_embedded_head_starts_nothing(web, registry, tmp_path) -> None:
    push_image(registry, tmp_path, "embedded-head", seed=502)
    status, headers, _ = web.get("/c1/squash/svc/embedded-head/v1", method="HEAD")
    assert status == 404 and headers["x-squashd-state"] == "absent"
    time.sleep(0.5)
    store = web.root / "cache" / "squashd" / "artifacts"
    assert not store.exists() or os.listdir(store) == []


def test_embedded_runs_the_schedule_in_process(registry, tmp_path) -> None:
    """No beat and no workers: the web process pre-squashes a moved tag by itself."""
    env = {"SQUASHD_REGISTRY": registry.host, "SQUASHD_PRESQUASH_INTERVAL": "1"}
    web = WebServer(tmp_path / "web", env).start()
    try:
        push_image(registry, tmp_path, "embedded-moving", seed=503)
        status, first, _ = web.get("/c1/squash/svc/embedded-moving/v1", timeout=120)
        assert status == 200
        push_image(registry, tmp_path, "embedded-moving", seed=504)
        store = web.root / "cache" / "squashd" / "artifacts"
        deadline = time.monotonic() + 60
        while len(list(store.glob("*.tar"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(list(store.glob("*.tar"))) == 2, web.log()
        # a caller sees the moved tag once its resolution cache runs out (5 s by default)
        deadline = time.monotonic() + 5 + 5
        while True:
            status, second, _ = web.get("/c1/squash/svc/embedded-moving/v1", method="HEAD")
            moved = second.get("x-squashd-export") != first["x-squashd-export"]
            if moved or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200 and second["x-squashd-cache"] == "hit"
        assert moved, "the moved tag was not seen after the resolve cache's time"
    finally:
        web.stop()


def test_framework_routes_are_counted_by_their_path(web) -> None:
    """/docs is FastAPI's own (Starlette) route: counted under its path, not "unmatched"."""
    from prometheus_client.parser import text_string_to_metric_families

    assert web.get("/docs")[0] == 200
    assert web.get("/no/such/route")[0] == 404
    status, _, body = web.get("/metrics")
    assert status == 200
    counted = {
        (s.labels["endpoint"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == "squashd_requests_total"
    }
    assert counted[("/docs", "served")] == 1
    assert counted[("unmatched", "not_found")] == 1
