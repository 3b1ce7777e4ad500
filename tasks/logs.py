"""Structured logs: one JSON object a line, carrying the build's context (image,
digest, task id) on every line logged while it is set."""

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar

_context: ContextVar[dict[str, str]] = ContextVar("squashd_log_context", default={})  # noqa: B039
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@contextlib.contextmanager
def context(**fields: str) -> Iterator[None]:
    """Adds `fields` to every log line of this thread (or task) while inside."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_context.get())
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def use_json(handlers: list[logging.Handler] | None = None, level: int = logging.INFO) -> None:
    """JSON on `handlers` (default: one on stderr for the root logger)."""
    if handlers is None:
        handler = logging.StreamHandler(sys.stderr)
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level)
        handlers = [handler]
    for handler in handlers:
        handler.setFormatter(JsonFormatter())
