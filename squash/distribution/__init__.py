"""An OCI distribution API v2 client: what squashing needs and no more.

Resolve a tag or digest to a manifest, fetch configs and stream layer blobs, with the
token and basic authentication real registries use, retries with backoff, and resumed
blob downloads.
"""
