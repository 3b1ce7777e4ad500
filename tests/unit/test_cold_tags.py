"""SQUASHD_MIRROR_COLD as the registry front applies it (service.front.cold_tags): which
manifest requests start a build, and when the upstream's own manifest is handed out.
tests/service/test_mirror_api.py pulls through it."""

from service.front.cold_tags import original_meanwhile, starts_build
from service.front.upstreams import Route
from service.requests import Outcome
from storage.base import Artifact
from tasks.settings import Settings

PLAIN = Route("registry.example:5000", "team/app", "team/app")  # by squashd's own name
BY_NS = Route("registry.example:5000", "team/app", "team/app", ns="registry.example:5000")
BY_PREFIX = Route("docker.io", "library/alpine", "hub/alpine", prefix="hub")
BUILT = Outcome(Artifact("key", 1, "", "sha256:source", 0.0), None)
NOT_BUILT = Outcome(None, None)
WAIT = Settings.from_env({})
ORIGINAL = Settings.from_env({"SQUASHD_MIRROR_COLD": "original"})


def test_a_get_starts_a_build_and_a_head_only_when_it_must() -> None:
    assert starts_build(WAIT, "GET", PLAIN)
    assert not starts_build(WAIT, "HEAD", PLAIN)
    # containerd resolves a tag with HEAD alone: a mirror's HEAD builds
    assert starts_build(WAIT, "HEAD", BY_NS) and starts_build(WAIT, "HEAD", BY_PREFIX)
    assert starts_build(Settings.from_env({"SQUASHD_HEAD_BUILDS": "1"}), "HEAD", PLAIN)
    assert starts_build(ORIGINAL, "HEAD", PLAIN)


def test_the_original_is_handed_out_only_under_original_while_a_platform_is_not_built() -> None:
    assert original_meanwhile(ORIGINAL, [BUILT, NOT_BUILT])
    assert not original_meanwhile(ORIGINAL, [BUILT, BUILT])  # the squashed index
    assert not original_meanwhile(WAIT, [NOT_BUILT])  # waited for instead
