"""The squash engine: image sources, the streaming layer merger and the archive writer.

Pure Python with small codecs only: nothing here knows about Celery, HTTP frameworks or S3.
"""
