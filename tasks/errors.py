"""Errors of the service, each with the HTTP status it is answered with, and which
build failures are worth a retry."""

import errno
from typing import Protocol

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


class Judges(Protocol):
    """A part of the service (board, store) that knows which of its errors pass."""

    def retryable(self, exc: BaseException) -> bool: ...


def is_transient(exc: BaseException, *parts: Judges) -> bool:
    """Would the same build, tried again later, likely succeed? The registry client's
    errors say so themselves (TransientError); the board's and the store's are judged by
    those parts."""
    if isinstance(exc, TransientError | LeaseLost | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True  # the janitor or other builds finishing may free space
    if isinstance(exc, SquashError):
        return False
    return any(part.retryable(exc) for part in parts)
