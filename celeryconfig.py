"""Celery settings, read from the environment: the broker and result backend from
Celery's own `CELERY_BROKER_URL` and `CELERY_RESULT_BACKEND`, limits from squashd's
settings (`tasks.settings`).

Without a broker the app is still configured (an in-memory broker that nothing
publishes to): the embedded default runs tasks in-process with `Task.apply`.
"""

import os

from kombu import Queue

from tasks.queues import EXPORT_QUEUE, SCHEDULED_QUEUE
from tasks.settings import Settings

_settings = Settings.from_env()

broker_url = os.environ.get("CELERY_BROKER_URL") or "memory://"
result_backend = os.environ.get("CELERY_RESULT_BACKEND") or None

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# A build is acknowledged only when it ends; a worker killed mid-build gets its
# message redelivered instead of losing it.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1  # a worker holds no messages it is not working on

task_time_limit = _settings.max_build_seconds
task_soft_time_limit = max(_settings.max_build_seconds - 30, 1)
# Redis redelivers an unacknowledged message after the visibility timeout: it must
# outlast the longest build, or a running build would be started twice.
broker_transport_options = {
    "visibility_timeout": 2 * _settings.max_build_seconds,
    "socket_connect_timeout": 2,
    "socket_timeout": 10,
}
result_backend_transport_options = {"socket_connect_timeout": 2}
result_expires = 86400

# Publishing while the broker is down fails after about a second (the request answers
# 503), rather than hanging; workers keep reconnecting until it is back.
task_publish_retry_policy = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.3,
    "interval_max": 0.5,
}
broker_connection_retry_on_startup = True
broker_connection_max_retries = None
worker_cancel_long_running_tasks_on_connection_loss = False

task_default_queue = EXPORT_QUEUE
task_queues = (Queue(EXPORT_QUEUE), Queue(SCHEDULED_QUEUE))
task_routes = {
    "squashd.presquash": {"queue": SCHEDULED_QUEUE},
    "squashd.janitor": {"queue": SCHEDULED_QUEUE},
    "squashd.sweep": {"queue": SCHEDULED_QUEUE},
}

# Celery beat: pre-squash the most requested tags, send again builds whose worker died,
# evict cold artifacts. A run that
# waited in the queue longer than its interval is dropped: the next one does its work.
beat_schedule = {
    "presquash": {
        "task": "squashd.presquash",
        "schedule": _settings.presquash_interval,
        "options": {"expires": _settings.presquash_interval},
    },
    "sweep": {
        "task": "squashd.sweep",
        "schedule": _settings.sweep_interval,
        "options": {"expires": _settings.sweep_interval},
    },
    "janitor": {
        "task": "squashd.janitor",
        "schedule": _settings.janitor_interval,
        "options": {"expires": _settings.janitor_interval},
    },
}
task_track_started = True
worker_hijack_root_logger = True
timezone = "UTC"
