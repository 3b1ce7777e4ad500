"""Celery tasks: export (build one artifact), pre-squash of popular tags, janitor.

Not built yet: it arrives with the export-service issue.
"""
