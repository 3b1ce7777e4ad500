"""Soak: several images requested at once through the service's processes (web, export
workers, a scheduled worker and beat) while faults hit it: an export worker is SIGKILLed,
Redis is killed and started again empty, S3 and the registry are frozen (SIGSTOP) for a
few seconds. Every request must end with an archive byte for byte the CLI's squash of
the same image, and nothing may be left behind: no multipart upload, no job building,
no spool file.

`make test` runs a short soak (SQUASHD_SOAK_IMAGES images at once, default 4, one round
of faults); `make soak` a long one (SQUASHD_SOAK_ROUNDS rounds, each with new images and
the faults hitting their builds). The figures (requests, answers by status, faults, how
long after the last fault each round's archives were all fetched) are printed.
"""

from __future__ import annotations

import collections
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from testbed.process import terminate
from testbed.registry import Registry
from testbed.service import MotoS3, RedisServer, fetch
from tests.integration.helpers import squashd_export
from tests.registry.fixtures import proxying
from tests.service.test_export_service import layer_digest, push_image, wait_until

pytestmark = pytest.mark.integration

IMAGES = int(os.environ.get("SQUASHD_SOAK_IMAGES", "4"))  # requested at once, each round
ROUNDS = int(os.environ.get("SQUASHD_SOAK_ROUNDS", "1"))
FREEZE = 3.0  # seconds S3 and the registry stay stopped


def _freeze(pid: int, seconds: float) -> None:
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


class Client:
    """One caller asking for one image until it has the archive."""

    def __init__(self, stack, name: str, dest: Path, answers: collections.Counter) -> None:
        self.stack, self.name, self.dest, self.answers = stack, name, dest, answers
        self.data: bytes | None = None
        self.requests = 0
        self.finished = 0.0  # time.monotonic() when it had the archive

    def run(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self.requests += 1
            try:
                status, headers, _ = self.stack.c1(f"svc/{self.name}/v1?wait=5", timeout=30)
            except OSError as exc:  # the web process itself stays up; a timeout is a fault
                self.answers[f"error {type(exc).__name__}"] += 1
                time.sleep(0.5)
                continue
            self.answers[str(status)] += 1
            if status == 302:
                try:
                    self.data = fetch(headers["location"], self.dest)
                    self.finished = time.monotonic()
                    return
                except OSError as exc:  # S3 frozen or restarted under the download
                    self.answers[f"download {type(exc).__name__}"] += 1
            time.sleep(0.3 if status in (202, 503) else 1.0)


def test_soak(make_stack, tmp_path_factory, tmp_path) -> None:
    root = tmp_path_factory.mktemp("soak")
    registry = Registry(root / "registry").start()
    redis = RedisServer(root / "redis").start()
    moto = MotoS3(root / "moto").start()
    spool = root / "spool"
    spool.mkdir()
    try:
        with proxying(registry.port, "soak upstream") as upstream:
            _soak(make_stack, registry, upstream, redis, moto, spool, tmp_path)
    finally:
        for server in (registry, redis, moto):
            if server.proc is not None:
                os.kill(server.proc.pid, signal.SIGCONT)
                terminate(server.proc)
                server.proc = None


def _soak(make_stack, registry, upstream, redis, moto, spool: Path, tmp_path: Path) -> None:
    names = [f"soak{n}" for n in range(IMAGES * ROUNDS)]
    expected, blobs = {}, {}
    for n, name in enumerate(names):
        push_image(registry, tmp_path, name, seed=700 + n, size=3 << 20)
        blobs[name] = layer_digest(registry, name)
        out = tmp_path / f"{name}.cli.tar"
        tag = f"{upstream.host}/svc/{name}:v1.squash"  # what the service writes in
        squashd_export(registry.ref(f"svc/{name}", "v1"), out, "-q", "--tag", tag,
                       "--layer-compression", "gzip")  # fmt: skip
        expected[name] = out.read_bytes()

    stack = make_stack(
        upstream.host, redis_server=redis, s3_server=moto, workers=2,
        SQUASHD_BUILD_LEASE="3", SQUASHD_SWEEP_INTERVAL="2", SQUASHD_FAILURE_TTL="2",
        SQUASHD_TMPDIR=str(spool), SQUASHD_WAIT_SECONDS="5",
    )  # fmt: skip
    stack.add_worker(queues="squashd.scheduled")
    stack.add_beat()
    answers: collections.Counter[str] = collections.Counter()
    faults: list[str] = []
    recoveries: list[float] = []
    clients: list[Client] = []
    started = time.monotonic()

    def fault(text: str) -> None:
        faults.append(f"{time.monotonic() - started:.1f}s {text}")

    for r in range(ROUNDS):
        batch = names[r * IMAGES : (r + 1) * IMAGES]
        # every download of the round waits half-way, so the faults hit builds in flight
        holds = [upstream.hold(blobs[name], after=1 << 20) for name in batch]
        round_clients = [Client(stack, n, tmp_path / f"{n}.got.tar", answers) for n in batch]
        clients += round_clients
        with ThreadPoolExecutor(len(round_clients)) as pool:
            running = [pool.submit(c.run, time.monotonic() + 240) for c in round_clients]

            def downloading(holds=holds) -> bool:
                return sum(h.reached.is_set() for h in holds) >= 2

            wait_until("builds to be downloading", downloading, 60)
            victim = next(w for w in stack.workers if w.queues == "squashd.export" and
                          w.running)  # fmt: skip
            victim.kill()
            fault(f"SIGKILL {victim.name} mid-download")
            stack.add_worker()
            for hold in holds:
                hold.release()
            assert moto.proc is not None and registry.proc is not None
            for what, pid in (("S3", moto.proc.pid), ("the registry", registry.proc.pid)):
                fault(f"{what} frozen {FREEZE:g}s")
                _freeze(pid, FREEZE)
            redis.kill()
            fault("Redis killed")
            time.sleep(1.5)
            redis.start()
            fault("Redis started empty")
            last = time.monotonic()
            for future in running:
                future.result()
        recoveries.append(max(c.finished for c in round_clients) - last)

    report = (
        f"soak: {ROUNDS} round(s) of {IMAGES} images, {sum(c.requests for c in clients)} "
        f"requests, answers {dict(answers)}, faults {faults}; every archive fetched "
        f"{', '.join(f'{x:.1f}s' for x in recoveries)} after each round's last fault"
    )
    print(report)
    assert all(c.data for c in clients), f"{report}\n{stack.describe()}"
    for c in clients:
        assert c.data == expected[c.name], f"{c.name}: not the CLI's archive\n{report}"
    wait_until("no multipart upload to be left", lambda: stack.uploads() == [], 30)
    active = stack.redis.client(stack.redis_db).zrange("squashd:active", 0, -1)
    assert active == [], f"jobs still active: {active}\n{report}"
    assert list(spool.iterdir()) == [], f"spool files left: {list(spool.iterdir())}"
