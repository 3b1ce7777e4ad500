"""An artifact's provenance as the registry front serves it: the statement its build
stored beside the archive, attached to the squashed OCI manifest as an OCI 1.1 referrer
(`squash.provenance.attestation` makes the same referrer from the statement every
time, so its digest is stable), and the index `GET /v2/NAME/referrers/DIGEST` answers.

Its manifest and blobs join the artifact's pull view: they are remembered and found by
digest as the image's are, and handed out only to a caller who may read its source.
"""

import dataclasses
import logging

from service.front.documents import Document, PullView
from squash.errors import SquashError
from squash.oci import OCI_INDEX, OCI_MANIFEST, Blob, dumps, index_of
from squash.provenance import attestation

log = logging.getLogger("squashd.service")

#: The header that says the referrers were filtered, and by what.
FILTERS_APPLIED = "OCI-Filters-Applied"


def with_provenance(view: PullView, statement: bytes | None) -> PullView:
    """The view with its referrer's documents, if its build stored a statement."""
    if statement is None:
        return view
    manifest = view.manifests[OCI_MANIFEST]
    try:
        referrer = attestation(statement, Blob(manifest.digest, len(manifest.data), OCI_MANIFEST))
    except SquashError as exc:  # the image is served all the same
        log.warning("artifact %s: its statement is not served: %s", view.key, exc)
        return view
    documents = (
        Document(referrer.manifest, OCI_MANIFEST, attached=True),
        *(Document(data, blob.media_type, attached=True) for blob, data in referrer.blobs),
    )
    return dataclasses.replace(view, attached=documents, referrers=(referrer.entry(),))


def referrers_index(view: PullView | None, digest: str, artifact_type: str | None) -> Document:
    """The index of the referrers of `digest` (the OCI manifest of `view`; none for any
    other digest), of `artifact_type` if given."""
    entries = []
    if view is not None and view.manifests[OCI_MANIFEST].digest == digest:
        entries = [
            entry
            for entry in view.referrers
            if artifact_type is None or entry.get("artifactType") == artifact_type
        ]
    return Document(dumps(index_of(entries)), OCI_INDEX)
