"""Worker set-up through Celery's signals: JSON logs, and the build's context (task id,
image, digest) on every line logged while a task runs, Celery's own lines included."""

from contextvars import Token

from celery.signals import after_setup_logger, after_setup_task_logger, task_postrun, task_prerun

from tasks import logs

_running: dict[str, Token] = {}


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger, **_: object) -> None:
    logs.use_json(list(logger.handlers))


@task_prerun.connect
def _enter(task_id: str, args: tuple = (), **_: object) -> None:
    _running[task_id] = logs.enter(logs.build_fields(task_id, list(args)))


@task_postrun.connect
def _leave(task_id: str, **_: object) -> None:
    token = _running.pop(task_id, None)
    if token is not None:
        logs.leave(token)
