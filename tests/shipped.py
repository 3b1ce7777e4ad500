"""What the wheel ships, found as setuptools finds it from pyproject.toml: the packages
(`[tool.setuptools.packages.find]`) and the top-level modules (`py-modules`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import setuptools

REPO = Path(__file__).resolve().parents[1]


def _setuptools_config(root: Path) -> dict:
    config: dict = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config


def shipped_packages(root: Path = REPO) -> list[str]:
    """Every package the wheel holds (dotted names, subpackages too)."""
    find = _setuptools_config(root)["packages"]["find"]
    finder = (
        setuptools.find_namespace_packages
        if find.get("namespaces", True)
        else setuptools.find_packages
    )
    packages: list[str] = finder(
        str(root), include=find.get("include", ["*"]), exclude=find.get("exclude", ())
    )
    return packages


def shipped_modules(root: Path = REPO) -> list[str]:
    """The top-level modules (`celeryconfig`) the wheel holds beside the packages."""
    modules: list[str] = _setuptools_config(root).get("py-modules", [])
    return modules


def shipped_tops(root: Path = REPO) -> set[str]:
    """The top-level names the wheel installs: packages and modules."""
    return {name.split(".")[0] for name in shipped_packages(root)} | set(shipped_modules(root))
