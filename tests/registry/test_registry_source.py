"""`squashd export docker://...`: images pushed by skopeo into a real distribution
registry squash to the same root filesystem as the original (skopeo + umoci judge),
in OCI and Docker schema 2 form, by tag or digest, and bad references fail clearly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.helpers import digest_of, roundtrip

from .harness import Squashed, export_fails, export_ok

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["oci", "v2s2"])
def test_squash_from_registry_gives_the_original_tree(
    tools, registry, pushed, images, baseline, work: Path, form: str
) -> None:
    name = pushed.oci if form == "oci" else pushed.v2s2
    source = registry.ref(name, pushed.tag)
    result = roundtrip(source, work, reference=images.umoci_rootfs)

    squashed = Squashed.open(result.archive)
    assert squashed.diff_id == baseline["umoci"], (
        "the layer squashed from the registry differs from the one squashed from the "
        "oci: layout of the same image"
    )
    cfg = squashed.config["config"]
    assert "A=1" in cfg.get("Env", []), cfg
    assert cfg.get("Cmd") == ["/usr/bin/tool"], cfg
    assert cfg.get("User") == "1000", cfg
    assert pushed.digests[form] in squashed.history_text, (
        f"history should name the source manifest {pushed.digests[form]}: {squashed.history_text}"
    )
    assert squashed.repo_tags == [f"{registry.host}/{name}:{pushed.tag}.squash"]


def test_mixed_layer_compressions(tools, registry, pushed, images, baseline, work) -> None:
    """gzip, zstd and uncompressed layers in one OCI image, as pushed (not recompressed)."""
    manifest = json.loads(
        registry.get(
            f"/v2/{pushed.mixed}/manifests/{pushed.tag}",
            {"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )[2]
    )
    assert [layer["mediaType"].rsplit(".", 1)[-1] for layer in manifest["layers"]] == [
        "tar+gzip",
        "tar+zstd",
        "tar",
    ], "skopeo changed the layers on push; the test no longer covers all three"
    result = roundtrip(registry.ref(pushed.mixed, pushed.tag), work, reference=images.mixed_rootfs)
    assert Squashed.open(result.archive).diff_id == baseline["mixed"]


# ---------------------------------------------------------------------------------------
# Reference forms
# ---------------------------------------------------------------------------------------


def _forms(registry, pushed) -> dict[str, tuple[str, tuple[str, ...]]]:
    host, name, tag, digest = registry.host, pushed.oci, pushed.tag, pushed.digests["oci"]
    return {
        "no transport": (f"{host}/{name}:{tag}", ()),
        "digest": (f"docker://{host}/{name}@{digest}", ()),
        "digest, no transport": (f"{host}/{name}@{digest}", ()),
        "tag and digest": (f"docker://{host}/{name}:{tag}@{digest}", ()),
        "--plain-http": (f"docker://{host}/{name}:{tag}", ("--plain-http",)),
        "--layer-compression gzip": (
            f"docker://{host}/{name}:{tag}",
            ("--layer-compression", "gzip"),
        ),
    }


@pytest.mark.parametrize(
    "form",
    [
        "no transport",
        "digest",
        "digest, no transport",
        "tag and digest",
        "--plain-http",
        "--layer-compression gzip",
    ],
)
def test_reference_forms(tools, registry, pushed, baseline, work, form: str) -> None:
    source, args = _forms(registry, pushed)[form]
    out = work / "out.tar"
    export_ok(source, out, *args)
    squashed = Squashed.open(out)
    assert squashed.diff_id == baseline["umoci"]
    assert pushed.digests["oci"] in squashed.history_text


def test_digest_is_the_manifest_the_registry_serves(registry, pushed) -> None:
    """(Harness check) the digest skopeo reported is the one the registry addresses."""
    status, headers, body = registry.get(
        f"/v2/{pushed.oci}/manifests/{pushed.digests['oci']}",
        {"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert status == 200
    assert digest_of(body) == pushed.digests["oci"] == headers["docker-content-digest"]


# ---------------------------------------------------------------------------------------
# What does not exist
# ---------------------------------------------------------------------------------------


def test_unknown_tag(tools, registry, pushed, work) -> None:
    line = export_fails(registry.ref(pushed.oci, "no-such-tag"), work)
    assert "no-such-tag" in line, f"the error should name the tag: {line}"


def test_unknown_repository(tools, registry, pushed, work) -> None:
    line = export_fails(registry.ref("squashd/no-such-repo", "v1"), work)
    assert "squashd/no-such-repo" in line, f"the error should name the repository: {line}"


def test_unknown_digest(tools, registry, pushed, work) -> None:
    digest = "sha256:" + "0" * 64
    line = export_fails(registry.ref(pushed.oci, digest), work)
    assert digest in line or "0" * 12 in line, f"the error should name the digest: {line}"


def test_nothing_listens(tools, work) -> None:
    from testbed.process import free_port

    port = free_port()
    line = export_fails(f"docker://127.0.0.1:{port}/x/y:z", work)
    assert f"127.0.0.1:{port}" in line, f"the error should name the registry: {line}"


# ---------------------------------------------------------------------------------------
# Manifests squashd does not read (served by the proxy in front of the registry)
# ---------------------------------------------------------------------------------------

SCHEMA1 = {
    "schemaVersion": 1,
    "name": "squashd/old",
    "tag": "v1",
    "architecture": "amd64",
    "fsLayers": [{"blobSum": "sha256:" + "a" * 64}],
    "history": [{"v1Compatibility": "{}"}],
    "signatures": [],
}


@pytest.mark.parametrize(
    "content_type",
    [
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
    ],
)
def test_schema1_is_a_clear_error(tools, fault_proxy, work, content_type: str) -> None:
    body = json.dumps(SCHEMA1).encode()
    headers = {"Content-Type": content_type, "Docker-Content-Digest": digest_of(body)}
    fault_proxy.respond("/v2/squashd/old/manifests/", 200, body, headers)
    line = export_fails(fault_proxy.ref("squashd/old", "v1"), work, describe=fault_proxy.describe)
    assert re.search(r"schema ?(version )?1|v1", line, re.IGNORECASE), line


def test_unknown_manifest_media_type_is_a_clear_error(tools, fault_proxy, work) -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.example.thing+json"})
    headers = {
        "Content-Type": "application/vnd.example.thing+json",
        "Docker-Content-Digest": digest_of(body.encode()),
    }
    fault_proxy.respond("/v2/squashd/odd/manifests/", 200, body.encode(), headers)
    line = export_fails(fault_proxy.ref("squashd/odd", "v1"), work, describe=fault_proxy.describe)
    assert "application/vnd.example.thing+json" in line, line


# ---------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_pushed(tls_registry, images) -> str:
    from testbed.registry import push

    reg, _ca = tls_registry
    return push(images.mixed, reg.ref("squashd/tls", "v1"))


def test_tls_registry_with_ca_file(tools, tls_registry, tls_pushed, baseline, work) -> None:
    reg, ca = tls_registry
    out = work / "out.tar"
    export_ok(reg.ref("squashd/tls", "v1"), out, "--ca-file", str(ca))
    assert Squashed.open(out).diff_id == baseline["mixed"]


def test_tls_registry_without_verification(tools, tls_registry, tls_pushed, baseline, work) -> None:
    reg, _ca = tls_registry
    out = work / "out.tar"
    export_ok(reg.ref("squashd/tls", "v1"), out, "--tls-verify=false")
    assert Squashed.open(out).diff_id == baseline["mixed"]


def test_tls_registry_with_the_wrong_ca_fails(
    tools, tls_registry, tls_pushed, token_registry, work
) -> None:
    reg, _ca = tls_registry
    wrong_ca = token_registry.tokens.signer.cert_path  # a valid PEM, not the registry's CA
    line = export_fails(reg.ref("squashd/tls", "v1"), work, "--ca-file", str(wrong_ca))
    assert re.search(r"certificate|tls|ssl|verif", line, re.IGNORECASE), line


def test_tls_registry_access_check_head(tls_registry, tls_pushed, token_registry) -> None:
    """The access check's HEAD pool (squash/distribution/heads.py) over TLS: the digest the
    registry serves, a kept connection, and no answer through a CA not the registry's."""
    import ssl

    from squash.distribution.client import ACCEPT, Registry
    from squash.distribution.heads import HeadPool
    from squash.distribution.options import RegistryOptions

    reg, ca = tls_registry
    _, _, digest = Registry(reg.host, reg.host, RegistryOptions(ca_file=str(ca))).manifest(
        "squashd/tls", "v1", "the TLS image"
    )
    pool = HeadPool(reg.url, ssl.create_default_context(cafile=str(ca)), 5.0)
    for _ in range(2):
        answer = pool.head("/v2/squashd/tls/manifests/v1", [("Accept", ACCEPT)])
        assert answer is not None and answer[0] == 200
        assert answer[1]["docker-content-digest"] == digest
    assert len(pool._idle) == 1, "the TLS connection was not kept"
    wrong_ca = token_registry.tokens.signer.cert_path
    wrong = HeadPool(reg.url, ssl.create_default_context(cafile=str(wrong_ca)), 5.0)
    assert wrong.head("/v2/squashd/tls/manifests/v1", [("Accept", ACCEPT)]) is None
