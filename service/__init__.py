"""What the web decides, on the parts the worker shares (`tasks.parts`): the request path
(resolve with the caller's credentials, check access, find or start a build, hand it
out), the operators' read-only view, the registry front (`front`), the access checks and
the usage counts written in batches. Nothing of the worker imports it. See
docs/architecture.md."""
