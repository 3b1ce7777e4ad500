"""`podman load` accepts the squashed archive and keeps its tag and config.

Podman runs with its own storage (vfs), run root, tmp dir and network config under the
test's scratch directory, and the CNI backend (netavark would create
/run/containers/networks), so nothing is left outside it. `podman run` is not tried: it
needs a container runtime and cgroups this sandbox may not give.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loaders.harness import Podman

from .helpers import COMPRESSIONS, SquashedArchive, UmociImage, squashd_export

pytestmark = pytest.mark.integration


@pytest.fixture
def podman(podman_bin: str, work: Path) -> Iterator[Podman]:
    runroot = Path(tempfile.mkdtemp(prefix="sqd-podman-", dir="/tmp"))
    try:
        yield Podman(podman_bin, work / "podman", runroot)
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture(scope="module")
def image(tools, module_work: Path) -> UmociImage:
    img = UmociImage(module_work / "build", name="podapp", tag="t")
    fs = img.rootfs
    (fs / "bin").mkdir()
    (fs / "bin/hello").write_text("#!/bin/sh\necho hello\n")
    os.chmod(fs / "bin/hello", 0o755)
    (fs / "gone").write_text("deleted in layer two\n")
    img.commit("one")
    (fs / "gone").unlink()
    (fs / "etc").mkdir()
    (fs / "etc/app.conf").write_text("x=1\n")
    img.commit("two")
    img.config(
        "--config.env",
        "GREETING=hello",
        "--config.cmd",
        "/bin/hello",
        "--config.cmd",
        "--loud",
        "--config.entrypoint",
        "/bin/sh",
        "--config.workingdir",
        "/etc",
        "--config.user",
        "1234",
        "--config.label",
        "org.example=podman",
        "--config.exposedports",
        "8080/tcp",
    )
    return img


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_podman_loads_the_archive(podman: Podman, image, work: Path, compression: str) -> None:
    archive = work / "out.tar"
    squashd_export(image.source, archive, "--tag", "myname:v1", "--layer-compression", compression)

    podman("load", "-q", "-i", str(archive))

    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode().split()
    assert any(x.endswith("myname:v1") for x in listed), listed

    info = podman.inspect("myname:v1")
    config = info["Config"]
    assert "GREETING=hello" in config.get("Env", []), config
    assert config.get("Cmd") == ["/bin/hello", "--loud"], config
    assert config.get("Entrypoint") == ["/bin/sh"], config
    assert config.get("WorkingDir") == "/etc", config
    assert config.get("User") == "1234", config
    assert config.get("Labels", {}).get("org.example") == "podman", config
    assert "8080/tcp" in config.get("ExposedPorts", {}), config

    diff_id = SquashedArchive.open(archive).config["rootfs"]["diff_ids"][0]
    assert info["RootFS"]["Layers"] == [diff_id], info["RootFS"]


def test_podman_loads_the_default_tag(podman: Podman, image, work: Path) -> None:
    """`<name>:<tag>.squash` is a tag podman takes."""
    archive = work / "out.tar"
    squashd_export(image.source, archive)
    podman("load", "-q", "-i", str(archive))
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode().split()
    assert any(x.endswith("podapp:t.squash") for x in listed), listed
    assert podman.inspect("podapp:t.squash")["Config"].get("Env") == image_env(image)


def image_env(img: UmociImage) -> list[str]:
    manifest = img.manifest()
    digest = manifest["config"]["digest"].split(":", 1)[1]
    return json.loads((img.layout / "blobs/sha256" / digest).read_bytes())["config"]["Env"]
