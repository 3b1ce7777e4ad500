"""The thin HTTP front endpoint (`/c1/squash/...`, `/v1/exports`).

Not built yet: it arrives with the export-service issue.
"""
