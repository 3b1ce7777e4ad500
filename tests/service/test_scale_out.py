"""Scale-out, as separate machines would run it: two `web` processes on their own ports
and two Celery workers, sharing one Redis and one bucket (issue 15's deployment).

Requests spread over both web processes still make one build; a web process killed
while requests wait on it does not stop the build, and the requests sent again to the
other process get the archive.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from testbed.service import Stack, WebServer
from tests.service.test_export_service import layer_digest, push_image, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(make_module_stack, module_proxy) -> Stack:
    return make_module_stack(module_proxy.host, workers=2)


@pytest.fixture(scope="module")
def second_web(stack: Stack) -> Iterator[WebServer]:
    """Another web process of the same deployment (same environment, its own port)."""
    web = WebServer(stack.root, stack.env, name="web-2").start()
    try:
        yield web
    finally:
        web.stop()


def test_requests_spread_over_two_web_processes_make_one_build(
    stack, second_web, registry, upstream, tmp_path
) -> None:
    push_image(registry, tmp_path, "spread", seed=701, size=2 << 20)
    hold = upstream.hold(layer_digest(registry, "spread"), after=64 << 10)
    builds = stack.builds_started()
    webs = [stack.web, second_web]
    with ThreadPoolExecutor(20) as pool:
        answers = [
            pool.submit(webs[n % 2].get, "/c1/squash/svc/spread/v1", timeout=120) for n in range(20)
        ]
        assert hold.reached.wait(60), stack.describe()
        time.sleep(1.5)  # every request has arrived at one process or the other
        hold.release()
        results = [answer.result() for answer in answers]
    assert [status for status, _, _ in results] == [302] * 20, results[0][2]
    assert len({headers["x-squashd-export"] for _, headers, _ in results}) == 1
    assert stack.builds_started() - builds == 1, stack.describe()


def test_a_web_process_killed_mid_wait_does_not_stop_the_build(
    stack, registry, upstream, tmp_path
) -> None:
    push_image(registry, tmp_path, "orphaned", seed=702, size=2 << 20)
    hold = upstream.hold(layer_digest(registry, "orphaned"), after=64 << 10)
    builds = stack.builds_started()
    doomed = WebServer(stack.root, stack.env, name="web-doomed").start()
    try:
        with ThreadPoolExecutor(4) as pool:
            waiting = [
                pool.submit(doomed.get, "/c1/squash/svc/orphaned/v1", timeout=120) for _ in range(4)
            ]
            assert hold.reached.wait(60), stack.describe()
            assert doomed.proc is not None
            doomed.proc.send_signal(signal.SIGKILL)  # a machine gone, its callers cut off
            doomed.proc.wait(10)
            for answer in waiting:
                with pytest.raises(OSError):
                    answer.result()
    finally:
        doomed.stop()
        hold.release()
    # the callers try again on the other process: the build went on without the first
    status, headers, body = stack.c1("svc/orphaned/v1", timeout=120)
    assert status == 302, body[:300]
    assert stack.builds_started() - builds == 1, stack.describe()
    assert stack.export_status(headers["x-squashd-export"])["builds"] == 1


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _uvicorn_workers(web: WebServer) -> list[int]:
    """The web's worker processes (multiprocessing's spawned children, not its tracker)."""
    return [
        pid for pid in web.children()
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]  # fmt: skip


def test_several_web_processes_behind_one_port_count_as_one(
    stack: Stack, registry, tmp_path
) -> None:
    """SQUASHD_WEB_WORKERS=2: two processes share the port and both serve; /metrics,
    whichever answers, counts every request of both; a worker that dies is replaced."""
    env = {**stack.env, "SQUASHD_WEB_WORKERS": "2"}
    web = WebServer(stack.root, env, name="web-multi").start()
    try:
        workers = wait_until("two web workers", lambda: len(w := _uvicorn_workers(web)) == 2 and w)
        series = "squashd_requests_total{endpoint=/healthz,outcome=served}"
        base = web.metrics().get(series, 0)  # the readiness probe's
        before = {pid: _cpu_seconds(pid) for pid in workers}
        count = 600
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: web.get("/healthz")[0], range(count)))
        assert answers == [200] * count
        used = {pid: _cpu_seconds(pid) - before[pid] for pid in workers}
        assert all(seconds > 0 for seconds in used.values()), f"one process served all: {used}"
        for _ in range(4):  # each scrape, whichever process answers it
            assert web.metrics()[series] == base + count
        os.kill(workers[0], signal.SIGKILL)
        wait_until("the dead worker replaced", lambda: len(_uvicorn_workers(web)) == 2
                   and workers[0] not in _uvicorn_workers(web), timeout=30)  # fmt: skip
        assert web.get("/healthz")[0] == 200
        assert web.metrics()[series] == base + count + 1, "a dead worker's counts were lost"
    finally:
        web.stop()
    assert not _uvicorn_workers_left(workers), "web workers outlived their main process"


def _uvicorn_workers_left(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]
