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

from testbed.process import HOST, answers, free_port, http_get
from testbed.service import fetch, service_env
from tests.integration.helpers import SquashedArchive
from tests.service.test_export_service import push_image, wait_until

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
        push_image(registry, tmp_path, "procfile", seed=901)
        status, headers, body = http_get(f"http://{HOST}:{port}/c1/squash/svc/procfile/v1",
                                         timeout=120)  # fmt: skip
        assert status == 302, f"{body!r}\n{output()[-4000:]}"
        fetch(headers["location"], tmp_path / "procfile.tar")
        tags = SquashedArchive.open(tmp_path / "procfile.tar").manifest_json[0]["RepoTags"]
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
