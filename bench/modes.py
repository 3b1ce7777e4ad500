"""Every way in and out of the engine, each beside the squash from the OCI layout to a file.

For each layer compression (none, gzip, zstd) and each of a full squash and --keep-base 2,
the squash from the bench image's OCI layout into a `docker load` tar is the reference;
the same squash into an OCI layout and pushed to the local registry, and all three again
from the image in that registry, run in the same interleaved rounds. Each row gives the
best wall time of its rounds (its ratio to the reference's), the CPU of that run and the
registry server's meanwhile (it serves the source and takes the push on the same cores),
the highest peak RSS and how far it lies above the floor: the interpreter with squashd's
imports (`squashd --help`), and with the registry client's too (httpx, ssl) for the modes
that talk to a registry.

The goals (OVER where missed): a peak RSS of at most 100 MiB; a push within 1.4x the
time of the file and within the file's memory above its floor plus the push's chunk
(--push-chunk-size, 8 MiB); a registry source within 1.1x the layout source (same
destination); and a partial squash from the registry that downloads each kept layer in
full once (counted in the registry's access log). Every mode's squashed layer must be
the reference's, digest for digest. Outputs are removed before each run (ext4 flushes a
file renamed over an old one, a cost of the file system that no mode should pay here).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench_image import ImageStats
from squash_bench import (
    LocalImage,
    Run,
    log,
    oci_ref,
    print_head,
    process_usage,
    run_child,
    squashd_bin,
)

from squash.oci import REF_NAME

COMPRESSIONS = ("none", "gzip", "zstd")
KEEPS = (0, 2)
WAYS = [(s, d) for s in ("layout", "registry") for d in ("file", "oci", "push")]
TARGET_RSS_MIB = 100
TARGET_PUSH_RATIO = 1.4  # a push's wall time / the file's
TARGET_SOURCE_RATIO = 1.1  # from the registry / from the layout, same destination
CHUNK_MIB = 8  # what a push holds beyond the file: its chunk (--push-chunk-size)
PUSHED_REPO = "bench/pushed"


class ModeFailed(Exception):
    """A mode did not give the reference's layer, or did not run."""


@dataclass(frozen=True)
class Mode:
    source: str  # "layout" or "registry"
    dest: str  # "file", "oci" or "push"
    compression: str
    keep: int

    @property
    def label(self) -> str:
        keep = f"keep {self.keep}" if self.keep else "full"
        return f"{self.compression:4} {keep:6} {self.source:8} -> {self.dest}"

    @property
    def talks_to_a_registry(self) -> bool:
        return self.source == "registry" or self.dest == "push"


@dataclass
class Measured:
    runs: list[Run] = field(default_factory=list)
    registry_cpu: list[float] = field(default_factory=list)
    kept_downloads: int = 0  # the most full GETs of one kept layer in a run

    @property
    def best(self) -> int:
        return min(range(len(self.runs)), key=lambda i: self.runs[i].wall)

    @property
    def rss_mib(self) -> float:
        return max(r.maxrss_kib for r in self.runs) / 1024


def floors(work: Path) -> tuple[float, float]:
    """Peak RSS (MiB) of the interpreter with squashd's imports, and with the registry
    client's too."""
    logf = work / "out" / "floor.log"
    cli = run_child([str(squashd_bin()), "--help"], logf)
    python = str(squashd_bin().with_name("python"))
    client = "import squash.cli; from squash.distribution.client import Registry"
    registry = run_child([python, "-c", client], logf)
    if cli.rc or registry.rc:
        raise ModeFailed(f"the floors did not run: {logf.read_text(errors='replace')[-2000:]}")
    return cli.maxrss_kib / 1024, registry.maxrss_kib / 1024


def _destination(mode: Mode, local: LocalImage, work: Path) -> str:
    """Where `mode` writes; what an earlier run left there is removed first."""
    name = f"mode-{mode.compression}-{mode.keep}-{mode.source}"
    if mode.dest == "file":
        out = work / "out" / f"{name}.tar"
        out.unlink(missing_ok=True)
        return str(out)
    if mode.dest == "oci":
        layout = work / "out" / f"{name}.layout"
        shutil.rmtree(layout, ignore_errors=True)
        return f"oci:{layout}:t"
    return local.registry.ref(f"{PUSHED_REPO}-{name}", "t")


def _squashed_layer(mode: Mode, local: LocalImage, dest: str) -> str:
    """The digest of the layer the squash wrote (the last of its image's layers)."""
    if mode.dest == "file":
        with tarfile.open(dest, "r:") as arc:
            manifest = json.load(arc.extractfile("manifest.json"))  # type: ignore[arg-type]
        return "sha256:" + os.path.basename(manifest[0]["Layers"][-1])
    if mode.dest == "oci":
        layout_text, _, tag = dest.removeprefix("oci:").rpartition(":")
        layout = Path(layout_text)
        # the image's entry is the one tagged `tag`; its provenance referrer has no tag
        top = next(
            entry["digest"]
            for entry in json.loads((layout / "index.json").read_text())["manifests"]
            if (entry.get("annotations") or {}).get(REF_NAME) == tag
        )
        blobs = layout / "blobs" / "sha256"
        return str(
            json.loads((blobs / top.removeprefix("sha256:")).read_bytes())["layers"][-1]["digest"]
        )
    repository = dest.removeprefix(f"docker://{local.registry.host}/").rsplit(":", 1)[0]
    manifest = local.registry.manifest(repository, "t")
    return str(manifest["layers"][-1]["digest"]) if manifest else "nothing"


def _full_downloads(log_text: str, repository: str, digest: str) -> int:
    """Full GETs of a blob (200, not a 206 to a Range) in the registry's access log."""
    return log_text.count(f'"GET /v2/{repository}/blobs/{digest} HTTP/1.1" 200 ')


def run_mode(
    mode: Mode, image: ImageStats, local: LocalImage, work: Path
) -> tuple[Run, float, int, str]:
    """One timed squash in `mode`: the run, the registry server's CPU meanwhile, the most
    full downloads of one kept layer, and the squashed layer's digest."""
    dest = _destination(mode, local, work)
    source = oci_ref(image) if mode.source == "layout" else local.ref
    cmd = [str(squashd_bin()), "export", "-q", source, "-o", dest]
    cmd += ["--layer-compression", mode.compression]
    if mode.keep:
        cmd += ["--keep-base", str(mode.keep)]
    assert local.registry.proc is not None
    pid, registry_log = local.registry.proc.pid, local.registry.log_path
    logged, cpu0 = registry_log.stat().st_size, process_usage(pid)[0]
    logf = work / "out" / "mode.log"
    run = run_child(cmd, logf)
    registry_cpu = process_usage(pid)[0] - cpu0
    if run.rc != 0:
        tail = logf.read_text(errors="replace").strip().splitlines() or ["(no output)"]
        raise ModeFailed(f"{mode.label}: exit {run.rc}: {tail[-1]}")
    with open(registry_log, "rb") as f:
        f.seek(logged)
        text = f.read().decode("utf-8", "replace")
    repository = local.ref.removeprefix(f"docker://{local.registry.host}/").rsplit(":", 1)[0]
    kept = [x.digest for x in image.layers[: mode.keep]] if mode.source == "registry" else []
    downloads = max((_full_downloads(text, repository, d) for d in kept), default=0)
    return run, registry_cpu, downloads, _squashed_layer(mode, local, dest)


def modes() -> Iterator[Mode]:
    for compression in COMPRESSIONS:
        for keep in KEEPS:
            for source, dest in WAYS:  # the reference (layout -> file) first
                yield Mode(source, dest, compression, keep)


def measure(image: ImageStats, local: LocalImage, work: Path, repeat: int) -> dict[Mode, Measured]:
    """Every mode in `repeat` interleaved rounds; raises ModeFailed on a wrong layer."""
    measured: dict[Mode, Measured] = {}
    layers: dict[tuple[str, int], str] = {}
    for n in range(repeat):
        log(f"modes: round {n + 1} of {repeat}")
        for mode in modes():
            run, cpu, downloads, layer = run_mode(mode, image, local, work)
            want = layers.setdefault((mode.compression, mode.keep), layer)
            if layer != want:
                raise ModeFailed(f"{mode.label}: layer {layer[:19]}, not the file's {want[:19]}")
            m = measured.setdefault(mode, Measured())
            m.runs.append(run)
            m.registry_cpu.append(cpu)
            m.kept_downloads = max(m.kept_downloads, downloads)
    return measured


def _goals(
    mode: Mode, m: Measured, measured: dict[Mode, Measured], floor: float, file_floor: float
) -> tuple[str, bool]:
    """The goals of `mode` that apply, each ok or OVER; and whether all were met."""
    checks: list[tuple[str, bool]] = [(f"RSS <= {TARGET_RSS_MIB}", m.rss_mib <= TARGET_RSS_MIB)]
    reference = measured[Mode("layout", "file", mode.compression, mode.keep)]
    wall = m.runs[m.best].wall
    if mode.dest == "push":
        ratio = wall / reference.runs[reference.best].wall
        checks.append((f"{ratio:.2f}x file <= {TARGET_PUSH_RATIO}", ratio <= TARGET_PUSH_RATIO))
        above, file_above = m.rss_mib - floor, reference.rss_mib - file_floor
        checks.append(
            (f"{above - file_above:+.0f} MiB <= chunk {CHUNK_MIB}", above <= file_above + CHUNK_MIB)
        )
    if mode.source == "registry":
        layout = measured[Mode("layout", mode.dest, mode.compression, mode.keep)]
        ratio = wall / layout.runs[layout.best].wall
        checks.append(
            (f"{ratio:.2f}x layout <= {TARGET_SOURCE_RATIO}", ratio <= TARGET_SOURCE_RATIO)
        )
        if mode.keep:
            once = m.kept_downloads == 1
            checks.append((f"kept layers read {m.kept_downloads}x", once))
    text = ", ".join(f"{what} {'ok' if ok else 'OVER'}" for what, ok in checks)
    return text, all(ok for _, ok in checks)


def print_table(
    measured: dict[Mode, Measured], floors_mib: tuple[float, float], repeat: int
) -> list[str]:
    """The table; returns the modes that missed a goal."""
    file_floor, registry_floor = floors_mib
    titles = [
        "== every way in and out, beside the squash from the OCI layout to a file; "
        f"best of {repeat} interleaved rounds ==",
        f"floor: the interpreter with squashd's imports (squashd --help) {file_floor:.0f} MiB; "
        f"with the registry client's (httpx, ssl) {registry_floor:.0f} MiB",
    ]
    cols = ("wall s", "x file", "CPU s", "reg CPU", "RSS MiB", "> floor")
    print_head(titles, f"{'mode':32}", cols, "goals", 60)
    missed = []
    for mode, m in measured.items():
        reference = measured[Mode("layout", "file", mode.compression, mode.keep)]
        best = m.runs[m.best]
        floor = registry_floor if mode.talks_to_a_registry else file_floor
        goals, ok = _goals(mode, m, measured, floor, file_floor)
        if not ok:
            missed.append(mode.label)
        cells = [
            f"{best.wall:.2f}",
            f"{best.wall / reference.runs[reference.best].wall:.2f}",
            f"{best.cpu:.2f}",
            f"{m.registry_cpu[m.best]:.2f}" if mode.talks_to_a_registry else "-",
            f"{m.rss_mib:.0f}",
            f"{m.rss_mib - floor:.0f}",
        ]
        print(f"{mode.label:32} " + " ".join(f"{c:>7}" for c in cells) + f"  {goals}")
    print(
        "x file = best wall / best wall of the squash from the layout to a file (same compression\n"
        "and keep); reg CPU = the registry server's CPU during that run (not in CPU s); > floor =\n"
        "peak RSS above the floor (the registry client's for the modes that talk to a registry)."
    )
    sys.stdout.flush()
    return missed


def report(image: ImageStats, local: LocalImage, work: Path, repeat: int) -> list[str]:
    """Measure every mode and print the table; returns the modes over a goal (or why the
    step failed)."""
    try:
        floors_mib = floors(work)
        measured = measure(image, local, work, repeat)
    except ModeFailed as exc:
        log(f"modes FAILED: {exc}")
        return [f"modes: {exc}"]
    return print_table(measured, floors_mib, repeat)
