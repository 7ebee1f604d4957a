"""semantics="kvm": map / unmap / protect and the TLB log as the kernel's
arch/arm64/kvm/hyp/pgtable.c produce them, side by side with s2pt's exact-range semantics.

KVM facts used (kvm_pgtable_stage2_map / _unmap / _wrprotect / _relax_perms, mainline):

* stage2_unmap_walker removes every leaf the range touches, whole ("rely on the remaining
  portions being faulted back lazily"); nothing is split;
* mapping a leaf smaller than an existing block (-E2BIG from stage2_map_walker_try_leaf)
  replaces the block with a new, empty table (break-before-make on the block) holding only the
  new mapping; the rest of the block is dropped;
* stage2_pte_needs_update(): a new leaf that differs from the valid one only in permission
  bits is not written (-EAGAIN); user_mem_abort answers such faults with relax_perms;
* with FWB and FEAT_TLBIRANGE (stage2_unmap_defer_tlb_flush) the leaf invalidations of an
  unmap are deferred to one range over the request, issued after the walk even when nothing
  was mapped;
* the attribute walker (protect / wrprotect) changes whole leaves.
"""

from __future__ import annotations

import numpy as np
import pytest

import s2pt
from s2pt import Access, FaultOutcome as FO, MemAttr, Prot

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
U = s2pt.TLBI_LEVEL_UNKNOWN
S2AP_W = 1 << 7
XN1 = 1 << 54
AF = 1 << 10

GEOMS = {(4096, 40): (1, 2), (16384, 47): (1, 1), (65536, 42): (2, 1)}
GEOM_PARAMS = [pytest.param(g, b, id=f"{g // 1024}K/{b}") for (g, b) in GEOMS]
PA = 8 * GiB


def level_size(granule, level):
    stride = granule.bit_length() - 1 - 3
    return 1 << (stride * (4 - level) + 3)


def block2(granule):
    return level_size(granule, 2)


def vm(granule=4096, ipa_bits=40, pages=64, **kw):
    return s2pt.Stage2(ipa_bits=ipa_bits, granule=granule,
                       pool=s2pt.PagePool(pages, granule=granule), **kw)


def leaf(pt, ipa):
    step = pt.walk(ipa)[-1]
    return step.level, int(step.desc)


def events(pt):
    return [(int(e["kind"]), int(e["ipa"]), int(e["size"]), int(e["level"]), int(e["reason"]),
             int(e["bbm"])) for e in pt.tlbi_log()]


def ipa_ev(ipa, size, level, reason, bbm=0):
    return (s2pt.TLBI_IPA, ipa, size, level, reason, bbm)


def test_the_option():
    assert s2pt.Stage2(pool=s2pt.PagePool(8)).semantics == "exact"
    assert vm(semantics="kvm").semantics == "kvm"
    assert s2pt.Stage2Config(semantics="kvm").semantics == "kvm"
    assert s2pt.Stage2Config().semantics == "exact"
    for bad in ("KVM", "", None, 1):
        with pytest.raises(s2pt.ConfigError):
            vm(semantics=bad)


# ---- unmap -----------------------------------------------------------------------------------

@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_unmap_one_page_of_a_block(granule, ipa_bits):
    g, bs = granule, block2(granule)
    start, roots = GEOMS[(granule, ipa_bits)]
    base = 4 * bs
    # kvm: the whole block goes; its level-2 table (if any) empties and is freed.
    k = vm(granule, ipa_bits, semantics="kvm")
    k.map(base, PA, bs)
    k.tlbi_log()
    assert k.unmap(base + g, g) == bs
    assert list(k.mappings()) == []
    assert k.table_pages == roots
    ev = events(k)
    assert ev[0] == ipa_ev(base, bs, 2, s2pt.TLBI_UNMAP)
    assert [e[4] for e in ev[1:]] == [s2pt.TLBI_TABLE] * (0 if start == 2 else 1)
    k.check()
    # exact: the block is split, the other pages stay.
    e = vm(granule, ipa_bits)
    e.map(base, PA, bs)
    e.tlbi_log()
    assert e.unmap(base + g, g) == g
    maps = list(e.mappings())
    assert len(maps) == bs // g - 1 and all(m.size == g for m in maps)
    assert base + g not in [m.ipa for m in maps]
    assert events(e) == [ipa_ev(base, bs, 2, s2pt.TLBI_SPLIT, 1),
                         ipa_ev(base + g, g, 3, s2pt.TLBI_UNMAP)]
    e.check()


def test_unmap_touching_two_blocks_and_a_1g_block_removes_them_whole():
    k = vm(semantics="kvm")
    k.map(GiB, PA, 4 * MiB)                               # two 2 MiB blocks
    k.map(4 * GiB, PA, GiB)                               # a 1 GiB block
    k.map(GiB + 4 * MiB, PA, 4 * KiB)                     # a page past them: untouched
    assert k.unmap(GiB + 2 * MiB - 4 * KiB, 8 * KiB) == 4 * MiB
    assert [m.ipa for m in k.mappings()] == [GiB + 4 * MiB, 4 * GiB]
    assert k.unmap(4 * GiB + 12 * KiB, 4 * KiB) == GiB
    assert [m.ipa for m in k.mappings()] == [GiB + 4 * MiB]
    assert k.unmap(2 * GiB, GiB) == 0                     # nothing there
    k.check()


def test_unmap_clears_annotations_touched_and_never_needs_pages():
    k = vm(pages=3, semantics="kvm")                     # 2 roots + 1: no page to spare
    k.map(GiB, PA, 2 * MiB)
    assert k.pool.free == 0
    assert k.unmap(GiB + 4 * KiB, 4 * KiB) == 2 * MiB    # exact would need a table
    e = vm(pages=3)
    e.map(GiB, PA, 2 * MiB)
    with pytest.raises(s2pt.PoolExhaustedError):
        e.unmap(GiB + 4 * KiB, 4 * KiB)


@pytest.mark.parametrize("semantics", ["exact", "kvm"])
def test_fwb_deferred_range_flush(semantics):
    pt = vm(semantics=semantics, fwb=True)
    pt.tlbi_log()
    # A hole: KVM issues its deferred range flush anyway; exact records nothing.
    assert pt.unmap(GiB, 4 * MiB) == 0
    expect = [(s2pt.TLBI_RANGE, GiB, 4 * MiB, U, s2pt.TLBI_UNMAP, 0)]
    assert events(pt) == (expect if semantics == "kvm" else [])
    assert pt.unmap(GiB, 0) == 0
    assert events(pt) == []
    # Mapped leaves: one range over the request, no per-leaf IPA events.
    pt.map(GiB, PA, 2 * MiB, blocks=False)
    pt.map(GiB + 2 * MiB, PA, 2 * MiB)
    pt.tlbi_log()
    assert pt.unmap(GiB, 4 * MiB) == 4 * MiB
    ev = events(pt)
    assert [e for e in ev if e[4] == s2pt.TLBI_UNMAP] == [
        (s2pt.TLBI_RANGE, GiB, 4 * MiB, U, s2pt.TLBI_UNMAP, 0)]
    assert all(e[4] in (s2pt.TLBI_UNMAP, s2pt.TLBI_TABLE) for e in ev)


def test_fwb_without_tlbi_range_flushes_per_leaf_and_not_for_holes():
    pt = vm(semantics="kvm", fwb=True, tlbi_range=False)
    assert pt.unmap(GiB, 4 * MiB) == 0
    assert events(pt) == []
    pt.map(GiB, PA, 2 * MiB)
    pt.tlbi_log()
    assert pt.unmap(GiB, 2 * MiB) == 2 * MiB
    assert events(pt)[0] == ipa_ev(GiB, 2 * MiB, 2, s2pt.TLBI_UNMAP)


# ---- map -------------------------------------------------------------------------------------

@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_map_page_inside_a_block_leaves_only_that_page(granule, ipa_bits):
    g, bs = granule, block2(granule)
    base = 4 * bs
    k = vm(granule, ipa_bits, semantics="kvm")
    k.map(base, PA, bs)
    tables = k.table_pages
    k.tlbi_log()
    k.map(base + 3 * g, 2 * PA, g, Prot.R)
    assert [(m.ipa, m.pa, m.size, m.prot) for m in k.mappings()] == [
        (base + 3 * g, 2 * PA, g, Prot.R)]
    assert events(k) == [ipa_ev(base, bs, 2, s2pt.TLBI_SPLIT, 1)]
    assert k.table_pages == tables + 1
    assert k.pool.refcount(k.walk(base + 3 * g)[-1].table_pa) == 1 + 1
    k.check()
    # exact keeps the rest of the block and replaces the page in the new table.
    e = vm(granule, ipa_bits)
    e.map(base, PA, bs)
    e.tlbi_log()
    e.map(base + 3 * g, 2 * PA, g, Prot.R)
    assert len(list(e.mappings())) == bs // g
    assert events(e) == [ipa_ev(base, bs, 2, s2pt.TLBI_SPLIT, 1),
                         ipa_ev(base + 3 * g, g, 3, s2pt.TLBI_REPLACE, 1)]


def test_map_page_inside_a_1g_block_4k():
    k = vm(semantics="kvm")
    k.map(GiB, PA, GiB)
    k.tlbi_log()
    k.map(GiB + 5 * MiB, PA + 5 * MiB, 4 * KiB)
    assert [(m.ipa, m.size) for m in k.mappings()] == [(GiB + 5 * MiB, 4 * KiB)]
    assert events(k) == [ipa_ev(GiB, GiB, 1, s2pt.TLBI_SPLIT, 1)]
    assert k.table_pages == 2 + 2


@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_map_identical_page_inside_a_block(granule, ipa_bits):
    """The block already maps the page the same way: exact leaves it whole; KVM's -E2BIG
    path replaces the block all the same."""
    g, bs = granule, block2(granule)
    base = 4 * bs
    k = vm(granule, ipa_bits, semantics="kvm")
    e = vm(granule, ipa_bits)
    for pt in (k, e):
        pt.map(base, PA, bs)
        pt.tlbi_log()
        pt.map(base + g, PA + g, g)
    assert [(m.ipa, m.size) for m in k.mappings()] == [(base + g, g)]
    assert events(k) == [ipa_ev(base, bs, 2, s2pt.TLBI_SPLIT, 1)]
    assert [(m.ipa, m.size) for m in e.mappings()] == [(base, bs)]
    assert events(e) == []


@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_remap_with_only_other_permissions(granule, ipa_bits):
    g, bs = granule, block2(granule)
    for level, base, size in ((2, 4 * bs, bs), (3, 6 * bs, g)):
        k = vm(granule, ipa_bits, semantics="kvm")
        e = vm(granule, ipa_bits)
        for pt in (k, e):
            pt.map(base, PA, size, Prot.RW)
            pt.tlbi_log()
        before = leaf(k, base)
        for prot in (Prot.R, Prot.RWX, Prot.NONE, Prot.RX):
            k.map(base, PA, size, prot)
            assert leaf(k, base) == before              # -EAGAIN: not written
            assert events(k) == []
        e.map(base, PA, size, Prot.R)
        assert leaf(e, base) == (level, before[1] & ~S2AP_W)
        assert events(e) == [ipa_ev(base, size, level, s2pt.TLBI_REPLACE, 1)]
        # Anything but the permissions is a real change in kvm mode too.
        k.map(base, PA, size, Prot.RW, MemAttr.NORMAL_NC)
        assert events(k) == [ipa_ev(base, size, level, s2pt.TLBI_REPLACE, 1)]
        k.map(base, 2 * PA, size, Prot.RW, MemAttr.NORMAL_NC)
        assert events(k) == [ipa_ev(base, size, level, s2pt.TLBI_REPLACE, 1)]
        k.map(base, 2 * PA, size, Prot.RW, MemAttr.NORMAL_NC, af=False)
        assert events(k) == [ipa_ev(base, size, level, s2pt.TLBI_REPLACE, 1)]
        assert leaf(k, base)[1] & AF == 0
        # Software bits only: in place, no event (hardware ignores them).
        k.map(base, 2 * PA, size, Prot.RW, MemAttr.NORMAL_NC, af=False, sw=6)
        assert events(k) == [] and (leaf(k, base)[1] >> 55) & 0xF == 6
        k.check()


def test_map_whole_block_span_over_a_table_coalesces_in_both():
    for semantics in ("exact", "kvm"):
        pt = vm(semantics=semantics)
        pt.map(GiB, PA, 2 * MiB, blocks=False)
        pt.tlbi_log()
        pt.map(GiB, 2 * PA, 2 * MiB)
        assert leaf(pt, GiB)[0] == 2
        assert events(pt) == [(s2pt.TLBI_RANGE, GiB, 2 * MiB, U, s2pt.TLBI_COALESCE, 1)]


# ---- protect / wrprotect ---------------------------------------------------------------------

@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_protect_part_of_a_block(granule, ipa_bits):
    g, bs = granule, block2(granule)
    base = 4 * bs
    k = vm(granule, ipa_bits, semantics="kvm")
    k.map(base, PA, bs)
    _, block = leaf(k, base)
    tables = k.table_pages
    k.tlbi_log()
    k.protect(base + g, g, Prot.R)
    assert leaf(k, base) == (2, block & ~S2AP_W)          # whole block, in place
    assert k.table_pages == tables
    assert events(k) == [ipa_ev(base, bs, 2, s2pt.TLBI_PERM)]
    k.protect(base + g, g, Prot.RX)
    assert leaf(k, base) == (2, block & ~S2AP_W & ~XN1)
    e = vm(granule, ipa_bits)
    e.map(base, PA, bs)
    e.tlbi_log()
    e.protect(base + g, g, Prot.R)
    assert leaf(e, base)[0] == 3 and leaf(e, base)[1] & S2AP_W
    assert not leaf(e, base + g)[1] & S2AP_W
    assert events(e) == [ipa_ev(base, bs, 2, s2pt.TLBI_SPLIT, 1),
                         ipa_ev(base + g, g, 3, s2pt.TLBI_PERM)]


# ---- the fault handler's maps follow the mode -------------------------------------------------

def test_dirty_write_into_a_block():
    """Logging turned on over a 2 MiB block: a write maps one page into it (force_pte). KVM
    drops the rest of the block (faulted back later); exact keeps it, read-only."""
    results = {}
    for semantics in ("exact", "kvm"):
        pt = vm(semantics=semantics)
        slot = pt.add_memslot(GiB, PA, 4 * MiB, backing=2 * MiB)
        assert pt.fault(GiB, Access.READ) == FO.MAPPED
        pt.set_log_dirty(slot, True)
        pt.tlbi_log()
        assert pt.fault(GiB + 5 * 4 * KiB, Access.WRITE) == FO.DIRTY
        results[semantics] = list(pt.mappings())
        assert events(pt)[0] == ipa_ev(GiB, 2 * MiB, 2, s2pt.TLBI_SPLIT, 1)
        assert s2pt.bitmap_pages(pt.get_dirty_log(slot)).tolist() == [5]
        if semantics == "kvm":
            # The dropped pages fault back in as read-only pages while logging.
            assert pt.fault(GiB + 4 * KiB, Access.READ) == FO.MAPPED
            assert leaf(pt, GiB + 4 * KiB)[1] & S2AP_W == 0
        pt.check()
    assert [(m.ipa, m.prot) for m in results["kvm"]] == [(GiB + 5 * 4 * KiB, Prot.RW)]
    exact = results["exact"]
    assert len(exact) == 512
    assert [m.ipa for m in exact if m.prot & Prot.W] == [GiB + 5 * 4 * KiB]


def test_exec_fault_into_a_read_only_block_while_logging():
    for semantics in ("exact", "kvm"):
        pt = vm(semantics=semantics)
        slot = pt.add_memslot(GiB, PA, 2 * MiB, backing=2 * MiB)
        pt.fault(GiB, Access.READ)
        pt.set_log_dirty(slot, True)
        # Permission fault on the block; while logging the mapping size is the page: MAPPED.
        assert pt.fault(GiB + 8 * KiB, Access.EXEC) == FO.MAPPED
        assert pt.translate(GiB + 8 * KiB, Access.EXEC).level == 3
        n = len(list(pt.mappings()))
        assert n == (1 if semantics == "kvm" else 512)
        assert not pt.get_dirty_log(slot).any()


def test_access_many_sees_kvm_dropping_the_rest_of_a_block():
    """A handler run can change later translations of the same batch (the rest of a block
    dropped): access_many must not trust translations made before it."""
    pt = vm(semantics="kvm")
    slot = pt.add_memslot(GiB, PA, 2 * MiB, backing=2 * MiB)
    pt.fault(GiB, Access.READ)
    pt.set_log_dirty(slot, True)
    ipas = np.array([GiB + 4 * KiB, GiB + 8 * KiB, GiB + 12 * KiB, GiB + 8 * KiB],
                    dtype=np.uint64)
    pa, oc = pt.access_many(ipas, Access.WRITE)
    assert pa.tolist() == [PA + 4 * KiB, PA + 8 * KiB, PA + 12 * KiB, PA + 8 * KiB]
    # First write: DIRTY (page into the block, rest dropped); then translation faults on
    # the dropped pages: MAPPED (and dirty); the repeat hits.
    assert oc.tolist() == [FO.DIRTY, FO.MAPPED, FO.MAPPED, FO.HIT]
    assert s2pt.bitmap_pages(pt.get_dirty_log(slot)).tolist() == [1, 2, 3]
