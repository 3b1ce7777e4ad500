"""The janitor's decisions: which artifacts to evict, which uploads to abort.

An artifact goes when nobody downloaded it for the TTL, or, while the store holds more
than the budget, the least recently used go first. Never one that is in use: a build
of it running, or handed out so recently that its presigned URL may still be
followed. An unfinished upload is aborted once it is older than the longest build and
no build of its key holds the lock.
"""

import logging
from dataclasses import dataclass, field
from typing import Protocol

from storage.base import ArtifactStore, Entry
from tasks.board import BuildLocks, Counters, Usage

log = logging.getLogger("squashd.janitor")


@dataclass
class Policy:
    ttl: float  # seconds since the last download (or creation)
    budget: int  # bytes; 0: none
    in_use_for: float  # seconds a handed-out artifact stays in use (the URL lifetime)
    stale_upload: float  # seconds after which an unfinished upload is abandoned


@dataclass
class Sweep:
    evicted: list[str] = field(default_factory=list)  # keys, in the order deleted
    freed: int = 0
    kept_in_use: list[str] = field(default_factory=list)
    aborted: int = 0
    stored: int = 0  # artifacts left
    stored_bytes: int = 0

    def summary(self) -> dict[str, object]:
        return {
            "evicted": len(self.evicted),
            "freed_bytes": self.freed,
            "kept_in_use": len(self.kept_in_use),
            "aborted_uploads": self.aborted,
            "artifacts": self.stored,
            "artifact_bytes": self.stored_bytes,
        }


class JanitorBoard(Usage, BuildLocks, Counters, Protocol):
    """What the janitor uses of the board: downloads, locks of builds, the stored gauge."""


def sweep(store: ArtifactStore, board: JanitorBoard, policy: Policy, now: float) -> Sweep:
    result = Sweep()
    downloads = board.downloads()

    def last_used(entry: Entry) -> float:
        return max(downloads.get(entry.key, 0.0), entry.created)

    def in_use(entry: Entry) -> bool:
        recent = now - downloads.get(entry.key, float("-inf")) < policy.in_use_for
        return recent or board.locked(entry.key)

    def evict(entry: Entry, why: str) -> None:
        store.delete(entry.key)
        board.drop(entry.key)
        result.evicted.append(entry.key)
        result.freed += entry.size
        log.info("evicted %s (%d bytes): %s", entry.key, entry.size, why, extra={"key": entry.key})

    kept: list[Entry] = []
    for entry in sorted(store.entries(), key=last_used):  # least recently used first
        idle = now - last_used(entry)
        if idle > policy.ttl and not in_use(entry):
            evict(entry, f"not downloaded for {idle:.0f} s")
        else:
            kept.append(entry)
    total = sum(entry.size for entry in kept)
    for entry in list(kept):
        if not policy.budget or total <= policy.budget:
            break
        if in_use(entry):
            result.kept_in_use.append(entry.key)
            continue
        evict(entry, f"the store holds {total} bytes, over the budget of {policy.budget}")
        kept.remove(entry)
        total -= entry.size
    for upload in store.uploads():
        if now - upload.started > policy.stale_upload and not board.locked(upload.key):
            store.abort_upload(upload)
            result.aborted += 1
            log.info("aborted an abandoned upload of %s", upload.key, extra={"key": upload.key})
    result.stored, result.stored_bytes = len(kept), total
    board.set_stored(result.stored, result.stored_bytes)
    return result
