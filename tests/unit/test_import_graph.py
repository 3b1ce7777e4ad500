"""The import graph of the shipped code: layering between the top-level packages, no
import cycles, and which parts of the engine may reach its source and registry layers.

The shipped code is the packages `squash` (with `squash.sources`, `squash.registry`),
`storage`, `tasks` (with `tasks.board`), `web`, `worker` and the module
`celeryconfig.py`. Nothing is imported: Python files are parsed with `ast`; the Cython
sources (`*.pyx`, `*.pxd`) are not Python syntax, so their `import`, `cimport` and
`from X cimport` lines are read with a small regex, and a compiled module is one node
whichever of its `.pyx` / `.pxd` files an edge comes from. The `.pyi` stubs are not
read: they describe the compiled modules, whose real dependencies are in the `.pyx`.

What counts as an import:

* every `import` / `from ... import` statement anywhere in a file: at module level,
  inside functions and methods, inside `try:` blocks, and inside `if TYPE_CHECKING:`
  blocks. A `TYPE_CHECKING` import never runs, but it is still a dependency of the
  importer on the imported module's types, and layering is about which code may know
  about which; so it counts, for the layering and for the cycles alike;
* relative imports, resolved against the importer's package;
* only first-party modules: a module whose top-level name is a key of `ALLOWED`.
  Everything else (the standard library, Celery, `_typeshed`, `libc`, `cpython`...) is
  third-party and ignored;
* `import a.b.c` is an edge to the deepest first-party module of that path; `from a.b
  import c` is an edge to `a.b.c` if that is a module, otherwise to `a.b`. The implicit
  imports of the parent packages (`a`, `a.b`) are not edges;
* strings are not imports: `app.config_from_object("celeryconfig")` or
  `importlib.import_module(...)` are invisible here.

The layering table `ALLOWED` below is the single source of truth for the rule; the same
table is in docs/architecture.md, and the two must be changed together.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.shipped import shipped_tops

# Which first-party top-level packages (and the one top-level module) each may import.
# The same table is in docs/architecture.md.
ALLOWED: dict[str, frozenset[str]] = {
    "squash": frozenset({"squash"}),
    "storage": frozenset({"storage", "squash"}),
    "tasks": frozenset({"tasks", "storage", "squash"}),
    "web": frozenset({"web", "tasks", "storage", "squash"}),
    "worker": frozenset({"worker", "tasks", "storage", "squash"}),
    "celeryconfig": frozenset({"tasks"}),
}

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("squash", "storage", "tasks", "web", "worker")
MODULES = ("celeryconfig",)

_SOURCE_SUFFIXES = (".py", ".pyx", ".pxd")
# Cython: `from X cimport a, b`, `from X import (`, `cimport X as y`, `import X, Y`.
_CYTHON_FROM = re.compile(r"^\s*from\s+(\.*)([\w.]*)\s+c?import\s+(.*)$")
_CYTHON_IMPORT = re.compile(r"^\s*c?import\s+(.*)$")


@dataclass(frozen=True)
class RawImport:
    """One imported path as written: `from <level dots><module> import <name>`, or
    `import <module>` (then `name` is None)."""

    line: int
    level: int
    module: str
    name: str | None


@dataclass(frozen=True)
class Edge:
    """`importer` imports `imported`, at `path:line` (path relative to the tree root)."""

    importer: str
    imported: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} → {self.imported}"


@dataclass(frozen=True)
class Module:
    name: str
    is_package: bool
    files: tuple[Path, ...]


# --- Reading the sources ------------------------------------------------------------


def module_name(relative: Path) -> tuple[str, bool]:
    """The dotted name of a source file (relative to the tree root), and whether it is a
    package's `__init__`."""
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def discover(
    root: Path, packages: Iterable[str] = PACKAGES, modules: Iterable[str] = MODULES
) -> dict[str, Module]:
    """Every first-party module under `root`, by dotted name."""
    files: dict[str, list[Path]] = {}
    package_names: set[str] = set()
    candidates: list[Path] = []
    for package in packages:
        candidates += sorted(
            path
            for path in (root / package).rglob("*")
            if path.suffix in _SOURCE_SUFFIXES and "__pycache__" not in path.parts
        )
    for module in modules:
        candidates += [path for path in [root / f"{module}.py"] if path.exists()]
    for path in candidates:
        name, is_package = module_name(path.relative_to(root))
        files.setdefault(name, []).append(path)
        if is_package:
            package_names.add(name)
    return {
        name: Module(name, name in package_names, tuple(paths)) for name, paths in files.items()
    }


def python_imports(source: str, filename: str) -> Iterator[RawImport]:
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield RawImport(node.lineno, 0, alias.name, None)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                yield RawImport(node.lineno, node.level, node.module or "", alias.name)


def _names(text: str) -> list[str]:
    """`a, b as c, d` (a Cython import list, parentheses and comment removed) → names."""
    text = text.split("#", 1)[0].replace("(", " ").replace(")", " ")
    return [item.split()[0] for item in text.split(",") if item.strip()]


def cython_imports(source: str) -> Iterator[RawImport]:
    lines = source.splitlines()
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index]
        index += 1
        if match := _CYTHON_FROM.match(line):
            dots, module, rest = match.groups()
            # A parenthesised list may run over several lines.
            if "(" in rest.split("#", 1)[0]:
                while ")" not in rest.split("#", 1)[0] and index < len(lines):
                    rest += " " + lines[index].split("#", 1)[0]
                    index += 1
            for name in _names(rest):
                yield RawImport(number, len(dots), module, name)
        elif match := _CYTHON_IMPORT.match(line):
            for name in _names(match.group(1)):
                yield RawImport(number, 0, name, None)


def raw_imports(path: Path) -> Iterator[RawImport]:
    source = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        return python_imports(source, str(path))
    return cython_imports(source)


# --- Building the graph -------------------------------------------------------------


def _deepest_known(dotted: str, known: Mapping[str, Module]) -> str | None:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def resolve(importer: Module, raw: RawImport, known: Mapping[str, Module]) -> str | None:
    """The first-party module `raw` (written in `importer`) is an edge to, or None for a
    third-party import."""
    if raw.level:
        base = importer.name.split(".")
        if not importer.is_package:
            base = base[:-1]
        if raw.level - 1 > len(base) - 1:
            raise AssertionError(f"{importer.name}: relative import beyond the top: {raw}")
        base = base[: len(base) - (raw.level - 1)]
        target = ".".join([*base, *([raw.module] if raw.module else [])])
    else:
        target = raw.module
    if target.split(".")[0] not in ALLOWED:
        return None
    if raw.name is not None and raw.name != "*" and f"{target}.{raw.name}" in known:
        return f"{target}.{raw.name}"
    # An unknown first-party path (a broken import) still counts, as its nearest module.
    return _deepest_known(target, known) or target


def import_edges(root: Path, known: Mapping[str, Module]) -> list[Edge]:
    edges: list[Edge] = []
    for module in known.values():
        for path in module.files:
            for raw in raw_imports(path):
                imported = resolve(module, raw, known)
                if imported is not None:
                    relative = path.relative_to(root).as_posix()
                    edges.append(Edge(module.name, imported, relative, raw.line))
    return sorted(set(edges), key=lambda edge: (edge.path, edge.line, edge.imported))


def graph(root: Path) -> list[Edge]:
    return import_edges(root, discover(root))


# --- The checks ---------------------------------------------------------------------


def top(module: str) -> str:
    return module.split(".")[0]


def layering_violations(edges: Iterable[Edge]) -> list[str]:
    return [
        f"{edge}  ({top(edge.importer)} may import only "
        f"{', '.join(sorted(ALLOWED[top(edge.importer)]))})"
        for edge in edges
        if top(edge.imported) not in ALLOWED[top(edge.importer)]
    ]


def strongly_connected(nodes: Iterable[str], edges: Iterable[Edge]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted."""
    successors: dict[str, list[str]] = {node: [] for node in nodes}
    for edge in edges:
        successors.setdefault(edge.importer, []).append(edge.imported)
        successors.setdefault(edge.imported, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    # The depth-first path: each node with the successors it has still to look at.
    work: list[tuple[str, Iterator[str]]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        work.append((node, iter(sorted(set(successors[node])))))

    for start in sorted(successors):
        if start in index:
            continue
        visit(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
            elif child not in index:
                visit(child)
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def cycles(nodes: Iterable[str], edges: list[Edge]) -> list[str]:
    """Each import cycle: its modules, and the edges that close it."""
    found: list[str] = []
    for component in strongly_connected(nodes, edges):
        members = set(component)
        inner = [e for e in edges if e.importer in members and e.imported in members]
        if len(component) > 1 or inner:  # a self-import is a cycle of one
            lines = "\n".join(f"    {edge}" for edge in inner)
            found.append(f"cycle {component}:\n{lines}")
    return found


def _squash_area(module: str) -> str | None:
    """Which part of the engine a module is in: "sources", "outputs", "registry", "base"
    (directly in squash/, including squash/__init__), or None outside squash."""
    parts = module.split(".")
    if parts[0] != "squash":
        return None
    if len(parts) > 1 and parts[1] in ("sources", "outputs", "registry"):
        return parts[1]
    return "base"


# The modules directly in squash/ that may reach the source and registry layers: the
# command line, and the package façade.
SQUASH_FACADES = frozenset({"squash", "squash.cli"})


def squash_internal_violations(edges: Iterable[Edge]) -> list[str]:
    """squash.sources and squash.outputs may import the base modules and squash.registry
    but not each other; squash.registry may import squash but not squash.sources or
    squash.outputs; the modules directly in squash/ may import none of the three, except
    the façades in `SQUASH_FACADES`."""
    violations: list[str] = []
    for edge in edges:
        importer, imported = _squash_area(edge.importer), _squash_area(edge.imported)
        if importer is None or imported is None or importer == imported:
            continue
        if importer == "registry" and imported in ("sources", "outputs"):
            violations.append(f"{edge}  (squash.registry may not import squash.{imported})")
        elif {importer, imported} == {"sources", "outputs"}:
            violations.append(f"{edge}  (squash.sources and squash.outputs are apart)")
        elif importer == "base" and imported != "base" and edge.importer not in SQUASH_FACADES:
            violations.append(
                f"{edge}  (only {', '.join(sorted(SQUASH_FACADES))} in squash/ may import "
                f"squash.{imported})"
            )
    return violations


# --- The tests ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return discover(REPO)


@pytest.fixture(scope="module")
def edges(modules: dict[str, Module]) -> list[Edge]:
    return import_edges(REPO, modules)


def test_the_table_covers_every_shipped_top_level_package() -> None:
    """A new top-level package or module the wheel ships (as setuptools finds them from
    pyproject.toml) must get a row in `ALLOWED` (and be scanned here), or it would
    escape the layering."""
    assert shipped_tops(REPO) == set(ALLOWED) == set(PACKAGES) | set(MODULES)


def test_the_scan_sees_the_whole_tree(modules: dict[str, Module], edges: list[Edge]) -> None:
    """Guards against a scan that silently finds nothing: the compiled modules and the
    subpackages are nodes, and the Cython `cimport` edges are read."""
    for name in ("squash.sources", "squash.registry", "tasks.board", "celeryconfig"):
        assert name in modules
    compiled = {"squash.layerindex", "squash.layerpass", "squash.output", "squash.pathtable"}
    assert compiled <= set(modules)
    assert any(e.importer == "squash.layerpass" and e.imported == "squash.output" for e in edges)


def test_layering(edges: list[Edge]) -> None:
    violations = layering_violations(edges)
    assert not violations, "imports across the layering (see ALLOWED):\n" + "\n".join(violations)


def test_no_import_cycles(modules: dict[str, Module], edges: list[Edge]) -> None:
    found = cycles(modules, edges)
    assert not found, "import cycles between modules:\n" + "\n".join(found)


def test_engine_base_does_not_reach_up_into_sources_or_registry(edges: list[Edge]) -> None:
    violations = squash_internal_violations(edges)
    assert not violations, "imports inside squash against its layering:\n" + "\n".join(violations)


# --- The checker, checked: a scratch tree with known violations ---------------------


def _write(root: Path, files: Mapping[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_violations(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "squash/__init__.py": "",
            # A cycle through a relative import and a function-level import.
            "squash/a.py": "from . import b\n",
            "squash/b.py": "def f() -> None:\n    from squash.c import thing\n",
            "squash/c.py": "import squash.a\n",
            "squash/selfish.py": "from squash import selfish\n",
            # An upward import, hidden behind TYPE_CHECKING.
            "squash/sources/__init__.py": "",
            "squash/sources/docker.py": "from ..registry import client\n",
            "squash/registry/__init__.py": "",
            "squash/registry/client.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from squash.sources.docker import Image\n"
            ),
            "squash/merge.py": "import os\nfrom squash.sources import docker\n",
            "squash/outputs/__init__.py": "from squash.registry import client\n",  # allowed
            "squash/outputs/oci.py": "from squash.sources import docker\n",
            # A compiled module: Cython syntax, cimport of a module, multi-line import.
            "squash/fast.pxd": "from libc.stdint cimport uint32_t\n",
            "squash/fast.pyx": (
                "from libc.stdlib cimport free\n"
                "cimport squash.slow\n"
                "from squash cimport (\n    slow,\n    fast2  # comment\n)\n"
                "cdef class Fast:\n    pass\n"
            ),
            "squash/slow.pyx": "from squash.fast cimport Fast\n",
            "squash/fast2.pxd": "",
            "squash/cli.py": "from squash.sources.docker import x\n",  # allowed: façade
            "storage/__init__.py": "import web\nimport celery\n",
            "web/__init__.py": "",
            "web/app.py": "from storage import thing\nfrom tasks import t\n",
            "tasks/__init__.py": "",
            "tasks/t.py": "",
            "worker/__init__.py": "",
            "celeryconfig.py": "from storage import x\nimport tasks.t\n",
        },
    )
    modules = discover(tmp_path)
    assert {"squash.fast", "squash.slow", "squash.fast2"} <= set(modules)
    assert modules["squash.fast"].files == (
        tmp_path / "squash/fast.pxd",
        tmp_path / "squash/fast.pyx",
    )
    edges = import_edges(tmp_path, modules)

    assert Edge("squash.a", "squash.b", "squash/a.py", 1) in edges
    assert Edge("squash.b", "squash.c", "squash/b.py", 2) in edges
    assert Edge("squash.fast", "squash.slow", "squash/fast.pyx", 2) in edges
    assert Edge("squash.fast", "squash.fast2", "squash/fast.pyx", 3) in edges
    assert not any(e.importer == "storage" and "celery" in e.imported for e in edges)

    layering = layering_violations(edges)
    assert layering == [
        "celeryconfig.py:1: celeryconfig → storage  (celeryconfig may import only tasks)",
        "storage/__init__.py:1: storage → web  (storage may import only squash, storage)",
    ]

    found = cycles(modules, edges)
    assert any("['squash.a', 'squash.b', 'squash.c']" in c for c in found), found
    assert any("['squash.fast', 'squash.slow']" in c for c in found), found
    assert any("['squash.selfish']" in c for c in found), found
    assert any("['squash.registry.client', 'squash.sources.docker']" in c for c in found)
    assert any("squash/c.py:1: squash.c → squash.a" in c for c in found), found
    assert not any("storage" in c for c in found)  # storage → web, web.app → storage: no cycle

    internal = squash_internal_violations(edges)
    assert internal == [
        "squash/merge.py:2: squash.merge → squash.sources.docker  "
        "(only squash, squash.cli in squash/ may import squash.sources)",
        "squash/outputs/oci.py:1: squash.outputs.oci → squash.sources.docker  "
        "(squash.sources and squash.outputs are apart)",
        "squash/registry/client.py:3: squash.registry.client → squash.sources.docker  "
        "(squash.registry may not import squash.sources)",
    ]
