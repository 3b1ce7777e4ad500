"""Referrers pushed as distribution-spec 1.1 says: the artifact's manifest by digest
(its blobs are up already), then, where the registry has no referrers API, the index of
the subject's referrers under the fallback tag `sha256-HEX`, read, amended and put back.

Whether the registry has the API is asked as the spec says: `GET referrers/DIGEST`
answering 200 with an index. The fallback index keeps every other referrer; an earlier
statement of ours is replaced, so pushing the same image again does not pile them up.
"""

from squash.distribution.client import Registry
from squash.distribution.push import push_scope, put_manifest
from squash.errors import RegistryError, SquashError
from squash.oci import (
    OCI_INDEX,
    OCI_MANIFEST,
    JSONObject,
    Referrer,
    dumps,
    fallback_tag,
    index_of,
    is_index,
    media_type,
    parse_object,
)
from squash.provenance import is_ours


def push_referrer(registry: Registry, repository: str, referrer: Referrer, what: str) -> None:
    """Put `referrer`'s manifest; list it in the fallback index unless the registry
    keeps referrers itself."""
    manifest = referrer.blob
    put_manifest(registry, repository, manifest.digest, referrer.manifest, OCI_MANIFEST, what)
    if has_referrers_api(registry, repository, referrer.subject.digest, what):
        return
    tag = fallback_tag(referrer.subject.digest)
    index = _fallback_index(registry, repository, tag, what)
    index["manifests"] = [
        entry
        for entry in index.get("manifests") or []
        if isinstance(entry, dict) and not is_ours(entry) and entry.get("digest") != manifest.digest
    ] + [referrer.entry()]
    put_manifest(registry, repository, tag, dumps(index), OCI_INDEX, what)


def has_referrers_api(registry: Registry, repository: str, subject: str, what: str) -> bool:
    """Does the registry answer `GET referrers/SUBJECT` with an index (a 404: it has no
    such API)?"""
    try:
        response = registry.request(
            "GET", repository, f"referrers/{subject}", {"Accept": OCI_INDEX}, what,
            scope=push_scope(repository),
        )  # fmt: skip
    except RegistryError as exc:
        if exc.status == 404:
            return False
        raise
    kind = response.headers.get("content-type", "").split(";")[0].strip()
    body = response.read()
    response.close()
    try:
        return is_index(media_type(parse_object(body, "referrers"), kind))
    except SquashError:
        return False


def _fallback_index(registry: Registry, repository: str, tag: str, what: str) -> JSONObject:
    """The index under the fallback tag, or a new one."""
    try:
        body, kind, _ = registry.manifest(repository, tag, f"{what}: referrers {tag}")
    except RegistryError as exc:
        if exc.status == 404:
            return index_of([])
        raise
    index = parse_object(body, f"{what}: referrers {tag}")
    if not is_index(media_type(index, kind)):
        raise SquashError(f"{what}: the tag {tag} names no index of referrers; not touching it")
    return index
