"""Image references, platforms, credentials and auth challenges."""

import base64
import json

import pytest

from squash.distribution.client import is_loopback, parse_challenge
from squash.distribution.credentials import Credentials, lookup
from squash.errors import BadReference, SquashError
from squash.reference import Platform, check_repo_tag, parse_docker_ref, parse_source


@pytest.mark.parametrize(
    ("text", "registry", "repository", "reference"),
    [
        ("alpine", "docker.io", "library/alpine", "latest"),
        ("docker://alpine:3.19", "docker.io", "library/alpine", "3.19"),
        ("docker://user/app", "docker.io", "user/app", "latest"),
        ("docker.io/alpine:3.19", "docker.io", "library/alpine", "3.19"),
        ("docker.io/user/app", "docker.io", "user/app", "latest"),
        ("quay.io/org/app:v1", "quay.io", "org/app", "v1"),
        ("localhost/app", "localhost", "app", "latest"),
        ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000", "a/b/c", "t"),
        ("ghcr.io/o/a@sha256:" + "a" * 64, "ghcr.io", "o/a", "sha256:" + "a" * 64),
    ],
)
def test_docker_references_normalise_like_docker(text, registry, repository, reference) -> None:
    ref = parse_docker_ref(text.removeprefix("docker://"))
    assert (ref.registry, ref.repository, ref.reference) == (registry, repository, reference)
    assert parse_source(text).transport == "docker"


def test_docker_hub_api_host() -> None:
    assert parse_docker_ref("alpine").api_host == "registry-1.docker.io"
    assert parse_docker_ref("quay.io/a/b").api_host == "quay.io"


@pytest.mark.parametrize("text", ["docker://", "Upper/case", "a:b:c", "x@sha256:short"])
def test_bad_references(text) -> None:
    with pytest.raises(BadReference):
        parse_source(text)


def test_local_transports() -> None:
    oci = parse_source("oci:/some/dir:tag")
    assert (oci.transport, oci.path, oci.ref) == ("oci", "/some/dir", "tag")
    archive = parse_source("docker-archive:/a.tar")
    assert (archive.transport, archive.path, archive.ref) == ("docker-archive", "/a.tar", None)


def test_platforms() -> None:
    assert Platform.parse("linux/arm64/v8").matches({"os": "linux", "architecture": "arm64"})
    assert not Platform.parse("linux/arm/v7").matches(
        {"os": "linux", "architecture": "arm", "variant": "v6"}
    )
    with pytest.raises(BadReference):
        Platform.parse("linux")


def test_output_tags() -> None:
    assert check_repo_tag("docker.io/library/app") == ("app", "latest")
    assert check_repo_tag("localhost:5000/x/y:1.0") == ("localhost:5000/x/y", "1.0")
    with pytest.raises(BadReference):
        check_repo_tag("Bad:tag")


def test_auth_challenges() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example/token",
        "service": "reg",
        "scope": "repository:a/b:pull",
    }
    assert parse_challenge('Basic realm="r"') == ("basic", {"realm": "r"})


def test_loopback_hosts() -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and is_loopback("[::1]:80")
    assert not is_loopback("registry.example.com") and not is_loopback("10.0.0.1:5000")


def test_credentials_from_auth_files(tmp_path, monkeypatch) -> None:
    auth = base64.b64encode(b"alice:s3:cret").decode()
    config = {
        "auths": {
            "127.0.0.1:5000": {"auth": auth},
            "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
        }
    }
    path = tmp_path / "auth.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(path))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert lookup("127.0.0.1:5000") == Credentials("alice", "s3:cret")
    assert lookup("docker.io") == Credentials("bob", "pw")
    assert lookup("quay.io") is None
    path.write_text("{not json")
    with pytest.raises(SquashError, match="cannot read credentials"):
        lookup("quay.io")


def test_service_credentials_go_only_to_the_upstream(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("SQUASHD_REGISTRY", "https://registry.example.com:5000/")
    monkeypatch.setenv("SQUASHD_REGISTRY_USERNAME", "svc")
    monkeypatch.setenv("SQUASHD_REGISTRY_PASSWORD", "pw")
    assert lookup("registry.example.com:5000") == Credentials("svc", "pw")
    assert lookup("evil.example.com") is None
