"""Pulls by upstream, and whether each got the squashed image or the original: the
board's counters behind `squashd_mirror_pulls_total` and the status page's table.

One counter a (served, upstream): `mirror_pulls:squashed:registry.example:5000`. A pull
is an image manifest handed out by a GET, by tag or by digest (containerd's pull: a HEAD
of the tag, then a GET by digest); a HEAD or an index is none.
"""

from service.front.documents import Document
from squash.oci import is_index
from tasks.board import Counters

PULLS = "registry_pulls"  # the squashed manifests handed out, whatever the upstream
PREFIX = "mirror_pulls:"
SQUASHED, ORIGINAL = "squashed", "original"


def is_pull(document: Document, method: str) -> bool:
    return method == "GET" and not is_index(document.media_type) and not document.attached


def count_pull(board: Counters, upstream: str, served: str) -> None:
    """One pull from `upstream` that got the `served` image."""
    if served == SQUASHED:
        board.count(PULLS)
    board.count(f"{PREFIX}{served}:{upstream}")


def pulls_by_upstream(counters: dict[str, float]) -> dict[str, dict[str, float]]:
    """{upstream: {"original": N, "squashed": M}} from the board's counters."""
    found: dict[str, dict[str, float]] = {}
    for name, value in counters.items():
        if name.startswith(PREFIX):
            served, _, upstream = name.removeprefix(PREFIX).partition(":")
            found.setdefault(upstream, {ORIGINAL: 0.0, SQUASHED: 0.0})[served] = value
    return dict(sorted(found.items()))
