"""Benchmark: `docker pull` through squashd's registry front against `docker pull` of the
original from the registry, measured in one run.

Starts its own docker-registry, redis-server, moto's S3 server, a deployment (`Stack`: one
web process and one Celery worker, artifacts in S3) and a private dockerd (testbed/daemons.py,
the tests' own), pushes the image squash_bench.py builds (cached under bench/work), then,
for --repeat rounds, interleaved so a busy moment hits both alike:

1. original: `docker rmi` then `docker pull REGISTRY/bench/image:TAG` (its layers, gzip);
2. cold squashed: the artifact evicted (its S3 objects and Redis records deleted), then
   `docker pull WEB/bench/image:TAG`: the tag resolved, the build, the layer copied out of
   the archive by S3, the download;
3. warm squashed: `docker rmi` and the same pull again (built already: a cache hit).

It prints the best of each and the ratios cold ÷ original and warm ÷ original. The
original's warm pull is its pull (the registry has no cache to warm). Everything started
here is stopped and removed at the end, on failure, Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # testbed/
sys.path.insert(0, str(Path(__file__).resolve().parent))  # squash_bench, bench_image

import bench_image
from service_bench import forget, start_deployment
from squash_bench import REGISTRY_REPO, _terminate, local_registry, log, mib

from testbed.daemons import Dockerd, remove_tree, short_dir
from testbed.process import StartFailed
from testbed.service import Stack
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=HERE / "work", help="image cache and scratch")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (the best counts)")
    args = ap.parse_args(argv)
    work: Path = args.work.resolve()
    image = bench_image.build_image(work, False, log)
    signal.signal(signal.SIGTERM, _terminate)
    scratch = Path(tempfile.mkdtemp(prefix="pull-", dir=work))
    rounds: list[tuple[float, float, float]] = []
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        local = cleanup.enter_context(local_registry(image, scratch))
        try:
            deployment = start_deployment(cleanup, scratch, local.registry.host)
            root = short_dir("sqd-bench-docker-")
            dockerd = Dockerd(root, insecure_registries=[local.registry.host])
            cleanup.callback(remove_tree, root)
            cleanup.callback(dockerd.stop)
            dockerd.start()
            host = deployment.web.url.removeprefix("http://")
            original = f"{local.registry.host}/{REGISTRY_REPO}:{image.tag}"
            squashed = f"{host}/{REGISTRY_REPO}:{image.tag}"
            for n in range(max(1, args.repeat)):
                log(f"round {n + 1} of {args.repeat}")
                if n:
                    forget(deployment, squashed_key(deployment, f"{REGISTRY_REPO}/{image.tag}"))
                plain = pull_seconds(dockerd, original)
                cold = pull_seconds(dockerd, squashed)
                warm = pull_seconds(dockerd, squashed)
                log(f"  original {plain:.2f} s, squashed cold {cold:.2f} s, warm {warm:.2f} s")
                rounds.append((plain, cold, warm))
        except (AssertionError, MissingTool, StartFailed) as exc:
            raise SystemExit(f"pull bench: {exc}") from None
    plain, cold, warm = (min(r[i] for r in rounds) for i in range(3))
    print(f"\n## docker pull through squashd ({image.tag}, {mib(image.tar_bytes)} of layers)\n")
    print(f"| pull | best of {len(rounds)} | ÷ the original's pull |")
    print("|---|---|---|")
    print(f"| the original from the registry | {plain:.2f} s | 1.00x |")
    print(f"| squashed, cold (resolve + build + copy-out + download) | {cold:.2f} s "
          f"| {cold / plain:.2f}x |")  # fmt: skip
    print(f"| squashed, warm (built: a cache hit) | {warm:.2f} s | {warm / plain:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
