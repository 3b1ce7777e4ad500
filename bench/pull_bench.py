"""Benchmark: pulls through squashd against the same pulls of the original from the
registry, measured in one run: `docker pull` through the registry front, and containerd's
pull through squashd as its mirror (hosts.toml) under SQUASHD_MIRROR_COLD=wait and
=original.

Starts its own docker-registry, redis-server, moto's S3 server, a deployment (`Stack`: one
web process and one Celery worker, artifacts in S3; a second web process on the same
board, store and worker hands out originals), a private dockerd and containerd
(testbed/daemons.py, the tests' own), pushes the image squash_bench.py builds (cached
under bench/work), then, for --repeat rounds, interleaved so a busy moment hits all alike:

1. docker, original: `docker rmi` then `docker pull REGISTRY/bench/image:TAG`;
2. docker, cold squashed: the artifact evicted (its S3 objects and Redis records deleted),
   then `docker pull WEB/bench/image:TAG`: the tag resolved, the build, the layer copied
   out of the archive by S3, the download;
3. docker, warm squashed: `docker rmi` and the same pull again (a cache hit);
4. containerd, straight: `ctr images pull --plain-http REGISTRY/bench/image:TAG`;
5. containerd through the mirror (`ctr images pull --hosts-dir`, the image's own name),
   for each of wait and original: cold (the artifact evicted; under wait the pull waits
   for the build, under original it gets the original at once, passed through squashd,
   and the build starts), then warm (under original once the tag has turned: the
   squashed image). Under original it also times how long the tag took to turn.

Every pull starts from nothing (the image removed, containerd's content collected, the
page cache dropped). It prints the best of each and its ratio to the original's pull.
Everything started here is stopped and removed at the end, on failure, Ctrl-C and
SIGTERM too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # testbed/
sys.path.insert(0, str(Path(__file__).resolve().parent))  # squash_bench, bench_image

import bench_image
from service_bench import forget, start_deployment
from squash_bench import REGISTRY_REPO, _terminate, local_registry, log, mib

from testbed.daemons import Containerd, Dockerd, remove_tree, short_dir
from testbed.process import HOST, StartFailed
from testbed.service import Stack, WebServer
from testbed.tools import MissingTool

HERE = Path(__file__).resolve().parent


def pull_seconds(dockerd: Dockerd, name: str) -> float:
    """`docker pull NAME` from nothing (the image removed first), in seconds."""
    dockerd.docker("rmi", "--force", name, check=False)
    fresh_caches()
    t0 = time.perf_counter()
    dockerd.docker("pull", "--quiet", name, timeout=1800)
    return time.perf_counter() - t0


def fresh_caches() -> None:
    """Each pull starts from the same state: the previous one's writes on disk and the
    page cache dropped. Without it each extraction of 460 MiB in a row took longer on this
    VM (12, 22, 28, 31 s for the same pull), and the pull timed last in a round lost."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as caches:
            caches.write("3\n")
    except OSError as exc:
        log(f"  the page cache stays (not root?): {exc}; later pulls may be slower")


def squashed_key(deployment: Stack, path: str) -> str:
    """The artifact a squashed pull of `path` (NS/REPO/TAG) built: a plain /c1 request's."""
    status, headers, _ = deployment.c1(path, method="HEAD")
    if status != 302:
        raise SystemExit(f"pull bench: /c1 HEAD of {path} answered {status}")
    return headers["x-squashd-export"]


def ctr_pull(containerd: Containerd, ref: str, how: list[str]) -> tuple[float, int]:
    """`ctr images pull HOW REF` from nothing, in seconds, and the layers it got."""
    containerd.ctr("images", "rm", "--sync", ref, check=False)  # content collected too
    fresh_caches()
    t0 = time.perf_counter()
    containerd.ctr("images", "pull", *how, ref, timeout=1800)
    seconds = time.perf_counter() - t0
    (line,) = [row for row in containerd.text("images", "list").splitlines()
               if row.split()[:1] == [ref]]  # fmt: skip
    return seconds, len(json.loads(containerd.content(line.split()[2]))["layers"])


def mirror_hosts(root: Path, web: WebServer, registry: str, server: str) -> list[str]:
    """`--hosts-dir` of a hosts.toml naming `web` the mirror of `registry`; `server` is a
    port nothing answers, so a pull squashd fails fails loudly."""
    (root / registry).mkdir(parents=True, exist_ok=True)
    (root / registry / "hosts.toml").write_text(
        f'server = "http://{server}"\n\n[host."{web.url}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    return ["--hosts-dir", str(root)]


def turned(web: WebServer, path: str, original: str, since: float) -> float:
    """Seconds from `since` until the tag at `path` resolves to another digest than the
    `original` (the squashed image, once built)."""
    while True:
        status, headers, _ = web.get(path, method="HEAD", timeout=60)
        if status == 200 and headers["docker-content-digest"] != original:
            return time.perf_counter() - since
        time.sleep(0.25)


def evict(deployment: Stack, path: str) -> None:
    """The artifact of `path` (NS/REPO/TAG) forgotten, if it is built: the next pull is cold."""
    if deployment.c1(path, method="HEAD")[0] == 302:
        forget(deployment, squashed_key(deployment, path))


MIRROR = ("wait", "original")  # SQUASHD_MIRROR_COLD of the two web processes
CTR_ROWS = [
    ("straight", "the original from the registry"),
    ("wait cold", "mirror, wait, cold (resolve + build + download)"),
    ("wait warm", "mirror, wait, warm (built: a cache hit)"),
    ("original cold", "mirror, original, cold (the original, passed through)"),
    ("original warm", "mirror, original, warm (once turned: squashed)"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=HERE / "work", help="image cache and scratch")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (the best counts)")
    ap.add_argument("--runtimes", default="docker,containerd", help="which pulls to measure")
    args = ap.parse_args(argv)
    runtimes = set(args.runtimes.split(","))
    work: Path = args.work.resolve()
    image = bench_image.build_image(work, False, log)
    signal.signal(signal.SIGTERM, _terminate)
    scratch = Path(tempfile.mkdtemp(prefix="pull-", dir=work))
    rounds: list[tuple[float, float, float]] = []
    ctr_rounds: list[dict[str, tuple[float, int]]] = []
    turns: list[float] = []
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        local = cleanup.enter_context(local_registry(image, scratch))
        try:
            deployment = start_deployment(cleanup, scratch, local.registry.host)
            webs = {"wait": deployment.web}
            env = {**deployment.env, "SQUASHD_MIRROR_COLD": "original"}
            webs["original"] = WebServer(scratch / "web-original", env)
            cleanup.callback(webs["original"].stop)
            webs["original"].start()
            dockerd = containerd = None
            if "docker" in runtimes:
                root = short_dir("sqd-bench-docker-")
                dockerd = Dockerd(root, insecure_registries=[local.registry.host])
                cleanup.callback(remove_tree, root)
                cleanup.callback(dockerd.stop)
                dockerd.start()
            if "containerd" in runtimes:
                root = short_dir("sqd-bench-ctrd-")
                containerd = Containerd(root)
                cleanup.callback(remove_tree, root)
                cleanup.callback(containerd.stop)
                containerd.start()
            nobody = cleanup.enter_context(socket.socket())
            nobody.bind((HOST, 0))  # bound, never listening: a `server` that refuses
            server = f"{HOST}:{nobody.getsockname()[1]}"
            hosts = {
                mode: mirror_hosts(scratch / f"hosts-{mode}", web, local.registry.host, server)
                for mode, web in webs.items()
            }
            host = deployment.web.url.removeprefix("http://")
            path = f"{REGISTRY_REPO}/{image.tag}"
            original = f"{local.registry.host}/{REGISTRY_REPO}:{image.tag}"
            squashed = f"{host}/{REGISTRY_REPO}:{image.tag}"
            manifest = f"/v2/{REGISTRY_REPO}/manifests/{image.tag}"
            source = local.registry.get(manifest, {"Accept": bench_image.MT_MANIFEST})[1]
            for n in range(max(1, args.repeat)):
                log(f"round {n + 1} of {args.repeat}")
                if dockerd is not None:
                    evict(deployment, path)
                    plain = pull_seconds(dockerd, original)
                    cold = pull_seconds(dockerd, squashed)
                    warm = pull_seconds(dockerd, squashed)
                    log(f"  docker: original {plain:.2f} s, squashed cold {cold:.2f} s, "
                        f"warm {warm:.2f} s")  # fmt: skip
                    rounds.append((plain, cold, warm))
                if containerd is None:
                    continue
                pulled = {"straight": ctr_pull(containerd, original, ["--plain-http"])}
                for mode in MIRROR:
                    evict(deployment, path)
                    began = time.perf_counter()
                    pulled[f"{mode} cold"] = ctr_pull(containerd, original, hosts[mode])
                    if mode == "original":
                        turns.append(turned(webs[mode], manifest, source["docker-content-digest"],
                                            began))  # fmt: skip
                    pulled[f"{mode} warm"] = ctr_pull(containerd, original, hosts[mode])
                said = ", ".join(f"{k} {t:.2f} s ({n} layers)" for k, (t, n) in pulled.items())
                log(
                    f"  containerd: {said}" + (f"; turned after {turns[-1]:.2f} s" if turns else "")
                )
                ctr_rounds.append(pulled)
        except (AssertionError, MissingTool, StartFailed) as exc:
            raise SystemExit(f"pull bench: {exc}") from None
    if rounds:
        plain, cold, warm = (min(r[i] for r in rounds) for i in range(3))
        print(f"\n## docker pull through squashd ({image.tag}, {mib(image.tar_bytes)} of layers)\n")
        print(f"| pull | best of {len(rounds)} | ÷ the original's pull |")
        print("|---|---|---|")
        print(f"| the original from the registry | {plain:.2f} s | 1.00x |")
        print(f"| squashed, cold (resolve + build + copy-out + download) | {cold:.2f} s "
              f"| {cold / plain:.2f}x |")  # fmt: skip
        print(f"| squashed, warm (built: a cache hit) | {warm:.2f} s | {warm / plain:.2f}x |")
    if ctr_rounds:
        print(f"\n## containerd pull through squashd as its mirror ({image.tag}, "
              f"{mib(image.tar_bytes)} of layers)\n")  # fmt: skip
        print(f"| pull | best of {len(ctr_rounds)} | ÷ the original's pull | layers |")
        print("|---|---|---|---|")
        best = {key: min(r[key][0] for r in ctr_rounds) for key, _ in CTR_ROWS}
        for key, label in CTR_ROWS:
            layers = ctr_rounds[-1][key][1]
            print(
                f"| {label} | {best[key]:.2f} s | {best[key] / best['straight']:.2f}x | {layers} |"
            )
        print(f"\nUnder original the tag turned to the squashed image {min(turns):.2f} s "
              f"(best of {len(turns)}) after the cold pull began.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
