"""What dies does not lose builds or leave half-written artifacts: workers killed with
SIGKILL mid-build, Redis stopped and started again."""

from __future__ import annotations

import json

import pytest

from testbed.process import HOST
from testbed.registry import Registry
from testbed.service import MotoS3, RedisServer, Stack, fetch
from tests.registry.harness import FaultProxy
from tests.service.harness import assert_same_rootfs
from tests.service.test_export_service import layer_digest, push_image, wait_until

pytestmark = pytest.mark.integration


def _held_build(stack: Stack, registry: Registry, proxy: FaultProxy, tmp_path, name: str, seed):
    """Start a build of a fresh image and hold it mid-download: (key, reference rootfs)."""
    _, rootfs = push_image(registry, tmp_path, name, seed=seed, size=3 << 20)
    hold = proxy.hold(layer_digest(registry, name), after=512 << 10)
    status, _, body = stack.c1(f"svc/{name}/v1?wait=0")
    assert status == 202, body
    key = json.loads(body)["id"]
    assert hold.reached.wait(60), stack.describe()
    wait_until("the build to report progress", lambda: stack.export_status(key)["progress"]["done"])
    assert [u["Key"] for u in stack.uploads()] == [stack.object_key(key)]
    return key, rootfs, hold


def _finishes_correctly(stack: Stack, name: str, key: str, rootfs, tmp_path) -> None:
    status, headers, body = stack.c1(f"svc/{name}/v1")
    assert status == 302, f"{status} {body!r}\n{stack.describe()}"
    assert headers["x-squashd-export"] == key
    data = fetch(headers["location"], tmp_path / "redone.tar")
    assert_same_rootfs(tmp_path / "redone.tar", rootfs, tmp_path)
    assert stack.objects() == stack.stored(key)
    assert stack.uploads() == [], "the killed build's multipart upload is still there"
    doc = stack.export_status(key)
    assert doc["builds"] == 2 and doc["size"] == len(data), doc


def test_worker_killed_mid_build_is_redone_by_another(make_stack, registry, fault_proxy, tmp_path):
    stack = make_stack(fault_proxy.host, SQUASHD_BUILD_LEASE="3")  # a dead build's lease ends soon
    key, rootfs, hold = _held_build(stack, registry, fault_proxy, tmp_path, "killed", 101)
    stack.workers[0].kill()  # main process and pool child: the machine died
    hold.release()
    assert stack.objects() == [], "a half-built artifact is visible"
    stack.add_worker()
    # The request waits; the web sees the dead build's lease run out and sends it again.
    _finishes_correctly(stack, "killed", key, rootfs, tmp_path)
    assert len(stack.workers[1].log_lines("build started")) == 1


def test_pool_process_killed_mid_build_is_redelivered(make_stack, registry, fault_proxy, tmp_path):
    stack = make_stack(fault_proxy.host, SQUASHD_BUILD_LEASE="3")
    key, rootfs, hold = _held_build(stack, registry, fault_proxy, tmp_path, "child", 102)
    worker = stack.workers[0]
    worker.kill_child()  # Celery sees its worker lost and requeues the message
    hold.release()
    assert stack.objects() == []
    _finishes_correctly(stack, "child", key, rootfs, tmp_path)
    assert len(worker.log_lines("build started")) == 2
    assert worker.log_lines("WorkerLostError"), worker.log()


def test_redis_down_answers_503_and_recovers_without_restarts(
    make_stack, registry, tmp_path_factory, tmp_path
) -> None:
    redis = RedisServer(tmp_path_factory.mktemp("own-redis")).start()
    try:
        stack = make_stack(registry.host, redis_server=redis, SQUASHD_WAIT_SECONDS="60")
        push_image(registry, tmp_path, "before", seed=301)
        built, _ = stack.c1("svc/before/v1")[:2]
        assert built == 302
        status, _, manifest = stack.web.get("/v2/svc/before/manifests/v1")
        assert status == 200, manifest
        layer = json.loads(manifest)["layers"][0]["digest"]
        push_image(registry, tmp_path, "during", seed=302)
        assert stack.web.get("/readyz")[0] == 200

        redis.stop()
        status, _, body = stack.web.get("/readyz")
        report = json.loads(body)
        assert status == 503 and not report["ready"], report
        assert report["board"] != "ok" and report["broker"] != "ok" and report["store"] == "ok"
        status, _, body = stack.c1("svc/during/v1")
        assert status == 503, body
        error = json.loads(body)["error"]
        assert "Redis" in error and f"{HOST}:{redis.port}" in error and "unreachable" in error
        # what is built stays available: the store still has it
        assert stack.c1("svc/before/v1")[0] == 302
        # a registry pull says the same, in the spec's words (its digests are in Redis)
        for path in ("/v2/svc/during/manifests/v1", f"/v2/svc/before/blobs/{layer}"):
            status, _, body = stack.web.get(path)
            (said,) = json.loads(body)["errors"]
            assert status == 503 and said["code"] == "UNAVAILABLE", body
            assert "Redis" in said["message"] and "unreachable" in said["message"], said

        redis.start()  # the same port, empty: no process is restarted
        wait_until("readiness", lambda: stack.web.get("/readyz")[0] == 200)
        status, _, body = stack.c1("svc/during/v1")
        assert status == 302, f"{body!r}\n{stack.describe()}"
    finally:
        redis.stop()


def test_s3_down_answers_503_naming_the_store(make_stack, registry, tmp_path_factory, tmp_path):
    moto = MotoS3(tmp_path_factory.mktemp("own-moto")).start()
    try:
        stack = make_stack(registry.host, s3_server=moto)
        push_image(registry, tmp_path, "storeless", seed=311)
        moto.stop()
        status, _, body = stack.web.get("/readyz")
        report = json.loads(body)
        assert status == 503 and report["store"] != "ok" and report["board"] == "ok", report
        status, _, body = stack.c1("svc/storeless/v1")
        error = json.loads(body)["error"]
        assert status == 503 and f"s3://{stack.bucket}/artifacts" in error, error
        assert "unreachable" in error
        status, _, body = stack.web.get("/v2/svc/storeless/manifests/v1")
        (said,) = json.loads(body)["errors"]
        assert status == 503 and said["code"] == "UNAVAILABLE", body
        assert f"s3://{stack.bucket}/artifacts" in said["message"], said
        moto.start()  # the same port, but empty: the bucket comes back by hand
        moto.create_bucket(stack.bucket)
        status, _, body = stack.c1("svc/storeless/v1")
        assert status == 302, f"{body!r}\n{stack.describe()}"
    finally:
        moto.stop()
