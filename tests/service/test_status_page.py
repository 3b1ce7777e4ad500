"""The operators' page at `/`, loaded in a real browser (headless Chromium) while a build
is held mid-download: it shows the build's progress, a recent failure with its reason
and the most requested tags. The screenshot is kept as test output."""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import pytest

from tests.service.harness import Chromium
from tests.service.test_export_service import layer_digest, push_image, wait_until

pytestmark = pytest.mark.integration

#: Where the screenshot is kept: $SQUASHD_TEST_OUTPUT, else test-output/ in the checkout.
OUTPUT = Path(os.environ.get("SQUASHD_TEST_OUTPUT") or Path(__file__).parents[2] / "test-output")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_status_page_shows_progress_failures_and_tags(
    make_stack, registry, fault_proxy, tmp_path
) -> None:
    stack = make_stack(fault_proxy.host)
    push_image(registry, tmp_path, "broken", seed=701)
    fault_proxy.flip(layer_digest(registry, "broken"))
    assert stack.c1("svc/broken/v1")[0] == 502
    push_image(registry, tmp_path, "shown", seed=702, size=3 << 20)
    hold = fault_proxy.hold(layer_digest(registry, "shown"), after=1 << 20)
    status, _, body = stack.c1("svc/shown/v1?wait=0")
    assert status == 202, body
    key = json.loads(body)["id"]
    assert hold.reached.wait(60)
    # held after 1 MiB of the layer: the page shows it, though the download stalls
    wait_until("progress", lambda: stack.export_status(key)["progress"]["done"] >= 1 << 20)

    browser = Chromium(tmp_path)
    try:
        dom = browser.dom(f"{stack.web.url}/")
        shot = browser.screenshot(f"{stack.web.url}/", OUTPUT / "status-page.png")
    finally:
        hold.release()
    print(f"status page screenshot: {shot}")
    assert _png_size(shot) == (1280, 900) and shot.stat().st_size > 10_000

    assert "Exports in progress (1)" in dom, dom
    assert f"{fault_proxy.host}/svc/shown:v1" in dom
    progress = re.search(r'<progress value="(\d+)" max="(\d+)">', dom)
    assert progress, dom
    done, total = map(int, progress.groups())
    assert 0 < done < total
    assert re.search(r'class="state building">building', dom)
    failure = re.search(r'class="failed reason">([^<]*)</td>', dom)
    assert failure and "digest mismatch" in failure[1] and "svc/broken" in failure[1]
    assert f"{fault_proxy.host}/svc/shown:v1</td>" in dom.split("Most requested tags")[1]
