"""Layers that lie in local files: an OCI layout's blobs, a `docker save` archive's
members (read in place, from their offset)."""

from squash.image import StoredLayer
from squash.streams import FileSlice, Stream


class FileLayer(StoredLayer):
    """`size` stored bytes of `path` from `offset` on (the whole file: size None)."""

    def __init__(
        self,
        label: str,
        path: str,
        *,
        offset: int = 0,
        size: int | None,
        digest: str | None,
        diff_id: str | None = None,
    ) -> None:
        super().__init__(label, digest, size, diff_id)
        self.path, self.offset = path, offset

    def open_stored(self) -> Stream:
        if self.size is None:
            whole = open(self.path, "rb", buffering=0)  # noqa: SIM115 - the caller closes it
            whole.seek(self.offset)
            return whole
        return FileSlice(self.path, self.offset, self.size)

    def location(self) -> tuple[str, int]:
        return self.path, self.offset
