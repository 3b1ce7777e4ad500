"""docs/configuration.md against the code: every `SQUASHD_*` variable the shipped sources
read has a row there, no row names one they do not read, and no page has a second row
for a variable (README.md and docs/*.md link to the one row instead).

The shipped sources are found, not listed: the top-level packages and modules
pyproject.toml ships (every `.py`, `.pyx` and `.pxd` under them), and the `Procfile`,
whose shell reads a variable or two itself. A variable is read wherever its name is
spelled: `env.get("SQUASHD_X")`, a helper given the name, an error message naming it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

from tests.docs import REPO, Markdown, markdown_files
from tests.shipped import shipped_modules, shipped_tops

CONFIGURATION = REPO / "docs" / "configuration.md"
_SQUASHD = re.compile(r"\bSQUASHD_[A-Z0-9_]+")
_VARIABLE_CELL = re.compile(r"`([A-Z][A-Z0-9_]*)`")
_SOURCE_SUFFIXES = (".py", ".pyx", ".pxd")


def shipped_sources(root: Path = REPO) -> list[Path]:
    """The files `pip install .` ships code from, and the Procfile."""
    modules = set(shipped_modules(root))
    files = [root / f"{module}.py" for module in sorted(modules)]
    for top in sorted(shipped_tops(root) - modules):
        files += sorted(
            path
            for path in (root / top).rglob("*")
            if path.suffix in _SOURCE_SUFFIXES and "__pycache__" not in path.parts
        )
    return [*files, root / "Procfile"]


def squashd_variables(files: Iterable[Path]) -> dict[str, list[str]]:
    """Every `SQUASHD_*` name spelled in `files`, with the files that spell it."""
    found: dict[str, list[str]] = {}
    for path in files:
        for name in sorted(set(_SQUASHD.findall(path.read_text()))):
            found.setdefault(name, []).append(str(path.relative_to(REPO)))
    return found


def environ_reads(files: Iterable[Path]) -> set[str]:
    """The names Python code reads from `os.environ` by a literal: `environ.get("X")`,
    `environ["X"]`, `"X" in environ`, `getenv("X")`."""

    def is_environ(node: ast.expr) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
            isinstance(node, ast.Name) and node.id == "environ"
        )

    def literal(node: ast.expr) -> str | None:
        return (
            node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
        )

    names: set[str] = set()
    for path in files:
        if path.suffix != ".py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = None
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                environ_get = isinstance(func, ast.Attribute) and (
                    (func.attr in ("get", "pop", "setdefault") and is_environ(func.value))
                    or func.attr == "getenv"
                )
                if environ_get or (isinstance(func, ast.Name) and func.id == "getenv"):
                    name = literal(node.args[0])
            elif isinstance(node, ast.Subscript) and is_environ(node.value):
                name = literal(node.slice)
            elif (
                isinstance(node, ast.Compare)
                and isinstance(node.ops[0], ast.In | ast.NotIn)
                and is_environ(node.comparators[0])
            ):
                name = literal(node.left)
            if name is not None:
                names.add(name)
    return names


def variable_rows(page: Markdown) -> list[str]:
    """The names in backticks (`NAME`, upper case) that begin rows of `page`'s tables: a
    variable's row has its name in the first cell, or several names."""
    rows = []
    for cells in page.table_rows():
        rows += _VARIABLE_CELL.findall(cells[0]) if cells else []
    return rows


def documented(path: Path = CONFIGURATION) -> list[str]:
    return variable_rows(Markdown.read(path))


def test_every_squashd_variable_the_code_reads_is_documented_and_no_other() -> None:
    read = squashd_variables(shipped_sources())
    listed = {name for name in documented() if name.startswith("SQUASHD_")}
    missing = {name: files for name, files in read.items() if name not in listed}
    assert missing == {}, "read by the code, without a row in docs/configuration.md"
    assert listed - set(read) == set(), "rows in docs/configuration.md the code never reads"


def test_every_variable_python_reads_from_the_environment_is_documented() -> None:
    """The others too: CELERY_BROKER_URL, PORT, XDG_CACHE_HOME, REGISTRY_AUTH_FILE, ..."""
    read = environ_reads(shipped_sources())
    assert {"CELERY_BROKER_URL", "PORT", "XDG_CACHE_HOME", "REGISTRY_AUTH_FILE"} <= read
    assert read - set(documented()) == set()


def test_each_variable_has_one_row_in_all_the_docs() -> None:
    """One row per variable, in docs/configuration.md, and nowhere else a row of its own:
    every other page names it and links there."""
    variables = set(documented())
    rows: dict[str, list[str]] = {}
    for path in markdown_files():
        page = Markdown.read(path)
        for name in variable_rows(page):
            if name in variables or name.startswith("SQUASHD_"):
                rows.setdefault(name, []).append(page.name)
    twice = {name: pages for name, pages in rows.items() if len(pages) > 1}
    elsewhere = {name: pages for name, pages in rows.items() if pages != ["docs/configuration.md"]}
    assert twice == {}
    assert elsewhere == {}


def test_a_missing_row_fails(tmp_path: Path) -> None:
    """The comparison is not vacuous: the page without one row misses that variable."""
    lines = CONFIGURATION.read_text().splitlines(keepends=True)
    dropped = next(i for i, line in enumerate(lines) if line.startswith("| `SQUASHD_TMPDIR`"))
    shorter = tmp_path / "configuration.md"
    shorter.write_text("".join(lines[:dropped] + lines[dropped + 1 :]))
    read = squashd_variables(shipped_sources())
    assert "SQUASHD_TMPDIR" in read
    assert set(read) - set(documented(shorter)) == {"SQUASHD_TMPDIR"}


def test_the_scan_sees_the_shipped_tree() -> None:
    """Guards against a scan that silently finds nothing: the settings, the web's own
    variables, the registry client's and the Procfile's are all seen."""
    read = squashd_variables(shipped_sources())
    for name in ("SQUASHD_REGISTRY", "SQUASHD_HOST", "SQUASHD_DEBUG", "SQUASHD_BEAT_SCHEDULE"):
        assert name in read
    assert len(read) >= 30
