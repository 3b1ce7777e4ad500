"""The web application: routes, metrics, the status page, service errors as JSON."""

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from service.front.passthrough import BrokenPassThrough, PassThrough
from service.front.upstreams import Upstreams
from service.runtime import Service, service
from tasks.errors import ServiceError, TooMany
from web import c1, exports, health, v2
from web.callers import CHALLENGE
from web.metrics import CountRequests, Metrics
from web.namespace import EchoNamespace
from web.operators import operators_only
from web.status_page import status_page


def _not_a_broken_pass_through(record: logging.LogRecord) -> bool:
    """Drops uvicorn's traceback of a pass-through the upstream broke (a warning said so)."""
    return not (record.exc_info and isinstance(record.exc_info[1], BrokenPassThrough))


def create_app(runtime: Service | None = None) -> FastAPI:
    runtime = runtime or service()
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if _not_a_broken_pass_through not in uvicorn_errors.filters:
        uvicorn_errors.addFilter(_not_a_broken_pass_through)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        beat = None
        if runtime.settings.embedded:  # no Celery beat: the schedule runs in a thread
            from tasks.scheduled import LocalBeat

            beat = LocalBeat().start()
        try:
            yield
        finally:
            if beat is not None:
                beat.stop()
            runtime.close()
            upstreams.close()

    app = FastAPI(
        title="squashd",
        summary="Container images squashed into one docker-loadable tar, built once",
        lifespan=lifespan,
    )
    app.state.service = runtime
    app.state.requests = runtime.requests
    app.state.front = runtime.front
    app.state.overview = runtime.overview
    app.state.metrics = metrics = Metrics(runtime.overview)
    app.state.upstreams = upstreams = Upstreams(runtime.settings)
    app.state.passthrough = PassThrough(runtime.requests.access)
    app.include_router(c1.router)
    app.include_router(exports.router)
    app.include_router(health.router)
    app.include_router(v2.router)
    operators = [Depends(operators_only)]
    app.add_api_route("/metrics", metrics.endpoint, methods=["GET"], include_in_schema=False,
                      dependencies=operators)  # fmt: skip
    app.add_api_route("/", status_page, methods=["GET"], include_in_schema=False,
                      dependencies=operators)  # fmt: skip
    app.add_middleware(CountRequests, metrics=metrics)
    app.add_middleware(EchoNamespace)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        headers = dict(CHALLENGE) if exc.status == 401 else {}
        if isinstance(exc, TooMany):
            headers["Retry-After"] = str(exc.retry_after)
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)

    return app
