"""Sending a build to whoever runs it: Celery workers through the broker, or, in the
embedded default, threads of this process running the very same task."""

from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from tasks.spec import ExportSpec


class Dispatcher(Protocol):
    def send(self, spec: ExportSpec, task_id: str, queue: str) -> None: ...


class CeleryDispatcher:
    def send(self, spec: ExportSpec, task_id: str, queue: str) -> None:
        from tasks.export import export

        export.apply_async(args=[spec.to_dict()], task_id=task_id, queue=queue)

    def ping(self) -> None:
        from worker.app import app

        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)


class LocalDispatcher:
    """`Task.apply` in a thread pool: Celery's code path, with no broker and no worker."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="build")

    def send(self, spec: ExportSpec, task_id: str, queue: str) -> None:
        from tasks.export import export

        self._pool.submit(export.apply, args=[spec.to_dict()], task_id=task_id)
