"""Build wiring only: the C core as a static library with its own strict flags, then the one
Cython extension linked against it. Metadata lives in pyproject.toml.

Environment: S2PT_DEBUG=1 (debug build: -O0 -g, core asserts, Cython checks), S2PT_WERROR=1
(C core warnings are errors, as in CI), S2PT_MARCH=<arch> (opt-in -march), S2PT_ANNOTATE=1.
"""

import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("S2PT_DEBUG") == "1"
WARN = ["-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes", "-Wmissing-prototypes",
        "-Wconversion", "-Wno-sign-conversion"]
core_flags = ["-std=c11"] + WARN
core_flags += ["-O0", "-g", "-DS2PT_DEBUG=1"] if DEBUG else ["-O2"]
if os.environ.get("S2PT_WERROR") == "1":
    core_flags.append("-Werror")
ext_flags = ["-O0", "-g", "-DS2PT_DEBUG=1", "-DCYTHON_TRACE_NOGIL=1"] if DEBUG else ["-O2"]
if os.environ.get("S2PT_MARCH"):
    core_flags.append("-march=" + os.environ["S2PT_MARCH"])
    ext_flags.append("-march=" + os.environ["S2PT_MARCH"])

DIRECTIVES = dict(language_level=3, embedsignature=True, cdivision=True)
if DEBUG:
    DIRECTIVES.update(boundscheck=True, wraparound=True, initializedcheck=True, linetrace=True)
else:
    DIRECTIVES.update(boundscheck=False, wraparound=False, initializedcheck=False)

core = ("s2pt_core", {
    "sources": sorted(glob.glob("csrc/src/*.c")),
    "include_dirs": ["csrc/include"],
    "cflags": core_flags,
})

extensions = [
    Extension(
        "s2pt._core",
        ["src/s2pt/_core.pyx"],
        include_dirs=["csrc/include"],
        extra_compile_args=ext_flags,
        depends=sorted(glob.glob("csrc/include/s2pt/*.h")),
    )
]

setup(
    libraries=[core],
    ext_modules=cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        annotate=os.environ.get("S2PT_ANNOTATE") == "1",
        include_path=["src"],
    ),
)
