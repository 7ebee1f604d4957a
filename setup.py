"""Build wiring only: the C core as a static library with its own strict flags, then the one
Cython extension linked against it, then the files C and Cython users build against (the public
headers and that static library, shipped in the package). Metadata lives in pyproject.toml.

Environment: S2PT_DEBUG=1 (debug build: -O0 -g, core asserts, Cython checks), S2PT_WERROR=1
(C core warnings are errors, as in CI), S2PT_MARCH=<arch> (opt-in -march), S2PT_ANNOTATE=1.
"""

import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

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

# Each flavour builds in its own tree: setuptools and cythonize rebuild by timestamps only, so a
# debug build over a release tree would link the release core (no asserts) and the reverse.
FLAVOUR = ("debug" if DEBUG else "release") + (
    "-" + os.environ["S2PT_MARCH"] if os.environ.get("S2PT_MARCH") else "")
BUILD_BASE = os.path.join("build", FLAVOUR)

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
        # The core is linked in whole; its s2pt_* symbols stay inside the extension, so a
        # process that also loads libs2pt.so (a C simulator embedding Python) gets no clash.
        extra_link_args=["-Wl,--exclude-libs,ALL"],
        depends=sorted(glob.glob("csrc/include/s2pt/*.h")),
    )
]


class build_ext_with_sdk(build_ext):
    """build_ext, then s2pt/include/s2pt/*.h and s2pt/lib/libs2pt.a next to the extension (in
    the build tree, or in src/ for an editable install), for s2pt.get_include() and
    s2pt.get_library_dir(). The archive is build_clib's s2pt_core: compiled like the core the
    extension links, and with -fPIC, so it links into other extension modules too."""

    def sdk_files(self):
        pkg = os.path.dirname(self.get_ext_fullpath("s2pt._core"))
        clib = self.get_finalized_command("build_clib")
        archive = os.path.join(clib.build_clib, self.compiler.library_filename(core[0]))
        files = [(archive, os.path.join(pkg, "lib", "libs2pt.a"))]
        for header in sorted(glob.glob("csrc/include/s2pt/*.h")):
            files.append((header, os.path.join(pkg, "include", "s2pt", os.path.basename(header))))
        return files

    def run(self):
        super().run()
        for src, dst in self.sdk_files():
            self.mkpath(os.path.dirname(dst))
            self.copy_file(src, dst)

    def get_outputs(self):
        return super().get_outputs() + [dst for _, dst in self.sdk_files()]


setup(
    cmdclass={"build_ext": build_ext_with_sdk},
    options={"build": {"build_base": BUILD_BASE}},
    libraries=[core],
    ext_modules=cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        annotate=os.environ.get("S2PT_ANNOTATE") == "1",
        include_path=["src"],
        build_dir=os.path.join(BUILD_BASE, "cython"),
    ),
)
