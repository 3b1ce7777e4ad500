"""The provenance of what the service builds: the statement stored beside the artifact
(in S3 here, the store contract test covers both stores), served by the registry front as
the OCI 1.1 referrer of the squashed manifest (`GET /v2/NAME/referrers/DIGEST`, with the
`artifactType` filter), its manifest and statement by digest, `/v1/exports/ID/provenance`
and the status page's link; and none of it to a caller the registry refuses the image.

A deployment in front of the private registry: alice may read the image, bob may not.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest

from testbed.service import Stack
from testbed.tools import run
from tests.registry.fixtures import USERS
from tests.registry.harness import basic_auth
from tests.service.fixtures import private_deployment
from tests.service.test_export_service import wait_until

pytestmark = pytest.mark.integration

PRIVATE = "team/attested"
BUILDER = "https://squash.example/builder"
IN_TOTO = "application/vnd.in-toto+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ALICE = {"Authorization": basic_auth("alice", USERS["alice"])}
REFUSED = {
    "anonymous": {},
    "a wrong password": {"Authorization": basic_auth("alice", "wrong")},
    "bob": {"Authorization": basic_auth("bob", USERS["bob"])},
}


@dataclass
class Squashed:
    stack: Stack
    digest: str  # the squashed manifest's, as the front hands it out
    source_digest: str  # the upstream image's manifest digest


@pytest.fixture(scope="module")
def squashed(make_module_stack, private_registry, tmp_path_factory) -> Squashed:
    registry = private_registry[0]
    work = tmp_path_factory.mktemp("attested-image")
    stack = private_deployment(make_module_stack, registry, work, PRIVATE, seed=451,
                               SQUASHD_BUILDER_ID=BUILDER)  # fmt: skip
    status, headers, body = stack.web.get(f"/v2/{PRIVATE}/manifests/v1", ALICE, timeout=120)
    assert status == 200, f"{body[:500]!r}\n{stack.describe()}"
    raw = run(["skopeo", "inspect", "--raw", "--tls-verify=false", "--creds",
               f"alice:{USERS['alice']}", registry.ref(PRIVATE, "v1")]).stdout  # fmt: skip
    source = "sha256:" + hashlib.sha256(raw).hexdigest()
    return Squashed(stack, headers["docker-content-digest"], source)


def _referrers(squashed: Squashed, query: str = "", headers: dict | None = None):
    path = f"/v2/{PRIVATE}/referrers/{squashed.digest}{query}"
    return squashed.stack.web.get(path, ALICE if headers is None else headers)


def test_the_referrers_api_lists_the_statement_of_a_squashed_tag(squashed: Squashed) -> None:
    stack = squashed.stack
    status, headers, body = _referrers(squashed)
    assert status == 200 and headers["content-type"] == OCI_INDEX, body
    assert "oci-filters-applied" not in headers
    index = json.loads(body)
    (entry,) = index["manifests"]
    assert entry["artifactType"] == IN_TOTO

    status, headers, filtered = _referrers(squashed, "?" + urlencode({"artifactType": IN_TOTO}))
    assert status == 200 and headers["oci-filters-applied"] == "artifactType"
    assert json.loads(filtered)["manifests"] == [entry]
    status, headers, other = _referrers(squashed, "?artifactType=application/example")
    assert status == 200 and headers["oci-filters-applied"] == "artifactType"
    assert json.loads(other)["manifests"] == []
    # of another digest: none
    assert json.loads(stack.web.get(f"/v2/{PRIVATE}/referrers/sha256:{'0' * 64}", ALICE)[2]) == {
        **index, "manifests": []
    }  # fmt: skip

    pulls = stack.web.metrics().get("squashd_registry_pulls_total", 0)
    status, headers, raw = stack.web.get(f"/v2/{PRIVATE}/manifests/{entry['digest']}", ALICE)
    assert status == 200 and headers["docker-content-digest"] == entry["digest"], raw
    assert stack.web.metrics().get("squashd_registry_pulls_total", 0) == pulls, "counted a pull"
    referrer = json.loads(raw)
    assert referrer["subject"]["digest"] == squashed.digest
    assert referrer["artifactType"] == IN_TOTO
    for blob in (referrer["config"], *referrer["layers"]):
        status, _, data = stack.web.get(f"/v2/{PRIVATE}/blobs/{blob['digest']}", ALICE)
        assert status == 200 and "sha256:" + hashlib.sha256(data).hexdigest() == blob["digest"]
    statement = json.loads(data)
    assert statement["subject"][0]["digest"] == {"sha256": squashed.digest[7:]}
    build = statement["predicate"]["buildDefinition"]
    assert build["resolvedDependencies"][0]["digest"] == {"sha256": squashed.source_digest[7:]}
    assert build["externalParameters"]["source"] == f"{stack.env['SQUASHD_REGISTRY']}/{PRIVATE}:v1"
    run_details = statement["predicate"]["runDetails"]
    assert run_details["builder"]["id"] == BUILDER

    key = run_details["metadata"]["invocationId"]
    assert f"artifacts/{key}.intoto.json" in stack.objects(), stack.objects()
    link = stack.export_status(key, ALICE)["links"]["provenance"]
    status, headers, stored = stack.web.get(link, ALICE)
    assert status == 200 and headers["content-type"] == IN_TOTO and stored == data

    def linked() -> bool:  # the status page, once the tag counts as popular
        return f"/v1/exports/{key}/provenance" in stack.web.get("/")[2].decode()

    wait_until("the status page's link to the statement", linked, explain=stack.describe)


@pytest.mark.parametrize("caller", sorted(REFUSED))
def test_a_caller_refused_the_image_is_refused_its_provenance(
    squashed: Squashed, caller: str
) -> None:
    stack, ask = squashed.stack, REFUSED[caller]
    _, _, body = _referrers(squashed)
    (entry,) = json.loads(body)["manifests"]
    referrer = json.loads(stack.web.get(f"/v2/{PRIVATE}/manifests/{entry['digest']}", ALICE)[2])
    statement = referrer["layers"][0]["digest"]
    for path in (
        f"/v2/{PRIVATE}/referrers/{squashed.digest}",
        f"/v2/{PRIVATE}/manifests/{entry['digest']}",
        f"/v2/{PRIVATE}/blobs/{statement}",
    ):
        status, _, body = stack.web.get(path, ask)
        assert status in (401, 403), (caller, path, status, body)
        assert b"in-toto" not in body and squashed.digest[7:].encode() not in body
    key = json.loads(stack.web.get(f"/v2/{PRIVATE}/blobs/{statement}", ALICE)[2])["predicate"][
        "runDetails"
    ]["metadata"]["invocationId"]
    status, _, _ = stack.web.get(f"/v1/exports/{key}/provenance", ask)
    assert status == 404, (caller, status)
