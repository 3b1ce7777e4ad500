"""What the export-service tests do beyond running the servers of the testbed
(`testbed.service`: Redis, moto's S3, squashd's web, worker and beat processes, `Stack`):
push an image of hand-made layers, judge a squashed archive with skopeo and umoci, and
look at the status page with a headless Chromium.

Missing tools fail loudly (`require_tool`), nothing here skips.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from testbed.registry import push
from tests.integration.helpers import require_tool


def push_layers(
    root: Path,
    dest: str,
    tars: list[bytes],
    *,
    creds: str | None = None,
    config: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """An OCI layout of `tars` (gzip) under `root`, pushed with skopeo to `dest`
    (`HOST/NAME:TAG`): (manifest digest in the registry, umoci ref of the layout)."""
    from tests.integration.helpers import write_oci_layout

    layout = write_oci_layout(root, tars, compression="gzip", config=config)
    return push(f"oci:{layout.ref}", dest, creds=creds), layout.ref


def assert_same_rootfs(archive: Path, reference: Path, work: Path) -> None:
    """The judges (docs/archive-format.md): `skopeo copy docker-archive:` then `umoci unpack` must
    give the same tree as `reference` (umoci unpack of the original)."""
    from tests.integration.helpers import compare_trees, format_diffs, skopeo_to_oci, umoci_unpack

    layout = skopeo_to_oci(archive, work / "squashed.oci")
    squashed = umoci_unpack(layout, work / "squashed.bundle")
    diffs = compare_trees(reference, squashed)
    assert not diffs, f"{archive} does not unpack to the original tree; {format_diffs(diffs)}"


class Chromium:
    """Debian's chromium, headless, with a profile of its own under `root` and the
    flags this sandbox needs (no sandbox as root, no background networking)."""

    def __init__(self, root: Path) -> None:
        self.binary = require_tool("chromium")
        self.root = root

    def _argv(self, *args: str) -> list[str]:
        profile = self.root / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        return [
            self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args,
        ]  # fmt: skip

    def dom(self, url: str) -> str:
        """The page's DOM after the browser loaded and rendered it."""
        done = subprocess.run(
            self._argv("--dump-dom", url), capture_output=True, timeout=120, check=True
        )
        return done.stdout.decode("utf-8", "replace")

    def screenshot(self, url: str, path: Path, width: int = 1280, height: int = 900) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        args = self._argv(f"--screenshot={path}", f"--window-size={width},{height}", url)
        subprocess.run(args, capture_output=True, timeout=120, check=True)
        return path
