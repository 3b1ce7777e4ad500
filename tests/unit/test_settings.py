"""SQUASHD_* settings: defaults that make the embedded default, and clear errors."""

import errno
import os
from pathlib import Path

import pytest

from tasks.errors import is_transient
from tasks.settings import Settings, SettingsError


def test_nothing_set_is_the_embedded_default() -> None:
    settings = Settings.from_env({})
    assert settings.embedded and settings.redis_url is None and settings.storage_url is None
    assert settings.registry == "docker.io" and settings.allows("docker.io")
    assert not settings.allows("quay.io")  # only the upstream, unless told otherwise
    assert settings.layer_compression == "gzip"


def test_a_redis_broker_is_also_the_board() -> None:
    settings = Settings.from_env({"CELERY_BROKER_URL": "redis://127.0.0.1:7000/0"})
    assert not settings.embedded and settings.redis_url == "redis://127.0.0.1:7000/0"
    with pytest.raises(SettingsError, match="SQUASHD_REDIS_URL"):
        Settings.from_env({"CELERY_BROKER_URL": "amqp://guest@localhost//"})


def test_registries() -> None:
    settings = Settings.from_env(
        {"SQUASHD_REGISTRY": "http://reg.example:5000/", "SQUASHD_ALLOWED_REGISTRIES": "a, b"}
    )
    assert settings.registry == "reg.example:5000"
    assert settings.plain_http_hosts == {"reg.example:5000"}
    assert settings.allows("a") and settings.allows("b") and not settings.allows("reg.example")
    assert Settings.from_env({"SQUASHD_ALLOWED_REGISTRIES": "*"}).allows("anywhere.io")
    with pytest.raises(SettingsError, match="SQUASHD_REGISTRY"):
        Settings.from_env({"SQUASHD_REGISTRY": "https://quay.io/org"})


def test_head_builds_is_a_flag_off_by_default() -> None:
    assert not Settings.from_env({}).head_builds
    assert Settings.from_env({"SQUASHD_HEAD_BUILDS": "1"}).head_builds
    assert Settings.from_env({"SQUASHD_HEAD_BUILDS": " On "}).head_builds
    assert not Settings.from_env({"SQUASHD_HEAD_BUILDS": "false"}).head_builds


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SQUASHD_WAIT_SECONDS", "soon", "not a number"),
        ("SQUASHD_BUILD_LEASE", "0", "at least 1"),
        ("SQUASHD_LAYER_COMPRESSION", "lzma", "not one of"),
        ("SQUASHD_COMPRESSION_LEVEL", "12", "0 to 9, not 12"),
        ("SQUASHD_COMPRESSION_LEVEL", "best", "invalid literal"),
        ("SQUASHD_HEAD_BUILDS", "maybe", "not one of 1, true"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=rf"{name}=.*{message}"):
        Settings.from_env({name: value})


def test_the_compression_level_is_the_service_compressions_own() -> None:
    settings = Settings.from_env(
        {"SQUASHD_LAYER_COMPRESSION": "zstd", "SQUASHD_COMPRESSION_LEVEL": "19"}
    )
    assert (settings.layer_compression, settings.compression_level) == ("zstd", 19)
    assert Settings.from_env({}).compression_level is None
    with pytest.raises(SettingsError, match="none layers are not compressed"):
        Settings.from_env({"SQUASHD_LAYER_COMPRESSION": "none", "SQUASHD_COMPRESSION_LEVEL": "1"})


def test_transient_failures_are_retried_permanent_ones_not(tmp_path: Path) -> None:
    """The registry client's errors say themselves; the board and the store judge theirs."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
    from redis.exceptions import ConnectionError as RedisDown

    from squash.errors import DigestMismatch, RegistryError, TransientError
    from storage.local import LocalStore
    from storage.s3 import S3Store
    from tasks.board import Lifetimes
    from tasks.board.memory_board import MemoryBoard
    from tasks.board.redis_board import RedisBoard

    board = RedisBoard(
        "redis://127.0.0.1:9/0", Lifetimes(10, 10, 10, 10, 10)
    )  # never connects here
    store = S3Store("bucket", client=object())  # type: ignore[arg-type]  # never called
    assert is_transient(TransientError("registry answered 503"))
    assert is_transient(EndpointConnectionError(endpoint_url="http://s3"), board, store)
    assert not is_transient(EndpointConnectionError(endpoint_url="http://s3"), board)
    assert not is_transient(NoCredentialsError(), board, store)
    assert is_transient(RedisDown("down"), board, store)
    assert not is_transient(RedisDown("down"), MemoryBoard(Lifetimes(10, 10, 10, 10, 10)), store)
    slow = {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}
    assert is_transient(ClientError(slow, "UploadPart"), board, store)  # type: ignore[arg-type]
    denied = {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}
    assert not is_transient(ClientError(denied, "UploadPart"), board, store)  # type: ignore[arg-type]
    assert not is_transient(DigestMismatch("layer 1: digest mismatch"), board, store)
    assert not is_transient(RegistryError("not found (404)", 404), board, store)
    assert not is_transient(ValueError("a bug"), board, store)
    assert not is_transient(PermissionError(13, "denied"), board, LocalStore(tmp_path))
    assert is_transient(OSError(errno.ENOSPC, "no space left"), board, LocalStore(tmp_path))


def test_web_processes_default_to_the_cpus_but_one_when_embedded() -> None:
    broker = {"CELERY_BROKER_URL": "redis://127.0.0.1:9/0"}
    assert Settings.from_env(broker).web_processes == (os.cpu_count() or 1)
    assert Settings.from_env({**broker, "SQUASHD_WEB_WORKERS": "3"}).web_processes == 3
    assert Settings.from_env({"SQUASHD_WEB_WORKERS": "3"}).web_processes == 1
    with pytest.raises(SettingsError):
        Settings.from_env({**broker, "SQUASHD_WEB_WORKERS": "0"})
