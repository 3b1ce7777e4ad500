"""What the real loaders must say of a squashed archive of the Docker-built image: docker
(load, inspect, export, run) and containerd (import, content, run)."""

from __future__ import annotations

import json
from pathlib import Path

from squash.codec import compression_of
from testbed.daemons import Containerd, Dockerd
from tests.integration.helpers import SquashedArchive
from tests.loaders.fixtures import DockerImage
from tests.loaders.harness import RootTree

#: The run configuration that must survive the squash (docker image inspect .Config).
CONFIG_FIELDS = (
    "Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts", "Volumes",
    "Healthcheck", "StopSignal",
)  # fmt: skip
MEDIA_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


def judge_docker(
    dockerd: Dockerd,
    image: DockerImage,
    out: Path,
    tag: str,
    said: str | None,
    kept: list[str] | None = None,
) -> None:
    """docker load names `tag`; inspect shows the run configuration and the layers (the
    `kept` diff_ids first, then the squashed one); export and run equal the original's."""
    loaded = dockerd.load(out) if said is None else [
        line.split(": ", 1)[1] for line in said.splitlines() if ": " in line
    ]  # fmt: skip
    assert loaded == [tag], f"docker load named {loaded}, the archive's tag is {tag}"
    config = json.loads(dockerd.text("image", "inspect", "--format", "{{json .Config}}", tag))
    for field in CONFIG_FIELDS:
        assert config.get(field) == image.config.get(field), f"Config.{field} differs"
    layers = json.loads(dockerd.text("image", "inspect", "--format", "{{json .RootFS}}", tag))
    kept = kept or []
    assert len(layers["Layers"]) == len(kept) + 1, layers
    assert layers["Layers"][: len(kept)] == kept, "the kept layers are not the original's"
    diffs = RootTree.of_export(image.root).differences(RootTree.of_export(dockerd.exported(tag)))
    assert not diffs, "docker export of original and squashed differ:\n" + "\n".join(diffs[:40])
    output = dockerd.text("run", "--rm", "--network", "none", tag)
    assert output == image.run_output


def judge_containerd(
    containerd: Containerd,
    image: DockerImage,
    out: Path,
    archive: SquashedArchive,
    compression: str,
    kept: int = 0,
) -> None:
    """ctr images import names the image; the squashed layer (on `kept` layers) is
    labelled as its bytes are compressed; ctr run gives the original's output."""
    (entry,) = archive.json("index.json")["manifests"]
    name = entry["annotations"]["io.containerd.image.name"]
    container = f"judge-{compression}-{kept}"
    containerd.ctr("images", "import", out)
    try:
        assert name in containerd.images(), f"ctr images import did not name {name}"
        manifest = json.loads(containerd.content(entry["digest"]))
        assert len(manifest["layers"]) == kept + 1, manifest["layers"]
        for layer in manifest["layers"]:
            head = containerd.content(layer["digest"])[:4]
            assert layer["mediaType"] == MEDIA_TYPES[compression_of(head)], (
                f"a layer is labelled {layer['mediaType']} but its bytes start {head!r}"
            )
        assert manifest["layers"][-1]["mediaType"] == MEDIA_TYPES[compression]
        proc = containerd.ctr("run", "--rm", name, container, timeout=120)
        assert proc.stdout.decode().strip() == image.run_output
    finally:
        containerd.ctr("containers", "rm", container, check=False)
        containerd.ctr("images", "rm", name, check=False)
