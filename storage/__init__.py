"""Artifact stores (S3 via boto3, a local directory) behind one small interface.

Not built yet: it arrives with the export-service issue. The engine in `squash/`
already writes through a sink (see `squash.sinks`), which is what a store will provide.
"""
