"""An archive deleted behind the service's back (an S3 lifecycle rule, a hand in the
artifact directory) while its record is still cached: the registry front says so with
the spec's codes instead of a 503, forgets the record, and the next pull builds it
again and gets every blob."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.process import http_get
from testbed.registry import Registry
from testbed.service import Stack
from tests.integration.helpers import digest_of
from tests.service.test_export_service import push_image

pytestmark = pytest.mark.integration


def _blob(stack: Stack, name: str, digest: str) -> tuple[int, bytes]:
    """(status, bytes) of a blob GET, a redirect to S3 followed."""
    status, headers, body = stack.web.get(f"/v2/{name}/blobs/{digest}", timeout=60)
    if status == 307:
        status, _, body = http_get(headers["location"], timeout=60)
    return status, body


def _delete_artifacts(stack: Stack) -> None:
    """Every object of the deployment's bucket, or its artifact directory's files."""
    if stack.moto is None:
        shutil.rmtree(stack.root / "artifacts")
        (stack.root / "artifacts").mkdir()
        return
    client = stack.moto.client()
    assert stack.bucket is not None
    for key in stack.objects():
        client.delete_object(Bucket=stack.bucket, Key=key)
    assert stack.objects() == []


@pytest.mark.parametrize("s3", [True, False], ids=["s3", "local"])
def test_a_deleted_archive_is_built_again(
    make_stack: Callable[..., Stack], registry: Registry, tmp_path: Path, s3: bool
) -> None:
    push_image(registry, tmp_path, "gone", seed=733)
    stack = make_stack(registry.host, s3=s3)
    name = "svc/gone"
    status, headers, body = stack.web.get(f"/v2/{name}/manifests/v1", timeout=120)
    assert status == 200, body
    digest = headers["docker-content-digest"]
    layer = json.loads(body)["layers"][0]["digest"]
    status, data = _blob(stack, name, layer)
    assert status == 200 and digest_of(data) == layer
    assert stack.builds_started() == 1

    _delete_artifacts(stack)
    status, body = _blob(stack, name, layer)
    assert status == 404, body
    (error,) = json.loads(body)["errors"]
    assert error["code"] == "BLOB_UNKNOWN" and "no longer in" in error["message"], error

    status, headers, body = stack.web.get(f"/v2/{name}/manifests/v1", timeout=120)
    assert status == 200, body
    assert headers["docker-content-digest"] == digest, "the build again is not the same image"
    assert stack.builds_started() == 2, stack.describe()
    status, data = _blob(stack, name, layer)
    assert status == 200 and digest_of(data) == layer


def test_a_local_archive_removed_by_hand_is_built_again_for_c1(
    make_stack: Callable[..., Stack], registry: Registry, tmp_path: Path
) -> None:
    """/c1 serves a local archive itself: one gone from the directory is noticed (a
    stat) and built again, where it was a 500. (A presigned S3 URL is not checked.)"""
    push_image(registry, tmp_path, "gone-c1", seed=737)
    stack = make_stack(registry.host, s3=False)
    status, _, body = stack.c1("svc/gone-c1/v1")
    assert status == 200 and body, body[:200]
    _delete_artifacts(stack)
    status, _, again = stack.c1("svc/gone-c1/v1")
    assert status == 200, again[:200]
    assert again == body, "the archive built again is not the same bytes"
    assert stack.builds_started() == 2, stack.describe()
