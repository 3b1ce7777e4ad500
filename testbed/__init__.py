"""Real processes on free ports, for the test suite and the bench alike.

The tests (tests/) and the benchmarks (bench/) both need the same servers running for
real: the distribution registry, redis-server, moto's S3 server and squashd's own web,
worker and beat processes, each on 127.0.0.1 on a port nobody else uses, with its files
under a directory of its own. This package starts and stops them, and nothing more; it
is neither shipped (it is no package of pyproject.toml) nor tied to pytest, so that
bench/ can use it without importing tests/ or pytest.

- `testbed.process`: `ServerProcess`, the base of every server here (a free port chosen
  at the first start and kept, readiness polling, the log's tail), and the HTTP helpers;
- `testbed.tools`: finding the programs and Python packages the servers need, `run`;
- `testbed.registry`: `Registry` (Debian's `docker-registry`) and `push` (skopeo);
- `testbed.service`: `RedisServer`, `MotoS3`, squashd's `WebServer`, `Worker` and `Beat`,
  and `Stack`, a deployment of them.

What goes wrong raises: `tools.MissingTool` when something is not installed,
`process.StartFailed` (with the end of the server's log) when a server does not start.
pytest's fixtures and hooks (tests/conftest.py) turn those into test failures; nothing
here skips.
"""
