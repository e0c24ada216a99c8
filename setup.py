"""The extension build only: cythonize src/bullfast/_core.pyx.

BULLFAST_NO_EXTENSION=1 skips it (the pure-Python twin is used); BULLFAST_DEBUG_BUILD=1 builds
with line tracing and writes Cython's annotated HTML.
"""

import os

from setuptools import Extension, setup

extensions = []
if os.environ.get("BULLFAST_NO_EXTENSION", "") in ("", "0"):
    from Cython.Build import cythonize

    debug = os.environ.get("BULLFAST_DEBUG_BUILD", "") not in ("", "0")
    extensions = cythonize(
        [
            Extension(
                "bullfast._core",
                ["src/bullfast/_core.pyx"],
                define_macros=[("CYTHON_TRACE_NOGIL", "1")] if debug else [],
            )
        ],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "linetrace": debug,
        },
        annotate=debug,
    )

setup(ext_modules=extensions)
