"""The thin HTTP front endpoint: Quay's `/c1/squash/...` route, the `/v1/exports` API,
health checks. FastAPI on uvicorn; the work is in `tasks`."""
