"""The operators' page at `/`: exports in progress with progress bars, recent failures,
pulls by upstream (squashed or the original), the most requested tags and whether each
is ready. Server-rendered, refreshed by the browser every few seconds; no scripts, no
build step."""

import time

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from service.front.pull_counts import ORIGINAL, SQUASHED, pulls_by_upstream
from service.overview import Overview
from tasks.board import BUILDING, Job

REFRESH = 2  # seconds
_templates = Environment(loader=PackageLoader("web"), autoescape=select_autoescape())


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _ago(then: float, now: float) -> str:
    seconds = max(now - then, 0)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _job_row(job: Job, now: float, lease: float) -> dict:
    spec = job.spec
    done = min(job.done, job.total) if job.total else job.done
    return {
        "image": spec.image if spec else job.key,
        "platform": spec.platform if spec else "",
        "compression": spec.compression if spec else "",
        "state": job.state,
        "stalled": job.state == BUILDING and now - job.updated > 3 * lease,
        "done": done,
        "total": job.total,
        "percent": int(100 * done / job.total) if job.total else 0,
        "done_text": _size(done),
        "total_text": _size(job.total),
        "builds": job.builds,
        "ago": _ago(job.updated, now),
    }


def _page(overview: Overview) -> str:
    now = time.time()
    settings = overview.settings
    context: dict = {
        "refresh": REFRESH,
        "upstream": settings.registry,
        "store": overview.store_description(),
        "mode": "embedded (builds in-process)" if settings.embedded else "Celery workers",
        "now": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now)),
        "active": [],
        "failures": [],
        "popular": [],
        "artifacts": "?",
        "artifact_bytes": "?",
        "pulls": "?",
        "upstream_pulls": [],
        "board_error": None,
    }
    try:
        metrics = overview.counters()
        context["artifacts"] = int(metrics.get("artifacts", 0))
        context["artifact_bytes"] = _size(metrics.get("artifact_bytes", 0))
        context["pulls"] = int(metrics.get("registry_pulls", 0))
        context["upstream_pulls"] = [
            {"upstream": upstream, "original": int(served[ORIGINAL]),
             "squashed": int(served[SQUASHED])}
            for upstream, served in pulls_by_upstream(metrics).items()
        ]  # fmt: skip
        active = overview.active_jobs(resend_dead=True)  # a look sends dead builds again
        context["active"] = [_job_row(job, now, settings.lease_seconds) for job in active]
        context["failures"] = [
            {**failure, "ago": _ago(failure["time"], now)}
            for failure in overview.recent_failures()[:20]
        ]
        context["popular"] = [
            {
                "name": tag,
                "count": f"{count:.1f}",
                "state": overview.artifact_state(key),
                "key": key,
            }
            for tag, count, key in overview.popular_tags(now)
        ]
    except overview.board_errors as exc:
        context["board_error"] = str(exc)
    return _templates.get_template("status.html").render(context)


async def status_page(request: Request) -> HTMLResponse:
    overview: Overview = request.app.state.overview
    return HTMLResponse(await run_in_threadpool(_page, overview))
