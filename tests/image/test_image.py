"""squashd's image as `make image` writes it (dist/squashd-image.tar), loaded and run by
the tests' private dockerd:

- `docker load` names it squashd:VERSION and squashd:latest; it runs as a user, not root;
- every module of squashd's wheel imports inside it, from its venv;
- `squashd export` of an image mounted into a container with no network writes an
  archive that docker loads, and whose root and run are the original's (the loaders'
  judge), byte for byte what the checkout's squashd writes;
- its default command serves the web (the embedded default): /healthz, /readyz;
- every program the deployment files and the Procfile run is in its venv, and Celery
  finds the app (`celery -A worker`).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import pytest

from testbed.daemons import Dockerd
from testbed.process import HOST, answers, free_port, http_get
from tests.deploy.manifests import compose_containers, kubernetes_containers, procfile
from tests.image.fixtures import BuiltImage
from tests.install.wheels import IMPORT_ALL, import_problems
from tests.integration.helpers import SquashedArchive, squashd_export
from tests.loaders.fixtures import DockerImage
from tests.loaders.judges import judge_docker
from tests.service.test_export_service import wait_until

pytestmark = pytest.mark.integration

VENV = PurePosixPath("/opt/squashd")


def _run(dockerd: Dockerd, image: BuiltImage, *args: str) -> bytes:
    """`docker run --rm --network none` of the image: its standard output."""
    return dockerd.docker("run", "--rm", "--network", "none", image.tag, *args).stdout


def test_it_runs_as_a_user_not_root(dockerd: Dockerd, squashd_image: BuiltImage) -> None:
    assert _run(dockerd, squashd_image, "id", "-u").strip() != b"0"
    assert _run(dockerd, squashd_image, "id", "-g").strip() != b"0"


def test_every_module_of_the_wheel_imports_in_it(
    dockerd: Dockerd, squashd_image: BuiltImage
) -> None:
    modules = squashd_image.wheel.modules()
    found = _run(dockerd, squashd_image, "python3", "-I", "-c", IMPORT_ALL, *modules)
    problems = import_problems(found, VENV / "lib")
    assert not problems, f"not imported from the image's venv: {problems}"


def test_its_cli_squashes_a_mounted_image(
    dockerd: Dockerd,
    squashd_image: BuiltImage,
    docker_image: DockerImage,
    saved: Path,
    tmp_path: Path,
) -> None:
    """`docker run -v saved.tar:… squashd export docker-archive:… -o -`, judged by docker."""
    saved.chmod(0o644)  # the image's user reads it
    mount = f"{saved}:/in/saved.tar:ro"
    out = tmp_path / "squashed.tar"
    out.write_bytes(
        dockerd.docker(
            "run", "--rm", "--network", "none", "--volume", mount, squashd_image.tag,
            "squashd", "export", "docker-archive:/in/saved.tar", "-o", "-",
        ).stdout
    )  # fmt: skip
    checkout = tmp_path / "checkout.tar"
    squashd_export(f"docker-archive:{saved}", checkout)
    assert out.read_bytes() == checkout.read_bytes(), (
        "the image's squashd and the checkout's differ"
    )
    (tag,) = SquashedArchive.open(out).manifest_json[0]["RepoTags"]
    try:
        judge_docker(dockerd, docker_image, out, tag, None)
    finally:
        dockerd.docker("rmi", "--force", tag, check=False)


def test_its_default_command_serves_the_web(dockerd: Dockerd, squashd_image: BuiltImage) -> None:
    """On the host's network (the private dockerd has no bridge), on a free port."""
    port = free_port()
    env = ["--env", f"PORT={port}", "--env", f"SQUASHD_HOST={HOST}"]
    container = dockerd.text("run", "--detach", "--network", "host", *env, squashd_image.tag)
    logs = lambda: dockerd.logs(container)  # noqa: E731
    try:
        wait_until("the web", lambda: answers(f"http://{HOST}:{port}/healthz"), explain=logs)
        status, _, body = http_get(f"http://{HOST}:{port}/readyz")
        assert status == 200 and json.loads(body)["ready"] is True, f"{body!r}\n{logs()}"
        assert "embedded" in logs()
    finally:
        dockerd.docker("rm", "--force", container)


def test_every_program_the_deployments_run_is_in_its_venv(
    dockerd: Dockerd, squashd_image: BuiltImage
) -> None:
    commands = [c.command for c in compose_containers() + kubernetes_containers()]
    commands += procfile().values()
    programs = {argv[0] for argv in commands}
    venv = set(_run(dockerd, squashd_image, "ls", str(VENV / "bin")).decode().split())
    assert programs <= venv, f"not in {VENV}/bin: {sorted(programs - venv)}"
    report = _run(dockerd, squashd_image, "celery", "-A", "worker", "report").decode()
    assert "task_queues" in report and "squashd.export" in report, report  # celeryconfig
