"""The C library as a product: `make -C csrc install` (static and shared library, headers,
pkg-config file), the files the installed package ships for C and Cython builds, and the
examples built against both, whose output must be what the Python API gives.

Needs a C toolchain (cc, make, pkg-config, binutils); skipped without one. Builds happen in
temporary directories: the source tree is only read.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import s2pt

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
EXAMPLES = ROOT / "examples"
CC = os.environ.get("CC", "cc")
_missing = [tool for tool in (CC, "make", "pkg-config", "nm", "readelf", "ar")
            if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"no C toolchain: {_missing} missing")

MAJOR = s2pt.__version__.split(".")[0]
SONAME = f"libs2pt.so.{MAJOR}"


def run(*cmd, cwd=None, env=None):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def make_install(prefix, build, *extra):
    return run("make", "-s", "-j2", "-C", CSRC, "install", f"PREFIX={prefix}",
               f"BUILD={build}", *extra)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    """The C library installed into a temporary prefix (built out of the source tree)."""
    top = tmp_path_factory.mktemp("clib")
    make_install(top / "prefix", top / "build")
    return top / "prefix"


def pc_env(prefix):
    return dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"))


def dynamic_symbols(lib):
    return {line.split()[-1] for line in run("nm", "-D", "--defined-only", lib).splitlines()
            if line.strip()}


def archive_globals(archive):
    out = run("nm", "-g", "--defined-only", archive)
    return {f[2] for f in (line.split() for line in out.splitlines()) if len(f) == 3}


def header_functions():
    """Every function the public headers declare (static inline ones are not symbols)."""
    names = set()
    for header in glob.glob(str(CSRC / "include" / "s2pt" / "*.h")):
        text = Path(header).read_text()
        names |= set(re.findall(r"^(?!static)[A-Za-z_][\w \t]*?\**\s*\b(s2pt_[a-z0-9_]+)\(",
                                text, re.M))
    return names


def elf_dynamic(path, tag):
    return re.findall(rf"\({tag}\).*\[(.*)\]", run("readelf", "-d", path))


# ---- make install ---------------------------------------------------------------------------

def test_install_layout(prefix):
    lib = prefix / "lib"
    version = s2pt.__version__
    assert (lib / "libs2pt.a").is_file()
    assert (lib / f"libs2pt.so.{version}").is_file()
    assert os.readlink(lib / SONAME) == f"libs2pt.so.{version}"
    assert os.readlink(lib / "libs2pt.so") == SONAME
    headers = sorted(p.name for p in (CSRC / "include" / "s2pt").glob("*.h"))
    assert sorted(p.name for p in (prefix / "include" / "s2pt").iterdir()) == headers
    for name in headers:
        assert ((prefix / "include" / "s2pt" / name).read_bytes()
                == (CSRC / "include" / "s2pt" / name).read_bytes())


def test_soname_carries_the_package_major_version(prefix):
    assert elf_dynamic(prefix / "lib" / "libs2pt.so", "SONAME") == [SONAME]
    # The core needs nothing beyond libc.
    assert [n for n in elf_dynamic(prefix / "lib" / "libs2pt.so", "NEEDED")
            if not n.startswith("libc.so")] == []


def test_shared_library_exports_exactly_the_public_api(prefix):
    exported = dynamic_symbols(prefix / "lib" / "libs2pt.so")
    assert exported == header_functions()
    assert all(s.startswith("s2pt_") and not s.startswith("s2pt__") for s in exported)
    # The internal helpers exist (the static archive has them) but are not exported.
    internal = {s for s in archive_globals(prefix / "lib" / "libs2pt.a")
                if s.startswith("s2pt__")}
    assert internal and not internal & exported


def test_pkg_config(prefix):
    env = pc_env(prefix)
    assert run("pkg-config", "--modversion", "s2pt", env=env).strip() == s2pt.__version__
    assert run("pkg-config", "--cflags", "s2pt", env=env).split() == [f"-I{prefix}/include"]
    assert run("pkg-config", "--libs", "s2pt", env=env).split() == [f"-L{prefix}/lib", "-ls2pt"]


def test_destdir_staging_and_uninstall(tmp_path):
    dest, build, final = tmp_path / "stage", tmp_path / "build", "/opt/s2pt-test"
    make_install(final, build, f"DESTDIR={dest}")
    staged = Path(f"{dest}{final}")
    files = sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if not p.is_dir())
    assert files == sorted(
        ["include/s2pt/" + p.name for p in (CSRC / "include" / "s2pt").glob("*.h")]
        + ["lib/libs2pt.a", "lib/libs2pt.so", f"lib/{SONAME}",
           f"lib/libs2pt.so.{s2pt.__version__}", "lib/pkgconfig/s2pt.pc"])
    pc = (staged / "lib" / "pkgconfig" / "s2pt.pc").read_text()
    assert f"prefix={final}\n" in pc  # where it will live, not where it was staged
    assert "libdir=${prefix}/lib\n" in pc and "Cflags: -I${includedir}\n" in pc
    run("make", "-s", "-C", CSRC, "uninstall", f"PREFIX={final}", f"DESTDIR={dest}",
        f"BUILD={build}")
    assert [p for p in staged.rglob("*") if not p.is_dir()] == []


def test_relative_prefix_is_refused(tmp_path):
    proc = subprocess.run(["make", "-s", "-C", str(CSRC), "install", "PREFIX=relative/dir",
                           f"BUILD={tmp_path}"], capture_output=True, text=True)
    assert proc.returncode != 0 and "must be an absolute path" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # refused before building anything


# ---- what the installed package ships -------------------------------------------------------

def test_package_ships_headers_and_pic_archive(prefix):
    inc, libdir = Path(s2pt.get_include()), Path(s2pt.get_library_dir())
    for name in ("s2pt.h", "mmu.h", "desc.h"):
        assert (inc / "s2pt" / name).read_bytes() == (CSRC / "include" / "s2pt" / name).read_bytes()
    archive = libdir / "libs2pt.a"
    public = {s for s in archive_globals(archive) if not s.startswith("s2pt__")}
    assert public == header_functions()
    # Position-independent: the code sections carry no absolute 32-bit relocations, so the
    # archive links into shared objects (the Cython example below does).
    if sys.platform.startswith("linux") and os.uname().machine == "x86_64":
        relocs = run("readelf", "-rW", archive)
        sections = re.split(r"Relocation section '", relocs)
        for sec in sections[1:]:
            if sec.startswith(".rela.text"):
                assert "R_X86_64_32 " not in sec and "R_X86_64_32S" not in sec


def test_cs2pt_pxd_is_shipped():
    pxd = Path(s2pt.__file__).parent / "_cs2pt.pxd"
    assert pxd.is_file() and 'cdef extern from "s2pt/s2pt.h"' in pxd.read_text()


# ---- the examples ---------------------------------------------------------------------------

MAP = [  # (ipa, size, pa, prot) of the examples' scenario (examples/README.md)
    (0x8000_0000, 16 << 20, 0x4000_0000, "rw"),
    (0x0, 256 << 10, 0x4100_0000, "rx"),
    (0x9000_0000, 2 << 20, 0x4120_0000, "rw"),
]
BALLOON, TEXT = 0x8010_0000, (0x8040_0000, 64 << 10)
SPLIT_BLOCKS = {0x8000_0000, 0x8040_0000}


def expected_line(ipa, access):
    """What the architecture says an access of the scenario does, from its memory map alone:
    the leaf (level 2 blocks of RAM unless split, level 3 pages), or the fault and its FSC."""
    need = {"read": "r", "write": "w", "exec": "x"}[access]
    for base, size, pa, prot in MAP:
        if base <= ipa < base + size and ipa & ~0xFFF != BALLOON:
            if TEXT[0] <= ipa < TEXT[0] + TEXT[1]:
                prot = "r"
            block = base == 0x8000_0000 and ipa & ~0x1F_FFFF not in SPLIT_BLOCKS
            level, leaf = (2, 0x20_0000) if block else (3, 0x1000)
            if need not in prot:
                return f"fault=permission level={level} fsc={0x0C | level:#04x}"
            return f"pa={pa + ipa - base:#012x} level={level} size={leaf:#x}"
    level = 3 if ipa & ~0xFFF == BALLOON else 2  # unmapped: no level-3 table elsewhere
    return f"fault=translation level={level} fsc={0x04 | level:#04x}"


@pytest.fixture(scope="module")
def reference():
    return run(sys.executable, EXAMPLES / "reference.py")


def test_reference_lines_follow_the_memory_map(reference):
    lines = reference.splitlines()
    assert lines[1].startswith("vtcr=") and f"vttbr={(1 << 48) | 0x41F0_0000:#018x}" in lines[1]
    shown = [ln for ln in lines if re.match(r"\s*\d+ ", ln)]
    assert len(shown) == 32
    for ln in shown:
        m = re.match(r"\s*\d+ (\w+)\s+ipa=(0x[0-9a-f]+) -> (.*)$", ln)
        access, ipa, result = m.group(1), int(m.group(2), 16), m.group(3)
        if 0x9000_0000 <= ipa < 0x9020_0000 and result.startswith("fault=access_flag"):
            # A first touch of a lazy page: AF fault at the page, then the access proper.
            first, result = result.split(", mkyoung -> ")
            assert first == "fault=access_flag level=3 fsc=0x0b"
        assert result == expected_line(ipa, access), ln
    summary = dict(kv.split("=") for kv in " ".join(lines[-4:]).split())
    n = int(summary["accesses"])
    assert int(summary["hits"]) + int(summary["permission"]) + int(summary["translation"]) == n
    assert summary["image_walks_agree"] == f"{n}/{n}"
    # 2 roots, level 2 and 3 tables for the ROM, level 2 for RAM, three level-3 tables (two
    # split blocks and the lazy pages); 16 MiB - 4 KiB + 256 KiB + 2 MiB mapped; the TLB
    # events of a block split + unmap (2) and of a block split + 16 pages made read-only (17).
    assert summary["table_pages"] == "8"
    assert int(summary["mapped_bytes"], 16) == (16 << 20) - 4096 + (256 << 10) + (2 << 20)
    assert summary["tlbi_events"] == "19"


def test_c_example_static_and_shared(prefix, reference, tmp_path):
    out = tmp_path / "c"
    run("make", "-s", "-C", EXAMPLES / "c", f"OUT={out}", env=pc_env(prefix))
    assert not [n for n in elf_dynamic(out / "sim-static", "NEEDED") if "s2pt" in n]
    assert SONAME in elf_dynamic(out / "sim-shared", "NEEDED")
    assert run(out / "sim-static") == reference
    assert run(out / "sim-shared") == reference  # through its rpath to the prefix
    # And with the library found through LD_LIBRARY_PATH instead of an rpath.
    run("make", "-s", "-C", EXAMPLES / "c", f"OUT={tmp_path / 'ld'}", "RPATH=",
        env=pc_env(prefix))
    env = dict(os.environ, LD_LIBRARY_PATH=str(prefix / "lib"))
    assert run(tmp_path / "ld" / "sim-shared", env=env) == reference


def test_cython_example_against_installed_package(reference, tmp_path):
    pytest.importorskip("Cython", reason="the Cython example needs Cython")
    work = tmp_path / "cython"
    shutil.copytree(EXAMPLES / "cython", work)
    run(sys.executable, "setup.py", "-q", "build_ext", "--inplace", cwd=work)
    (ext,) = work.glob("s2pt_cython_sim*.so")
    # libs2pt.a is linked in, and its symbols stay private to the extension.
    assert not any(s.startswith("s2pt_") for s in dynamic_symbols(ext))
    assert run(sys.executable, "run.py", cwd=work) == reference
