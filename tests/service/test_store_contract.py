"""The artifact store contract (storage/base.py, `ArtifactStore`), shown for both stores:
a local directory and S3 (moto's server), each opened from a URL as `storage.open_store`
does for the service. The same assertions hold for each (as test_board.py does for the
two boards); what the backend itself holds is looked at through `Backend.leftovers`, not
through the store, so a store cannot hide what it left behind.

- create/commit: visible only after the commit, with its exact size, sha256 and
  metadata; the location serves exactly those bytes;
- abort, a failed export, a write abandoned by a dead build, a commit cut short: nothing
  visible; what is unfinished is listed by `uploads()` under its own key and cleared by
  `abort_upload()` or by the next `create()` of that key (and of no other key);
- listings, locations (presigned URLs / local paths), delete, missing and non-plain keys;
- the provenance statement beside an archive: read back, replaced, deleted with it;
- `errors`: the exceptions the store raises while its backend is down (moto stopped, the
  directory gone), judged by `retryable` as the store says; the same store object works
  again when the backend is back; `retryable` passes no refusal and no foreign error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from squash.errors import DigestMismatch
from squash.export import export_image
from squash.image import Image, StoredLayer
from squash.outputs.docker_archive import DockerArchive
from squash.sinks import Patchable
from squash.streams import Stream
from storage import ArtifactStore, open_store
from storage.base import Artifact, Entry, Gone, Location, Member, Upload
from storage.local import LocalStore
from storage.s3 import FIRST_PART, PART
from testbed.process import http_get
from testbed.service import MotoS3
from tests.integration.helpers import LayerBuilder, sha256_hex

pytestmark = pytest.mark.integration

STORES = ["local", "s3"]
PREFIX = "artifacts"
LIFETIME = 120  # seconds a presigned URL is valid
DIGEST = "sha256:" + "d" * 64  # the source image's manifest digest, as recorded
IMAGE = "127.0.0.1:5000/team/app"  # the repository it was squashed from


@dataclasses.dataclass
class Backend:
    """A store opened from `url`, and what the test does to the backend behind it."""

    kind: str
    url: str  # what `open_store` was given
    store: ArtifactStore
    leftovers: Callable[[], list[str]]  # everything in the backend, seen without the store
    litter: Callable[[], None]  # puts there what is not an artifact of this store
    down: Callable[[], None]  # the backend stops answering
    up: Callable[[], None]  # and comes back
    outage_passes: bool  # what `retryable` says of the errors of an outage
    refusal: Callable[[], object]  # a call the backend refuses for good
    cut_short: Callable[[str], None]  # what a build killed inside its commit leaves of KEY


def _local(root: Path) -> Backend:
    away = root.with_name(f"{root.name}.away")

    def leftovers() -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*"))

    def litter() -> None:
        (root / "notes.txt").write_text("not an artifact\n")
        (root / "nested").mkdir()
        (root / "nested" / "inner.tar").write_bytes(b"x" * 1024)

    def down() -> None:  # as root, permissions stop nobody: the directory goes instead
        root.rename(away)
        root.write_bytes(b"")

    def up() -> None:
        root.unlink()
        away.rename(root)

    url = str(root)
    store = open_store(url, LIFETIME)

    def refusal() -> object:  # a directory stands where the archive would go
        (root / "occupied.tar").mkdir()
        return _commit(store, "occupied")

    def cut_short(key: str) -> None:  # the record is written first, then the archive
        assert isinstance(store, LocalStore)
        store.write_metadata(Artifact(key, 10, "e" * 64, DIGEST, time.time(), IMAGE))

    # a local outage is never worth a retry by itself (tasks/errors.py judges a full disk)
    return Backend("local", url, store, leftovers, litter, down, up, False, refusal, cut_short)


def _s3(moto: MotoS3, bucket: str, monkeypatch: pytest.MonkeyPatch) -> Backend:
    for name, value in moto.env().items():  # boto3's own settings, as the service gets them
        monkeypatch.setenv(name, value)

    def leftovers() -> list[str]:
        keys = moto.keys(bucket)
        return keys + [f"upload of {u['Key']}" for u in moto.uploads(bucket)]

    def litter() -> None:
        s3 = moto.client()
        for key in (f"{PREFIX}/notes.txt", f"{PREFIX}/nested/inner.tar", "elsewhere/other.tar"):
            s3.put_object(Bucket=bucket, Key=key, Body=b"not an artifact")

    def up() -> None:
        moto.start()  # the same port, empty: the bucket comes back by hand
        moto.create_bucket(bucket)

    def refusal() -> object:  # a bucket that does not exist
        return _commit(open_store(f"s3://{bucket}-missing/{PREFIX}", LIFETIME), "refused")

    def cut_short(key: str) -> None:  # the upload completed, its sha256 tag not yet set
        moto.client().put_object(Bucket=bucket, Key=f"{PREFIX}/{key}.tar", Body=b"x" * 10)

    url = f"s3://{bucket}/{PREFIX}"
    store = open_store(url, LIFETIME)
    return Backend("s3", url, store, leftovers, litter, moto.stop, up, True, refusal, cut_short)


@pytest.fixture(params=STORES)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Backend:
    if request.param == "local":
        return _local(tmp_path / "artifacts")
    moto: MotoS3 = request.getfixturevalue("moto_s3")
    bucket: str = request.getfixturevalue("bucket")
    return _s3(moto, bucket, monkeypatch)


@pytest.fixture(params=STORES)
def fragile(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Backend]:
    """A backend the test may take down: for S3 a moto server of its own (stopping the
    session's would take every other test's buckets with it)."""
    if request.param == "local":
        yield _local(tmp_path / "artifacts")
        return
    moto = MotoS3(tmp_path_factory.mktemp("own-moto")).start()
    try:
        yield _s3(moto, moto.create_bucket("squashd-contract"), monkeypatch)
    finally:
        moto.stop()


def _fill(sink: Patchable, size: int, seed: int) -> bytes:
    """`size` bytes through `sink` as the archive writer sends them: a start, a reserved
    header block, the body in odd-sized writes, then the header patched. Returns them."""
    data = bytearray(random.Random(seed).randbytes(size))
    sink.write(data[:1536])
    token = sink.reserve(512)
    for start in range(2048, size, 777_777):
        sink.write(data[start : start + 777_777])
    data[1536:2048] = b"H" * 512
    sink.patch(token, bytes(data[1536:2048]))
    return bytes(data)


def _commit(store: ArtifactStore, key: str, size: int = 50_000, seed: int = 1) -> bytes:
    """A whole write as `export_image` makes it: aborted if anything fails, commit too."""
    sink = store.create(key, DIGEST, IMAGE)
    try:
        data = _fill(sink, size, seed)
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    return data


@dataclasses.dataclass
class Download:
    status: int
    body: bytes
    size: int | None
    filename: str | None


def _download(location: Location, method: str = "GET") -> Download:
    """What a client gets from a location: a presigned URL requested, a local file read
    (as the web layer serves it)."""
    assert (location.url is None) != (location.path is None), location
    if location.url is not None:
        status, headers, body = http_get(location.url, method=method)
        disposition = re.search(r'filename="([^"]+)"', headers.get("content-disposition", ""))
        length = headers.get("content-length")
        return Download(
            status,
            body,
            int(length) if length is not None else None,
            disposition[1] if disposition else None,
        )
    assert location.path is not None
    if not location.path.is_file():
        return Download(404, b"", None, location.filename)
    whole = location.path.read_bytes()
    end = len(whole) if location.length is None else location.offset + location.length
    body = whole[location.offset : end] if method == "GET" else b""
    return Download(200, body, end - location.offset, location.filename)


def _keys(listed: Iterable[Entry | Upload]) -> list[str]:
    return sorted(item.key for item in listed)


def test_open_store_gives_the_store_the_url_names(backend: Backend) -> None:
    store = backend.store
    assert store.describe() == backend.url
    assert isinstance(store.errors, tuple) and store.errors, store.errors
    assert all(isinstance(e, type) and issubclass(e, Exception) for e in store.errors)
    store.ping()
    assert list(store.entries()) == [] and list(store.uploads()) == []


def test_commit_makes_the_artifact_visible_with_exact_size_sha256_and_metadata(
    backend: Backend,
) -> None:
    store, key = backend.store, "exact"
    before = time.time()
    sink = store.create(key, DIGEST, IMAGE)
    data = _fill(sink, FIRST_PART + 4321, seed=2)  # S3: more than its first part
    assert store.stat(key) is None, "visible before its commit"
    assert _keys(store.entries()) == []
    assert _download(store.locate(key)).status == 404
    committed = sink.commit()
    after = time.time()
    assert committed == Artifact(key, len(data), sha256_hex(data), DIGEST, committed.created, IMAGE)
    assert before <= committed.created <= after
    assert store.stat(key) == committed
    (entry,) = store.entries()
    assert (entry.key, entry.size) == (key, len(data))
    assert before - 2 <= entry.created <= after + 2  # S3 reports whole seconds
    assert list(store.uploads()) == [], "a committed upload is still listed as unfinished"
    got = _download(store.locate(key))
    assert got.status == 200 and got.size == len(data)
    assert hashlib.sha256(got.body).hexdigest() == committed.sha256


def test_ranged_reads_and_a_member_by_itself(backend: Backend) -> None:
    """What the registry front reads of an archive (its headers and documents), and a
    member (a layer) handed out alone; it goes with its artifact."""
    store = backend.store
    data = _commit(store, "ranged", size=FIRST_PART + 5000, seed=9)
    assert store.read("ranged", 0, 100) == data[:100]
    assert store.read("ranged", 7777, 3000) == data[7777:10777]
    assert store.read("ranged", len(data) - 10, 100) == data[-10:], "fewer at its end"
    assert store.read("ranged", len(data) + 5, 10) == b""
    member = Member("sha256:" + "7" * 64, 1536, FIRST_PART)
    for method in ("GET", "HEAD"):
        got = _download(store.locate_member("ranged", member, method), method)
        assert got.status == 200 and got.size == member.size, got.status
        assert method == "HEAD" or got.body == data[1536 : 1536 + FIRST_PART]
    store.delete("ranged")
    assert backend.leftovers() == [], "a member outlived its archive"


def test_an_aborted_write_leaves_nothing(backend: Backend) -> None:
    store = backend.store
    sink = store.create("aborted", DIGEST, IMAGE)
    _fill(sink, FIRST_PART + PART + 300_000, seed=3)  # S3: a part is up before the abort
    assert _keys(store.uploads()) == ["aborted"], "an upload in progress is not listed"
    sink.abort()
    assert store.stat("aborted") is None
    assert list(store.entries()) == [] and list(store.uploads()) == []
    assert backend.leftovers() == []


class _WrongLayer(StoredLayer):
    """A layer whose tar does not hash to its diff_id: the export fails at its end."""

    def __init__(self, tar: bytes) -> None:
        super().__init__("image contract, layer 1/1", None, len(tar), "sha256:" + "0" * 64)
        self.tar = tar

    def open_stored(self) -> Stream:
        return io.BytesIO(self.tar)


def test_a_failed_export_leaves_nothing(backend: Backend) -> None:
    store = backend.store
    tar = LayerBuilder().dir("data").file("data/f", random.Random(4).randbytes(200_000)).tar()
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"diff_ids": []}}
    image = Image("contract", "contract/app", "v1", DIGEST, config, [_WrongLayer(tar)])
    with pytest.raises(DigestMismatch, match="layer 1/1"):
        export_image(
            image, DockerArchive(store.create("failed", DIGEST, IMAGE)), tag="contract/app:v1"
        )
    assert store.stat("failed") is None
    assert list(store.entries()) == [] and list(store.uploads()) == []
    assert backend.leftovers() == []


def test_an_abandoned_write_is_listed_and_cleared(backend: Backend) -> None:
    """A build that died mid-write neither commits nor aborts its sink."""
    store = backend.store
    _fill(store.create("dead", DIGEST, IMAGE), 100_000, seed=5)
    assert store.stat("dead") is None and list(store.entries()) == []
    (upload,) = store.uploads()
    assert upload.key == "dead" and upload.started > 0
    store.abort_upload(upload)  # the janitor's way
    assert list(store.uploads()) == [] and backend.leftovers() == []
    store.abort_upload(upload)  # gone already: not an error

    _fill(store.create("dead", DIGEST, IMAGE), 100_000, seed=6)  # died again
    sink = store.create("dead", DIGEST, IMAGE)  # the next build of the key clears it
    assert _keys(store.uploads()) == ["dead"], "the dead build's upload was not cleared"
    data = _fill(sink, 70_000, seed=7)
    assert sink.commit().sha256 == sha256_hex(data)
    assert list(store.uploads()) == []
    assert _download(store.locate("dead")).body == data


@pytest.mark.parametrize(("key", "other"), [("app-v2", "app"), ("app.tar.v2", "app")])
def test_concurrent_uploads_of_two_keys_keep_apart(backend: Backend, key: str, other: str) -> None:
    """An upload is listed under its own key (any key `check_key` allows), so the build
    of another key never clears it: both commit."""
    store = backend.store
    first = store.create(key, DIGEST, IMAGE)
    first_data = _fill(first, 30_000, seed=8)
    assert _keys(store.uploads()) == [key]
    second = store.create(other, DIGEST, IMAGE)  # clears what a dead build of `other` left
    second_data = _fill(second, 20_000, seed=9)
    assert _keys(store.uploads()) == sorted([key, other])
    assert first.commit().sha256 == sha256_hex(first_data)
    assert second.commit().sha256 == sha256_hex(second_data)
    assert _keys(store.entries()) == sorted([key, other])
    assert list(store.uploads()) == []


def test_a_commit_cut_short_is_no_artifact_and_is_built_again(backend: Backend) -> None:
    store = backend.store
    backend.cut_short("cut")
    assert store.stat("cut") is None, "half of a commit counts as an artifact"
    data = _commit(store, "cut", 60_000, seed=60)
    artifact = store.stat("cut")
    assert artifact is not None and (artifact.size, artifact.sha256) == (60_000, sha256_hex(data))
    assert _download(store.locate("cut")).body == data


def test_listings_show_artifacts_and_unfinished_uploads(backend: Backend) -> None:
    store = backend.store
    sizes = {"a-1": 10_000, "b_2": 20_000, "c.3": 30_000}
    for n, (key, size) in enumerate(sizes.items()):
        _commit(store, key, size, seed=10 + n)
    store.delete("b_2")
    _fill(store.create("unfinished", DIGEST, IMAGE), 5_000, seed=20)
    backend.litter()
    entries = {entry.key: entry.size for entry in store.entries()}
    assert entries == {"a-1": 10_000, "c.3": 30_000}
    assert _keys(store.uploads()) == ["unfinished"]
    for upload in store.uploads():
        store.abort_upload(upload)
    assert list(store.uploads()) == []


def test_locations_serve_the_artifact(backend: Backend) -> None:
    store = backend.store
    data = _commit(store, "served", 123_457, seed=30)
    got = _download(store.locate("served", filename="team_app_v1.tar"))
    assert (got.status, got.size, got.filename) == (200, len(data), "team_app_v1.tar")
    assert got.body == data
    head = _download(store.locate("served", "HEAD"), "HEAD")
    assert (head.status, head.size, head.body) == (200, len(data), b"")
    assert _download(store.locate("served")).body == data  # without a filename too


def test_delete_removes_only_that_artifact(backend: Backend) -> None:
    store = backend.store
    kept = _commit(store, "kept", seed=40)
    _commit(store, "deleted", seed=41)
    store.delete("deleted")
    assert store.stat("deleted") is None
    assert _download(store.locate("deleted")).status == 404
    assert _keys(store.entries()) == ["kept"]
    store.delete("deleted")  # twice: not an error
    assert store.stat("kept") is not None and _download(store.locate("kept")).body == kept
    store.delete("kept")
    assert backend.leftovers() == []


def test_a_statement_is_kept_beside_its_archive_and_deleted_with_it(backend: Backend) -> None:
    """The provenance statement a build writes before its archive's commit: read back as
    written, replaced by the next build's, never listed as an artifact of its own, and
    gone with its archive (the janitor deletes by key)."""
    store = backend.store
    assert store.read_statement("attested") is None
    store.write_statement("attested", b'{"first":1}')
    store.write_statement("attested", b'{"built":"again"}')
    _commit(store, "attested", seed=50)
    _commit(store, "plain", seed=51)
    assert store.read_statement("attested") == b'{"built":"again"}'
    assert store.read_statement("plain") is None
    assert _keys(store.entries()) == ["attested", "plain"]
    assert [name for name in backend.leftovers() if "intoto" in name], "no statement stored"
    store.delete("attested")
    assert store.read_statement("attested") is None
    assert not [name for name in backend.leftovers() if "attested" in name]
    store.delete("plain")
    assert backend.leftovers() == []


def test_missing_keys(backend: Backend) -> None:
    store = backend.store
    assert store.stat("never-stored") is None
    store.delete("never-stored")
    assert _download(store.locate("never-stored")).status == 404
    assert _download(store.locate("never-stored", "HEAD"), "HEAD").status == 404
    # what the registry front reads of an archive its record names: Gone, not a failure
    # to reach the store
    with pytest.raises(Gone, match="never-stored is no longer in"):
        store.read("never-stored", 0, 100)
    with pytest.raises(Gone, match="never-stored is no longer in"):
        store.locate_member("never-stored", Member("sha256:" + "7" * 64, 0, 10))
    assert list(store.entries()) == [] and backend.leftovers() == []


@pytest.mark.parametrize("key", ["../escape", "a/b", ".hidden", ""])
def test_keys_that_are_not_plain_are_refused(backend: Backend, key: str) -> None:
    store = backend.store
    for call in (
        lambda: store.create(key, DIGEST, IMAGE),
        lambda: store.stat(key),
        lambda: store.delete(key),
        lambda: store.locate(key),
        lambda: store.write_statement(key, b"{}"),
        lambda: store.read_statement(key),
    ):
        with pytest.raises(ValueError, match="artifact key"):
            call()
    assert backend.leftovers() == []


def _outage(
    backend: Backend, what: str, call: Callable[[], object], *, must_fail: bool = True
) -> None:
    """`call` while the backend is down raises one of the store's `errors` (a read may
    also answer, with `must_fail=False`), and `retryable` judges it as the store says."""
    store = backend.store
    try:
        call()
    except store.errors as exc:
        assert store.retryable(exc) is backend.outage_passes, f"{what}: {exc!r}"
        return
    except Exception as exc:
        pytest.fail(f"{what} raised {type(exc).__name__}: {exc}, not one of {store.errors}")
    assert not must_fail, f"{what} succeeded while the backend was down"


def test_errors_are_what_the_store_raises_when_its_backend_is_down(fragile: Backend) -> None:
    store = fragile.store
    _commit(store, "before", seed=50)
    during = store.create("during", DIGEST, IMAGE)
    _fill(during, 40_000, seed=51)
    fragile.down()
    try:
        _outage(fragile, "ping", store.ping)
        _outage(fragile, "commit of a sink begun before", during.commit)
        _outage(fragile, "create and commit", lambda: _commit(store, "new", seed=52))
        # the janitor must not believe it freed space
        _outage(fragile, "delete", lambda: store.delete("before"))
        # a read may answer instead (a local directory that is gone holds nothing)
        _outage(fragile, "stat", lambda: store.stat("before"), must_fail=False)
        _outage(fragile, "entries", lambda: list(store.entries()), must_fail=False)
        _outage(fragile, "uploads", lambda: list(store.uploads()), must_fail=False)
        _outage(fragile, "locate", lambda: store.locate("before"), must_fail=False)
    finally:
        fragile.up()
    store.ping()  # the same store object: nothing to reopen
    for upload in store.uploads():  # what the outage left unfinished is cleared
        store.abort_upload(upload)
    assert list(store.uploads()) == []
    data = _commit(store, "after", seed=53)
    artifact = store.stat("after")
    assert artifact is not None and artifact.sha256 == sha256_hex(data)


def test_retryable_passes_no_refusal_and_no_foreign_error(backend: Backend) -> None:
    store = backend.store
    with pytest.raises(store.errors) as caught:
        backend.refusal()
    assert store.retryable(caught.value) is False, f"a refusal would be retried: {caught.value!r}"
    foreign = [
        ValueError("artifact key '..' must be letters"),
        DigestMismatch("image x, layer 1/1: digest mismatch"),
        KeyError("x"),
        RuntimeError("a bug"),
    ]
    for exc in foreign:
        assert store.retryable(exc) is False, f"the store claims {exc!r}"
    assert list(store.uploads()) == [], "the refused write left an upload"
