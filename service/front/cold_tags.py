"""A tag not squashed yet, as the registry front treats it (SQUASHD_MIRROR_COLD): which
manifest requests start its build, and whether a request gets the upstream's own
manifest meanwhile (`original`: no node waits longer than the upstream would make it)
or waits for the squashed one (`wait`: every node runs the squashed image).
"""

from collections.abc import Iterable

from service.front.upstreams import Route
from service.requests import Outcome
from tasks.settings import Settings


def _hands_out_originals(settings: Settings) -> bool:
    """Does a tag not squashed yet get the upstream's own manifest (while it builds)?"""
    return settings.mirror_cold == "original"


def starts_build(settings: Settings, method: str, route: Route) -> bool:
    """Does a manifest request of a tag start its build? A GET does; a HEAD when
    SQUASHD_HEAD_BUILDS says so, when a mirror asks (containerd resolves a tag with HEAD
    alone) or when originals are handed out meanwhile."""
    if method == "GET" or settings.head_builds or route.mirrored:
        return True
    return _hands_out_originals(settings)


def original_meanwhile(settings: Settings, outcomes: Iterable[Outcome]) -> bool:
    """Does this request get the upstream's own manifest? Under `original`, while any
    platform of the tag is not built (the squashed index only once every one is)."""
    unbuilt = any(outcome.artifact is None for outcome in outcomes)
    return _hands_out_originals(settings) and unbuilt
