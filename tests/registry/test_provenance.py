"""Where a squashed image came from, as the command line records it: the base
annotations of a `--base` squash, and the provenance statement attached as an OCI 1.1
referrer, read back by skopeo, umoci and plain distribution API requests.

The suite's distribution registry has no referrers API, so a push lists the referrer in
the `sha256-HEX` fallback index; the fault proxy in front of it plays a registry that has
the API (its `GET referrers/DIGEST` answered 200 with an index), where no fallback tag
may be written.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from testbed.registry import Registry, push
from testbed.tools import run
from tests.integration.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    LayerBuilder,
    compare_trees,
    format_diffs,
    umoci_unpack,
    write_oci_layout,
)

from .fixtures import proxying
from .harness import export, write_platform_index

pytestmark = pytest.mark.integration

IN_TOTO = "application/vnd.in-toto+json"
EMPTY = "application/vnd.oci.empty.v1+json"
BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"


@dataclass
class Sources:
    """A three-layer image, in the registry as `prov/app:v1` and as an OCI layout; its
    bottom layer as an image of its own, `prov/base:v1`."""

    app_digest: str  # its manifest digest (the same in both)
    base_digest: str
    layout: str  # oci:DIR:TAG
    app_tree: Path  # umoci unpack of it
    base_layout: str  # the base as an OCI layout, oci:DIR:TAG


def _layers() -> list[bytes]:
    return [
        LayerBuilder().dir("etc").file("etc/os", b"base\n").tar(),
        LayerBuilder().dir("app").file("app/run", b"#!/bin/sh\n", mode=0o755).tar(),
        LayerBuilder().whiteout("etc/os").file("app/conf", b"x=1\n").tar(),
    ]


@pytest.fixture(scope="module")
def sources(tools, registry: Registry, module_work: Path) -> Sources:
    layers = _layers()
    app = write_oci_layout(module_work / "app", layers, tag="v1")
    base = write_oci_layout(module_work / "base", layers[:1], tag="v1")
    app_digest = push(app, registry.ref("prov/app", "v1"))
    base_digest = push(base, registry.ref("prov/base", "v1"))
    assert app_digest == app.manifest_digest, "skopeo pushed another manifest"
    tree = umoci_unpack(app.ref, module_work / "app.bundle")
    return Sources(app_digest, base_digest, app.source, tree, base.source)


def ok(source: str, dest: str, *args: str) -> subprocess.CompletedProcess:
    proc = export(source, dest, *args)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")[-3000:]
    return proc


def raw_manifest(registry: Registry, name: str, tag: str) -> tuple[dict, str]:
    """`skopeo inspect --raw` of NAME:TAG, and its digest."""
    ref = registry.ref(name, tag)
    raw = run(["skopeo", "inspect", "--raw", "--tls-verify=false", ref]).stdout
    return json.loads(raw), "sha256:" + hashlib.sha256(raw).hexdigest()


def fallback_index(registry: Registry, name: str, subject: str) -> dict | None:
    return registry.manifest(name, "sha256-" + subject.removeprefix("sha256:"), OCI_INDEX)


def statement_of(registry: Registry, name: str, entry: dict) -> tuple[dict, dict]:
    """The referrer manifest an index entry names, and the statement it holds."""
    manifest = registry.manifest(name, entry["digest"])
    assert manifest is not None
    (layer,) = manifest["layers"]
    status, _, body = registry.get(f"/v2/{name}/blobs/{layer['digest']}")
    assert status == 200
    return manifest, json.loads(body)


def check_statement(statement: dict, subject: str, source_digest: str) -> None:
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    (named,) = statement["subject"]
    assert named["digest"] == {"sha256": subject.removeprefix("sha256:")}
    predicate = statement["predicate"]
    dependencies = predicate["buildDefinition"]["resolvedDependencies"]
    assert dependencies[0]["digest"] == {"sha256": source_digest.removeprefix("sha256:")}
    builder = predicate["runDetails"]["builder"]
    assert builder["version"] == {"squashd": metadata.version("squashd")}


def ours(index: dict) -> list[dict]:
    return [m for m in index["manifests"] if m.get("artifactType") == IN_TOTO]


# ---------------------------------------------------------------------------------------
# Pushes
# ---------------------------------------------------------------------------------------


def test_a_base_squash_names_its_base_and_a_second_push_gives_the_same_image(
    registry: Registry, sources: Sources
) -> None:
    """skopeo sees both base annotations with the base's real manifest digest; pushing
    again gives the same image, and the fallback index still lists one statement (the
    new one) beside a referrer that is not ours."""
    source, dest = registry.ref("prov/app", "v1"), registry.ref("prov/based", "v1")
    base = registry.ref("prov/base", "v1")
    ok(source, dest, "--base", base)
    manifest, digest = raw_manifest(registry, "prov/based", "v1")
    assert manifest["annotations"] == {
        BASE_NAME: f"{registry.host}/prov/base:v1",
        BASE_DIGEST: sources.base_digest,
    }
    base_manifest = registry.manifest("prov/base", "v1")
    assert base_manifest is not None
    assert manifest["layers"][0] == base_manifest["layers"][0], "the base's layer is not kept"
    first = fallback_index(registry, "prov/based", digest)
    assert first is not None and len(ours(first)) == 1
    _, statement = statement_of(registry, "prov/based", ours(first)[0])
    check_statement(statement, digest, sources.app_digest)
    dependencies = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert dependencies[1] == {"uri": base, "digest": {"sha256": sources.base_digest[7:]}}
    assert statement["predicate"]["buildDefinition"]["externalParameters"]["keepBase"] == 1

    # a referrer of someone else's joins the fallback index: it must stay
    _, headers, _ = registry.get(f"/v2/prov/based/manifests/{digest}", method="HEAD")
    size = int(headers["content-length"])
    foreign = {"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
               "artifactType": "application/example"}  # fmt: skip
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [*first["manifests"], foreign],
    }
    put_index(registry, "prov/based", "sha256-" + digest[7:], index)

    ok(source, dest, "--base", base)
    again, digest_again = raw_manifest(registry, "prov/based", "v1")
    assert (digest_again, again) == (digest, manifest), "a second push changed the image"
    second = fallback_index(registry, "prov/based", digest)
    assert second is not None
    assert [m for m in second["manifests"] if m.get("artifactType") != IN_TOTO] == [foreign]
    assert len(ours(second)) == 1, "a second push piled up statements"


def put_index(registry: Registry, name: str, tag: str, index: dict) -> None:
    request = urllib.request.Request(
        f"{registry.url}/v2/{name}/manifests/{tag}",
        data=json.dumps(index).encode(),
        method="PUT",
        headers={"Content-Type": OCI_INDEX},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201


def test_a_full_squash_has_no_base_and_its_referrer_is_in_the_fallback_index(
    registry: Registry, sources: Sources
) -> None:
    with proxying(registry.port, "push proxy") as proxy:
        ok(registry.ref("prov/app", "v1"), proxy.ref("prov/flat", "v1"))
        pushed_as = f"{proxy.host}/prov/flat:v1"
        asked = proxy.requests(r"^/v2/prov/flat/referrers/", "GET")
        assert [s.status for s in asked] == [404], proxy.describe()
    manifest, digest = raw_manifest(registry, "prov/flat", "v1")
    assert "annotations" not in manifest and len(manifest["layers"]) == 1
    index = fallback_index(registry, "prov/flat", digest)
    assert index is not None, "no fallback index under the sha256-HEX tag"
    (entry,) = index["manifests"]
    assert entry["artifactType"] == IN_TOTO
    referrer, statement = statement_of(registry, "prov/flat", entry)
    assert referrer["artifactType"] == IN_TOTO
    assert referrer["config"] == {
        "mediaType": EMPTY,
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
    }
    assert referrer["subject"]["digest"] == digest
    assert referrer["layers"][0]["mediaType"] == IN_TOTO
    check_statement(statement, digest, sources.app_digest)
    assert statement["subject"][0]["name"] == pushed_as
    external = statement["predicate"]["buildDefinition"]["externalParameters"]
    assert external["keepBase"] == 0 and "base" not in external


def test_a_registry_with_the_referrers_api_gets_no_fallback_tag(
    registry: Registry, sources: Sources
) -> None:
    empty = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
    with proxying(registry.port, "referrers proxy") as proxy:
        proxy.respond(r"^/v2/prov/api/referrers/", 200, empty.encode(),
                      {"Content-Type": OCI_INDEX}, methods=("GET",))  # fmt: skip
        ok(registry.ref("prov/app", "v1"), proxy.ref("prov/api", "v1"))
        puts = [s.bare_path for s in proxy.requests(r"^/v2/prov/api/manifests/", "PUT")]
    _, digest = raw_manifest(registry, "prov/api", "v1")
    assert fallback_index(registry, "prov/api", digest) is None, "a fallback tag was written"
    assert len(puts) == 2 and puts[0].endswith("/v1"), puts  # the image, then the referrer
    referrer = registry.manifest("prov/api", puts[1].rpartition("/")[2])
    assert referrer is not None and referrer["subject"]["digest"] == digest


def test_a_refused_referrer_fails_saying_the_image_is_pushed(
    registry: Registry, sources: Sources
) -> None:
    source = registry.ref("prov/app", "v1")
    with proxying(registry.port, "refusing proxy") as proxy:
        proxy.fail(r"^/v2/prov/refused/manifests/sha256:", 400, methods=("PUT",), times=None)
        proc = export(source, proxy.ref("prov/refused", "v1"))
        said = proc.stderr.decode().strip()
        assert proc.returncode == 1 and len(said.splitlines()) == 1, said
        assert "the image is pushed as v1" in said and "--no-referrer" in said, said
        ok(source, proxy.ref("prov/refused", "v2"), "--no-referrer")
    _, digest = raw_manifest(registry, "prov/refused", "v2")
    assert fallback_index(registry, "prov/refused", digest) is None


# ---------------------------------------------------------------------------------------
# OCI layouts and tars
# ---------------------------------------------------------------------------------------


def test_an_oci_layout_holds_the_referrer_and_umoci_still_reads_it(
    sources: Sources, work: Path
) -> None:
    layout = work / "out"
    for tag in ("flat", "flat", "other"):  # the first tag twice: its statement replaced
        ok(sources.layout, f"oci:{layout}:{tag}")
    index = json.loads((layout / "index.json").read_text())
    images = {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
        if "org.opencontainers.image.ref.name" in (m.get("annotations") or {})
    }
    assert sorted(images) == ["flat", "other"]
    assert images["flat"] == images["other"], "the same request gave another image"
    referrers = ours(index)
    assert len(referrers) == 1, "statements of the same image piled up"
    referrer = json.loads((layout / "blobs/sha256" / referrers[0]["digest"][7:]).read_bytes())
    assert referrer["subject"]["digest"] == images["flat"]
    statement = json.loads(
        (layout / "blobs/sha256" / referrer["layers"][0]["digest"][7:]).read_bytes()
    )
    check_statement(statement, images["flat"], sources.app_digest)
    listed = run(["umoci", "ls", "--layout", layout]).stdout.decode().split()
    assert sorted(listed) == ["flat", "other"], listed
    diffs = compare_trees(sources.app_tree, umoci_unpack(f"{layout}:flat", work / "flat.bundle"))
    assert not diffs, format_diffs(diffs)


def test_every_platform_gets_its_statement(work: Path) -> None:
    source = write_platform_index(work / "multi", attestation=False)
    layout = work / "out"
    ok(f"oci:{source.ref}", f"oci:{layout}:all", "--all-platforms",
       "--provenance", str(work / "all.jsonl"))  # fmt: skip
    index = json.loads((layout / "index.json").read_text())
    (tagged,) = [m for m in index["manifests"] if m.get("artifactType") != IN_TOTO]
    squashed = json.loads((layout / "blobs/sha256" / tagged["digest"][7:]).read_bytes())
    subjects = set()
    for entry in ours(index):
        referrer = json.loads((layout / "blobs/sha256" / entry["digest"][7:]).read_bytes())
        subjects.add(referrer["subject"]["digest"])
    assert subjects == {m["digest"] for m in squashed["manifests"]}
    lines = (work / "all.jsonl").read_text().splitlines()
    named = {json.loads(line)["subject"][0]["digest"]["sha256"] for line in lines}
    assert named == {digest[7:] for digest in subjects}
    ok(f"oci:{layout}", str(work / "again.tar"))  # its one image, not a statement, is read


def test_a_tar_has_its_statement_beside_it_and_is_the_same_without(
    sources: Sources, work: Path
) -> None:
    ok(sources.layout, str(work / "with.tar"), "--provenance", str(work / "with.json"))
    ok(sources.layout, str(work / "without.tar"))
    assert (work / "with.tar").read_bytes() == (work / "without.tar").read_bytes()
    (line,) = (work / "with.json").read_text().splitlines()
    statement = json.loads(line)
    out = work / "unpacked"
    out.mkdir()
    run(["tar", "-xf", work / "with.tar", "-C", out, "index.json"])
    (entry,) = json.loads((out / "index.json").read_text())["manifests"]
    check_statement(statement, entry["digest"], sources.app_digest)
    assert statement["subject"][0]["name"] == "docker.io/library/app:v1.squash"


@pytest.mark.parametrize("partial", ["--keep-base", "--base oci:"])
def test_a_partial_squash_without_a_registry_base_has_no_annotations(
    sources: Sources, work: Path, partial: str
) -> None:
    """`--keep-base N` names no base image: the manifest has no annotations (its kept
    layers' digests are in it already) and the statement says N. A `--base` in a layout
    is no name to pull by: no annotations either, but the statement names it."""
    args = ("--keep-base", "2") if partial == "--keep-base" else ("--base", sources.base_layout)
    ok(sources.layout, f"oci:{work}/kept:t", *args, "--provenance", str(work / "kept.json"))
    (entry,) = [m for m in json.loads((work / "kept/index.json").read_text())["manifests"]
                if m.get("artifactType") is None]  # fmt: skip
    manifest = json.loads((work / "kept/blobs/sha256" / entry["digest"][7:]).read_bytes())
    assert "annotations" not in manifest
    build = json.loads((work / "kept.json").read_text())["predicate"]["buildDefinition"]
    dependencies = build["resolvedDependencies"]
    if partial == "--keep-base":
        assert len(manifest["layers"]) == 3 and build["externalParameters"]["keepBase"] == 2
        assert "base" not in build["externalParameters"] and len(dependencies) == 1
    else:
        assert len(manifest["layers"]) == 2 and build["externalParameters"]["keepBase"] == 1
        digest = {"sha256": sources.base_digest[7:]}
        assert dependencies[1] == {"uri": sources.base_layout, "digest": digest}
