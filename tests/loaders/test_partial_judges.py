"""Partial squashes of the image Docker built, judged by the real loaders.

`--keep-base N` for N = 1 to 4 and (layers - 1), and `--base` with the image it was built
FROM: docker load accepts the archive, `docker image inspect` shows the original's bottom
layers unchanged under the one squashed layer, `docker export` equals the original's
root and `docker run` its output; containerd imports and runs it. The kept blobs are the
source's own bytes: the same digests as in `docker save` and in the registry. Pushed to
the registry, `docker pull` of the partial squash fetches only the squashed layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.daemons import Containerd, Dockerd
from tests.integration.helpers import SquashedArchive
from tests.loaders.fixtures import DockerImage
from tests.loaders.harness import RootTree
from tests.loaders.judges import judge_containerd, judge_docker
from tests.registry.harness import export, export_fails, export_ok

pytestmark = pytest.mark.integration

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="module")
def diff_ids(dockerd: Dockerd, docker_image: DockerImage) -> list[str]:
    """The original's layers as docker has them."""
    rootfs = dockerd.text("image", "inspect", "--format", "{{json .RootFS}}", docker_image.tag)
    layers = json.loads(rootfs)["Layers"]
    assert len(layers) >= 5, f"the Docker-built image has too few layers to keep some: {layers}"
    return layers


def _judge(
    dockerd: Dockerd,
    containerd: Containerd,
    image: DockerImage,
    out: Path,
    kept: list[str],
    compression: str = "none",
) -> SquashedArchive:
    archive = SquashedArchive.open(out)
    assert archive.config["rootfs"]["diff_ids"][:-1] == kept
    history = [h for h in archive.config["history"] if not h.get("empty_layer")]
    assert len(history) == len(kept) + 1, "one history entry per layer"
    (tag,) = archive.manifest_json[0]["RepoTags"]
    try:
        judge_docker(dockerd, image, out, tag, None, kept)
    finally:
        dockerd.docker("rmi", "--force", tag, check=False)
    judge_containerd(containerd, image, out, archive, compression, len(kept))
    return archive


# 3 and 4 keep the layer that makes /data and squash the ones that delete, re-create and
# change the kind of what it made: the squashed layer needs whiteouts and opaque markers.
@pytest.mark.parametrize("keep", ["1", "2", "3", "4", "all but the top"])
def test_keep_base_from_docker_save(
    dockerd: Dockerd, containerd: Containerd, docker_image: DockerImage, saved: Path,
    diff_ids: list[str], work: Path, keep: str,
) -> None:  # fmt: skip
    n = len(diff_ids) - 1 if keep == "all but the top" else int(keep)
    out = work / "partial.tar"
    export_ok(f"docker-archive:{saved}", out, "--keep-base", str(n))
    archive = _judge(dockerd, containerd, docker_image, out, diff_ids[:n])
    # docker save stores layers uncompressed: their digests are their diff_ids
    layers = archive.manifest_json[0]["Layers"]
    assert [f"sha256:{p.rsplit('/', 1)[1]}" for p in layers[:n]] == diff_ids[:n]


def test_base_is_the_image_it_was_built_from(
    dockerd: Dockerd, containerd: Containerd, docker_image: DockerImage, saved: Path,
    diff_ids: list[str], work: Path,
) -> None:  # fmt: skip
    base = work / "base.tar"
    dockerd.docker("save", "-o", base, "squashd-test/base:1")
    out = work / "partial.tar"
    export_ok(f"docker-archive:{saved}", out, "--base", f"docker-archive:{base}", "-q")
    _judge(dockerd, containerd, docker_image, out, diff_ids[:1], "none")


def test_keep_base_from_the_registry_keeps_its_blobs(
    dockerd: Dockerd, containerd: Containerd, docker_image: DockerImage, registry,
    diff_ids: list[str], work: Path,
) -> None:  # fmt: skip
    """Pulled from the registry, the kept layers are its gzip blobs, byte for byte."""
    manifest = registry.manifest(
        docker_image.repository, docker_image.registry_tag, DOCKER_MANIFEST
    )
    assert manifest is not None
    pushed = [layer["digest"] for layer in manifest["layers"]]
    out = work / "partial.tar"
    source = registry.ref(docker_image.repository, docker_image.registry_tag)
    export_ok(source, out, "--keep-base", "3", "--layer-compression", "gzip")
    archive = _judge(dockerd, containerd, docker_image, out, diff_ids[:3], "gzip")
    manifest = archive.json(
        "blobs/sha256/" + archive.json("index.json")["manifests"][0]["digest"][7:]
    )
    assert [layer["digest"] for layer in manifest["layers"][:3]] == pushed[:3]


def test_partial_squash_errors(
    docker_image: DockerImage, saved: Path, diff_ids, work: Path
) -> None:
    """Keeping every layer, or a base the image was not built from, is refused clearly."""
    said = export_fails(f"docker-archive:{saved}", work, "--keep-base", str(len(diff_ids)))
    assert f"cannot keep {len(diff_ids)} of its {len(diff_ids)} layers" in said
    other = work / "other"
    other.mkdir()
    (other / "x").write_text("unrelated")
    said = export_fails(f"docker-archive:{saved}", work, "--base", f"docker-archive:{saved}")
    assert "has no layers above" in said


def test_docker_pull_of_a_pushed_partial_squash_fetches_only_the_squashed_layer(
    dockerd: Dockerd, docker_image: DockerImage, registry, diff_ids: list[str]
) -> None:
    """Pushed to the registry the original is in (its base mounted, not uploaded), the
    partial squash pulls into a dockerd that has the original: the kept layers already
    exist there, one layer is downloaded, and the container is the original's."""
    keep = 4
    source = registry.ref(docker_image.repository, docker_image.registry_tag)
    name = f"{registry.host}/acme/app-partial:1"
    proc = export(source, f"docker://{name}", "--keep-base", str(keep),
                  "--layer-compression", "gzip")  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    try:
        said = dockerd.text("pull", name)
        exists = [line for line in said.splitlines() if line.endswith(": Already exists")]
        fetched = [line for line in said.splitlines() if line.endswith(": Pull complete")]
        assert (len(exists), len(fetched)) == (keep, 1), said
        rootfs = dockerd.text("image", "inspect", "--format", "{{json .RootFS}}", name)
        assert json.loads(rootfs)["Layers"][:keep] == diff_ids[:keep]
        diffs = RootTree.of_export(docker_image.root).differences(
            RootTree.of_export(dockerd.exported(name))
        )
        assert not diffs, "docker export of original and pulled differ:\n" + "\n".join(diffs[:40])
        assert dockerd.text("run", "--rm", "--network", "none", name) == docker_image.run_output
    finally:
        dockerd.docker("rmi", "--force", name, check=False)
