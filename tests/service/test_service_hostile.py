"""The service under attack or after accidents (issue F4, F7, F9, F10): a build whose
worker died is sent again at the next look at it, or by the beat's sweep when nobody
looks; quotas answer 429; Redis losing its data leaves every export id useful; the
operators' pages can want a token."""

from __future__ import annotations

import json
import secrets

import pytest

from tests.registry.harness import basic_auth
from tests.service.test_export_service import _post, push_image, wait_until
from tests.service.test_service_crashes import _held_build

pytestmark = pytest.mark.integration


def test_a_dead_build_is_sent_again_when_its_status_link_is_read(
    make_stack, registry, fault_proxy, tmp_path
) -> None:
    """F4: the 202's status link (not a new request) resends a build whose lease ran
    out; before, it said "building" for hours (the broker's visibility timeout)."""
    stack = make_stack(fault_proxy.host, SQUASHD_BUILD_LEASE="3")
    key, _, hold = _held_build(stack, registry, fault_proxy, tmp_path, "looked", 601)
    stack.workers[0].kill()
    hold.release()
    stack.add_worker()
    doc = wait_until(
        "the status link to show the build redone",
        lambda: (d := stack.export_status(key))["state"] == "ready" and d,
        timeout=90,
        explain=stack.describe,
    )
    assert doc["builds"] == 2 and stack.uploads() == []
    assert stack.objects() == stack.stored(key)


def test_the_sweep_resends_a_dead_build_nobody_asks_about(
    make_stack, registry, fault_proxy, tmp_path
) -> None:
    """F4: nobody looks; beat's sweep (every SQUASHD_SWEEP_INTERVAL) sends it again."""
    stack = make_stack(fault_proxy.host, SQUASHD_BUILD_LEASE="3", SQUASHD_SWEEP_INTERVAL="2")
    key, _, hold = _held_build(stack, registry, fault_proxy, tmp_path, "swept", 602)
    stack.workers[0].kill()
    hold.release()
    stack.add_worker()
    stack.add_worker(queues="squashd.scheduled")
    stack.add_beat()
    wait_until(
        "the artifact to appear in the bucket",
        lambda: stack.objects() == stack.stored(key),
        timeout=90,
        explain=stack.describe,
    )
    assert any(w.log_lines("'resent': 1") for w in stack.workers), stack.describe()


def test_a_full_queue_answers_429_but_joining_does_not(
    make_stack, registry, fault_proxy, tmp_path
) -> None:
    """F7: past SQUASHD_MAX_QUEUED a new build is refused with Retry-After; requests
    for a build already running still join it."""
    stack = make_stack(fault_proxy.host, SQUASHD_MAX_QUEUED="1")
    _, _, hold = _held_build(stack, registry, fault_proxy, tmp_path, "first", 603)
    push_image(registry, tmp_path, "second", seed=604)
    status, headers, body = stack.c1("svc/second/v1?wait=0")
    assert status == 429 and int(headers["retry-after"]) > 0, body
    assert "builds are queued or running" in json.loads(body)["error"]
    assert stack.c1("svc/first/v1?wait=0")[0] == 202  # joins the running one
    hold.release()


def test_a_caller_that_started_too_many_builds_gets_429(make_stack, registry, tmp_path) -> None:
    """F7: SQUASHD_CALLER_BUILDS builds per caller and window, whatever makes them new:
    other images, or the same image under tags of the caller's own (the free `tag`
    field made a new artifact each time, so one image could be built without end)."""
    stack = make_stack(registry.host, SQUASHD_CALLER_BUILDS="3")
    # An account of this test's own: other tests' anonymous builds (same address, same
    # Redis, same hour) must not count against it.
    as_caller = {"Authorization": basic_auth(f"quota-{secrets.token_hex(4)}", "pw")}
    for n in range(2):
        push_image(registry, tmp_path, f"many{n}", seed=610 + n)
    answers = [stack.c1(f"svc/many{n}/v1?wait=0", as_caller)[0] for n in range(2)]
    image = f"{registry.host}/svc/many0:v1"
    for n in range(3):
        answers.append(_post(stack, {"image": image, "tag": f"mine:{n}"}, as_caller)[0])
    assert answers == [202, 202, 202, 429, 429], answers
    status, _, answer = _post(stack, {"image": image, "tag": "mine:0"}, as_caller)
    assert status == 202, answer  # the same tag again joins its build: no new one


def test_export_ids_stay_useful_after_redis_loses_its_data(
    make_stack, registry, fault_proxy, tmp_path_factory, tmp_path
) -> None:
    """F10: a built export is found in the store; one that was in flight says to POST
    again; the same answer as an id never seen, nothing misleading."""
    from testbed.service import RedisServer

    redis = RedisServer(tmp_path_factory.mktemp("losing-redis")).start()
    try:
        stack = make_stack(fault_proxy.host, redis_server=redis)
        push_image(registry, tmp_path, "kept", seed=621)
        status, headers, _ = stack.c1("svc/kept/v1")
        assert status == 302
        built = headers["x-squashd-export"]
        flying, _, hold = _held_build(stack, registry, fault_proxy, tmp_path, "lost", 622)
        redis.kill()
        redis.start()  # empty; the held build is still downloading
        wait_until("readiness", lambda: stack.web.get("/readyz")[0] == 200)
        doc = stack.export_status(built)
        assert doc["state"] == "ready" and doc["sha256"], doc
        status, _, body = stack.web.get(f"/v1/exports/{flying}")
        assert status == 404 and "POST /v1/exports again" in json.loads(body)["error"]
        hold.release()
    finally:
        redis.stop()


def test_the_operators_pages_can_want_a_token(make_stack, registry) -> None:
    stack = make_stack(registry.host, SQUASHD_OPERATOR_TOKEN="s3cret")
    for path in ("/", "/metrics"):
        assert stack.web.get(path)[0] == 401
        assert stack.web.get(path, {"Authorization": basic_auth("a", "b")})[0] == 401
        assert stack.web.get(path, {"Authorization": "Bearer s3cret"})[0] == 200
    assert stack.web.get("/healthz")[0] == 200  # the probes stay open
