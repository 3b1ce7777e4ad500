"""Fixtures shared by every test directory: the real servers (registries, Redis, moto's
S3, squashd's own processes) start once per session whoever asks for them first."""

pytest_plugins = [
    "tests.registry.fixtures",
    "tests.service.fixtures",
    "tests.loaders.fixtures",
]
