"""Structured logs: one JSON object a line, carrying the build's context (image,
digest, task id) on every line logged while it is set."""

import ast
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar, Token

from tasks.spec import ExportSpec

_context: ContextVar[dict[str, str]] = ContextVar("squashd_log_context", default={})  # noqa: B039
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's, with terminal colours
}
#: Libraries that log every HTTP request at INFO: one line per blob is noise.
_CHATTY = ("httpx", "httpcore", "botocore", "boto3", "urllib3")


def enter(fields: dict[str, str]) -> Token:
    """Adds `fields` to every log line of this thread (or task) until `leave`."""
    return _context.set({**_context.get(), **fields})


def leave(token: Token) -> None:
    _context.reset(token)


@contextlib.contextmanager
def context(**fields: str) -> Iterator[None]:
    """`enter` and `leave` around a block."""
    token = enter(fields)
    try:
        yield
    finally:
        leave(token)


def build_fields(task_id: str, args: object) -> dict[str, str]:
    """The fields that name a build, from a task's id and arguments (an ExportSpec as a
    dict, or its repr as Celery logs it)."""
    fields = {"task_id": task_id}
    if isinstance(args, str):
        try:
            args = ast.literal_eval(args)
        except (ValueError, SyntaxError):
            return fields
    first = args[0] if isinstance(args, list | tuple) and args else None
    if isinstance(first, dict):
        try:
            spec = ExportSpec.from_dict(first)
        except KeyError:  # another task's arguments
            return fields
        fields.update(image=spec.image, digest=spec.digest)
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        data = getattr(record, "data", None)
        if isinstance(data, dict) and "id" in data:  # Celery's own lines about a task
            entry.update(build_fields(str(data["id"]), data.get("args")))
        entry.update(_context.get())
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def use_json(handlers: list[logging.Handler] | None = None, level: int = logging.INFO) -> None:
    """JSON on `handlers` (default: one on stderr for the root logger)."""
    if handlers is None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level)
        handlers = [handler]
    for handler in handlers:
        handler.setFormatter(JsonFormatter())
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
