"""KVM's stage-2 leaf operations (kvm_pgtable_stage2_wrprotect / mkyoung / test_clear_young /
relax_perms / split, and collapse), checked against architectural facts only:

* descriptor bits as the Arm ARM lays them out (VMSAv8-64 stage-2 block/page descriptors):
  bits[1:0] 0b01 block, 0b11 page / table; MemAttr[3:0] bits 5:2; S2AP R bit 6, W bit 7;
  SH[1:0] bits 9:8; AF bit 10; XN[1:0] bits 54:53 (bit 53 only with FEAT_XNX); the output
  address in the same bit positions in block and page descriptors, so splitting a block
  into pages gives page i = (block | 0b10) + i * granule, bit for bit;
* leaf sizes per granule: 4K 4 KiB / 2 MiB / 1 GiB, 16K 16 KiB / 32 MiB, 64K 64 KiB / 512 MiB;
  table pages counted from the geometry (a 1 GiB block split to pages: 1 + 512 tables);
* TLB events as KVM issues them (design doc section 4): none for the W clear, the AF
  operations and mkyoung; one SPLIT (break-before-make) per block descriptor replaced; one
  COALESCE range per block made; one PERM IPA event per relax_perms that reached a leaf.
"""

from __future__ import annotations

import numpy as np
import pytest

import s2pt
from s2pt import Access, FaultKind, MemAttr, Prot
from s2pt.errors import (
    AlignmentError,
    DestroyedError,
    InvalidArgumentError,
    PoolExhaustedError,
    RangeError,
)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
U = s2pt.TLBI_LEVEL_UNKNOWN

# Descriptor bits (Arm ARM, stage-2 block and page descriptors).
TYPE_MASK = 0b11
TYPE_BLOCK = 0b01
TYPE_PAGE = 0b11
S2AP_R = 1 << 6
S2AP_W = 1 << 7
SH_INNER = 0b11 << 8
AF = 1 << 10
XN1 = 1 << 54   # XN[1]
XN0 = 1 << 53   # XN[0] (FEAT_XNX)
MEMATTR_SHIFT = 2
SW_SHIFT = 55   # software bits 58:55

# (granule, ipa_bits) -> (start level, root tables), from levels = max(2, (ipa - 8) // s).
GEOMS = {
    (4096, 40): (1, 2),
    (16384, 47): (1, 1),
    (65536, 42): (2, 1),
}
GEOM_PARAMS = [pytest.param(g, b, id=f"{g // 1024}K/{b}") for (g, b) in GEOMS]
SEMANTICS = ["exact", "kvm"]

PA = 8 * GiB  # output base: aligned to every block size used here


def level_size(granule, level):
    stride = granule.bit_length() - 1 - 3
    return 1 << (stride * (4 - level) + 3)


def block2(granule):
    """The level-2 block size: 2 MiB, 32 MiB, 512 MiB."""
    return level_size(granule, 2)


def vm(granule=4096, ipa_bits=40, pages=64, **kw):
    return s2pt.Stage2(ipa_bits=ipa_bits, granule=granule,
                       pool=s2pt.PagePool(pages, granule=granule), **kw)


def leaf(pt, ipa):
    """(level, descriptor) of the entry the walk of ipa stops at."""
    step = pt.walk(ipa)[-1]
    return step.level, int(step.desc)


def leaf_table(pt, ipa):
    """Every descriptor of the table holding ipa's leaf, as a Python-int numpy copy."""
    step = pt.walk(ipa)[-1]
    return np.array(pt.pool.page_words(step.table_pa), dtype=np.uint64)


def events(pt):
    return [(int(e["kind"]), int(e["ipa"]), int(e["size"]), int(e["level"]), int(e["reason"]),
             int(e["bbm"])) for e in pt.tlbi_log()]


def ipa_ev(ipa, size, level, reason, bbm=0):
    return (s2pt.TLBI_IPA, ipa, size, level, reason, bbm)


def snapshot(pt):
    return (list(pt.mappings()), pt.stats(), pt.memslots(), pt.pool.used,
            pt.pool.words.copy(), pt.pool.refcounts.copy(), events_peek(pt))


def events_peek(pt):
    return [tuple(int(x) for x in e) for e in pt.tlbi_log(clear=False)]


def same(a, b):
    assert a[0] == b[0]
    assert a[1] == b[1]
    assert a[2] == b[2]
    assert a[3] == b[3]
    assert np.array_equal(a[4], b[4])
    assert np.array_equal(a[5], b[5])
    assert a[6] == b[6]


def expected_leaf(pa, level, prot=Prot.RW, memattr=0xF, af=True, sw=0):
    """A leaf descriptor composed from the Arm ARM field layout (no FWB, no XNX)."""
    d = pa | (TYPE_PAGE if level == 3 else TYPE_BLOCK) | (memattr << MEMATTR_SHIFT) | SH_INNER
    if prot & Prot.R:
        d |= S2AP_R
    if prot & Prot.W:
        d |= S2AP_W
    if not prot & Prot.X:
        d |= XN1
    if af:
        d |= AF
    return d | (sw << SW_SHIFT)


def pages_of_block(block_desc, granule, n):
    """Page descriptors a block splits into: same attributes, type 0b11, consecutive OAs."""
    return np.array([(block_desc | 0b10) + i * granule for i in range(n)], dtype=np.uint64)


# ---- wrprotect -------------------------------------------------------------------------------

@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_wrprotect_whole_block_clears_only_s2ap_w(granule, ipa_bits, semantics):
    pt = vm(granule, ipa_bits, semantics=semantics)
    bs = block2(granule)
    base = 4 * bs
    pt.map(base, PA, bs, Prot.RWX)
    level, before = leaf(pt, base)
    assert level == 2 and before & TYPE_MASK == TYPE_BLOCK and before & S2AP_W
    assert before == expected_leaf(PA, 2, Prot.RWX)
    tables = pt.table_pages
    pt.tlbi_log()
    assert pt.wrprotect(base, bs) == bs
    assert leaf(pt, base) == (2, before & ~S2AP_W)
    assert events(pt) == []              # KVM leaves the flush to its caller
    assert pt.table_pages == tables
    with pytest.raises(s2pt.Stage2Fault) as info:
        pt.translate(base + 8, Access.WRITE)
    assert (info.value.kind, info.value.level, info.value.fsc) == (
        FaultKind.PERMISSION, 2, 0b001100 | 2)
    assert pt.translate(base + 8).pa == PA + 8
    # Nothing writable is left: nothing changes, 0 bytes.
    snap = snapshot(pt)
    assert pt.wrprotect(base, bs) == 0
    same(snap, snapshot(pt))
    pt.check()


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_wrprotect_pages_exactly_the_range(granule, ipa_bits, semantics):
    pt = vm(granule, ipa_bits, semantics=semantics)
    g = granule
    base = 4 * block2(granule)
    pt.map(base, PA, 8 * g, blocks=False)
    before = leaf_table(pt, base)
    assert pt.wrprotect(base + 2 * g, 3 * g) == 3 * g
    after = leaf_table(pt, base)
    expect = before.copy()
    expect[2:5] &= np.uint64(~S2AP_W & (2**64 - 1))
    assert np.array_equal(after, expect)
    assert pt.tlbi_log().size == 0
    # Part writable, part not: only the writable bytes count.
    assert pt.wrprotect(base, 8 * g) == 5 * g
    assert not (leaf_table(pt, base)[:8] & np.uint64(S2AP_W)).any()


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_wrprotect_block_covered_in_part(granule, ipa_bits, semantics):
    """exact: the block is split (SPLIT event), only the page in range loses W; kvm
    (kvm_pgtable_stage2_wrprotect): the whole block loses W, no split, no event."""
    pt = vm(granule, ipa_bits, semantics=semantics)
    g, bs = granule, block2(granule)
    base = 4 * bs
    pt.map(base, PA, bs)
    _, block = leaf(pt, base)
    tables = pt.table_pages
    pt.tlbi_log()
    changed = pt.wrprotect(base + g, g)
    if semantics == "exact":
        assert changed == g
        assert pt.table_pages == tables + 1
        expect = pages_of_block(block, g, bs // g)
        expect[1] &= np.uint64(~S2AP_W & (2**64 - 1))
        assert leaf(pt, base)[0] == 3
        assert np.array_equal(leaf_table(pt, base), expect)
        assert events(pt) == [ipa_ev(base, bs, 2, s2pt.TLBI_SPLIT, 1)]
        assert pt.stats()["leaves_by_level"][3] == bs // g
    else:
        assert changed == bs
        assert pt.table_pages == tables
        assert leaf(pt, base + g) == (2, block & ~S2AP_W)
        assert events(pt) == []
    pt.check()


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_wrprotect_part_of_1g_block_4k(semantics):
    pt = vm(semantics=semantics)
    base = GiB
    pt.map(base, PA, GiB)
    _, block = leaf(pt, base)
    assert block == expected_leaf(PA, 1)
    pt.tlbi_log()
    changed = pt.wrprotect(base + 2 * MiB, 2 * MiB)
    if semantics == "exact":
        # Split once: a level-2 table of 512 2 MiB blocks; one of them loses W.
        assert changed == 2 * MiB
        assert pt.table_pages == 2 + 1
        table = leaf_table(pt, base)
        expect = np.array([expected_leaf(PA + i * 2 * MiB, 2) for i in range(512)],
                          dtype=np.uint64)
        expect[1] &= np.uint64(~S2AP_W & (2**64 - 1))
        assert np.array_equal(table, expect)
        assert events(pt) == [ipa_ev(base, GiB, 1, s2pt.TLBI_SPLIT, 1)]
    else:
        assert changed == GiB
        assert leaf(pt, base) == (1, block & ~S2AP_W)
        assert events(pt) == []


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_wrprotect_read_only_block_in_part_is_untouched(granule, ipa_bits, semantics):
    pt = vm(granule, ipa_bits, semantics=semantics)
    bs = block2(granule)
    pt.map(4 * bs, PA, bs, Prot.R)
    pt.set_owner(6 * bs, granule, 7)
    pt.tlbi_log()
    snap = snapshot(pt)
    assert pt.wrprotect(4 * bs + granule, granule) == 0   # no W to clear: no split
    assert pt.wrprotect(6 * bs, bs) == 0                  # an annotation and holes
    assert pt.wrprotect(10 * bs, bs) == 0
    same(snap, snapshot(pt))
    assert pt.owner(6 * bs) == 7


@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_wrprotect_pool_exhausted_is_atomic(granule, ipa_bits):
    """Exact semantics need a table to split the block; the pool has none left. KVM's
    whole-leaf wrprotect needs none and succeeds in the same pool."""
    start, roots = GEOMS[(granule, ipa_bits)]
    # A level-2 block needs a level-2 table unless level 2 is the start level.
    pages = roots + (0 if start == 2 else 1)
    bs = block2(granule)
    for semantics in SEMANTICS:
        pt = vm(granule, ipa_bits, pages=pages, semantics=semantics)
        pt.map(4 * bs, PA, bs)
        assert pt.pool.free == 0
        pt.tlbi_log()
        snap = snapshot(pt)
        if semantics == "exact":
            with pytest.raises(PoolExhaustedError):
                pt.wrprotect(4 * bs + granule, granule)
            same(snap, snapshot(pt))
            assert pt.translate(4 * bs + granule, Access.WRITE).pa == PA + granule
        else:
            assert pt.wrprotect(4 * bs + granule, granule) == bs
        pt.check()


def test_wrprotect_pool_exhausted_1g_block_4k():
    pt = vm(pages=3)                      # 2 roots + 1 free; the split needs 2 (L2 + L3)
    pt.map(GiB, PA, GiB)
    snap = snapshot(pt)
    with pytest.raises(PoolExhaustedError):
        pt.wrprotect(GiB + 4 * KiB, 4 * KiB)
    same(snap, snapshot(pt))
    pt.check()


# ---- split -----------------------------------------------------------------------------------

@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_split_block_to_pages_keeps_every_bit(granule, ipa_bits, semantics):
    pt = vm(granule, ipa_bits, semantics=semantics)
    g, bs = granule, block2(granule)
    base = 4 * bs
    pt.map(base, PA, bs, Prot.R, af=False, sw=5)          # attributes that must survive
    _, block = leaf(pt, base)
    assert block == expected_leaf(PA, 2, Prot.R, af=False, sw=5)
    tables = pt.table_pages
    pt.tlbi_log()
    assert pt.split(base, bs) == 1
    assert pt.table_pages == tables + 1
    assert leaf(pt, base + 3 * g)[0] == 3
    assert np.array_equal(leaf_table(pt, base), pages_of_block(block, g, bs // g))
    assert events(pt) == [ipa_ev(base, bs, 2, s2pt.TLBI_SPLIT, 1)]
    assert pt.stats()["leaves_by_level"][3] == bs // g
    assert pt.stats()["leaves_by_level"][2] == 0
    # Already pages: nothing to split.
    assert pt.split(base, bs) == 0
    assert pt.tlbi_log().size == 0
    pt.check()


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_split_1g_block_to_pages_4k(semantics):
    pt = vm(pages=600, semantics=semantics)
    base = GiB
    pt.map(base, PA, GiB, Prot.RWX)
    pt.tlbi_log()
    assert pt.split(base, GiB) == 1 + 512
    st = pt.stats()
    assert st["table_pages"] == 2 + 1 + 512
    assert st["table_pages_by_level"] == {1: 2, 2: 1, 3: 512}
    assert st["leaves_by_level"] == {1: 0, 2: 0, 3: 512 * 512}
    ev = events(pt)
    assert ev[0] == ipa_ev(base, GiB, 1, s2pt.TLBI_SPLIT, 1)
    assert ev[1:] == [ipa_ev(base + i * 2 * MiB, 2 * MiB, 2, s2pt.TLBI_SPLIT, 1)
                      for i in range(512)]
    # Every page, bit for bit.
    for i in range(0, 512, 37):
        expect = np.array([expected_leaf(PA + i * 2 * MiB + j * 4 * KiB, 3, Prot.RWX)
                           for j in range(512)], dtype=np.uint64)
        assert np.array_equal(leaf_table(pt, base + i * 2 * MiB), expect)
    ipas = np.arange(base, base + GiB, 4 * KiB, dtype=np.uint64) + np.uint64(0x123)
    pa, fsc = pt.translate_many(ipas)
    assert (fsc == s2pt.FSC_NONE).all()
    assert np.array_equal(pa, ipas - np.uint64(base) + np.uint64(PA))
    pt.check()


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_split_part_of_1g_block_exact_vs_kvm(semantics):
    """exact: only the 2 MiB piece holding the page goes to pages (L2 table + one L3
    table); kvm_pgtable_stage2_split splits the whole block it touches (1 + 512)."""
    pt = vm(pages=600, semantics=semantics)
    base = GiB
    pt.map(base, PA, GiB)
    pt.tlbi_log()
    page = base + 6 * MiB + 12 * KiB
    made = pt.split(page, 4 * KiB)
    st = pt.stats()
    ev = events(pt)
    if semantics == "exact":
        assert made == 2
        assert st["table_pages"] == 2 + 2
        assert st["leaves_by_level"] == {1: 0, 2: 511, 3: 512}
        assert ev == [ipa_ev(base, GiB, 1, s2pt.TLBI_SPLIT, 1),
                      ipa_ev(base + 6 * MiB, 2 * MiB, 2, s2pt.TLBI_SPLIT, 1)]
        assert leaf(pt, base)[0] == 2 and leaf(pt, page)[0] == 3
        assert leaf(pt, base)[1] == expected_leaf(PA, 2)
    else:
        assert made == 513
        assert st["table_pages"] == 2 + 513
        assert st["leaves_by_level"] == {1: 0, 2: 0, 3: 512 * 512}
        assert len(ev) == 513 and ev[0] == ipa_ev(base, GiB, 1, s2pt.TLBI_SPLIT, 1)
    assert pt.translate(page + 5).pa == PA + (page - base) + 5
    pt.check()


def test_split_two_whole_pieces_of_1g_block_exact():
    pt = vm(pages=64)
    pt.map(GiB, PA, GiB)
    assert pt.split(GiB + 4 * MiB, 4 * MiB) == 1 + 2
    assert pt.stats()["leaves_by_level"] == {1: 0, 2: 510, 3: 1024}


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS[1:])
def test_split_part_of_block_large_granules(granule, ipa_bits, semantics):
    """16K/64K: a level-2 block's only smaller leaf is the page, so exact == kvm."""
    pt = vm(granule, ipa_bits, semantics=semantics)
    bs = block2(granule)
    pt.map(4 * bs, PA, bs)
    _, block = leaf(pt, 4 * bs)
    pt.tlbi_log()
    assert pt.split(4 * bs + 5 * granule, granule) == 1
    assert np.array_equal(leaf_table(pt, 4 * bs), pages_of_block(block, granule, bs // granule))
    assert events(pt) == [ipa_ev(4 * bs, bs, 2, s2pt.TLBI_SPLIT, 1)]


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_split_leaves_pages_holes_and_annotations(granule, ipa_bits, semantics):
    pt = vm(granule, ipa_bits, semantics=semantics)
    bs = block2(granule)
    pt.map(4 * bs, PA, 16 * granule, blocks=False)
    pt.set_owner(5 * bs, 4 * granule, 3)
    pt.tlbi_log()
    snap = snapshot(pt)
    assert pt.split(4 * bs, 4 * bs) == 0
    assert pt.split(0, 0) == 0
    same(snap, snapshot(pt))


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_split_pool_exhausted_is_atomic(granule, ipa_bits, semantics):
    start, roots = GEOMS[(granule, ipa_bits)]
    pages = roots + (0 if start == 2 else 1)
    bs = block2(granule)
    pt = vm(granule, ipa_bits, pages=pages, semantics=semantics)
    pt.map(4 * bs, PA, bs)
    assert pt.pool.free == 0
    snap = snapshot(pt)
    with pytest.raises(PoolExhaustedError):
        pt.split(4 * bs, bs)
    with pytest.raises(PoolExhaustedError):
        pt.split(4 * bs + granule, granule)
    same(snap, snapshot(pt))
    pt.check()


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_split_1g_pool_one_page_short_then_exactly_enough(semantics):
    pt = vm(pages=2 + 512, semantics=semantics)
    pt.map(GiB, PA, GiB)
    snap = snapshot(pt)
    with pytest.raises(PoolExhaustedError):
        pt.split(GiB, GiB)                          # needs 513
    same(snap, snapshot(pt))
    if semantics == "exact":
        assert pt.split(GiB + 4 * KiB, 4 * KiB) == 2      # part of the block: L2 + L3
    pt.check()
    big = vm(pages=2 + 513, semantics=semantics)
    big.map(GiB, PA, GiB)
    assert big.split(GiB, GiB) == 513 and big.pool.free == 0
    big.check()


@pytest.mark.parametrize("size", [4 * KiB, 2 * MiB])
def test_split_kvm_part_of_1g_block_pool_short_is_atomic(size):
    """Regression (fixed in 1b71bbf: the reservation bounded only the range's tables).
    kvm_pgtable_stage2_split splits the whole 1 GiB block (1 + 512 tables) even when the
    range touches one page of it; with 512 free pages it must fail and change nothing."""
    pt = vm(pages=2 + 512, semantics="kvm")
    pt.map(GiB, PA, GiB)
    snap = snapshot(pt)
    with pytest.raises(PoolExhaustedError):
        pt.split(GiB + 4 * KiB if size == 4 * KiB else GiB, size)
    same(snap, snapshot(pt))
    pt.check()


# ---- collapse --------------------------------------------------------------------------------

@pytest.mark.parametrize("tlbi_range", [True, False])
@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_collapse_after_split_restores_the_block(granule, ipa_bits, semantics, tlbi_range):
    pt = vm(granule, ipa_bits, semantics=semantics, tlbi_range=tlbi_range)
    bs = block2(granule)
    base = 4 * bs
    pt.map(base, PA, bs, Prot.RX, af=False, sw=9)
    _, block = leaf(pt, base)
    tables = pt.table_pages
    assert pt.split(base, bs) == 1
    pt.tlbi_log()
    assert pt.collapse(base, bs) == 1
    assert leaf(pt, base) == (2, block)
    assert pt.table_pages == tables
    if tlbi_range:
        assert events(pt) == [(s2pt.TLBI_RANGE, base, bs, U, s2pt.TLBI_COALESCE, 1)]
    else:
        assert events(pt) == [(s2pt.TLBI_VMID, 0, 0, U, s2pt.TLBI_COALESCE, 1)]
    assert pt.collapse(base, bs) == 0            # a block already
    pt.check()


def test_collapse_1g_from_pages_in_one_call_4k():
    pt = vm(pages=600)
    pt.map(GiB, PA, GiB, Prot.RW)
    _, block = leaf(pt, GiB)
    assert pt.split(GiB, GiB) == 513
    pt.tlbi_log()
    # 512 2 MiB blocks made from pages, then the 1 GiB block made of them: 1 + 512.
    assert pt.collapse(GiB, GiB) == 513
    assert leaf(pt, GiB) == (1, block)
    assert pt.table_pages == 2 and pt.pool.used == 2
    ev = events(pt)
    assert ev[:512] == [(s2pt.TLBI_RANGE, GiB + i * 2 * MiB, 2 * MiB, U, s2pt.TLBI_COALESCE, 1)
                        for i in range(512)]
    assert ev[512:] == [(s2pt.TLBI_RANGE, GiB, GiB, U, s2pt.TLBI_COALESCE, 1)]
    pt.check()


@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_collapse_pages_mapped_one_by_one(granule, ipa_bits):
    pt = vm(granule, ipa_bits)
    bs = block2(granule)
    pt.map(4 * bs, PA, bs, blocks=False)
    assert pt.collapse(4 * bs, bs) == 1
    assert leaf(pt, 4 * bs) == (2, expected_leaf(PA, 2))
    # A range not covering the whole span collapses nothing.
    pt.split(4 * bs, bs)
    snap = snapshot(pt)
    assert pt.collapse(4 * bs, bs - granule) == 0
    assert pt.collapse(4 * bs + granule, bs - granule) == 0
    same(snap, snapshot(pt))


DIFFS = ["perm", "af", "pa", "hole", "memattr", "sw", "unaligned_run"]


@pytest.mark.parametrize("diff", DIFFS)
@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_collapse_refuses_when_one_page_differs(granule, ipa_bits, diff):
    pt = vm(granule, ipa_bits)
    g, bs = granule, block2(granule)
    base = 4 * bs
    page = base + 5 * g
    if diff == "unaligned_run":
        pt.map(base, PA + g, bs, blocks=False)      # contiguous, but not 2M-aligned
    else:
        pt.map(base, PA, bs, blocks=False)
    if diff == "perm":
        pt.protect(page, g, Prot.R)
    elif diff == "af":
        pt.set_access_flag(page, g, False)
    elif diff == "pa":
        pt.map(page, PA + 64 * bs, g)
    elif diff == "hole":
        pt.unmap(page, g)
    elif diff == "memattr":
        pt.map(page, PA + 5 * g, g, memattr=MemAttr.NORMAL_NC)
    elif diff == "sw":
        pt.map(page, PA + 5 * g, g, sw=3)
    pt.tlbi_log()
    snap = snapshot(pt)
    assert pt.collapse(base, bs) == 0
    same(snap, snapshot(pt))
    pt.check()


def test_collapse_makes_the_2m_blocks_but_not_the_1g_one_with_a_hole_4k():
    pt = vm(pages=600)
    pt.map(GiB, PA, GiB)
    pt.split(GiB, GiB)
    pt.unmap(GiB + 100 * MiB, 4 * KiB)
    pt.tlbi_log()
    assert pt.collapse(GiB, GiB) == 511
    st = pt.stats()
    assert st["leaves_by_level"] == {1: 0, 2: 511, 3: 511}
    assert st["table_pages"] == 2 + 1 + 1
    assert len(events(pt)) == 511
    pt.check()


# ---- access flag -----------------------------------------------------------------------------

@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_mkyoung(granule, ipa_bits):
    pt = vm(granule, ipa_bits)
    g, bs = granule, block2(granule)
    pt.map(4 * bs, PA, bs, af=False)
    pt.map(6 * bs, PA + bs, g, af=False)
    pt.set_owner(7 * bs, g, 4)
    with pytest.raises(s2pt.Stage2Fault) as info:
        pt.translate(4 * bs + 8)
    assert (info.value.kind, info.value.fsc) == (FaultKind.ACCESS_FLAG, 0b001000 | 2)
    _, block = leaf(pt, 4 * bs)
    _, page = leaf(pt, 6 * bs)
    pt.tlbi_log()
    assert pt.mkyoung(4 * bs + bs - 1) is True           # any byte of the block
    assert leaf(pt, 4 * bs) == (2, block | AF)
    assert pt.mkyoung(6 * bs + 0x123) is True
    assert leaf(pt, 6 * bs) == (3, page | AF)
    assert pt.translate(6 * bs + 0x123).pa == PA + bs + 0x123
    assert pt.mkyoung(6 * bs) is True                    # already young: still found
    assert events(pt) == []
    snap = snapshot(pt)
    top = 1 << ipa_bits
    for hole in (6 * bs + g, 7 * bs, top, top + 5, 2**64 - 1):
        assert pt.mkyoung(hole) is False
    same(snap, snapshot(pt))
    assert pt.owner(7 * bs) == 4
    for bad in (2**64, -1):
        with pytest.raises(RangeError):
            pt.mkyoung(bad)


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_test_clear_young_whole_leaves_no_events(granule, ipa_bits, semantics):
    pt = vm(granule, ipa_bits, semantics=semantics)
    g, bs = granule, block2(granule)
    pt.map(4 * bs, PA, bs)
    pt.map(5 * bs, PA + bs, 4 * g, blocks=False)
    _, block = leaf(pt, 4 * bs)
    pages = leaf_table(pt, 5 * bs)[:4].copy()
    pt.tlbi_log()
    # mkold=False: a question only.
    assert pt.test_clear_young(4 * bs + g, g, mkold=False) is True
    assert leaf(pt, 4 * bs) == (2, block)
    # One page of the block in range: the whole block goes old, in place, no split.
    tables = pt.table_pages
    assert pt.test_clear_young(4 * bs + g, g) is True
    assert leaf(pt, 4 * bs) == (2, block & ~AF)
    assert pt.table_pages == tables
    assert pt.test_clear_young(4 * bs, bs) is False
    # Two of the four pages.
    assert pt.test_clear_young(5 * bs + g, 2 * g) is True
    now = leaf_table(pt, 5 * bs)[:4]
    expect = pages.copy()
    expect[1:3] &= np.uint64(~AF & (2**64 - 1))
    assert np.array_equal(now, expect)
    assert events(pt) == []               # KVM's mkold issues no TLBI
    pt.set_owner(6 * bs, g, 2)
    assert pt.test_clear_young(6 * bs, bs) is False       # annotation and holes
    assert pt.test_clear_young(0, 0) is False
    # Access after mkold: access-flag fault at the leaf level.
    with pytest.raises(s2pt.Stage2Fault) as info:
        pt.translate(4 * bs)
    assert info.value.kind == FaultKind.ACCESS_FLAG and info.value.level == 2
    pt.check()


@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_young_bitmap(granule, ipa_bits):
    pt = vm(granule, ipa_bits)
    g, bs = granule, block2(granule)
    base = 8 * bs
    start = base - 100 * g
    rng = np.random.default_rng(granule)
    young_pages = set()
    for i in range(100):
        if rng.random() < 0.6:
            af = bool(rng.random() < 0.5)
            pt.map(start + i * g, PA + i * g, g, af=af)
            if af:
                young_pages.add(i)
    pt.map(base, PA + 4 * bs, bs)                 # young block, 60 of its pages in range
    young_pages |= set(range(100, 160))
    pt.tlbi_log()
    size = 160 * g
    bm = pt.young(start, size)
    assert bm.dtype == np.uint64 and bm.shape == (3,)      # ceil(160 / 64)
    assert set(s2pt.bitmap_pages(bm).tolist()) == young_pages
    # KVM's layout, computed by hand: bit i % 64 of word i // 64.
    words = [0, 0, 0]
    for i in young_pages:
        words[i // 64] |= 1 << (i % 64)
    assert [int(w) for w in bm] == words
    assert int(bm[2]) >> 32 == 0                              # bits past the last page
    _, block = leaf(pt, base)
    bm2 = pt.young(start, size, clear=True)
    assert np.array_equal(bm, bm2)
    assert leaf(pt, base) == (2, block & ~AF)                 # whole block, past the range too
    assert not pt.young(start, size).any()
    assert pt.young(base + bs - g, g).tolist() == [0]
    assert pt.young(start, 0).shape == (0,)
    assert events(pt) == []
    pt.check()


# ---- relax_perms ------------------------------------------------------------------------------

@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_relax_perms_adds_and_logs_one_perm_event(granule, ipa_bits):
    pt = vm(granule, ipa_bits)
    g, bs = granule, block2(granule)
    pt.map(4 * bs, PA, bs, Prot.R)
    pt.map(6 * bs + 3 * g, PA + bs, g, Prot.R)
    _, block = leaf(pt, 4 * bs)
    _, page = leaf(pt, 6 * bs + 3 * g)
    pt.tlbi_log()
    assert pt.relax_perms(6 * bs + 3 * g + 0x10, Prot.W) is True
    assert leaf(pt, 6 * bs + 3 * g) == (3, page | S2AP_W)
    assert events(pt) == [ipa_ev(6 * bs + 3 * g, g, 3, s2pt.TLBI_PERM)]
    assert pt.relax_perms(4 * bs + bs - 8, Prot.X) is True
    assert leaf(pt, 4 * bs) == (2, block & ~XN1)
    assert events(pt) == [ipa_ev(4 * bs, bs, 2, s2pt.TLBI_PERM)]
    assert pt.translate(4 * bs, Access.EXEC).pa == PA
    # Never removes; an event even when nothing changed (KVM flushes on -EAGAIN too).
    assert pt.relax_perms(4 * bs, Prot.R) is True
    assert pt.relax_perms(4 * bs, Prot.NONE) is True
    assert leaf(pt, 4 * bs) == (2, block & ~XN1)
    assert events(pt) == [ipa_ev(4 * bs, bs, 2, s2pt.TLBI_PERM)] * 2
    pt.check()


@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_relax_perms_holes_and_refusals(granule, ipa_bits):
    pt = vm(granule, ipa_bits)
    g, bs = granule, block2(granule)
    pt.map(4 * bs, PA, g, Prot.R)
    pt.map(5 * bs, PA + bs, g, Prot.RW, MemAttr.DEVICE_nGnRE)
    pt.set_owner(6 * bs, g, 1)
    pt.tlbi_log()
    snap = snapshot(pt)
    top = 1 << ipa_bits
    for hole in (4 * bs + g, 6 * bs, top, 2**64 - 1):
        assert pt.relax_perms(hole, Prot.RWX) is False
    # No leaf changes nothing, but KVM still flushes the page's IPA (no level hint) inside
    # the IPA size: the attribute walk's -EAGAIN counts as a reason to invalidate.
    assert events(pt) == [ipa_ev(4 * bs + g, g, s2pt.TLBI_LEVEL_UNKNOWN, s2pt.TLBI_PERM),
                          ipa_ev(6 * bs, g, s2pt.TLBI_LEVEL_UNKNOWN, s2pt.TLBI_PERM)]
    snap = snapshot(pt)
    # PX alone (or UX alone) on a no-exec leaf without FEAT_XNX: XN[0] is RES0, so the
    # result could not be expressed.
    for prot in (Prot.PX, Prot.UX, Prot.R | Prot.PX):
        with pytest.raises(InvalidArgumentError):
            pt.relax_perms(4 * bs, prot)
    # Execute on Device memory (KVM refuses it).
    with pytest.raises(InvalidArgumentError):
        pt.relax_perms(5 * bs, Prot.X)
    for bad in (0x10, 0xFF, -1):
        with pytest.raises(InvalidArgumentError):
            pt.relax_perms(4 * bs, bad)
    same(snap, snapshot(pt))
    with pytest.raises(RangeError):
        pt.relax_perms(2**64, Prot.R)
    assert pt.relax_perms(4 * bs, Prot.X) is True            # both together: fine


def test_relax_perms_px_ux_with_xnx():
    """FEAT_XNX: XN[1:0] 0b10 no execute, 0b11 EL1 only (PX), 0b01 EL0 only, 0b00 both."""
    pt = vm(xnx=True)
    pt.map(GiB, PA, 4 * KiB, Prot.R)
    pt.map(GiB + 4 * KiB, PA, 4 * KiB, Prot.R)
    _, d = leaf(pt, GiB)
    assert d & (XN1 | XN0) == XN1
    assert pt.relax_perms(GiB, Prot.PX) is True
    assert leaf(pt, GiB)[1] & (XN1 | XN0) == XN1 | XN0
    assert pt.translate(GiB, Access.EXEC).pa == PA
    with pytest.raises(s2pt.Stage2Fault):
        pt.translate(GiB, Access.EXEC_EL0)
    assert pt.relax_perms(GiB, Prot.UX) is True
    assert leaf(pt, GiB)[1] & (XN1 | XN0) == 0
    assert leaf(pt, GiB)[1] == d & ~XN1
    assert pt.relax_perms(GiB + 4 * KiB, Prot.UX) is True
    assert leaf(pt, GiB + 4 * KiB)[1] & (XN1 | XN0) == XN0


# ---- arguments -------------------------------------------------------------------------------

RANGE_OPS = {
    "wrprotect": lambda pt, i, n: pt.wrprotect(i, n),
    "test_clear_young": lambda pt, i, n: pt.test_clear_young(i, n),
    "young": lambda pt, i, n: pt.young(i, n),
    "young_clear": lambda pt, i, n: pt.young(i, n, clear=True),
    "split": lambda pt, i, n: pt.split(i, n),
    "collapse": lambda pt, i, n: pt.collapse(i, n),
}


@pytest.mark.parametrize("op", sorted(RANGE_OPS))
@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_range_op_bad_arguments_change_nothing(granule, ipa_bits, op):
    fn = RANGE_OPS[op]
    pt = vm(granule, ipa_bits, pages=8)
    g, bs = granule, block2(granule)
    top = 1 << ipa_bits
    pt.map(4 * bs, PA, bs)
    pt.map(top - bs, PA, bs)                    # the last block of the IPA space
    pt.tlbi_log()
    snap = snapshot(pt)
    for ipa, size in ((4 * bs + 8, g), (4 * bs, g + 8), (4 * bs + g // 2, bs)):
        with pytest.raises(AlignmentError):
            fn(pt, ipa, size)
    for ipa, size in ((top - bs, bs + g), (top, g), (2**64 - g, 2 * g), (4 * bs, 2 * top)):
        with pytest.raises(RangeError):
            fn(pt, ipa, size)
    if not op.startswith("young"):   # young: see test_young_huge_size_is_a_range_error
        with pytest.raises(RangeError):
            fn(pt, 4 * bs, 2**64 - g)                 # wraps around 2**64
    for ipa, size in ((2**64, g), (-g, g), (0, 2**64), (0, -1)):
        with pytest.raises(RangeError):
            fn(pt, ipa, size)
    with pytest.raises(s2pt.ArgumentTypeError):
        fn(pt, float(4 * bs), g)
    same(snap, snapshot(pt))
    # Up to the very top is fine; size 0 is a no-op anywhere inside.
    fn(pt, top - bs, bs)
    pt.destroy()
    with pytest.raises(DestroyedError):
        fn(pt, 4 * bs, g)


@pytest.mark.parametrize("clear", [False, True])
def test_young_huge_size_is_a_range_error(clear):
    """Regression (fixed in 1b71bbf: the bitmap was allocated before the range check)."""
    pt = vm()
    pt.map(GiB, PA, 2 * MiB)
    snap = snapshot(pt)
    with pytest.raises(RangeError):
        pt.young(GiB, 2**64 - 4 * KiB, clear=clear)
    same(snap, snapshot(pt))


@pytest.mark.parametrize("op", ["mkyoung", "relax_perms"])
def test_single_address_ops_on_destroyed_vm(op):
    pt = vm()
    pt.map(GiB, PA, 4 * KiB)
    pt.destroy()
    with pytest.raises(DestroyedError):
        if op == "mkyoung":
            pt.mkyoung(GiB)
        else:
            pt.relax_perms(GiB, Prot.W)


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_size_zero_is_a_no_op(semantics):
    pt = vm(semantics=semantics)
    pt.map(GiB, PA, 2 * MiB)
    snap = snapshot(pt)
    assert pt.wrprotect(GiB + 4 * KiB, 0) == 0
    assert pt.split(GiB + 4 * KiB, 0) == 0
    assert pt.collapse(GiB, 0) == 0
    assert pt.test_clear_young(GiB, 0) is False
    assert pt.young(GiB, 0).shape == (0,)
    same(snap, snapshot(pt))
