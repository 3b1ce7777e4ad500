"""Which upstream a registry-front request is for (service.front.upstreams) and the settings that
say which are mirrored: no request leaves here (the token relay's challenge is a stub);
tests/service/test_mirror_api.py asks real registries."""

import pytest

from service.front.auth import Challenge
from service.front.upstreams import NotServed, Upstreams, is_reference
from tasks.errors import BadRequest
from tasks.settings import Settings, SettingsError

ENV = {
    "SQUASHD_REGISTRY": "registry.example:5000",
    "SQUASHD_ALLOWED_REGISTRIES": "registry.example:5000,quay.io,docker.io,10.0.0.7:5000",
    "SQUASHD_MIRROR_PREFIXES": "hub=docker.io, quay=quay.io",
}


@pytest.fixture
def upstreams() -> Upstreams:
    return Upstreams(Settings.from_env(ENV))


def test_without_ns_or_prefix_a_name_is_the_default_upstreams(upstreams: Upstreams) -> None:
    route = upstreams.route("team/app/api", None)
    assert (route.host, route.repository, route.name) == (
        "registry.example:5000", "team/app/api", "registry.example:5000/team/app/api"
    )  # fmt: skip
    assert route.ns is None and str(route.ref("v1")) == "registry.example:5000/team/app/api:v1"
    docker = Upstreams(Settings.from_env({})).route("alpine", None)
    assert docker.name == "docker.io/library/alpine"  # as docker names it
    with pytest.raises(BadRequest):
        upstreams.route("UPPER/case", None)


def test_an_ns_on_the_allow_list_is_that_registry(upstreams: Upstreams) -> None:
    route = upstreams.route("library/alpine", "docker.io")
    assert (route.name, route.ns, route.asked) == ("docker.io/library/alpine", "docker.io",
                                                   "library/alpine")  # fmt: skip
    assert upstreams.route("team/app", "10.0.0.7:5000").name == "10.0.0.7:5000/team/app"
    assert upstreams.route("hub/alpine", "quay.io").name == "quay.io/hub/alpine"  # ns first


@pytest.mark.parametrize("ns", ["ghcr.io", "127.0.0.1:5000", "169.254.169.254", "", "a/b", "x"])
def test_an_ns_not_on_the_allow_list_is_not_served(upstreams: Upstreams, ns: str) -> None:
    with pytest.raises(NotServed, match="not mirrored here"):
        upstreams.route("team/app", ns)


def test_a_mirror_prefix_names_an_upstream(upstreams: Upstreams) -> None:
    assert upstreams.route("hub/library/alpine", None).name == "docker.io/library/alpine"
    assert upstreams.route("hub/alpine", None).name == "docker.io/library/alpine"
    route = upstreams.route("quay/org/tool", None)
    assert (route.name, route.asked, route.ns) == ("quay.io/org/tool", "quay/org/tool", None)
    # a prefix alone is a repository of the default upstream
    assert upstreams.route("hub", None).name == "registry.example:5000/hub"


def test_with_any_registry_allowed_an_ns_must_be_public() -> None:
    settings = Settings.from_env({"SQUASHD_REGISTRY": "127.0.0.1:5000",
                                  "SQUASHD_ALLOWED_REGISTRIES": "*"})  # fmt: skip
    upstreams = Upstreams(settings)
    assert upstreams.route("a/b", "8.8.8.8:5000").host == "8.8.8.8:5000"
    assert upstreams.route("a/b", "127.0.0.1:5000").host == "127.0.0.1:5000"  # the upstream
    for private in ("127.0.0.1:6000", "localhost:5000", "10.1.2.3", "169.254.169.254"):
        with pytest.raises(NotServed):
            upstreams.route("a/b", private)


def test_the_token_realm_carries_an_ns(upstreams: Upstreams) -> None:
    base = "http://squashd.example:8000/"
    assert upstreams.realm(base, None) == "http://squashd.example:8000/v2/token"
    route = upstreams.route("team/app", "10.0.0.7:5000")
    assert upstreams.realm(base, route) == "http://squashd.example:8000/v2/token?ns=10.0.0.7%3A5000"
    assert upstreams.realm(base, upstreams.route("hub/alpine", None)).endswith("/v2/token")


class StubAuth:
    def __init__(self, service: str) -> None:
        self.service = service

    def challenge(self) -> Challenge:
        return Challenge("bearer", {"realm": "https://auth.example/token", "service": self.service})


def test_a_token_request_goes_to_the_upstream_its_scope_names(
    upstreams: Upstreams, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstreams, "auth", lambda host: StubAuth(f"service of {host}"))
    host, query = upstreams.token_request(
        [("scope", "repository:hub/alpine:pull"), ("service", "theirs"), ("account", "me")]
    )
    assert host == "docker.io"
    assert query == [("scope", "repository:library/alpine:pull"), ("account", "me"),
                     ("service", "service of docker.io")]  # fmt: skip
    host, query = upstreams.token_request([("ns", "quay.io"), ("scope", "repository:a/b:pull")])
    assert (host, query[0]) == ("quay.io", ("scope", "repository:a/b:pull"))
    assert upstreams.token_request([])[0] == "registry.example:5000"  # a login: the default
    with pytest.raises(BadRequest, match="several upstreams"):
        upstreams.token_request(
            [("scope", "repository:hub/a:pull"), ("scope", "repository:quay/b:pull")]
        )
    with pytest.raises(NotServed):
        upstreams.token_request([("ns", "evil.example"), ("scope", "repository:a/b:pull")])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("v1", True), ("v1--keep-2", True), ("sha256:" + "a" * 64, True),
     (".INVALID_MANIFEST_NAME", False), ("sha256:xyz", False), ("-v1", False), ("a" * 129, False)],
)  # fmt: skip
def test_what_can_be_a_reference(text: str, expected: bool) -> None:
    assert is_reference(text) is expected


def test_mirror_settings() -> None:
    settings = Settings.from_env(
        {"SQUASHD_REGISTRY": "http://reg.example:5000",
         "SQUASHD_MIRROR_PREFIXES": "lan=http://10.0.0.9:5000,hub=docker.io"}
    )  # fmt: skip
    assert settings.mirror_prefixes == {"lan": "10.0.0.9:5000", "hub": "docker.io"}
    # the prefixes' upstreams are mirrored without an allow-list of their own
    assert settings.allows("10.0.0.9:5000") and settings.allows("docker.io")
    assert settings.plain_http_hosts == {"reg.example:5000", "10.0.0.9:5000"}
    assert settings.mirror_cold == "wait"
    assert Settings.from_env({"SQUASHD_MIRROR_COLD": "original"}).mirror_cold == "original"
    listed = Settings.from_env({"SQUASHD_ALLOWED_REGISTRIES": "quay.io,http://10.0.0.8"})
    assert listed.plain_http_hosts == {"10.0.0.8"} and listed.allows("10.0.0.8")
    for wrong, variable in (
        ({"SQUASHD_MIRROR_PREFIXES": "hub"}, "SQUASHD_MIRROR_PREFIXES"),
        ({"SQUASHD_MIRROR_PREFIXES": "a/b=quay.io"}, "SQUASHD_MIRROR_PREFIXES"),
        ({"SQUASHD_MIRROR_PREFIXES": "hub=docker.io/library"}, "SQUASHD_MIRROR_PREFIXES"),
        ({"SQUASHD_MIRROR_PREFIXES": "q=quay.io", "SQUASHD_ALLOWED_REGISTRIES": "ghcr.io"},
         "does not list"),
        ({"SQUASHD_MIRROR_COLD": "later"}, "SQUASHD_MIRROR_COLD"),
        ({"SQUASHD_ALLOWED_REGISTRIES": "quay.io/org"}, "SQUASHD_ALLOWED_REGISTRIES"),
    ):  # fmt: skip
        with pytest.raises(SettingsError, match=variable):
            Settings.from_env(wrong)
