"""squashd as a registry, judged by the real pullers: `docker pull` (and run, export,
inspect) of the Docker-built image through squashd, in the embedded default (layers
served as ranges of the archive) and in a deployment on S3 (layers by redirect)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from squash.image import OCI_MANIFEST
from testbed.registry import Registry
from testbed.service import Stack, WebServer
from testbed.tools import run
from tests.integration.helpers import compare_trees, format_diffs, require_tool, umoci_unpack
from tests.loaders.fixtures import DockerImage
from tests.loaders.harness import Containerd, Dockerd, Podman, RootTree
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


def test_a_second_pull_is_a_cache_hit(
    deployment: Stack, dockerd: Dockerd, docker_image: DockerImage
) -> None:
    """Pulled before (the test above, or now), pulled again after `docker rmi`: every
    byte comes again, and no build starts."""
    name = f"{_host(deployment.web.url)}/{docker_image.repository}:{docker_image.registry_tag}"
    try:
        dockerd.text("pull", name)
        builds = deployment.builds_started()
        assert builds <= 1, deployment.describe()
        dockerd.docker("rmi", name)
        said = dockerd.text("pull", name)
        assert "Pull complete" in said, said
        assert deployment.builds_started() == builds, deployment.describe()
    finally:
        dockerd.docker("rmi", "--force", name, check=False)


def test_ctr_pull_and_run(
    deployment: Stack, containerd: Containerd, docker_image: DockerImage
) -> None:
    """containerd resolves the tag (HEAD), then fetches the manifest by its digest and
    the layer by redirect; ctr run gives the original's output."""
    name = f"{_host(deployment.web.url)}/{docker_image.repository}:{docker_image.registry_tag}"
    built = deployment.web.get(f"/v2/{docker_image.repository}/manifests/1", timeout=300)
    assert built[0] == 200, built  # a HEAD never builds: the GET builds it first
    container = "front-ctr"
    containerd.ctr("images", "pull", "--plain-http", name)
    try:
        proc = containerd.ctr("run", "--rm", name, container, timeout=120)
        assert proc.stdout.decode().strip() == docker_image.run_output
    finally:
        containerd.ctr("containers", "rm", container, check=False)
        containerd.ctr("images", "rm", name, check=False)


def test_skopeo_copy_and_umoci_unpack_equal_the_original(
    embedded: WebServer, registry: Registry, docker_image: DockerImage, tmp_path: Path
) -> None:
    """skopeo copies the squashed image out of squashd into an OCI layout; umoci unpacks
    it into the same tree as the original copied out of the registry. skopeo inspect
    --raw shows the manifest squashd serves: one layer."""
    skopeo = require_tool("skopeo")
    trees = {}
    for label, host in (("original", registry.host), ("squashed", _host(embedded.url))):
        source = f"docker://{host}/{docker_image.repository}:{docker_image.registry_tag}"
        layout = tmp_path / f"{label}-layout"
        run([skopeo, "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
             source, f"oci:{layout}:t"], timeout=300)  # fmt: skip
        trees[label] = umoci_unpack(f"{layout}:t", tmp_path / f"{label}-bundle")
    diffs = compare_trees(trees["original"], trees["squashed"])
    assert not diffs, format_diffs(diffs)
    source = f"docker://{_host(embedded.url)}/{docker_image.repository}:{docker_image.registry_tag}"
    raw = run([skopeo, "inspect", "--raw", "--tls-verify=false", source]).stdout
    manifest = json.loads(raw)
    assert manifest["mediaType"] == OCI_MANIFEST and len(manifest["layers"]) == 1, manifest


def test_podman_pull(embedded: WebServer, docker_image: DockerImage, tmp_path: Path) -> None:
    runroot = Path(tempfile.mkdtemp(prefix="sqd-podman-", dir="/tmp"))
    try:
        podman = Podman(require_tool("podman"), tmp_path / "podman", runroot)
        name = f"{_host(embedded.url)}/{docker_image.repository}:{docker_image.registry_tag}"
        podman("pull", "-q", "--tls-verify=false", name)
        info = podman.inspect(name)
        assert len(info["RootFS"]["Layers"]) == 1, info["RootFS"]
        for field in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels"):
            assert info["Config"].get(field) == docker_image.config.get(field), field
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
