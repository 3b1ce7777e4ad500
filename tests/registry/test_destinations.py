"""Destinations other than a `docker load` tar, judged by independent tools: an OCI layout
(`-o oci:DIR[:TAG]`, unpacked by umoci) and a push to the distribution registry (`-o
docker://HOST/NAME[:TAG]`, pulled back by skopeo and unpacked by umoci), full and
partial squashes, anonymous and with push-scoped tokens.

The pushes go through the fault proxy, which counts what they send: the squashed layer
in PATCHes of `--push-chunk-size`, kept layers mounted from the source repository (no
upload of them), a PATCH answered 503 resumed from the upload's status, and failures
that leave no tag.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import tracemalloc
from pathlib import Path
from urllib.parse import unquote

import pytest

from squash.distribution.client import Registry
from squash.distribution.push import BlobUpload
from testbed.tools import run
from tests.integration.helpers import compare_trees, format_diffs, umoci_unpack

from .fixtures import proxying
from .harness import FaultProxy, export

pytestmark = pytest.mark.integration

CHUNK = 4096
REF_NAME_KEY = "org.opencontainers.image.ref.name"


def pushed_ok(source: str, dest: str, *args: str) -> None:
    proc = export(source, dest, "--push-chunk-size", str(CHUNK), *args)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, f"export {source} -o {dest} failed:\n{stderr[-3000:]}"


def push_fails(source: str, dest: str, *args: str) -> str:
    proc = export(source, dest, "--push-chunk-size", str(CHUNK), *args, timeout=300)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode != 0, f"export {source} -o {dest} succeeded, but must fail"
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    return stderr.strip()


def pulled_tree(ref: str, work: Path, *creds: str) -> Path:
    """`skopeo copy docker://… oci:` then `umoci unpack`: the pushed image's tree."""
    layout = work / f"pulled-{len(list(work.iterdir()))}"
    run(["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
         *creds, ref, f"oci:{layout}:t"])  # fmt: skip
    return umoci_unpack(f"{layout}:t", layout.with_suffix(".bundle"))


def same_tree(reference: Path, tree: Path) -> None:
    diffs = compare_trees(reference, tree)
    assert not diffs, format_diffs(diffs)


def upload_patches(proxy: FaultProxy, name: str) -> list:
    return proxy.requests(rf"^/v2/{name}/blobs/uploads/", "PATCH")


# ---------------------------------------------------------------------------------------
# Pushes
# ---------------------------------------------------------------------------------------


def test_push_is_chunked_and_pulls_back_as_the_original(
    tools, registry, pushed, images, work
) -> None:
    with proxying(registry.port, "push proxy") as proxy:
        # the provenance referrer's blobs would go up too: test_provenance counts those
        pushed_ok(registry.ref(pushed.oci, "v1"), proxy.ref("pushed/flat", "v1"), "--no-referrer")
        manifest = registry.manifest("pushed/flat", "v1")
        assert manifest is not None
        (layer,) = manifest["layers"]
        config = manifest["config"]
        # the layer and the config went up in chunks of CHUNK bytes, nothing else did
        expected = math.ceil(layer["size"] / CHUNK) + math.ceil(config["size"] / CHUNK)
        assert len(upload_patches(proxy, "pushed/flat")) == expected > 2
        puts = proxy.requests(r"^/v2/pushed/flat/blobs/uploads/", "PUT")
        put = sorted(unquote(p.path.split("digest=")[1]) for p in puts)
        assert put == sorted([layer["digest"], config["digest"]])
    same_tree(images.umoci_rootfs, pulled_tree(registry.ref("pushed/flat", "v1"), work))


def test_partial_push_mounts_the_kept_layers(tools, registry, pushed, images, work) -> None:
    """The kept layers are in the source repository of the same registry: mounted, not
    uploaded; the pushed image keeps their digests and unpacks to the original."""
    source = registry.manifest(pushed.oci, "v1")
    assert source is not None and len(source["layers"]) == 3
    with proxying(registry.port, "push proxy") as proxy:
        pushed_ok(proxy.ref(pushed.oci, "v1"), proxy.ref("pushed/partial", "v1"),
                  "--keep-base", "2")  # fmt: skip
        mounts = proxy.requests(r"^/v2/pushed/partial/blobs/uploads/$", "POST")
        mounted = [s for s in mounts if "mount=" in s.path and s.status == 201]
        kept = [layer["digest"] for layer in source["layers"][:2]]
        assert sorted(s.path.split("mount=")[1].split("&")[0] for s in mounted) == sorted(kept)
        uploaded = unquote(" ".join(p.path for p in proxy.requests(r"/blobs/uploads/", "PUT")))
        assert not any(d.split(":")[1] in uploaded for d in kept), "a kept layer was uploaded"
    manifest = registry.manifest("pushed/partial", "v1")
    assert manifest is not None
    assert [layer["digest"] for layer in manifest["layers"][:2]] == kept
    assert len(manifest["layers"]) == 3
    same_tree(images.umoci_rootfs, pulled_tree(registry.ref("pushed/partial", "v1"), work))


def test_a_failed_patch_is_resumed(tools, registry, pushed, images, work) -> None:
    with proxying(registry.port, "push proxy") as proxy:
        proxy.fail(r"^/v2/pushed/resumed/blobs/uploads/.", 503, methods=("PATCH",), times=1)
        pushed_ok(
            registry.ref(pushed.oci, "v1"), proxy.ref("pushed/resumed", "v1"), "--no-referrer"
        )
        manifest = registry.manifest("pushed/resumed", "v1")
        assert manifest is not None
        (layer,) = manifest["layers"]
        sizes = layer["size"], manifest["config"]["size"]
        expected = sum(math.ceil(size / CHUNK) for size in sizes) + 1  # one sent again
        assert len(upload_patches(proxy, "pushed/resumed")) == expected
        statuses = proxy.requests(r"^/v2/pushed/resumed/blobs/uploads/.", "GET")
        assert statuses, "the upload's status was not asked after the failure"
    same_tree(images.umoci_rootfs, pulled_tree(registry.ref("pushed/resumed", "v1"), work))


def test_a_push_holds_one_chunk_at_a_time(registry) -> None:
    """What a PATCH sent is let go of once it is acknowledged. httpx keeps each request
    in a reference cycle with its response, freed only by the cyclic collector (off
    here, as it is most of a push's time): every chunk sent stayed in memory with it."""
    chunk, pieces = 4 << 20, 32  # a 32 MiB blob in 1 MiB pieces, 8 PATCHes
    session = Registry(registry.host, registry.host)
    digest = hashlib.sha256()
    gc.disable()
    tracemalloc.start()
    try:
        upload = BlobUpload(session, "pushed/held", "a push", chunk)
        for n in range(pieces):
            piece = bytes([n]) * (1 << 20)
            digest.update(piece)
            upload.write(piece)
            del piece
        upload.finish("sha256:" + digest.hexdigest())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        gc.enable()
        session.close()
    assert peak < 2 * chunk, f"a push of {pieces} MiB held {peak / (1 << 20):.1f} MiB"


@pytest.mark.parametrize("broken", ["every PATCH", "the manifest PUT"])
def test_a_failed_push_tags_nothing(tools, registry, pushed, work, broken: str) -> None:
    name = "pushed/broken-" + broken.split()[-1].lower()
    with proxying(registry.port, "push proxy") as proxy:
        if broken == "every PATCH":
            proxy.fail(rf"^/v2/{name}/blobs/uploads/.", 503, methods=("PATCH",), times=None)
        else:
            proxy.fail(rf"^/v2/{name}/manifests/", 400, methods=("PUT",), times=None)
        said = push_fails(registry.ref(pushed.oci, "v1"), proxy.ref(name, "v1"))
    assert name in said or "503" in said or "400" in said, said
    assert registry.manifest(name, "v1") is None, "a failed push left a tag"


def test_push_with_a_push_scoped_token(tools, registry, token_registry, pushed, images, work):
    """Into the token registry (another registry: the kept layer is uploaded, not
    mounted) with --dest-creds; without them the push is refused and tags nothing."""
    dest = token_registry.ref("team/pushed", "v1")
    source = registry.ref(pushed.oci, "v1")
    said = push_fails(source, dest)
    assert "401" in said or "auth" in said.lower(), said
    pushed_ok(source, dest, "--dest-creds", token_registry.creds, "--keep-base", "1")
    scopes = {s for r in token_registry.tokens.requests for s in r.scopes}
    assert "repository:team/pushed:pull,push" in scopes, scopes
    tree = pulled_tree(dest, work, "--src-creds", token_registry.creds)
    same_tree(images.umoci_rootfs, tree)


# ---------------------------------------------------------------------------------------
# OCI layouts
# ---------------------------------------------------------------------------------------


def test_oci_layout_new_and_existing(tools, images, work) -> None:
    """A new layout, then a second tag into it (a partial squash), then the first tag
    again (its entry replaced, not added): umoci unpacks each to the original."""
    layout = work / "out"
    source = images.umoci.source
    for dest, args in ((f"oci:{layout}:flat", ()), (f"oci:{layout}:partial", ("--keep-base", "1"))):
        proc = export(source, dest, *args)
        assert proc.returncode == 0, proc.stderr.decode()
    proc = export(source, f"oci:{layout}:flat")
    assert proc.returncode == 0, proc.stderr.decode()
    index = json.loads((layout / "index.json").read_text())
    tagged = [m.get("annotations") or {} for m in index["manifests"]]  # referrers have no tag
    names = [a[REF_NAME_KEY] for a in tagged if a.get(REF_NAME_KEY)]
    assert sorted(names) == ["flat", "partial"]
    assert not [p for p in (layout / "blobs/sha256").iterdir() if p.name.startswith(".")]
    for tag in names:
        same_tree(images.umoci_rootfs, umoci_unpack(f"{layout}:{tag}", work / f"{tag}.bundle"))


def test_oci_layout_failure_leaves_the_index_as_it_was(tools, images, work) -> None:
    layout = work / "out"
    proc = export(images.umoci.source, f"oci:{layout}:good")
    assert proc.returncode == 0, proc.stderr.decode()
    before = (layout / "index.json").read_bytes()
    broken = work / "broken"
    run(["cp", "-r", images.umoci.layout, broken])
    manifest = json.loads(
        (
            broken
            / "blobs/sha256"
            / json.loads((broken / "index.json").read_text())["manifests"][0]["digest"][7:]
        ).read_text()
    )
    blob = broken / "blobs/sha256" / manifest["layers"][-1]["digest"][7:]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    proc = export(f"oci:{broken}:{images.umoci.tag}", f"oci:{layout}:bad")
    assert proc.returncode != 0
    assert (layout / "index.json").read_bytes() == before
    assert not [p for p in (layout / "blobs/sha256").iterdir() if p.name.startswith(".")]
    proc = export(f"oci:{broken}:{images.umoci.tag}", f"oci:{work}/new:bad")
    assert proc.returncode != 0 and not (work / "new").exists(), "a failure left a new layout"


# ---------------------------------------------------------------------------------------
# Every platform
# ---------------------------------------------------------------------------------------


def _platform_tree(ref: str, platform: dict, work: Path, name: str) -> Path:
    """One platform of an index, copied out by skopeo and unpacked by umoci."""
    layout = work / name
    override = ["--override-os", platform["os"], "--override-arch", platform["architecture"]]
    if platform.get("variant"):
        override += ["--override-variant", platform["variant"]]
    run(["skopeo", "--insecure-policy", *override, "copy", "--quiet", "--src-tls-verify=false",
         ref, f"oci:{layout}:t"])  # fmt: skip
    return umoci_unpack(f"{layout}:t", work / f"{name}.bundle")


def test_all_platforms_push_an_index_of_squashed_images(tools, registry, pushed, work) -> None:
    source = registry.ref(pushed.multi, pushed.tag)
    dest = registry.ref("pushed/multi-flat", "v1")
    pushed_ok(source, dest, "--all-platforms", "--layer-compression", "gzip")
    raw = run(["skopeo", "inspect", "--raw", "--tls-verify=false", dest]).stdout
    index = json.loads(raw)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    status, _, body = registry.get(
        f"/v2/{pushed.multi}/manifests/{pushed.tag}",
        {"Accept": "application/vnd.oci.image.index.v1+json"},
    )
    assert status == 200
    platforms = [
        m["platform"] for m in json.loads(body)["manifests"] if m["platform"]["os"] != "unknown"
    ]
    assert [m["platform"] for m in index["manifests"]] == platforms, "platforms differ"
    for n, entry in enumerate(index["manifests"]):
        child = registry.manifest("pushed/multi-flat", entry["digest"])
        assert child is not None and len(child["layers"]) == 1, child
        platform = entry["platform"]
        same_tree(
            _platform_tree(source, platform, work, f"original-{n}"),
            _platform_tree(dest, platform, work, f"squashed-{n}"),
        )


def test_all_platforms_into_an_oci_layout_and_not_into_a_tar(tools, registry, pushed, work):
    source = registry.ref(pushed.multi, pushed.tag)
    layout = work / "multi"
    proc = export(source, f"oci:{layout}:all", "--all-platforms")
    assert proc.returncode == 0, proc.stderr.decode()
    listed = json.loads((layout / "index.json").read_text())["manifests"]
    (entry,) = [m for m in listed if m.get("artifactType") is None]  # not the statements
    assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
    index = json.loads((layout / "blobs/sha256" / entry["digest"][7:]).read_text())
    assert len(index["manifests"]) == 3
    proc = export(source, work / "multi.tar", "--all-platforms")
    said = proc.stderr.decode()
    assert proc.returncode != 0 and "holds one platform" in said, said
    assert not (work / "multi.tar").exists()
