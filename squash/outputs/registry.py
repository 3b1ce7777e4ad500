"""The `docker://HOST/NAME[:TAG]` destination: the squashed image pushed to a registry.

The squashed layer goes up as it is made, in chunks; kept layers the repository already
holds are skipped, those in another repository of the same registry are mounted, the
rest are copied from the source in chunks; then the config, and the manifest last, under
its tag (an index's images first, by digest). Until that PUT nothing names the new image,
so a failure tags nothing. The provenance referrers follow the tagged image
(squash/distribution/referrers.py)."""

from squash.destination import copy_stored
from squash.distribution.client import Registry
from squash.distribution.options import DEFAULT_CHUNK, RegistryOptions
from squash.distribution.push import BlobUpload, has_blob, put_manifest
from squash.distribution.referrers import push_referrer
from squash.errors import RegistryError
from squash.image import StoredLayer
from squash.oci import OCI_CONFIG, Blob, Referrer, blob_of
from squash.reference import DockerRef
from squash.streams import Chunk


class RegistryOutput:
    def __init__(
        self, ref: DockerRef, options: RegistryOptions, chunk_size: int = DEFAULT_CHUNK
    ) -> None:
        self.ref, self.chunk_size = ref, chunk_size
        self.what = f"push to {ref.registry}/{ref.repository}"
        self.session = Registry(ref.registry, ref.api_host, options)
        self._open: list[BlobUpload] = []
        self._documents: dict[str, tuple[bytes, str]] = {}  # manifests: digest -> (, type)
        self._manifest: tuple[Blob, str] | None = None
        self._referrers: list[Referrer] = []

    def _upload(self, mount: tuple[str, str] | None = None) -> BlobUpload:
        upload = BlobUpload(
            self.session, self.ref.repository, self.what, self.chunk_size, mount=mount
        )
        self._open.append(upload)
        return upload

    def _finish(self, upload: BlobUpload, digest: str) -> None:
        upload.finish(digest)
        self._open.remove(upload)

    def layer(self) -> "_PushedLayer":
        return _PushedLayer(self, self._upload())

    def kept(self, layer: StoredLayer, blob: Blob) -> None:
        if has_blob(self.session, self.ref.repository, blob.digest, self.what):
            return
        origin = layer.origin()
        if origin is not None and origin[0] == self.ref.registry:
            upload = self._upload((blob.digest, origin[1]))
            if upload.mounted:
                self._open.remove(upload)
                return
        else:
            upload = self._upload()
        copy_stored(layer, blob, upload.write)
        self._finish(upload, blob.digest)

    def document(self, data: bytes, media_type: str) -> Blob:
        blob = blob_of(data, media_type)
        if media_type != OCI_CONFIG:  # a manifest or index: put by tag, or by digest
            self._documents[blob.digest] = data, media_type
        else:
            self._put_blob(blob, data)
        return blob

    def _put_blob(self, blob: Blob, data: bytes) -> None:
        """A small blob held whole, unless the repository has it."""
        if not has_blob(self.session, self.ref.repository, blob.digest, self.what):
            upload = self._upload()
            upload.write(data)
            self._finish(upload, blob.digest)

    def tag(self, manifest: Blob, repo_tag: str, full_name: str) -> str:
        self._manifest = (manifest, self.ref.tag or repo_tag.rpartition(":")[2])
        return f"{self.ref.registry}/{self.ref.repository}:{self._manifest[1]}"

    def attach(self, referrer: Referrer) -> None:
        """Its blobs go up now, its manifest after the image's."""
        for blob, data in referrer.blobs:
            self._put_blob(blob, data)
        self._referrers.append(referrer)

    def commit(self) -> None:
        """An index's images by digest first, then the tagged manifest or index."""
        assert self._manifest is not None, "commit before tag"
        manifest, tag = self._manifest
        repository = self.ref.repository
        for digest, (data, media_type) in self._documents.items():
            if digest != manifest.digest:
                put_manifest(self.session, repository, digest, data, media_type, self.what)
        data, media_type = self._documents[manifest.digest]
        put_manifest(self.session, repository, tag, data, media_type, self.what)
        try:
            for referrer in self._referrers:
                push_referrer(self.session, repository, referrer, self.what)
        except RegistryError as exc:
            raise RegistryError(
                f"the image is pushed as {tag}, but its provenance could not be attached: "
                f"{exc} (--no-referrer leaves it out)",
                exc.status,
            ) from None
        self.session.close()

    def abort(self) -> None:
        for upload in self._open:
            upload.abort()
        self._open.clear()
        self.session.close()


class _PushedLayer:
    def __init__(self, output: RegistryOutput, upload: BlobUpload) -> None:
        self._output, self._upload = output, upload

    def write(self, data: Chunk) -> None:
        self._upload.write(data)

    def done(self, blob: Blob) -> None:
        self._output._finish(self._upload, blob.digest)
