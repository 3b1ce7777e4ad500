"""Sending a build to whoever runs it: Celery workers through the broker, or, in the
embedded default, threads of this process running the very same task."""

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from tasks.celery_app import BUILD_TASK, app
from tasks.spec import ExportSpec


class Dispatcher(Protocol):
    def send(self, spec: ExportSpec, task_id: str, queue: str) -> None: ...

    def ping(self) -> None:
        """Raise if builds cannot be sent."""
        ...

    def depths(self) -> dict[str, int]:
        """Builds waiting, by queue."""
        ...


class CeleryDispatcher:
    """The build task, by name, through the broker."""

    def send(self, spec: ExportSpec, task_id: str, queue: str) -> None:
        app.send_task(BUILD_TASK, args=[spec.to_dict()], task_id=task_id, queue=queue)

    def ping(self) -> None:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)

    def depths(self) -> dict[str, int]:
        depths = {}
        with app.connection_for_read() as connection:
            for queue in app.conf.task_queues:
                channel = connection.channel()  # a failed passive declare may close it
                try:
                    found = channel.queue_declare(queue=queue.name, passive=True)
                    depths[queue.name] = found.message_count
                except connection.channel_errors:
                    depths[queue.name] = 0  # no such queue (an empty one, in Redis)
                finally:
                    channel.close()
        return depths


class LocalDispatcher:
    """`Task.apply` in a thread pool: Celery's code path, with no broker and no worker."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="build")
        self._waiting = 0
        self._mutex = threading.Lock()

    def send(self, spec: ExportSpec, task_id: str, queue: str) -> None:
        with self._mutex:
            self._waiting += 1
        self._pool.submit(self._run, spec, task_id)

    def _run(self, spec: ExportSpec, task_id: str) -> None:
        with self._mutex:
            self._waiting -= 1
        app.loader.import_default_modules()  # the app's `include`: the task is declared
        app.tasks[BUILD_TASK].apply(args=[spec.to_dict()], task_id=task_id)

    def ping(self) -> None:
        pass

    def depths(self) -> dict[str, int]:
        with self._mutex:
            return {"in-process": self._waiting}
