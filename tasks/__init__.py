"""The export service: what the web asks (`service`), the builds it sends (`dispatch`,
`build_task`, `build`), the shared state of jobs, locks and counts (`board`), the checks of
callers at the registry (`access`), and the scheduled work (`scheduled`, `janitor`).
See docs/architecture.md."""
