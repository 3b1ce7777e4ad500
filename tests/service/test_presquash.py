"""Celery beat pre-squashes the most requested tags: a tag pushed anew is built on the
scheduled queue before anyone asks again, and the next request is a cache hit.

The deployment has an export worker, a worker for the scheduled queue and beat, with
a one-second pre-squash interval.
"""

from __future__ import annotations

import json
import time

import pytest

from tasks.spec import ExportSpec, default_tag
from testbed.registry import Registry
from testbed.service import Stack
from tests.service.fixtures import RESOLVE_CACHE
from tests.service.test_export_service import push_image, squash_ok, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(make_stack, registry: Registry) -> Stack:
    stack = make_stack(
        registry.host,
        SQUASHD_PRESQUASH_INTERVAL="1",
        SQUASHD_PRESQUASH_TOP="5",
        SQUASHD_JANITOR_INTERVAL="2",
    )
    stack.add_worker(queues="squashd.scheduled")
    stack.add_beat()
    return stack


def _default_key(registry: Registry, name: str, digest: str) -> str:
    """The artifact key a plain /c1 request for svc/NAME:v1 at `digest` resolves to."""
    repository = f"svc/{name}"
    tag = default_tag(registry.host, repository, "v1")
    spec = ExportSpec(registry.host, repository, "v1", digest, "linux/amd64", tag, "gzip")
    return spec.key


def test_a_new_push_is_squashed_before_the_next_request(stack, registry, tmp_path) -> None:
    export_worker, scheduled_worker = stack.workers
    push_image(registry, tmp_path, "gone", seed=601)
    push_image(registry, tmp_path, "popular", seed=602)
    for _ in range(4):  # the most requested tag, soon to vanish from the registry
        squash_ok(stack, "svc/gone/v1", tmp_path / "gone.tar")
    for _ in range(2):
        squash_ok(stack, "svc/popular/v1", tmp_path / "old.tar")
    gone_digest = registry.get(
        "/v2/svc/gone/manifests/v1", {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    )[1]
    status, _, _ = registry.get(
        f"/v2/svc/gone/manifests/{gone_digest['docker-content-digest']}", method="DELETE"
    )  # fmt: skip
    assert status == 202

    digest, _ = push_image(registry, tmp_path, "popular", seed=603)  # the tag moves
    key = _default_key(registry, "popular", digest)
    ready = wait_until(
        "the scheduled job to squash the new push",
        lambda: (
            (s := stack.web.get(f"/v1/exports/{key}"))[0] == 200
            and json.loads(s[2])["state"] == "ready"
        ),
        timeout=90,
        explain=stack.describe,
    )
    assert ready
    assert any(digest in line for line in scheduled_worker.log_lines("build started"))
    assert not any(digest in line for line in export_worker.log_lines("build started"))
    assert scheduled_worker.log_lines("pre-squash of") and any(
        "svc/gone:v1 skipped" in line for line in scheduled_worker.log_lines("skipped")
    ), stack.describe()

    builds = stack.builds_started()
    time.sleep(RESOLVE_CACHE + 0.2)  # the caller's resolution of the moved tag runs out
    _, headers = squash_ok(stack, "svc/popular/v1", tmp_path / "new.tar")
    assert headers["x-squashd-cache"] == "hit" and headers["x-squashd-export"] == key
    assert stack.builds_started() == builds

    # the janitor ran too (every 2 s): it counted what the store holds
    wait_until("the janitor's count", lambda: stack.metrics().get("squashd_artifacts") == 3)


def test_a_popular_multi_platform_tag_is_presquashed_for_every_platform(
    stack, pushed, tmp_path
) -> None:
    """Asked for once (its default platform built on request), a multi-platform tag is
    pre-squashed for its other platforms too: a registry pull's HEAD, which never builds,
    then finds the whole index."""
    export_worker, scheduled_worker = stack.workers
    squash_ok(stack, f"{pushed.multi}/{pushed.tag}", tmp_path / "multi.tar")
    assert len(export_worker.log_lines("build started")) == 1
    path = f"/v2/{pushed.multi}/manifests/{pushed.tag}"
    wait_until(
        "every platform of the tag pre-squashed",
        lambda: stack.web.get(path, method="HEAD")[0] == 200,
        timeout=120,
        explain=stack.describe,
    )
    assert len(export_worker.log_lines("build started")) == 1, stack.describe()
    assert len(scheduled_worker.log_lines("build started")) >= 2, stack.describe()
    status, headers, _ = stack.web.get(path, method="HEAD")
    assert status == 200
    assert headers["content-type"] == "application/vnd.oci.image.index.v1+json"
