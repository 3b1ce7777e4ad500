"""Fixtures of the loader tests: a private dockerd and containerd for the session, and an
image built by Docker itself once per run (legacy builder, from a busybox-static root)."""

from __future__ import annotations

import dataclasses
import io
import struct
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.daemons import Containerd, Dockerd, started
from testbed.registry import Registry
from tests.integration.helpers import require_tool

LONG = "n" * 200  # a name component near the filesystem's limit; paths past 255 bytes
#: security.capability of cap_net_bind_service (permitted + effective), VFS revision 2
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
LABELS = {f"org.example.squashd.label{n:03}": f"{n}-" + "v" * 500 for n in range(150)}

ENTRYPOINT = """#!/bin/sh
echo "entry $* as $(id -u):$(id -g) in $(pwd) A=$A B=$B"
cat /data/recreate/new /data/d2l/again /data/f2d/in /data/d2f /data/keep/a-link /data/hl/alias
ls /data /data/hl /srv /bin/capfile
"""

_BASE_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n"
_BASE_GROUP = "root:x:0:\nnobody:x:65534:\n"


def _dockerfile() -> str:
    labels = list(LABELS.items())
    label_lines = [
        "LABEL " + " ".join(f'{k}="{v}"' for k, v in labels[i : i + 15])
        for i in range(0, len(labels), 15)
    ]
    long_dir = f"/data/long/{LONG}/{LONG}"
    return "\n".join(
        [
            "FROM squashd-test/base:1",
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
            # what later layers change
            "RUN set -e; mkdir -p /data/keep /data/del/sub /data/recreate /data/d2f /data/d2l"
            " /data/hl /srv; echo a > /data/keep/a; echo x > /data/del/x;"
            " echo z > /data/del/sub/z; echo old1 > /data/recreate/old1;"
            " echo old2 > /data/recreate/old2; echo f2d > /data/f2d;"
            " echo inner > /data/d2f/inner; echo inner > /data/d2l/inner;"
            " echo shared > /data/hl/orig; ln /data/hl/orig /data/hl/alias;"
            " ln /data/hl/orig /data/hl/alias2; echo mode > /data/mode;"
            " echo owner > /data/owner; mkfifo /data/fifo; mknod /data/null c 1 3;"
            " mknod /data/loop b 7 0;"
            f" mkdir -p {long_dir}; echo deep > {long_dir}/{LONG};"
            " echo latin > \"/data/$(printf 'caf\\351')\";"
            " mkdir \"/data/$(printf '\\377dir')\"; echo x > \"/data/$(printf '\\377dir')/f\"",
            # deletions, re-creations, changes of kind, mode and owner, new hard links
            "RUN set -e; rm -r /data/del; rm -r /data/recreate; mkdir /data/recreate;"
            " echo new > /data/recreate/new; rm /data/f2d; mkdir /data/f2d;"
            " echo in > /data/f2d/in; rm -r /data/d2f; echo now-a-file > /data/d2f;"
            " rm -r /data/d2l; ln -s keep /data/d2l; rm /data/hl/orig;"
            " ln /data/keep/a /data/keep/a-link; chmod 0600 /data/mode;"
            " chown 1234:5678 /data/owner",
            "RUN set -e; rm /data/d2l; mkdir /data/d2l; echo back > /data/d2l/again",
            "RUN true",  # an empty layer
            "ADD caps.tar /",
            "COPY entry.sh /app/entry.sh",
            'ENV A=1 B="two words"',
            *label_lines,
            "EXPOSE 8080/tcp 53/udp",
            "VOLUME /vol",
            "WORKDIR /work",
            'HEALTHCHECK --interval=30s --timeout=3s CMD ["/bin/true"]',
            "STOPSIGNAL SIGUSR1",
            "USER 1000:1000",
            'ENTRYPOINT ["/app/entry.sh"]',
            'CMD ["hello"]',
            "",
        ]
    )


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, **attrs) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, 1_700_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def _base_root() -> bytes:
    """bin/busybox (static), bin/sh, /etc/passwd and /etc/group, /tmp."""
    busybox = Path(require_tool("busybox")).read_bytes()
    return _tar(
        [
            (_info("bin", tarfile.DIRTYPE, 0o755), b""),
            (_info("bin/busybox", mode=0o755), busybox),
            (_info("bin/sh", tarfile.SYMTYPE, 0o777, linkname="busybox"), b""),
            (_info("etc", tarfile.DIRTYPE, 0o755), b""),
            (_info("etc/passwd"), _BASE_PASSWD.encode()),
            (_info("etc/group"), _BASE_GROUP.encode()),
            (_info("tmp", tarfile.DIRTYPE, 0o1777), b""),
        ]
    )


def _caps_tar() -> bytes:
    """What `ADD` unpacks: a file capability, setuid and sticky modes, a big uid."""
    capfile = _info("bin/capfile", mode=0o755)
    capfile.pax_headers = {
        "SCHILY.xattr.security.capability": CAPABILITY.decode("utf-8", "surrogateescape")
    }
    return _tar(
        [
            (capfile, b"#!/bin/sh\necho cap\n"),
            (_info("srv/setuid", mode=0o4755), b"#!/bin/sh\n"),
            (_info("srv/sticky", tarfile.DIRTYPE, 0o1777), b""),
            (_info("srv/big-ids", uid=70000, gid=80000), b"owned\n"),
        ]
    )


@dataclasses.dataclass
class DockerImage:
    """The image Docker built, in the test dockerd and in the test registry."""

    tag: str  # in the dockerd
    repository: str  # in the registry (acme/app)
    registry_tag: str  # 1
    pushed: str  # HOST/acme/app:1
    run_output: str  # `docker run --network none` of it
    config: dict  # `docker image inspect` .Config
    root: bytes  # `docker export` of a container of it


@pytest.fixture(scope="session")
def dockerd(registry: Registry) -> Iterator[Dockerd]:
    with started("sqd-docker-", lambda root: Dockerd(root, [registry.host])) as daemon:
        yield daemon


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    with started("sqd-ctrd-", Containerd) as daemon:
        yield daemon


@pytest.fixture(scope="session")
def docker_image(dockerd: Dockerd, registry: Registry, tmp_path_factory) -> DockerImage:
    """Built once per run with the legacy builder; pushed to the test registry by docker."""

    context = tmp_path_factory.mktemp("docker-context")
    base = context / "base.tar"
    base.write_bytes(_base_root())
    dockerd.docker("import", base, "squashd-test/base:1")
    build = context / "build"
    build.mkdir()
    (build / "Dockerfile").write_text(_dockerfile())
    (build / "caps.tar").write_bytes(_caps_tar())
    (build / "entry.sh").write_text(ENTRYPOINT)
    (build / "entry.sh").chmod(0o755)
    return build_and_push(dockerd, build, "squashd-test/app:1", registry, "acme/app")


def build_and_push(
    dockerd: Dockerd, context: Path, tag: str, registry: Registry, repository: str
) -> DockerImage:
    """`docker build` of `context` as `tag` (the legacy builder, no network), pushed by
    docker as REPOSITORY:1 into `registry`; what it runs, its config and its root."""
    import json

    dockerd.docker("build", "--network", "none", "-t", tag, context, timeout=600)
    pushed = f"{registry.host}/{repository}:1"
    dockerd.docker("tag", tag, pushed)
    dockerd.docker("push", pushed)
    run_output = dockerd.text("run", "--rm", "--network", "none", tag)
    config = json.loads(dockerd.text("image", "inspect", "--format", "{{json .Config}}", tag))
    return DockerImage(tag, repository, "1", pushed, run_output, config, dockerd.exported(tag))


@pytest.fixture(scope="session")
def saved(dockerd: Dockerd, docker_image: DockerImage, tmp_path_factory) -> Path:
    """`docker save` of the Docker-built image (the legacy layout: layer.tar directories)."""
    path = tmp_path_factory.mktemp("docker-save") / "saved.tar"
    dockerd.docker("save", "-o", path, docker_image.tag)
    return path
