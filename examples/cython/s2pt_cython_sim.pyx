# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The examples' simulator as a Cython extension on the s2pt C API (examples/README.md has the
scenario; examples/c/sim.c is the same program in C, examples/reference.py through Python).

It cimports the declarations the s2pt wheel ships (s2pt/_cs2pt.pxd) and links the wheel's
static libs2pt.a (s2pt.get_include(), s2pt.get_library_dir(); see setup.py beside this file).
The access loop runs in C without the GIL; the pool, the page table and the host DRAM are this
module's own memory, not objects of the s2pt Python module.
"""

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free

from s2pt._cs2pt cimport (
    S2PT_ACCESS_EXEC, S2PT_ACCESS_READ, S2PT_ACCESS_WRITE, S2PT_EFAULT, S2PT_FAULT_ACCESS_FLAG,
    S2PT_FAULT_PERMISSION, S2PT_MAP_NO_AF, S2PT_MAP_NO_BLOCKS, S2PT_MEMATTR_NORMAL, S2PT_PROT_R,
    S2PT_PROT_W, S2PT_PROT_X, s2pt_config, s2pt_config_init, s2pt_fault, s2pt_map,
    s2pt_mkyoung, s2pt_pgtable, s2pt_pgtable_destroy, s2pt_pgtable_init, s2pt_pool,
    s2pt_pool_init, s2pt_pool_meta_bytes, s2pt_protect, s2pt_stats, s2pt_stats_t,
    s2pt_strerror, s2pt_tlbi, s2pt_tlbi_log, s2pt_translate, s2pt_translate_image,
    s2pt_translation, s2pt_unmap, s2pt_vttbr,
)

cdef uint64_t MiB = 1 << 20
cdef uint64_t HOST_PA = 0x4000_0000, HOST_BYTES = 32 * MiB
cdef uint64_t POOL_OFFSET = 31 * MiB
cdef uint32_t POOL_PAGES = 256, GRANULE = 4096
cdef uint64_t RAM_IPA = 0x8000_0000, RAM_SIZE = 16 * MiB
cdef uint64_t ROM_IPA = 0, ROM_PA = HOST_PA + 16 * MiB, ROM_SIZE = 256 << 10
cdef uint64_t LAZY_IPA = 0x9000_0000, LAZY_PA = HOST_PA + 18 * MiB, LAZY_SIZE = 2 * MiB
cdef uint64_t BALLOON_IPA = 0x8010_0000, TEXT_IPA = 0x8040_0000, TEXT_SIZE = 64 << 10
cdef uint64_t DEVICE_IPA = 0x0900_0000
cdef uint64_t FNV_BASIS = <uint64_t>0xCBF29CE484222325, FNV_PRIME = <uint64_t>0x100000001B3
cdef enum:
    SHOWN = 32         # accesses printed one by one
    TLBI_SLOTS = 4096  # TLB-invalidation log entries

ACCESS_NAME = ("read", "read", "write", "exec")
FAULT_NAME = ("none", "translation", "access_flag", "permission", "address_size")


cdef inline uint64_t xorshift64s(uint64_t *state) noexcept nogil:
    cdef uint64_t x = state[0]
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    state[0] = x
    return x * <uint64_t>0x2545F4914F6CDD1D


cdef inline uint32_t access_kind(uint64_t r) noexcept nogil:
    """Bits 57:56 of r: 0 and 1 read, 2 write, 3 instruction fetch."""
    cdef uint64_t a = (r >> 56) & 3
    return S2PT_ACCESS_WRITE if a == 2 else S2PT_ACCESS_EXEC if a == 3 else S2PT_ACCESS_READ


cdef inline uint64_t pick_ipa(uint64_t r) noexcept nogil:
    cdef uint64_t sel = r >> 60, off = r & <uint64_t>0xFFFFFFFF
    if sel <= 8:
        return RAM_IPA + (off % RAM_SIZE & ~(<uint64_t>7))
    if sel <= 10:
        return ROM_IPA + (off % ROM_SIZE & ~(<uint64_t>7))
    if sel <= 12:
        return LAZY_IPA + (off % LAZY_SIZE & ~(<uint64_t>7))
    if sel == 13:
        return TEXT_IPA + (off % TEXT_SIZE & ~(<uint64_t>7))
    if sel == 14:
        return DEVICE_IPA + (off % GRANULE & ~(<uint64_t>7))
    return RAM_IPA + RAM_SIZE + (off % RAM_SIZE & ~(<uint64_t>7))


cdef enum:
    HIT = 1
    AF_FIXED = 2


cdef int check(int rc, str what) except -1:
    if rc < 0:
        raise RuntimeError(f"{what}: {s2pt_strerror(rc).decode()}")
    return rc


cdef str describe(int rc, s2pt_translation *t, s2pt_fault *f):
    if rc == 0:
        return f"pa={t.pa:#012x} level={t.level} size={t.size:#x}"
    return f"fault={FAULT_NAME[f.kind]} level={f.level} fsc={f.fsc:#04x}"


cdef struct Totals:
    uint64_t hits, af_fixed, perm, xlat, agree, read_hash, xlat_hash


cdef int access(s2pt_pgtable *pt, uint64_t *host, uint64_t i, uint64_t ipa, uint32_t kind,
                Totals *tot, s2pt_translation *t, s2pt_fault *f, s2pt_fault *first) noexcept nogil:
    """One guest access: translate (resolving an access-flag fault with mkyoung, then again),
    touch host DRAM, fold the result into the totals, check the raw-image walk agrees.
    Returns HIT if it went through, | AF_FIXED when an access-flag fault was resolved first
    (*first holds that fault), or a negative s2pt error code."""
    cdef s2pt_translation ti
    cdef s2pt_fault fi
    cdef uint64_t token, vttbr = s2pt_vttbr(pt)
    cdef int rc, rci, found, fixed = 0
    rc = s2pt_translate(pt, ipa, kind, t, f)
    if rc == S2PT_EFAULT and f.kind == S2PT_FAULT_ACCESS_FLAG:
        first[0] = f[0]
        rc = s2pt_mkyoung(pt, ipa, &found)
        if rc < 0:
            return rc
        tot.af_fixed += 1
        fixed = AF_FIXED
        rc = s2pt_translate(pt, ipa, kind, t, f)
    if rc < 0 and rc != S2PT_EFAULT:
        return rc
    if rc == 0:
        tot.hits += 1
        if kind == S2PT_ACCESS_WRITE:
            host[(t.pa - HOST_PA) // 8] = ipa ^ (i * <uint64_t>0x9E3779B97F4A7C15)
        else:
            tot.read_hash = (tot.read_hash ^ host[(t.pa - HOST_PA) // 8]) * FNV_PRIME
        token = t.pa
    else:
        if f.kind == S2PT_FAULT_PERMISSION:
            tot.perm += 1
        else:
            tot.xlat += 1
        token = <uint64_t>0xFFFF000000000000 | f.fsc
    tot.xlat_hash = (tot.xlat_hash ^ token) * FNV_PRIME
    rci = s2pt_translate_image(host, HOST_PA, HOST_BYTES, pt.cfg.vtcr, vttbr, 0, ipa, kind,
                               &ti, &fi)
    if rci == rc and ((rc == 0 and ti.pa == t.pa and ti.level == t.level)
                      or (rc != 0 and fi.fsc == f.fsc)):
        tot.agree += 1
    return fixed | (HIT if rc == 0 else 0)


def run(uint64_t n=100000):
    """Run the scenario for ``n`` accesses; returns the output lines."""
    cdef uint64_t *host = <uint64_t *>calloc(HOST_BYTES // 8, 8)
    cdef void *meta = calloc(1, s2pt_pool_meta_bytes(POOL_PAGES))
    cdef s2pt_tlbi *events = <s2pt_tlbi *>calloc(TLBI_SLOTS, sizeof(s2pt_tlbi))
    cdef s2pt_tlbi_log log
    cdef s2pt_pool pool
    cdef s2pt_config cfg
    cdef s2pt_pgtable pt
    cdef s2pt_stats_t st
    cdef s2pt_translation t
    cdef s2pt_fault f, first
    cdef Totals tot
    cdef uint64_t i, k, r, ipa, unmapped, rng = 0x5EED, host_hash = 0, chunk
    cdef int rc = 0
    lines = []
    if host == NULL or meta == NULL or events == NULL:
        free(host); free(meta); free(events)
        raise MemoryError()
    try:
        for k in range(ROM_SIZE // 8):
            host[(ROM_PA - HOST_PA) // 8 + k] = k * <uint64_t>0x0101010101010101
        check(s2pt_config_init(&cfg, 40, GRANULE, 40, 1, 0), "config")
        check(s2pt_pool_init(&pool, <char *>host + POOL_OFFSET, POOL_PAGES, meta,
                             HOST_PA + POOL_OFFSET, GRANULE), "pool")
        check(s2pt_pgtable_init(&pt, &cfg, &pool), "page table")
        log.events, log.capacity, log.count, log.overflowed = events, TLBI_SLOTS, 0, 0
        pt.tlbi = &log
        try:
            check(s2pt_map(&pt, RAM_IPA, HOST_PA, RAM_SIZE, S2PT_PROT_R | S2PT_PROT_W,
                           S2PT_MEMATTR_NORMAL, 0), "map RAM")
            check(s2pt_map(&pt, ROM_IPA, ROM_PA, ROM_SIZE, S2PT_PROT_R | S2PT_PROT_X,
                           S2PT_MEMATTR_NORMAL, 0), "map ROM")
            check(s2pt_map(&pt, LAZY_IPA, LAZY_PA, LAZY_SIZE, S2PT_PROT_R | S2PT_PROT_W,
                           S2PT_MEMATTR_NORMAL, S2PT_MAP_NO_BLOCKS | S2PT_MAP_NO_AF),
                  "map lazy RAM")
            check(s2pt_unmap(&pt, BALLOON_IPA, GRANULE, &unmapped), "unmap balloon")
            check(s2pt_protect(&pt, TEXT_IPA, TEXT_SIZE, S2PT_PROT_R), "protect text")
            lines.append(f"host DRAM 32 MiB at PA {HOST_PA:#x}, stage-2 tables in its last "
                         f"1 MiB ({POOL_PAGES} pages at PA {HOST_PA + POOL_OFFSET:#x})")
            lines.append(f"vtcr={cfg.vtcr:#x} vttbr={s2pt_vttbr(&pt):#018x} "
                         f"levels={cfg.levels} root_tables={cfg.root_tables}")
            tot = Totals(0, 0, 0, 0, 0, FNV_BASIS, FNV_BASIS)
            i = 0
            # The first accesses one by one, to show them; the rest in one GIL-free loop.
            while i < n and i < SHOWN:
                r = xorshift64s(&rng)
                ipa = pick_ipa(r)
                rc = check(access(&pt, host, i, ipa, access_kind(r), &tot, &t, &f, &first),
                           "access")
                text = describe(0 if rc & HIT else S2PT_EFAULT, &t, &f)
                if rc & AF_FIXED:
                    text = describe(S2PT_EFAULT, &t, &first) + ", mkyoung -> " + text
                lines.append(f"{i:5d} {ACCESS_NAME[(r >> 56) & 3]:<5s} ipa={ipa:#012x} -> {text}")
                i += 1
            with nogil:
                while i < n:
                    r = xorshift64s(&rng)
                    rc = access(&pt, host, i, pick_ipa(r), access_kind(r), &tot, &t, &f,
                                &first)
                    if rc < 0:
                        break
                    i += 1
            check(rc, "access")
            for k in range(HOST_BYTES // 8):
                host_hash += host[k] * (2 * k + 1)
            check(s2pt_stats(&pt, &st), "stats")
            lines.append(f"accesses={n} hits={tot.hits} af_fixed={tot.af_fixed} "
                         f"permission={tot.perm} translation={tot.xlat}")
            lines.append(f"read_hash={tot.read_hash:#018x} translation_hash={tot.xlat_hash:#018x} "
                         f"host_hash={host_hash:#018x}")
            lines.append(f"image_walks_agree={tot.agree}/{n}")
            lines.append(f"table_pages={st.table_pages} mapped_bytes={st.mapped_bytes:#x} "
                         f"tlbi_events={log.count}")
        finally:
            s2pt_pgtable_destroy(&pt)
    finally:
        free(events)
        free(meta)
        free(host)
    return lines
