"""What the worker runs, and what it shares with the web's service (`service/`, which
builds on it; nothing here imports it): the Celery app and its queues (`celery_app`,
`queues`), the export task and the build it runs under its lease (`export_task`, `build`),
sending and starting builds (`dispatch`, `enqueue`), the scheduled work (`scheduled`,
`janitor`); and, shared, the parts of a process (`parts`: settings, board, store,
dispatcher, registry sessions), export specs (`spec`, `asked`), the board (`board`),
registry lookups (`resolver`), errors, JSON logs and the few-second caches (`expiring`).
See docs/architecture.md."""
