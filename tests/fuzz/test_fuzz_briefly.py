"""`make test` runs the fuzz target for a short while (`make fuzz` for long, with the
compiled core instrumented): a crash, a hang or unbounded memory fails the test, and the
input that caused it is kept in test-output/fuzz/."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SECONDS = os.environ.get("SQUASHD_FUZZ_SECONDS", "20")


def test_the_fuzz_target_finds_nothing_in_a_short_run(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, str(HERE / "seeds.py"), str(corpus)], check=True)
    proc = subprocess.run(
        [sys.executable, str(HERE / "fuzz_layers.py"), str(corpus),
         f"-max_total_time={SECONDS}", "-timeout=10", "-rss_limit_mb=2048",
         f"-artifact_prefix={tmp_path}/"],
        cwd=ROOT, capture_output=True, text=True, timeout=int(SECONDS) + 120,
    )  # fmt: skip
    found = sorted(p for p in tmp_path.iterdir() if p.name.split("-")[0] in
                   ("crash", "timeout", "oom", "leak"))  # fmt: skip
    if found:
        keep = ROOT / "test-output" / "fuzz"
        keep.mkdir(parents=True, exist_ok=True)
        for path in found:
            shutil.copy(path, keep / path.name)
    assert proc.returncode == 0 and not found, (
        f"the fuzz target failed (exit {proc.returncode}); inputs kept in test-output/fuzz: "
        f"{[p.name for p in found]}\n{proc.stderr[-3000:]}"
    )
    assert "Done" in proc.stderr, proc.stderr[-2000:]
