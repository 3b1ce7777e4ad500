"""The Celery app the tasks are declared on; its settings come from `celeryconfig`
(loaded by name when first needed). `celery -A worker ...` finds it through `worker`."""

from celery import Celery

#: The task every build runs, by name: the dispatcher sends it without importing it.
BUILD_TASK = "squashd.export"

app = Celery("squashd", include=["tasks.export_task", "tasks.scheduled"])
app.config_from_object("celeryconfig")
