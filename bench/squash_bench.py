"""Benchmark: squash a realistic multi-layer image and compare with the I/O + inflate floor.

Builds (once, cached under bench/work/) an OCI layout of a Debian bookworm root plus four
layers on top, then measures in one run:

1. the floor: read each gzip layer blob in 1 MiB chunks, sha256 it, inflate it with isal and
   sha256 the tar stream (and the same without hashing the tar stream);
2. `squashd export ... --layer-compression none` (wall time, CPU time and the child's own peak
   RSS, which GNU time reports: see run_child);
3. the same with `--layer-compression gzip`;
4. the ratios squash / floor against the targets (<= 1.1x none, <= 1.25x gzip, <= 100 MiB);
5. for comparison, a squash with umoci (unpack, then repack the whole root as one layer);
6. every way in and out (bench/modes.py): a fresh `docker-registry` on 127.0.0.1 (testbed/,
   the tests' too) gets the layout pushed with skopeo (the gzip blobs as they are), then the
   squash from the layout to a file, into an OCI layout and pushed to that registry, and the
   same from the registry, for none, gzip and zstd, full and --keep-base 2, each beside the
   squash to a file; the registry and its storage are removed at the end, even on failure.
   --no-registry skips it.

Steps 1-3 and 6 run in --repeat interleaved rounds; the best (min) wall time of each, the CPU
time of that run and the highest peak RSS are reported. umoci runs once. All files are warm in
the page cache: nothing is dropped between runs. Each output is removed before its run (ext4
flushes a file renamed over an old one). The CPU time other processes took is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from isal import isal_zlib

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_image
import many_files
from bench_image import LISTS, PACKAGES_LIST, ImageStats

if TYPE_CHECKING:
    from testbed.registry import Registry

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHUNK = 1 << 20
MiB = 1 << 20
# squash / floor, by layer compression: the Debian image, then the many-files image
TARGETS = {"none": 1.1, "gzip": 1.25}
MANY_FILES_TARGETS = {"none": 2.0, "gzip": 2.0}
TARGET_RSS_MIB = 100  # the Debian image
MANY_FILES_RSS_MIB = 150  # the many-files image: 400,000 paths
TARGET_MEMBERS_RSS_MIB = 400  # a 2-million-member image
TARGET_PATH_BYTES = 100  # of memory per path, above a fixed base
REGISTRY_REPO = "bench/image"
GNU_TIME = "/usr/bin/time"  # Debian package `time`


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def mib(n: float) -> str:
    return f"{n / MiB:,.1f} MiB"


# ---------------------------------------------------------------------------------------------
# floor


def inflate_blob(path: Path, hash_tar: bool) -> tuple[str, str, int]:
    """Read a gzip blob in 1 MiB chunks: sha256 it, inflate it (isal), optionally sha256 the tar.

    Returns (blob digest, tar digest or "", tar size).
    """
    blob_h = hashlib.sha256()
    tar_h = hashlib.sha256()
    dec = isal_zlib.decompressobj(wbits=31)
    tar_size = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            blob_h.update(chunk)
            while chunk:
                out = dec.decompress(chunk)
                tar_size += len(out)
                if hash_tar:
                    tar_h.update(out)
                chunk = b""
                if dec.eof:  # another gzip member may follow
                    chunk = dec.unused_data
                    dec = isal_zlib.decompressobj(wbits=31)
    return (
        "sha256:" + blob_h.hexdigest(),
        ("sha256:" + tar_h.hexdigest()) if hash_tar else "",
        tar_size,
    )


def measure_floor(image: ImageStats, hash_tar: bool) -> tuple[float, float]:
    """(wall, CPU) seconds to read + sha256 + inflate (+ sha256 the tar of) every layer."""
    blobs = Path(image.layout) / "blobs" / "sha256"
    c0 = time.process_time()
    t0 = time.perf_counter()
    for layer in image.layers:
        digest, diff_id, size = inflate_blob(blobs / layer.digest.split(":")[1], hash_tar)
        if (
            digest != layer.digest
            or size != layer.tar_size
            or (hash_tar and diff_id != layer.diff_id)
        ):
            raise SystemExit(f"layer {layer.name}: blob does not match the recorded digests")
    return time.perf_counter() - t0, time.process_time() - c0


# ---------------------------------------------------------------------------------------------
# running a child


@dataclass
class Run:
    """One timed child process."""

    wall: float
    cpu: float
    maxrss_kib: int
    rc: int  # the command's exit status; 128 + N if signal N killed it
    note: str = ""


def run_child(cmd: list[str], log_path: Path, timeout: float | None = None) -> Run:
    """Run `cmd` under GNU time, output to `log_path`: wall time, CPU time and peak RSS.

    Not wait4's ru_maxrss of a child started from here: Linux folds the high-water mark of the
    address space a process execs from into its ru_maxrss, and subprocess starts the child with
    vfork, so it would be at least this (larger, validating) process's own peak. GNU time forks
    `cmd` from its own ~1 MiB process and reports its ru_maxrss (`%M`): the peak of the
    command's own address space (or of its largest waited-for descendant), over its whole run.
    Polling the child's VmHWM in /proc could miss a peak at the very end (the address space is
    gone once it exits); stopping it at its exit with ptrace would not, but is far more code.
    GNU time costs about a millisecond of wall and CPU time (wait4 counts its CPU with the
    command's).

    GNU time and the command run in a process group of their own, killed on the timeout or any
    exception here (Ctrl-C, SIGTERM): killing GNU time alone would leave the command running.
    """
    with (
        open(log_path, "wb") as out,
        tempfile.NamedTemporaryFile("r", prefix="maxrss-", suffix=".txt") as rss,
    ):
        argv = [GNU_TIME, "--quiet", "--format=%M", f"--output={rss.name}", *cmd]
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, process_group=0
        )
        try:
            if timeout is None:
                _, status, ru = os.wait4(proc.pid, 0)
            else:
                while not (reaped := os.wait4(proc.pid, os.WNOHANG))[0]:
                    if time.perf_counter() - t0 > timeout:
                        raise TimeoutError(f"{cmd[0]} took over {timeout:.0f} s")
                    time.sleep(0.05)
                _, status, ru = reaped
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            raise
        wall = time.perf_counter() - t0
        maxrss = int(rss.read().strip() or 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(wall, ru.ru_utime + ru.ru_stime, maxrss, proc.returncode)


def check_run(run: Run, cmd: list[str], log_path: Path) -> None:
    if run.rc != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"command failed (exit {run.rc}): {' '.join(cmd)}\n{tail}")


# ---------------------------------------------------------------------------------------------
# how busy the machine was


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all CPUs, from /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds used by this process and its waited-for children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Contention:
    """Measures the CPU time other processes took while the benchmark ran."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.monotonic(), _busy_seconds(), _own_seconds()

    def started_before(self, cpu_seconds: float) -> None:
        """A running child has used `cpu_seconds` already: not in this window, but counted as
        ours once it is reaped (the registry server and the push that preceded the window)."""
        self.own0 += cpu_seconds

    def report(self) -> str:
        wall = time.monotonic() - self.t0
        others = max(0.0, (_busy_seconds() - self.busy0) - (_own_seconds() - self.own0))
        cores = others / wall if wall > 0 else 0.0
        text = f"other processes used {others:.1f} CPU-s during the timed steps ({cores:.2f} CPUs)"
        if cores > 0.2:
            text += ": the machine was not idle, times are noisy"
        return text


# ---------------------------------------------------------------------------------------------
# squashd


def squashd_bin() -> Path:
    return ROOT / ".venv" / "bin" / "squashd"


def squashd_ready() -> str | None:
    """None if `squashd export --help` works, else why not."""
    exe = squashd_bin()
    if not exe.exists():
        return f"{exe} does not exist (make install?)"
    res = subprocess.run(
        [str(exe), "export", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    if res.returncode != 0:
        return f"`squashd export --help` failed:\n{(res.stdout + res.stderr)[-2000:]}"
    if "--layer-compression" not in res.stdout:
        return "`squashd export --help` does not list --layer-compression"
    return None


def oci_ref(image: ImageStats) -> str:
    return f"oci:{image.layout}:{image.tag}"


def squash_cmd(source: str, out: Path | str, compression: str) -> list[str]:
    return [
        str(squashd_bin()),
        "export",
        source,
        "-o",
        str(out),
        "--layer-compression",
        compression,
    ]


@dataclass
class Squashed:
    """What validation learned about a squashed archive."""

    archive_bytes: int
    layer_blob_bytes: int
    layer_tar_bytes: int
    entries: int
    regular_files: int


def _clean(name: str) -> str:
    return name.removeprefix("./").strip("/")


def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.isdir():
        return "d"
    if m.issym():
        return "l"
    if m.islnk():
        return "h"
    return "f" if m.isreg() else "o"


def validate(out: Path, compression: str, expected: dict[str, list] | None) -> Squashed:
    """Check the archive: one layer, exact digests, and that the merge did what the layers say.

    With `expected` (the tree `umoci unpack` gives), the layer must hold exactly those paths,
    of the same kinds and regular-file sizes.
    """
    problems: list[str] = []
    with tarfile.open(out, "r:") as arc:
        members = {m.name: m for m in arc.getmembers()}
        for need in ("manifest.json", "index.json", "oci-layout"):
            if need not in members:
                problems.append(f"no {need} in the archive")
        if "manifest.json" not in members:
            raise SystemExit(f"{out}: {problems}")
        manifest = json.load(arc.extractfile("manifest.json"))  # type: ignore[arg-type]
        if len(manifest) != 1 or len(manifest[0]["Layers"]) != 1:
            raise SystemExit(f"{out}: manifest.json is not one image with one layer: {manifest}")
        config = json.load(arc.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != 1:
            problems.append(f"config has {len(diff_ids)} diff_ids")
        layer_name = manifest[0]["Layers"][0]
        layer_member = members[layer_name]
        blob_h = hashlib.sha256()
        src = arc.extractfile(layer_member)
        assert src is not None
        while chunk := src.read(CHUNK):
            blob_h.update(chunk)
        if not layer_name.endswith(blob_h.hexdigest()):
            problems.append(f"layer blob {layer_name} has sha256 {blob_h.hexdigest()}")
        # walk the layer tar: diff_id, names, a few merge results
        src = arc.extractfile(layer_member)
        assert src is not None
        hashing = _HashingReader(src, compression)
        seen: set[str] = set()
        dups = whiteouts = regular = 0
        types: dict[str, str] = {}
        sizes: dict[str, int] = {}
        passwd = b""
        with tarfile.open(fileobj=hashing, mode="r|") as layer:  # type: ignore[call-overload]
            for m in layer:
                name = _clean(m.name)
                if name in ("", "."):
                    continue
                if name in seen:
                    dups += 1
                seen.add(name)
                if os.path.basename(name).startswith(".wh."):
                    whiteouts += 1
                if m.isreg():
                    regular += 1
                types[name] = _tar_kind(m)
                sizes[name] = m.size
                if name == "etc/passwd" and m.isreg():
                    extracted = layer.extractfile(m)
                    assert extracted is not None, name
                    passwd = extracted.read()
        hashing.drain()
        if "sha256:" + hashing.tar_h.hexdigest() != diff_ids[0]:
            problems.append("diff_id is not the sha256 of the uncompressed layer")
    if dups:
        problems.append(f"{dups} duplicate paths in the layer")
    if whiteouts:
        problems.append(f"{whiteouts} whiteout entries left in the layer")
    gone = [
        "usr/share/doc",
        PACKAGES_LIST,
        "srv/app/node_modules/pkg-0001",
        "opt/share/locale/de",
        f"{LISTS}/deb.debian.org_debian_dists_bookworm_Release",
    ]
    for path in gone:
        if path in seen or any(p.startswith(path + "/") for p in seen):
            problems.append(f"{path} should be deleted but is in the layer")
    expect = {
        "opt/assets/model.bin": "f",
        "opt/lib/x86_64-linux-gnu/gconv": "l",
        "opt/share/locale/en/LC_MESSAGES/app.mo": "f",
        "srv/app/node_modules/pkg-0000/package.json": "f",
        "usr/bin/bash": "f",
    }
    for path, kind in expect.items():
        if types.get(path) != kind:
            problems.append(f"{path}: expected type {kind}, got {types.get(path)}")
    if any(p.startswith("opt/lib/x86_64-linux-gnu/gconv/") for p in seen):
        problems.append("children of opt/lib/x86_64-linux-gnu/gconv survived its replacement")
    if b"app:x:1000" not in passwd:
        problems.append("etc/passwd lacks the change from the update layer")
    if expected is not None:
        problems += compare_tree(types, sizes, expected)
    if problems:
        raise SystemExit(f"{out}: the squashed archive is not sane:\n  " + "\n  ".join(problems))
    return Squashed(
        archive_bytes=out.stat().st_size,
        layer_blob_bytes=layer_member.size,
        layer_tar_bytes=hashing.tar_size,
        entries=len(seen),
        regular_files=regular,
    )


def compare_tree(
    types: dict[str, str], sizes: dict[str, int], expected: dict[str, list]
) -> list[str]:
    """Differences between the squashed layer and the expected tree (a few examples each)."""
    out = []
    missing = sorted(expected.keys() - types.keys())
    extra = sorted(types.keys() - expected.keys())
    if missing:
        out.append(f"{len(missing)} paths missing, e.g. {missing[:5]}")
    if extra:
        out.append(f"{len(extra)} paths that should not be there, e.g. {extra[:5]}")
    wrong = []
    for path, kind in types.items():
        want = expected.get(path)
        if want is None:
            continue
        if kind == "h":  # a hard link: a regular file on disk; its size is on the target's entry
            kind = "f"
        elif kind == "f" and sizes[path] != want[1]:
            wrong.append(f"{path} has {sizes[path]} bytes, not {want[1]}")
            continue
        if kind != want[0]:
            wrong.append(f"{path} is of kind {kind}, not {want[0]}")
    if wrong:
        out.append(f"{len(wrong)} paths differ, e.g. {wrong[:5]}")
    return out


class _HashingReader:
    """File-like over the stored layer that inflates (gzip) and hashes the tar it yields."""

    def __init__(self, src: IO[bytes], compression: str) -> None:
        self.src = src
        self.dec = isal_zlib.decompressobj(wbits=31) if compression == "gzip" else None
        self.buf = bytearray()
        self.pos = 0  # bytes of buf already read
        self.tar_h = hashlib.sha256()
        self.tar_size = 0

    def _fill(self) -> bool:
        chunk = self.src.read(CHUNK)
        if not chunk:
            return False
        if self.dec is not None:
            chunk = self.dec.decompress(chunk)
        self.tar_h.update(chunk)
        self.tar_size += len(chunk)
        if self.pos:
            del self.buf[: self.pos]
            self.pos = 0
        self.buf += chunk
        return True

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self.buf) - self.pos < n) and self._fill():
            pass
        end = len(self.buf) if n < 0 else min(len(self.buf), self.pos + n)
        out = bytes(self.buf[self.pos : end])
        self.pos = end
        return out

    def drain(self) -> None:
        while self._fill():
            self.pos = len(self.buf)


# ---------------------------------------------------------------------------------------------
# the expected merged tree (once, from umoci unpack)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISLNK(mode):
        return "l"
    if stat.S_ISREG(mode):
        return "f"
    return "o"


def expected_tree(image: ImageStats, work: Path) -> dict[str, list] | None:
    """{path: [kind, size]} of the image's root as `umoci unpack` gives it; cached in work/."""
    cache = work / f"expected.recipe-{bench_image.RECIPE_VERSION}.json"
    if cache.exists() and cache.stat().st_mtime >= Path(image.layout, "index.json").stat().st_mtime:
        return json.loads(cache.read_text())
    if shutil.which("umoci") is None:
        return None
    log("computing the expected merged tree with umoci unpack (once)")
    base = work / "expected.tmp"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir()
    try:
        layout = base / "layout"
        shutil.copytree(image.layout, layout)
        cmd = ["umoci", "unpack", "--image", f"{layout}:{image.tag}", str(base / "bundle")]
        subprocess.run(cmd, check=True, capture_output=True)
        root = base / "bundle" / "rootfs"
        tree: dict[str, list] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                st = os.lstat(full)
                kind = _kind(st.st_mode)
                tree[os.path.relpath(full, root)] = [kind, st.st_size if kind == "f" else 0]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for stale in work.glob("expected.recipe-*.json"):
        stale.unlink()
    cache.write_text(json.dumps(tree))
    return tree


# ---------------------------------------------------------------------------------------------
# umoci


def umoci_squash(image: ImageStats, work: Path, timeout: float) -> tuple[Run, Run] | str:
    """Squash with umoci: unpack the image, then repack its whole root into a new one-layer image.

    Works on a copy of the layout. Returns the (unpack, repack) runs or why it was skipped.
    """
    if shutil.which("umoci") is None:
        return "umoci not installed"
    base = work / "umoci"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir()
    layout = base / "layout"
    shutil.copytree(image.layout, layout)
    bundle, empty = base / "bundle", base / "squashed"
    logf = base / "umoci.log"
    try:
        cmd = ["umoci", "unpack", "--image", f"{layout}:{image.tag}", str(bundle)]
        unpack = run_child(cmd, logf, timeout)
        check_run(unpack, cmd, logf)
        for cmd in (
            ["umoci", "new", "--image", f"{layout}:squashed"],
            ["umoci", "unpack", "--image", f"{layout}:squashed", str(empty)],
        ):
            subprocess.run(cmd, check=True, capture_output=True)
        shutil.rmtree(empty / "rootfs")
        (bundle / "rootfs").rename(empty / "rootfs")
        cmd = ["umoci", "repack", "--image", f"{layout}:squashed", str(empty)]
        repack = run_child(cmd, logf, timeout - unpack.wall)
        check_run(repack, cmd, logf)
        return unpack, repack
    except TimeoutError as exc:
        return f"skipped: {exc}"
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# the same image from a local registry (docker://)


def registry_missing() -> str | None:
    """None if the tools of the registry step are installed, else what is missing."""
    missing = [t for t in ("docker-registry", "skopeo") if shutil.which(t) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (make debs DEBS='docker-registry skopeo')"
    return None


@dataclass
class LocalImage:
    """The bench image, pushed into a registry of its own."""

    registry: Registry
    ref: str  # docker://127.0.0.1:PORT/bench/image:TAG


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops the registry


@contextlib.contextmanager
def local_registry(image: ImageStats, work: Path) -> Iterator[LocalImage]:
    """Start a fresh docker-registry (testbed/registry.py) and push the bench layout to it.

    Nothing of the registry is kept between runs: its directory (config, log, storage) is
    removed before the start and on the way out, whatever happens (SIGTERM included).
    """
    if str(ROOT) not in sys.path:  # testbed/ is not an installed package
        sys.path.insert(0, str(ROOT))
    # The testbed raises MissingTool, StartFailed or (a failed push) AssertionError; any of
    # them ends the benchmark with its message.
    from testbed.process import StartFailed
    from testbed.registry import Registry, push
    from testbed.tools import MissingTool

    root = work / "registry"
    shutil.rmtree(root, ignore_errors=True)  # left by a killed run
    try:
        registry = Registry(root)
    except MissingTool as exc:
        raise SystemExit(f"local registry: {exc}") from None
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        try:
            registry.start()
            ref = registry.ref(REGISTRY_REPO, image.tag)
            t0 = time.perf_counter()
            push(oci_ref(image), ref)
            push_seconds = time.perf_counter() - t0
            manifest = registry.manifest(REGISTRY_REPO, image.tag)
        except (AssertionError, MissingTool, StartFailed) as exc:
            raise SystemExit(f"local registry: {exc}\nregistry log:\n{registry.log()}") from None
        pushed = [d["digest"] for d in manifest["layers"]] if manifest else []
        if pushed != [x.digest for x in image.layers]:
            raise SystemExit(f"{ref}: the pushed layers are not the layout's blobs")
        log(f"pushed {ref} in {push_seconds:.1f} s (skopeo; the gzip blobs as they are)")
        yield LocalImage(registry, ref)
    finally:
        registry.stop()
        shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


def process_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS in KiB) of a running process, from /proc; zeros if unknown."""
    try:
        stat_fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0
    cpu = (int(stat_fields[11]) + int(stat_fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmHWM:")), 0)
    return cpu, hwm


# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the summary table."""

    label: str
    seconds: float | None
    rss_mib: float | None = None
    cpu: float | None = None
    note: str = ""
    target: str = ""  # the target column, if not the floor ratio of a squashd row


def squash_out(work: Path, compression: str) -> Path:
    return work / "out" / f"squash-{compression}.tar"


def squash_once(
    image: ImageStats,
    work: Path,
    compression: str,
    check: bool,
    expected: dict[str, list] | None,
    validator: Callable[[Path, str, dict[str, list] | None], Squashed] | None = None,
) -> Run:
    """One timed `squashd export`; with `check`, the output is validated (against `expected`,
    by `validator`, the Debian image's checks by default)."""
    out = squash_out(work, compression)
    out.parent.mkdir(exist_ok=True)
    out.unlink(missing_ok=True)
    cmd = squash_cmd(oci_ref(image), out, compression)
    logf = work / "out" / f"squash-{compression}.log"
    run = run_child(cmd, logf)
    check_run(run, cmd, logf)
    log(
        f"  squashd {compression:4}: {run.wall:.2f} s wall, {run.cpu:.2f} s CPU, "
        f"peak RSS {run.maxrss_kib / 1024:.0f} MiB"
    )
    if check:
        sq = (validator or validate)(out, compression, expected)
        run.note = f"out {mib(sq.archive_bytes)}"
        log(
            f"  valid: archive {mib(sq.archive_bytes)}, layer blob {mib(sq.layer_blob_bytes)}, "
            f"layer tar {mib(sq.layer_tar_bytes)}, {sq.entries:,} entries "
            f"({sq.regular_files:,} regular files)"
        )
    return run


def best_row(label: str, runs: list[Run], note: str = "", rss: bool = True) -> Row:
    """Best wall time (with its CPU time) and the highest peak RSS of `runs`."""
    best = min(runs, key=lambda r: r.wall)
    peak = max(r.maxrss_kib for r in runs) / 1024 if rss else None
    return Row(label, best.wall, peak, best.cpu, note or next((r.note for r in runs if r.note), ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=HERE / "work", help="cache and scratch directory")
    ap.add_argument(
        "--rebuild",
        action="store_true",
        help="rebuild the image layout (the debootstrap root stays cached in WORK/rootfs)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per timed step (best is reported)")
    ap.add_argument("--no-umoci", action="store_true", help="skip the umoci comparison")
    ap.add_argument("--umoci-timeout", type=float, default=300, help="give up on umoci after S")
    ap.add_argument(
        "--no-registry",
        action="store_true",
        help="skip the squash from a local registry (docker-registry + skopeo push)",
    )
    ap.add_argument(
        "--compression", nargs="+", default=["none", "gzip"], help="--layer-compression values"
    )
    ap.add_argument(
        "--no-many-files",
        action="store_true",
        help="skip the many-files image and the 2-million-member memory check",
    )
    args = ap.parse_args(argv)
    work: Path = args.work.resolve()
    if os.geteuid() != 0:
        log("warning: not root; debootstrap and umoci need root")
    if not os.access(GNU_TIME, os.X_OK):
        raise SystemExit(f"{GNU_TIME} is missing; it measures peak RSS (make debs DEBS=time)")

    image = bench_image.build_image(work, args.rebuild, log)
    print()
    print(f"image  oci:{image.layout}:{image.tag}")
    print(
        f"  {len(image.layers)} layers, {image.tar_bytes:,} bytes uncompressed "
        f"({mib(image.tar_bytes)}), {image.blob_bytes:,} bytes gzip ({mib(image.blob_bytes)}), "
        f"{image.entries:,} tar entries ({image.regular_files:,} regular files)"
    )
    for x in image.layers:
        print(
            f"  {x.name:8} {mib(x.tar_size):>12} tar  {mib(x.size):>11} gzip  "
            f"{x.entries:>7,} entries  {x.whiteouts:>5,} whiteouts"
        )
    print(
        f"  machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
        "blobs are warm in the page cache (nothing is dropped)"
    )
    print()

    repeat = max(1, args.repeat)
    why = squashd_ready()
    if why:
        log(f"squashd is not usable yet: {why}")
    expected = None
    if not why:
        expected = expected_tree(image, work)
        if expected is None:
            log("umoci missing: the output is checked without the expected tree")
    comps = [] if why else list(args.compression)
    skip_registry = (
        "skipped (--no-registry)"
        if args.no_registry
        else ("squashd is not usable" if why else registry_missing())
    )

    log("warm-up pass over the blobs (page cache)")
    measure_floor(image, False)
    floor_runs: list[Run] = []
    inflate_runs: list[Run] = []
    squash_runs: dict[str, list[Run]] = {c: [] for c in comps}
    missed: list[str] = []
    with contextlib.ExitStack() as stack:  # stops the registry and deletes it, even on failure
        local = None
        if skip_registry is None:
            log("starting a local registry and pushing the image to it")
            local = stack.enter_context(local_registry(image, work))
        contention = Contention()
        if local is not None and local.registry.proc is not None:
            contention.started_before(process_usage(local.registry.proc.pid)[0])
        for n in range(repeat):  # interleaved rounds, so a busy moment hits every step alike
            log(f"round {n + 1} of {repeat}")
            wall, cpu = measure_floor(image, True)
            floor_runs.append(Run(wall, cpu, 0, 0))
            wall2, cpu2 = measure_floor(image, False)
            inflate_runs.append(Run(wall2, cpu2, 0, 0))
            log(f"  floor {wall:.2f} s (without sha256 of the tar {wall2:.2f} s)")
            for comp in comps:
                squash_runs[comp].append(squash_once(image, work, comp, n == 0, expected))
        rows = [
            best_row(
                "floor: read+sha256 blob, inflate, sha256 tar", floor_runs, "= 1.00", rss=False
            ),
            best_row("read+sha256 blob, inflate (no tar sha256)", inflate_runs, rss=False),
        ]
        rows += [best_row(f"squashd --layer-compression {c}", squash_runs[c]) for c in comps]
        if local is not None:
            import modes  # it builds on this module's helpers: imported once this one is

            missed = modes.report(image, local, work, repeat)
        elif not args.no_registry:
            log(f"every way in and out: skipped, {skip_registry}")
    status = 1 if why or any(m.startswith("modes:") for m in missed) else 0
    if missed:
        log(f"over a goal: {', '.join(missed)}")

    if not args.no_umoci:
        limit = f"once, limit {args.umoci_timeout:.0f} s"
        log(f"umoci unpack + repack of the whole root as one layer ({limit})")
        res = umoci_squash(image, work, args.umoci_timeout)
        if isinstance(res, str):
            log(f"  umoci: {res}")
            rows.append(Row("umoci unpack + repack (1 layer)", None, note=res))
        else:
            unpack, repack = res
            note = f"unpack {unpack.wall:.1f} s + repack {repack.wall:.1f} s, run once"
            log(f"  umoci {note}")
            wall, cpu = unpack.wall + repack.wall, unpack.cpu + repack.cpu
            rss = max(unpack.maxrss_kib, repack.maxrss_kib) / 1024
            rows.append(Row("umoci unpack + repack (1 layer)", wall, rss, cpu, note))

    print_summary(image, rows, repeat)
    if not args.no_many_files and not why:
        failed = many_files_bench(work, repeat, list(args.compression))
        if failed:
            log(f"over target on the many-files image: {', '.join(failed)}")
    print(contention.report())
    return status


# ---------------------------------------------------------------------------------------------
# the many-files image, and the memory a path costs


def validate_many_files(out: Path, compression: str, _expected: object) -> Squashed:
    """The many-files merge: a tenth of each lower layer gone, another tenth rewritten."""
    files = dirs = 0
    seen_gone = rewritten = False
    with tarfile.open(out, "r:") as arc:
        manifest = json.load(arc.extractfile("manifest.json"))  # type: ignore[arg-type]
        layer = arc.getmember(manifest[0]["Layers"][0])
        blob = arc.extractfile(layer)
        assert blob is not None
        with tarfile.open(fileobj=_HashingReader(blob, compression), mode="r|") as tar:  # type: ignore[call-overload]
            for m in tar:
                files += m.isreg()
                dirs += m.isdir()
                seen_gone |= m.name == "srv/l0/d000/f000000"
                if m.name == "srv/l0/d000/f000005":
                    extracted = tar.extractfile(m)
                    assert extracted is not None, m.name
                    rewritten = extracted.read() == b"new\n"
    want_files = 3 * 90_000 + 100_000
    if (files, dirs, seen_gone, rewritten) != (want_files, 405, False, True):
        raise SystemExit(
            f"{out}: the many-files merge is wrong: {files} files (want {want_files}), "
            f"{dirs} directories (want 405), whited-out file present: {seen_gone}, "
            f"rewritten file rewritten: {rewritten}"
        )
    return Squashed(out.stat().st_size, layer.size, 0, files + dirs, files)


def many_files_bench(work: Path, repeat: int, comps: list[str]) -> list[str]:
    """The per-file cost: floor and squash rounds of the many-files image; then the peak
    RSS of a 2-million-member image against a tiny one's. Returns failures."""
    image = many_files.cached(work, "many-files", many_files.many_files_layers(), log)
    print()
    print(f"image  oci:{image.layout}:{image.tag}")
    print(f"  {len(image.layers)} layers, {image.entries:,} tar entries, "
          f"{mib(image.tar_bytes)} tar, {mib(image.blob_bytes)} gzip")  # fmt: skip
    measure_floor(image, False)
    floor_runs: list[Run] = []
    runs: dict[str, list[Run]] = {c: [] for c in comps}
    for n in range(repeat):
        log(f"many files: round {n + 1} of {repeat}")
        wall, cpu = measure_floor(image, True)
        floor_runs.append(Run(wall, cpu, 0, 0))
        log(f"  floor {wall:.2f} s")
        for comp in comps:
            runs[comp].append(squash_once(image, work, comp, n == 0, None, validate_many_files))
    rows = [best_row("floor: read+sha256 blob, inflate, sha256 tar", floor_runs, "= 1.00",
                     rss=False)]  # fmt: skip
    rows += [best_row(f"squashd --layer-compression {c}", runs[c]) for c in comps]
    print_summary(image, rows, repeat, MANY_FILES_TARGETS, MANY_FILES_RSS_MIB)
    failures = [r.label for r in rows[1:] if (r.seconds or 0) / (rows[0].seconds or 1) >
                MANY_FILES_TARGETS[r.label.rsplit(" ", 1)[-1]]]  # fmt: skip

    members = many_files.cached(work, "2m-members", many_files.member_layers(), log)
    tiny = many_files.cached(work, "1k-members", many_files.member_layers(1000), log)
    big = squash_once(members, work, "none", False, None)
    small = squash_once(tiny, work, "none", False, None)
    per_path = (big.maxrss_kib - small.maxrss_kib) * 1024 / 2_000_000
    rss = big.maxrss_kib / 1024
    ok = rss <= TARGET_MEMBERS_RSS_MIB and per_path <= TARGET_PATH_BYTES
    print(
        f"\n2,000,000 members in one layer: peak RSS {rss:.0f} MiB "
        f"(<= {TARGET_MEMBERS_RSS_MIB} MiB), {per_path:.0f} bytes per path above the "
        f"{small.maxrss_kib / 1024:.0f} MiB of a 1,000-member image (<= {TARGET_PATH_BYTES}); "
        f"{big.wall:.1f} s: {'ok' if ok else 'OVER'}"
    )
    return failures + ([] if ok else ["memory per path"])


def print_head(titles: list[str], first: str, cols: tuple[str, ...], last: str, rule: int) -> None:
    """A table's title lines, its column heads (`first`, then `cols` right-aligned in 7,
    then `last`) and a rule under them, `rule` longer than the heads."""
    print()
    for line in titles:
        print(line)
    head = f"{first} " + " ".join(f"{c:>7}" for c in cols) + f"  {last}"
    print(head)
    print("-" * (len(head) + rule))


def print_summary(
    image: ImageStats,
    rows: list[Row],
    repeat: int,
    targets: dict[str, float] = TARGETS,
    rss_target: int = TARGET_RSS_MIB,
) -> None:
    """The final table; ratios are against the first row (the floor)."""
    floor, floor_cpu = rows[0].seconds or 1.0, rows[0].cpu or 1.0
    title = (
        f"== summary: {len(image.layers)} layers, {mib(image.tar_bytes)} tar / "
        f"{mib(image.blob_bytes)} gzip, {image.entries:,} entries; "
        f"best of {repeat} interleaved rounds, warm page cache =="
    )
    cols = ("wall s", "x floor", "CPU s", "x floor", "MB/s", "RSS MiB")
    print_head([title], f"{'step':44}", cols, "target", 30)
    for r in rows:
        if r.seconds is None:
            print(f"{r.label:44} " + " ".join(f"{'-':>7}" for _ in cols) + f"  {r.note}")
            continue
        ratio = r.seconds / floor
        cells = [
            f"{r.seconds:.2f}",
            f"{ratio:.2f}",
            f"{r.cpu:.2f}" if r.cpu is not None else "-",
            f"{r.cpu / floor_cpu:.2f}" if r.cpu is not None else "-",
            f"{image.tar_bytes / 1e6 / r.seconds:.0f}",
            f"{r.rss_mib:.0f}" if r.rss_mib is not None else "-",
        ]
        target = r.note
        if r.target:
            target = r.target
        elif r.label.startswith("squashd"):
            goal = targets[r.label.rsplit(" ", 1)[-1]]
            ok_t = "ok" if ratio <= goal else "OVER"
            ok_m = "ok" if (r.rss_mib or 0) <= rss_target else "OVER"
            target = (
                f"{ratio:.3f}x vs <= {goal}x {ok_t}, "
                f"{r.rss_mib or 0:.0f} vs <= {rss_target} MiB {ok_m}; {r.note}"
            )
        print(f"{r.label:44} " + " ".join(f"{c:>7}" for c in cells) + f"  {target}")
    print(
        "wall s = best wall time; CPU s = user+sys of that run (all threads); MB/s = source layer\n"
        "tar bytes (10^6) per wall second; RSS = highest peak RSS of the child process, its own\n"
        "(GNU time's %M; wait4 from here would show this larger process's peak, via vfork)."
    )
    if any(r.target for r in rows):
        print(
            "x oci: = best squash from the registry / best squash from the oci: layout (none);\n"
            "the registry server's CPU (of the best run) is not in the CPU s column."
        )


if __name__ == "__main__":
    sys.exit(main())
