"""The Celery app: `celery -A worker worker` and `celery -A worker beat` find it here."""

from celery import Celery

app = Celery("squashd", include=["tasks.export", "tasks.scheduled"])
app.config_from_object("celeryconfig")
