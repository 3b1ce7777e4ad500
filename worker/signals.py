"""Worker set-up through Celery's signals: JSON logs with the build's context."""

from celery.signals import after_setup_logger, after_setup_task_logger

from tasks import logs


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger, **_: object) -> None:
    logs.use_json(list(logger.handlers))
