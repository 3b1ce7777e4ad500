"""Artifacts in S3, uploaded in one streaming pass with exact sizes.

The archive goes up as a multipart upload whose parts may arrive in any order: parts
2..N stream as the archive is written, while part 1 (the archive's start, holding the
layer's tar header that is patched last) waits in memory and goes up last. Completing
the upload is atomic, so a half-built artifact is never visible; any failure aborts it.

S3 metadata is fixed when an upload starts, but the archive's sha256 is known only at
the end, and only over the final bytes (part 1 changes last, and sha256 cannot be
prepended). So the bytes are also kept in a local temporary file, hashed at commit and
recorded as a tag; `stat` counts an object as an artifact only once it has that tag.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
)

from squash.oci import IN_TOTO
from squash.streams import Chunk
from storage.base import (
    Artifact,
    Entry,
    Gone,
    Location,
    Member,
    Upload,
    check_key,
    now,
    sha256_of,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

FIRST_PART = 8 << 20  # at least S3's 5 MiB minimum for all parts but the last
PART = 8 << 20
IN_FLIGHT = 2  # parts being uploaded at once (memory: FIRST_PART + (IN_FLIGHT + 1) * PART)
_SUFFIX = ".tar"
_MEMBERS = ".blobs/"  # KEY.blobs/HEX: a blob of archive KEY copied out as an object of its own
_STATEMENT = ".intoto.json"  # KEY.intoto.json: the provenance statement of archive KEY
COPY_PART = 1 << 30  # a member is copied in parts of this size (S3 allows 5 MiB to 5 GiB)
_SIGNED_URLS = 4096  # presigned URLs kept for reuse
_TRANSIENT_CODES = ("SlowDown", "InternalError", "RequestTimeout", "ServiceUnavailable")
_PERMANENT = (NoCredentialsError, ParamValidationError)  # BotoCoreErrors that never pass
log = logging.getLogger(__name__)


def _client() -> S3Client:
    import boto3
    from botocore.config import Config

    # SigV4 explicitly: botocore presigns with SigV2 in some regions otherwise. Short
    # connect timeouts and few retries: a dead S3 is reported, not waited out.
    config = Config(
        signature_version="s3v4",
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
    )
    return boto3.client("s3", config=config)


class S3Sink:
    """A sink that is a multipart upload; see the module's docstring."""

    def __init__(self, store: S3Store, key: str, source_digest: str, image: str) -> None:
        self._s3, self._bucket, self._key = store.client, store.bucket, store.object_key(key)
        self._artifact_key, self._source, self._created = key, source_digest, now()
        self._image = image
        metadata = {"source-digest": source_digest, "created": repr(self._created), "image": image}
        self._upload = self._s3.create_multipart_upload(
            Bucket=self._bucket, Key=self._key, ContentType="application/x-tar", Metadata=metadata
        )["UploadId"]
        self._first = bytearray()
        self._buffer = bytearray()
        self._parts: dict[int, Future[str]] = {}
        self._slots = threading.Semaphore(IN_FLIGHT)
        self._pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="s3-part")
        self._copy = tempfile.TemporaryFile()  # noqa: SIM115 - closed by commit/abort
        self._position = 0

    def write(self, data: Chunk) -> None:
        self._copy.write(data)
        self._position += len(data)
        if len(self._first) < FIRST_PART:
            room = FIRST_PART - len(self._first)
            self._first += data[:room]
            data = data[room:]
        self._buffer += data
        while len(self._buffer) >= PART:
            self._send(bytes(self._buffer[:PART]))
            del self._buffer[:PART]

    def reserve(self, size: int) -> int:
        token = self._position
        self.write(bytes(size))
        return token

    def patch(self, token: int, data: bytes) -> None:
        if token + len(data) > len(self._first):
            raise ValueError("a patch must fall in the archive's first part")
        self._first[token : token + len(data)] = data
        self._copy.flush()
        self._copy.seek(token)
        self._copy.write(data)
        self._copy.seek(0, 2)

    def _send(self, body: bytes) -> None:
        self._slots.acquire()  # bounds the parts in memory and in flight
        for future in self._parts.values():  # a failed part fails the build now, not at the end
            if future.done() and future.exception() is not None:
                self._slots.release()
                raise future.exception()  # type: ignore[misc]
        number = len(self._parts) + 2
        future = self._pool.submit(self._put, number, body)
        future.add_done_callback(lambda _: self._slots.release())
        self._parts[number] = future

    def _put(self, number: int, body: bytes) -> str:
        return self._s3.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload, PartNumber=number, Body=body
        )["ETag"]

    def commit(self) -> Artifact:
        try:
            if self._buffer:
                self._send(bytes(self._buffer))
            # The bytes are final: part 1 goes up beside the last parts, and the copy is
            # hashed meanwhile (they were one after the other, 0.2 s of a build's end).
            self._parts[1] = self._pool.submit(self._put, 1, bytes(self._first))
            with ThreadPoolExecutor(1, thread_name_prefix="s3-sha256") as hashing:
                digest = hashing.submit(sha256_of, self._copy)
                etags = {number: future.result() for number, future in self._parts.items()}
                sha256 = digest.result()
            self._s3.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload,
                MultipartUpload={
                    "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
                },
            )
        except BaseException:
            self.abort()
            raise
        self._pool.shutdown()
        self._copy.close()
        self._s3.put_object_tagging(
            Bucket=self._bucket,
            Key=self._key,
            Tagging={"TagSet": [{"Key": "sha256", "Value": sha256}]},
        )
        return Artifact(
            self._artifact_key, self._position, sha256, self._source, self._created, self._image
        )

    def abort(self) -> None:
        """Best effort: an upload left behind (S3 unreachable now) is cleared by the next
        build of the same key or by the janitor."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._copy.close()
        try:
            self._s3.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload
            )
        except Exception as exc:
            log.warning("could not abort the upload of %s: %s", self._key, exc)


class S3Store:
    errors = (BotoCoreError, ClientError)

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: S3Client | None = None,
        *,
        url_lifetime: int = 300,
    ) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = client or _client()
        self.url_lifetime = url_lifetime
        # (object key, operation, filename) -> (presigned URL, reuse until)
        self._urls: dict[tuple[str, str, str | None], tuple[str, float]] = {}

    def retryable(self, exc: BaseException) -> bool:
        """Connection trouble, throttling and S3's own 5xx pass; refusals do not."""
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return status >= 500 or status == 429 or error.get("Code") in _TRANSIENT_CODES
        return isinstance(exc, BotoCoreError) and not isinstance(exc, _PERMANENT)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def _head(self) -> str:
        """What every object key of this store starts with."""
        return f"{self.prefix}/" if self.prefix else ""

    def object_key(self, key: str) -> str:
        return f"{self._head}{check_key(key)}{_SUFFIX}"

    def member_key(self, key: str, digest: str) -> str:
        return f"{self._head}{check_key(key)}{_MEMBERS}{digest.removeprefix('sha256:')}"

    def statement_key(self, key: str) -> str:
        return f"{self._head}{check_key(key)}{_STATEMENT}"

    def _artifact_key(self, object_key: str) -> str | None:
        """The artifact key an object key names, or None for someone else's object."""
        if not object_key.startswith(self._head) or not object_key.endswith(_SUFFIX):
            return None
        key = object_key[len(self._head) : -len(_SUFFIX)]
        return key if "/" not in key else None

    def _owner(self, object_key: str) -> str | None:
        """The artifact an object (its archive, or a member copied out of it) belongs to."""
        name, sep, _ = object_key.partition(_MEMBERS)
        return self._artifact_key(name + _SUFFIX) if sep else self._artifact_key(object_key)

    def create(self, key: str, source_digest: str, image: str = "") -> S3Sink:
        for upload in self.uploads(self.object_key(key)):
            if upload.key == key:
                self.abort_upload(upload)
        return S3Sink(self, key, source_digest, image)

    def stat(self, key: str) -> Artifact | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
            tags = self.client.get_object_tagging(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        sha256 = {t["Key"]: t["Value"] for t in tags["TagSet"]}.get("sha256")
        if sha256 is None:
            return None  # completed a moment ago, not recorded yet
        metadata = head.get("Metadata", {})
        return Artifact(
            key,
            head["ContentLength"],
            sha256,
            metadata.get("source-digest", ""),
            float(metadata.get("created", "0")),
            metadata.get("image", ""),
        )

    def write_statement(self, key: str, data: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=self.statement_key(key), Body=data, ContentType=IN_TOTO
        )

    def read_statement(self, key: str) -> bytes | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.statement_key(key))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        with contextlib.closing(body["Body"]) as stream:
            return stream.read()

    def delete(self, key: str) -> None:
        """The archive, then its statement and the members copied out of it (a pull
        finds none of them once the archive is gone)."""
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        self.client.delete_object(Bucket=self.bucket, Key=self.statement_key(key))
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = self.member_key(key, "")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                self.client.delete_object(Bucket=self.bucket, Key=obj["Key"])

    def entries(self) -> Iterator[Entry]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._head):
            for obj in page.get("Contents", []):
                key = self._artifact_key(obj["Key"])
                if key is not None:
                    yield Entry(key, obj["Size"], obj["LastModified"].timestamp())

    def uploads(self, prefix: str | None = None) -> Iterator[Upload]:
        paginator = self.client.get_paginator("list_multipart_uploads")
        prefix = self._head if prefix is None else prefix
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                key = self._owner(upload["Key"])
                if key is not None:
                    ident = f"{upload['Key']}\0{upload['UploadId']}"
                    yield Upload(key, ident, upload["Initiated"].timestamp())

    def abort_upload(self, upload: Upload) -> None:
        object_key, _, upload_id = upload.ident.partition("\0")
        with contextlib.suppress(ClientError):  # gone already (NoSuchUpload)
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=object_key, UploadId=upload_id
            )

    def locate(self, key: str, method: str = "GET", filename: str | None = None) -> Location:
        """A presigned URL to download (GET) or check (HEAD) the artifact.

        Signing costs more than the rest of a cached redirect, so a URL is handed out
        again for the first fifth of its lifetime: whoever gets it has most of it left."""
        return Location(url=self._signed(self.object_key(key), method, filename))

    def _signed(self, object_key: str, method: str, filename: str | None = None) -> str:
        operation = "head_object" if method == "HEAD" else "get_object"
        cached = self._urls.get((object_key, operation, filename))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        params = {"Bucket": self.bucket, "Key": object_key}
        if filename and operation == "get_object":
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        url = self.client.generate_presigned_url(
            operation, Params=params, ExpiresIn=self.url_lifetime
        )
        if len(self._urls) >= _SIGNED_URLS:
            self._urls.clear()
        self._urls[(object_key, operation, filename)] = (
            url,
            time.monotonic() + self.url_lifetime / 5,
        )
        return url

    def read(self, key: str, offset: int, length: int) -> bytes:
        span = f"bytes={offset}-{offset + length - 1}"
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key), Range=span)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""  # from its end on
            if _missing(exc):
                raise Gone(key, self.describe()) from None
            raise
        with contextlib.closing(body["Body"]) as stream:
            return stream.read()

    def locate_member(self, key: str, member: Member, method: str = "GET") -> Location:
        """A presigned URL of the member as an object of its own: a redirect cannot
        carry a Range. It is copied out of the archive by S3 itself (UploadPartCopy)
        the first time it is asked for, so its bytes are never uploaded twice. It is
        looked for every time (one HEAD): an archive evicted and built again meanwhile
        took its members with it."""
        object_key = self.member_key(key, member.digest)
        try:
            self._copy_out(key, object_key, member)  # a HEAD when it is there already
        except ClientError as exc:  # the member is not there, and its archive neither
            if _missing(exc):
                raise Gone(key, self.describe()) from None
            raise
        return Location(url=self._signed(object_key, method))

    def _copy_out(self, key: str, object_key: str, member: Member) -> None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=object_key)
            if head["ContentLength"] == member.size:
                return
        except ClientError as exc:
            if not _missing(exc):
                raise
        source = {"Bucket": self.bucket, "Key": self.object_key(key)}
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=object_key, ContentType="application/octet-stream"
        )["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, member.size, COPY_PART), 1):
                end = min(start + COPY_PART, member.size) - 1
                copied = self.client.upload_part_copy(
                    Bucket=self.bucket, Key=object_key, UploadId=upload, PartNumber=number,
                    CopySource=source,  # type: ignore[arg-type]
                    CopySourceRange=f"bytes={member.offset + start}-{member.offset + end}",
                )  # fmt: skip
                parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=object_key, UploadId=upload,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )  # fmt: skip
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=object_key, UploadId=upload
                )
            raise

    def ping(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)


def _missing(exc: ClientError) -> bool:
    """Does S3's error say the object (or a copy's source) does not exist?"""
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")
