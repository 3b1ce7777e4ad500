"""The compiled core of the merger, built by `pip install` with the machine's own compiler.

Everything else is declared in pyproject.toml; only the extension modules need code.
Every `.pyx` under squash/ is one extension module, named by its path.
"""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

CORE = sorted(Path("squash").glob("**/*.pyx"))

setup(
    ext_modules=cythonize(
        [
            Extension(".".join(path.with_suffix("").parts), [str(path)], extra_compile_args=["-O3"])
            for path in CORE
        ],
        compiler_directives={"language_level": "3"},
    )
)
