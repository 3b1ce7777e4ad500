"""Prometheus metrics at /metrics.

Requests and cache lookups are counted by this process; what the workers do (builds
started, succeeded, failed; their seconds and bytes), the queues and the store's
contents are read from the board and the broker at each scrape, so every web replica
reports the same deployment-wide values for them.
"""

import logging
import os

from fastapi import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.front.pull_counts import pulls_by_upstream
from service.overview import Overview
from tasks.board import BUILDING, QUEUED
from tasks.board.jobs import BUILD_SECONDS_BUCKETS

log = logging.getLogger("squashd.metrics")

_OUTCOMES = {
    200: "served",
    206: "served",
    302: "served",
    307: "served",
    304: "served",
    202: "pending",
    400: "bad_request",
    422: "bad_request",
    401: "unauthorized",
    403: "denied",
    404: "not_found",
    416: "bad_request",
    502: "failed",
    503: "unavailable",
}
_BOARD_COUNTERS = {
    "builds_started": "Builds started (retries and redone builds count)",
    "builds_succeeded": "Builds that stored their artifact",
    "builds_failed": "Builds that failed for good",
    "builds_retried": "Builds that failed and were retried",
    "build_bytes_sum": "Bytes of the artifacts built",
    "registry_pulls": "Image manifests handed out to registry pulls (a GET, by tag or digest)",
}


class Metrics:
    """This process's counters and the deployment's state. With several web processes
    (PROMETHEUS_MULTIPROC_DIR set by `python -m web`), each process's counters live in
    files of that directory and every scrape sums them all."""

    def __init__(self, overview: Overview) -> None:
        self.registry = CollectorRegistry()
        shared = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        own = None if shared else self.registry  # shared: the files are collected instead
        self.requests = Counter(
            "squashd_requests",
            "HTTP requests by endpoint and outcome",
            ["endpoint", "outcome"],
            registry=own,
        )
        self.lookups = Counter(
            "squashd_cache_lookups",
            "Export requests by whether the artifact was already built",
            ["result"],
            registry=own,
        )
        if shared:
            MultiProcessCollector(self.registry)
        self.registry.register(_Deployment(overview))

    def cache(self, *, hit: bool) -> None:
        self.lookups.labels("hit" if hit else "miss").inc()

    async def endpoint(self, request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


class CountRequests:
    """ASGI middleware: every HTTP request counted by its route and the outcome its
    status says (`add_middleware(CountRequests, metrics=...)`)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app, self._requests = app, metrics.requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            self._requests.labels(_route(scope), _OUTCOMES.get(status, "error")).inc()


def _route(scope: Scope) -> str:
    """The path template of the route that served the request. FastAPI's own routes put
    themselves in the scope; Starlette's (/docs, /openapi.json) do not, so they are
    matched again here — only for them and for requests that matched nothing."""
    route = scope.get("route")
    if route is None:
        route = next((r for r in scope["app"].routes if r.matches(scope)[0] == Match.FULL), None)
    return getattr(route, "path", "unmatched")


class _Deployment:
    """A collector of the deployment's state, read at each scrape."""

    def __init__(self, overview: Overview) -> None:
        self._overview = overview

    def collect(self):
        overview = self._overview
        up = GaugeMetricFamily("squashd_board_up", "Whether the board (Redis) answered")
        try:
            values = overview.counters()
            active = overview.active_jobs()
        except Exception as exc:
            log.warning("metrics: board unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, text in _BOARD_COUNTERS.items():
            family = CounterMetricFamily(f"squashd_{name.removesuffix('_sum')}", text)
            family.add_metric([], values.get(name, 0.0))
            yield family
        pulls = CounterMetricFamily(
            "squashd_mirror_pulls",
            "Image manifests handed out to pulls, by upstream and served squashed or original",
            labels=["upstream", "served"],
        )
        for upstream, served in pulls_by_upstream(values).items():
            for kind, count in served.items():
                pulls.add_metric([upstream, kind], count)
        yield pulls
        buckets = [
            (str(float(bound)), values.get(f"build_seconds_bucket:{bound}", 0.0))
            for bound in BUILD_SECONDS_BUCKETS
        ]
        buckets.append(("+Inf", values.get("build_seconds_bucket:+Inf", 0.0)))
        seconds = HistogramMetricFamily("squashd_build_seconds", "Seconds a successful build took")
        seconds.add_metric([], buckets, values.get("build_seconds_sum", 0.0))
        yield seconds
        jobs = GaugeMetricFamily("squashd_exports", "Exports in progress", labels=["state"])
        for state in (QUEUED, BUILDING):
            jobs.add_metric([state], sum(job.state == state for job in active))
        yield jobs
        stored = GaugeMetricFamily("squashd_artifacts", "Artifacts stored")
        stored.add_metric([], values.get("artifacts", 0.0))
        yield stored
        size = GaugeMetricFamily("squashd_artifact_bytes", "Bytes of the artifacts stored")
        size.add_metric([], values.get("artifact_bytes", 0.0))
        yield size
        depth = GaugeMetricFamily("squashd_queue_depth", "Builds waiting", labels=["queue"])
        try:
            for queue, count in overview.queue_depths().items():
                depth.add_metric([queue], count)
        except Exception as exc:
            log.warning("metrics: broker unavailable: %s", exc)
        yield depth
