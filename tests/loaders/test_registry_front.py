"""squashd as a registry, judged by the real pullers: `docker pull` (and run, export,
inspect) of the Docker-built image through squashd, in the embedded default (layers
served as ranges of the archive) and in a deployment on S3 (layers by redirect)."""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from urllib.parse import urlencode

import pytest

from squash.oci import OCI_INDEX, OCI_MANIFEST
from testbed.daemons import Containerd, Dockerd
from testbed.registry import Registry
from testbed.service import Stack, WebServer
from testbed.tools import run
from tests.integration.helpers import compare_trees, format_diffs, require_tool, umoci_unpack
from tests.loaders.fixtures import DockerImage
from tests.loaders.harness import Podman, RootTree
from tests.loaders.judges import CONFIG_FIELDS
from tests.registry.fixtures import USERS, Pushed
from tests.registry.harness import basic_auth
from tests.service.fixtures import embedded_web, private_deployment

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedded(registry: Registry, tmp_path_factory) -> Iterator[WebServer]:
    with embedded_web(registry, tmp_path_factory.mktemp("front-embedded")) as server:
        yield server


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


@pytest.mark.parametrize("head_builds", [False, True], ids=["head-never-builds", "head-builds"])
def test_a_cold_ctr_pull(
    head_builds: bool,
    registry: Registry,
    containerd: Containerd,
    docker_image: DockerImage,
    tmp_path: Path,
) -> None:
    """containerd resolves a tag with HEAD alone: a tag nobody asked for is unknown to it
    (404, and no build), unless SQUASHD_HEAD_BUILDS=1, where that HEAD builds it and the
    cold pull runs."""
    env = {"SQUASHD_REGISTRY": registry.host, "SQUASHD_HEAD_BUILDS": str(int(head_builds))}
    web = WebServer(tmp_path / "web", env).start()
    name = f"{_host(web.url)}/{docker_image.repository}:{docker_image.registry_tag}"
    manifest = f"/v2/{docker_image.repository}/manifests/{docker_image.registry_tag}"
    container = "front-ctr-cold"
    try:
        if not head_builds:
            proc = containerd.ctr("images", "pull", "--plain-http", name, check=False)
            assert proc.returncode != 0, proc
            assert b"not found" in proc.stderr, proc.stderr
            assert web.get(manifest, method="HEAD")[0] == 404, "the HEADs started a build"
            return
        containerd.ctr("images", "pull", "--plain-http", name)
        proc = containerd.ctr("run", "--rm", name, container, timeout=120)
        assert proc.stdout.decode().strip() == docker_image.run_output
    finally:
        containerd.ctr("containers", "rm", container, check=False)
        containerd.ctr("images", "rm", name, check=False)
        web.stop()


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


def judge_podman_pull(
    image: DockerImage, name: str, tmp_path: Path, env: dict[str, str] | None = None
) -> None:
    """`podman pull NAME` (podman's state under `tmp_path`, `env` added to its own): one
    layer and the original's run configuration."""
    runroot = Path(tempfile.mkdtemp(prefix="sqd-podman-", dir="/tmp"))
    try:
        podman = Podman(require_tool("podman"), tmp_path / "podman", runroot)
        podman.env.update(env or {})
        podman("pull", "-q", "--tls-verify=false", name)
        info = podman.inspect(name)
        assert len(info["RootFS"]["Layers"]) == 1, info["RootFS"]
        for field in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels"):
            assert info["Config"].get(field) == image.config.get(field), field
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


def test_podman_pull(embedded: WebServer, docker_image: DockerImage, tmp_path: Path) -> None:
    name = f"{_host(embedded.url)}/{docker_image.repository}:{docker_image.registry_tag}"
    judge_podman_pull(docker_image, name, tmp_path)


PRIVATE = "team/front"


@pytest.fixture(scope="module")
def private_front(make_module_stack, private_registry, tmp_path_factory) -> Stack:
    """A deployment in front of the token-auth registry, whose image only alice reads."""
    work = tmp_path_factory.mktemp("front-private")
    return private_deployment(make_module_stack, private_registry[0], work, PRIVATE, seed=611)


def _login(dockerd: Dockerd, host: str, user: str, password: str):
    return dockerd.docker("login", host, "-u", user, "-p", password, check=False)


def test_a_private_image_is_pulled_only_by_callers_the_upstream_lets_in(
    private_front: Stack, dockerd: Dockerd
) -> None:
    stack = private_front
    host = _host(stack.web.url)
    name = f"{host}/{PRIVATE}:v1"
    received = stack.tasks_received()
    try:
        refused = dockerd.docker("pull", name, check=False)
        assert refused.returncode != 0, "pulled a private image without credentials"
        assert b"unauthorized" in refused.stderr.lower() or b"denied" in refused.stderr.lower()
        wrong = _login(dockerd, host, "alice", "wrong")
        assert wrong.returncode != 0, "docker login took a wrong password"
        assert _login(dockerd, host, "bob", USERS["bob"]).returncode == 0, "bob is an account"
        denied = dockerd.docker("pull", name, check=False)
        assert denied.returncode != 0, "bob pulled an image he may not read"
        assert stack.tasks_received() == received, "a refused caller started a build"
        assert _login(dockerd, host, "alice", USERS["alice"]).returncode == 0
        said = dockerd.text("pull", name)
        assert "Pull complete" in said, said
    finally:
        dockerd.docker("logout", host, check=False)
        dockerd.docker("rmi", "--force", name, check=False)


def test_a_private_blob_is_refused_to_callers_the_upstream_refuses(private_front: Stack) -> None:
    """A layer's URL, got by alice, is no use to anyone else: no credentials and bob's are
    refused at the manifest and at the blob; alice gets the redirect."""
    stack = private_front
    alice, bob = ({"Authorization": basic_auth(user, USERS[user])} for user in ("alice", "bob"))
    status, headers, body = stack.web.get(f"/v2/{PRIVATE}/manifests/v1", alice, timeout=300)
    assert status == 200, body
    layer = json.loads(body)["layers"][0]["digest"]
    path = f"/v2/{PRIVATE}/blobs/{layer}"
    for who in ({}, bob):
        status, headers, body = stack.web.get(f"/v2/{PRIVATE}/manifests/v1", who)
        assert status in (401, 403), (status, body)
        assert json.loads(body)["errors"][0]["code"] in ("UNAUTHORIZED", "DENIED"), body
        status, headers, body = stack.web.get(path, who)
        assert status in (401, 403), (status, body)
    status, headers, body = stack.web.get(f"/v2/{PRIVATE}/manifests/v1")
    challenge = headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and f"{stack.web.url}/v2/token" in challenge, challenge
    assert f"repository:{PRIVATE}:pull" in challenge, challenge
    status, headers, _ = stack.web.get(path, alice)
    assert status == 307 and headers["location"].startswith("http"), (status, headers)


PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")


def test_a_multi_platform_tag_is_an_index_of_squashed_images(
    deployment: Stack, dockerd: Dockerd, pushed: Pushed, tmp_path: Path
) -> None:
    """The upstream's index (an attestation entry and three platforms) becomes an index
    of three squashed images, each one layer; docker pull --platform takes each one,
    whose /etc/platform is its own."""
    host = _host(deployment.web.url)
    name = f"{host}/{pushed.multi}:{pushed.tag}"
    raw = run([require_tool("skopeo"), "inspect", "--raw", "--tls-verify=false",
               f"docker://{name}"], timeout=300).stdout  # fmt: skip
    index = json.loads(raw)
    assert index["mediaType"] == OCI_INDEX, index
    listed = sorted(
        "/".join(filter(None, (p["os"], p["architecture"], p.get("variant"))))
        for p in (entry["platform"] for entry in index["manifests"])
    )
    assert listed == sorted(PLATFORMS), listed
    for entry in index["manifests"]:
        status, _, body = deployment.web.get(f"/v2/{pushed.multi}/manifests/{entry['digest']}")
        assert status == 200 and len(json.loads(body)["layers"]) == 1, body
    for platform in PLATFORMS:
        try:
            dockerd.docker("pull", "--platform", platform, name)
            found = dockerd.text("image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", name)
            assert found == "/".join(platform.split("/")[:2]), found
            root = RootTree.of_export(dockerd.exported(name))
            assert (
                root.entries["etc/platform"].content == sha256(f"{platform}\n".encode()).hexdigest()
            )
        finally:
            dockerd.docker("rmi", "--force", name, check=False)


def _post(url: str, form: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=urlencode(form).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_token_realm_relays_oauth2_posts(private_front: Stack, private_registry) -> None:
    """docker POSTs its token requests (OAuth2) once a realm gave it a refresh token: the
    front relays them as it relays GETs, and the token got pulls."""
    stack, (_, tokens) = private_front, private_registry
    form = {
        "grant_type": "password", "username": "alice", "password": USERS["alice"],
        "service": tokens.service, "scope": f"repository:{PRIVATE}:pull", "client_id": "docker",
    }  # fmt: skip
    status, body = _post(f"{stack.web.url}/v2/token", form)
    assert status == 200, body
    assert tokens.requests[-1].method == "POST" and tokens.requests[-1].authenticated
    bearer = {"Authorization": f"Bearer {json.loads(body)['token']}"}
    status, _, manifest = stack.web.get(f"/v2/{PRIVATE}/manifests/v1", bearer, timeout=300)
    assert status == 200, manifest
    status, body = _post(f"{stack.web.url}/v2/token", {**form, "password": "wrong"})
    assert status == 401, body
