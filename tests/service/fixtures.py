"""Fixtures of the export-service tests; the servers themselves live in testbed/service.py.

Redis and moto's S3 server start once per session (moto takes about a second to import);
every test gets an empty Redis (`redis_db`) and a bucket of its own (`bucket`). A test
that stops either server leaves it to the next test's fixture to start it again, on the
same port for Redis.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from testbed.registry import Registry
from testbed.service import MotoS3, RedisServer, Stack, WebServer

Server = TypeVar("Server", RedisServer, MotoS3)


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _serving(tmp_path_factory, name: str, make: Callable[[Path], Server]) -> Iterator[Server]:
    """A server started in a fresh directory, stopped and its files deleted afterwards."""
    root = tmp_path_factory.mktemp(name)
    server = make(root)
    try:
        yield server.start()
    finally:
        server.stop()
        _rmtree(root)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """redis-server on 127.0.0.1:free port, no persistence; `url` = redis://127.0.0.1:PORT/0."""
    with _serving(tmp_path_factory, "redis", RedisServer) as server:
        yield server


@pytest.fixture
def redis_db(redis_server: RedisServer) -> RedisServer:
    """The session's Redis, running (started again if an earlier test stopped it) and
    empty: every database flushed before the test."""
    redis_server.start()
    redis_server.flush()
    return redis_server


# ---------------------------------------------------------------------------------------
# S3
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory) -> Iterator[MotoS3]:
    """moto's S3 server on 127.0.0.1:free port; S3's 5 MiB minimum part size."""
    with _serving(tmp_path_factory, "moto", MotoS3) as server:
        yield server


@pytest.fixture
def bucket(moto_s3: MotoS3) -> Iterator[str]:
    """A new, empty bucket (its name); emptied and deleted after the test."""
    moto_s3.start()  # again, if an earlier test stopped it
    name = moto_s3.create_bucket(f"squashd-test-{secrets.token_hex(6)}")
    yield name
    if moto_s3.running:
        moto_s3.delete_bucket(name)


# ---------------------------------------------------------------------------------------
# squashd deployments (web + workers)
# ---------------------------------------------------------------------------------------


RESOLVE_CACHE = 1.0  # seconds, in the test deployments


@contextlib.contextmanager
def _stack_factory(tmp_path_factory, redis: RedisServer, moto: MotoS3) -> Iterator[Callable]:
    made: list[Stack] = []

    def make(
        upstream: str,
        *,
        redis_server: RedisServer | None = None,
        s3_server: MotoS3 | None = None,
        s3: bool = True,
        workers: int = 1,
        **env: str,
    ) -> Stack:
        """A started deployment against `upstream` (SQUASHD_REGISTRY), on the session's
        Redis and S3 unless others are given; `env` adds to its environment."""
        root = tmp_path_factory.mktemp("stack")
        used = redis_server or redis
        used.start()
        store = (s3_server or moto).start() if s3 else None
        # A caller's tag resolution is reused for RESOLVE_CACHE seconds (5 by default): the
        # tests that move a tag wait that long, so they keep it short.
        env = {"SQUASHD_RESOLVE_CACHE_SECONDS": str(RESOLVE_CACHE), **env}
        # two DBs per deployment, so those alive at once never take each other's builds,
        # emptied first: an earlier test's deployment of the same images (the shared sample
        # images have the same artifact keys) left its records there, of its own bucket
        db = 2 * len(made)
        for number in (db, db + 1):
            used.client(number).flushdb()
        stack = Stack(root, used, store, upstream, env, redis_db=db)
        made.append(stack)
        return stack.start(workers)

    try:
        yield make
    finally:
        for stack in made:
            stack.stop()
            _rmtree(stack.root)


@pytest.fixture
def make_stack(tmp_path_factory, redis_server, moto_s3) -> Iterator[Callable[..., Stack]]:
    """Makes deployments for one test; all are stopped and removed after it."""
    with _stack_factory(tmp_path_factory, redis_server, moto_s3) as make:
        yield make


@pytest.fixture(scope="module")
def make_module_stack(tmp_path_factory, redis_server, moto_s3) -> Iterator[Callable[..., Stack]]:
    """Makes deployments shared by a module's tests (each test uses its own images)."""
    with _stack_factory(tmp_path_factory, redis_server, moto_s3) as make:
        yield make


@contextlib.contextmanager
def embedded_web(registry: Registry, root: Path) -> Iterator[WebServer]:
    """squashd's embedded default (no Redis, no S3: one process) in front of `registry`."""
    server = WebServer(root, {"SQUASHD_REGISTRY": registry.host}).start()
    try:
        yield server
    finally:
        server.stop()


def private_deployment(
    make: Callable[..., Stack],
    registry: Registry,
    work: Path,
    repository: str,
    seed: int,
    **env: str,
) -> Stack:
    """A deployment in front of the private registry (tests.registry.fixtures) that pulls
    with the `robot` account, once alice pushed REPOSITORY:v1 there (which only she, and
    robot, may read); `env` adds to its environment."""
    from tests.registry.fixtures import USERS
    from tests.service.harness import push_layers
    from tests.service.test_export_service import image_layers

    creds = f"alice:{USERS['alice']}"
    push_layers(work, registry.ref(repository, "v1"), image_layers(seed=seed), creds=creds)
    return make(
        registry.host,
        SQUASHD_REGISTRY_USERNAME="robot",
        SQUASHD_REGISTRY_PASSWORD=USERS["robot"],
        **env,
    )
