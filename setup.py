"""The compiled core of the merger, built by `pip install` with the machine's own compiler.

Everything else is declared in pyproject.toml; only the extension modules need code.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

CORE = ("tarheader", "pathtable", "layerindex", "output", "layerpass")

setup(
    ext_modules=cythonize(
        [
            Extension(f"squash.{name}", [f"squash/{name}.pyx"], extra_compile_args=["-O3"])
            for name in CORE
        ],
        compiler_directives={"language_level": "3"},
    )
)
