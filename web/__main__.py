"""`python -m web` (or `squashd-web`): serve on $SQUASHD_HOST:$PORT (127.0.0.1:8000)."""

import logging
import os
import sys

import uvicorn

from tasks import logs
from tasks.settings import Settings, SettingsError

log = logging.getLogger("squashd.web")


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"squashd: error: {exc}", file=sys.stderr)
        return 2
    host = os.environ.get("SQUASHD_HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    logs.use_json()
    from tasks.service import service

    runtime = service()
    mode = "embedded: builds in this process" if settings.embedded else "builds on Celery workers"
    log.info(
        "squashd on http://%s:%d (%s; artifacts in %s; upstream %s)",
        host,
        port,
        mode,
        runtime.store.describe(),
        settings.registry,
    )
    uvicorn.run(
        "web.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_config=None,
        access_log=os.environ.get("SQUASHD_ACCESS_LOG", "1") != "0",
        proxy_headers=True,
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
