"""The export service end to end, with real processes: redis-server, moto's S3 server,
the distribution registry (behind the fault proxy, so a download can be held or
broken), the web process and Celery worker processes.

Each test pushes images of its own (names under `svc/`), so the tests of a module can
share one deployment.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from testbed.process import http_get
from testbed.registry import Registry, push
from testbed.service import Stack, fetch
from testbed.tools import run
from tests.integration.helpers import LayerBuilder, SquashedArchive, sha256_hex, umoci_unpack
from tests.registry.harness import SQUASHD, FaultProxy, random_bytes
from tests.service.fixtures import RESOLVE_CACHE
from tests.service.harness import assert_same_rootfs, push_layers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(make_module_stack, module_proxy: FaultProxy) -> Stack:
    return make_module_stack(module_proxy.host)


def image_layers(seed: int, size: int = 300_000) -> list[bytes]:
    """Two layers: a big incompressible file and one to delete, then the deletion."""
    return [
        LayerBuilder()
        .dir("app")
        .file("app/blob.bin", random_bytes(size, seed))
        .file("app/old", b"old\n")
        .tar(),
        LayerBuilder().whiteout("app/old").file("app/seed", f"{seed}\n".encode()).tar(),
    ]


def push_image(registry: Registry, work: Path, name: str, seed: int, size: int = 300_000):
    """Push a fresh image to `registry` as svc/NAME:v1: (digest, reference rootfs)."""
    digest, ref = push_layers(work / f"{name}-{seed}", registry.ref(f"svc/{name}", "v1"),
                              image_layers(seed, size))  # fmt: skip
    rootfs = umoci_unpack(ref, work / f"{name}-{seed}.bundle")
    return digest, rootfs


def export_by_c1(web_url: str, registry: Registry, work: Path, name: str, seed: int, explain):
    """A fresh image pushed as svc/NAME:v1, GET /c1 of it from the web at `web_url` and
    its redirect followed: the archive's RepoTags (on failure, `explain()`: the logs)."""
    push_image(registry, work, name, seed)
    status, headers, body = http_get(f"{web_url}/c1/squash/svc/{name}/v1", timeout=120)
    assert status == 302, f"{body!r}\n{explain()[-4000:]}"
    fetch(headers["location"], work / f"{name}.tar")
    tags: list[str] = SquashedArchive.open(work / f"{name}.tar").manifest_json[0]["RepoTags"]
    return tags


def layer_digest(registry: Registry, name: str, index: int = 0) -> str:
    manifest = registry.manifest(f"svc/{name}", "v1")
    assert manifest is not None, f"svc/{name}:v1 is not in the registry"
    return manifest["layers"][index]["digest"]


def squash_ok(stack: Stack, path: str, dest: Path, headers: dict[str, str] | None = None):
    """GET /c1/squash/PATH, follow the redirect: (archive bytes, the 302's headers)."""
    status, got, body = stack.c1(path, headers)
    assert status == 302, f"{status} {body[:500]!r}\n{stack.describe()}"
    return fetch(got["location"], dest), got


def wait_until(what: str, check, timeout: float = 60, explain=None):
    """`check()`'s first true value; after `timeout`, fail (with `explain()`: the logs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{explain()}" if explain else ""))


# ---------------------------------------------------------------------------------------
# The happy path, judged by skopeo + umoci; S3 sizes and sha256
# ---------------------------------------------------------------------------------------


def test_c1_redirects_to_an_exact_artifact(stack, registry, images, tmp_path) -> None:
    push(images.umoci, registry.ref("svc/sample", "v1"))
    archive = tmp_path / "squashed.tar"
    data, headers = squash_ok(stack, "svc/sample/v1", archive)
    key = headers["x-squashd-export"]
    assert headers["x-squashd-cache"] == "miss"
    assert headers["etag"] == f'"{sha256_hex(data)}"'

    assert_same_rootfs(archive, images.umoci_rootfs, tmp_path)

    s3 = stack.moto.client()
    head = s3.head_object(Bucket=stack.bucket, Key=stack.object_key(key))
    assert head["ContentLength"] == len(data)
    tags = s3.get_object_tagging(Bucket=stack.bucket, Key=stack.object_key(key))["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags}["sha256"] == sha256_hex(data)

    doc = stack.export_status(key)
    assert doc["state"] == "ready" and doc["size"] == len(data)
    assert doc["sha256"] == sha256_hex(data) and doc["builds"] == 1
    assert doc["progress"]["done"] == doc["progress"]["total"] > 0

    squashed = SquashedArchive.open(archive)
    proxy_host = doc["image"].split("/")[0]
    assert squashed.manifest_json[0]["RepoTags"] == [f"{proxy_host}/svc/sample:v1.squash"]
    index = squashed.json("index.json")
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == (
        "v1.squash"
    )

    # The service writes what the command line writes for the same source: the bytes
    # podman load, docker load and skopeo are shown to accept in tests/integration.
    cli = tmp_path / "cli.tar"
    source = f"docker://{doc['source'].removeprefix('docker://')}"
    run([SQUASHD, "export", source, "-o", cli, "-q", "--layer-compression", "gzip",
         "--tag", doc["tag"]])  # fmt: skip
    assert cli.read_bytes() == data


def test_head_never_starts_a_build(stack, registry, tmp_path) -> None:
    push_image(registry, tmp_path, "head", seed=11)
    received = stack.tasks_received()
    status, headers, body = stack.c1("svc/head/v1", method="HEAD")
    assert status == 404 and headers["x-squashd-state"] == "absent" and body == b""
    time.sleep(1)
    assert stack.tasks_received() == received
    assert stack.redis.client(stack.redis_db).llen("squashd.export") == 0

    data, _ = squash_ok(stack, "svc/head/v1", tmp_path / "a.tar")
    status, headers, _ = stack.c1("svc/head/v1", method="HEAD")
    assert status == 302
    request = urllib.request.Request(headers["location"], method="HEAD")
    with urllib.request.urlopen(request) as response:  # presigned for HEAD
        assert int(response.headers["Content-Length"]) == len(data)


# ---------------------------------------------------------------------------------------
# Built once: concurrent requests, cache hits, moved tags
# ---------------------------------------------------------------------------------------


def test_twenty_concurrent_requests_make_one_build(stack, registry, upstream, tmp_path) -> None:
    push_image(registry, tmp_path, "crowd", seed=21, size=2 << 20)
    hold = upstream.hold(layer_digest(registry, "crowd"), after=64 << 10)
    builds, received = stack.builds_started(), stack.tasks_received()
    with ThreadPoolExecutor(20) as pool:
        answers = [pool.submit(stack.c1, "svc/crowd/v1") for _ in range(20)]
        assert hold.reached.wait(60), stack.describe()
        time.sleep(1.5)  # every request has arrived and is waiting for the build
        hold.release()
        results = [answer.result() for answer in answers]
    assert [status for status, _, _ in results] == [302] * 20, results[0][2]
    keys = {headers["x-squashd-export"] for _, headers, _ in results}
    assert len(keys) == 1
    targets = {headers["location"].split("?")[0] for _, headers, _ in results}
    assert len(targets) == 1
    assert stack.builds_started() - builds == 1, stack.describe()
    assert stack.tasks_received() - received == 1, stack.describe()
    assert stack.export_status(keys.pop())["builds"] == 1


def test_second_request_is_a_cache_hit_and_starts_no_task(stack, registry, tmp_path) -> None:
    push_image(registry, tmp_path, "again", seed=31)
    first, headers = squash_ok(stack, "svc/again/v1", tmp_path / "1.tar")
    builds, received = stack.builds_started(), stack.tasks_received()
    second, again = squash_ok(stack, "svc/again/v1", tmp_path / "2.tar")
    assert again["x-squashd-cache"] == "hit"
    assert again["x-squashd-export"] == headers["x-squashd-export"]
    assert second == first
    time.sleep(1)
    assert stack.redis.client(stack.redis_db).llen("squashd.export") == 0
    assert (stack.builds_started(), stack.tasks_received()) == (builds, received)


def test_a_new_push_to_the_tag_builds_anew(stack, registry, tmp_path) -> None:
    push_image(registry, tmp_path, "moving", seed=41)
    old, old_headers = squash_ok(stack, "svc/moving/v1", tmp_path / "old.tar")
    _, rootfs = push_image(registry, tmp_path, "moving", seed=42)
    time.sleep(RESOLVE_CACHE + 0.2)  # the caller's resolution of the tag runs out
    new, new_headers = squash_ok(stack, "svc/moving/v1", tmp_path / "new.tar")
    assert new_headers["x-squashd-cache"] == "miss"
    assert new_headers["x-squashd-export"] != old_headers["x-squashd-export"]
    assert new != old
    assert_same_rootfs(tmp_path / "new.tar", rootfs, tmp_path)
    assert (rootfs / "app/seed").read_text() == "42\n"


# ---------------------------------------------------------------------------------------
# The export API
# ---------------------------------------------------------------------------------------


def _post(stack: Stack, body: dict, headers: dict[str, str] | None = None, query: str = ""):
    request = urllib.request.Request(
        f"{stack.web.url}/v1/exports{query}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read())


def test_export_api_states_progress_and_download(stack, registry, upstream, tmp_path) -> None:
    push_image(registry, tmp_path, "api", seed=51, size=1 << 20)
    hold = upstream.hold(layer_digest(registry, "api"), after=256 << 10)
    image = f"{upstream.host}/svc/api:v1"
    request = {"image": image, "tag": "flat/app:1", "layer_compression": "zstd"}
    status, headers, doc = _post(stack, request)
    assert status == 202 and doc["state"] in ("queued", "building"), doc
    key = doc["id"]
    assert headers["location"] == f"/v1/exports/{key}" == doc["links"]["self"]
    assert hold.reached.wait(60)
    building = wait_until("progress", lambda: (d := stack.export_status(key))["state"]
                          == "building" and d["progress"]["done"] > 0 and d)  # fmt: skip
    assert 0 < building["progress"]["done"] < building["progress"]["total"]
    status, headers, body = stack.web.get(f"/v1/exports/{key}/download")
    assert status == 202 and headers["retry-after"] and json.loads(body)["state"] == "building"
    hold.release()
    done = wait_until("ready", lambda: (d := stack.export_status(key))["state"] == "ready" and d)
    assert done["tag"] == "flat/app:1" and done["layer_compression"] == "zstd"

    status, headers, _ = stack.web.get(f"/v1/exports/{key}/download")
    assert status == 302
    data = fetch(headers["location"], tmp_path / "api.tar")
    assert len(data) == done["size"] and sha256_hex(data) == done["sha256"]
    squashed = SquashedArchive.open(tmp_path / "api.tar")
    assert squashed.manifest_json[0]["RepoTags"] == ["flat/app:1"]
    manifest_digest = squashed.json("index.json")["manifests"][0]["digest"]
    manifest = squashed.json(f"blobs/sha256/{manifest_digest.removeprefix('sha256:')}")
    assert manifest["layers"][0]["mediaType"].endswith("tar+zstd")

    status, _, again = _post(stack, request)
    assert status == 200 and again["state"] == "ready" and again["id"] == key


def test_keep_base_is_its_own_artifact_on_the_registry_blobs(
    stack, registry, upstream, tmp_path
) -> None:
    """`?keep_base=1` on /c1 and `keep_base` in POST /v1/exports name one artifact, apart
    from the full squash: the registry's bottom blob as it is, the rest squashed on top;
    skopeo + umoci unpack it to the original tree. Keeping every layer fails the build,
    saying so."""
    _, rootfs = push_image(registry, tmp_path, "partial", seed=61)
    full, full_headers = squash_ok(stack, "svc/partial/v1", tmp_path / "full.tar")
    archive = tmp_path / "partial.tar"
    data, headers = squash_ok(stack, "svc/partial/v1?keep_base=1", archive)
    key = headers["x-squashd-export"]
    assert key != full_headers["x-squashd-export"] and data != full
    assert_same_rootfs(archive, rootfs, tmp_path)
    squashed = SquashedArchive.open(archive)
    manifest_digest = squashed.json("index.json")["manifests"][0]["digest"]
    manifest = squashed.json(f"blobs/sha256/{manifest_digest.removeprefix('sha256:')}")
    kept, _squashed = manifest["layers"]
    assert kept["digest"] == layer_digest(registry, "partial")
    doc = stack.export_status(key)
    assert doc["keep_base"] == 1
    status, _, again = _post(stack, {"image": doc["image"], "keep_base": 1})
    assert status == 200 and again["id"] == key

    status, _, body = stack.c1("svc/partial/v1?keep_base=2")
    assert status == 502, (status, body[:300])
    assert "cannot keep 2 of its 2 layers" in json.loads(body)["error"], body


def test_export_api_rejects_what_it_cannot_serve(stack, registry) -> None:
    status, _, doc = _post(stack, {"image": "quay.io/somebody/app:1"})
    assert status == 403 and "SQUASHD_ALLOWED_REGISTRIES" in doc["error"]
    status, _, doc = _post(stack, {"image": "NOT A REFERENCE"})
    assert status == 400 and "NOT A REFERENCE" in doc["error"]
    status, _, doc = _post(stack, {"image": "x/y:1", "layer_compression": "lzma"})
    assert status == 422
    proxy_host = stack.env["SQUASHD_REGISTRY"]
    status, _, doc = _post(stack, {"image": f"{proxy_host}/svc/absent:v1"})
    assert status == 404 and "not found" in doc["error"]
    status, _, body = stack.web.get(f"/v1/exports/{'0' * 64}")
    assert status == 404, body
    status, _, body = stack.web.get("/v1/exports/not-an-id")
    assert status == 422, body


def test_wait_runs_out_with_202_and_a_status_link(stack, registry, upstream, tmp_path) -> None:
    push_image(registry, tmp_path, "slow", seed=61, size=1 << 20)
    hold = upstream.hold(layer_digest(registry, "slow"), after=128 << 10)
    status, headers, body = stack.c1("svc/slow/v1?wait=1")
    assert status == 202, body
    doc = json.loads(body)
    assert headers["retry-after"].isdigit() and headers["location"] == doc["links"]["self"]
    hold.release()
    data, _ = squash_ok(stack, "svc/slow/v1", tmp_path / "slow.tar")
    assert data


# ---------------------------------------------------------------------------------------
# Failures: permanent ones reported, transient ones retried
# ---------------------------------------------------------------------------------------


def test_corrupt_blob_fails_the_build_with_its_reason(stack, registry, upstream, tmp_path):
    push_image(registry, tmp_path, "corrupt", seed=71)
    blob = layer_digest(registry, "corrupt")
    upstream.flip(blob)  # every download of it
    status, _, body = stack.c1("svc/corrupt/v1")
    assert status == 502, body
    error = json.loads(body)["error"]
    assert "digest mismatch" in error and blob[:19] in error and "svc/corrupt" in error
    key = json.loads(body)["id"]
    assert not [k for k in stack.objects() if key in k]
    assert not [u for u in stack.uploads() if key in u["Key"]]
    builds = stack.builds_started()
    status, _, body = stack.c1("svc/corrupt/v1")  # reported again, not rebuilt at once
    assert status == 502 and "digest mismatch" in json.loads(body)["error"]
    assert stack.builds_started() == builds
    assert stack.export_status(key)["state"] == "failed"


def test_transient_registry_failure_is_retried(stack, registry, upstream, tmp_path) -> None:
    push_image(registry, tmp_path, "flaky", seed=81)
    blob = layer_digest(registry, "flaky")
    # every download of it fails until the first build has given up (however many
    # requests for the blob that build makes at once)
    rule = upstream.fail(blob, 503, times=None, methods=("GET",))
    status, _, body = stack.c1("svc/flaky/v1?wait=0")
    assert status == 202, body
    key = json.loads(body)["id"]

    def gave_up() -> bool:
        return "503" in (stack.export_status(key)["error"] or "")

    wait_until("the first build to give up", gave_up, explain=stack.describe)
    rule.times = 0
    data, headers = squash_ok(stack, "svc/flaky/v1", tmp_path / "flaky.tar")
    doc = stack.export_status(headers["x-squashd-export"])
    assert doc["builds"] == 2 and doc["state"] == "ready", doc
    assert len(data) == doc["size"]


def test_build_logs_are_json_lines_naming_image_digest_and_task(stack, registry, tmp_path):
    digest, _ = push_image(registry, tmp_path, "logged", seed=91)
    status, _, body = stack.c1("svc/logged/v1")
    assert status == 302, body
    image = f"{stack.env['SQUASHD_REGISTRY']}/svc/logged:v1"
    lines = [json.loads(line) for w in stack.workers for line in w.full_log().splitlines()
             if line.startswith("{")]  # fmt: skip
    about = [line for line in lines if line.get("digest") == digest]
    messages = " | ".join(line["message"] for line in about)
    for expected in ("received", "build started", "build done", "succeeded"):
        assert expected in messages, f"no {expected!r} line with the digest: {messages}"
    task_ids = {line["task_id"] for line in about}
    assert len(task_ids) == 1 and all(line["image"] == image for line in about)
    (task_id,) = task_ids
    mentioning = [line for line in lines if task_id in line["message"]]
    assert mentioning and all(line.get("digest") == digest for line in mentioning)
