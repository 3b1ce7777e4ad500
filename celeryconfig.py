"""Celery settings, read from the environment (CELERY_BROKER_URL, CELERY_RESULT_BACKEND).

Not filled in yet: the settings arrive with the export-service issue.
"""
