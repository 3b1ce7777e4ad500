"""The test machinery itself: Redis and moto's S3 server behave as the export-service
tests assume. These tests use redis-py, boto3 and plain urllib, never squashd, so a
failure here is the harness's (or the server's), never the service's.

They also pin down what moto supports of the S3 upload the service does: a multipart
upload whose parts 2..N are streamed first and part 1 (the archive's start, >= 5 MiB)
is uploaded last; presigned downloads; tags and metadata on the artifact.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING

import pytest
import redis
from botocore.exceptions import ClientError

from testbed.process import HOST, http_get
from testbed.service import SYSTEM_REDIS_PORT, MotoS3, RedisServer

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, TagTypeDef

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
#: S3's smallest part but the last, which moto enforces too.
MIN_PART = 5 * MiB


def _error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return excinfo.value.response["Error"]["Code"]


def _refused(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


# ---------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------


def test_redis_answers_on_its_own_port(redis_db: RedisServer) -> None:
    assert redis_db.port != SYSTEM_REDIS_PORT
    assert redis_db.url == f"redis://127.0.0.1:{redis_db.port}/0"
    client = redis_db.client()
    assert client.ping() is True
    assert client.dbsize() == 0  # redis_db starts every test empty
    assert client.set("squashd:key", b"value") is True
    assert client.get("squashd:key") == b"value"
    # the configuration the harness asked for: loopback only, nothing written to disk
    assert client.config_get("port") == {"port": str(redis_db.port)}
    assert client.config_get("bind") == {"bind": "127.0.0.1"}
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("appendonly") == {"appendonly": "no"}
    assert client.config_get("dir")["dir"] == str(redis_db.root / "data")
    assert redis_db.env() == {
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{redis_db.port}/0",
        "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{redis_db.port}/1",
    }


def test_redis_flush_empties_every_database(redis_db: RedisServer) -> None:
    broker, results = redis_db.client(0), redis_db.client(1)
    broker.set("a", 1)
    results.set("b", 2)
    redis_db.flush()
    assert broker.dbsize() == 0
    assert results.dbsize() == 0


def test_redis_stop_and_start_again_on_the_same_port(redis_db: RedisServer) -> None:
    client = redis_db.client()
    client.set("before", b"1")
    port, url = redis_db.port, redis_db.url

    redis_db.stop()
    assert not redis_db.running
    assert _refused(port)
    with pytest.raises(redis.ConnectionError):
        client.ping()  # what /readyz of a service sees while Redis is down

    redis_db.start()
    assert (redis_db.port, redis_db.url) == (port, url)
    # the very same client object reconnects, with no restart of its process
    assert client.ping() is True
    assert client.get("before") is None  # nothing persisted: an empty Redis came back
    client.set("after", b"2")
    assert client.get("after") == b"2"


def test_redis_kill_is_a_crash_and_start_recovers(redis_db: RedisServer) -> None:
    client = redis_db.client()
    port = redis_db.port
    redis_db.kill()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    redis_db.start()
    assert redis_db.port == port
    assert client.ping() is True


def test_redis_is_started_again_for_the_next_test(redis_db: RedisServer) -> None:
    # the tests above stopped and killed it; the fixture brought it back, same port
    assert redis_db.running
    assert redis_db.command("PING") == b"+PONG"


# ---------------------------------------------------------------------------------------
# S3: objects
# ---------------------------------------------------------------------------------------


def test_moto_put_and_get(moto_s3: MotoS3, bucket: str) -> None:
    s3 = moto_s3.client()
    data = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="a/b.tar", Body=data)
    got = s3.get_object(Bucket=bucket, Key="a/b.tar")
    assert got["Body"].read() == data
    assert got["ContentLength"] == len(data)
    assert got["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    ranged = s3.get_object(Bucket=bucket, Key="a/b.tar", Range="bytes=10-19")
    assert ranged["Body"].read() == data[10:20]
    assert ranged["ContentRange"] == f"bytes 10-19/{len(data)}"
    assert moto_s3.keys(bucket) == ["a/b.tar"]
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=bucket, Key="missing")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_moto_conditional_put_refuses_to_overwrite(moto_s3: MotoS3, bucket: str) -> None:
    s3 = moto_s3.client()
    s3.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="k", Body=b"second", IfNoneMatch="*")
    assert _error_code(err) == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"


# ---------------------------------------------------------------------------------------
# S3: multipart uploads
# ---------------------------------------------------------------------------------------


def test_moto_multipart_upload_with_part_one_last(moto_s3: MotoS3, bucket: str) -> None:
    """The service's upload: parts 2..N stream first, part 1 (>= 5 MiB) goes last."""
    s3 = moto_s3.client()
    key = "artifacts/out.tar"
    part1 = os.urandom(MIN_PART)  # exactly the minimum is enough
    part2 = os.urandom(MIN_PART + 123)
    part3 = b"tail: the last part may be small"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]

    etags = {}
    for number, body in ((2, part2), (3, part3), (1, part1)):
        answer = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        etags[number] = answer["ETag"]
        assert answer["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'

    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [
        (1, len(part1)),
        (2, len(part2)),
        (3, len(part3)),
    ]
    assert [u["UploadId"] for u in moto_s3.uploads(bucket)] == [upload_id]
    assert moto_s3.keys(bucket) == []  # nothing visible before completion

    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in (1, 2, 3)]},
    )
    assert done["ETag"].endswith('-3"')
    whole = part1 + part2 + part3
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(whole)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == whole
    assert moto_s3.uploads(bucket) == []
    assert moto_s3.keys(bucket) == [key]


def test_moto_enforces_the_minimum_part_size(moto_s3: MotoS3, bucket: str) -> None:
    s3 = moto_s3.client()
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    parts: list[CompletedPartTypeDef] = []
    for number, body in ((2, b"small tail"), (1, os.urandom(MIN_PART - 1))):
        etag = s3.upload_part(
            Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=number, Body=body
        )["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    parts.sort(key=lambda p: p["PartNumber"])
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    assert _error_code(err) == "EntityTooSmall"
    # a failed completion leaves the upload in place, and no object
    assert [u["UploadId"] for u in moto_s3.uploads(bucket)] == [upload_id]
    assert moto_s3.keys(bucket) == []

    # a single small part is a whole object (the last part has no minimum)
    single = s3.create_multipart_upload(Bucket=bucket, Key="one")["UploadId"]
    uploaded = s3.upload_part(Bucket=bucket, Key="one", UploadId=single, PartNumber=1, Body=b"x")
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="one",
        UploadId=single,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": uploaded["ETag"]}]},
    )
    assert s3.get_object(Bucket=bucket, Key="one")["Body"].read() == b"x"


def test_moto_rejects_a_wrong_part_etag(moto_s3: MotoS3, bucket: str) -> None:
    s3 = moto_s3.client()
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"abc")
    wrong: CompletedPartTypeDef = {"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": [wrong]}
        )
    assert _error_code(err) == "InvalidPart"


def test_moto_part_list_order_is_the_callers_job(moto_s3: MotoS3, bucket: str) -> None:
    """S3 answers InvalidPartOrder to a part list that is not ascending; moto (5.x)
    accepts it and joins the parts in the listed order. Either way, the service must
    sort its parts by number before CompleteMultipartUpload: moto will not catch it."""
    s3 = moto_s3.client()
    a, b = b"A" * MIN_PART, b"B" * MIN_PART
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=a)
    e2 = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=2, Body=b)
    unsorted: list[CompletedPartTypeDef] = [
        {"PartNumber": 2, "ETag": e2["ETag"]},
        {"PartNumber": 1, "ETag": e1["ETag"]},
    ]
    try:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": unsorted}
        )
    except ClientError as e:
        assert e.response["Error"]["Code"] == "InvalidPartOrder"
    else:
        head = s3.get_object(Bucket=bucket, Key="k", Range="bytes=0-3")["Body"].read()
        assert head == b"BBBB"  # part 2 first: the listed order, not the part numbers


def test_moto_lists_and_aborts_multipart_uploads(moto_s3: MotoS3, bucket: str) -> None:
    s3 = moto_s3.client()
    first = s3.create_multipart_upload(Bucket=bucket, Key="a")["UploadId"]
    second = s3.create_multipart_upload(Bucket=bucket, Key="b")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="a", UploadId=first, PartNumber=2, Body=b"part two")
    listed = {(u["Key"], u["UploadId"]) for u in moto_s3.uploads(bucket)}
    assert listed == {("a", first), ("b", second)}
    assert all("Initiated" in u for u in moto_s3.uploads(bucket))  # (a fixed date in moto)

    s3.abort_multipart_upload(Bucket=bucket, Key="a", UploadId=first)
    assert [(u["Key"], u["UploadId"]) for u in moto_s3.uploads(bucket)] == [("b", second)]
    with pytest.raises(ClientError) as err:
        s3.list_parts(Bucket=bucket, Key="a", UploadId=first)
    assert _error_code(err) == "NoSuchUpload"
    with pytest.raises(ClientError) as err:  # aborting twice is an error, not a no-op
        s3.abort_multipart_upload(Bucket=bucket, Key="a", UploadId=first)
    assert _error_code(err) == "NoSuchUpload"
    assert moto_s3.keys(bucket) == []


def test_moto_conditional_completion_refuses_to_overwrite(moto_s3: MotoS3, bucket: str) -> None:
    """`If-None-Match: *` on completion: a second build of the same artifact cannot
    replace the first one; its upload stays, to be aborted."""
    s3 = moto_s3.client()
    s3.put_object(Bucket=bucket, Key="artifact", Body=b"built first")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="artifact")["UploadId"]
    etag = s3.upload_part(
        Bucket=bucket, Key="artifact", UploadId=upload_id, PartNumber=1, Body=b"built again"
    )["ETag"]
    with pytest.raises(ClientError) as err:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="artifact",
            UploadId=upload_id,
            IfNoneMatch="*",
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
        )
    assert _error_code(err) == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key="artifact")["Body"].read() == b"built first"
    assert [u["UploadId"] for u in moto_s3.uploads(bucket)] == [upload_id]


# ---------------------------------------------------------------------------------------
# S3: presigned URLs, tags, metadata
# ---------------------------------------------------------------------------------------


def test_moto_presigned_get_with_plain_urllib(moto_s3: MotoS3, bucket: str) -> None:
    s3 = moto_s3.client()
    data = os.urandom(70_000)
    s3.put_object(Bucket=bucket, Key="dir/image.tar", Body=data)
    url = s3.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": bucket,
            "Key": "dir/image.tar",
            "ResponseContentDisposition": 'attachment; filename="image.tar"',
        },
        ExpiresIn=120,
    )
    parts = urllib.parse.urlsplit(url)
    # path style on the endpoint itself: the URL a client is redirected to
    assert f"{parts.scheme}://{parts.netloc}" == moto_s3.endpoint_url
    assert parts.path == f"/{bucket}/dir/image.tar"
    query = urllib.parse.parse_qs(parts.query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["120"]

    with urllib.request.urlopen(url, timeout=10) as resp:  # no credentials, no boto3
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(data))
        assert resp.headers["Content-Disposition"] == 'attachment; filename="image.tar"'
        assert resp.read() == data

    head_url = s3.generate_presigned_url(
        "head_object", Params={"Bucket": bucket, "Key": "dir/image.tar"}, ExpiresIn=60
    )
    status, headers, body = http_get(head_url, method="HEAD")
    assert (status, headers["content-length"], body) == (200, str(len(data)), b"")

    missing = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "nope"}, ExpiresIn=60
    )
    status, _, body = http_get(missing)
    assert status == 404 and b"NoSuchKey" in body


def test_moto_default_presigning_is_sigv2(moto_s3: MotoS3, bucket: str) -> None:
    """boto3's S3 client without `signature_version` presigns with SigV2 in regions
    that still list it (us-east-1, eu-west-1, ...: botocore's
    `_default_s3_presign_to_sigv2`, on AWS too): the service must ask for s3v4, as
    `MotoS3.client()` does."""
    import boto3

    env = moto_s3.env()
    plain = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    url = plain.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60
    )
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert set(query) == {"AWSAccessKeyId", "Signature", "Expires"}, url


def test_moto_tags_and_metadata_round_trip(moto_s3: MotoS3, bucket: str) -> None:
    s3 = moto_s3.client()
    digest = hashlib.sha256(b"archive").hexdigest()
    metadata = {"Squashd-Size": "7", "squashd-sha256": digest, "source": "sha256:" + "ab" * 32}
    s3.put_object(
        Bucket=bucket,
        Key="art",
        Body=b"archive",
        Metadata=metadata,
        Tagging="squashd=artifact&format=1",
        ContentType="application/x-tar",
    )
    head = s3.head_object(Bucket=bucket, Key="art")
    assert head["Metadata"] == {k.lower(): v for k, v in metadata.items()}  # keys lower-cased
    assert head["ContentType"] == "application/x-tar"
    tags = s3.get_object_tagging(Bucket=bucket, Key="art")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"squashd": "artifact", "format": "1"}

    # tags can change after the object exists (metadata cannot: only by a copy)
    s3.put_object_tagging(
        Bucket=bucket, Key="art", Tagging={"TagSet": [{"Key": "sha256", "Value": digest}]}
    )
    tags = s3.get_object_tagging(Bucket=bucket, Key="art")["TagSet"]
    assert tags == [{"Key": "sha256", "Value": digest}]
    s3.copy_object(
        Bucket=bucket,
        Key="art",
        CopySource={"Bucket": bucket, "Key": "art"},
        Metadata={"squashd-sha256": digest, "squashd-size": "7"},
        MetadataDirective="REPLACE",
    )
    assert s3.head_object(Bucket=bucket, Key="art")["Metadata"] == {
        "squashd-sha256": digest,
        "squashd-size": "7",
    }


def test_moto_multipart_keeps_tags_and_metadata(moto_s3: MotoS3, bucket: str) -> None:
    """Metadata and tags given at CreateMultipartUpload are on the completed object;
    tags added after completion too (the size and sha256 are known only then)."""
    s3 = moto_s3.client()
    upload_id = s3.create_multipart_upload(
        Bucket=bucket,
        Key="art",
        Metadata={"squashd-source": "sha256:" + "cd" * 32},
        Tagging="squashd=artifact",
    )["UploadId"]
    etag = s3.upload_part(
        Bucket=bucket, Key="art", UploadId=upload_id, PartNumber=1, Body=b"bytes"
    )["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="art",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    assert s3.head_object(Bucket=bucket, Key="art")["Metadata"] == {
        "squashd-source": "sha256:" + "cd" * 32
    }
    tags = s3.get_object_tagging(Bucket=bucket, Key="art")["TagSet"]
    assert tags == [{"Key": "squashd", "Value": "artifact"}]
    tagset: list[TagTypeDef] = [*tags, {"Key": "size", "Value": "5"}]
    s3.put_object_tagging(Bucket=bucket, Key="art", Tagging={"TagSet": tagset})
    tags = s3.get_object_tagging(Bucket=bucket, Key="art")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"squashd": "artifact", "size": "5"}


def test_moto_enforces_the_tag_limits(moto_s3: MotoS3, bucket: str) -> None:
    s3 = moto_s3.client()
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")

    def tag(tagset: list[TagTypeDef]) -> None:
        s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": tagset})

    tag([{"Key": f"k{i}", "Value": "v"} for i in range(10)])  # ten: fine
    tag([{"Key": "k" * 128, "Value": "v" * 256}])  # the longest key and value: fine
    too_many: list[list[TagTypeDef]] = [
        [{"Key": f"k{i}", "Value": "v"} for i in range(11)],
        [{"Key": "k" * 129, "Value": "v"}],
        [{"Key": "k", "Value": "v" * 257}],
    ]
    for too_much in too_many:
        with pytest.raises(ClientError) as err:
            tag(too_much)
        assert _error_code(err) in ("BadRequest", "InvalidTag")


# ---------------------------------------------------------------------------------------
# S3: the environment of a service process, reset, restart
# ---------------------------------------------------------------------------------------


def test_moto_env_is_enough_for_a_service_process(moto_s3: MotoS3, bucket: str) -> None:
    """A separate process with nothing but `env()` (boto3's own variables, no
    endpoint in code) reaches this S3."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(moto_s3.env())
    code = (
        "import boto3, sys\n"
        "s3 = boto3.client('s3')\n"
        "s3.put_object(Bucket=sys.argv[1], Key='from-child', Body=b'hello')\n"
        "print(s3.meta.endpoint_url)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, bucket],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == moto_s3.endpoint_url
    got = moto_s3.client().get_object(Bucket=bucket, Key="from-child")["Body"].read()
    assert got == b"hello"


def test_moto_reset_forgets_everything(moto_s3: MotoS3) -> None:
    s3 = moto_s3.client()
    name = moto_s3.create_bucket("squashd-reset-test")
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    s3.create_multipart_upload(Bucket=name, Key="u")
    moto_s3.reset()
    assert s3.list_buckets()["Buckets"] == []


def test_moto_stop_and_start_again_on_the_same_port(tmp_path) -> None:
    """A server of its own (not the session's): stopped, S3 is unreachable; started
    again, same endpoint, no buckets. Also: a lower minimum part size."""
    server = MotoS3(tmp_path / "moto", min_part_size=1024).start()
    try:
        s3 = server.client(connect_timeout=2, retries={"max_attempts": 1})
        endpoint = server.endpoint_url
        server.create_bucket("before-stop")
        # with min_part_size=1024, a 1 KiB first part is enough
        upload_id = s3.create_multipart_upload(Bucket="before-stop", Key="k")["UploadId"]
        parts: list[CompletedPartTypeDef] = []
        for number, body in ((2, b"two"), (1, b"1" * 1024)):
            etag = s3.upload_part(
                Bucket="before-stop", Key="k", UploadId=upload_id, PartNumber=number, Body=body
            )["ETag"]
            parts.insert(0, {"PartNumber": number, "ETag": etag})
        s3.complete_multipart_upload(
            Bucket="before-stop", Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        assert server.keys("before-stop") == ["k"]

        server.stop()
        assert _refused(server.port)
        server.start()
        assert server.endpoint_url == endpoint
        assert s3.list_buckets()["Buckets"] == []  # moto keeps nothing across a restart
    finally:
        server.stop()
