"""`python -m web` (or `squashd-web`): serve on $SQUASHD_HOST:$PORT (127.0.0.1:8000)."""

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from tasks import logs
from tasks.settings import Settings, SettingsError

log = logging.getLogger("squashd.web")
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"squashd: error: {exc}", file=sys.stderr)
        return 2
    host = os.environ.get("SQUASHD_HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    logs.use_json()
    from service.runtime import service

    runtime = service()
    mode = "embedded: builds in this process" if settings.embedded else "builds on Celery workers"
    workers = settings.web_processes
    log.info(
        "squashd on http://%s:%d (%s; %d web process%s; artifacts in %s; upstream %s)",
        host,
        port,
        mode,
        workers,
        "es" if workers > 1 else "",
        runtime.overview.store_description(),
        settings.registry,
    )
    with shared_metrics(workers):
        uvicorn.run(
            "web.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            access_log=os.environ.get("SQUASHD_ACCESS_LOG", "1") != "0",
            proxy_headers=True,
            timeout_graceful_shutdown=5,
        )
    return 0


@contextlib.contextmanager
def shared_metrics(workers: int) -> Iterator[None]:
    """Several web processes keep their counters in files of one directory
    (prometheus_client's multiprocess mode), so that /metrics, whichever process
    answers it, sums them all. The directory is emptied first and removed after."""
    if workers == 1:
        yield
        return
    given = os.environ.get(MULTIPROC_DIR)
    directory = Path(given) if given else Path(tempfile.mkdtemp(prefix="squashd-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_DIR] = str(directory)  # the worker processes inherit it
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
