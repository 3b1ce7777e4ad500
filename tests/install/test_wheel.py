"""squashd as users install it, not the editable install every other test runs: the
checkout's files built into an sdist and a wheel (`python -m build`, the compiled core
with this machine's compiler), the wheel installed into a fresh venv with its
dependencies, and that venv's programs run from a folder outside the checkout.

- the sdist builds the same wheel as the checkout (the same files, the same bytes but
  for the compiled core);
- the wheel holds every file of the shipped packages (a module or template left out of
  the packaging fails here, as squash.outputs once was) and the core compiled;
- every module the wheel's RECORD lists imports from the venv, none from the checkout;
- the venv's `squashd export` writes an archive of a multi-layer OCI layout byte for
  byte as the checkout's does;
- the venv's `squashd-web` (the embedded default) answers /healthz, /readyz and its
  status page (the template).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from testbed.service import WebServer
from testbed.tools import run
from tests.install.wheels import (
    IMPORT_ALL,
    ISOLATED,
    Venv,
    Wheel,
    build,
    copy_checkout,
    import_problems,
    module_name,
)
from tests.integration.helpers import SQUASHD, LayerBuilder, SquashedArchive, write_oci_layout
from tests.layertar import listing
from tests.shipped import REPO, shipped_modules, shipped_packages

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Builds:
    source: Path  # the checkout's files, copied
    files: list[Path]  # relative to `source`
    from_tree: Wheel
    from_sdist: Wheel


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    work = tmp_path_factory.mktemp("wheel-build")
    source = work / "checkout"
    files = copy_checkout(REPO, source)
    sdist = build(source, work / "sdist", "sdist")
    with ThreadPoolExecutor(2) as pool:  # two compilers at once: one core each
        from_tree = pool.submit(build, source, work / "from-tree", "wheel")
        from_sdist = pool.submit(build, sdist, work / "from-sdist", "wheel")
        return Builds(source, files, Wheel(from_tree.result()), Wheel(from_sdist.result()))


@pytest.fixture(scope="module")
def venv(builds: Builds, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    env = Venv.create(tmp_path_factory.mktemp("installed") / "venv")
    env.install(builds.from_tree.path)
    return env


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory that is not the checkout nor under it."""
    where = tmp_path / "elsewhere"
    where.mkdir()
    assert not where.resolve().is_relative_to(REPO)
    return where


def test_the_sdist_builds_the_same_wheel(builds: Builds) -> None:
    tree, sdist = builds.from_tree, builds.from_sdist
    assert tree.path.name == sdist.path.name
    assert tree.names() == sdist.names()
    differ = [
        name
        for name in tree.names()
        if not name.endswith((".so", "/RECORD")) and tree.read(name) != sdist.read(name)
    ]
    assert not differ, f"built from the sdist, these differ: {differ}"

    def rows(wheel: Wheel) -> list[str]:  # but the compiled core's hashes
        return [row for row in wheel.record_rows() if ".so," not in row]

    assert rows(tree) == rows(sdist)


def test_the_wheel_holds_every_file_of_the_shipped_packages(builds: Builds) -> None:
    tops = {package.split(".")[0] for package in shipped_packages(builds.source)}
    modules = {f"{name}.py" for name in shipped_modules(builds.source)}
    expected = {
        path.as_posix()
        for path in builds.files
        if (len(path.parts) > 1 and path.parts[0] in tops) or path.as_posix() in modules
    }
    shipped = builds.from_tree.shipped()
    got = {name for name in shipped if not name.endswith(".so")}
    assert not expected - got, f"in the checkout, not in the wheel: {sorted(expected - got)}"
    assert not got - expected, f"in the wheel, not in the checkout: {sorted(got - expected)}"
    compiled = {module_name(Path(name)) for name in expected if name.endswith(".pyx")}
    assert compiled, "no .pyx found: the compiled core moved out of the shipped packages?"
    python = {module_name(Path(name)) for name in shipped if name.endswith(".py")}
    assert set(builds.from_tree.modules()) - python == compiled


def test_every_module_of_the_wheel_imports_from_the_venv(
    builds: Builds, venv: Venv, outside: Path
) -> None:
    modules = builds.from_tree.modules()
    argv: list[str | Path] = [venv.bin("python"), "-I", "-c", IMPORT_ALL, *modules]
    found = run(argv, cwd=outside, env=ISOLATED).stdout
    problems = import_problems(found, PurePosixPath(venv.site_packages()))
    assert not problems, f"not imported from the venv's site-packages: {problems}"


def _layout(where: Path) -> str:
    """A three-layer image: files changed, deleted, hidden under an opaque directory,
    linked; the `squashd export` source of it."""
    base = LayerBuilder().dir("etc").file("etc/os", b"base\n").dir("app").file("app/old", b"1")
    base.symlink("app/current", "old").dir("cache").file("cache/a", b"a" * 5000)
    change = LayerBuilder().file("etc/os", b"changed\n").whiteout("app/old").file("app/new", b"2")
    change.hardlink("app/also-new", "app/new")
    last = LayerBuilder().opaque("cache").file("cache/b", b"b").symlink("app/current", "new")
    image = write_oci_layout(where, [base, change, last], compression=["gzip", "none", "zstd"])
    return image.source


def test_the_installed_cli_squashes_as_the_checkout_does(venv: Venv, outside: Path) -> None:
    source = _layout(outside / "layout")
    installed, checkout = outside / "installed.tar", outside / "checkout.tar"
    run([venv.bin("squashd"), "export", source, "-o", installed], cwd=outside, env=ISOLATED)
    run([SQUASHD, "export", source, "-o", checkout], cwd=outside)
    squashed = listing(SquashedArchive.open(installed).layer_tar())
    assert sorted(squashed) == [
        "app", "app/also-new", "app/current", "app/new", "cache", "cache/b", "etc", "etc/os",
    ]  # fmt: skip
    assert squashed["etc/os"][1] == b"changed\n" and squashed["app/current"][1] == "new"
    assert installed.read_bytes() == checkout.read_bytes()


class InstalledWeb(WebServer):
    """The venv's `squashd-web`, started from a folder outside the checkout."""

    def __init__(self, root: Path, venv: Venv) -> None:
        super().__init__(root, {**ISOLATED, "SQUASHD_TMPDIR": str(root / "spool")})
        self.venv = venv

    def _argv(self) -> list[str]:
        return [str(self.venv.bin("squashd-web"))]

    def _cwd(self) -> Path:
        return self.root


def test_the_installed_web_serves_the_embedded_default(venv: Venv, outside: Path) -> None:
    (outside / "spool").mkdir()
    web = InstalledWeb(outside, venv).start()
    try:
        assert web.get("/healthz")[0] == 200
        status, _, body = web.get("/readyz")
        assert status == 200, body
        assert json.loads(body)["ready"] is True
        status, headers, page = web.get("/")  # rendered from the shipped template
        assert status == 200 and headers["content-type"].startswith("text/html"), page[:300]
        assert str(outside / "cache" / "squashd") in web.log(), web.log()
    finally:
        web.stop()
