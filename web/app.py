"""The web application: routes, and service errors answered as JSON."""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tasks.errors import ServiceError
from tasks.service import Service, service
from web import c1, exports, health
from web.callers import CHALLENGE


def create_app(runtime: Service | None = None) -> FastAPI:
    app = FastAPI(
        title="squashd",
        summary="Container images squashed into one docker-loadable tar, built once",
    )
    app.state.service = runtime or service()
    app.include_router(c1.router)
    app.include_router(exports.router)
    app.include_router(health.router)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        headers = CHALLENGE if exc.status == 401 else None
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)

    return app
