"""The registry front as a mirror of several registries, spoken to over HTTP in the
embedded default: `?ns=` (containerd's way) and path prefixes (podman's and CRI-O's) pick
the upstream; an `ns` outside the allow-list is refused before anything is sent to it;
each upstream's challenge and token realm are mirrored, and a caller's credentials go
only to the upstream it named; popularity and the pre-squash are kept per upstream."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from squash.oci import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from tasks.spec import ExportSpec, default_tag
from testbed.process import HOST
from testbed.registry import Registry
from testbed.service import WebServer
from tests.integration.helpers import digest_of
from tests.registry.fixtures import USERS, Pushed, SampleImages, proxying
from tests.registry.harness import (
    FaultProxy,
    Listener,
    TokenServer,
    basic_auth,
    write_auth_file,
)
from tests.service.harness import push_layers
from tests.service.test_export_service import image_layers, wait_until

pytestmark = pytest.mark.integration

SAME = "svc/same"  # a different image in each registry under this name
SEEDS = {"first": 901, "second": 902}
CAROL = ("carol", "c4r0l")  # the account the Basic-auth proxies ask for


@pytest.fixture(scope="module")
def basic_proxies(registry: Registry, second_registry: Registry) -> Iterator[list[FaultProxy]]:
    """Basic-auth registries (carol's): one in front of each registry."""
    with (
        proxying(registry.port, "basic first", require_basic=CAROL) as first,
        proxying(second_registry.port, "basic second", require_basic=CAROL) as second,
    ):
        yield [first, second]


@pytest.fixture(scope="module")
def cutting(registry: Registry) -> Iterator[FaultProxy]:
    """A fault proxy in front of `registry`, mirrored as an upstream of its own."""
    with proxying(registry.port, "cutting upstream") as proxy:
        yield proxy


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
    cutting: FaultProxy,
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
    proxies = [*basic_proxies, cutting]
    hosts = [registry.host, second_registry.host, private, *(p.host for p in proxies)]
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


# ---------------------------------------------------------------------------------------
# What a runtime must be able to trust
# ---------------------------------------------------------------------------------------

ROUTES = [
    pytest.param(lambda r: (SAME, {"ns": r.host}), id="ns"),
    pytest.param(lambda r: (f"two/{SAME}", None), id="prefix"),
]


@pytest.mark.parametrize("accept", [OCI_MANIFEST, DOCKER_MANIFEST])
@pytest.mark.parametrize("routed", ROUTES)
def test_head_and_get_of_a_tag_give_one_digest(
    mirror: WebServer, same_name: None, second_registry: Registry, routed, accept: str
) -> None:
    name, query = routed(second_registry)
    path = f"/v2/{name}/manifests/v1"
    status, got, body = _get(mirror, path, query, headers={"Accept": accept})
    assert status == 200 and got["content-type"] == accept, body
    status, headed, empty = _get(mirror, path, query, headers={"Accept": accept}, method="HEAD")
    assert status == 200 and empty == b""
    assert headed["docker-content-digest"] == got["docker-content-digest"] == digest_of(body)
    assert int(headed["content-length"]) == len(body)


@pytest.mark.parametrize("routed", ROUTES)
def test_a_digest_not_handed_out_is_the_upstreams_own(
    mirror: WebServer, same_name: None, second_registry: Registry, routed
) -> None:
    """The original pinned by its digest: its manifest, config and layers come from the
    upstream byte for byte (HEAD says the same length); an unknown digest is unknown."""
    name, query = routed(second_registry)
    _, headers, original = second_registry.get(f"/v2/{SAME}/manifests/v1", {"Accept": OCI_MANIFEST})
    digest = headers["docker-content-digest"]
    for method in ("GET", "HEAD"):
        status, got, body = _get(mirror, f"/v2/{name}/manifests/{digest}", query, method=method)
        assert status == 200 and got["docker-content-digest"] == digest, body
        assert got["content-type"] == OCI_MANIFEST and int(got["content-length"]) == len(original)
        assert body == (original if method == "GET" else b"")
    manifest = json.loads(original)
    for entry in [manifest["config"], *manifest["layers"]]:
        status, _, body = _get(mirror, f"/v2/{name}/blobs/{entry['digest']}", query)
        assert (
            status == 200 and body == second_registry.get(f"/v2/{SAME}/blobs/{entry['digest']}")[2]
        )
        status, got, _ = _get(mirror, f"/v2/{name}/blobs/{entry['digest']}", query, method="HEAD")
        assert status == 200 and int(got["content-length"]) == entry["size"]
    unknown = "sha256:" + "0" * 64
    status, _, body = _get(mirror, f"/v2/{name}/manifests/{unknown}", query)
    assert status == 404 and _error(body) == "MANIFEST_UNKNOWN", body
    status, _, body = _get(mirror, f"/v2/{name}/blobs/{unknown}", query)
    assert status == 404 and _error(body) == "BLOB_UNKNOWN", body


def test_an_index_by_its_digest_is_the_upstreams_own(
    mirror: WebServer, registry: Registry, pushed: Pushed
) -> None:
    digest = pushed.digests["multi"]
    _, _, original = registry.get(f"/v2/{pushed.multi}/manifests/{digest}", {"Accept": OCI_INDEX})
    status, headers, body = _get(
        mirror, f"/v2/{pushed.multi}/manifests/{digest}", {"ns": registry.host}
    )
    assert status == 200 and body == original, body
    assert headers["content-type"] == OCI_INDEX and headers["docker-content-digest"] == digest


def test_what_can_be_no_reference_is_an_unknown_manifest(
    mirror: WebServer, same_name: None
) -> None:
    for reference in (".INVALID_MANIFEST_NAME", "sha256:nothex", "-v1"):
        for method in ("GET", "HEAD"):
            status, _, body = _get(mirror, f"/v2/{SAME}/manifests/{reference}", method=method)
            assert status == 404, (reference, method, body)
            if method == "GET":
                assert _error(body) == "MANIFEST_UNKNOWN", body


def test_tags_lists_are_the_upstreams_page_by_page(
    mirror: WebServer,
    second_registry: Registry,
    cutting: FaultProxy,
    private_registry: tuple[Registry, TokenServer],
    tmp_path: Path,
) -> None:
    """The second registry's tags of svc/tagged, by ns and by prefix; pages (`n`,
    `last`) asked of an upstream that gives them, whose `Link` asks squashd again; the
    private registry's only with a token."""
    for tag in ("a", "b", "c"):
        push_layers(tmp_path / tag, second_registry.ref("svc/tagged", tag),
                    image_layers(931, 20_000))  # fmt: skip
    listed = json.loads(second_registry.get("/v2/svc/tagged/tags/list")[2])["tags"]
    assert sorted(listed) == ["a", "b", "c"]
    for name, query in (("svc/tagged", {"ns": second_registry.host}), ("two/svc/tagged", {})):
        status, _, body = _get(mirror, f"/v2/{name}/tags/list", query)
        assert status == 200 and json.loads(body) == {"name": name, "tags": listed}
    # distribution 2.8 lists every tag whatever `n` says: an upstream that pages
    cutting.reset()
    kind = {"Content-Type": "application/json"}
    following = {**kind, "Link": '</v2/svc/paged/tags/list?last=b&n=2>; rel="next"'}
    pages = [(b'{"name": "svc/paged", "tags": ["a", "b"]}', following),
             (b'{"name": "svc/paged", "tags": ["c"]}', kind)]  # fmt: skip
    for page, headers in pages:
        cutting.respond(r"/v2/svc/paged/tags/list$", 200, page, headers, times=1)
    status, headers, body = _get(mirror, "/v2/svc/paged/tags/list", {"ns": cutting.host, "n": "2"})
    assert status == 200 and json.loads(body)["tags"] == ["a", "b"], body
    link = headers["link"]
    assert (
        link
        == f'</v2/svc/paged/tags/list?last=b&n=2&{urlencode({"ns": cutting.host})}>; rel="next"'
    )
    status, headers, body = mirror.get(link[1 : link.index(">")], timeout=60)
    assert status == 200 and json.loads(body)["tags"] == ["c"] and "link" not in headers, body
    asked = [seen.path.partition("?")[2] for seen in cutting.requests(r"/tags/list$")]
    assert asked == ["n=2", "n=2&last=b"], cutting.describe()
    status, _, body = _get(mirror, "/v2/svc/no-such-repo/tags/list", {"ns": second_registry.host})
    assert status == 404 and _error(body) == "NAME_UNKNOWN", body
    private, _ = private_registry
    push_layers(tmp_path / "private", private.ref("team/tags", "v1"), image_layers(932, 20_000),
                creds=f"alice:{USERS['alice']}")  # fmt: skip
    status, headers, body = _get(mirror, "/v2/priv/team/tags/tags/list")
    assert status == 401 and _error(body) == "UNAUTHORIZED", body
    token = _token(mirror, headers["www-authenticate"], "alice")
    status, _, body = _get(mirror, "/v2/priv/team/tags/tags/list",
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert status == 200 and json.loads(body)["tags"] == ["v1"], body


def _read_blob(web: WebServer, path: str) -> tuple[int, int, bool]:
    """(Content-Length, bytes received, whether the body ended early) of a blob GET."""
    connection = http.client.HTTPConnection(HOST, web.port, timeout=60)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200, response.read()
        length = int(response.getheader("content-length", "-1"))
        try:
            return length, len(response.read()), False
        except http.client.IncompleteRead as exc:
            return length, len(exc.partial), True
    finally:
        connection.close()


@pytest.mark.parametrize("fault", ["cut", "flip"])
def test_a_broken_upstream_blob_is_an_error_and_nothing_is_stored(
    fault: str, mirror: WebServer, cutting: FaultProxy, registry: Registry, tmp_path: Path
) -> None:
    """The upstream cut mid-blob, or sending a wrong byte: the client's download ends
    before its last byte (never a whole wrong blob) and squashd stored nothing; the same
    blob whole passes."""
    name = f"svc/broken-{fault}"
    push_layers(tmp_path / "image", registry.ref(name, "v1"), image_layers(941, 3 << 20))
    manifest = registry.manifest(name, "v1")
    assert manifest is not None
    layer = max(manifest["layers"], key=lambda entry: entry["size"])
    path = f"/v2/{name}/blobs/{layer['digest']}?{urlencode({'ns': cutting.host})}"
    start = registry.get(f"/v2/{name}/blobs/{layer['digest']}")[2][:4096]
    cutting.reset()
    if fault == "cut":
        cutting.cut(layer["digest"], after=layer["size"] // 2)
    else:
        cutting.flip(layer["digest"], offset=layer["size"] - 10, times=1)
    length, received, early = _read_blob(mirror, path)
    assert length == layer["size"] and early and received < length, (received, length)
    assert cutting.blob_gets(layer["digest"]), cutting.describe()
    holding = [p for p in mirror.root.rglob("*") if p.is_file() and start in p.read_bytes()]
    assert not holding, f"the blob's bytes were stored in {holding}"
    length, received, early = _read_blob(mirror, path)  # the upstream whole again
    assert (length, received, early) == (layer["size"], layer["size"], False)


# ---------------------------------------------------------------------------------------
# Cold tags: wait for the squash (a mirror's HEAD too), or hand out the original
# ---------------------------------------------------------------------------------------


def test_under_wait_a_mirrors_head_builds_and_waits(
    mirror: WebServer, registry: Registry, second_registry: Registry, tmp_path: Path
) -> None:
    """containerd resolves with HEAD alone: a HEAD by ns (or prefix) of a tag nobody
    asked for is built and answered with the squashed digest; a HEAD that names squashd
    itself still builds nothing."""
    for where, name, query in ((second_registry, "svc/cold-ns", {"ns": second_registry.host}),
                               (second_registry, "two/svc/cold-prefix", None),
                               (registry, "svc/cold-front", None)):  # fmt: skip
        repository = name.removeprefix("two/")
        push_layers(tmp_path / repository, where.ref(repository, "v1"), image_layers(951, 20_000))
        status, headed, _ = _get(mirror, f"/v2/{name}/manifests/v1", query, method="HEAD")
        if query is None and not name.startswith("two/"):
            assert status == 404, "a HEAD of squashd's own name built"
            continue
        assert status == 200, headed
        status, got, body = _get(mirror, f"/v2/{name}/manifests/v1", query)
        assert got["docker-content-digest"] == headed["docker-content-digest"] == digest_of(body)
        assert len(json.loads(body)["layers"]) == 1


@pytest.fixture(scope="module")
def original_mirror(
    registry: Registry, cutting: FaultProxy, tmp_path_factory
) -> Iterator[WebServer]:
    """squashd handing out originals while it squashes (SQUASHD_MIRROR_COLD=original)."""
    env = {
        "SQUASHD_REGISTRY": registry.host,
        "SQUASHD_ALLOWED_REGISTRIES": f"{registry.host},{cutting.host}",
        "SQUASHD_MIRROR_COLD": "original",
    }
    server = WebServer(tmp_path_factory.mktemp("original-mirror"), env).start()
    try:
        yield server
    finally:
        server.stop()


def _squashed_at_last(web: WebServer, path: str, query: dict[str, str], original: str) -> bytes:
    """The manifest once it is no longer the original (the build done)."""
    return wait_until(
        f"{path} squashed",
        lambda: body if (got := _get(web, path, query))[1]["docker-content-digest"] != original
        and (body := got[2]) else None,
        timeout=120,
        explain=web.log,
    )  # fmt: skip


def test_under_original_a_cold_tag_is_the_original_until_it_is_squashed(
    original_mirror: WebServer, cutting: FaultProxy, registry: Registry, tmp_path: Path
) -> None:
    """The build held at its first layer: HEAD and GET give the upstream's own manifest
    at once; let go, the tag turns to the squashed image, HEAD and GET alike."""
    name = "svc/turning"
    digest, _ = push_layers(tmp_path / "image", registry.ref(name, "v1"), image_layers(961, 20_000))
    manifest = registry.manifest(name, "v1")
    assert manifest is not None
    _, _, original = registry.get(f"/v2/{name}/manifests/{digest}", {"Accept": OCI_MANIFEST})
    cutting.reset()
    held = cutting.hold(manifest["layers"][0]["digest"])
    path, query = f"/v2/{name}/manifests/v1", {"ns": cutting.host}
    try:
        status, headed, _ = _get(original_mirror, path, query, method="HEAD")
        assert status == 200 and headed["docker-content-digest"] == digest, headed
        status, got, body = _get(original_mirror, path, query)
        assert status == 200 and body == original and got["docker-content-digest"] == digest
        assert held.reached.wait(60), "the HEAD started no build"
    finally:
        held.release()
    squashed = _squashed_at_last(original_mirror, path, query, digest)
    assert len(json.loads(squashed)["layers"]) == 1
    status, headed, _ = _get(original_mirror, path, query, method="HEAD")
    assert headed["docker-content-digest"] == digest_of(squashed)


def test_under_original_an_index_is_the_upstreams_until_every_platform_is_built(
    original_mirror: WebServer,
    cutting: FaultProxy,
    registry: Registry,
    pushed: Pushed,
    images: SampleImages,
) -> None:
    """linux/arm/v7's build held: the other platforms are built, and the tag is still
    the upstream's index; let go, the squashed index of the three."""
    index = pushed.digests["multi"]
    v7 = registry.manifest(pushed.multi, images.index.images["linux/arm/v7"].manifest_digest)
    assert v7 is not None
    cutting.reset()
    held = cutting.hold(v7["layers"][0]["digest"])
    path, query = f"/v2/{pushed.multi}/manifests/{pushed.tag}", {"ns": cutting.host}
    tag = default_tag(cutting.host, pushed.multi, pushed.tag)
    try:
        status, got, body = _get(original_mirror, path, query)
        assert status == 200 and got["docker-content-digest"] == index, body
        for platform in ("linux/amd64", "linux/arm64"):
            spec = ExportSpec(cutting.host, pushed.multi, pushed.tag, index, platform, tag, "gzip")
            wait_until(
                f"{platform} built",
                lambda key=spec.key: json.loads(original_mirror.get(f"/v1/exports/{key}")[2])
                .get("state") == "ready",
                timeout=120,
                explain=original_mirror.log,
            )  # fmt: skip
        status, got, _ = _get(original_mirror, path, query)
        assert got["docker-content-digest"] == index, "an index of some platforms was handed out"
    finally:
        held.release()
    squashed = json.loads(_squashed_at_last(original_mirror, path, query, index))
    assert squashed["mediaType"] == OCI_INDEX and len(squashed["manifests"]) == 3, squashed
    for entry in squashed["manifests"]:
        status, _, body = _get(original_mirror, f"/v2/{pushed.multi}/manifests/{entry['digest']}",
                               query)  # fmt: skip
        assert status == 200 and len(json.loads(body)["layers"]) == 1, body


def test_pulls_are_counted_by_upstream_original_or_squashed(
    original_mirror: WebServer, cutting: FaultProxy, registry: Registry, tmp_path: Path
) -> None:
    """/metrics and the status page: a GET that hands out the original (by tag while it
    turns, or by the original's digest) is an original pull of its upstream, one that
    hands out the squashed image a squashed pull; a HEAD is none."""
    name = "svc/counted"
    digest, _ = push_layers(tmp_path / "image", registry.ref(name, "v1"), image_layers(971, 20_000))
    manifest = registry.manifest(name, "v1")
    assert manifest is not None
    series = {
        served: f"squashd_mirror_pulls_total{{served={served},upstream={cutting.host}}}"
        for served in ("original", "squashed")
    }

    def counts() -> tuple[float, float, float]:
        values = original_mirror.metrics()
        pulls = values.get("squashd_registry_pulls_total", 0.0)
        return values.get(series["original"], 0.0), values.get(series["squashed"], 0.0), pulls

    path, query = f"/v2/{name}/manifests/v1", {"ns": cutting.host}
    cutting.reset()
    held = cutting.hold(manifest["layers"][0]["digest"])
    try:
        before = counts()
        assert _get(original_mirror, path, query)[0] == 200
        assert _get(original_mirror, path, query, method="HEAD")[0] == 200
        assert _get(original_mirror, f"/v2/{name}/manifests/{digest}", query)[0] == 200
        assert counts() == (before[0] + 2, before[1], before[2])
    finally:
        held.release()
    _squashed_at_last(original_mirror, path, query, digest)
    before = counts()
    assert _get(original_mirror, path, query)[0] == 200
    assert counts() == (before[0], before[1] + 1, before[2] + 1)
    page = original_mirror.get("/")[2].decode()
    row = page[page.index("Pulls by upstream") :]
    assert cutting.host in row and f">{int(before[1] + 1)}</td>" in row, row
