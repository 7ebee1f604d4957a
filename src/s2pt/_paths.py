"""Where an installed s2pt keeps what C, C++ and Cython code builds against.

The wheel ships the C core's public headers (``s2pt/include/s2pt/*.h``) and the core as a
static library compiled with ``-fPIC`` (``s2pt/lib/libs2pt.a``, the same code the extension
module runs), so an extension module can call the C API directly::

    Extension("mysim", ["mysim.pyx"], include_dirs=[s2pt.get_include()],
              library_dirs=[s2pt.get_library_dir()], libraries=["s2pt"])

Cython code cimports the declarations from the shipped ``s2pt/_cs2pt.pxd``
(``from s2pt._cs2pt cimport s2pt_translate``). The static library carries no state shared
with the ``s2pt`` module: pools and page tables made through it are the caller's own.
"""

import os

_PKG = os.path.dirname(os.path.abspath(__file__))


def _sdk_dir(name: str, marker: str) -> str:
    path = os.path.join(_PKG, name)
    if not os.path.isfile(os.path.join(path, marker)):
        raise FileNotFoundError(
            f"{os.path.join(path, marker)} is missing: this s2pt was not built by its setup.py "
            "(pip install s2pt, or pip install . from a source tree, puts it there)")
    return path


def get_include() -> str:
    """The directory to put on the include path (``-I``) for ``#include <s2pt/s2pt.h>``
    (and ``<s2pt/mmu.h>``, ``<s2pt/desc.h>``) against this installed package."""
    return _sdk_dir("include", os.path.join("s2pt", "s2pt.h"))


def get_library_dir() -> str:
    """The directory holding ``libs2pt.a`` (static, position-independent): link with
    ``-L<dir> -ls2pt`` (setuptools: ``library_dirs=[...], libraries=["s2pt"]``)."""
    return _sdk_dir("lib", "libs2pt.a")
