"""Artifact stores against moto's S3 server and a local directory."""

import hashlib
import io
import os
import tarfile
import threading
import time
import urllib.request
from typing import TYPE_CHECKING, cast

import pytest

from squash.export import export_image
from squash.outputs.docker_archive import DockerArchive
from squash.sources import open_image
from storage.base import Member, check_key
from storage.local import LocalStore
from storage.s3 import FIRST_PART, IN_FLIGHT, PART, S3Store
from tests.integration.helpers import image_manifest, write_index
from tests.layertar import layer, member

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration


def _write_with_patch(sink, size: int) -> bytes:
    """Write `size` bytes through a sink the way the archive writer does: reserve a block
    near the start, stream the rest, patch the block last. Returns the final bytes."""
    head = os.urandom(1024)
    sink.write(head)
    token = sink.reserve(512)
    body = os.urandom(size - len(head) - 512)
    for start in range(0, len(body), 700_000):  # odd-sized writes, as the merger makes
        sink.write(body[start : start + 700_000])
    patch = b"P" * 512
    sink.patch(token, patch)
    return head + patch + body


@pytest.mark.parametrize("size", [4096, FIRST_PART + 3 * PART + 12345])
def test_s3_upload_is_exact_and_atomic(moto_s3, bucket, size: int) -> None:
    store = S3Store(bucket, "artifacts", moto_s3.client())
    sink = store.create("abc", "sha256:" + "1" * 64)
    expected = _write_with_patch(sink, size)
    assert moto_s3.keys(bucket) == []  # nothing visible before the commit
    artifact = sink.commit()
    body = moto_s3.client().get_object(Bucket=bucket, Key="artifacts/abc.tar")["Body"].read()
    assert body == expected
    assert artifact.size == size and artifact.sha256 == hashlib.sha256(expected).hexdigest()
    assert store.stat("abc") == artifact
    assert moto_s3.uploads(bucket) == []


def test_s3_abort_leaves_nothing(moto_s3, bucket) -> None:
    store = S3Store(bucket, "", moto_s3.client())
    sink = store.create("gone", "sha256:" + "2" * 64)
    _write_with_patch(sink, FIRST_PART + 2 * PART)
    sink.abort()
    assert moto_s3.keys(bucket) == [] and moto_s3.uploads(bucket) == []
    assert store.stat("gone") is None


def test_s3_presigned_url_downloads_the_artifact(moto_s3, bucket) -> None:
    store = S3Store(bucket, "p", moto_s3.client(), url_lifetime=60)
    sink = store.create("dl", "sha256:" + "3" * 64)
    expected = _write_with_patch(sink, 100_000)
    sink.commit()
    url = store.locate("dl", filename="app_v1.tar").url
    assert url is not None and "X-Amz-Expires=60" in url
    with urllib.request.urlopen(url) as response:
        assert response.read() == expected
        assert response.headers["Content-Disposition"] == 'attachment; filename="app_v1.tar"'
    head = store.locate("dl", "HEAD").url
    assert head is not None
    with urllib.request.urlopen(urllib.request.Request(head, method="HEAD")) as response:
        assert int(response.headers["Content-Length"]) == len(expected)
    store.delete("dl")
    assert store.stat("dl") is None


def test_local_store_commit_stat_delete(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    sink = store.create("k1", "sha256:" + "4" * 64)
    expected = _write_with_patch(sink, 300_000)
    assert store.stat("k1") is None
    assert all(p.name.startswith(".") for p in store.root.iterdir())  # only the temporary
    artifact = sink.commit()
    assert store.path("k1").read_bytes() == expected
    assert artifact.sha256 == hashlib.sha256(expected).hexdigest()
    assert store.stat("k1") == artifact
    store.delete("k1")
    assert store.stat("k1") is None and list(store.root.iterdir()) == []


def test_local_store_abort_leaves_nothing(tmp_path) -> None:
    store = LocalStore(tmp_path)
    sink = store.create("k2", "sha256:" + "5" * 64)
    _write_with_patch(sink, 10_000)
    sink.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["", "../x", "a/b", ".hidden", "x" * 201])
def test_keys_stay_plain(key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)


def test_export_straight_into_s3(moto_s3, bucket, tmp_path) -> None:
    """The engine writes through an S3 sink: the object is a loadable archive."""
    layout = tmp_path / "layout"
    base = layer(member("etc", "dir"), member("etc/big", data=os.urandom(12 << 20)))
    top = layer(member("etc", "dir"), member("etc/x", data=b"x"))
    _, _, desc = image_manifest(layout, [base, top], compression="gzip")
    write_index(layout, {"v1": desc})
    store = S3Store(bucket, "", moto_s3.client())
    image = open_image(f"oci:{layout}:v1")
    export_image(
        image, DockerArchive(store.create("img", image.manifest_digest)), compression="gzip"
    )
    body = moto_s3.client().get_object(Bucket=bucket, Key="img.tar")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert "manifest.json" in tar.getnames()
    stored = store.stat("img")
    assert stored is not None
    assert stored.sha256 == hashlib.sha256(body).hexdigest()


class _Watched:
    """An S3 client that records the order of uploaded parts and how many were in flight."""

    def __init__(self, client) -> None:
        self._client, self.most_at_once = client, 0
        self.parts: list[int] = []
        self._now, self._lock = 0, threading.Lock()

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def upload_part(self, **kwargs):
        with self._lock:
            self._now += 1
            self.most_at_once = max(self.most_at_once, self._now)
        try:
            time.sleep(0.05)  # long enough for overlapping uploads to show
            return self._client.upload_part(**kwargs)
        finally:
            with self._lock:
                self._now -= 1
                self.parts.append(kwargs["PartNumber"])


def test_s3_first_part_goes_last_and_parts_in_flight_are_bounded(moto_s3, bucket) -> None:
    client = _Watched(moto_s3.client())
    # A stand-in for the client: every call but upload_part goes to the real one.
    sink = S3Store(bucket, "", cast("S3Client", client)).create("order", "sha256:" + "6" * 64)
    expected = _write_with_patch(sink, FIRST_PART + 6 * PART + 1)
    sink.commit()
    assert client.parts[-1] == 1 and sorted(client.parts) == list(range(1, 9))
    assert client.most_at_once <= IN_FLIGHT
    body = moto_s3.client().get_object(Bucket=bucket, Key="order.tar")["Body"].read()
    assert body == expected


def test_s3_presigned_urls_are_reused_for_a_fifth_of_their_lifetime(moto_s3, bucket) -> None:
    store = S3Store(bucket, "", moto_s3.client(), url_lifetime=5)
    first = store.locate("k", filename="a.tar").url
    assert store.locate("k", filename="a.tar").url == first
    assert store.locate("k", "HEAD").url != first  # a HEAD URL is signed for HEAD
    time.sleep(1.1)  # a fifth of 5 s
    assert store.locate("k", filename="a.tar").url != first


def test_s3_members_are_copied_out_server_side_and_go_with_their_archive(
    moto_s3, bucket, monkeypatch
) -> None:
    """A member (a layer) of an archive becomes an object of its own, copied by S3 in
    parts (none uploaded by us); it is not listed as an artifact, an abandoned copy is
    reported as its archive's upload, and deleting the archive deletes it too (a build
    of it again copies it out again)."""
    import storage.s3

    monkeypatch.setattr(storage.s3, "COPY_PART", 5 << 20)  # S3's smallest part
    client = moto_s3.client()
    store = S3Store(bucket, "p", client, url_lifetime=60)
    sink = store.create("arch", "sha256:" + "4" * 64)
    data = _write_with_patch(sink, (12 << 20) + 4321)
    sink.commit()
    member = Member("sha256:" + "5" * 64, 777, (11 << 20) + 3)  # three copy parts
    url = store.locate_member("arch", member).url
    assert url is not None
    with urllib.request.urlopen(url) as response:
        assert response.read() == data[member.offset : member.offset + member.size]
    assert sorted(moto_s3.keys(bucket)) == ["p/arch.blobs/" + "5" * 64, "p/arch.tar"]
    assert [entry.key for entry in store.entries()] == ["arch"]
    abandoned = client.create_multipart_upload(Bucket=bucket, Key="p/arch.blobs/" + "6" * 64)
    assert [upload.key for upload in store.uploads()] == ["arch"]
    client.abort_multipart_upload(
        Bucket=bucket, Key="p/arch.blobs/" + "6" * 64, UploadId=abandoned["UploadId"]
    )
    store.delete("arch")
    assert moto_s3.keys(bucket) == []
    # evicted and built again: the member is copied out again, not its old URL handed out
    sink = store.create("arch", "sha256:" + "4" * 64)
    sink.write(data)
    sink.commit()
    url = store.locate_member("arch", member).url
    assert url is not None
    with urllib.request.urlopen(url) as response:
        assert response.read() == data[member.offset : member.offset + member.size]
