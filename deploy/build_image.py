"""`make image`: squashd's image, built offline, written as a `docker load` archive.

1. the base: Debian bookworm with python3 (deploy/debian_base.py), kept in dist/ after
   the first run;
2. the wheels: squashd's sdist, the wheel built from it, and every dependency's wheel
   (from the package index, through pip's cache) in dist/wheels; kept while the sdist's
   files stay the same;
3. a private dockerd (testbed/daemons.py: its own data root and socket, no bridge)
   imports the base and builds the repository's Dockerfile with BASE= that base and no
   network, tags it squashd:VERSION and squashd:latest, and saves both into
   dist/squashd-image.tar.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import ssl
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # testbed/ and deploy/ are not installed packages

from deploy.debian_base import CONFIG, base_tar  # noqa: E402
from testbed.daemons import Dockerd, started  # noqa: E402
from testbed.process import StartFailed  # noqa: E402
from testbed.tools import MissingTool, run  # noqa: E402

BASE_TAG = "squashd-base:bookworm"
#: What the sdist's files hash to, beside the wheels built from it.
SDIST_STAMP = ".sdist-sha256"


def version() -> str:
    project: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["version"]


def tags() -> list[str]:
    return [f"squashd:{version()}", "squashd:latest"]


def _sdist_hash(sdist: Path, base: str) -> str:
    """Of the sdist's names and contents (not its timestamps), and the base's name."""
    digest = hashlib.sha256(base.encode() + b"\0")
    with tarfile.open(sdist) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            digest.update(member.name.encode() + b"\0")
            data = archive.extractfile(member)
            digest.update(hashlib.sha256(data.read() if data else b"").digest())
    return digest.hexdigest()


def wheels(dockerd: Dockerd, dist: Path, base: Path, log: Callable[[str], None]) -> Path:
    """dist/wheels: squashd's wheel, built here from its sdist, and its dependencies'.

    The base's own python3 resolves the dependencies (a container of the base, with the
    host's network and pip's cache): a requirement may hang on the Python's exact
    version (redis needs async-timeout below 3.11.3; bookworm's python3 is 3.11.2).
    """
    out = dist / "wheels"
    with tempfile.TemporaryDirectory(prefix="squashd-sdist-") as scratch:
        run([sys.executable, "-m", "build", "--sdist", "--outdir", scratch, ROOT], timeout=600)
        (sdist,) = Path(scratch).glob("squashd-*.tar.gz")
        key = _sdist_hash(sdist, base.name)
        if (out / SDIST_STAMP).exists() and (out / SDIST_STAMP).read_text() == key:
            log(f"wheels: {out} (the sources and the base are unchanged)")
            return out
        log(f"wheels: squashd's built from its sdist, its dependencies' for the base, in {out}")
        shutil.rmtree(out, ignore_errors=True)
        run([sys.executable, "-m", "build", "--wheel", "--outdir", out, sdist], timeout=900)
    (wheel,) = out.glob("squashd-*.whl")
    cache = run([sys.executable, "-m", "pip", "cache", "dir"]).stdout.decode().strip()
    resolve = (
        "python3 -m venv /tmp/pip && /tmp/pip/bin/pip wheel --quiet --disable-pip-version-check"
        f" --find-links /wheels --wheel-dir /wheels /wheels/{wheel.name}"
    )
    mounts = ["--volume", f"{out}:/wheels", "--volume", f"{cache}:/root/.cache/pip"]
    argv = ["run", "--rm", "--network", "host", *mounts, *_host_network_settings()]
    dockerd.docker(*argv, BASE_TAG, "sh", "-c", resolve, timeout=900)
    (out / SDIST_STAMP).write_text(key)
    return out


def _host_network_settings() -> list[str]:
    """`docker run` options: the container trusts the CAs this machine trusts (a proxy
    may sign the index's TLS), and uses its proxy, if any."""
    options = []
    cafile = ssl.get_default_verify_paths().cafile
    if cafile:
        options += ["--volume", f"{cafile}:/etc/ssl/host-ca.crt:ro"]
        options += ["--env", "PIP_CERT=/etc/ssl/host-ca.crt"]
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        if name in os.environ:
            options += ["--env", name]
    return options


def build(dockerd: Dockerd, out: Path) -> None:
    """The Dockerfile built on the base in `dockerd`, tagged, saved to `out`."""
    named = [arg for tag in tags() for arg in ("--tag", tag)]
    argv = ["build", "--network", "none", "--build-arg", f"BASE={BASE_TAG}", *named]
    dockerd.docker(*argv, "--file", ROOT / "Dockerfile", ROOT, timeout=900)
    partial = out.with_name(out.name + ".part")
    dockerd.docker("save", "--output", partial, *tags(), timeout=600)
    partial.rename(out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.parse_args()
    start = time.monotonic()

    def log(message: str) -> None:
        print(f"make image: [{time.monotonic() - start:3.0f} s] {message}", flush=True)

    dist = ROOT / "dist"  # the Dockerfile's build context holds dist/wheels
    out = dist / "squashd-image.tar"
    try:
        base = base_tar(dist / "image-base", log)
        with started("sqd-image-", Dockerd) as dockerd:
            changes = [arg for change in CONFIG for arg in ("--change", change)]
            log(f"docker import {base.name} {BASE_TAG}, in a private dockerd")
            dockerd.docker("import", *changes, base, BASE_TAG, timeout=600)
            wheels(dockerd, dist, base, log)
            log(f"docker build --build-arg BASE={BASE_TAG}, docker save")
            build(dockerd, out)
    except (MissingTool, StartFailed, AssertionError, RuntimeError) as exc:
        print(f"make image: {exc}", file=sys.stderr)
        return 1
    size = out.stat().st_size / 2**20
    log(f"{out}: {', '.join(tags())}, {size:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
