"""The Procfile as operators run it: `honcho start` brings up web, worker, scheduled
and beat with the real services behind them, and an image exported through it loads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.process import HOST, answers, free_port
from testbed.service import service_env
from tests.service.test_export_service import export_by_c1, wait_until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_honcho_starts_every_process_of_the_procfile(
    redis_server, moto_s3, registry, tmp_path
) -> None:
    bucket = moto_s3.create_bucket("squashd-procfile")
    port = free_port()
    env = service_env(tmp_path, {
        **redis_server.env(), **moto_s3.env(),
        "SQUASHD_STORAGE_URL": f"s3://{bucket}/artifacts",
        "SQUASHD_REGISTRY": registry.host,
        "SQUASHD_HOST": HOST,
        "SQUASHD_BEAT_SCHEDULE": str(tmp_path / "beat-schedule"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    })  # fmt: skip
    honcho = str(Path(sys.executable).with_name("honcho"))
    log = tmp_path / "honcho.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [honcho, "start", "--no-colour", "-f", REPO / "Procfile", "-d", REPO, "-p", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        output = lambda: log.read_text("utf-8", "replace")  # noqa: E731
        wait_until("web", lambda: answers(f"http://{HOST}:{port}/healthz"), explain=output)
        for name, ready in (("worker", " ready."), ("scheduled", " ready."),
                            ("beat", "beat: Starting")):  # fmt: skip
            wait_until(f"{name} to start", lambda n=name, r=ready: any(
                f"{n}.1" in line.split("|")[0].split() and r in line
                for line in output().splitlines()), explain=output)  # fmt: skip
        tags = export_by_c1(f"http://{HOST}:{port}", registry, tmp_path, "procfile", 901, output)
        assert tags == [f"{registry.host}/svc/procfile:v1.squash"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # honcho and what it started
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        time.sleep(0.2)
        moto_s3.delete_bucket(bucket)
