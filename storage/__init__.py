"""Artifact stores behind one small interface: S3 (boto3) and a local directory.

`open_store(SQUASHD_STORAGE_URL)` picks one. A store hands out sinks (see
`squash.sinks`) that commit atomically: an artifact is visible, with its size and
sha256, only once it is complete.
"""

from pathlib import Path

from storage.base import Artifact, ArtifactSink, ArtifactStore, default_directory

__all__ = ["Artifact", "ArtifactSink", "ArtifactStore", "open_store"]


def open_store(url: str | None, url_lifetime: int = 300) -> ArtifactStore:
    """`s3://bucket/prefix` (boto3's own settings) or a directory; none: the default dir.

    `url_lifetime`: seconds a presigned download URL stays valid."""
    if url and url.startswith("s3://"):
        from storage.s3 import S3Store

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return S3Store(bucket, prefix, url_lifetime=url_lifetime)
    from storage.local import LocalStore

    directory = url.removeprefix("file://") if url else None
    return LocalStore(Path(directory) if directory else default_directory())
