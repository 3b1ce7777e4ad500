"""Benchmark: the squashd service end to end, against the engine it runs.

Starts its own redis-server, moto's S3 server and docker-registry on free 127.0.0.1 ports (the
servers of testbed/, which the tests use too), pushes the image squash_bench.py builds (cached
under bench/work) to that registry with skopeo, and runs one deployment (`Stack`: a web server
of SQUASHD_WEB_WORKERS' default processes, the CPU count, and one Celery worker, artifacts in
an S3 bucket, SQUASHD_REGISTRY = the registry).
Then measures, in one run:

1. engine: `squashd export docker://REGISTRY/bench/image:TAG -o FILE -q --layer-compression
   gzip` (gzip is the service's default), best of --repeat rounds;
2. end to end: `GET /c1/squash/bench/image/TAG` until its 302, in the same rounds, each a real
   build (the artifact and its Redis records are deleted before the next round), as a ratio
   to 1 (goal: at most 1.3x), with the CPU of the worker's build process and, apart from it,
   of moto's S3 server taking the upload (not ours to make faster); then the download of the
   archive from the presigned URL; and the same build by a second deployment whose artifacts
   go to a local directory (no S3 at all);
3. cached redirects: `wrk` against the same URL for --duration seconds: requests/s and p99
   latency, beside `wrk` on the registry's own manifest GET of the image in the same run.
   A caller's granted resolution is reused for SQUASHD_RESOLVE_CACHE_SECONDS (default 5),
   so the registry sees one manifest HEAD per caller in that time; its access log counts
   them;
4. uncached redirects: a web process with that cache off, so every redirect asks the
   registry: its rate beside the registry's GET, the CPU a request each part spends, and
   both rates again with the registry on half of the cores and the web and wrk on the
   others (sched_setaffinity, taskset), where squashd does not take the registry's CPU.

Everything started here is stopped and its files removed at the end, on failure, Ctrl-C and
SIGTERM too. Times are wall times on a machine that may be busy (the contention is reported).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# The repo root, for testbed/ (the servers; not an installed package, so not on the path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # squash_bench, bench_image

import bench_image
from sampling import hot_spots, sampled
from squash_bench import (
    REGISTRY_REPO,
    Contention,
    Run,
    _terminate,
    check_run,
    local_registry,
    log,
    mib,
    process_usage,
    run_child,
    squash_cmd,
)

from service.requests import RECENT_SECONDS
from storage.base import sha256_of
from storage.local import LocalStore
from storage.s3 import S3Store
from tasks.board import Lifetimes
from tasks.board.redis_board import RedisBoard
from tasks.settings import Settings
from testbed.process import StartFailed
from testbed.registry import Registry
from testbed.service import MotoS3, RedisServer, Stack, WebServer, fetch
from testbed.tools import MissingTool

HERE = Path(__file__).resolve().parent
WAIT_SECONDS = 900  # a /c1 request waits this long for its build (SQUASHD_WAIT_SECONDS)
WEB_PROCESSES = os.cpu_count() or 1  # SQUASHD_WEB_WORKERS' default
TARGET_BUILD_RATIO = 1.3  # a build through the service / the CLI's squash
MANIFEST_HEAD = f'"HEAD /v2/{REGISTRY_REPO}/manifests/'  # in the registry's access log


class BenchFailed(Exception):
    """The service did not do what was asked; the message goes out with its logs."""


@dataclass
class Build:
    """One end-to-end round: the request until its 302, and what the deployment spent on it."""

    wall: float
    worker_cpu: float  # the worker's pool process, the one that builds
    s3_cpu: float  # moto's S3 server, taking the multipart upload (0: a local store)
    build_seconds: float  # the worker's own "build done in" (0.1 s resolution)
    key: str  # X-Squashd-Export
    location: str
    sha256: str  # the artifact's, from the ETag


@dataclass
class Fetch:
    """One download of the archive from its presigned URL."""

    wall: float
    size: int


@dataclass
class Load:
    """One wrk run against the cached redirect, and what the servers spent meanwhile."""

    requests: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    bad: int  # non-2xx/3xx responses plus socket errors
    web_cpu: float
    registry_cpu: float
    manifest_heads: int
    registry_rate: float  # the registry's own manifest GET, wrk alike
    registry_p99_ms: float
    registry_requests: int
    registry_get_cpu: float  # the registry's CPU seconds meanwhile
    uncached_rate: float = 0.0  # a web process with the resolve cache off
    uncached_p99_ms: float = 0.0
    uncached_requests: int = 0
    uncached_web_cpu: float = 0.0  # CPU seconds of that web process and of the registry
    uncached_registry_cpu: float = 0.0
    # both rates again with the registry on cores of its own (web and wrk on the others)
    apart_cores: str = ""
    apart_registry_rate: float = 0.0
    apart_uncached_rate: float = 0.0
    profiles: list[str] = field(default_factory=list)  # --profile: where the web's time went


def engine_once(ref: str, out: Path) -> tuple[Run, str]:
    """The CLI, as the service's worker would build it: (the run, sha256 of its archive)."""
    out.unlink(missing_ok=True)
    cmd = [*squash_cmd(ref, out, "gzip"), "-q"]
    logf = out.with_suffix(".log")
    run = run_child(cmd, logf)
    check_run(run, cmd, logf)
    log(
        f"  engine: {run.wall:.2f} s wall, {run.cpu:.2f} s CPU, peak RSS "
        f"{mib(run.maxrss_kib * 1024)}, out {mib(out.stat().st_size)}"
    )
    with open(out, "rb") as archive:
        digest = sha256_of(archive)
    out.unlink()
    return run, digest


def servers_cpu(deployments: list[Stack], registry_pid: int) -> float:
    """CPU seconds every server process of this run has used so far (their start-up)."""
    pids = {registry_pid}
    for deployment in deployments:
        procs = [deployment.redis.proc, deployment.web.proc, deployment.workers[0].proc]
        if deployment.moto is not None:
            procs.append(deployment.moto.proc)
        pids.update([*deployment.workers[0].children(), *deployment.web.children()])
        pids.update(p.pid for p in procs if p is not None)
    return sum(process_usage(pid)[0] for pid in pids)


def web_cpu_seconds(web: WebServer) -> float:
    """CPU seconds of a web server so far: its main process and its worker processes
    (SQUASHD_WEB_WORKERS), which are alive and so not in the main one's own counts."""
    assert web.proc is not None
    return sum(process_usage(pid)[0] for pid in [web.proc.pid, *web.children()])


def _pool_cpu(deployment: Stack) -> float:
    """CPU seconds of the worker's pool process(es) so far."""
    return sum(process_usage(pid)[0] for pid in deployment.workers[0].children())


def _build_seconds(deployment: Stack) -> float:
    """The duration the worker logged for its latest build."""
    line = deployment.workers[0].log_lines("build done in")[-1]
    found = re.search(r"build done in ([\d.]+) s", json.loads(line)["message"])
    assert found is not None, line
    return float(found[1])


def build_once(deployment: Stack, path: str) -> Build:
    """GET /c1/squash/PATH until its answer, a 302 to S3 (or, from a local store, the
    archive itself); it must have been a build (a cache miss)."""
    moto = deployment.moto.proc if deployment.moto is not None else None
    started, cpu0 = deployment.builds_started(), _pool_cpu(deployment)
    s3_cpu0 = process_usage(moto.pid)[0] if moto is not None else 0.0
    t0 = time.perf_counter()
    status, headers, body = deployment.c1(path, timeout=WAIT_SECONDS + 60)
    wall = time.perf_counter() - t0
    cpu = _pool_cpu(deployment) - cpu0
    s3_cpu = process_usage(moto.pid)[0] - s3_cpu0 if moto is not None else 0.0
    if status != (302 if moto is not None else 200):
        raise BenchFailed(f"/c1/squash/{path} answered {status}: {body[:500]!r}")
    if headers.get("x-squashd-cache") != "miss" or deployment.builds_started() != started + 1:
        raise BenchFailed(f"/c1/squash/{path} was not one build: {headers}")
    store = "S3, to the 302" if moto is not None else "local store, the archive served"
    log(
        f"  end to end ({store}): {wall:.2f} s; CPU: worker's build process {cpu:.2f} s, "
        f"moto S3 {s3_cpu:.2f} s"
    )
    key = headers["x-squashd-export"]
    if moto is None:
        digest = hashlib.sha256(body).hexdigest()
        return Build(wall, cpu, 0.0, _build_seconds(deployment), key, "", digest)
    location, etag = headers["location"], headers["etag"]
    return Build(wall, cpu, s3_cpu, _build_seconds(deployment), key, location, etag.strip('"'))


def forget(deployment: Stack, key: str) -> None:
    """Make the next request build again: evict the artifact as the janitor does, and
    wait out the web processes' memory of it (RECENT_SECONDS; the janitor itself never
    evicts what was handed out that recently)."""
    if deployment.moto is not None and deployment.bucket is not None:
        S3Store(deployment.bucket, "artifacts", deployment.moto.client()).delete(key)
    else:
        LocalStore(deployment.root / "artifacts").delete(key)
    board_url = deployment.redis.url_for(deployment.redis_db)
    RedisBoard(board_url, Lifetimes(30, 600, 60, 3600, 60)).drop(key)
    time.sleep(RECENT_SECONDS)


def fetch_once(url: str, dest: Path, sha256: str) -> Fetch:
    """Download the archive from its presigned URL; its bytes must match the ETag."""
    t0 = time.perf_counter()
    data = fetch(url, dest)
    wall = time.perf_counter() - t0
    dest.unlink()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BenchFailed(f"the archive at {url} does not have the sha256 of its ETag")
    log(f"  download: {wall:.2f} s, {mib(len(data))}")
    return Fetch(wall, len(data))


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    """`512.00us`, `1.23ms`, `2.00s` -> milliseconds."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(found[1]) * _UNITS_MS[found[2]]


def parse_wrk(text: str) -> tuple[int, float, float, float, float, int]:
    """(requests, seconds, requests/s, p50 ms, p99 ms, bad responses + socket errors)."""
    total = re.search(r"(\d+) requests in ([\d.]+\w+),", text)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    if not (total and rate and p50 and p99):
        raise BenchFailed(f"cannot read wrk's output:\n{text}")
    non_3xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: (.*)", text)
    bad = int(non_3xx[1]) if non_3xx else 0
    bad += sum(int(n) for n in re.findall(r"\d+", sockets[1])) if sockets else 0
    seconds = _ms(total[2]) / 1e3
    return int(total[1]), seconds, float(rate[1]), _ms(p50[1]), _ms(p99[1]), bad


def load_test(deployment: Stack, path: str, registry: Registry, args: argparse.Namespace) -> Load:
    """wrk against the cached redirect, with the CPU the web process and the registry spent."""
    url = f"{deployment.web.url}/c1/squash/{path}"
    expect_cached(deployment.web, path)
    assert registry.proc is not None
    registry_pid = registry.proc.pid

    def registry_clock() -> float:
        return process_usage(registry_pid)[0]

    def web_clock(web: WebServer) -> Callable[[], float]:
        return functools.partial(web_cpu_seconds, web)

    heads0 = registry.log_path.read_text().count(MANIFEST_HEAD)
    profiles: list[str] = []
    with profiling(deployment.web, "cached redirects", args, profiles):
        run, (web_cpu, registry_cpu) = wrk_spending(
            url, [], args, [web_clock(deployment.web), registry_clock]
        )
    requests, seconds, rate, p50, p99, bad = run
    heads = registry.log_path.read_text().count(MANIFEST_HEAD) - heads0
    manifest = f"{registry.url}/v2/{path.rsplit('/', 1)[0]}/manifests/{path.rsplit('/', 1)[1]}"
    accept = "Accept: application/vnd.oci.image.manifest.v1+json"
    run, (registry_get_cpu,) = wrk_spending(manifest, ["-H", accept], args, [registry_clock])
    gets, _, registry_rate, _, registry_p99, registry_bad = run
    if registry_bad:
        raise BenchFailed(f"{manifest}: {registry_bad} bad answers from the registry")
    load = Load(requests, seconds, rate, p50, p99, bad, web_cpu, registry_cpu, heads,
                registry_rate, registry_p99, gets, registry_get_cpu, profiles=profiles)  # fmt: skip
    # the same request to a web process that asks the registry every time
    env = {**deployment.env, "SQUASHD_RESOLVE_CACHE_SECONDS": "0"}
    uncached = WebServer(deployment.root, env, name="web-uncached").start()
    try:
        url = f"{uncached.url}/c1/squash/{path}"
        expect_cached(uncached, path)
        with profiling(uncached, "uncached redirects", args, profiles):
            run, spent = wrk_spending(url, [], args, [web_clock(uncached), registry_clock])
        load.uncached_requests, _, load.uncached_rate, _, load.uncached_p99_ms, _ = run
        load.uncached_web_cpu, load.uncached_registry_cpu = spent
        apart(load, registry_pid, uncached, url, manifest, accept, args)
    finally:
        uncached.stop()
    return load


@contextlib.contextmanager
def profiling(
    web: WebServer, label: str, args: argparse.Namespace, into: list[str]
) -> Iterator[None]:
    """With --profile: py-spy samples the web's processes during the block, and the
    report of where their time went joins `into`."""
    if args.profile is None:
        yield
        return
    assert web.proc is not None
    out = args.profile / label.replace(" ", "-")
    with sampled([web.proc.pid, *web.children()], args.duration, out) as files:
        yield
    into.append(hot_spots(files).report(f"{label} ({out})"))


def expect_cached(web: WebServer, path: str) -> None:
    """/c1/squash/PATH must be a cached 302 before wrk (which counts any 3xx as good)."""
    url = f"{web.url}/c1/squash/{path}"
    status, headers, _ = web.get(f"/c1/squash/{path}")
    if status != 302 or headers.get("x-squashd-cache") != "hit":
        raise BenchFailed(f"{url} answered {status} {headers}, not a cached 302")


def wrk_spending(
    url: str, extra: list[str], args: argparse.Namespace, clocks: list[Callable[[], float]]
) -> tuple[tuple[int, float, float, float, float, int], list[float]]:
    """One wrk run, and the CPU seconds each of `clocks` advanced meanwhile."""
    before = [clock() for clock in clocks]
    result = wrk(url, extra, args)
    return result, [clock() - start for clock, start in zip(clocks, before, strict=True)]


def apart(
    load: Load,
    registry_pid: int,
    web: WebServer,
    url: str,
    manifest: str,
    accept: str,
    args: argparse.Namespace,
) -> None:
    """The registry's GET and the uncached redirect again, the registry on half of the
    cores and the web and wrk on the rest: what squashd adds when it does not take the
    registry's CPU. Every core given back afterwards."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return
    half = len(cores) // 2
    own, rest = set(cores[:half]), set(cores[half:])
    assert web.proc is not None
    web_pids = [web.proc.pid, *web.children()]
    try:
        _pin([registry_pid], own)
        _pin(web_pids, rest)
        pinned = ["taskset", "-c", ",".join(map(str, sorted(rest)))]
        load.apart_registry_rate = wrk(manifest, ["-H", accept], args, pinned)[2]
        load.apart_uncached_rate = wrk(url, [], args, pinned)[2]
        load.apart_cores = f"{sorted(own)} and {sorted(rest)}"
    finally:
        _pin([registry_pid, *web_pids], set(cores))


def _pin(pids: list[int], cores: set[int]) -> None:
    """Every thread of each process onto `cores` (new threads inherit it)."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(task.name), cores)


def wrk(
    url: str, extra: list[str], args: argparse.Namespace, prefix: list[str] | None = None
) -> tuple[int, float, float, float, float, int]:
    """One wrk run (after `prefix`, e.g. taskset): (requests, seconds, requests/s, p50 ms,
    p99 ms, bad answers)."""
    cmd = [*(prefix or []), "wrk", f"-t{args.threads}", f"-c{args.connections}"]
    cmd += [f"-d{args.duration}s", *extra]
    cmd += ["--latency", url]
    log(f"  {' '.join(cmd)}")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60)
    if res.returncode != 0:
        raise BenchFailed(f"wrk failed (exit {res.returncode}):\n{res.stdout}{res.stderr}")
    print(res.stdout.rstrip(), flush=True)
    return parse_wrk(res.stdout)


def start_deployment(cleanup: contextlib.ExitStack, scratch: Path, upstream: str) -> Stack:
    """redis-server, moto's S3 server and a deployment (one web, one worker) in front of
    `upstream`, all stopped by `cleanup`."""
    redis = RedisServer(scratch / "redis")
    cleanup.callback(redis.stop)
    moto = MotoS3(scratch / "moto")
    cleanup.callback(moto.stop)
    redis.start()
    moto.start()
    deployment = Stack(scratch / "stack", redis, moto, upstream, deployment_env())
    cleanup.callback(deployment.stop)
    deployment.start(workers=1)
    log(f"squashd at {deployment.web.url}, artifacts in s3://{deployment.bucket}")
    return deployment


def start_local_deployment(cleanup: contextlib.ExitStack, scratch: Path, beside: Stack) -> Stack:
    """A second deployment in front of `beside`'s upstream, on its Redis (DBs of its own),
    whose artifacts go to a local directory; stopped by `cleanup`."""
    upstream = beside.env["SQUASHD_REGISTRY"]
    deployment = Stack(scratch / "local", beside.redis, None, upstream, deployment_env(), 2)
    cleanup.callback(deployment.stop)
    deployment.start(workers=1)
    log(f"squashd at {deployment.web.url}, artifacts in {deployment.root / 'artifacts'}")
    return deployment


def deployment_env() -> dict[str, str]:
    """The Stack's environment beyond its defaults: the web's default process count (the
    testbed's is one), waits long enough for a whole build, no
    access log (one line per request would be measured too), and the default build lease
    rather than the tests' short one (a lease lost on a busy machine would fail a build)."""
    return {
        "SQUASHD_WEB_WORKERS": str(WEB_PROCESSES),
        "SQUASHD_WAIT_SECONDS": str(WAIT_SECONDS),
        "SQUASHD_ACCESS_LOG": "0",
        "SQUASHD_BUILD_LEASE": str(Settings().lease_seconds),
    }


def print_summary(
    image: bench_image.ImageStats,
    engine: list[tuple[Run, str]],
    builds: list[Build],
    local_builds: list[Build],
    fetches: list[Fetch],
    load: Load,
    args: argparse.Namespace,
) -> None:
    """The table: best wall times against the best engine run, and the cached redirects."""
    best_engine = min((r for r, _ in engine), key=lambda r: r.wall)
    best_fetch = min(fetches, key=lambda f: f.wall)
    base = best_engine.wall
    rows: list[tuple[str, float, float | None, str]] = [
        ("engine: squashd export docker:// (gzip)", base, best_engine.cpu, "= 1.00")
    ]
    for store, runs in (("S3 (the 302)", builds), ("local (the archive)", local_builds)):
        best = min(runs, key=lambda b: b.wall)
        ok = "ok" if best.wall / base <= TARGET_BUILD_RATIO else "OVER"
        moto = f"; moto's S3 server {best.s3_cpu:.2f} CPU s apart" if best.s3_cpu else ""
        rows += [
            (
                f"end to end, {store}: GET /c1",
                best.wall,
                best.worker_cpu,
                f"<= {TARGET_BUILD_RATIO}x {ok}; CPU s = the worker's build process{moto}; "
                f"{best.wall - best.build_seconds:.2f} s outside its logged build",
            ),
            ("  the worker's build, as it logs it", best.build_seconds, None, "0.1 s steps"),
        ]
    rows.append(
        (
            "download from the presigned URL (moto S3)",
            best_fetch.wall,
            None,
            f"{mib(best_fetch.size)}, {best_fetch.size / 1e6 / best_fetch.wall:.0f} MB/s",
        )
    )
    print()
    print(
        f"== summary: the service, {len(image.layers)} layers, {mib(image.tar_bytes)} tar / "
        f"{mib(image.blob_bytes)} gzip; best of {len(builds)} interleaved rounds, "
        f"{WEB_PROCESSES} web process(es) + one Celery worker =="
    )
    head = f"{'step':46} {'wall s':>7} {'x engine':>8} {'CPU s':>7}  note"
    print(head)
    print("-" * (len(head) + 50))
    for label, wall, cpu, note in rows:
        cpu_text = f"{cpu:.2f}" if cpu is not None else "-"
        print(f"{label:46} {wall:7.2f} {wall / base:8.2f} {cpu_text:>7}  {note}")
    print()
    per_request = (load.requests or 1) / 1e3
    print(
        f"cached redirects (wrk -t{args.threads} -c{args.connections}, {load.seconds:.1f} s): "
        f"{load.rate:,.0f} requests/s, p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, "
        f"{load.requests:,} requests, {load.bad} bad (non-3xx or socket errors)"
    )
    heads = load.manifest_heads / (load.requests or 1)
    print(
        f"  web {load.web_cpu / per_request:.2f} ms CPU a request "
        f"({load.web_cpu / load.seconds:.2f} CPUs); registry {heads:.4f} manifest HEADs and "
        f"{load.registry_cpu / per_request:.2f} ms CPU a request (a caller's resolution is "
        "reused for SQUASHD_RESOLVE_CACHE_SECONDS)"
    )
    ok = "ok" if load.rate >= 2000 and load.p99_ms <= 25 else "OVER"
    print(
        f"  the registry's own manifest GET, wrk alike: {load.registry_rate:,.0f} requests/s, "
        f"p99 {load.registry_p99_ms:.2f} ms; cached redirects / manifest GETs "
        f"{load.rate / (load.registry_rate or 1):.2f}x (target >= 2,000/s, p99 <= 25 ms: {ok})"
    )
    ratio = load.uncached_rate / (load.registry_rate or 1)
    print(
        f"  with the resolve cache off (every redirect asks the registry): "
        f"{load.uncached_rate:,.0f} requests/s, p99 {load.uncached_p99_ms:.2f} ms; "
        f"{ratio:.2f}x the manifest GETs (target >= 0.8x: {'ok' if ratio >= 0.8 else 'OVER'})"
    )
    get_ms = 1e3 * load.registry_get_cpu / (load.registry_requests or 1)
    head_ms = 1e3 * load.uncached_registry_cpu / (load.uncached_requests or 1)
    web_ms = 1e3 * load.uncached_web_cpu / (load.uncached_requests or 1)
    print(
        f"  CPU a request, where the cores are the limit: the registry's GET alone {get_ms:.2f} ms;"
        f" behind squashd the registry's HEAD {head_ms:.2f} ms + the web's {web_ms:.2f} ms, so "
        f"at most {get_ms / ((head_ms + web_ms) or 1):.2f}x on shared cores (a web costing "
        f"nothing: {get_ms / (head_ms or 1):.2f}x)"
    )
    if load.apart_cores:
        ratio = load.apart_uncached_rate / (load.apart_registry_rate or 1)
        print(
            f"  the registry on cores of its own (CPUs {load.apart_cores} for the web and "
            f"wrk): its GET {load.apart_registry_rate:,.0f} requests/s, uncached redirects "
            f"{load.apart_uncached_rate:,.0f}: {ratio:.2f}x "
            f"(target >= 0.8x: {'ok' if ratio >= 0.8 else 'OVER'})"
        )
    for profile in load.profiles:
        print(profile)
    same = {digest for _, digest in engine} | {b.sha256 for b in [*builds, *local_builds]}
    print(
        "  the service's archive is byte for byte the CLI's"
        if len(same) == 1
        else f"  the archives differ between the CLI and the service: {sorted(same)}"
    )
    print(
        "x engine = wall time / the best engine wall time; the engine's CPU s is the CLI's "
        "user+sys.\nrerun: make bench, or .venv/bin/python bench/service_bench.py "
        f"--repeat {len(builds)} --duration {args.duration} --threads {args.threads} "
        f"--connections {args.connections}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=HERE / "work", help="image cache and scratch")
    ap.add_argument("--repeat", type=int, default=3, help="engine and build rounds (best counts)")
    ap.add_argument("--duration", type=int, default=10, help="seconds of the wrk load test")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections")
    ap.add_argument(
        "--profile", type=Path, help="py-spy the web during the wrk runs, its stacks into DIR"
    )
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (make debs DEBS=wrk)")
    work: Path = args.work.resolve()
    repeat = max(1, args.repeat)
    image = bench_image.build_image(work, False, log)
    path = f"{REGISTRY_REPO}/{image.tag}"  # where local_registry pushes it
    signal.signal(signal.SIGTERM, _terminate)  # unwinds through the cleanup below
    scratch = Path(tempfile.mkdtemp(prefix="service-", dir=work))
    engine: list[tuple[Run, str]] = []
    builds: list[Build] = []
    local_builds: list[Build] = []
    fetches: list[Fetch] = []
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        local = cleanup.enter_context(local_registry(image, scratch))
        assert local.registry.proc is not None
        deployment = beside = None
        try:
            deployment = start_deployment(cleanup, scratch, local.registry.host)
            beside = start_local_deployment(cleanup, scratch, deployment)
            contention = Contention()
            contention.started_before(servers_cpu([deployment, beside], local.registry.proc.pid))
            for n in range(repeat):  # interleaved, so a busy moment hits both alike
                log(f"round {n + 1} of {repeat}")
                engine.append(engine_once(local.ref, scratch / "engine.tar"))
                build = build_once(deployment, path)
                builds.append(build)
                fetches.append(fetch_once(build.location, scratch / "fetched.tar", build.sha256))
                local_builds.append(build_once(beside, path))
                forget(beside, build.key)
                if n + 1 < repeat:
                    forget(deployment, build.key)
            log(f"cached redirects for {args.duration} s")
            load = load_test(deployment, path, local.registry, args)
        except (AssertionError, BenchFailed, MissingTool, StartFailed) as exc:
            logs = "\n".join(d.describe() for d in (deployment, beside) if d is not None)
            raise SystemExit(f"service bench: {exc}\n{logs}") from None
    print_summary(image, engine, builds, local_builds, fetches, load, args)
    print(contention.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
