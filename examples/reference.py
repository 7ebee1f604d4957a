"""The examples' scenario through the Python API: prints what examples/c/sim.c and
examples/cython/ must print (examples/README.md describes the scenario).

    python examples/reference.py [ACCESSES]

Independent of the examples' code: the host DRAM is a numpy array, the tables live in its last
1 MiB (PagePool.from_buffer), each access goes through Stage2.translate and, as in the
examples, through s2pt.translate_image over the raw DRAM array.
"""

import sys

import numpy as np

import s2pt

MiB = 1 << 20
HOST_PA, HOST_BYTES = 0x4000_0000, 32 * MiB
POOL_OFFSET, POOL_PAGES, GRANULE = 31 * MiB, 256, 4096
RAM_IPA, RAM_SIZE = 0x8000_0000, 16 * MiB
ROM_IPA, ROM_PA, ROM_SIZE = 0x0, HOST_PA + 16 * MiB, 256 << 10
LAZY_IPA, LAZY_PA, LAZY_SIZE = 0x9000_0000, HOST_PA + 18 * MiB, 2 * MiB
BALLOON_IPA = 0x8010_0000
TEXT_IPA, TEXT_SIZE = 0x8040_0000, 64 << 10
DEVICE_IPA = 0x0900_0000
SHOWN = 32
M64 = (1 << 64) - 1
FNV_BASIS, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3

ACCESS = [("read", s2pt.Access.READ), ("read", s2pt.Access.READ),
          ("write", s2pt.Access.WRITE), ("exec", s2pt.Access.EXEC)]
FAULT_NAME = {s2pt.FaultKind.TRANSLATION: "translation", s2pt.FaultKind.ACCESS_FLAG: "access_flag",
              s2pt.FaultKind.PERMISSION: "permission", s2pt.FaultKind.ADDRESS_SIZE: "address_size"}


def xorshift64s(state):
    x = state
    x ^= x >> 12
    x = (x ^ (x << 25)) & M64
    x ^= x >> 27
    return x, (x * 0x2545F4914F6CDD1D) & M64


def pick_ipa(r):
    sel, off = r >> 60, r & 0xFFFF_FFFF
    if sel <= 8:
        return RAM_IPA + (off % RAM_SIZE & ~7)
    if sel <= 10:
        return ROM_IPA + (off % ROM_SIZE & ~7)
    if sel <= 12:
        return LAZY_IPA + (off % LAZY_SIZE & ~7)
    if sel == 13:
        return TEXT_IPA + (off % TEXT_SIZE & ~7)
    if sel == 14:
        return DEVICE_IPA + (off % GRANULE & ~7)
    return RAM_IPA + RAM_SIZE + (off % RAM_SIZE & ~7)


def walk(fn, *args):
    """(result text, Translation or None, Stage2Fault or None) of one walk."""
    try:
        t = fn(*args)
    except s2pt.Stage2Fault as f:
        return f"fault={FAULT_NAME[f.kind]} level={f.level} fsc={f.fsc:#04x}", None, f
    return f"pa={t.pa:#012x} level={t.level} size={t.size:#x}", t, None


def run(n=100000, out=sys.stdout):
    host = np.zeros(HOST_BYTES // 8, dtype=np.uint64)
    rom = (ROM_PA - HOST_PA) // 8
    host[rom:rom + ROM_SIZE // 8] = np.arange(ROM_SIZE // 8, dtype=np.uint64) * np.uint64(
        0x0101010101010101)
    pool = s2pt.PagePool.from_buffer(host[POOL_OFFSET // 8:], HOST_PA + POOL_OFFSET, GRANULE)
    pt = s2pt.Stage2(ipa_bits=40, granule=GRANULE, pa_bits=40, vmid=1, pool=pool)
    pt.map(RAM_IPA, HOST_PA, RAM_SIZE, s2pt.Prot.RW)
    pt.map(ROM_IPA, ROM_PA, ROM_SIZE, s2pt.Prot.R | s2pt.Prot.X)
    pt.map(LAZY_IPA, LAZY_PA, LAZY_SIZE, s2pt.Prot.RW, blocks=False, af=False)
    pt.unmap(BALLOON_IPA, GRANULE)
    pt.protect(TEXT_IPA, TEXT_SIZE, s2pt.Prot.R)

    print(f"host DRAM 32 MiB at PA {HOST_PA:#x}, stage-2 tables in its last 1 MiB "
          f"({POOL_PAGES} pages at PA {HOST_PA + POOL_OFFSET:#x})", file=out)
    print(f"vtcr={pt.vtcr:#x} vttbr={pt.vttbr:#018x} levels={pt.levels} "
          f"root_tables={pt.root_tables}", file=out)
    rng, read_hash, xlat_hash = 0x5EED, FNV_BASIS, FNV_BASIS
    hits = af_fixed = perm = xlat = agree = 0
    for i in range(n):
        rng, r = xorshift64s(rng)
        ipa = pick_ipa(r)
        name, access = ACCESS[(r >> 56) & 3]
        line, t, f = walk(pt.translate, ipa, access)
        if f is not None and f.kind == s2pt.FaultKind.ACCESS_FLAG:
            pt.mkyoung(ipa)
            af_fixed += 1
            more, t, f = walk(pt.translate, ipa, access)
            line += ", mkyoung -> " + more
        if t is not None:
            hits += 1
            k = (t.pa - HOST_PA) // 8
            if access == s2pt.Access.WRITE:
                host[k] = ipa ^ ((i * 0x9E3779B97F4A7C15) & M64)
            else:
                read_hash = ((read_hash ^ int(host[k])) * FNV_PRIME) & M64
            token = t.pa
        else:
            if f.kind == s2pt.FaultKind.PERMISSION:
                perm += 1
            else:
                xlat += 1
            token = 0xFFFF_0000_0000_0000 | f.fsc
        xlat_hash = ((xlat_hash ^ token) * FNV_PRIME) & M64
        _, ti, fi = walk(s2pt.translate_image, host, HOST_PA, pt.vtcr, pt.vttbr, ipa, access)
        if t is not None and ti is not None:
            agree += (t.pa, t.level) == (ti.pa, ti.level)
        elif f is not None and fi is not None:
            agree += f.fsc == fi.fsc
        if i < SHOWN:
            print(f"{i:5d} {name:<5s} ipa={ipa:#012x} -> {line}", file=out)

    weights = np.arange(1, 2 * (HOST_BYTES // 8), 2, dtype=np.uint64)
    host_hash = int(np.sum(host * weights, dtype=np.uint64))
    st = pt.stats()
    print(f"accesses={n} hits={hits} af_fixed={af_fixed} permission={perm} translation={xlat}",
          file=out)
    print(f"read_hash={read_hash:#018x} translation_hash={xlat_hash:#018x} "
          f"host_hash={host_hash:#018x}", file=out)
    print(f"image_walks_agree={agree}/{n}", file=out)
    print(f"table_pages={st['table_pages']} mapped_bytes={st['mapped_bytes']:#x} "
          f"tlbi_events={len(pt.tlbi_log())}", file=out)
    pt.destroy()
    return agree == n


if __name__ == "__main__":
    sys.exit(0 if run(int(sys.argv[1], 0) if len(sys.argv) > 1 else 100000) else 1)
