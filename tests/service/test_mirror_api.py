"""The registry front as a mirror of several registries, spoken to over HTTP in the
embedded default: `?ns=` (containerd's way) and path prefixes (podman's and CRI-O's) pick
the upstream; an `ns` outside the allow-list is refused before anything is sent to it;
each upstream's challenge and token realm are mirrored, and a caller's credentials go
only to the upstream it named; popularity and the pre-squash are kept per upstream."""

from __future__ import annotations

import gzip
import io
import json
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tasks.spec import ExportSpec, default_tag
from testbed.process import HOST
from testbed.registry import Registry
from testbed.service import WebServer
from tests.registry.fixtures import USERS, proxying
from tests.registry.harness import FaultProxy, TokenServer, basic_auth, write_auth_file
from tests.service.harness import push_layers
from tests.service.test_export_service import image_layers, wait_until

pytestmark = pytest.mark.integration

SAME = "svc/same"  # a different image in each registry under this name
SEEDS = {"first": 901, "second": 902}
CAROL = ("carol", "c4r0l")  # the account the Basic-auth proxies ask for


class Listener:
    """A TCP port that only records who connects (the `ns` nobody may reach)."""

    def __init__(self) -> None:
        self._socket = socket.create_server((HOST, 0))
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"{HOST}:{self._socket.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._socket.close()


@pytest.fixture(scope="module")
def second_registry(tmp_path_factory) -> Iterator[Registry]:
    registry = Registry(tmp_path_factory.mktemp("second-registry")).start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def basic_proxies(registry: Registry, second_registry: Registry) -> Iterator[list[FaultProxy]]:
    """Basic-auth registries (carol's): one in front of each registry."""
    with (
        proxying(registry.port, "basic first", require_basic=CAROL) as first,
        proxying(second_registry.port, "basic second", require_basic=CAROL) as second,
    ):
        yield [first, second]


@pytest.fixture(scope="module")
def stranger() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def mirror(
    registry: Registry,
    second_registry: Registry,
    private_registry: tuple[Registry, TokenServer],
    basic_proxies: list[FaultProxy],
    tmp_path_factory,
) -> Iterator[WebServer]:
    """squashd in front of `registry` (the default), mirroring the second registry
    (also as prefix `two/`), the private token registry (also as `priv/`) and the Basic
    proxies; it pulls from the private registry as robot and from the proxies as carol."""
    root = tmp_path_factory.mktemp("mirror-api")
    private = private_registry[0].host
    auth = write_auth_file(root / "auth.json", private, "robot", USERS["robot"])
    entries = json.loads(auth.read_text())["auths"]
    for proxy in basic_proxies:
        entries[proxy.host] = {"auth": basic_auth(*CAROL).removeprefix("Basic ")}
    auth.write_text(json.dumps({"auths": entries}))
    hosts = [registry.host, second_registry.host, private, *(p.host for p in basic_proxies)]
    env = {
        "SQUASHD_REGISTRY": registry.host,
        "SQUASHD_ALLOWED_REGISTRIES": ",".join(hosts),
        "SQUASHD_MIRROR_PREFIXES": f"two={second_registry.host},priv={private}",
        "REGISTRY_AUTH_FILE": str(auth),
        "SQUASHD_PRESQUASH_INTERVAL": "1",
    }
    server = WebServer(root, env).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def same_name(registry: Registry, second_registry: Registry, tmp_path_factory) -> None:
    """svc/same:v1 in each registry, a different image (its /app/seed says which)."""
    work = tmp_path_factory.mktemp("same-name")
    for label, where in (("first", registry), ("second", second_registry)):
        seed = SEEDS[label]
        push_layers(work / label, where.ref(SAME, "v1"), image_layers(seed, size=20_000))


def _get(web: WebServer, path: str, query: dict[str, str] | None = None, **kw):
    url = f"{path}?{urlencode(query)}" if query else path
    return web.get(url, kw.pop("headers", None), timeout=kw.pop("timeout", 120), **kw)


def _error(body: bytes) -> str:
    (error,) = json.loads(body)["errors"]
    return error["code"]


def _seed_of(web: WebServer, name: str, query: dict[str, str] | None) -> str:
    """`/app/seed` of the squashed image of NAME:v1 asked for with `query`: its one
    layer read through squashd."""
    status, _, body = _get(web, f"/v2/{name}/manifests/v1", query)
    assert status == 200, body
    (layer,) = json.loads(body)["layers"]
    status, _, blob = _get(web, f"/v2/{name}/blobs/{layer['digest']}", query)
    assert status == 200, blob
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        member = tar.extractfile("app/seed")
        assert member is not None
        return member.read().decode().strip()


def test_ns_and_prefixes_pick_the_registry(
    mirror: WebServer, same_name: None, registry: Registry, second_registry: Registry
) -> None:
    first, second = str(SEEDS["first"]), str(SEEDS["second"])
    assert _seed_of(mirror, SAME, None) == first  # no ns: SQUASHD_REGISTRY
    assert _seed_of(mirror, SAME, {"ns": registry.host}) == first
    assert _seed_of(mirror, SAME, {"ns": second_registry.host}) == second
    assert _seed_of(mirror, f"two/{SAME}", None) == second  # a mirror prefix
    status, headers, body = _get(mirror, f"/v2/{SAME}/manifests/v1", {"ns": second_registry.host})
    assert headers["oci-namespace"] == second_registry.host  # the ns echoed
    assert "oci-namespace" not in _get(mirror, f"/v2/{SAME}/manifests/v1")[1]
    # a digest handed out for one registry's image is unknown under the other's
    layer = json.loads(body)["layers"][0]["digest"]
    status, _, body = _get(mirror, f"/v2/{SAME}/blobs/{layer}", {"ns": registry.host})
    assert status == 404 and _error(body) == "BLOB_UNKNOWN", body


def test_an_ns_outside_the_allow_list_is_refused_unasked(
    mirror: WebServer, same_name: None, stranger: Listener
) -> None:
    for path in ("/v2/", f"/v2/{SAME}/manifests/v1", f"/v2/{SAME}/blobs/sha256:{'a' * 64}"):
        for method in ("GET", "HEAD") if path != "/v2/" else ("GET",):
            status, headers, body = _get(mirror, path, {"ns": stranger.host}, method=method)
            assert status == 404 and "oci-namespace" not in headers, (path, status, headers)
            if method == "GET":
                assert _error(body) == "NAME_UNKNOWN", body
    status, _, body = _get(mirror, "/v2/token", {"ns": stranger.host, "scope": "repository:a:pull"})
    assert status == 404, body
    assert stranger.connections == 0


def test_a_callers_credentials_go_only_to_the_upstream_it_named(
    mirror: WebServer, same_name: None, basic_proxies: list[FaultProxy]
) -> None:
    carol = {"Authorization": basic_auth(*CAROL)}
    for named, other in (basic_proxies, reversed(basic_proxies)):
        named.reset()
        other.reset()
        path = f"/v2/{SAME}/manifests/v1"
        status, headers, body = _get(mirror, path, {"ns": named.host}, method="HEAD")
        assert status == 401 and headers["www-authenticate"].startswith("Basic "), body
        status, _, body = _get(mirror, path, {"ns": named.host}, headers=carol)
        assert status == 200, body
        assert any(seen.headers.get("authorization") == carol["Authorization"]
                   for seen in named.seen), named.describe()  # fmt: skip
        assert not other.seen, other.describe()


def _token(web: WebServer, challenge: str, user: str) -> str:
    """The token a client gets from the realm `challenge` names, for its scope."""
    params = dict(part.split("=", 1) for part in challenge.removeprefix("Bearer ").split(","))
    params = {key: value.strip('"') for key, value in params.items()}
    realm = params.pop("realm")
    assert realm.startswith(web.url), realm
    path = realm.removeprefix(web.url)
    sep = "&" if "?" in path else "?"
    auth = {"Authorization": basic_auth(user, USERS[user])}
    status, _, body = web.get(f"{path}{sep}{urlencode(params)}", auth)
    assert status == 200, body
    return json.loads(body)["token"]


@pytest.mark.parametrize("how", ["ns", "prefix"])
def test_a_token_registry_is_mirrored_through_its_realm(
    how: str, mirror: WebServer, private_registry: tuple[Registry, TokenServer], tmp_path: Path
) -> None:
    """The private registry by `ns` or by prefix: squashd's challenge names its service
    and a realm of squashd's own; the token got there (alice's) reads the image; the
    token server saw the repository's name as the registry knows it."""
    registry, tokens = private_registry
    repository = f"team/mirror-{how}"
    push_layers(tmp_path / "image", registry.ref(repository, "v1"),
                image_layers(seed=911, size=20_000), creds=f"alice:{USERS['alice']}")  # fmt: skip
    name, query = (
        (repository, {"ns": registry.host}) if how == "ns" else (f"priv/{repository}", None)
    )
    status, headers, body = _get(mirror, f"/v2/{name}/manifests/v1", query)
    assert status == 401 and _error(body) == "UNAUTHORIZED", body
    challenge = headers["www-authenticate"]
    assert f'service="{tokens.service}"' in challenge and f"repository:{name}:pull" in challenge
    token = _token(mirror, challenge, "alice")
    assert tokens.requests[-1].repositories() == {repository}
    bearer = {"Authorization": f"Bearer {token}"}
    status, _, body = _get(mirror, f"/v2/{name}/manifests/v1", query, headers=bearer)
    assert status == 200 and len(json.loads(body)["layers"]) == 1, body
    bob = _token(mirror, challenge, "bob")  # bob may read public/ only
    status, _, body = _get(mirror, f"/v2/{name}/manifests/v1", query,
                           headers={"Authorization": f"Bearer {bob}"})  # fmt: skip
    assert status in (401, 403), body


def test_popularity_and_the_presquash_are_per_upstream(
    mirror: WebServer,
    same_name: None,
    registry: Registry,
    second_registry: Registry,
    tmp_path: Path,
) -> None:
    """Both registries' svc/same:v1 count as tags of their own on the status page; a push
    that moves the second registry's tag is squashed by the pre-squash before anyone
    asks for it again."""
    for query in (None, {"ns": second_registry.host}):
        assert _get(mirror, f"/v2/{SAME}/manifests/v1", query)[0] == 200
    tags = [f"{where.host}/{SAME}:v1" for where in (registry, second_registry)]
    wait_until(
        "both tags on the status page",
        lambda: all(tag in mirror.get("/")[2].decode() for tag in tags),
        explain=lambda: mirror.get("/")[2].decode(),
    )
    moving = "svc/moving"
    push_layers(tmp_path / "a", second_registry.ref(moving, "v1"), image_layers(921, 20_000))
    assert _get(mirror, f"/v2/two/{moving}/manifests/v1")[0] == 200
    digest, _ = push_layers(tmp_path / "b", second_registry.ref(moving, "v1"),
                            image_layers(922, 20_000))  # fmt: skip
    host = second_registry.host
    spec = ExportSpec(host, moving, "v1", digest, "linux/amd64",
                      default_tag(host, moving, "v1"), "gzip")  # fmt: skip
    wait_until(
        "the pre-squash of the moved tag",
        lambda: (
            (s := mirror.get(f"/v1/exports/{spec.key}"))[0] == 200
            and json.loads(s[2])["state"] == "ready"
        ),
        timeout=90,
        explain=mirror.log,
    )
