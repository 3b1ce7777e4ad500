"""Where a squashed image came from, written down where the ecosystem reads it.

Squashing changes every digest, so the image itself cannot say what it was made from.
Two records do: a partial squash on `--base REF` carries the base annotations of the
image spec (its bottom layers are exactly REF's), and every squashed manifest gets an
in-toto Statement (v1) with a SLSA provenance (v1) predicate: the manifest as its
subject, the source (and base) with their manifest digests as resolved dependencies,
what was asked, and which squashd built it. The statement is attached to the manifest
as an OCI 1.1 referrer. Everything in it follows from the request but its two times; the
image never holds a time of its own, so its digest stays the same for the same request.
"""

import datetime
import functools
from dataclasses import dataclass
from importlib import metadata

from squash.errors import SquashError
from squash.oci import (
    BASE_DIGEST,
    BASE_NAME,
    CREATED,
    IN_TOTO,
    Blob,
    JSONObject,
    Referrer,
    dumps,
    parse_object,
    referrer,
)

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
#: What a squash is, for a verifier: the parameters below, described in docs/cli.md.
BUILD_TYPE = "urn:squashd:squash:v1"
#: The builders: the command line, and the service (unless its settings name it).
CLI_BUILDER = "urn:squashd:cli"
SERVICE_BUILDER = "urn:squashd:service"
#: The layer annotation tools read a statement's predicate type from without fetching it.
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
#: Marks a referrer as squashd's statement (its builder's id): a later statement of the
#: same subject replaces it, so pushing again does not pile them up.
BUILDER_ANNOTATION = "squashd.builder.id"


@dataclass(frozen=True)
class Base:
    """The image whose bottom layers a partial squash kept (`--base REF`)."""

    reference: str  # as it was asked for
    digest: str  # its manifest digest (an image ID for a `docker save` archive)
    name: str | None = None  # as a distribution reference, when a registry holds it

    def annotations(self) -> dict[str, str]:
        """The image spec's base annotations, for a base a registry holds: the name and
        digest mean an image anyone can pull (a layout path or an image ID do not)."""
        if self.name is None:
            return {}
        return {BASE_NAME: self.name, BASE_DIGEST: self.digest}


@dataclass(frozen=True)
class Provenance:
    """What a statement says beyond the image itself."""

    builder: str = CLI_BUILDER
    base: Base | None = None
    source: str | None = None  # the source as asked for (default: the image's reference)
    invocation: str | None = None  # the build's id (the service's export id)
    referrer: bool = True  # attached to the image where the destination keeps referrers


@dataclass(frozen=True)
class Asked:
    """What one squashed manifest was made of and with."""

    source: str
    source_digest: str
    platform: str
    tag: str
    compression: str
    keep: int
    format_version: int


@functools.cache
def version() -> str:
    """squashd's version, from the installed package's metadata."""
    return metadata.version("squashd")


def timestamp(seconds: float) -> str:
    """RFC 3339 in UTC, to the second, as in-toto writes times."""
    moment = datetime.datetime.fromtimestamp(int(seconds), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest_set(digest: str) -> dict[str, str]:
    algorithm, _, encoded = digest.partition(":")
    return {algorithm: encoded}


def statement(
    name: str,
    subject: Blob,
    asked: Asked,
    recorded: Provenance,
    started: float,
    finished: float,
) -> bytes:
    """The statement of the squashed manifest `subject`, known as `name`."""
    base = recorded.base
    external: JSONObject = {
        "source": asked.source,
        "platform": asked.platform,
        "tag": asked.tag,
        "compression": asked.compression,
        "keepBase": asked.keep,
    }
    dependencies = [{"uri": asked.source, "digest": _digest_set(asked.source_digest)}]
    if base is not None:
        external["base"] = base.reference
        dependencies.append({"uri": base.reference, "digest": _digest_set(base.digest)})
    run_metadata: JSONObject = {"startedOn": timestamp(started), "finishedOn": timestamp(finished)}
    if recorded.invocation:
        run_metadata = {"invocationId": recorded.invocation, **run_metadata}
    return dumps(
        {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": name, "digest": _digest_set(subject.digest)}],
            "predicateType": SLSA_PROVENANCE,
            "predicate": {
                "buildDefinition": {
                    "buildType": BUILD_TYPE,
                    "externalParameters": external,
                    "internalParameters": {"formatVersion": asked.format_version},
                    "resolvedDependencies": dependencies,
                },
                "runDetails": {
                    "builder": {"id": recorded.builder, "version": {"squashd": version()}},
                    "metadata": run_metadata,
                },
            },
        }
    )


def attestation(data: bytes, subject: Blob) -> Referrer:
    """The referrer that attaches the statement `data` to `subject`: a function of the
    two alone (its annotations are read out of the statement), so the service makes the
    same one from a stored statement every time."""
    found = parse_object(data, "the provenance statement")
    try:
        run = found["predicate"]["runDetails"]
        annotations = {
            CREATED: str(run["metadata"]["finishedOn"]),
            BUILDER_ANNOTATION: str(run["builder"]["id"]),
        }
        predicate = {PREDICATE_ANNOTATION: str(found["predicateType"])}
    except (KeyError, TypeError):
        raise SquashError("the provenance statement is not one squashd wrote") from None
    return referrer(subject, IN_TOTO, data, annotations, predicate)


def is_ours(entry: JSONObject) -> bool:
    """Is this descriptor (of an index of referrers) a statement squashd attached?"""
    annotations = entry.get("annotations") or {}
    return entry.get("artifactType") == IN_TOTO and BUILDER_ANNOTATION in annotations
