"""The MMU layer above the engine: memslots, KVM's stage-2 abort handler (kvm_handle_guest_abort
/ user_mem_abort), dirty logging (KVM_MEM_LOG_DIRTY_PAGES, KVM_GET_DIRTY_LOG,
KVM_CLEAR_DIRTY_LOG), access_many and the fault counters.

Expected values come from KVM's documented behaviour and the architecture, never from what the
code returns:

* mapping size: the largest leaf size of the granule (4K: 4 KiB / 2 MiB / 1 GiB; 16K: 16 KiB /
  32 MiB; 64K: 64 KiB / 512 MiB) not above the slot's backing, whose aligned block lies in the
  slot and for which ipa % size == pa % size (fault_supports_stage2_huge_mapping); pages only
  while logging (force_pte);
* permissions: R always; W if the slot is writable and (not logging, or a write); X for a
  fetch; a permission fault never removes a permission (relax_perms);
* leaves read back as descriptor bits (S2AP W bit 7, AF bit 10, XN bit 54, type bits[1:0]);
* dirty bitmaps compared to the exact set of pages written; KVM's write-protect of a mask
  word covers its lowest to its highest bit (kvm_mmu_write_protect_pt_masked);
* the flush after write-protecting: one range over the slot (kvm_flush_remote_tlbs_memslot),
  the whole VMID without FEAT_TLBIRANGE.
"""

from __future__ import annotations

import numpy as np
import pytest

import s2pt
from s2pt import Access, FaultOutcome as FO, MemAttr, Prot
from s2pt.errors import (
    AlignmentError,
    ArrayError,
    DestroyedError,
    InvalidArgumentError,
    PoolExhaustedError,
    RangeError,
)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
U = s2pt.TLBI_LEVEL_UNKNOWN

TYPE_MASK = 0b11
TYPE_BLOCK = 0b01
TYPE_PAGE = 0b11
S2AP_R = 1 << 6
S2AP_W = 1 << 7
SH_INNER = 0b11 << 8
AF = 1 << 10
XN1 = 1 << 54

GEOMS = {(4096, 40): (1, 2), (16384, 47): (1, 1), (65536, 42): (2, 1)}
GEOM_PARAMS = [pytest.param(g, b, id=f"{g // 1024}K/{b}") for (g, b) in GEOMS]
PA = 8 * GiB
ALL_ACCESS = [Access.READ, Access.WRITE, Access.EXEC, Access.EXEC_EL0]


def level_size(granule, level):
    stride = granule.bit_length() - 1 - 3
    return 1 << (stride * (4 - level) + 3)


def block2(granule):
    return level_size(granule, 2)


def vm(granule=4096, ipa_bits=40, pages=256, **kw):
    return s2pt.Stage2(ipa_bits=ipa_bits, granule=granule,
                       pool=s2pt.PagePool(pages, granule=granule), **kw)


def leaf(pt, ipa):
    step = pt.walk(ipa)[-1]
    return step.level, int(step.desc)


def desc_index(pt, ipa):
    """Index in pool.words of the descriptor the walk of ipa stops at."""
    return (pt.walk(ipa)[-1].desc_pa - pt.pool.base_pa) // 8


def expected_leaf(pa, level, prot=Prot.RW, memattr=0xF, af=True):
    d = pa | (TYPE_PAGE if level == 3 else TYPE_BLOCK) | (memattr << 2) | SH_INNER
    if prot & Prot.R:
        d |= S2AP_R
    if prot & Prot.W:
        d |= S2AP_W
    if not prot & Prot.X:
        d |= XN1
    if af:
        d |= AF
    return d


def events(pt):
    return [(int(e["kind"]), int(e["ipa"]), int(e["size"]), int(e["level"]), int(e["reason"]),
             int(e["bbm"])) for e in pt.tlbi_log()]


def wp_event(ipa, size):
    return (s2pt.TLBI_RANGE, ipa, size, U, s2pt.TLBI_WRPROTECT, 0)


def dirty_logs(pt):
    return {s.id: pt.get_dirty_log(s.id, clear=False).tolist()
            for s in pt.memslots() if s.log_dirty}


def snapshot(pt):
    return (list(pt.mappings()), pt.stats(), pt.memslots(), pt.pool.used,
            pt.pool.words.copy(), pt.pool.refcounts.copy(),
            [tuple(int(x) for x in e) for e in pt.tlbi_log(clear=False)], dirty_logs(pt))


def same(a, b):
    for x, y in zip(a, b):
        if isinstance(x, np.ndarray):
            assert np.array_equal(x, y)
        else:
            assert x == y


def pages_set(bitmap):
    return set(int(p) for p in s2pt.bitmap_pages(bitmap))


# ---- mapping sizes ----------------------------------------------------------------------------

@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_block_backing_with_shared_alignment_maps_a_level2_block(granule, ipa_bits):
    g, bs = granule, block2(granule)
    pt = vm(granule, ipa_bits, pages=16)
    slot = pt.add_memslot(4 * bs, PA, 2 * bs, backing=bs)
    assert pt.memslots() == [s2pt.Memslot(slot, 4 * bs, PA, 2 * bs, False, False, bs)]
    assert list(pt.mappings()) == [] and pt.tlbi_log().size == 0     # maps nothing
    ipa = 5 * bs + 3 * g + 5
    assert pt.fault(ipa, Access.READ) == FO.MAPPED
    # A read fault outside logging maps RW (KVM: writable slot), no exec, AF set.
    assert leaf(pt, ipa) == (2, expected_leaf(PA + bs, 2, Prot.RW))
    assert pt.translate(ipa, Access.WRITE).pa == PA + bs + 3 * g + 5
    assert [m.size for m in pt.mappings()] == [bs]
    assert pt.tlbi_log().size == 0            # a new leaf over an invalid entry
    assert pt.fault(ipa, Access.WRITE) == FO.HIT
    pt.check()


@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_misaligned_ipa_and_pa_map_pages(granule, ipa_bits):
    g, bs = granule, block2(granule)
    pt = vm(granule, ipa_bits, pages=16)
    pt.add_memslot(4 * bs, PA + g, 2 * bs, backing=bs)   # ipa % bs != pa % bs
    ipa = 4 * bs + 7 * g + 1
    assert pt.fault(ipa, Access.READ) == FO.MAPPED
    assert leaf(pt, ipa) == (3, expected_leaf(PA + g + 7 * g, 3))
    assert pt.stats()["mapped_bytes"] == g


@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_block_must_lie_inside_the_slot(granule, ipa_bits):
    g, bs = granule, block2(granule)
    pt = vm(granule, ipa_bits, pages=16)
    # [4bs, 5bs + 3g): the second block would cross the slot's end.
    pt.add_memslot(4 * bs, PA, bs + 3 * g, backing=bs)
    assert pt.fault(5 * bs + g, Access.READ) == FO.MAPPED
    assert leaf(pt, 5 * bs + g) == (3, expected_leaf(PA + bs + g, 3))
    assert pt.fault(4 * bs + 5, Access.READ) == FO.MAPPED
    assert leaf(pt, 4 * bs) == (2, expected_leaf(PA, 2))
    # A slot starting one page into a block: the first block starts before the slot.
    pt2 = vm(granule, ipa_bits, pages=16)
    pt2.add_memslot(4 * bs + g, PA + g, 2 * bs, backing=bs)
    assert pt2.fault(4 * bs + 2 * g, Access.READ) == FO.MAPPED
    assert leaf(pt2, 4 * bs + 2 * g) == (3, expected_leaf(PA + 2 * g, 3))
    assert pt2.fault(5 * bs + 7 * g, Access.READ) == FO.MAPPED
    assert leaf(pt2, 5 * bs) == (2, expected_leaf(PA + bs, 2))
    assert pt2.fault(6 * bs, Access.READ) == FO.MAPPED            # the slot's last page
    assert leaf(pt2, 6 * bs) == (3, expected_leaf(PA + 2 * bs, 3))


@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_granule_backing_maps_pages_even_when_aligned(granule, ipa_bits):
    g, bs = granule, block2(granule)
    pt = vm(granule, ipa_bits, pages=16)
    pt.add_memslot(4 * bs, PA, bs)                      # backing defaults to the granule
    assert pt.memslots()[0].backing == g
    assert pt.fault(4 * bs, Access.READ) == FO.MAPPED
    assert leaf(pt, 4 * bs) == (3, expected_leaf(PA, 3))


def test_1g_backing_maps_level1_block_4k():
    pt = vm()
    pt.add_memslot(GiB, PA, 2 * GiB, backing=GiB)
    assert pt.fault(2 * GiB + 12345, Access.READ) == FO.MAPPED
    assert leaf(pt, 2 * GiB) == (1, expected_leaf(PA + GiB, 1))
    assert pt.table_pages == pt.root_tables            # a level-1 block lives in the root
    # 1 GiB backing, but the slot holds no whole aligned GiB: 2 MiB, the next size down.
    pt.add_memslot(4 * GiB, 16 * GiB, 512 * MiB, backing=GiB)
    assert pt.fault(4 * GiB + 3 * MiB, Access.READ) == FO.MAPPED
    assert leaf(pt, 4 * GiB + 3 * MiB) == (2, expected_leaf(16 * GiB + 2 * MiB, 2))
    # 1 GiB aligned but only 2 MiB backing: never larger than the host page.
    pt.add_memslot(8 * GiB, 32 * GiB, GiB, backing=2 * MiB)
    assert pt.fault(8 * GiB, Access.READ) == FO.MAPPED
    assert leaf(pt, 8 * GiB)[0] == 2
    # 1 GiB backing, IPA and PA share only 2 MiB alignment.
    pt.add_memslot(16 * GiB, 64 * GiB + 2 * MiB, 2 * GiB, backing=GiB)
    assert pt.fault(17 * GiB, Access.READ) == FO.MAPPED
    assert leaf(pt, 17 * GiB) == (2, expected_leaf(64 * GiB + 2 * MiB + GiB, 2))
    pt.check()


# ---- permissions of the leaf -----------------------------------------------------------------

@pytest.mark.parametrize("access", [Access.EXEC, Access.EXEC_EL0])
def test_exec_fault_maps_rwx(access):
    pt = vm()
    pt.add_memslot(GiB, PA, 4 * MiB, backing=2 * MiB)
    assert pt.fault(GiB + 8, access) == FO.MAPPED
    assert leaf(pt, GiB) == (2, expected_leaf(PA, 2, Prot.RWX))


def test_read_then_exec_then_write_relaxes_never_removes():
    pt = vm()
    pt.add_memslot(GiB, PA, 4 * MiB)                   # pages
    assert pt.fault(GiB + 4 * KiB, Access.READ) == FO.MAPPED
    assert leaf(pt, GiB + 4 * KiB) == (3, expected_leaf(PA + 4 * KiB, 3, Prot.RW))
    pt.tlbi_log()
    assert pt.fault(GiB + 4 * KiB + 8, Access.EXEC) == FO.RELAXED
    assert leaf(pt, GiB + 4 * KiB) == (3, expected_leaf(PA + 4 * KiB, 3, Prot.RWX))
    assert events(pt) == [(s2pt.TLBI_IPA, GiB + 4 * KiB, 4 * KiB, 3, s2pt.TLBI_PERM, 0)]
    assert pt.fault(GiB + 4 * KiB, Access.WRITE) == FO.HIT
    assert pt.fault(GiB + 4 * KiB, Access.EXEC_EL0) == FO.HIT


def test_logging_read_maps_read_only_then_write_is_dirty_keeping_exec():
    pt = vm()
    slot = pt.add_memslot(GiB, PA, 4 * MiB, backing=2 * MiB, log_dirty=True)
    assert pt.fault(GiB + 8 * KiB, Access.READ) == FO.MAPPED
    # While logging: a page (force_pte) without W, so the first write faults.
    assert leaf(pt, GiB + 8 * KiB) == (3, expected_leaf(PA + 8 * KiB, 3, Prot.R))
    assert not pt.get_dirty_log(slot, clear=False).any()
    assert pt.fault(GiB + 12 * KiB, Access.EXEC) == FO.MAPPED
    assert leaf(pt, GiB + 12 * KiB) == (3, expected_leaf(PA + 12 * KiB, 3, Prot.RX))
    pt.tlbi_log()
    assert pt.fault(GiB + 8 * KiB, Access.WRITE) == FO.DIRTY
    assert leaf(pt, GiB + 8 * KiB) == (3, expected_leaf(PA + 8 * KiB, 3, Prot.RW))
    assert pt.fault(GiB + 12 * KiB, Access.WRITE) == FO.DIRTY
    assert leaf(pt, GiB + 12 * KiB) == (3, expected_leaf(PA + 12 * KiB, 3, Prot.RWX))
    assert events(pt) == [(s2pt.TLBI_IPA, GiB + 8 * KiB, 4 * KiB, 3, s2pt.TLBI_PERM, 0),
                          (s2pt.TLBI_IPA, GiB + 12 * KiB, 4 * KiB, 3, s2pt.TLBI_PERM, 0)]
    # A write to a page never mapped: translation fault, mapped RW, dirty.
    assert pt.fault(GiB + 3 * MiB, Access.WRITE) == FO.MAPPED
    assert leaf(pt, GiB + 3 * MiB) == (3, expected_leaf(PA + 3 * MiB, 3, Prot.RW))
    assert pages_set(pt.get_dirty_log(slot, clear=False)) == {2, 3, 768}


def test_readonly_slot():
    pt = vm()
    slot = pt.add_memslot(GiB, PA, 4 * MiB, readonly=True, backing=2 * MiB)
    snap = snapshot(pt)
    assert pt.fault(GiB + 8, Access.WRITE) == FO.MMIO
    same(snap, snapshot(pt))                             # nothing mapped
    assert pt.fault(GiB + 8, Access.READ) == FO.MAPPED
    assert leaf(pt, GiB) == (2, expected_leaf(PA, 2, Prot.R))
    snap = snapshot(pt)
    assert pt.fault(GiB + 8, Access.WRITE) == FO.MMIO    # a permission fault: still MMIO
    same(snap, snapshot(pt))
    assert pt.fault(GiB + 8, Access.EXEC) == FO.RELAXED
    assert leaf(pt, GiB) == (2, expected_leaf(PA, 2, Prot.RX))
    assert pt.memslots()[0].readonly
    with pytest.raises(InvalidArgumentError):
        pt.set_log_dirty(slot, True)
    same_after = snapshot(pt)
    # Access flag cleared: a write still exits first (KVM checks the slot before AF).
    pt.test_clear_young(GiB, 4 * MiB)
    assert pt.fault(GiB, Access.WRITE) == FO.MMIO
    assert leaf(pt, GiB)[1] & AF == 0
    assert pt.fault(GiB, Access.READ) == FO.YOUNG
    assert snapshot(pt)[0] == same_after[0]


def test_holes_beyond_ipa_space_and_annotations():
    pt = vm()
    pt.add_memslot(GiB, PA, 4 * MiB, backing=2 * MiB)
    pt.set_owner(GiB + 2 * MiB, 4 * KiB, 9)
    top = 1 << 40
    snap = snapshot(pt)
    for access in ALL_ACCESS:
        fetch = access in (Access.EXEC, Access.EXEC_EL0)
        assert pt.fault(GiB - 4 * KiB, access) == (FO.ABORT if fetch else FO.MMIO)
        assert pt.fault(0, access) == (FO.ABORT if fetch else FO.MMIO)
        for beyond in (top, top + 4 * KiB, 2**64 - 1):
            assert pt.fault(beyond, access) == FO.ABORT
        assert pt.fault(GiB + 2 * MiB + 8, access) == FO.PERMISSION
    same(snap, snapshot(pt))
    assert pt.owner(GiB + 2 * MiB) == 9
    for bad in (2**64, -1):
        with pytest.raises(RangeError):
            pt.fault(bad, Access.READ)
    for bad in (4, 99, -1):
        with pytest.raises(InvalidArgumentError):
            pt.fault(GiB, bad)
    same(snap, snapshot(pt))


@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS)
def test_access_flag_cleared_then_young(granule, ipa_bits):
    g, bs = granule, block2(granule)
    pt = vm(granule, ipa_bits, pages=16)
    pt.add_memslot(4 * bs, PA, bs, backing=bs)
    assert pt.fault(4 * bs + g, Access.WRITE) == FO.MAPPED
    before = leaf(pt, 4 * bs)
    assert pt.test_clear_young(4 * bs, bs) is True
    assert leaf(pt, 4 * bs) == (2, before[1] & ~AF)
    pt.tlbi_log()
    for access in (Access.READ, Access.WRITE):
        assert pt.fault(4 * bs + 5 * g, access) == FO.YOUNG
        assert leaf(pt, 4 * bs) == before                  # AF back, nothing else changed
        assert pt.fault(4 * bs + 5 * g, access) == FO.HIT
        pt.test_clear_young(4 * bs, bs)
    assert events(pt) == []                                 # mkyoung / mkold: no TLBI


def test_access_flag_then_dirty_in_one_access():
    pt = vm()
    slot = pt.add_memslot(GiB, PA, 2 * MiB, log_dirty=True)
    assert pt.fault(GiB, Access.READ) == FO.MAPPED         # read-only page
    pt.test_clear_young(GiB, 4 * KiB)
    pt.fault_counts(clear=True)
    pa, oc = pt.access_many(np.array([GiB + 16], dtype=np.uint64), Access.WRITE)
    assert pa.tolist() == [PA + 16] and oc.tolist() == [FO.DIRTY]
    counts = pt.fault_counts()
    assert counts[FO.YOUNG] == 1 and counts[FO.DIRTY] == 1 and counts[FO.HIT] == 0
    assert pages_set(pt.get_dirty_log(slot)) == {0}


# ---- dirty logging ----------------------------------------------------------------------------

SLOT = (GiB, PA, 64 * MiB)


def faulted_in_slot(pt, backing=2 * MiB):
    slot = pt.add_memslot(*SLOT, backing=backing)
    ipas = np.arange(GiB, GiB + 64 * MiB, 2 * MiB, dtype=np.uint64)
    pa, oc = pt.access_many(ipas, Access.READ)
    assert (oc == FO.MAPPED).all()
    assert np.array_equal(pa, ipas - np.uint64(GiB) + np.uint64(PA))
    assert pt.stats()["leaves_by_level"] == {1: 0, 2: 32, 3: 0}
    pt.tlbi_log()
    return slot


def write_pages(pt, pages):
    ipas = np.array([GiB + p * 4 * KiB + 8 for p in pages], dtype=np.uint64)
    pa, oc = pt.access_many(ipas, Access.WRITE)
    assert np.array_equal(pa, ipas - np.uint64(GiB) + np.uint64(PA))
    seen = set()
    for p, o in zip(pages, oc.tolist()):
        assert o == (FO.HIT if p in seen else FO.DIRTY), (p, o)
        seen.add(p)


def test_dirty_logging_full_cycle_without_eager_split():
    pt = vm()
    slot = faulted_in_slot(pt)
    tables = pt.table_pages
    assert tables == 2 + 1
    pt.set_log_dirty(slot, True)
    assert pt.memslots()[0].log_dirty
    # Every block lost W, in place; no split; one flush over the slot.
    for i in range(32):
        assert leaf(pt, GiB + i * 2 * MiB) == (2, expected_leaf(PA + i * 2 * MiB, 2, Prot.R))
    assert pt.table_pages == tables
    assert events(pt) == [wp_event(GiB, 64 * MiB)]
    assert pt.get_dirty_log(slot, clear=False).shape == (16384 // 64,)
    rng = np.random.default_rng(1)
    round1 = [int(p) for p in rng.integers(0, 16384, 300)] + [5, 5, 6, 16383]
    write_pages(pt, round1)
    written = set(round1)
    blocks_written = {p // 512 for p in written}
    st = pt.stats()
    # exact: each block written into was split (its rest kept as read-only pages).
    assert st["leaves_by_level"] == {1: 0, 2: 32 - len(blocks_written),
                                     3: 512 * len(blocks_written)}
    assert st["table_pages"] == tables + len(blocks_written)
    for p in written:
        assert leaf(pt, GiB + p * 4 * KiB)[1] & S2AP_W
    bm = pt.get_dirty_log(slot, clear=False)
    assert pages_set(bm) == written
    assert np.array_equal(pt.get_dirty_log(slot, clear=False), bm)     # unchanged
    pt.tlbi_log()
    words_before = pt.pool.words.copy()
    harvested = pt.get_dirty_log(slot)
    assert np.array_equal(harvested, bm)
    # W cleared in the descriptors of exactly the written pages, nothing else touched.
    words_after = pt.pool.words.copy()
    changed = np.flatnonzero(words_before != words_after)
    assert set(changed.tolist()) == {desc_index(pt, GiB + p * 4 * KiB) for p in written}
    assert ((words_before[changed] ^ words_after[changed]) == S2AP_W).all()
    assert events(pt) == [wp_event(GiB, 64 * MiB)]
    assert not pt.get_dirty_log(slot).any()
    assert events(pt) == []                        # nothing harvested: no flush
    # Round 2 sees only its own writes.
    round2 = [int(p) for p in rng.integers(0, 16384, 100)] + [5]
    write_pages(pt, round2)
    assert pages_set(pt.get_dirty_log(slot)) == set(round2)
    pt.check()


def test_dirty_logging_with_eager_split():
    pt = vm(pages=64)
    slot = faulted_in_slot(pt)
    pt.set_log_dirty(slot, True, eager_split=True)
    st = pt.stats()
    assert st["table_pages"] == 2 + 1 + 32
    assert st["leaves_by_level"] == {1: 0, 2: 0, 3: 16384}
    for i in range(32):
        table = pt.pool.page_words(pt.walk(GiB + i * 2 * MiB)[-1].table_pa)
        expect = [expected_leaf(PA + i * 2 * MiB + j * 4 * KiB, 3, Prot.R) for j in range(512)]
        assert table.tolist() == expect
    assert events(pt) == ([(s2pt.TLBI_IPA, GiB + i * 2 * MiB, 2 * MiB, 2, s2pt.TLBI_SPLIT, 1)
                           for i in range(32)] + [wp_event(GiB, 64 * MiB)])
    # Enabling again is a no-op, eager split or not.
    snap = snapshot(pt)
    pt.set_log_dirty(slot, True, eager_split=True)
    pt.set_log_dirty(slot, True)
    same(snap, snapshot(pt))
    pages = [0, 1, 511, 512, 9000, 16383, 1]
    write_pages(pt, pages)
    assert pt.table_pages == 2 + 1 + 32                    # no more splits
    assert events(pt) == [(s2pt.TLBI_IPA, GiB + p * 4 * KiB, 4 * KiB, 3, s2pt.TLBI_PERM, 0)
                          for p in pages[:-1]]
    assert pages_set(pt.get_dirty_log(slot)) == set(pages)
    pt.check()


def test_eager_split_pool_exhausted_changes_nothing():
    pt = vm(pages=2 + 1 + 31)                  # the split needs 32 level-3 tables
    slot = faulted_in_slot(pt)
    snap = snapshot(pt)
    with pytest.raises(PoolExhaustedError):
        pt.set_log_dirty(slot, True, eager_split=True)
    same(snap, snapshot(pt))
    assert not pt.memslots()[0].log_dirty
    with pytest.raises(InvalidArgumentError):
        pt.get_dirty_log(slot)
    assert pt.fault(GiB, Access.WRITE) == FO.HIT           # still writable blocks
    pt.set_log_dirty(slot, True)                           # without the split: fine
    assert pt.memslots()[0].log_dirty


def test_clear_dirty_log_chosen_mask():
    pt = vm()
    slot = faulted_in_slot(pt)
    pt.set_log_dirty(slot, True, eager_split=True)
    dirty = [0, 1, 5, 63, 64, 70, 100, 200]
    write_pages(pt, dirty)
    pt.tlbi_log()

    def writable(p):
        return bool(leaf(pt, GiB + p * 4 * KiB)[1] & S2AP_W)

    assert all(writable(p) for p in dirty)
    pt.clear_dirty_log(slot, 0, (1 << 1) | (1 << 63))
    assert pages_set(pt.get_dirty_log(slot, clear=False)) == set(dirty) - {1, 63}
    # KVM write-protects the span from the lowest to the highest bit cleared (1..63):
    # page 5 (still dirty) loses W too, page 0 keeps it.
    assert [p for p in dirty if writable(p)] == [0, 64, 70, 100, 200]
    assert events(pt) == [wp_event(GiB, 64 * MiB)]
    pt.clear_dirty_log(slot, 64, np.array([(1 << 0) | (1 << 6), 0], dtype=np.uint64))
    assert pages_set(pt.get_dirty_log(slot, clear=False)) == {0, 5, 100, 200}
    assert [p for p in dirty if writable(p)] == [0, 100, 200]
    assert events(pt) == [wp_event(GiB, 64 * MiB)]
    # Bits that are not dirty: nothing cleared, nothing protected, no flush.
    snap = snapshot(pt)
    pt.clear_dirty_log(slot, 0, 1 << 2)
    pt.clear_dirty_log(slot, 128, [0, 0])
    pt.clear_dirty_log(slot, 0, 0)
    same(snap, snapshot(pt))
    # A still-dirty page that lost W faults again and stays dirty once.
    assert pt.fault(GiB + 5 * 4 * KiB, Access.WRITE) == FO.DIRTY
    assert pages_set(pt.get_dirty_log(slot)) == {0, 5, 100, 200}
    assert [p for p in dirty if writable(p)] == []


def test_disable_logging_then_write_coalesces_to_a_block():
    pt = vm()
    slot = faulted_in_slot(pt)
    pt.set_log_dirty(slot, True)
    write_pages(pt, [3, 700])           # splits blocks 0 and 1 into read-only pages
    tables = pt.table_pages
    pt.tlbi_log()
    snap = snapshot(pt)
    pt.set_log_dirty(slot, False)
    assert not pt.memslots()[0].log_dirty
    now = snapshot(pt)
    keep = (0, 1, 3, 4, 5, 6)                        # all but the memslots and the log
    same([snap[i] for i in keep], [now[i] for i in keep])   # tables untouched, no events
    with pytest.raises(InvalidArgumentError):
        pt.get_dirty_log(slot)
    # A write to a read-only page of a 2 MiB-backed slot: the handler maps 2 MiB again.
    assert pt.fault(GiB + 4 * 4 * KiB, Access.WRITE) == FO.MAPPED
    assert leaf(pt, GiB) == (2, expected_leaf(PA, 2, Prot.RW))
    assert pt.table_pages == tables - 1
    assert events(pt) == [(s2pt.TLBI_RANGE, GiB, 2 * MiB, U, s2pt.TLBI_COALESCE, 1)]
    # A page written while logging is writable: no fault, it stays a page.
    assert pt.fault(GiB + 700 * 4 * KiB, Access.WRITE) == FO.HIT
    # A read-only block never split: same size, relaxed in place.
    assert pt.fault(GiB + 10 * MiB, Access.WRITE) == FO.RELAXED
    assert leaf(pt, GiB + 10 * MiB) == (2, expected_leaf(PA + 10 * MiB, 2, Prot.RW))
    # Logging again starts from a clear bitmap.
    pt.set_log_dirty(slot, True)
    assert not pt.get_dirty_log(slot).any()
    pt.check()


def test_enable_logging_write_protects_whole_leaves_even_across_the_slot_edge():
    """kvm_mmu_wp_memory_region -> stage2_wp_range -> kvm_pgtable_stage2_wrprotect: whole
    leaves, never a split (README "Dirty logging"), in both semantics: a block of the user's
    crossing the slot's edge loses W outside the slot too. (The design doc's section 3 says
    "wrprotect with the VM's semantics" with edge SPLIT events in exact mode; the README, the
    header and KVM say whole leaves. Reported as a documentation conflict.)"""
    for semantics in ("exact", "kvm"):
        pt = vm(pages=3, semantics=semantics)    # no page to spare: nothing may be split
        pt.map(GiB, PA, 2 * MiB)                 # the user's block, half in the slot
        slot = pt.add_memslot(GiB + MiB, PA + MiB, 4 * MiB)
        pt.tlbi_log()
        pt.set_log_dirty(slot, True)
        assert leaf(pt, GiB) == (2, expected_leaf(PA, 2, Prot.R))
        assert events(pt) == [wp_event(GiB + MiB, 4 * MiB)]


def test_wrprotect_flush_is_vmid_without_tlbi_range():
    pt = vm(tlbi_range=False)
    slot = faulted_in_slot(pt)
    pt.set_log_dirty(slot, True)
    vmid_wp = (s2pt.TLBI_VMID, 0, 0, U, s2pt.TLBI_WRPROTECT, 0)
    assert events(pt) == [vmid_wp]
    write_pages(pt, [7])
    pt.tlbi_log()
    pt.get_dirty_log(slot)
    assert events(pt) == [vmid_wp]
    write_pages(pt, [7])
    pt.tlbi_log()
    pt.clear_dirty_log(slot, 0, 1 << 7)
    assert events(pt) == [vmid_wp]


def test_logging_an_empty_slot_records_nothing():
    pt = vm()
    a = pt.add_memslot(GiB, PA, 400 * KiB, log_dirty=True)       # 100 pages
    b = pt.add_memslot(2 * GiB, PA, 4 * MiB)
    assert pt.memslots()[0].log_dirty and not pt.memslots()[1].log_dirty
    pt.set_log_dirty(b, True, eager_split=True)
    assert events(pt) == [] and list(pt.mappings()) == []
    assert pt.get_dirty_log(a).tolist() == [0, 0]                 # ceil(100 / 64) words
    assert pt.fault(GiB + 99 * 4 * KiB, Access.WRITE) == FO.MAPPED
    bm = pt.get_dirty_log(a, clear=False)
    assert bm.tolist() == [0, 1 << 35]
    assert pt.get_dirty_log(a).tolist() == [0, 1 << 35]
    assert pt.get_dirty_log(a).tolist() == [0, 0]


# ---- memslots ---------------------------------------------------------------------------------

def test_delete_memslot_unmaps_and_frees_to_the_roots():
    pt = vm()
    slot = pt.add_memslot(GiB, PA, 64 * MiB, backing=2 * MiB)
    ipas = np.array([GiB + 3 * MiB, GiB + 40 * MiB + 5 * KiB], dtype=np.uint64)
    pt.access_many(ipas, Access.READ)
    pt.set_log_dirty(slot, True)
    pt.access_many(np.array([GiB + 10 * MiB, GiB + 50 * MiB + 8 * KiB], dtype=np.uint64),
                   Access.WRITE)
    leaves = list(pt.mappings())
    assert pt.table_pages > pt.root_tables
    pt.tlbi_log()
    pt.delete_memslot(slot)
    assert list(pt.mappings()) == [] and pt.memslots() == []
    assert pt.table_pages == pt.root_tables == pt.pool.used
    ev = events(pt)
    unmapped = [(e[1], e[3]) for e in ev if e[4] == s2pt.TLBI_UNMAP]
    assert unmapped == [(m.ipa, m.level) for m in leaves]
    with pytest.raises(InvalidArgumentError):
        pt.delete_memslot(slot)
    # The id is free again: the lowest one is handed out.
    assert pt.add_memslot(GiB, PA, 4 * KiB) == slot
    pt.check()


def test_delete_memslot_keeps_mappings_outside_and_ids_are_lowest_free():
    pt = vm()
    ids = [pt.add_memslot(GiB * (i + 1), PA, 4 * MiB) for i in range(4)]
    assert ids == [0, 1, 2, 3]
    pt.map(10 * GiB, PA, 2 * MiB)
    for i in ids:
        pt.fault(GiB * (i + 1), Access.READ)
    pt.delete_memslot(1)
    pt.delete_memslot(2)
    assert [s.id for s in pt.memslots()] == [0, 3]
    assert pt.add_memslot(20 * GiB, PA, 4 * KiB) == 1
    assert [s.ipa for s in pt.memslots()] == [GiB, 4 * GiB, 20 * GiB]     # sorted by IPA
    assert pt.translate(10 * GiB).pa == PA
    assert pt.lookup(2 * GiB) is None and pt.lookup(GiB) is not None


def test_delete_memslot_pool_exhausted_changes_nothing():
    """Exact semantics: a block of the user's crossing the slot's edge must be split to
    unmap only the slot's part, and the pool has no page for it."""
    pt = vm(pages=3)
    pt.map(GiB, PA, 2 * MiB)
    slot = pt.add_memslot(GiB + MiB, PA, 2 * MiB)
    snap = snapshot(pt)
    with pytest.raises(PoolExhaustedError):
        pt.delete_memslot(slot)
    same(snap, snapshot(pt))
    # kvm semantics remove the whole block and need no page.
    k = vm(pages=3, semantics="kvm")
    k.map(GiB, PA, 2 * MiB)
    slot = k.add_memslot(GiB + MiB, PA, 2 * MiB)
    k.delete_memslot(slot)
    assert list(k.mappings()) == [] and k.memslots() == []


# ---- access_many ------------------------------------------------------------------------------

EXITS = (FO.MMIO, FO.PERMISSION, FO.ABORT)


def oracle_access(pt, ipa, access):
    """One guest access as a loop of translate() and fault(): the design's access_many."""
    last = FO.HIT
    for runs in range(5):
        try:
            return pt.translate(ipa, access).pa, last
        except s2pt.Stage2Fault:
            pass
        if runs == 4:
            return 0, last
        last = pt.fault(ipa, access)
        assert last != FO.HIT
        if last in EXITS:
            return 0, last


def build_guest(semantics):
    pt = vm(pages=512, semantics=semantics)
    pt.add_memslot(GiB, PA, 16 * MiB, backing=2 * MiB)
    pt.add_memslot(GiB + 16 * MiB, PA + 64 * MiB, MiB, readonly=True)
    pt.add_memslot(2 * GiB, PA + 128 * MiB, 8 * MiB, backing=2 * MiB, log_dirty=True)
    pt.add_memslot(3 * GiB + 4 * KiB, PA + 4 * KiB, 4 * MiB, backing=2 * MiB)
    pt.set_owner(GiB + 16 * MiB + 64 * KiB, 8 * KiB, 3)   # in the 4K-backed slot
    return pt


@pytest.mark.parametrize("semantics", ["exact", "kvm"])
def test_access_many_agrees_with_fault_and_translate(semantics):
    a, b = build_guest(semantics), build_guest(semantics)
    rng = np.random.default_rng(7)
    regions = [(GiB, 17 * MiB), (2 * GiB, 8 * MiB), (3 * GiB, 5 * MiB), (GiB - MiB, MiB),
               ((1 << 40) - 8 * KiB, 16 * KiB)]
    plan = [Access.READ, Access.WRITE, Access.EXEC, Access.WRITE, "age", Access.READ,
            Access.EXEC_EL0, "harvest", Access.WRITE, "nolog", Access.WRITE, Access.READ]
    for step in plan:
        if step == "age":
            for pt in (a, b):
                pt.test_clear_young(GiB, 4 * MiB)
                pt.test_clear_young(2 * GiB, 8 * MiB)
            continue
        if step == "harvest":
            assert np.array_equal(a.get_dirty_log(2), b.get_dirty_log(2))
            continue
        if step == "nolog":
            a.set_log_dirty(2, False)
            b.set_log_dirty(2, False)
            continue
        chunks = []
        for base, size in regions:
            n = 150
            offs = rng.integers(0, size // 8, n).astype(np.uint64) * np.uint64(8)
            chunks.append(np.uint64(base) + offs)
        ipas = np.concatenate(chunks)
        rng.shuffle(ipas)
        # repeats, and the annotated page (PERMISSION) every time
        ipas = np.concatenate([ipas, ipas[:50], np.array([GiB + 16 * MiB + 64 * KiB], dtype=np.uint64)])
        pa, oc = a.access_many(ipas, step)
        expect = [oracle_access(b, int(i), step) for i in ipas]
        assert pa.tolist() == [e[0] for e in expect]
        assert oc.tolist() == [int(e[1]) for e in expect]
        assert list(a.mappings()) == list(b.mappings())
        assert [tuple(x) for x in a.tlbi_log()] == [tuple(x) for x in b.tlbi_log()]
    ca, cb = a.fault_counts(), b.fault_counts()
    assert {k: v for k, v in ca.items() if k != FO.HIT} == {
        k: v for k, v in cb.items() if k != FO.HIT}
    assert cb[FO.HIT] == 0
    assert all(ca[k] > 0 for k in (FO.MAPPED, FO.DIRTY, FO.RELAXED, FO.YOUNG, FO.MMIO,  # noqa
                                   FO.PERMISSION, FO.ABORT, FO.HIT)), str(sorted((int(k), v) for k, v in ca.items()))
    assert a.memslots() == b.memslots()
    a.check()


def test_access_many_pool_exhausted_stops_at_the_element():
    pt = vm(pages=2 + 1 + 2)
    pt.add_memslot(GiB, PA, 64 * MiB)
    ipas = np.array([GiB, GiB + 4 * KiB, GiB + 2 * MiB, GiB + 4 * MiB, GiB + 8 * KiB],
                    dtype=np.uint64)
    with pytest.raises(PoolExhaustedError) as info:
        pt.access_many(ipas, Access.READ)
    assert info.value.index == 3                     # the third level-3 table did not fit
    assert [m.ipa for m in pt.mappings()] == [GiB, GiB + 4 * KiB, GiB + 2 * MiB]
    pt.check()


def test_fault_counts():
    pt = vm()
    counts = pt.fault_counts()
    assert counts == {o: 0 for o in FO} and list(counts) == list(FO)
    slot = pt.add_memslot(GiB, PA, 4 * MiB, log_dirty=True)
    pt.add_memslot(2 * GiB, PA, 4 * MiB, readonly=True)
    pt.set_owner(GiB + 3 * MiB, 4 * KiB, 1)
    assert pt.fault(GiB, Access.READ) == FO.MAPPED
    assert pt.fault(GiB, Access.READ) == FO.HIT
    assert pt.fault(GiB, Access.WRITE) == FO.DIRTY
    assert pt.fault(GiB, Access.EXEC) == FO.RELAXED
    pt.test_clear_young(GiB, 4 * KiB)
    assert pt.fault(GiB, Access.READ) == FO.YOUNG
    assert pt.fault(2 * GiB, Access.WRITE) == FO.MMIO
    assert pt.fault(5 * GiB, Access.EXEC) == FO.ABORT
    assert pt.fault(GiB + 3 * MiB, Access.READ) == FO.PERMISSION
    pa, oc = pt.access_many(np.full(10, GiB, dtype=np.uint64), Access.READ)
    assert (oc == FO.HIT).all()
    expect = {o: 0 for o in FO}
    expect.update({FO.MAPPED: 1, FO.HIT: 11, FO.DIRTY: 1, FO.RELAXED: 1, FO.YOUNG: 1,
                   FO.MMIO: 1, FO.ABORT: 1, FO.PERMISSION: 1})
    assert pt.fault_counts() == expect
    assert pt.fault_counts(clear=True) == expect
    assert pt.fault_counts() == {o: 0 for o in FO}
    assert pages_set(pt.get_dirty_log(slot)) == {0}


# ---- bad input ---------------------------------------------------------------------------------

def guest_for_errors(granule=4096, ipa_bits=40):
    pt = vm(granule, ipa_bits, pages=64)
    g = granule
    pt.add_memslot(GiB, PA, 16 * MiB, backing=block2(granule) if granule == 4096 else g)
    pt.add_memslot(2 * GiB, PA, 100 * g, log_dirty=True)       # 100 pages: 2 words
    pt.add_memslot(3 * GiB, PA, 4 * MiB, readonly=True)
    pt.fault(GiB, Access.READ)
    pt.fault(2 * GiB + 3 * g, Access.WRITE)
    pt.fault(3 * GiB, Access.READ)
    pt.tlbi_log()
    return pt


def bad_calls(g):
    top = 1 << 40
    return [
        # overlap (KVM -EEXIST)
        (RangeError, lambda pt: pt.add_memslot(GiB + 8 * MiB, PA, 16 * MiB)),
        (RangeError, lambda pt: pt.add_memslot(GiB - g, PA, 2 * g)),
        (RangeError, lambda pt: pt.add_memslot(GiB - g, PA, 32 * MiB)),
        (RangeError, lambda pt: pt.add_memslot(GiB + 16 * MiB - g, PA, g)),
        # alignment
        (AlignmentError, lambda pt: pt.add_memslot(5 * GiB + 8, PA, g)),
        (AlignmentError, lambda pt: pt.add_memslot(5 * GiB, PA + 8, g)),
        (AlignmentError, lambda pt: pt.add_memslot(5 * GiB, PA, g + 8)),
        (InvalidArgumentError, lambda pt: pt.add_memslot(5 * GiB, PA, 0)),
        # outside the IPA / PA spaces, wrap
        (RangeError, lambda pt: pt.add_memslot(top - g, PA, 2 * g)),
        (RangeError, lambda pt: pt.add_memslot(top, PA, g)),
        (RangeError, lambda pt: pt.add_memslot(2**64 - g, PA, 2 * g)),
        (RangeError, lambda pt: pt.add_memslot(5 * GiB, (1 << 48) - g, 2 * g)),
        (RangeError, lambda pt: pt.add_memslot(5 * GiB, 2**64 - g, 2 * g)),
        (RangeError, lambda pt: pt.add_memslot(2**64, PA, g)),
        (RangeError, lambda pt: pt.add_memslot(-g, PA, g)),
        # backing must be a leaf size of the VM
        (InvalidArgumentError, lambda pt: pt.add_memslot(5 * GiB, PA, 4 * MiB, backing=2 * g)),
        (InvalidArgumentError, lambda pt: pt.add_memslot(5 * GiB, PA, 4 * MiB, backing=0)),
        (InvalidArgumentError, lambda pt: pt.add_memslot(5 * GiB, PA, 4 * MiB,
                                                         backing=3 * 2 * MiB)),
        (InvalidArgumentError, lambda pt: pt.add_memslot(5 * GiB, PA, 4 * MiB,
                                                         backing=512 * GiB)),
        (InvalidArgumentError, lambda pt: pt.add_memslot(5 * GiB, PA, 4 * MiB,
                                                         readonly=True, log_dirty=True)),
        # ids
        (InvalidArgumentError, lambda pt: pt.delete_memslot(99)),
        (InvalidArgumentError, lambda pt: pt.delete_memslot(-1)),
        (InvalidArgumentError, lambda pt: pt.set_log_dirty(99, True)),
        (InvalidArgumentError, lambda pt: pt.set_log_dirty(2, True)),      # read-only slot
        (InvalidArgumentError, lambda pt: pt.get_dirty_log(99)),
        (InvalidArgumentError, lambda pt: pt.get_dirty_log(0)),            # not logging
        (InvalidArgumentError, lambda pt: pt.get_dirty_log(2)),
        (InvalidArgumentError, lambda pt: pt.clear_dirty_log(99, 0, 1)),
        (InvalidArgumentError, lambda pt: pt.clear_dirty_log(0, 0, 1)),
        # clear_dirty_log arguments (slot 1: 100 pages)
        (InvalidArgumentError, lambda pt: pt.clear_dirty_log(1, 1, 1)),
        (InvalidArgumentError, lambda pt: pt.clear_dirty_log(1, 32, 1)),
        (RangeError, lambda pt: pt.clear_dirty_log(1, 128, 1)),
        (RangeError, lambda pt: pt.clear_dirty_log(1, 64 * 1000, 1)),
        (RangeError, lambda pt: pt.clear_dirty_log(1, 64, 1 << 36)),        # page 100
        (RangeError, lambda pt: pt.clear_dirty_log(1, 0, np.array([8, 1 << 36], np.uint64))),
        (RangeError, lambda pt: pt.clear_dirty_log(1, 0, np.array([8, 0, 1], np.uint64))),
        (RangeError, lambda pt: pt.clear_dirty_log(1, 0, 2**64)),
        (RangeError, lambda pt: pt.clear_dirty_log(1, 0, -1)),
        (ArrayError, lambda pt: pt.clear_dirty_log(1, 0, np.array([8], np.int64))),
        # fault / access_many arguments
        (InvalidArgumentError, lambda pt: pt.fault(GiB, 4)),
        (RangeError, lambda pt: pt.fault(2**64, Access.READ)),
        (InvalidArgumentError, lambda pt: pt.access_many(np.array([GiB], np.uint64), 4)),
        (ArrayError, lambda pt: pt.access_many(np.array([GiB], np.int64), Access.READ)),
        (ArrayError, lambda pt: pt.access_many([float(GiB)], Access.READ)),
    ]


def test_bad_input_raises_the_class_and_changes_nothing():
    pt = guest_for_errors()
    pt.fault_counts(clear=True)
    for exc, call in bad_calls(4096):
        snap = snapshot(pt)
        with pytest.raises(exc):
            call(pt)
        same(snap, snapshot(pt))
    assert pt.fault_counts() == {o: 0 for o in FO}
    # Adjacent slots do not overlap.
    pt.add_memslot(GiB + 16 * MiB, PA, 4 * KiB)
    pt.add_memslot(GiB - 4 * KiB, PA, 4 * KiB)
    pt.check()


@pytest.mark.parametrize("granule,ipa_bits", GEOM_PARAMS[1:])
def test_backing_sizes_of_large_granules(granule, ipa_bits):
    pt = vm(granule, ipa_bits, pages=8)
    bs = block2(granule)
    # Leaf sizes: the page and the level-2 block (level 1 needs LPA2 / a 52-bit PA).
    for bad in (4096, 2 * MiB if granule == 16384 else 32 * MiB, level_size(granule, 1),
                2 * granule, GiB):
        if bad in (granule, bs):
            continue
        with pytest.raises(InvalidArgumentError):
            pt.add_memslot(4 * bs, PA, 2 * bs, backing=bad)
        assert pt.memslots() == []
    with pytest.raises(AlignmentError):
        pt.add_memslot(4 * bs + 4096, PA, 2 * bs)
    assert pt.add_memslot(4 * bs, PA, 2 * bs, backing=bs) == 0


def test_destroyed_vm():
    pt = guest_for_errors()
    pt.destroy()
    calls = [
        lambda: pt.add_memslot(5 * GiB, PA, 4096),
        lambda: pt.delete_memslot(0),
        lambda: pt.memslots(),
        lambda: pt.set_log_dirty(0, True),
        lambda: pt.set_log_dirty(1, False),
        lambda: pt.get_dirty_log(1),
        lambda: pt.clear_dirty_log(1, 0, 1),
        lambda: pt.fault(GiB, Access.READ),
        lambda: pt.access_many(np.array([GiB], np.uint64), Access.READ),
        lambda: pt.access_many(np.array([], np.uint64), Access.READ),
        lambda: pt.fault_counts(),
    ]
    for call in calls:
        with pytest.raises(DestroyedError):
            call()


def test_add_memslot_logging_over_existing_mappings_write_protects_them():
    """kvm_mmu_slot_apply_flags() on a new slot with KVM_MEM_LOG_DIRTY_PAGES: what the range
    already maps is write-protected (kvm_mmu_wp_memory_region) and flushed once."""
    pt = vm()
    pt.map(GiB, PA, 2 * MiB)
    pt.map(GiB + 2 * MiB, PA, 4 * KiB, blocks=False)
    pt.tlbi_log()
    slot = pt.add_memslot(GiB, PA, 4 * MiB, log_dirty=True)
    assert leaf(pt, GiB) == (2, expected_leaf(PA, 2, Prot.R))
    assert leaf(pt, GiB + 2 * MiB) == (3, expected_leaf(PA, 3, Prot.R))
    assert events(pt) == [wp_event(GiB, 4 * MiB)]
    assert not pt.get_dirty_log(slot).any()
