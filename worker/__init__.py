"""The Celery app object and worker set-up (signals, logging, limits).

`celery -A worker worker -Q squashd.export` runs builds; `celery -A worker beat` the
schedule (see celeryconfig.py).
"""

from tasks.celery_app import app
from worker import signals  # noqa: F401 - connects the worker's signal handlers

__all__ = ["app"]
