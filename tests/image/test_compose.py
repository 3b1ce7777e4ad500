"""deploy/compose.yaml's squashd containers, run from the image by the tests' private
dockerd: each service's command, variables and volumes as the file gives them, but on
the host's network (the dockerd has no bridge) and with the tests' servers for what the
file leaves to its surroundings (Redis, the bucket and its credentials, the upstream
registry). The web, the workers and beat start, an export requested at the web is
built by a worker, and the web answers its probes and its scrape."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest

from testbed.daemons import Dockerd
from testbed.process import HOST, answers, free_port, http_get
from testbed.registry import Registry
from testbed.service import MotoS3, RedisServer
from tests.deploy.manifests import Container, compose_containers, process_kind
from tests.image.fixtures import BuiltImage
from tests.service.test_export_service import export_by_c1, wait_until

pytestmark = pytest.mark.integration

#: What each kind of process logs once it is up.
READY = {"worker": " ready.", "beat": "beat: Starting"}


@contextlib.contextmanager
def running(dockerd: Dockerd, service: Container, env: dict[str, str]) -> Iterator[str]:
    """`service` in a container on the host's network, its named volumes the dockerd's
    own (as compose makes them); the container's id."""
    options = ["--network", "host"]
    options += [arg for name, value in env.items() for arg in ("--env", f"{name}={value}")]
    volumes = [f"sqd-compose-{volume}" for volume in service.raw.get("volumes", [])]
    options += [arg for volume in volumes for arg in ("--volume", volume)]
    container = dockerd.text("run", "--detach", *options, service.image, *service.command)
    try:
        yield container
    finally:
        dockerd.docker("rm", "--force", container)
        for volume in volumes:
            dockerd.docker("volume", "rm", volume.split(":")[0], check=False)


def test_the_compose_services_export_through_the_workers(
    dockerd: Dockerd,
    squashd_image: BuiltImage,
    redis_server: RedisServer,
    moto_s3: MotoS3,
    registry: Registry,
    tmp_path,
) -> None:
    bucket = moto_s3.create_bucket("squashd-compose")
    port = free_port()
    surroundings = {
        **redis_server.env(),
        **moto_s3.env(),
        "SQUASHD_STORAGE_URL": f"s3://{bucket}/artifacts",
        "SQUASHD_REGISTRY": registry.host,
    }
    started: dict[str, str] = {}

    def logs() -> str:
        return "\n".join(
            f"--- {where} ---\n{dockerd.logs(container)[-3000:]}"
            for where, container in started.items()
        )

    try:
        with contextlib.ExitStack() as stack:
            for service in compose_containers():
                env = {**service.env, **surroundings}
                if service.command == ["squashd-web"]:
                    env.update(PORT=str(port), SQUASHD_HOST=HOST)
                left = {name: value for name, value in env.items() if "${" in value}
                assert not left, f"{service.where}: the test gives no value for {left}"
                started[service.where] = stack.enter_context(running(dockerd, service, env))
            web = f"http://{HOST}:{port}"
            wait_until("the web", lambda: answers(f"{web}/healthz"), explain=logs)
            for service in compose_containers():
                kind = process_kind(service.command)
                if kind[0] == "celery":  # worker, scheduled, beat
                    container, ready = started[service.where], READY[kind[2]]
                    wait_until(service.where, lambda c=container, r=ready: r in dockerd.logs(c),
                               explain=logs)  # fmt: skip
            tags = export_by_c1(web, registry, tmp_path, "compose", 911, logs)
            assert tags == [f"{registry.host}/svc/compose:v1.squash"]
            status, _, body = http_get(f"{web}/readyz")
            assert status == 200 and json.loads(body)["ready"] is True, body
            status, _, body = http_get(f"{web}/metrics")
            assert status == 200 and b"squashd_" in body, body[:300]
    finally:
        moto_s3.delete_bucket(bucket)
