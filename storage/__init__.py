"""Artifact stores behind one small interface: S3 (boto3) and a local directory.

`open_store(SQUASHD_STORAGE_URL)` picks one. A store hands out sinks (see
`squash.sinks`) that commit atomically: an artifact is visible, with its size and
sha256, only once it is complete.
"""

from storage.base import Artifact, ArtifactSink, ArtifactStore, open_store

__all__ = ["Artifact", "ArtifactSink", "ArtifactStore", "open_store"]
