"""Real servers for the export service: Redis (the Celery broker and the build locks),
moto's S3 server (the artifact store), and squashd's own processes (the web endpoint,
Celery workers and beat), alone or as a deployment (`Stack`).

Everything listens on 127.0.0.1 on a free port and is stopped, with its files removed,
by whoever started it (a fixture of tests/service/fixtures.py, the bench). The machine's
own Redis on 6379 is never used: every URL here names the port the testbed chose.

- `RedisServer`: Debian's `redis-server` with no persistence (`--save "" --appendonly
  no`) and a working directory of its own. `stop()` and `start()` again keep the port,
  so a web or worker process started with `url` reconnects to the same URL when Redis
  comes back (the /readyz and 503 tests).
- `MotoS3`: moto's S3 server over HTTP (`python -m moto.server`), a separate process as
  a real S3 would be; `env()` is the boto3 environment a service process is given,
  `client()` a boto3 S3 client for the caller itself, `reset()` forgets every bucket.

What moto does and does not check (tests/service/test_harness.py shows each):

- multipart: parts may be uploaded in any order; every part but the last must be at
  least 5 MiB (`EntityTooSmall` at completion, as on S3; `min_part_size=` lowers it);
  a wrong part ETag is `InvalidPart`. Unlike S3, a CompleteMultipartUpload part list
  that is not in ascending order is accepted and joined in the listed order (S3 says
  `InvalidPartOrder`): the code under test must sort its parts itself.
- `list_multipart_uploads` reports every upload as initiated on 2010-11-10: an age
  check against `Initiated` sees every upload as ancient (a janitor test must not
  rely on it).
- presigned URLs point at the endpoint (`http://127.0.0.1:PORT/BUCKET/KEY`, path
  style); moto does not check their signature or expiry for an existing key (a
  tampered or expired URL still answers 200), so a test of the lifetime reads
  `X-Amz-Expires` from the URL. Without `signature_version="s3v4"`, boto3 presigns
  with SigV2 (`AWSAccessKeyId=..&Signature=..&Expires=..`).
- tags: at most 10 per object, keys <= 128 and values <= 256 characters (as on S3).
  User metadata: keys come back lower-cased; the 2 KB size limit of S3 is not enforced.
- `If-None-Match: *` on PutObject and CompleteMultipartUpload answers 412
  `PreconditionFailed` when the key exists (the upload stays listed).

Missing tools and packages raise `MissingTool` (`require_tool`, `require_module`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.process import HOST, ServerProcess, http_get
from testbed.tools import require_module, require_tool

if TYPE_CHECKING:
    import redis
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import MultipartUploadTypeDef

#: The port of the machine's own Redis: never ours.
SYSTEM_REDIS_PORT = 6379


# ---------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------


class RedisServer(ServerProcess):
    """`redis-server` on 127.0.0.1, a free port chosen at the first `start()` and kept
    across `stop()` / `start()`; files (log, working directory) under `root`."""

    what = "redis-server"

    def __init__(self, root: Path) -> None:
        self.binary = require_tool("redis-server")
        super().__init__(root, "redis.log")

    # -- addresses ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT/0`."""
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def env(self, db: int = 0) -> dict[str, str]:
        """The Celery variables of a service process: broker (and board) in DB `db`,
        results in the next one."""
        return {
            "CELERY_BROKER_URL": self.url_for(db),
            "CELERY_RESULT_BACKEND": self.url_for(db + 1),
        }

    # -- life -----------------------------------------------------------------------------

    def _argv(self) -> list[str]:
        assert self.port != SYSTEM_REDIS_PORT
        (self.root / "data").mkdir(exist_ok=True)
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.root / "data"),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip

    def _ready(self) -> bool:
        return self.command("PING") == b"+PONG"

    def kill(self) -> None:
        """SIGKILL: a crash rather than a shutdown."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    # -- use ------------------------------------------------------------------------------

    def command(self, *args: str, timeout: float = 5) -> bytes:
        """One command in RESP over a new connection; the first line of the reply
        (`+PONG`, `+OK`, `-ERR ...`, `:1` ...). For anything richer use `client()`."""
        request = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = arg.encode()
            request += b"$%d\r\n%s\r\n" % (len(data), data)
        with socket.create_connection((HOST, self.port), timeout=timeout) as sock:
            sock.sendall(request)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError(f"redis on port {self.port} closed the connection")
                reply += chunk
        return reply.split(b"\r\n", 1)[0]

    def flush(self) -> None:
        """Empties every database (the broker's, the result backend's, the locks)."""
        reply = self.command("FLUSHALL")
        if reply != b"+OK":
            raise AssertionError(f"FLUSHALL answered {reply!r}; log:\n{self.log()}")

    def client(self, db: int = 0, **kwargs: Any) -> redis.Redis:
        """A `redis.Redis` client of this server (redis-py)."""
        require_module("redis", "redis")
        import redis

        return redis.Redis.from_url(self.url_for(db), **kwargs)


# ---------------------------------------------------------------------------------------
# S3 (moto)
# ---------------------------------------------------------------------------------------


class MotoS3(ServerProcess):
    """moto's S3 server (`python -m moto.server -H 127.0.0.1 -p PORT`) in its own process.

    `min_part_size`: the smallest multipart part but the last (moto's
    `S3_UPLOAD_PART_MIN_SIZE`); default S3's own 5 MiB.
    """

    what = "moto's S3 server"
    ACCESS_KEY = "squashd-test-key"
    SECRET_KEY = "squashd-test-secret"
    REGION = "us-east-1"

    def __init__(self, root: Path, *, min_part_size: int | None = None) -> None:
        require_module("moto.server", "moto[server]")
        require_module("flask", "moto[server]")
        require_module("boto3", "boto3")
        super().__init__(root, "moto.log")
        self.min_part_size = min_part_size

    # -- addresses ------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment a service process needs to use this S3 with boto3's own
        variables (no instance metadata lookups either)."""
        return {
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
            "AWS_DEFAULT_REGION": self.REGION,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    # -- life -----------------------------------------------------------------------------

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.min_part_size is not None:
            env["S3_UPLOAD_PART_MIN_SIZE"] = str(self.min_part_size)
        return env

    def _ready(self) -> bool:
        status, _, _ = http_get(f"{self.endpoint_url}/moto-api/", timeout=2)
        return status == 200

    def reset(self) -> None:
        """Forgets every bucket, object and upload (moto's `POST /moto-api/reset`)."""
        status, _, body = http_get(f"{self.endpoint_url}/moto-api/reset", method="POST")
        if status != 200:
            raise AssertionError(f"moto reset answered {status}: {body[:200]!r}")

    # -- use ------------------------------------------------------------------------------

    def client(self, **config: Any) -> S3Client:
        """A boto3 S3 client of this server, SigV4 (`config`: more botocore Config)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.ACCESS_KEY,
            aws_secret_access_key=self.SECRET_KEY,
            region_name=self.REGION,
            config=Config(signature_version="s3v4", **config),
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in `bucket` under `prefix`, sorted."""
        paginator = self.client().get_paginator("list_objects_v2")
        return sorted(
            obj["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        )

    def uploads(self, bucket: str) -> list[MultipartUploadTypeDef]:
        """The multipart uploads in progress in `bucket` (`Key`, `UploadId`, ...)."""
        return self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])

    def delete_bucket(self, name: str) -> None:
        """Aborts the bucket's uploads, deletes its objects, then the bucket."""
        s3 = self.client()
        for upload in self.uploads(name):
            s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        for key in self.keys(name):
            s3.delete_object(Bucket=name, Key=key)
        s3.delete_bucket(Bucket=name)


# ---------------------------------------------------------------------------------------
# squashd's own processes: the web endpoint and Celery workers
# ---------------------------------------------------------------------------------------

#: Variables of the machine that must not leak into a service process under test.
_LEAKY = (
    "CELERY_", "SQUASHD_", "AWS_", "REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "PORT",
    "PROMETHEUS_MULTIPROC_DIR",
)  # fmt: skip


def service_env(root: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a web or worker process: this one's, without anything that
    configures squashd, Celery, S3 or registry credentials, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY)}
    empty = root / "no-docker-config"
    empty.mkdir(parents=True, exist_ok=True)
    env.update(
        DOCKER_CONFIG=str(empty),
        XDG_RUNTIME_DIR=str(empty),
        XDG_CACHE_HOME=str(root / "cache"),
        PYTHONUNBUFFERED="1",
        # one web process per WebServer (requests the tests count go to the process they
        # name); the tests of several ask for them
        SQUASHD_WEB_WORKERS="1",
    )
    env.update(extra)
    return env


class WebServer(ServerProcess):
    """`python -m web` (uvicorn) on 127.0.0.1:free port with the environment `env`."""

    what = "squashd web"

    def __init__(self, root: Path, env: dict[str, str], name: str = "web") -> None:
        super().__init__(root, f"{name}.log")
        self.env = env

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "web"]

    def _env(self) -> dict[str, str]:
        return service_env(self.root, {**self.env, "PORT": str(self.port), "SQUASHD_HOST": HOST})

    def _ready(self) -> bool:
        status, _, _ = http_get(f"{self.url}/healthz", timeout=2)
        return status == 200

    def get(
        self, path: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request; redirects are not followed."""
        return http_get(f"{self.url}{path}", headers, **kw)

    def metrics(self) -> dict[str, float]:
        """/metrics, parsed by the Prometheus client's own parser: {series: value}, the
        series named as exposed, e.g. `squashd_requests_total{endpoint=...,outcome=...}`."""
        from prometheus_client.parser import text_string_to_metric_families

        status, _, body = self.get("/metrics")
        assert status == 200, body
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return values


class Worker(ServerProcess):
    """A Celery worker (`celery -A worker worker`, prefork, one build at a time).

    It listens on no port; it is ready when it logs that it is. `kill()` SIGKILLs its
    whole process group (the main process and its pool child), a crash of the machine
    as far as Celery can tell; `kill_child()` only the pool process running the build."""

    what = "celery worker"

    def __init__(
        self,
        root: Path,
        env: dict[str, str],
        name: str = "worker",
        queues: str = "squashd.export",
    ) -> None:
        super().__init__(root, f"{name}.log")
        self.env, self.name, self.queues = env, name, queues

    def _argv(self) -> list[str]:
        celery = str(Path(sys.executable).with_name("celery"))
        return [
            celery, "-A", "worker", "worker",
            "-Q", self.queues,
            "-c", "1", "-P", "prefork",
            "-n", f"{self.name}-{secrets.token_hex(3)}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-l", "INFO",
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        return service_env(self.root, self.env)

    def _ready(self) -> bool:
        return " ready." in self.log()

    def full_log(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def log_lines(self, text: str) -> list[str]:
        """Lines of the log (JSON, one a line) whose message contains `text`."""
        return [line for line in self.full_log().splitlines() if text in line]

    def stop(self) -> None:
        """A warm shutdown (SIGTERM), then SIGKILL for whatever is left of the group."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the main process and its pool children at once."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def kill_child(self) -> int:
        """SIGKILL the pool process; the main process lives on. Returns its PID."""
        (child,) = self.children()
        os.kill(child, signal.SIGKILL)
        return child


class Beat(ServerProcess):
    """`celery -A worker beat`, its schedule file under `root`; ready once it logs that
    it started. It sends the pre-squash and janitor jobs (celeryconfig.beat_schedule)."""

    what = "celery beat"

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        super().__init__(root, "beat.log")
        self.env = env

    def _argv(self) -> list[str]:
        celery = str(Path(sys.executable).with_name("celery"))
        schedule = self.root / "celerybeat-schedule"
        return [celery, "-A", "worker", "beat", "-l", "INFO", "--schedule", str(schedule)]

    def _env(self) -> dict[str, str]:
        return service_env(self.root, self.env)

    def _ready(self) -> bool:
        return "beat: Starting" in self.log()


# ---------------------------------------------------------------------------------------
# A deployment: the web process and its workers, sharing Redis, S3 and a registry
# ---------------------------------------------------------------------------------------


class Stack:
    """squashd as deployed: `web` and `workers` with one environment (`env`): the
    Celery variables of `redis`, boto3's of `moto` with artifacts in `bucket` (or a
    local directory when `moto` is None), `SQUASHD_REGISTRY` = `upstream`. Deployments
    alive at once on one Redis keep apart by `redis_db` (the board's and broker's DB)."""

    def __init__(
        self,
        root: Path,
        redis: RedisServer,
        moto: MotoS3 | None,
        upstream: str,
        extra: dict[str, str] | None = None,
        redis_db: int = 0,
    ) -> None:
        self.root, self.redis, self.moto = root, redis, moto
        self.redis_db = redis_db
        self.bucket = moto.create_bucket(f"squashd-{secrets.token_hex(6)}") if moto else None
        self.env = {
            **redis.env(redis_db),
            "SQUASHD_REGISTRY": upstream,
            "SQUASHD_BUILD_LEASE": "10",
            "SQUASHD_CALLER_BUILDS": "0",  # the suite's callers build more than one would
        }
        if moto is not None:
            self.env.update(moto.env(), SQUASHD_STORAGE_URL=f"s3://{self.bucket}/artifacts")
        else:
            self.env["SQUASHD_STORAGE_URL"] = str(root / "artifacts")
        self.env.update(extra or {})
        self.web = WebServer(root, self.env)
        self.workers: list[Worker] = []
        self.beat: Beat | None = None

    def start(self, workers: int = 1) -> Stack:
        self.web.start()
        for _ in range(workers):
            self.add_worker()
        return self

    def add_worker(self, queues: str = "squashd.export") -> Worker:
        name = f"worker{len(self.workers) + 1}"
        worker = Worker(self.root, self.env, name=name, queues=queues)
        self.workers.append(worker)
        return worker.start()

    def add_beat(self) -> Beat:
        self.beat = Beat(self.root, self.env).start()
        return self.beat

    def stop(self) -> None:
        if self.beat is not None:
            self.beat.stop()
        for worker in self.workers:
            worker.stop()
        self.web.stop()
        if self.moto is not None and self.moto.running and self.bucket:
            self.moto.delete_bucket(self.bucket)

    # -- asking it

    def c1(
        self, path: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, dict[str, str], bytes]:
        """A request to `/c1/squash/PATH` (redirects not followed): (status, headers, body)."""
        return self.web.get(f"/c1/squash/{path}", headers, timeout=kw.pop("timeout", 120), **kw)

    def export_status(self, key: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        status, _, body = self.web.get(f"/v1/exports/{key}", headers)
        assert status == 200, (status, body)
        return json.loads(body)

    def object_key(self, key: str) -> str:
        return f"artifacts/{key}.tar"

    def stored(self, key: str) -> list[str]:
        """What a finished build leaves in the bucket, as it lists them: the archive and
        its provenance statement beside it."""
        return sorted([self.object_key(key), f"artifacts/{key}.intoto.json"])

    def objects(self) -> list[str]:
        assert self.moto is not None and self.bucket
        return self.moto.keys(self.bucket)

    def uploads(self) -> list[MultipartUploadTypeDef]:
        assert self.moto is not None and self.bucket
        return self.moto.uploads(self.bucket)

    def builds_started(self) -> int:
        return sum(len(w.log_lines("build started")) for w in self.workers)

    def tasks_received(self) -> int:
        """Build messages the workers took (a retry is a message too)."""
        return sum(len(w.log_lines("received")) for w in self.workers)

    def describe(self) -> str:
        """The logs, for assertion messages."""
        parts = [f"--- web log:\n{self.web.log()}"]
        parts += [f"--- {w.name} log:\n{w.log()}" for w in self.workers]
        if self.beat is not None:
            parts.append(f"--- beat log:\n{self.beat.log()}")
        return "\n".join(parts)

    def metrics(self) -> dict[str, float]:
        return self.web.metrics()


def fetch(url: str, dest: Path, headers: dict[str, str] | None = None) -> bytes:
    """GET `url` (a presigned URL) into `dest`; returns the bytes."""
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=120) as response:
        data = response.read()
    dest.write_bytes(data)
    return data
