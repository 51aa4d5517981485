"""Build the Cython extensions; everything else lives in pyproject.toml.

`pip install -e .` (or a normal install) compiles them, so users never run a
separate build step. `python setup.py build_ext --inplace` rebuilds in place.
"""
import ctypes.util

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
    ),
    # The controller's LSTM recurrence (PolicyKernel). Where glibc's vector maths library
    # (libmvec) exists, -ffast-math lets GCC vectorise expf through it; the flag is given at
    # compile time only (at link time GCC would switch the whole process to flush-to-zero).
    Extension(
        "nasseg.search._lstm",
        ["nasseg/search/_lstm.pyx"],
        extra_compile_args=["-O3", "-ffast-math" if ctypes.util.find_library("mvec") else "-fno-math-errno"],
        libraries=["mvec", "m"] if ctypes.util.find_library("mvec") else ["m"],
    ),
    # Depthwise convolutions on NHWC float32 maps (nasseg.models.depthwise), chosen per shape
    # where they beat oneDNN's kernels (nasseg.search.kernels). OpenMP: GCC's libgomp, the
    # library torch's CPU build loads, so both share one thread pool (imported after torch).
    Extension(
        "nasseg.models._depthwise",
        ["nasseg/models/_depthwise.pyx"],
        extra_compile_args=["-O3", "-fopenmp"],
        extra_link_args=["-fopenmp"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
