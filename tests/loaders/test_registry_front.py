"""squashd as a registry, judged by the real pullers: `docker pull` (and run, export,
inspect) of the Docker-built image through squashd, in the embedded default (layers
served as ranges of the archive) and in a deployment on S3 (layers by redirect)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.registry import Registry
from testbed.service import Stack, WebServer
from tests.loaders.fixtures import DockerImage
from tests.loaders.harness import Dockerd, RootTree
from tests.loaders.judges import CONFIG_FIELDS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedded(registry: Registry, tmp_path_factory) -> Iterator[WebServer]:
    root = tmp_path_factory.mktemp("front-embedded")
    server = WebServer(root, {"SQUASHD_REGISTRY": registry.host}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def deployment(make_module_stack, registry: Registry) -> Stack:
    return make_module_stack(registry.host)


def judge_pulled(dockerd: Dockerd, image: DockerImage, name: str) -> str:
    """`docker pull NAME`: one layer, the original's run configuration, filesystem and
    output. Returns what docker pull said."""
    said = dockerd.text("pull", name)
    config = json.loads(dockerd.text("image", "inspect", "--format", "{{json .Config}}", name))
    for field in CONFIG_FIELDS:
        assert config.get(field) == image.config.get(field), f"Config.{field} differs"
    rootfs = json.loads(dockerd.text("image", "inspect", "--format", "{{json .RootFS}}", name))
    assert len(rootfs["Layers"]) == 1, rootfs
    diffs = RootTree.of_export(image.root).differences(RootTree.of_export(dockerd.exported(name)))
    assert not diffs, "docker export of original and pulled differ:\n" + "\n".join(diffs[:40])
    assert dockerd.text("run", "--rm", "--network", "none", name) == image.run_output
    return said


def _host(url: str) -> str:
    return url.removeprefix("http://")


@pytest.mark.parametrize("where", ["embedded", "deployment"])
def test_docker_pull_through_squashd(
    where: str, request, dockerd: Dockerd, docker_image: DockerImage, tmp_path: Path
) -> None:
    front = request.getfixturevalue(where)
    url = front.url if isinstance(front, WebServer) else front.web.url
    name = f"{_host(url)}/{docker_image.repository}:{docker_image.registry_tag}"
    try:
        judge_pulled(dockerd, docker_image, name)
        dockerd.docker("rmi", name)
        again = dockerd.text("pull", name)
        assert "Pull complete" in again, again
    finally:
        dockerd.docker("rmi", "--force", name, check=False)
