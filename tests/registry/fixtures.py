"""Fixtures of the `docker://` source tests: registries, a token server, a fault proxy,
and the images pushed into them. The machinery itself lives in harness.py (the token
server, the fault proxy) and testbed/registry.py (the registry, `push`).

Scopes: the registries, the token server and the pushed images are built once per
session (a registry starts in well under a second, but pushing and building images is
what costs); proxies and token-request counts are per test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.process import HOST
from testbed.registry import Registry, make_keypair, push
from tests.integration.conftest import module_work, tools, work  # noqa: F401 (fixtures)
from tests.integration.helpers import (
    HandmadeImage,
    LayerBuilder,
    UmociImage,
    require_tool,
    umoci_unpack,
    write_oci_layout,
)
from tests.registry.harness import (
    FaultProxy,
    IndexLayout,
    Squashed,
    TokenRegistry,
    TokenServer,
    export_ok,
    random_bytes,
    upload_verbatim,
    write_platform_index,
)

#: The big file of the sample image: one incompressible layer blob of about this size,
#: for the cut / flip / resume tests.
BIG_FILE_SIZE = 1536 * 1024


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Environment: no credentials of the machine leak into a test
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _empty_config_dir(tmp_path_factory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("no-docker-config")
    yield path
    _rmtree(path)


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch, _empty_config_dir: Path) -> None:
    """Tests see no docker/podman credentials but the ones they write themselves."""
    empty = _empty_config_dir
    monkeypatch.setenv("DOCKER_CONFIG", str(empty))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(empty))


# ---------------------------------------------------------------------------------------
# Registries and the token server
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _plain_registry(tmp_path_factory, name: str) -> Iterator[Registry]:
    """A plain-HTTP distribution registry, no auth, deletes enabled; removed afterwards."""
    root = tmp_path_factory.mktemp(name)
    reg = Registry(root).start()
    try:
        yield reg
    finally:
        reg.stop()
        _rmtree(root)


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Iterator[Registry]:
    """A plain-HTTP distribution registry, no auth, deletes enabled."""
    with _plain_registry(tmp_path_factory, "registry") as reg:
        yield reg


@pytest.fixture(scope="session")
def second_registry(tmp_path_factory) -> Iterator[Registry]:
    """Another one (a mirror's second upstream)."""
    with _plain_registry(tmp_path_factory, "second-registry") as reg:
        yield reg


@pytest.fixture(scope="session")
def _token_registry_session(tmp_path_factory) -> Iterator[TokenRegistry]:
    root = tmp_path_factory.mktemp("token-registry")
    tokens = TokenServer(root / "token-server", users={"alice": "secret"}).start()
    reg = Registry(root / "registry", auth=tokens.registry_auth())
    try:
        reg.start()
        yield TokenRegistry(reg, tokens, "alice", "secret")
    finally:
        reg.stop()
        tokens.stop()
        _rmtree(root)


#: The private registry's accounts: alice reads everything, bob only `public/`, robot is
#: the account a deployment pulls its builds with.
USERS = {"alice": "secret", "bob": "hunter2", "robot": "r0b0t"}


@pytest.fixture(scope="session")
def private_registry(tmp_path_factory) -> Iterator[tuple[Registry, TokenServer]]:
    """A token-auth registry with the accounts of USERS."""
    root = tmp_path_factory.mktemp("private-registry")
    tokens = TokenServer(root / "tokens", users=USERS, grants={"bob": ["public/"]}).start()
    registry = Registry(root / "registry", auth=tokens.registry_auth())
    try:
        yield registry.start(), tokens
    finally:
        registry.stop()
        tokens.stop()
        _rmtree(root)


@pytest.fixture
def token_registry(_token_registry_session: TokenRegistry) -> TokenRegistry:
    """A registry with `auth: token:` (user alice / password secret; repositories under
    `public/` are anonymously pullable); its token-request count starts at zero."""
    _token_registry_session.tokens.reset()
    return _token_registry_session


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory) -> Iterator[tuple[Registry, Path]]:
    """A registry serving HTTPS with a certificate of a CA of our own: (registry, CA PEM)."""
    root = tmp_path_factory.mktemp("tls-registry")
    ca = make_keypair(root / "pki", "ca", common_name="squashd test CA", ca=True)
    server = make_keypair(root / "pki", "server", common_name=HOST, issuer=ca, ip_sans=[HOST])
    reg = Registry(root / "registry", tls=server)
    try:
        reg.start()
        yield reg, ca.cert_path
    finally:
        reg.stop()
        _rmtree(root)


# ---------------------------------------------------------------------------------------
# Proxies
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def proxying(port: int, name: str, **options) -> Iterator[FaultProxy]:
    """A started FaultProxy in front of 127.0.0.1:`port` (`options` as FaultProxy takes
    them), stopped afterwards."""
    proxy = FaultProxy((HOST, port), name=name, **options).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def fault_proxy(registry: Registry) -> Iterator[FaultProxy]:
    """A fault-injecting, request-counting proxy in front of `registry`."""
    with proxying(registry.port, "fault proxy") as proxy:
        yield proxy


@pytest.fixture
def token_proxy(token_registry: TokenRegistry) -> Iterator[FaultProxy]:
    """The same kind of proxy in front of the token-auth registry (counts its requests)."""
    with proxying(token_registry.registry.port, "token-registry proxy") as proxy:
        yield proxy


@pytest.fixture(scope="module")
def module_proxy(registry: Registry) -> Iterator[FaultProxy]:
    """A proxy in front of `registry` shared by a module's tests (e.g. as a deployment's
    upstream); `upstream` resets its rules after each test."""
    with proxying(registry.port, "upstream proxy") as proxy:
        yield proxy


@pytest.fixture
def upstream(module_proxy: FaultProxy) -> Iterator[FaultProxy]:
    """The module's proxy for one test: no rule outlives the test."""
    yield module_proxy
    module_proxy.reset()


# ---------------------------------------------------------------------------------------
# Source images
# ---------------------------------------------------------------------------------------


def build_sample_image(root: Path) -> UmociImage:
    """A three-layer umoci image: files, a big incompressible one, links, special modes,
    then deletions (whiteouts written by umoci), a modified file, and config."""
    img = UmociImage(root, name="sample", tag="v1")
    fs = img.rootfs
    (fs / "etc").mkdir(exist_ok=True)
    (fs / "etc/hostname").write_text("sample\n")
    (fs / "etc/os-release").write_text('NAME="squashd sample"\n')
    (fs / "usr/share/doc/pkg").mkdir(parents=True)
    (fs / "usr/share/doc/pkg/README").write_text("read me\n")
    (fs / "usr/share/doc/pkg/old").write_text("to be deleted\n")
    (fs / "usr/bin").mkdir(parents=True)
    (fs / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(fs / "usr/bin/tool", 0o4755)
    os.link(fs / "usr/bin/tool", fs / "usr/bin/tool-alias")
    os.symlink("tool", fs / "usr/bin/tool-link")
    os.symlink("/nowhere", fs / "usr/bin/dangling")
    (fs / "tmp").mkdir(exist_ok=True)
    os.chmod(fs / "tmp", 0o1777)
    (fs / "var/lib/data").mkdir(parents=True)
    (fs / "var/lib/data/big.bin").write_bytes(random_bytes(BIG_FILE_SIZE, seed=42))
    os.chown(fs / "var/lib/data", 1000, 1000)
    img.commit("base")

    (fs / "usr/share/doc/pkg/old").unlink()
    shutil.rmtree(fs / "var/lib/data")
    (fs / "var/lib/data").mkdir()
    (fs / "var/lib/data/small").write_text("replaced the big one\n")
    (fs / "etc/hostname").write_text("changed\n")
    (fs / "opt/app").mkdir(parents=True)
    (fs / "opt/app/run").write_text("run\n")
    img.commit("changes")

    (fs / "opt/app/run").unlink()
    (fs / "opt/app/run").mkdir()
    (fs / "opt/app/run/now").write_text("file became a directory\n")
    img.commit("file to directory")
    img.config("--config.env", "A=1", "--config.cmd", "/usr/bin/tool", "--config.user", "1000")
    return img


@dataclasses.dataclass
class SampleImages:
    umoci: UmociImage
    umoci_rootfs: Path  # `umoci unpack` of it: the reference tree
    mixed: HandmadeImage  # gzip, zstd and uncompressed layers
    mixed_rootfs: Path  # umoci unpack of its gzip-only twin
    index: IndexLayout  # OCI index: an attestation entry, then arm64, amd64, arm/v7
    index_plain: IndexLayout  # the same without attestation (a Docker manifest list can't
    # hold one: skopeo fails converting its in-toto layer)


def _mixed_layers() -> list[LayerBuilder]:
    return [
        LayerBuilder().dir("data").file("data/a", b"a" * 5000).file("data/b", b"bb\n"),
        LayerBuilder().whiteout("data/b").file("data/c", random_bytes(70_000, seed=7)),
        LayerBuilder().opaque("data").file("data/d", b"only d\n"),
    ]


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Iterator[SampleImages]:
    """The source images, built once, with their reference trees (umoci unpack)."""
    for tool in ("skopeo", "umoci"):
        require_tool(tool)
    root = tmp_path_factory.mktemp("images")
    try:
        umoci_img = build_sample_image(root / "umoci")
        umoci_rootfs = umoci_unpack(umoci_img.ref, root / "umoci-ref.bundle")
        tars = [layer.tar() for layer in _mixed_layers()]
        mixed = write_oci_layout(root / "mixed", tars, compression=["gzip", "zstd", "none"])
        twin = write_oci_layout(root / "twin", tars, compression="gzip")  # umoci: no zstd
        mixed_rootfs = umoci_unpack(twin.ref, root / "mixed-ref.bundle")
        index = write_platform_index(root / "index")
        index_plain = write_platform_index(root / "index-plain", attestation=False)
        yield SampleImages(umoci_img, umoci_rootfs, mixed, mixed_rootfs, index, index_plain)
    finally:
        _rmtree(root)


@dataclasses.dataclass
class Pushed:
    """Where the sample images are in `registry` (names, tags, manifest digests)."""

    oci: str = "squashd/sample-oci"
    v2s2: str = "squashd/sample-v2s2"
    mixed: str = "squashd/mixed"
    multi: str = "squashd/multi"
    multi_v2s2: str = "squashd/multi-v2s2"
    tag: str = "v1"
    digests: dict[str, str] = dataclasses.field(default_factory=dict)


@pytest.fixture(scope="session")
def pushed(registry: Registry, images: SampleImages) -> Pushed:
    """The sample images pushed into `registry`: OCI form, Docker schema 2 form, the
    mixed-compression image (OCI, uploaded verbatim), the multi-platform OCI index
    (`--all`) and a Docker manifest list of the same platforms."""
    p = Pushed()
    p.digests["oci"] = push(images.umoci, registry.ref(p.oci, p.tag), fmt="oci")
    p.digests["v2s2"] = push(images.umoci, registry.ref(p.v2s2, p.tag), fmt="v2s2")
    # skopeo would gzip the uncompressed layer: upload the mixed image byte for byte
    p.digests["mixed"] = upload_verbatim(
        registry, p.mixed, p.tag, images.mixed.layout, images.mixed.manifest_digest
    )
    p.digests["multi"] = push(
        f"oci:{images.index.ref}", registry.ref(p.multi, p.tag), fmt="oci", all_platforms=True
    )
    p.digests["multi_v2s2"] = push(
        f"oci:{images.index_plain.ref}",
        registry.ref(p.multi_v2s2, p.tag),
        fmt="v2s2",
        all_platforms=True,
    )
    return p


@pytest.fixture(scope="session")
def baseline(images: SampleImages, tmp_path_factory) -> dict[str, str]:
    """The squashed layer's diff_id when the sample images are squashed from their
    `oci:` layouts: an export from a registry must give the very same layer."""
    require_tool("squashd")
    root = tmp_path_factory.mktemp("baseline")
    try:
        out = {}
        for key, img in (("umoci", images.umoci), ("mixed", images.mixed)):
            archive = root / f"{key}.tar"
            export_ok(img.source, archive)
            out[key] = Squashed.open(archive).diff_id
        return out
    finally:
        _rmtree(root)


TOKEN_PRIVATE = "team/private"
TOKEN_PUBLIC = "public/base"


@pytest.fixture(scope="session")
def token_pushed(_token_registry_session: TokenRegistry, images: SampleImages) -> dict[str, str]:
    """The umoci sample pushed (with credentials, OCI form) into the token registry as a
    private repository (TOKEN_PRIVATE) and an anonymously pullable one (TOKEN_PUBLIC)."""
    reg = _token_registry_session
    return {
        TOKEN_PRIVATE: reg.push(images.umoci, TOKEN_PRIVATE, "v1"),
        TOKEN_PUBLIC: reg.push(images.umoci, TOKEN_PUBLIC, "v1"),
    }
