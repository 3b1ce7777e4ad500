"""The Celery app object and worker set-up (signals, logging, limits).

Not built yet: it arrives with the export-service issue.
"""
