"""The operators' side (`/` and `/metrics`): open by default, behind a Bearer token when
SQUASHD_OPERATOR_TOKEN is set (Prometheus sends one with `authorization: credentials`)."""

import hmac

from fastapi import Request

from tasks.errors import ServiceError


def operators_only(request: Request) -> None:
    """A dependency of the operators' routes."""
    token = request.app.state.service.settings.operator_token
    if token is None:
        return
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise ServiceError("this page is for operators: send the operator token", 401)
