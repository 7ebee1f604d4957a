"""Builds the Cython example against the INSTALLED s2pt package (pip install s2pt first):
the headers from s2pt.get_include(), the static libs2pt.a from s2pt.get_library_dir(), and
the declarations from the shipped s2pt/_cs2pt.pxd.

    python setup.py build_ext --inplace && python run.py
"""

import os

import s2pt
from Cython.Build import cythonize
from setuptools import Extension, setup

ext = Extension(
    "s2pt_cython_sim",
    ["s2pt_cython_sim.pyx"],
    include_dirs=[s2pt.get_include()],
    library_dirs=[s2pt.get_library_dir()],
    libraries=["s2pt"],
    # The archive's symbols stay private to this module (no s2pt_* in its dynamic symbols).
    extra_link_args=["-Wl,--exclude-libs,libs2pt.a"],
)

setup(
    name="s2pt-cython-sim",
    ext_modules=cythonize(
        [ext],
        # Cython finds s2pt/_cs2pt.pxd on sys.path; naming the package's parent directory
        # also covers layouts where s2pt is importable by other means.
        include_path=[os.path.dirname(os.path.dirname(s2pt.__file__))],
    ),
)
