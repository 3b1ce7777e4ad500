"""Fixtures of the integration tests; the helpers themselves live in helpers.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest

from .helpers import require_tool


@pytest.fixture(scope="session")
def tools() -> dict[str, str]:
    """squashd, skopeo and umoci: every round-trip test needs all three (fails if missing)."""
    return {name: require_tool(name) for name in ("squashd", "skopeo", "umoci")}


@pytest.fixture(scope="session")
def podman_bin() -> str:
    return require_tool("podman")


@pytest.fixture
def work(tmp_path: Path) -> Iterable[Path]:
    """A scratch directory, removed after the test whatever its outcome."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture(scope="module")
def module_work(tmp_path_factory: pytest.TempPathFactory, request) -> Iterable[Path]:
    """A scratch directory shared by a module's tests (images built once), removed after."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    shutil.rmtree(path, ignore_errors=True)
