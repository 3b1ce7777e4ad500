"""Errors of the service, each with the HTTP status it is answered with, and which
build failures are worth a retry."""

import errno

from squash.errors import SquashError, TransientError


class ServiceError(Exception):
    """A request cannot be served; `status` and the one-line message go to the caller."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(ServiceError):
    status = 400


class Denied(ServiceError):
    """The registry refused the caller (401, 403) or has no such image (404)."""

    status = 403


class Unavailable(ServiceError):
    """Something the service needs is down (Redis, the store, the registry)."""

    status = 503


class NotFound(ServiceError):
    status = 404


class TooMany(ServiceError):
    """Too many builds queued, or this caller started too many: try again later."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LeaseLost(Exception):
    """The build lock's lease ran out under a running build; another may have started."""


def is_transient(exc: BaseException) -> bool:
    """Would the same build, tried again later, likely succeed?"""
    if isinstance(exc, TransientError | LeaseLost | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True  # the janitor or other builds finishing may free space
    if isinstance(exc, SquashError):
        return False
    name = type(exc).__module__.split(".")[0]
    if name == "redis":
        return type(exc).__name__ in ("ConnectionError", "TimeoutError", "BusyLoadingError")
    if name in ("botocore", "boto3", "urllib3"):
        return _botocore_transient(exc)
    return False


def _botocore_transient(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    if response is None:  # connection trouble: EndpointConnectionError, ReadTimeout, ...
        return type(exc).__name__ not in ("NoCredentialsError", "ParamValidationError")
    error = response.get("Error", {})
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    transient_codes = ("SlowDown", "InternalError", "RequestTimeout", "ServiceUnavailable")
    return status >= 500 or status == 429 or error.get("Code") in transient_codes
