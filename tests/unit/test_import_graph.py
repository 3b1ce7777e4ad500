"""The import graph of the shipped code: layering between the top-level packages, no
import cycles, and which areas of the engine (its base, the merge, sources, outputs, the
registry client in squash.distribution) may import which.

The shipped code is the packages `squash` (with `squash.sources`, `squash.merge`,
`squash.outputs`, `squash.distribution`), `storage`, `tasks` (with `tasks.board`),
`service` (with `service.front`), `web`,
`worker` and the module `celeryconfig.py`. Nothing is imported: Python files are parsed
with `ast`; the Cython sources (`*.pyx`, `*.pxd`) are not Python syntax, so their
`import`, `cimport` and `from X cimport` lines are read with a small regex, and a
compiled module is one node whichever of its `.pyx` / `.pxd` files an edge comes from.
The `.pyi` stubs are not read: they describe the compiled modules, whose real
dependencies are in the `.pyx`.

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
    "service": frozenset({"service", "tasks", "storage", "squash"}),
    "web": frozenset({"web", "service", "tasks", "storage", "squash"}),
    "worker": frozenset({"worker", "tasks", "storage", "squash"}),
    "celeryconfig": frozenset({"tasks"}),
}

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("squash", "storage", "tasks", "service", "web", "worker")
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


# Which areas of the engine each area may import: the merge and the registry client stand
# on the base modules alone; sources and outputs on the base and the registry client, but
# not on each other. An area is a subpackage of squash; "base" is the modules directly in
# squash/ (squash/__init__ included).
SQUASH_AREAS: dict[str, frozenset[str]] = {
    "base": frozenset({"base"}),
    "merge": frozenset({"merge", "base"}),
    "distribution": frozenset({"distribution", "base"}),
    "sources": frozenset({"sources", "distribution", "base"}),
    "outputs": frozenset({"outputs", "distribution", "base"}),
}

# The base modules that reach further than their area: the façades (the package and the
# command line) pick implementations from every area; the export drives the merge.
SQUASH_FACADES: dict[str, frozenset[str]] = {
    "squash": frozenset(SQUASH_AREAS),
    "squash.cli": frozenset(SQUASH_AREAS),
    "squash.export": frozenset({"base", "merge"}),
}


def _squash_area(module: str) -> str | None:
    """Which area of the engine a module is in (a key of `SQUASH_AREAS`), or None
    outside squash."""
    parts = module.split(".")
    if parts[0] != "squash":
        return None
    if len(parts) > 1 and parts[1] in SQUASH_AREAS and parts[1] != "base":
        return parts[1]
    return "base"


def _area_name(area: str) -> str:
    return "squash's base modules" if area == "base" else f"squash.{area}"


def squash_internal_violations(edges: Iterable[Edge]) -> list[str]:
    """Each import inside squash that its area's row of `SQUASH_AREAS` (or the importer's
    own row of `SQUASH_FACADES`) does not allow."""
    violations: list[str] = []
    for edge in edges:
        importer, imported = _squash_area(edge.importer), _squash_area(edge.imported)
        if importer is None or imported is None:
            continue
        allowed = SQUASH_FACADES.get(edge.importer, SQUASH_AREAS[importer])
        if imported not in allowed:
            who = edge.importer if edge.importer in SQUASH_FACADES else _area_name(importer)
            reach = ", ".join(_area_name(area) for area in sorted(allowed))
            violations.append(f"{edge}  ({who} may import only {reach})")
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
    for name in (
        "squash.sources",
        "squash.merge",
        "squash.distribution",
        "tasks.board",
        "service.front",
        "celeryconfig",
    ):
        assert name in modules
    compiled = {
        "squash.merge.tarheader",
        "squash.merge.pathtable",
        "squash.merge.layerindex",
        "squash.merge.layerpass",
        "squash.merge.ordered",
    }
    assert compiled <= set(modules)
    assert any(
        e.importer == "squash.merge.layerpass" and e.imported == "squash.merge.ordered"
        for e in edges
    )


def test_layering(edges: list[Edge]) -> None:
    violations = layering_violations(edges)
    assert not violations, "imports across the layering (see ALLOWED):\n" + "\n".join(violations)


def test_no_import_cycles(modules: dict[str, Module], edges: list[Edge]) -> None:
    found = cycles(modules, edges)
    assert not found, "import cycles between modules:\n" + "\n".join(found)


def test_the_engine_areas_import_only_what_their_row_allows(edges: list[Edge]) -> None:
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
            "squash/sources/registry.py": "from ..distribution import client\n",
            "squash/distribution/__init__.py": "",
            "squash/distribution/client.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from squash.sources.registry import Image\n"
            ),
            "squash/layers.py": "import os\nfrom squash.sources import registry\n",
            "squash/image.py": "from squash.merge.merger import Merger\n",
            "squash/export.py": "from squash.merge import merger\n",  # allowed: it drives it
            "squash/merge/__init__.py": "",
            "squash/merge/merger.py": (
                "from squash.distribution import client\nfrom squash import a\n"
            ),
            "squash/outputs/__init__.py": "from squash.distribution import client\n",  # allowed
            "squash/outputs/oci.py": "from squash.sources import registry\n",
            # A compiled module: Cython syntax, cimport of a module, multi-line import.
            "squash/merge/fast.pxd": "from libc.stdint cimport uint32_t\n",
            "squash/merge/fast.pyx": (
                "from libc.stdlib cimport free\n"
                "cimport squash.merge.slow\n"
                "from squash.merge cimport (\n    slow,\n    fast2  # comment\n)\n"
                "cdef class Fast:\n    pass\n"
            ),
            "squash/merge/slow.pyx": "from squash.merge.fast cimport Fast\n",
            "squash/merge/fast2.pxd": "",
            "squash/cli.py": (  # allowed: the façade
                "from squash.sources.registry import x\nfrom squash.merge import fast\n"
            ),
            "storage/__init__.py": "import web\nimport celery\n",
            "web/__init__.py": "",
            "web/app.py": "from storage import thing\nfrom tasks import t\nfrom service import s\n",
            "tasks/__init__.py": "",
            "tasks/t.py": "",
            # The worker's side may not reach the web's service, not even for a type.
            "tasks/u.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from service.s import Service\n"
            ),
            "service/__init__.py": "",
            "service/s.py": "from tasks import t\nfrom storage import thing\n",
            "worker/__init__.py": "",
            "celeryconfig.py": "from storage import x\nimport tasks.t\n",
        },
    )
    modules = discover(tmp_path)
    assert {"squash.merge.fast", "squash.merge.slow", "squash.merge.fast2"} <= set(modules)
    assert modules["squash.merge.fast"].files == (
        tmp_path / "squash/merge/fast.pxd",
        tmp_path / "squash/merge/fast.pyx",
    )
    edges = import_edges(tmp_path, modules)

    assert Edge("squash.a", "squash.b", "squash/a.py", 1) in edges
    assert Edge("squash.b", "squash.c", "squash/b.py", 2) in edges
    assert Edge("squash.merge.fast", "squash.merge.slow", "squash/merge/fast.pyx", 2) in edges
    assert Edge("squash.merge.fast", "squash.merge.fast2", "squash/merge/fast.pyx", 3) in edges
    assert not any(e.importer == "storage" and "celery" in e.imported for e in edges)

    layering = layering_violations(edges)
    assert layering == [
        "celeryconfig.py:1: celeryconfig → storage  (celeryconfig may import only tasks)",
        "storage/__init__.py:1: storage → web  (storage may import only squash, storage)",
        "tasks/u.py:3: tasks.u → service.s  (tasks may import only squash, storage, tasks)",
    ]

    found = cycles(modules, edges)
    assert any("['squash.a', 'squash.b', 'squash.c']" in c for c in found), found
    assert any("['squash.merge.fast', 'squash.merge.slow']" in c for c in found), found
    assert any("['squash.selfish']" in c for c in found), found
    assert any("['squash.distribution.client', 'squash.sources.registry']" in c for c in found)
    assert any("squash/c.py:1: squash.c → squash.a" in c for c in found), found
    assert not any("storage" in c for c in found)  # storage → web, web.app → storage: no cycle

    internal = squash_internal_violations(edges)
    assert internal == [
        "squash/distribution/client.py:3: squash.distribution.client → squash.sources.registry"
        "  (squash.distribution may import only squash's base modules, squash.distribution)",
        "squash/image.py:1: squash.image → squash.merge.merger  "
        "(squash's base modules may import only squash's base modules)",
        "squash/layers.py:2: squash.layers → squash.sources.registry  "
        "(squash's base modules may import only squash's base modules)",
        "squash/merge/merger.py:1: squash.merge.merger → squash.distribution.client  "
        "(squash.merge may import only squash's base modules, squash.merge)",
        "squash/outputs/oci.py:1: squash.outputs.oci → squash.sources.registry  "
        "(squash.outputs may import only squash's base modules, squash.distribution, "
        "squash.outputs)",
    ]
