"""The broker's queues: interactive exports, and scheduled work (pre-squash, sweep,
janitor) on a queue of its own, so a worker serving exports is never stuck behind it."""

EXPORT_QUEUE = "squashd.export"
SCHEDULED_QUEUE = "squashd.scheduled"
