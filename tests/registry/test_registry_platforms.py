"""A multi-platform image in a registry resolves to one platform: linux/amd64 by default,
`--platform` otherwise, never the attestation entry; a platform that is not there fails
with the list of those that are.

The index (pushed with `skopeo copy --all`) lists, in this order: an attestation
manifest (unknown/unknown), linux/arm64, linux/amd64, linux/arm/v7 — so "take the first
entry" is caught. The same platforms are also pushed as a Docker manifest list.
"""

from __future__ import annotations

import pytest

from .harness import Squashed, export_fails, export_ok

pytestmark = pytest.mark.integration

CASES = [
    ((), "linux/amd64"),
    (("--platform", "linux/amd64"), "linux/amd64"),
    (("--platform", "linux/arm64"), "linux/arm64"),
    (("--platform", "linux/arm/v7"), "linux/arm/v7"),
]


def _check_platform(out, platform: str, manifest_digest: str | None) -> None:
    squashed = Squashed.open(out)
    files = squashed.files()
    assert files.get("etc/platform") == f"{platform}\n".encode(), (
        f"expected the {platform} image, got etc/platform = {files.get('etc/platform')!r}"
    )
    parts = platform.split("/")
    assert squashed.config["architecture"] == parts[1]
    assert squashed.config["os"] == parts[0]
    if len(parts) == 3:
        assert squashed.config.get("variant") == parts[2]
    assert f"PLATFORM={platform}" in squashed.config["config"]["Env"]
    # the whiteout of the upper layer applied: the lower file is gone
    assert "etc/stale" not in files and "etc/upper" in files
    if manifest_digest:
        assert manifest_digest in squashed.history_text, squashed.history_text


@pytest.mark.parametrize(
    ("args", "platform"), CASES, ids=[" ".join(a) or "default" for a, _ in CASES]
)
def test_oci_index_picks_the_platform(
    tools, registry, pushed, images, work, args, platform
) -> None:
    out = work / "out.tar"
    export_ok(registry.ref(pushed.multi, pushed.tag), out, *args)
    _check_platform(out, platform, images.index.images[platform].manifest_digest)


@pytest.mark.parametrize(
    ("args", "platform"),
    [CASES[0], CASES[2]],
    ids=["default", "linux/arm64"],
)
def test_docker_manifest_list_picks_the_platform(
    tools, registry, pushed, work, args, platform
) -> None:
    out = work / "out.tar"
    export_ok(registry.ref(pushed.multi_v2s2, pushed.tag), out, *args)
    _check_platform(out, platform, None)  # skopeo converted: new manifest digests


def test_index_by_digest(tools, registry, pushed, images, work) -> None:
    out = work / "out.tar"
    ref = registry.ref(pushed.multi, pushed.digests["multi"])
    assert pushed.digests["multi"] == images.index.index_digest  # pushed as it is
    export_ok(ref, out, "--platform", "linux/arm64")
    _check_platform(out, "linux/arm64", images.index.images["linux/arm64"].manifest_digest)


@pytest.mark.parametrize("name", ["multi", "multi_v2s2"])
def test_missing_platform_lists_the_platforms(tools, registry, pushed, work, name) -> None:
    repo = getattr(pushed, name)
    line = export_fails(registry.ref(repo, pushed.tag), work, "--platform", "linux/s390x")
    assert "linux/s390x" in line, f"the error should name the platform asked for: {line}"
    for platform in ("linux/amd64", "linux/arm64", "linux/arm/v7"):
        assert platform in line, f"the error should list {platform}: {line}"
    assert "unknown/unknown" not in line, f"an attestation is not a platform: {line}"
