"""One OCI vocabulary: the media type strings (OCI's and Docker's) are spelled in one
module of the shipped code, squash/oci.py, and every other module names them from there,
so a type cannot be spelled two ways or drift between the parts that read and write it.

The shipped code is what the import-graph test scans (its `PACKAGES` and `MODULES`);
every text source in it is read: Python, Cython, stubs and templates."""

from collections.abc import Iterable, Iterator
from pathlib import Path

from tests.unit.test_import_graph import MODULES, PACKAGES, REPO

SPELLINGS = ("application/vnd.oci.", "application/vnd.docker.")
VOCABULARY = Path("squash/oci.py")
_SOURCES = (".py", ".pyx", ".pxd", ".pyi", ".html")


def shipped_sources(root: Path) -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted(
            path
            for path in (root / package).rglob("*")
            if path.suffix in _SOURCES and "__pycache__" not in path.parts
        )
    for module in MODULES:
        yield root / f"{module}.py"


def spellings(root: Path, files: Iterable[Path]) -> dict[Path, list[int]]:
    """The files (relative to `root`) that spell a media type, with the lines they do."""
    found: dict[Path, list[int]] = {}
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(spelling in line.lower() for spelling in SPELLINGS):
                found.setdefault(path.relative_to(root), []).append(number)
    return found


def test_the_media_types_are_spelled_in_one_module() -> None:
    found = spellings(REPO, shipped_sources(REPO))
    assert VOCABULARY in found, "the scan found no media type in the vocabulary module"
    others = [f"{path}:{lines}" for path, lines in sorted(found.items()) if path != VOCABULARY]
    assert not others, (
        f"media types spelled outside {VOCABULARY} (name them from there): " + ", ".join(others)
    )


def test_the_scan_finds_a_spelling_anywhere_in_the_tree(tmp_path: Path) -> None:
    """The checker, checked: a scratch tree with a media type in a nested module, a
    Cython source and a template, and none in a module that only names one."""
    files = {
        "squash/oci.py": 'OCI_INDEX = "application/vnd.oci.image.index.v1+json"\n',
        "squash/deep/inner.pyx": 'KIND = "Application/VND.Docker.distribution.manifest.v2+json"\n',
        "web/templates/page.html": "<p>application/vnd.oci.image.manifest.v1+json</p>\n",
        "tasks/named.py": "from squash.oci import OCI_INDEX\n",
        "celeryconfig.py": "\n# application/vnd.docker.container.image.v1+json\n",
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
    assert spellings(tmp_path, shipped_sources(tmp_path)) == {
        Path("squash/deep/inner.pyx"): [1],
        Path("squash/oci.py"): [1],
        Path("web/templates/page.html"): [1],
        Path("celeryconfig.py"): [2],
    }
