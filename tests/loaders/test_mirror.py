"""squashd as the mirror nodes already pull through, judged by the real runtimes:
containerd with a hosts directory (`ctr images pull --hosts-dir`, squashd the mirror of
two registries that each hold a different image under one name, and a `server` nothing
answers), dockerd with `registry-mirrors`, podman with a `[[registry.mirror]]`, and
`skopeo list-tags`.

Every hosts.toml's `server` is a listener that answers nobody: a pull that succeeds came
through squashd, which the listener's count proves as well."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.daemons import Containerd, Dockerd, remove_tree, short_dir
from testbed.registry import Registry
from testbed.service import WebServer
from testbed.tools import run
from tests.integration.helpers import require_tool
from tests.loaders.fixtures import DockerImage, build_and_push
from tests.loaders.harness import RootTree
from tests.loaders.test_registry_front import judge_podman_pull, judge_pulled
from tests.registry.harness import FaultProxy, Listener, random_bytes
from tests.service.harness import push_layers
from tests.service.test_export_service import wait_until

pytestmark = pytest.mark.integration

NAME = "acme/app"  # a different image in each registry under this name
SECOND = """FROM squashd-test/base:1
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /srv/second && echo one > /srv/second/a && echo two > /srv/second/b
RUN rm /srv/second/a && ln -s b /srv/second/link && echo three > /srv/second/c
CMD ["/bin/sh", "-c", "echo the second image; cat /srv/second/b; ls /srv/second"]
"""


@pytest.fixture(scope="module")
def second_image(
    dockerd: Dockerd, docker_image: DockerImage, second_registry: Registry, tmp_path_factory
) -> DockerImage:
    """Another image built by Docker on the same base, pushed as acme/app:1 into the
    second registry."""
    context = tmp_path_factory.mktemp("second-image")
    (context / "Dockerfile").write_text(SECOND)
    return build_and_push(dockerd, context, "squashd-test/second:1", second_registry, NAME)


@pytest.fixture(scope="module")
def nobody() -> Iterator[Listener]:
    """The `server` of every hosts.toml: nothing may need it."""
    listener = Listener()
    yield listener
    listener.close()


def _front(root: Path, registry: Registry, others: list[str], cold: str) -> WebServer:
    env = {
        "SQUASHD_REGISTRY": registry.host,
        "SQUASHD_ALLOWED_REGISTRIES": ",".join([registry.host, *others]),
        "SQUASHD_MIRROR_PREFIXES": f"two={others[0]}",
        "SQUASHD_MIRROR_COLD": cold,
    }
    return WebServer(root, env).start()


@pytest.fixture(scope="module")
def fronts(
    registry: Registry, second_registry: Registry, module_proxy: FaultProxy, tmp_path_factory
) -> Iterator[dict[str, WebServer]]:
    """squashd in front of both registries (and the proxy before the first), as SQUASHD_
    MIRROR_COLD=wait and =original; `two/` is the second registry's prefix."""
    others = [second_registry.host, module_proxy.host]
    made = {}
    try:
        for cold in ("wait", "original"):
            made[cold] = _front(tmp_path_factory.mktemp(f"mirror-{cold}"), registry, others, cold)
        yield made
    finally:
        for web in made.values():
            web.stop()


def hosts_dir(root: Path, front: WebServer, server: Listener, *registries: str) -> Path:
    """containerd's hosts directory: squashd the mirror (pull, resolve) of each registry,
    whose `server` is the listener nobody answers."""
    for host in registries:
        (root / host).mkdir(parents=True, exist_ok=True)
        (root / host / "hosts.toml").write_text(
            f'server = "http://{server.host}"\n\n'
            f'[host."{front.url}"]\n  capabilities = ["pull", "resolve"]\n'
        )
    return root


class Pulled:
    """What containerd holds of a reference it pulled."""

    def __init__(self, containerd: Containerd, ref: str) -> None:
        self.containerd, self.ref = containerd, ref
        listed = containerd.text("images", "list")
        (line,) = [row for row in listed.splitlines() if row.split()[:1] == [ref]]
        self.digest = line.split()[2]
        self.manifest_bytes = containerd.content(self.digest)
        self.manifest = json.loads(self.manifest_bytes)

    def tree(self, where: Path) -> RootTree:
        """The image's root as containerd unpacked it (mounted, read by GNU tar)."""
        where.mkdir(parents=True, exist_ok=True)
        self.containerd.ctr("images", "mount", self.ref, where)
        try:
            tar = [require_tool("tar"), "--xattrs", "--xattrs-include=*", "--numeric-owner"]
            data = run([*tar, "-C", where, "-cf", "-", "."], timeout=120).stdout
        finally:
            self.containerd.ctr("images", "unmount", "--rm", where, check=False)
        return RootTree.of_export(data, ignore=())

    def run(self, container: str) -> str:
        try:
            proc = self.containerd.ctr("run", "--rm", self.ref, container, timeout=120)
        finally:
            self.containerd.ctr("containers", "rm", container, check=False)
        return proc.stdout.decode().strip()


def _pull(containerd: Containerd, hosts: Path, ref: str, check: bool = True):
    return containerd.ctr("images", "pull", "--hosts-dir", hosts, ref, check=check, timeout=600)


def _forget(containerd: Containerd, *refs: str) -> None:
    containerd.ctr("images", "rm", "--sync", *refs, check=False)


def _upstream_digest(registry: Registry, name: str, tag: str) -> str:
    status, headers, _ = registry.get(
        f"/v2/{name}/manifests/{tag}",
        {"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        method="HEAD",
    )
    assert status == 200, (name, tag, status)
    return headers["docker-content-digest"]


def test_containerd_gets_each_registrys_image_squashed(
    fronts: dict[str, WebServer],
    containerd: Containerd,
    registry: Registry,
    second_registry: Registry,
    docker_image: DockerImage,
    second_image: DockerImage,
    nobody: Listener,
    tmp_path: Path,
) -> None:
    """For each registry: its tag comes squashed (one layer, runs as the original), its
    original pinned by digest comes through unchanged (the registry's manifest bytes),
    and the two unpack to the same tree."""
    hosts = hosts_dir(tmp_path / "hosts", fronts["wait"], nobody, registry.host,
                      second_registry.host)  # fmt: skip
    before = nobody.connections
    for where, image in ((registry, docker_image), (second_registry, second_image)):
        tagged = f"{where.host}/{NAME}:1"
        digest = _upstream_digest(where, NAME, "1")
        pinned = f"{where.host}/{NAME}@{digest}"
        try:
            _pull(containerd, hosts, tagged)
            _pull(containerd, hosts, pinned)
            squashed, original = Pulled(containerd, tagged), Pulled(containerd, pinned)
            assert len(squashed.manifest["layers"]) == 1, squashed.manifest
            assert original.digest == digest
            assert original.manifest_bytes == where.get(f"/v2/{NAME}/manifests/{digest}", {
                "Accept": "application/vnd.docker.distribution.manifest.v2+json"})[2]  # fmt: skip
            assert len(original.manifest["layers"]) > 1
            diffs = original.tree(tmp_path / "original").differences(
                squashed.tree(tmp_path / "squashed")
            )
            assert not diffs, "original and squashed unpack differently:\n" + "\n".join(diffs[:40])
            assert squashed.run("mirror-squashed") == image.run_output
            assert original.run("mirror-original") == image.run_output
        finally:
            _forget(containerd, tagged, pinned)
    assert nobody.connections == before, "containerd fell back to the server"


@pytest.mark.parametrize("cold", ["wait", "original"])
def test_a_cold_tag_under_each_mode(
    cold: str,
    fronts: dict[str, WebServer],
    containerd: Containerd,
    dockerd: Dockerd,
    registry: Registry,
    docker_image: DockerImage,
    nobody: Listener,
    tmp_path: Path,
) -> None:
    """A tag nobody asked for: under wait the first pull is the squashed image; under
    original the first pull is the original at once and a pull after the build the
    squashed one."""
    front = fronts[cold]
    name = f"acme/cold-{cold}"
    pushed = f"{registry.host}/{name}:1"
    dockerd.docker("tag", docker_image.tag, pushed)
    dockerd.docker("push", pushed)
    hosts = hosts_dir(tmp_path / "hosts", front, nobody, registry.host)
    digest = _upstream_digest(registry, name, "1")
    try:
        _pull(containerd, hosts, pushed)
        first = Pulled(containerd, pushed)
        if cold == "wait":
            assert len(first.manifest["layers"]) == 1, first.manifest
            return
        assert first.digest == digest and len(first.manifest["layers"]) > 1
        assert first.run("mirror-cold-original") == docker_image.run_output
        wait_until(
            "the squashed image",
            lambda: front.get(f"/v2/{name}/manifests/1", method="HEAD", timeout=60)[1].get(
                "docker-content-digest") not in (None, digest),
            timeout=300,
            explain=front.log,
        )  # fmt: skip
        _forget(containerd, pushed)
        _pull(containerd, hosts, pushed)
        turned = Pulled(containerd, pushed)
        assert len(turned.manifest["layers"]) == 1, turned.manifest
        assert turned.run("mirror-cold-turned") == docker_image.run_output
    finally:
        _forget(containerd, pushed)


def test_an_ns_outside_the_allow_list_is_never_contacted(
    fronts: dict[str, WebServer], containerd: Containerd, nobody: Listener, tmp_path: Path
) -> None:
    """containerd names a registry squashd does not mirror: squashd refuses it without a
    connection to it (containerd then tries the `server`, which answers nobody)."""
    stranger = Listener()
    try:
        hosts = hosts_dir(tmp_path / "hosts", fronts["wait"], nobody, stranger.host)
        proc = _pull(containerd, hosts, f"{stranger.host}/{NAME}:1", check=False)
        assert proc.returncode != 0, proc
        assert stranger.connections == 0
    finally:
        stranger.close()


def test_an_upstream_cut_mid_blob_is_an_error_and_nothing_is_stored(
    fronts: dict[str, WebServer],
    containerd: Containerd,
    upstream: FaultProxy,
    registry: Registry,
    nobody: Listener,
    tmp_path: Path,
) -> None:
    """The original pinned by digest, its big layer cut by the upstream every time it
    passes through: the pull fails, containerd holds no such blob, squashd stored none
    of its bytes."""
    from tests.integration.helpers import LayerBuilder

    name = "acme/cut"
    layer = LayerBuilder().file("big.bin", random_bytes(3 << 20, seed=977)).tar()
    digest, _ = push_layers(tmp_path / "image", registry.ref(name, "1"), [layer])
    manifest = registry.manifest(name, digest)
    assert manifest is not None
    big = manifest["layers"][0]
    blob = registry.get(f"/v2/{name}/blobs/{big['digest']}")[2]
    upstream.cut(big["digest"], after=big["size"] // 2, times=None)
    hosts = hosts_dir(tmp_path / "hosts", fronts["wait"], nobody, upstream.host)
    pinned = f"{upstream.host}/{name}@{digest}"
    try:
        proc = _pull(containerd, hosts, pinned, check=False)
        assert proc.returncode != 0, proc
        assert upstream.blob_gets(big["digest"]), upstream.describe()
        assert big["digest"] not in containerd.text("content", "ls", "--quiet").split()
        front = fronts["wait"]
        holding = [
            p for p in front.root.rglob("*") if p.is_file() and blob[:4096] in p.read_bytes()
        ]
        assert not holding, f"the blob's bytes were stored in {holding}"
    finally:
        _forget(containerd, pinned)


def test_dockerd_with_registry_mirrors_pulls_squashed(
    fronts: dict[str, WebServer], dockerd: Dockerd, registry: Registry, docker_image: DockerImage
) -> None:
    """The registry stands in for Docker Hub (SQUASHD_REGISTRY): `docker pull team/app:1`
    on a dockerd whose daemon.json names squashd in `registry-mirrors` gets the squashed
    image of the registry's team/app:1 (Docker Hub itself is not reachable here)."""
    pushed = f"{registry.host}/team/app:1"
    dockerd.docker("tag", docker_image.tag, pushed)
    dockerd.docker("push", pushed)
    root = short_dir("sqd-mirror-docker-")
    mirrored = Dockerd(root, config={"registry-mirrors": [fronts["wait"].url]})
    try:
        mirrored.start()
        judge_pulled(mirrored, docker_image, "team/app:1")
    finally:
        mirrored.stop()
        remove_tree(root)


def test_podman_with_a_registry_mirror_pulls_squashed(
    fronts: dict[str, WebServer],
    second_registry: Registry,
    second_image: DockerImage,
    tmp_path: Path,
) -> None:
    """registries.conf names squashd (with the second registry's prefix) as the mirror
    of the second registry: podman pull gets its image squashed."""
    conf = tmp_path / "registries.conf"
    front = fronts["wait"].url.removeprefix("http://")
    conf.write_text(
        "unqualified-search-registries = []\n\n"
        f'[[registry]]\nlocation = "{second_registry.host}"\ninsecure = true\n\n'
        f'[[registry.mirror]]\nlocation = "{front}/two"\ninsecure = true\n'
    )
    name = f"{second_registry.host}/{NAME}:1"
    judge_podman_pull(second_image, name, tmp_path, {"CONTAINERS_REGISTRIES_CONF": str(conf)})


def test_skopeo_lists_tags_through_squashd(
    fronts: dict[str, WebServer],
    registry: Registry,
    second_registry: Registry,
    docker_image: DockerImage,
    second_image: DockerImage,
) -> None:
    skopeo = require_tool("skopeo")
    front = fronts["wait"].url.removeprefix("http://")

    def tags(where: str) -> list[str]:
        out = run([skopeo, "list-tags", "--tls-verify=false", f"docker://{where}"]).stdout
        return sorted(json.loads(out)["Tags"])

    for through, direct in ((f"{front}/{NAME}", f"{registry.host}/{NAME}"),
                            (f"{front}/two/{NAME}", f"{second_registry.host}/{NAME}")):  # fmt: skip
        assert tags(through) == tags(direct) and "1" in tags(direct)
