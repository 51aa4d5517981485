"""Build the Cython extensions; everything else lives in pyproject.toml.

`pip install -e .` (or a normal install) compiles them, so users never run a
separate build step. `python setup.py build_ext --inplace` rebuilds in place.
"""
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "nasseg.metrics._confusion",
        ["nasseg/metrics/_confusion.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
