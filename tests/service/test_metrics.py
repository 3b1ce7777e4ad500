"""/metrics parses with the Prometheus client's own parser, and its counters move as
requests and builds happen (worker-side counters too: they come through the board)."""

from __future__ import annotations

import pytest

from tests.service.test_export_service import push_image, squash_ok

pytestmark = pytest.mark.integration

C1 = "endpoint=/c1/squash/{path:path}"


def _delta(before: dict[str, float], after: dict[str, float], series: str) -> float:
    return after.get(series, 0.0) - before.get(series, 0.0)


def test_metrics_move_with_requests_and_builds(make_stack, registry, tmp_path) -> None:
    stack = make_stack(registry.host)
    push_image(registry, tmp_path, "counted", seed=801)
    before = stack.metrics()
    assert before["squashd_board_up"] == 1
    assert "squashd_queue_depth{queue=squashd.export}" in before

    data, _ = squash_ok(stack, "svc/counted/v1", tmp_path / "1.tar")  # a miss and a build
    squash_ok(stack, "svc/counted/v1", tmp_path / "2.tar")  # a hit
    assert stack.c1("svc/absent/v1")[0] == 404
    after = stack.metrics()

    assert _delta(before, after, f"squashd_requests_total{{{C1},outcome=served}}") == 2
    assert _delta(before, after, f"squashd_requests_total{{{C1},outcome=not_found}}") == 1
    assert _delta(before, after, "squashd_cache_lookups_total{result=hit}") == 1
    assert _delta(before, after, "squashd_cache_lookups_total{result=miss}") == 1
    assert _delta(before, after, "squashd_builds_started_total") == 1
    assert _delta(before, after, "squashd_builds_succeeded_total") == 1
    assert _delta(before, after, "squashd_builds_failed_total") == 0
    assert _delta(before, after, "squashd_build_seconds_count") == 1
    assert _delta(before, after, "squashd_build_seconds_bucket{le=+Inf}") == 1
    assert _delta(before, after, "squashd_build_seconds_sum") > 0
    assert _delta(before, after, "squashd_build_bytes_total") == len(data)
    assert _delta(before, after, "squashd_artifacts") == 1
    assert _delta(before, after, "squashd_artifact_bytes") == len(data)
    assert after["squashd_exports{state=building}"] == 0
    assert after["squashd_queue_depth{queue=squashd.export}"] == 0


def test_queue_depth_counts_builds_nobody_took(make_stack, registry, tmp_path) -> None:
    stack = make_stack(registry.host, workers=0)
    push_image(registry, tmp_path, "waiting", seed=802)
    status, _, _ = stack.c1("svc/waiting/v1?wait=0")
    assert status == 202
    after = stack.metrics()
    assert after["squashd_queue_depth{queue=squashd.export}"] == 1
    assert after["squashd_exports{state=queued}"] == 1
    stack.add_worker()
    assert stack.c1("svc/waiting/v1")[0] == 302
    assert stack.metrics()["squashd_queue_depth{queue=squashd.export}"] == 0
