"""The provenance statement and its referrer, as squash/provenance.py makes them: only the
times vary between two statements of the same request, and the referrer is a function
of the statement and its subject (the service makes it again from a stored statement)."""

import json

from squash.oci import EMPTY_JSON, IN_TOTO, OCI_EMPTY, OCI_MANIFEST, blob_of, fallback_tag
from squash.provenance import (
    Asked,
    Base,
    Provenance,
    attestation,
    is_ours,
    statement,
    version,
)

SUBJECT = blob_of(b'{"schemaVersion":2}', OCI_MANIFEST)
ASKED = Asked("docker://r.example/app:1", "sha256:" + "a" * 64, "linux/amd64", "app:1.squash",
              "gzip", 1, 2)  # fmt: skip
BASE = Base("docker://r.example/base:1", "sha256:" + "b" * 64, "r.example/base:1")


def _statement(started: float, finished: float, recorded: Provenance | None = None) -> dict:
    data = statement("r.example/app:flat", SUBJECT, ASKED, recorded or Provenance(base=BASE),
                     started, finished)  # fmt: skip
    return json.loads(data)


def test_two_statements_of_one_request_differ_in_their_times_alone() -> None:
    first, second = (
        _statement(1_700_000_000, 1_700_000_005),
        _statement(1_800_000_000, 1_800_000_009),
    )
    assert first != second
    for made in (first, second):
        made["predicate"]["runDetails"]["metadata"] = {}
    assert first == second


def test_the_statement_names_subject_source_base_and_builder() -> None:
    made = _statement(1_700_000_000, 1_700_000_005)
    assert made["_type"] == "https://in-toto.io/Statement/v1"
    assert made["subject"] == [
        {"name": "r.example/app:flat", "digest": {"sha256": SUBJECT.digest[7:]}}
    ]
    build = made["predicate"]["buildDefinition"]
    assert build["externalParameters"] == {
        "source": ASKED.source, "platform": "linux/amd64", "tag": "app:1.squash",
        "compression": "gzip", "keepBase": 1, "base": BASE.reference,
    }  # fmt: skip
    assert build["internalParameters"] == {"formatVersion": 2}
    assert build["resolvedDependencies"] == [
        {"uri": ASKED.source, "digest": {"sha256": "a" * 64}},
        {"uri": BASE.reference, "digest": {"sha256": "b" * 64}},
    ]
    run = made["predicate"]["runDetails"]
    assert run["builder"] == {"id": "urn:squashd:cli", "version": {"squashd": version()}}
    assert run["metadata"] == {
        "startedOn": "2023-11-14T22:13:20Z",
        "finishedOn": "2023-11-14T22:13:25Z",
    }


def test_the_service_names_itself_and_its_export() -> None:
    made = _statement(0, 0, Provenance(builder="https://squash.example", invocation="k" * 64))
    run = made["predicate"]["runDetails"]
    assert run["builder"]["id"] == "https://squash.example"
    assert run["metadata"]["invocationId"] == "k" * 64
    assert "base" not in made["predicate"]["buildDefinition"]["externalParameters"]


def test_base_annotations_only_for_a_base_a_registry_holds() -> None:
    assert BASE.annotations() == {
        "org.opencontainers.image.base.name": "r.example/base:1",
        "org.opencontainers.image.base.digest": "sha256:" + "b" * 64,
    }
    assert Base("oci:./layout:1", "sha256:" + "c" * 64).annotations() == {}


def test_the_referrer_follows_from_the_statement_and_its_subject() -> None:
    data = statement("n", SUBJECT, ASKED, Provenance(), 1_700_000_000, 1_700_000_005)
    referrer = attestation(data, SUBJECT)
    assert attestation(data, SUBJECT) == referrer
    manifest = json.loads(referrer.manifest)
    assert manifest["artifactType"] == IN_TOTO
    assert manifest["config"]["mediaType"] == OCI_EMPTY
    assert manifest["subject"] == {"mediaType": OCI_MANIFEST, "digest": SUBJECT.digest,
                                   "size": SUBJECT.size}  # fmt: skip
    assert manifest["layers"][0]["digest"] == blob_of(data, IN_TOTO).digest
    assert [body for _, body in referrer.blobs] == [EMPTY_JSON, data]
    entry = referrer.entry()
    assert entry["annotations"]["org.opencontainers.image.created"] == "2023-11-14T22:13:25Z"
    assert is_ours(entry)
    assert not is_ours({**entry, "annotations": {}})
    assert fallback_tag(SUBJECT.digest) == "sha256-" + SUBJECT.digest[7:]
