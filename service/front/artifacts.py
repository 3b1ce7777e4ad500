"""What the registry front (web/v2.py) hands out: the squashed image of a tag
as manifests, config and layers, each handed out only to a caller the upstream lets
read the image it was squashed from.

A pull asks for the config and layers by digest alone, so each manifest handed out
records its digests under the repository it was asked for (`PulledDigests`); a digest
is found again only there, and only after the caller's access to the source image is
checked with the upstream again (remembered for the resolve cache's seconds).
"""

import json
import re
from collections.abc import Callable
from typing import TypeVar

from service.access import Caller
from service.front.documents import Document, PullView, accepts, read_view
from service.front.pull_counts import count_pull
from service.front.referrers import with_provenance
from service.requests import Requests
from squash.errors import SquashError
from squash.oci import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    JSONObject,
    image_index,
)
from storage.base import Artifact, Gone, Location
from tasks.errors import ServiceError
from tasks.expiring import ExpiringCache
from tasks.spec import ExportSpec

T = TypeVar("T")
MAX_VIEWS = 256  # pull views kept in the process (each holds a config and manifests)
_KEEP = re.compile(r"^(?P<tag>.+)--keep-(?P<layers>[0-9]{1,3})$")


def keep_suffix(tag: str) -> tuple[str, int]:
    """`v1--keep-2` asks for `v1` with its 2 bottom layers kept (a partial squash)."""
    match = _KEEP.match(tag)
    return (match["tag"], int(match["layers"])) if match else (tag, 0)


class FrontArtifacts:
    """Artifacts as the registry front hands them out, on the request path's finding,
    access checks and download counts."""

    def __init__(self, requests: Requests) -> None:
        self.requests = requests
        self.parts = requests.parts
        self._views: ExpiringCache[str, PullView] = ExpiringCache(
            requests.settings.artifact_cache_seconds, MAX_VIEWS
        )

    def view(self, artifact: Artifact) -> PullView:
        """The artifact's manifests, config and layer ranges, and its provenance referrer
        (read once per process); Gone if its archive is no longer stored (then forgotten,
        to be built again)."""
        view = self._views.get(artifact.key)
        if view is None:
            try:
                view = self._archive(artifact, read_view, self.parts.store, artifact)
            except SquashError as exc:
                raise ServiceError(f"the stored artifact cannot be served: {exc}", 502) from None
            view = with_provenance(view, self.requests.statement(artifact))
            self._views.put(artifact.key, view)
        return view

    def publish(self, artifact: Artifact) -> PullView:
        """The view of an artifact whose manifest is handed out: its digests are
        remembered under its repository, for the requests by digest that follow."""
        view = self.view(artifact)
        board = self.parts.board
        self.parts.on_board(board.remember_digests, artifact.image, view.digests, artifact.key)
        return view

    def by_digest(self, name: str, digest: str, caller: Caller) -> tuple[Artifact, PullView] | None:
        """The artifact `digest` was handed out from under `name` (`host/ns/repo`), once
        the upstream says the caller may read its source; None if there is none."""
        key = self.parts.on_board(self.parts.board.digest_key, name, digest)
        artifact = self.requests.find_artifact(key) if key is not None else None
        if artifact is None or artifact.image != name:
            return None
        self.requests.check_access(artifact.image, artifact.source_digest, caller)
        return artifact, self.view(artifact)

    def platforms(
        self, spec: ExportSpec, kind: str, caller: Caller
    ) -> list[tuple[JSONObject, ExportSpec]]:
        """One export per platform when the source is an index, as the caller may read
        it (see Resolver.exports_per_platform)."""
        return self.parts.resolver.exports_per_platform(spec, kind, caller)

    def index(
        self, name: str, source: str, children: list[tuple[JSONObject, Artifact]], accept: str
    ) -> Document:
        """The index of the squashed images of every platform, each published; it is
        remembered under `name` with the `source` digest whose readers may have it."""
        views = [(platform, self.publish(artifact)) for platform, artifact in children]
        forms = {OCI_INDEX: self._index(views, OCI_INDEX, OCI_MANIFEST)}
        if all(DOCKER_MANIFEST in view.manifests for _, view in views):
            forms[DOCKER_LIST] = self._index(views, DOCKER_LIST, DOCKER_MANIFEST)
        record = json.dumps(
            {"source": source, "forms": {kind: doc.data.decode() for kind, doc in forms.items()}}
        )
        for document in forms.values():
            self.parts.on_board(self.parts.board.remember_index, name, document.digest, record)
        docker = forms.get(DOCKER_LIST)
        return docker if docker and accepts(accept, OCI_INDEX, DOCKER_LIST) else forms[OCI_INDEX]

    @staticmethod
    def _index(views: list[tuple[JSONObject, PullView]], kind: str, child: str) -> Document:
        entries = []
        for platform, view in views:
            manifest = view.manifests[child]
            entries.append((Blob(manifest.digest, len(manifest.data), child), platform))
        return Document(image_index(entries, kind), kind)

    def index_by_digest(self, name: str, digest: str, caller: Caller) -> Document | None:
        """An index handed out under `name` before, once the upstream says the caller
        may read its source."""
        record = self.parts.on_board(self.parts.board.remembered_index, name, digest)
        if record is None:
            return None
        known = json.loads(record)
        self.requests.check_access(name, known["source"], caller)
        forms = [Document(text.encode(), kind) for kind, text in known["forms"].items()]
        return next((doc for doc in forms if doc.digest == digest), None)

    def blob(
        self, artifact: Artifact, view: PullView, digest: str, method: str
    ) -> Document | Location:
        """The config from memory, or where the client downloads a layer; a layer's GET
        counts as a download of its artifact (the janitor keeps what is pulled)."""
        document = view.document(digest)
        if document is not None:
            return document
        member = view.layers[digest]
        if method == "GET":
            self.requests.count_download(artifact.key)
        locate = self.parts.store.locate_member
        return self._archive(artifact, locate, artifact.key, member, method)

    def _archive(self, artifact: Artifact, call: Callable[..., T], *args: object) -> T:
        """`call(*args)` of the store about the archive of `artifact`; when the archive is
        gone, its record and view are forgotten and Gone raised."""
        try:
            return self.parts.on_store(call, *args)
        except Gone:
            self._views.pop(artifact.key)
            self.requests.forget_gone(artifact.key)
            raise

    def count_pull(self, upstream: str, served: str) -> None:
        """One pull more from `upstream` that got the `served` image (squashed or the
        original): an image manifest handed out by a GET."""
        self.parts.on_board(count_pull, self.parts.board, upstream, served)
