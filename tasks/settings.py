"""squashd's own settings, read once from `SQUASHD_*` (and Celery's broker variable).

With none of them set, everything runs on one machine: artifacts in a local directory,
builds in threads of the web process, locks in memory (the embedded default).
"""

import functools
import os
import re
from dataclasses import dataclass, field

from squash.codec import COMPRESSIONS, check_level
from squash.errors import BadReference, SquashError
from squash.limits import Limits, parse_size
from squash.provenance import SERVICE_BUILDER
from squash.reference import Platform


class SettingsError(ValueError):
    """A SQUASHD_* variable has a value we cannot use; the message names it."""


def _number(env: dict[str, str], name: str, default: float, minimum: float = 0) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a number") from None
    if value < minimum:
        raise SettingsError(f"{name}={text!r} must be at least {minimum:g}")
    return value


def _level(env: dict[str, str], compression: str) -> int | None:
    """SQUASHD_COMPRESSION_LEVEL, for layers of SQUASHD_LAYER_COMPRESSION."""
    text = env.get("SQUASHD_COMPRESSION_LEVEL", "").strip()
    if not text:
        return None
    try:
        check_level(compression, level := int(text))
    except (ValueError, SquashError) as exc:
        raise SettingsError(f"SQUASHD_COMPRESSION_LEVEL={text!r}: {exc}") from None
    return level


def _flag(env: dict[str, str], name: str, *, default: bool = False) -> bool:
    """`1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`; empty: the default."""
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={text!r} is not one of 1, true, yes, on, 0, false, no, off")


def _bytes(env: dict[str, str], name: str, default: int = 0) -> int:
    """A size such as `500M`, `20G` or `1073741824`; empty: the default, 0: no limit."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return parse_size(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a size (e.g. 500M, 20G)") from None


def _host(text: str, name: str) -> tuple[str, bool]:
    """`[http://]host[:port]` (of variable `name`) as (host[:port], plain HTTP asked for)."""
    plain = text.startswith("http://")
    host = text.removeprefix("http://").removeprefix("https://").strip().rstrip("/")
    if not host or "/" in host:
        raise SettingsError(f"{name}={text!r} must be a registry [http://]host[:port]")
    return host, plain


def _entries(env: dict[str, str], name: str) -> list[str]:
    """A comma-separated list's entries, blanks left out."""
    return [entry for entry in (e.strip() for e in env.get(name, "").split(",")) if entry]


def _hosts(env: dict[str, str], name: str) -> list[tuple[str, bool]]:
    """A comma-separated list of `[http://]host[:port]`, each as `_host` reads it."""
    return [_host(entry, name) for entry in _entries(env, name)]


_PREFIX = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")


def _prefixes(env: dict[str, str]) -> dict[str, tuple[str, bool]]:
    """SQUASHD_MIRROR_PREFIXES, `NAME=[http://]HOST[:PORT],...`: the first path component
    that names an upstream (for podman and CRI-O, whose mirrors send no `ns`)."""
    name = "SQUASHD_MIRROR_PREFIXES"
    found: dict[str, tuple[str, bool]] = {}
    for entry in _entries(env, name):
        prefix, sep, upstream = entry.partition("=")
        prefix = prefix.strip()
        if not sep or not _PREFIX.match(prefix) or prefix in found:
            raise SettingsError(f"{name}: {entry!r} is not NAME=HOST (NAME a path component)")
        found[prefix] = _host(upstream.strip(), name)
    return found


@dataclass(frozen=True)
class Settings:
    broker_url: str | None = None  # CELERY_BROKER_URL; None: builds run in-process
    redis_url: str | None = None  # locks, job states, counters (default: the broker's Redis)
    storage_url: str | None = None  # s3://bucket/prefix or a directory; None: the cache dir
    registry: str = "docker.io"  # the upstream of the /c1 routes
    allowed_registries: frozenset[str] = field(default_factory=frozenset)  # empty: any
    # hosts named `http://` (in SQUASHD_REGISTRY, the allow-list, the prefixes): plain HTTP
    plain_http_hosts: frozenset[str] = field(default_factory=frozenset)
    # the registry front as a mirror: a first path component naming an upstream
    mirror_prefixes: dict[str, str] = field(default_factory=dict)
    mirror_cold: str = "wait"  # a tag not squashed yet: "wait" for it, or hand out the "original"
    layer_compression: str = "gzip"
    compression_level: int | None = None  # of layer_compression's layers (None: its default)
    platform: str = "linux/amd64"
    wait_seconds: float = 60.0  # how long a /c1 request waits for a build before a 202
    # a manifest HEAD at the registry front builds and waits as a GET does (containerd,
    # and so kubelet, resolve a tag with HEAD and never GET one it answers 404 for)
    head_builds: bool = False
    url_lifetime: int = 300  # seconds a presigned download URL stays valid
    lease_seconds: float = 30.0  # a build's lock lives this long unless renewed
    max_build_seconds: int = 3600  # hard limit of one build (and Celery's time limit)
    queued_grace: float = 600.0  # a queued build not started by then is enqueued again
    failure_ttl: float = 60.0  # a failed build is reported this long before a retry
    max_retries: int = 5  # of a build after transient failures
    artifact_cache_seconds: float = 60.0  # how long an artifact's record is cached
    resolve_cache_seconds: float = 5.0  # a caller's granted tag resolution is reused (0: off)
    usage_flush_seconds: float = 1.0  # request counts gathered this long, then written (0: at once)
    local_workers: int = 2  # builds at once in the embedded default
    web_workers: int = 1  # web processes behind the one port (the embedded default: 1)
    tmpdir: str | None = None  # where builds spool layers (default $TMPDIR)
    # the scheduled work (Celery beat; a thread in the embedded default)
    presquash_interval: float = 300.0  # seconds between pre-squash runs
    presquash_top: int = 20  # how many of the most requested tags it keeps squashed
    popularity_half_life: float = 86400.0  # a request counts half as much after this
    janitor_interval: float = 600.0
    artifact_ttl: float = 7 * 86400.0  # an artifact not downloaded for this long goes
    storage_budget: int = 0  # bytes; beyond it the least recently used go first (0: none)
    limits: Limits = field(default_factory=Limits)  # what one image may cost a build
    max_queued: int = 200  # builds queued or running at once; beyond: 429 (0: no cap)
    caller_builds: int = 100  # builds one caller may start per caller_window (0: no cap)
    caller_window: float = 3600.0
    sweep_interval: float = 15.0  # seconds between sweeps for builds whose lease ran out
    operator_token: str | None = None  # if set, `/` and `/metrics` want it as a Bearer token
    builder_id: str = SERVICE_BUILDER  # who its provenance statements say built them

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    @property
    def web_processes(self) -> int:
        """How many web processes serve: SQUASHD_WEB_WORKERS, but one in the embedded
        default, whose board, builds and beat live in its one process."""
        return 1 if self.embedded else self.web_workers

    @functools.cached_property
    def default_platform(self) -> str:
        """SQUASHD_PLATFORM as an export spec spells it (parsed once, not per request)."""
        return str(Platform.parse(self.platform))

    def allows(self, registry: str) -> bool:
        return not self.allowed_registries or registry in self.allowed_registries

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        broker = env.get("CELERY_BROKER_URL") or None
        redis_url = env.get("SQUASHD_REDIS_URL") or None
        if redis_url is None and broker and broker.startswith(("redis://", "rediss://")):
            redis_url = broker
        if broker and redis_url is None:
            raise SettingsError(
                "CELERY_BROKER_URL is not Redis: set SQUASHD_REDIS_URL for build locks"
            )
        registry, plain = _host(env.get("SQUASHD_REGISTRY") or "docker.io", "SQUASHD_REGISTRY")
        prefixes = _prefixes(env)
        mirrored = {host for host, _ in prefixes.values()}
        anything = "*" in _entries(env, "SQUASHD_ALLOWED_REGISTRIES")
        listed = [] if anything else _hosts(env, "SQUASHD_ALLOWED_REGISTRIES")
        allowed = {host for host, _ in listed}
        if not allowed and not anything:
            allowed = {registry} | mirrored
        elif unlisted := sorted(mirrored - allowed if allowed else set()):
            raise SettingsError(
                f"SQUASHD_MIRROR_PREFIXES names {', '.join(unlisted)}, which "
                "SQUASHD_ALLOWED_REGISTRIES does not list"
            )
        named = [(registry, plain), *listed, *prefixes.values()]
        cold = (env.get("SQUASHD_MIRROR_COLD") or "wait").strip()
        if cold not in ("wait", "original"):
            raise SettingsError(f"SQUASHD_MIRROR_COLD={cold!r} is not one of wait, original")
        compression = env.get("SQUASHD_LAYER_COMPRESSION") or "gzip"
        if compression not in COMPRESSIONS:
            raise SettingsError(
                f"SQUASHD_LAYER_COMPRESSION={compression!r} is not one of {', '.join(COMPRESSIONS)}"
            )
        level = _level(env, compression)
        platform = env.get("SQUASHD_PLATFORM") or "linux/amd64"
        try:
            Platform.parse(platform)
        except BadReference as exc:
            raise SettingsError(f"SQUASHD_PLATFORM: {exc}") from None
        max_build = int(_number(env, "SQUASHD_MAX_BUILD_SECONDS", 3600, 10))
        return cls(
            broker_url=broker,
            redis_url=redis_url,
            storage_url=env.get("SQUASHD_STORAGE_URL") or None,
            registry=registry,
            allowed_registries=frozenset(allowed),
            plain_http_hosts=frozenset(host for host, plain in named if plain),
            mirror_prefixes={prefix: host for prefix, (host, _) in prefixes.items()},
            mirror_cold=cold,
            layer_compression=compression,
            compression_level=level,
            platform=platform,
            wait_seconds=_number(env, "SQUASHD_WAIT_SECONDS", 60),
            head_builds=_flag(env, "SQUASHD_HEAD_BUILDS"),
            url_lifetime=int(_number(env, "SQUASHD_URL_LIFETIME", 300, 1)),
            lease_seconds=_number(env, "SQUASHD_BUILD_LEASE", 30, 1),
            max_build_seconds=max_build,
            queued_grace=_number(env, "SQUASHD_QUEUED_GRACE", 600, 1),
            failure_ttl=_number(env, "SQUASHD_FAILURE_TTL", 60, 1),
            max_retries=int(_number(env, "SQUASHD_MAX_RETRIES", 5)),
            artifact_cache_seconds=_number(env, "SQUASHD_ARTIFACT_CACHE_SECONDS", 60, 1),
            resolve_cache_seconds=_number(env, "SQUASHD_RESOLVE_CACHE_SECONDS", 5),
            usage_flush_seconds=_number(env, "SQUASHD_USAGE_FLUSH_SECONDS", 1),
            local_workers=int(_number(env, "SQUASHD_LOCAL_WORKERS", 2, 1)),
            web_workers=int(_number(env, "SQUASHD_WEB_WORKERS", os.cpu_count() or 1, 1)),
            tmpdir=env.get("SQUASHD_TMPDIR") or None,
            presquash_interval=_number(env, "SQUASHD_PRESQUASH_INTERVAL", 300, 1),
            presquash_top=int(_number(env, "SQUASHD_PRESQUASH_TOP", 20)),
            popularity_half_life=_number(env, "SQUASHD_POPULARITY_HALF_LIFE", 86400, 1),
            janitor_interval=_number(env, "SQUASHD_JANITOR_INTERVAL", 600, 1),
            artifact_ttl=_number(env, "SQUASHD_ARTIFACT_TTL", 7 * 86400, 1),
            storage_budget=_bytes(env, "SQUASHD_STORAGE_BUDGET"),
            limits=_limits(env),
            max_queued=int(_number(env, "SQUASHD_MAX_QUEUED", 200)),
            caller_builds=int(_number(env, "SQUASHD_CALLER_BUILDS", 100)),
            caller_window=_number(env, "SQUASHD_CALLER_WINDOW", 3600, 1),
            sweep_interval=_number(env, "SQUASHD_SWEEP_INTERVAL", 15, 1),
            operator_token=env.get("SQUASHD_OPERATOR_TOKEN") or None,
            builder_id=env.get("SQUASHD_BUILDER_ID") or SERVICE_BUILDER,
        )


def _limits(env: dict[str, str]) -> Limits:
    """SQUASHD_MAX_IMAGE_BYTES, SQUASHD_MAX_MEMBERS, SQUASHD_SPOOL_RESERVE (0: no limit)."""
    default = Limits()
    members = int(_number(env, "SQUASHD_MAX_MEMBERS", default.members or 0))
    size = _bytes(env, "SQUASHD_MAX_IMAGE_BYTES", default.uncompressed or 0)
    return Limits(
        members=members or None,
        uncompressed=size or None,
        free_space=_bytes(env, "SQUASHD_SPOOL_RESERVE", default.free_space),
    )
