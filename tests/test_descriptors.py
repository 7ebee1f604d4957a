"""Descriptor bits in the raw memory image, against the Armv8 stage-2 VMSA formats.

Each leaf is read back from ``pool.words`` and compared with a descriptor composed here from the
architecture (kernel-notes section 2): type bits 1:0, MemAttr 5:2, S2AP 7:6, SH 9:8, AF 10, the
output address in bits 47:g, XN bit 54. Table descriptors are next-table PA | 0b11. The walk
indices are recomputed from the level shifts.
"""

import pytest

import s2pt
from s2pt import MemAttr, Prot

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
GRANULES = (4096, 16384, 65536)
SW_BITS = 0xF << 55  # bits 58:55 are reserved for software: not checked


def stride(granule):
    return granule.bit_length() - 1 - 3


def level_shift(granule, level):
    return stride(granule) * (4 - level) + 3


def expected_leaf(pa, level, prot=Prot.RW, memattr=MemAttr.NORMAL, af=True):
    prot = Prot(prot)
    desc = 0b11 if level == 3 else 0b01          # page / block
    desc |= int(memattr) << 2                     # MemAttr[3:0]
    desc |= (1 << 6) if prot & Prot.R else 0      # S2AP[0]: read
    desc |= (1 << 7) if prot & Prot.W else 0      # S2AP[1]: write
    desc |= 0b11 << 8                             # SH: inner shareable
    desc |= (1 << 10) if af else 0                # AF
    desc |= pa                                    # OA
    if (prot & Prot.X) != Prot.X:
        desc |= 1 << 54                           # XN
    return desc


def word(pool, pa):
    assert pa % 8 == 0 and pool.base_pa <= pa < pool.end_pa
    return int(pool.words[(pa - pool.base_pa) // 8])


def leaf_step(pt, ipa):
    steps = pt.walk(ipa)
    assert steps, "walk read no descriptor"
    last = steps[-1]
    assert word(pt.pool, last.desc_pa) == last.desc
    return last


@pytest.fixture
def vm(request):
    granule = getattr(request, "param", 4096)
    pt = s2pt.Stage2(ipa_bits=40, granule=granule, pool=s2pt.PagePool(64, granule=granule))
    yield pt
    pt.destroy()


# ---- page descriptors ---------------------------------------------------------------------------

PROTS = [Prot.NONE, Prot.R, Prot.W, Prot.RW, Prot.X, Prot.RX, Prot.WX, Prot.RWX]


@pytest.mark.parametrize("vm", GRANULES, indirect=True)
@pytest.mark.parametrize("prot", PROTS, ids=lambda p: p.name or "NONE")
def test_page_permission_bits(vm, prot):
    g = vm.granule
    ipa, pa = 0x12_3456 * g % (1 << 40) // g * g, 0x9_8765 * g
    vm.map(ipa, pa, g, prot)
    step = leaf_step(vm, ipa)
    assert step.level == 3
    assert step.desc & ~SW_BITS == expected_leaf(pa, 3, prot)
    assert (step.desc >> 6) & 1 == bool(prot & Prot.R)
    assert (step.desc >> 7) & 1 == bool(prot & Prot.W)
    assert (step.desc >> 54) & 1 == ((prot & Prot.X) != Prot.X)
    t = vm.lookup(ipa)
    assert t.prot == prot and t.level == 3 and t.size == g and t.pa == pa


@pytest.mark.parametrize("vm", GRANULES, indirect=True)
@pytest.mark.parametrize("memattr", [m for m in MemAttr if m < MemAttr.STAGE1],
                         ids=lambda m: m.name)
def test_memattr_bits(vm, memattr):
    g = vm.granule
    ipa, pa = 5 * g, 0x1_0000_0000
    vm.map(ipa, pa, g, Prot.RW, memattr)
    step = leaf_step(vm, ipa)
    assert (step.desc >> 2) & 0xF == memattr.value
    assert step.desc & ~SW_BITS == expected_leaf(pa, 3, Prot.RW, memattr)
    assert vm.lookup(ipa).memattr == memattr


@pytest.mark.parametrize("vm", GRANULES, indirect=True)
def test_shareability_af_and_type(vm):
    g = vm.granule
    vm.map(0, 0x2_0000_0000, g)
    vm.map(g, 0x2_0000_0000 + g, g, af=False)
    on, off = leaf_step(vm, 0).desc, leaf_step(vm, g).desc
    for desc in (on, off):
        assert (desc >> 8) & 0b11 == 0b11
        assert desc & 0b11 == 0b11
    assert (on >> 10) & 1 == 1
    assert (off >> 10) & 1 == 0
    assert off & ~SW_BITS == expected_leaf(0x2_0000_0000 + g, 3, af=False)


@pytest.mark.parametrize("vm", GRANULES, indirect=True)
def test_output_address_bits(vm):
    g = vm.granule
    pa = (1 << 48) - g   # the highest page of a 48-bit PA space: every OA bit 47:g set
    vm.map(0, pa, g)
    desc = leaf_step(vm, 0).desc
    oa_mask = ((1 << 48) - 1) & ~(g - 1)
    assert desc & oa_mask == pa
    # bits g-1:12 are RES0 (16K) or OA[51:48] (64K, zero with a 48-bit PA)
    assert desc & ((g - 1) & ~0xFFF) == 0
    assert vm.translate(g - 8).pa == pa + g - 8


# ---- walk: tables and indices -------------------------------------------------------------------

WALK_CONFIGS = [(4096, 32), (4096, 36), (4096, 40), (4096, 43), (4096, 48), (16384, 36),
                (16384, 40), (16384, 47), (16384, 48), (65536, 32), (65536, 42), (65536, 46),
                (65536, 48)]


@pytest.mark.parametrize("granule,ipa_bits", WALK_CONFIGS)
def test_walk_tables_and_indices(granule, ipa_bits):
    g, s = granule, stride(granule)
    pool = s2pt.PagePool(64, granule=g, base_pa=0x8000_0000)
    pt = s2pt.Stage2(ipa_bits=ipa_bits, granule=g, pool=pool)
    start = pt.start_level
    root_entries = 2 ** (ipa_bits - level_shift(g, start))
    top = 1 << ipa_bits
    ipas = [0, top - g, (0x5A5A5A5A5A5A & (top - 1)) // g * g, (top // 3) // g * g]
    for k, ipa in enumerate(ipas):
        pa = (0x7_0000_0000 + k * 0x1234 * g) % (1 << 48)
        pt.map(ipa, pa, g, Prot.RW)
    for k, ipa in enumerate(ipas):
        pa = (0x7_0000_0000 + k * 0x1234 * g) % (1 << 48)
        steps = pt.walk(ipa)
        assert [st.level for st in steps] == list(range(start, 4))
        assert steps[0].table_pa == pt.root_pa
        for i, st in enumerate(steps):
            entries = root_entries if st.level == start else 2 ** s
            assert st.index == (ipa >> level_shift(g, st.level)) & (entries - 1)
            assert st.desc_pa == st.table_pa + 8 * st.index
            assert word(pool, st.desc_pa) == st.desc
            if st.level < 3:
                nxt = steps[i + 1].table_pa
                assert nxt % g == 0 and pool.base_pa <= nxt < pool.end_pa
                assert st.desc == nxt | 0b11, "stage-2 table descriptors carry no attributes"
            else:
                assert st.desc & ~SW_BITS == expected_leaf(pa, 3)
        t = pt.translate(ipa + g - 1)
        assert (t.pa, t.level, t.size) == (pa + g - 1, 3, g)
    pt.destroy()


def test_walk_stops_at_invalid_entry():
    pool = s2pt.PagePool(16)
    pt = s2pt.Stage2(ipa_bits=40, pool=pool)
    steps = pt.walk(0x1234_5000)
    assert len(steps) == 1 and steps[0].level == 1 and steps[0].desc == 0
    assert steps[0].index == 0x1234_5000 >> 30
    pt.map(0x1234_5000, 0x1000_0000, 4096)
    steps = pt.walk(0x1234_6000)
    assert [st.level for st in steps] == [1, 2, 3]
    assert steps[-1].desc == 0 and steps[-1].index == 0x1234_6000 >> 12 & 511
    pt.destroy()


# ---- blocks -----------------------------------------------------------------------------------

BLOCKS = [  # granule, block size, level
    (4096, 1 * GiB, 1),
    (4096, 2 * MiB, 2),
    (16384, 32 * MiB, 2),
    (65536, 512 * MiB, 2),
]


@pytest.mark.parametrize("granule,size,level", BLOCKS)
@pytest.mark.parametrize("prot", [Prot.R, Prot.RW, Prot.RWX])
def test_block_descriptor(granule, size, level, prot):
    pool = s2pt.PagePool(16, granule=granule)
    pt = s2pt.Stage2(ipa_bits=44, granule=granule, pool=pool)
    assert size == 1 << level_shift(granule, level)
    ipa, pa = 3 * size, 0x100 * size % (1 << 48)
    pt.map(ipa, pa, size, prot)
    steps = pt.walk(ipa + size // 2)
    assert steps[-1].level == level
    desc = steps[-1].desc
    assert desc & 0b11 == 0b01
    assert desc & ~SW_BITS == expected_leaf(pa, level, prot)
    t = pt.translate(ipa + size - 8)
    assert (t.pa, t.level, t.size, t.prot) == (pa + size - 8, level, size, prot)
    st = pt.stats()
    assert st["leaves_by_level"][level] == 1 and st["mapped_bytes"] == size
    pt.destroy()


@pytest.mark.parametrize("granule,span", [(16384, 64 * GiB), (65536, 4 * TiB)])
def test_no_level1_blocks_without_52bit(granule, span):
    """16K and 64K have no level-1 blocks without DS / 52-bit PA: a level-1-sized span becomes
    level-2 blocks."""
    pool = s2pt.PagePool(16, granule=granule)
    pt = s2pt.Stage2(ipa_bits=48, granule=granule, pool=pool)
    assert span == 1 << level_shift(granule, 1)
    pt.map(span, 2 * span, span)
    block = 1 << level_shift(granule, 2)
    st = pt.stats()
    assert st["leaves_by_level"].get(1, 0) == 0
    assert st["leaves_by_level"][2] == span // block
    t = pt.lookup(span + span // 2)
    assert (t.level, t.size, t.pa) == (2, block, 2 * span + span // 2)
    pt.destroy()


def test_largest_leaf_per_chunk_4k():
    pool = s2pt.PagePool(32)
    pt = s2pt.Stage2(ipa_bits=40, pool=pool)
    lo = GiB - 2 * MiB - 4 * KiB
    hi = 2 * GiB + 2 * MiB + 4 * KiB
    off = 4 * GiB
    pt.map(lo, lo + off, hi - lo)
    got = [(m.ipa, m.size, m.level) for m in pt.mappings()]
    assert got == [
        (GiB - 2 * MiB - 4 * KiB, 4 * KiB, 3),
        (GiB - 2 * MiB, 2 * MiB, 2),
        (GiB, GiB, 1),
        (2 * GiB, 2 * MiB, 2),
        (2 * GiB + 2 * MiB, 4 * KiB, 3),
    ]
    assert all(m.pa == m.ipa + off for m in pt.mappings())
    pt.destroy()


@pytest.mark.parametrize("granule,size", [(4096, 2 * MiB), (4096, GiB), (16384, 32 * MiB),
                                          (65536, 512 * MiB)])
def test_blocks_false_gives_pages(granule, size):
    pool = s2pt.PagePool(600, granule=granule)
    pt = s2pt.Stage2(ipa_bits=40, granule=granule, pool=pool)
    pt.map(size, 2 * size, size, blocks=False)
    st = pt.stats()
    assert st["leaves_by_level"][3] == size // granule
    assert sum(st["leaves_by_level"].values()) == size // granule
    assert st["mapped_bytes"] == size
    t = pt.lookup(size + size - granule)
    assert (t.level, t.size, t.pa) == (3, granule, 3 * size - granule)
    step = pt.walk(size)[-1]
    assert step.desc & 0b11 == 0b11 and step.level == 3
    pt.destroy()


@pytest.mark.parametrize("ipa,pa", [(GiB, 4 * GiB + 2 * MiB), (GiB + 2 * MiB, 4 * GiB)],
                         ids=["pa-2M-aligned", "ipa-2M-aligned"])
def test_alignment_limits_block_size(ipa, pa):
    pool = s2pt.PagePool(16)
    pt = s2pt.Stage2(ipa_bits=40, pool=pool)
    pt.map(ipa, pa, GiB)
    st = pt.stats()
    assert st["leaves_by_level"][1] == 0
    assert st["leaves_by_level"][2] == 512
    assert st["leaves_by_level"][3] == 0
    for m in pt.mappings():
        assert m.size == 2 * MiB and m.level == 2 and m.pa - pa == m.ipa - ipa
    t = pt.translate(ipa + GiB - 1)
    assert (t.pa, t.level, t.size) == (pa + GiB - 1, 2, 2 * MiB)
    pt.destroy()


@pytest.mark.parametrize("vm", GRANULES, indirect=True)
def test_translation_matches_walk(vm):
    g = vm.granule
    block = 1 << level_shift(g, 2)
    vm.map(block, 7 * block, block, Prot.RX)
    vm.map(3 * block + 5 * g, 0x4_0000_0000, 2 * g, Prot.R, MemAttr.DEVICE_nGnRE)
    for ipa in (block, block + 12345 * 8 % block, 3 * block + 5 * g + 8, 3 * block + 7 * g - 8):
        steps = vm.walk(ipa)
        leaf = steps[-1].desc
        size = 1 << level_shift(g, steps[-1].level)
        oa = leaf & ((1 << 48) - 1) & ~(size - 1)
        t = vm.translate(ipa)
        assert t.pa == oa | (ipa & (size - 1))
        assert t.level == steps[-1].level and t.size == size
        assert t.pte == leaf
        assert t.memattr == (leaf >> 2) & 0xF
