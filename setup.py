"""The compiled core of the merger, built by `pip install` with the machine's own compiler.

Everything else is declared in pyproject.toml; only the extension modules need code.
Every `.pyx` under squash/ is one, named by its path (squash/a/b.pyx is squash.a.b),
so a module added or moved there is built without a word here.
"""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup


def core() -> list[Extension]:
    return [
        Extension(".".join(pyx.with_suffix("").parts), [pyx.as_posix()], extra_compile_args=["-O3"])
        for pyx in sorted(Path("squash").rglob("*.pyx"))
    ]


setup(ext_modules=cythonize(core(), compiler_directives={"language_level": "3"}))
