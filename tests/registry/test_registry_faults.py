"""Faults between squashd and the registry, injected by a proxy of our own: a blob
connection cut halfway resumes with a `Range` request; a flipped byte fails on the
digest and leaves no output; 429 / 5xx once are retried; permanent errors fail at once.
"""

from __future__ import annotations

import json
import re

import pytest

from .fixtures import TOKEN_PRIVATE
from .harness import Squashed, export, export_fails, export_ok

pytestmark = pytest.mark.integration


def _manifest(registry, name: str, tag: str) -> dict:
    found = registry.manifest(name, tag)
    assert found is not None, f"{name}:{tag} is not in the registry"
    return found


@pytest.fixture(scope="module")
def big_layer(registry, pushed) -> dict:
    """The descriptor of the sample image's biggest layer (about 1.5 MiB, incompressible)."""
    layer = max(_manifest(registry, pushed.oci, pushed.tag)["layers"], key=lambda d: d["size"])
    assert layer["size"] > 1_000_000, layer
    return layer


def test_each_blob_is_downloaded_once(tools, registry, pushed, fault_proxy, baseline, work):
    """Without faults, every blob is asked for in full exactly once. (A look at a
    layer's first bytes before it is streamed should be a `Range` request, not a second
    download of the whole blob cut short.)"""
    out = work / "out.tar"
    export_ok(fault_proxy.ref(pushed.oci, pushed.tag), out)
    assert Squashed.open(out).diff_id == baseline["umoci"]
    manifest = _manifest(registry, pushed.oci, pushed.tag)
    for desc in [manifest["config"], *manifest["layers"]]:
        full = [s for s in fault_proxy.blob_gets(desc["digest"]) if not s.range]
        assert len(full) == 1, (
            f"blob {desc['digest']} ({desc['size']} bytes) was requested in full "
            f"{len(full)} times\n{fault_proxy.describe()}"
        )


@pytest.mark.parametrize("dest", ["tar", "oci"])
def test_a_kept_layer_is_downloaded_once(tools, registry, pushed, fault_proxy, work, dest):
    """A partial squash reads its kept layers for the merge and places them in the
    destination as they are stored: from the one download, not a second one."""
    out = work / "out.tar"
    target = str(out) if dest == "tar" else f"oci:{work / 'layout'}:t"
    proc = export(fault_proxy.ref(pushed.oci, pushed.tag), target, "--keep-base", "2")
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")[-3000:]
    manifest = _manifest(registry, pushed.oci, pushed.tag)
    for desc in manifest["layers"][:2]:
        full = [s for s in fault_proxy.blob_gets(desc["digest"]) if not s.range]
        assert len(full) == 1, (
            f"kept layer {desc['digest']} ({desc['size']} bytes) was requested in full "
            f"{len(full)} times\n{fault_proxy.describe()}"
        )


def _range_start(header: str) -> int:
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", header)
    assert m, f"unexpected Range header {header!r}"
    return int(m[1])


# ---------------------------------------------------------------------------------------
# Cut connections
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cuts", [1, 2])
def test_cut_blob_resumes_with_range(
    tools, pushed, fault_proxy, big_layer, baseline, work, cuts: int
) -> None:
    digest, size = big_layer["digest"], big_layer["size"]
    after = size // (cuts + 1)
    fault_proxy.cut(digest, after=after, times=cuts)
    out = work / "out.tar"
    export_ok(fault_proxy.ref(pushed.oci, pushed.tag), out)
    assert Squashed.open(out).diff_id == baseline["umoci"]

    gets = [s for s in fault_proxy.blob_gets(digest) if not s.is_head]
    ranged = [s for s in gets if s.is_resume]
    context = fault_proxy.describe()
    assert len(ranged) >= cuts, f"the interrupted blob was not resumed with Range\n{context}"
    starts = [_range_start(s.range) for s in ranged]
    assert all(0 < start <= after * (i + 1) for i, start in enumerate(starts[:cuts])), (
        f"resumed from {starts}, cut after {after} bytes each time\n{context}"
    )
    assert len(gets) - len(ranged) == 1, f"the blob was fetched from scratch again\n{context}"


def test_cut_blob_on_a_token_registry_resumes_with_the_token(
    tools, token_registry, token_pushed, token_proxy, big_layer, baseline, work
) -> None:
    """The resumed request carries the bearer token too, and needs no new one."""
    digest = big_layer["digest"]  # the same blob: the same image was pushed there
    token_proxy.cut(digest, after=big_layer["size"] // 2)
    out = work / "out.tar"
    export_ok(token_proxy.ref(TOKEN_PRIVATE, "v1"), out, "--creds", token_registry.creds)
    assert Squashed.open(out).diff_id == baseline["umoci"]
    ranged = token_proxy.range_requests(digest)
    assert ranged, token_proxy.describe()
    assert all(s.headers.get("authorization", "").startswith("Bearer ") for s in ranged)
    assert len(token_registry.tokens.requests_for(TOKEN_PRIVATE)) == 1


def test_cut_before_the_first_byte_is_retried(
    tools, pushed, fault_proxy, big_layer, baseline, work
) -> None:
    fault_proxy.cut(big_layer["digest"], after=0)
    out = work / "out.tar"
    export_ok(fault_proxy.ref(pushed.oci, pushed.tag), out)
    assert Squashed.open(out).diff_id == baseline["umoci"]
    assert len(fault_proxy.blob_gets(big_layer["digest"])) >= 2, fault_proxy.describe()


def test_cut_v2s2_blob_resumes(tools, registry, pushed, fault_proxy, baseline, work) -> None:
    _, _, body = registry.get(
        f"/v2/{pushed.v2s2}/manifests/{pushed.tag}",
        {"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    layer = max(json.loads(body)["layers"], key=lambda d: d["size"])
    fault_proxy.cut(layer["digest"], after=layer["size"] // 2)
    out = work / "out.tar"
    export_ok(fault_proxy.ref(pushed.v2s2, pushed.tag), out)
    assert Squashed.open(out).diff_id == baseline["umoci"]
    assert fault_proxy.range_requests(layer["digest"]), fault_proxy.describe()


# ---------------------------------------------------------------------------------------
# Corrupt bytes
# ---------------------------------------------------------------------------------------


def _blob_of(registry, pushed, which: str) -> tuple[str, str]:
    """(repository, digest) of a blob to corrupt."""
    if which == "big gzip layer":
        manifest = _manifest(registry, pushed.oci, pushed.tag)
        return pushed.oci, max(manifest["layers"], key=lambda d: d["size"])["digest"]
    if which == "uncompressed layer":  # the tar stays valid: only the digest can tell
        manifest = _manifest(registry, pushed.mixed, pushed.tag)
        layer = next(d for d in manifest["layers"] if d["mediaType"].endswith(".tar"))
        return pushed.mixed, layer["digest"]
    if which == "zstd layer":
        manifest = _manifest(registry, pushed.mixed, pushed.tag)
        layer = next(d for d in manifest["layers"] if d["mediaType"].endswith("+zstd"))
        return pushed.mixed, layer["digest"]
    if which == "config":
        return pushed.oci, _manifest(registry, pushed.oci, pushed.tag)["config"]["digest"]
    raise AssertionError(which)


@pytest.mark.parametrize("which", ["big gzip layer", "uncompressed layer", "zstd layer", "config"])
def test_flipped_byte_fails_on_the_digest(
    tools, registry, pushed, fault_proxy, work, which: str
) -> None:
    repo, digest = _blob_of(registry, pushed, which)
    fault_proxy.flip(digest)  # every time: a retry cannot help
    line = export_fails(fault_proxy.ref(repo, pushed.tag), work, describe=fault_proxy.describe)
    assert "digest" in line.lower(), f"the error should say the digest did not match: {line}"
    short = digest.split(":", 1)[1][:12]
    assert short in line, f"the error should name the blob {digest}: {line}"
    assert fault_proxy.blob_gets(digest), fault_proxy.describe()


def test_corrupt_bytes_before_a_cut_are_not_kept(
    tools, registry, pushed, fault_proxy, baseline, work
) -> None:
    """A flipped byte in the first half of an uncompressed layer (only the digest can
    tell), then a cut, then a correct rest: a client that resumes with `Range` must fail
    on the digest (it covers all bytes, not just the last request); one that starts over
    may succeed, but then with the right bytes. Never a squashed image of corrupt data.
    """
    repo, digest = _blob_of(registry, pushed, "uncompressed layer")
    size = next(
        d["size"] for d in _manifest(registry, repo, pushed.tag)["layers"] if d["digest"] == digest
    )
    fault_proxy.flip(digest, offset=size // 4, times=1)
    fault_proxy.cut(digest, after=size // 2, times=1)
    out = work / "out.tar"
    proc = export(fault_proxy.ref(repo, pushed.tag), out)
    stderr = proc.stderr.decode("utf-8", "replace")
    context = f"{stderr}\n{fault_proxy.describe()}"
    if fault_proxy.range_requests(digest):
        assert proc.returncode != 0, f"resumed onto corrupt bytes and succeeded\n{context}"
        assert "digest" in stderr.lower(), context
        assert not out.exists(), "a failed export left its output"
    else:
        assert proc.returncode == 0, context
        assert Squashed.open(out).diff_id == baseline["mixed"], context


# ---------------------------------------------------------------------------------------
# Transient and permanent statuses
# ---------------------------------------------------------------------------------------


def _path_of(registry, pushed, where: str) -> str:
    if where == "manifest":
        return f"/v2/{pushed.oci}/manifests/"
    manifest = _manifest(registry, pushed.oci, pushed.tag)
    if where == "config":
        return manifest["config"]["digest"]
    return max(manifest["layers"], key=lambda d: d["size"])["digest"]


@pytest.mark.parametrize(
    ("status", "where"),
    [(503, "manifest"), (429, "manifest"), (503, "layer"), (429, "config"), (502, "layer")],
)
def test_transient_status_is_retried(
    tools, registry, pushed, fault_proxy, baseline, work, status: int, where: str
) -> None:
    fault_proxy.fail(_path_of(registry, pushed, where), status, times=1)
    out = work / "out.tar"
    export_ok(fault_proxy.ref(pushed.oci, pushed.tag), out)
    assert Squashed.open(out).diff_id == baseline["umoci"]
    assert any(s.status == status for s in fault_proxy.seen), fault_proxy.describe()


@pytest.mark.parametrize(("status", "where"), [(404, "layer"), (403, "manifest")])
def test_permanent_status_fails_at_once(
    tools, registry, pushed, fault_proxy, work, status: int, where: str
) -> None:
    path = _path_of(registry, pushed, where)
    fault_proxy.fail(path, status, times=None, methods=("GET", "HEAD"))
    line = export_fails(
        fault_proxy.ref(pushed.oci, pushed.tag), work, describe=fault_proxy.describe
    )
    answered = [s for s in fault_proxy.seen if s.status == status]
    assert len(answered) == 1, f"a {status} is not worth retrying\n{fault_proxy.describe()}"
    assert str(status) in line or re.search(r"denied|forbidden|not found|unknown", line, re.I), line


def test_persistent_503_gives_up(tools, registry, pushed, fault_proxy, work) -> None:
    """Retries are bounded: a registry that keeps answering 503 fails the export."""
    fault_proxy.fail("/manifests/", 503, times=None)
    line = export_fails(fault_proxy.ref(pushed.oci, pushed.tag), work)
    assert "503" in line, line
    attempts = len(fault_proxy.requests("/manifests/"))
    assert 2 <= attempts <= 20, f"{attempts} attempts\n{fault_proxy.describe()}"
