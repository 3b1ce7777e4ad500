"""The real loaders judge squashd's archives of an image Docker built itself.

Sources: `docker save` output (a file, and piped through `squashd export
docker-archive:- -o -`), the image pulled from the test registry after `docker push`
(several pulls, some through a proxy that answers in 1 KiB pieces), and the service's
`/c1` download; each with the layer uncompressed, gzip and zstd. Judges, for each:

- `docker load` accepts the archive and names the tag squashd wrote;
- `docker image inspect` shows the original's run configuration;
- `docker create` + `docker export` give the same root as the original's (kind, mode,
  owner, content, symlink target, device numbers, xattrs, mtimes, hard-link groups);
- `docker run --network none` runs the entrypoint with the same output;
- `ctr images import` names it as tagged, its layer's media type matches its bytes,
  and `ctr run` gives the same output.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.daemons import Containerd, Dockerd
from testbed.service import WebServer
from testbed.tools import run
from tests.integration.helpers import COMPRESSIONS, SQUASHD, SquashedArchive
from tests.loaders.fixtures import CAPABILITY, LABELS, DockerImage
from tests.loaders.harness import RootTree
from tests.loaders.judges import judge_containerd, judge_docker
from tests.registry.fixtures import proxying
from tests.registry.harness import export_ok

pytestmark = pytest.mark.integration


def test_the_docker_built_image_covers_what_it_must(docker_image: DockerImage) -> None:
    """The image is what the judges below are about: labels past 64 KiB of config,
    a file capability, the changes of kind, and Docker's own whiteouts."""
    tree = RootTree.of_export(docker_image.root)
    assert len(json.dumps(docker_image.config)) > 64 * 1024
    assert docker_image.config["Labels"] == LABELS
    assert tree.entries["bin/capfile"].xattrs == (
        ("security.capability", CAPABILITY.decode("utf-8", "surrogateescape")),
    )
    assert tree.entries["data/d2f"].kind == "file"
    assert tree.entries["data/f2d"].kind == "dir"
    assert tree.entries["data/d2l"].kind == "dir"
    assert tree.entries["data/null"].device == (1, 3)
    assert tree.entries["data/loop"].kind == "blk"
    assert tree.entries["data/fifo"].kind == "fifo"
    assert (tree.entries["data/owner"].uid, tree.entries["data/mode"].mode) == (1234, 0o600)
    assert "data/del" not in tree.entries and "data/recreate/old1" not in tree.entries
    assert frozenset({"data/hl/alias", "data/hl/alias2"}) in tree.links
    assert frozenset({"data/keep/a", "data/keep/a-link"}) in tree.links
    assert "entry hello as 1000:1000 in /work A=1 B=two words" in docker_image.run_output


# ---------------------------------------------------------------------------------------
# The sources
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(registry, module_work: Path) -> Iterator[WebServer]:
    """The embedded service with the test registry as its upstream."""
    server = WebServer(module_work / "web", {"SQUASHD_REGISTRY": registry.host}).start()
    try:
        yield server
    finally:
        server.stop()


def _from_docker_save(saved: Path, out: Path, compression: str) -> None:
    export_ok(f"docker-archive:{saved}", out, "--layer-compression", compression)


def _through_a_pipe(dockerd: Dockerd, image: DockerImage, out: Path, compression: str) -> str:
    """`docker save X | squashd export docker-archive:- -o - | docker load` (the archive
    kept on the way by tee); returns what docker load said."""
    docker = shlex.join(dockerd.argv())
    pipeline = (
        f"{docker} save {shlex.quote(image.tag)}"
        f" | {shlex.quote(SQUASHD)} export docker-archive:- -o - -q"
        f" --layer-compression {compression}"
        f" | tee {shlex.quote(str(out))} | {docker} load"
    )
    check = compression != "zstd" or dockerd.reads_zstd
    proc = run(
        ["bash", "-o", "pipefail", "-c", pipeline], env=dockerd.env(), timeout=300, check=check
    )
    return (proc.stdout + proc.stderr).decode()


def _from_registry(registry, image: DockerImage, out: Path, compression: str) -> None:
    """Three pulls, two of them through a proxy that sends 1 KiB pieces: the same bytes
    (the tag written in is the direct pull's default, whatever host the pull names)."""
    args = ("--layer-compression", compression, "--tag", f"{image.pushed}.squash")
    export_ok(registry.ref(image.repository, image.registry_tag), out, *args)
    with proxying(registry.port, "chunking proxy", piece_size=1024) as proxy:
        for n in range(2):
            again = out.with_suffix(f".{n}.tar")
            export_ok(proxy.ref(image.repository, image.registry_tag), again, *args)
            assert again.read_bytes() == out.read_bytes(), "pulls of one image differ"
            again.unlink()


def _from_c1(web: WebServer, image: DockerImage, out: Path, compression: str) -> None:
    path = f"/c1/squash/{image.repository}/{image.registry_tag}?compression={compression}"
    status, _, body = web.get(path, timeout=300)
    assert status == 200, f"{status} {body[:300]!r}\n{web.log()}"
    out.write_bytes(body)


# ---------------------------------------------------------------------------------------
# The judges
# ---------------------------------------------------------------------------------------


SOURCES = ("docker-save", "docker-save-pipe", "registry", "c1")


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("source", SOURCES)
def test_loaders_accept_the_squashed_image(
    request, dockerd: Dockerd, containerd: Containerd, docker_image: DockerImage,
    registry, reference_diff_id: str, work: Path, source: str, compression: str,
) -> None:  # fmt: skip
    out = work / "squashed.tar"
    said = None
    if source == "docker-save":
        _from_docker_save(request.getfixturevalue("saved"), out, compression)
    elif source == "docker-save-pipe":
        said = _through_a_pipe(dockerd, docker_image, out, compression)
    elif source == "registry":
        _from_registry(registry, docker_image, out, compression)
    else:
        _from_c1(request.getfixturevalue("web"), docker_image, out, compression)
    archive = SquashedArchive.open(out)
    assert archive.config["rootfs"]["diff_ids"] == [reference_diff_id], (
        "the squashed layer differs from the one squashed from docker save"
    )
    (tag,) = archive.manifest_json[0]["RepoTags"]
    if compression == "zstd" and not dockerd.reads_zstd:
        _docker_refuses_zstd(dockerd, out, said)
    else:
        try:
            judge_docker(dockerd, docker_image, out, tag, said)
        finally:
            dockerd.docker("rmi", "--force", tag, check=False)
    judge_containerd(containerd, docker_image, out, archive, compression)


@pytest.fixture(scope="module")
def reference_diff_id(saved: Path, module_work: Path) -> str:
    """The layer squashed from docker save, uncompressed: every source and compression
    must give this very layer (the registry's gzip blobs hold the same tars)."""
    out = module_work / "reference.tar"
    _from_docker_save(saved, out, "none")
    (diff_id,) = SquashedArchive.open(out).config["rootfs"]["diff_ids"]
    return diff_id


def _docker_refuses_zstd(dockerd: Dockerd, out: Path, said: str | None) -> None:
    """Docker before 23.0 has no zstd decompressor: it reads the layer as a plain tar and
    fails. The layer is the very one judged uncompressed above (same diff_id); containerd
    judges the zstd archive itself."""
    if said is None:
        proc = dockerd.docker("load", "-i", out, check=False)
        said = (proc.stdout + proc.stderr).decode()
        assert proc.returncode != 0, f"docker {dockerd.version} loaded a zstd layer: {said}"
    assert "invalid tar header" in said or "unexpected EOF" in said, said
