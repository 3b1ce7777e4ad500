"""Build the benchmark image: an OCI layout of a Debian root plus layers that make real merge work.

The base layer is a `debootstrap --variant=minbase bookworm` root. The layers on top copy,
generate, modify and delete files (whiteouts, an opaque directory, a directory replaced by a
symlink, hard links), like a typical Dockerfile build. Layer tars are written with `tarfile`
and gzip-compressed (zlib level 6, like registries store them).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import sys
import tarfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

# The repo root, for testbed/ (not an installed package, so not on the path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed import debian

# Bump when the recipe changes, so a cached layout is rebuilt.
RECIPE_VERSION = "3"
TAG = "bench"
GZIP_LEVEL = 6
MTIME = 1_730_000_000  # mtime of generated entries

MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"

LISTS = "var/lib/apt/lists"
PACKAGES_LIST = f"{LISTS}/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages"


@dataclass
class LayerStats:
    """One written layer blob and what went into it."""

    name: str
    digest: str
    size: int
    diff_id: str
    tar_size: int
    entries: int
    regular_files: int
    whiteouts: int


@dataclass
class ImageStats:
    """The built image, as printed by the benchmark."""

    layout: str
    tag: str
    layers: list[LayerStats]

    @property
    def tar_bytes(self) -> int:
        return sum(layer.tar_size for layer in self.layers)

    @property
    def blob_bytes(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def entries(self) -> int:
        return sum(layer.entries for layer in self.layers)

    @property
    def regular_files(self) -> int:
        return sum(layer.regular_files for layer in self.layers)

    @classmethod
    def load(cls, path: Path) -> ImageStats:
        raw = json.loads(path.read_text())
        return cls(raw["layout"], raw["tag"], [LayerStats(**x) for x in raw["layers"]])

    def save(self, path: Path) -> None:
        raw = {"layout": self.layout, "tag": self.tag, "layers": [asdict(x) for x in self.layers]}
        path.write_text(json.dumps(raw, indent=1))


class LayerWriter:
    """A tar stream that gzips to a temp file while hashing both the tar and the blob."""

    def __init__(self, blobs: Path, name: str) -> None:
        self.name = name
        self._blobs = blobs
        self._tmp = blobs / f".tmp-{name}-{os.getpid()}"
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in finish()
        self._comp = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        self._diff = hashlib.sha256()
        self._blob = hashlib.sha256()
        self._tar_size = 0
        self._blob_size = 0
        self.entries = 0
        self.regular_files = 0
        self.whiteouts = 0
        self._seen_dirs: set[str] = set()
        # typeshed's tarfile wants a fileobj with read, seek and close too, which mode "w"
        # never calls on a fileobj it was given.
        self.tar = tarfile.open(  # type: ignore[call-overload]  # noqa: SIM115
            fileobj=self, mode="w", format=tarfile.PAX_FORMAT
        )

    # file-object protocol used by tarfile
    def write(self, data: bytes) -> int:
        self._diff.update(data)
        self._tar_size += len(data)
        self._emit(self._comp.compress(data))
        return len(data)

    def tell(self) -> int:
        return self._tar_size

    def _emit(self, data: bytes) -> None:
        if data:
            self._blob.update(data)
            self._blob_size += len(data)
            self._file.write(data)

    # entries
    def _count(self, info: tarfile.TarInfo) -> None:
        self.entries += 1
        if info.isreg():
            self.regular_files += 1
        if os.path.basename(info.name).startswith(".wh."):
            self.whiteouts += 1
        if info.isdir():
            self._seen_dirs.add(info.name)

    def addfile(self, info: tarfile.TarInfo, data: bytes | None = None) -> None:
        """Add one entry; `data` is the content of a regular file."""
        self._count(info)
        if data is not None:
            info.size = len(data)
            self.tar.addfile(info, io.BytesIO(data))
        else:
            self.tar.addfile(info)

    def add_tree(self, src: Path, arcname: str) -> None:
        """Add a directory tree from disk (sorted, hard links kept, owners and modes kept)."""

        def count(info: tarfile.TarInfo) -> tarfile.TarInfo:
            self._count(info)
            return info

        self.tar.add(str(src), arcname=arcname, recursive=True, filter=count)

    def parents(self, path: str, rootfs: Path | None = None) -> None:
        """Add the parent directory entries of `path` (attributes from `rootfs` if it has them)."""
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d in self._seen_dirs:
                continue
            if rootfs is not None and (rootfs / d).is_dir():
                info = self.tar.gettarinfo(str(rootfs / d), arcname=d)
            else:
                info = dir_info(d)
            self.addfile(info)

    def add_bytes(
        self, path: str, data: bytes, mode: int = 0o644, rootfs: Path | None = None
    ) -> None:
        self.parents(path, rootfs)
        self.addfile(file_info(path, mode), data)

    def whiteout(self, path: str, rootfs: Path | None = None) -> None:
        """Delete `path` (and its subtree) from the layers below."""
        head, _, base = path.rpartition("/")
        wh = f"{head}/.wh.{base}" if head else f".wh.{base}"
        self.parents(wh, rootfs)
        self.addfile(file_info(wh, 0o600), b"")

    def opaque(self, path: str, rootfs: Path | None = None) -> None:
        """Hide every lower child of directory `path`."""
        self.parents(f"{path}/x", rootfs)
        self.addfile(file_info(f"{path}/.wh..wh..opq", 0o600), b"")

    def finish(self) -> LayerStats:
        self.tar.close()
        self._emit(self._comp.flush())
        self._file.close()
        digest = "sha256:" + self._blob.hexdigest()
        os.replace(self._tmp, self._blobs / digest.split(":")[1])
        return LayerStats(
            name=self.name,
            digest=digest,
            size=self._blob_size,
            diff_id="sha256:" + self._diff.hexdigest(),
            tar_size=self._tar_size,
            entries=self.entries,
            regular_files=self.regular_files,
            whiteouts=self.whiteouts,
        )


def file_info(name: str, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.mtime = MTIME
    info.uname = info.gname = "root"
    return info


def dir_info(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    info = file_info(name, mode)
    info.type = tarfile.DIRTYPE
    return info


def regular_files(root: Path, sub: str) -> list[str]:
    """Sorted relative paths of the regular files under root/sub."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root / sub):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            if p.is_file() and not p.is_symlink():
                out.append(str(p.relative_to(root)))
    return out


# ---------------------------------------------------------------------------------------------
# The layers. Each is a function (rootfs, writer) -> None, run in its own process.


def layer_base(rootfs: Path, w: LayerWriter) -> None:
    """debootstrap minbase root (includes apt lists and the downloaded .debs)."""
    for name in sorted(os.listdir(rootfs)):
        w.add_tree(rootfs / name, name)


def layer_vendor(rootfs: Path, w: LayerWriter) -> None:
    """COPY of vendor trees: /opt/share and /opt/lib copied from /usr/share and /usr/lib."""
    w.addfile(dir_info("opt"))
    w.add_tree(rootfs / "usr/share", "opt/share")
    w.add_tree(rootfs / "usr/lib", "opt/lib")


def _corpus(rootfs: Path) -> bytes:
    return (rootfs / PACKAGES_LIST).read_bytes()


def _text(rng: random.Random, corpus: bytes, size: int) -> bytes:
    start = rng.randrange(0, len(corpus) - size - 1)
    return corpus[start : start + size]


NODE_PACKAGES = 1700


def _pkg_name(i: int) -> str:
    return f"pkg-{i:04d}"


def layer_app(rootfs: Path, w: LayerWriter) -> None:
    """An app with a node_modules-like tree of ~20k small text files, symlinks and hard links."""
    rng = random.Random(1)
    corpus = _corpus(rootfs)
    for d in ("srv", "srv/app", "srv/app/bin", "srv/app/node_modules", "srv/app/node_modules/.bin"):
        w.addfile(dir_info(d))
    bash = (rootfs / "usr/bin/bash").read_bytes()
    w.addfile(file_info("srv/app/bin/tool", 0o755), bash)
    for alias in ("tool-a", "tool-b"):
        link = file_info(f"srv/app/bin/{alias}", 0o755)
        link.type, link.linkname = tarfile.LNKTYPE, "srv/app/bin/tool"
        w.addfile(link)
    for i in range(NODE_PACKAGES):
        if i % 5 == 0:
            link = file_info(f"srv/app/node_modules/.bin/{_pkg_name(i)}", 0o777)
            link.type, link.linkname = tarfile.SYMTYPE, f"../{_pkg_name(i)}/bin/cli.js"
            w.addfile(link)
    for i in range(NODE_PACKAGES):
        base = f"srv/app/node_modules/{_pkg_name(i)}"
        w.addfile(dir_info(base))
        manifest = {"name": _pkg_name(i), "version": f"1.{i % 17}.{i % 5}", "main": "lib/index.js"}
        w.addfile(file_info(f"{base}/package.json"), json.dumps(manifest, indent=2).encode())
        for sub in ("bin", "lib"):
            w.addfile(dir_info(f"{base}/{sub}"))
        w.addfile(file_info(f"{base}/bin/cli.js", 0o755), _text(rng, corpus, 300))
        for j in range(rng.randint(6, 16)):
            size = min(int(rng.lognormvariate(7.0, 1.1)), 200_000)
            w.addfile(file_info(f"{base}/lib/m{j:02d}.js"), _text(rng, corpus, size))


def layer_update(rootfs: Path, w: LayerWriter) -> None:
    """Like `apt-get update && apt-get upgrade` plus config edits: modify, delete, replace."""
    rng = random.Random(2)
    # a refreshed package list (modified copy of the real one)
    packages = (rootfs / PACKAGES_LIST).read_bytes().replace(b"deb12u", b"deb12u9")
    w.add_bytes(PACKAGES_LIST, packages, rootfs=rootfs)
    # "upgraded" shared libraries: about every third .so under usr/lib gets new bytes
    for i, rel in enumerate(regular_files(rootfs, "usr/lib/x86_64-linux-gnu")):
        if i % 3 == 0:
            data = (rootfs / rel).read_bytes() + b"\0upgraded\0" * 64
            w.add_bytes(rel, data, mode=(rootfs / rel).stat().st_mode & 0o7777, rootfs=rootfs)
    # config edits
    for rel, extra in (
        ("etc/passwd", b"app:x:1000:1000:app:/srv/app:/bin/sh\n"),
        ("etc/group", b"app:x:1000:\n"),
        ("etc/hostname", b"bench\n"),
    ):
        w.add_bytes(rel, (rootfs / rel).read_bytes() + extra, rootfs=rootfs)
    # delete a whole directory (rm -rf /usr/share/doc)
    w.whiteout("usr/share/doc", rootfs)
    # in the vendor copy: modify every 4th file, delete every 7th man page
    share = regular_files(rootfs, "usr/share")
    for i, rel in enumerate(share):
        opt = "opt/share/" + rel.removeprefix("usr/share/")
        if rel.startswith(("usr/share/locale/", "usr/share/doc/")):
            continue
        if rel.startswith("usr/share/man/") and i % 7 == 0:
            w.whiteout(opt)
        elif i % 4 == 0:
            w.parents(opt)
            w.addfile(file_info(opt), b"# patched by layer_update\n" + (rootfs / rel).read_bytes())
    # an opaque directory: the locale tree is replaced by one file
    w.opaque("opt/share/locale")
    w.add_bytes("opt/share/locale/en/LC_MESSAGES/app.mo", rng.randbytes(4096))
    # a directory replaced by a symlink
    link = file_info("opt/lib/x86_64-linux-gnu/gconv", 0o777)
    link.type, link.linkname = tarfile.SYMTYPE, "/usr/lib/x86_64-linux-gnu/gconv"
    w.parents(link.name)
    w.addfile(link)
    # a new release of some app modules
    corpus = _corpus(rootfs)
    for i in range(0, NODE_PACKAGES, 3):
        path = f"srv/app/node_modules/{_pkg_name(i)}/lib/m00.js"
        w.add_bytes(path, _text(rng, corpus, 4000))


def layer_cleanup(rootfs: Path, w: LayerWriter) -> None:
    """`apt-get clean && rm -rf /var/lib/apt/lists/*`, prune modules, add binary assets."""
    rng = random.Random(3)
    for rel in sorted(os.listdir(rootfs / LISTS)):
        w.whiteout(f"{LISTS}/{rel}", rootfs)
    for rel in sorted(os.listdir(rootfs / "var/cache/apt/archives")):
        if rel.endswith(".deb"):
            w.whiteout(f"var/cache/apt/archives/{rel}", rootfs)
    for i in range(1, NODE_PACKAGES, 11):
        w.whiteout(f"srv/app/node_modules/{_pkg_name(i)}")
    # incompressible and half-compressible assets
    w.add_bytes("opt/assets/model.bin", rng.randbytes(24 << 20))
    chunk = rng.randbytes(1 << 16)
    w.add_bytes(
        "opt/assets/data.db", b"".join(chunk[: 1 << 15] + bytes(1 << 15) for _ in range(384))
    )


LAYERS: list[tuple[str, Callable[[Path, LayerWriter], None]]] = [
    ("base", layer_base),
    ("vendor", layer_vendor),
    ("app", layer_app),
    ("update", layer_update),
    ("cleanup", layer_cleanup),
]


def _build_layer(index: int, rootfs: str, blobs: str) -> LayerStats:
    name, fn = LAYERS[index]
    w = LayerWriter(Path(blobs), name)
    fn(Path(rootfs), w)
    return w.finish()


# ---------------------------------------------------------------------------------------------


def debootstrap(work: Path, log: Callable[[str], None]) -> Path:
    """Return a cached debootstrap minbase bookworm root, creating it if missing."""
    root = work / "rootfs"
    if (work / "rootfs.done").exists():
        return root
    tmp = work / "rootfs.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    log(f"debootstrap --variant=minbase {debian.SUITE} {tmp}  (takes a few minutes)")
    debian.debootstrap(tmp, work / "debootstrap.log")
    tmp.rename(root)
    (work / "rootfs.done").write_text("ok\n")
    return root


def _blob_json(blobs: Path, obj: dict) -> tuple[str, int]:
    data = json.dumps(obj, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return "sha256:" + digest, len(data)


def write_layout(layout: Path, rootfs: Path, log: Callable[[str], None]) -> ImageStats:
    """Write the OCI layout (all layers, config, manifest, index) into `layout`."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    t0 = time.monotonic()
    with ProcessPoolExecutor(max_workers=min(len(LAYERS), os.cpu_count() or 1)) as pool:
        futures = [
            pool.submit(_build_layer, i, str(rootfs), str(blobs)) for i in range(len(LAYERS))
        ]
        layers = [f.result() for f in futures]
    log(f"wrote {len(layers)} layers in {time.monotonic() - t0:.1f} s")
    config = {
        "created": "2024-10-27T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/bash"],
            "WorkingDir": "/srv/app",
            "Labels": {"org.example.bench": "squashd"},
        },
        "rootfs": {"type": "layers", "diff_ids": [x.diff_id for x in layers]},
        "history": [
            {"created": "2024-10-27T00:00:00Z", "created_by": f"bench layer {x.name}"}
            for x in layers
        ],
    }
    cdigest, csize = _blob_json(blobs, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": cdigest, "size": csize},
        "layers": [
            {"mediaType": MT_LAYER_GZIP, "digest": x.digest, "size": x.size} for x in layers
        ],
    }
    mdigest, msize = _blob_json(blobs, manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": MT_MANIFEST,
                "digest": mdigest,
                "size": msize,
                "annotations": {"org.opencontainers.image.ref.name": TAG},
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index, indent=1))
    return ImageStats(str(layout), TAG, layers)


def build_image(work: Path, rebuild: bool, log: Callable[[str], None]) -> ImageStats:
    """Return the cached benchmark image in work/layout, building it first if needed."""
    work.mkdir(parents=True, exist_ok=True)
    layout = work / "layout"
    stats_file = work / f"layout.recipe-{RECIPE_VERSION}.json"
    if rebuild:
        for stale in work.glob("layout.recipe-*.json"):
            stale.unlink()
    if stats_file.exists() and layout.is_dir():
        return ImageStats.load(stats_file)
    rootfs = debootstrap(work, log)
    for stale in work.glob("layout.recipe-*.json"):
        stale.unlink()
    shutil.rmtree(layout, ignore_errors=True)
    tmp = work / "layout.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log("building the OCI layout (gzip level 6; about a minute)")
    stats = write_layout(tmp, rootfs, log)
    tmp.rename(layout)
    stats.layout = str(layout)
    stats.save(stats_file)
    return stats
