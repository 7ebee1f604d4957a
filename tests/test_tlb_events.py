"""TLB-invalidation events against the sequences KVM issues (arch/arm64/kvm/hyp/pgtable.c,
mainline as of v6.16; facts only):

* unmap: per valid leaf, TLBI by IPA with the leaf level as TTL hint; a table that became empty
  is cleared after its children and invalidated by IPA with TTL unknown (``TLBI_TTL_UNKNOWN``).
  With FWB and FEAT_TLBIRANGE the leaf invalidations are deferred to one range invalidation of
  the whole request after the walk (``stage2_unmap_defer_tlb_flush``); tables are not deferred.
* map over a valid leaf (replace), and a block replaced by a table (split): break-before-make,
  TLBI by IPA with the old leaf's level, between the break and the make.
* map of a block over a table (coalesce): break the table, range TLBI of the block's span
  (``kvm_tlb_flush_vmid_range``; the whole VMID without FEAT_TLBIRANGE), make the block, free
  the detached subtree with no further TLBI.
* nothing for invalid entries, for identical remaps and for software-bit-only changes.

s2pt additions (KVM leaves these to its callers): protect logs IPA + level per changed leaf,
clearing AF logs IPA + level, destroy logs one VMID event.
"""

from __future__ import annotations

import numpy as np
import pytest

import s2pt
from s2pt import Prot

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
U = s2pt.TLBI_LEVEL_UNKNOWN


def log(pt):
    """(kind, ipa, size, level, reason, bbm) per event since the last call."""
    return [(int(e["kind"]), int(e["ipa"]), int(e["size"]), int(e["level"]), int(e["reason"]),
             int(e["bbm"])) for e in pt.tlbi_log()]


def ipa_ev(ipa, level, reason, size=None, bbm=0):
    size = {3: 4 * KiB, 2: 2 * MiB, 1: GiB}[level] if size is None else size
    return (s2pt.TLBI_IPA, ipa, size, level, reason, bbm)


def vm(**kw):
    return s2pt.Stage2(pool=s2pt.PagePool(256), **kw)


def test_dtype_matches_the_c_struct():
    assert s2pt.TLBI_DTYPE.itemsize == 32
    assert s2pt.TLBI_DTYPE.names == ("ipa", "size", "kind", "level", "reason", "bbm")


def test_unmap_leaves_then_emptied_tables_bottom_up():
    pt = vm()
    base = 3 * GiB + 4 * MiB                # one level-3 table and one level-2 table below it
    pt.map(base, 0x8000_0000, 3 * 4 * KiB, blocks=False)
    log(pt)
    assert pt.unmap(base, 3 * 4 * KiB) == 3 * 4 * KiB
    assert log(pt) == [
        ipa_ev(base, 3, s2pt.TLBI_UNMAP),
        ipa_ev(base + 4 * KiB, 3, s2pt.TLBI_UNMAP),
        ipa_ev(base + 8 * KiB, 3, s2pt.TLBI_UNMAP),
        (s2pt.TLBI_IPA, base, 2 * MiB, U, s2pt.TLBI_TABLE, 0),          # the level-3 table
        (s2pt.TLBI_IPA, 3 * GiB, GiB, U, s2pt.TLBI_TABLE, 0),           # the level-2 table
    ]
    assert pt.table_pages == pt.root_tables


def test_unmap_block_and_nothing():
    pt = vm()
    pt.map(2 * MiB, 0x8000_0000, 2 * MiB)
    log(pt)
    pt.unmap(0, 6 * MiB)
    assert log(pt) == [ipa_ev(2 * MiB, 2, s2pt.TLBI_UNMAP),
                       (s2pt.TLBI_IPA, 0, GiB, U, s2pt.TLBI_TABLE, 0)]
    pt.unmap(0, 6 * MiB)                     # nothing mapped: no event
    assert log(pt) == []


def test_unmap_deferred_to_one_range_with_fwb_and_tlbirange():
    pt = vm(fwb=True)
    base = 3 * GiB + 4 * MiB
    pt.map(base, 0x8000_0000, 3 * 4 * KiB, blocks=False)
    pt.map(base + 2 * MiB, 0x9000_0000, 2 * MiB)
    log(pt)
    pt.unmap(base - 4 * KiB, 4 * MiB + 4 * KiB)
    assert log(pt) == [
        (s2pt.TLBI_IPA, base, 2 * MiB, U, s2pt.TLBI_TABLE, 0),          # tables: not deferred
        (s2pt.TLBI_IPA, 3 * GiB, GiB, U, s2pt.TLBI_TABLE, 0),
        (s2pt.TLBI_RANGE, base - 4 * KiB, 4 * MiB + 4 * KiB, U, s2pt.TLBI_UNMAP, 0),  # request
    ]
    pt.unmap(base, 4 * MiB)                  # nothing valid removed: s2pt logs nothing
    assert log(pt) == []


@pytest.mark.parametrize("kw", [dict(), dict(fwb=True, tlbi_range=False), dict(tlbi_range=True)])
def test_unmap_per_leaf_keeps_tables_with_entries(kw):
    """Without both FWB and FEAT_TLBIRANGE nothing is deferred; a table that still holds an
    entry stays (no TABLE event)."""
    pt = vm(**kw)
    pt.map(0, 0x8000_0000, 2 * 4 * KiB, blocks=False)
    log(pt)
    pt.unmap(0, 4 * KiB)
    assert log(pt) == [ipa_ev(0, 3, s2pt.TLBI_UNMAP)]


def test_replace_is_break_before_make_and_only_for_valid_changes():
    pt = vm()
    pt.map(0, 0x8000_0000, 4 * KiB)
    pt.map(2 * MiB, 0x4000_0000, 2 * MiB)
    log(pt)
    pt.map(0, 0x8000_0000, 4 * KiB)                       # identical
    pt.map(0, 0x8000_0000, 4 * KiB, sw=7)                 # software bits only
    pt.map(4 * KiB, 0x8000_1000, 4 * KiB)                 # over an invalid entry
    assert log(pt) == []
    pt.map(0, 0x9000_0000, 4 * KiB)                       # new output address
    pt.map(2 * MiB, 0x4000_0000, 2 * MiB, Prot.RW, s2pt.MemAttr.NORMAL_NC)   # new attributes
    pt.map(4 * KiB, 0x8000_1000, 4 * KiB, af=False)       # AF cleared by a map
    assert log(pt) == [ipa_ev(0, 3, s2pt.TLBI_REPLACE, bbm=1),
                       ipa_ev(2 * MiB, 2, s2pt.TLBI_REPLACE, bbm=1),
                       ipa_ev(4 * KiB, 3, s2pt.TLBI_REPLACE, bbm=1)]


def test_split_then_replace_like_kvm_eager_split():
    """s2pt keeps the rest of a split block, as KVM's eager split (kvm_pgtable_stage2_split)
    does: the block is broken and invalidated (IPA, block level), the populated table made;
    the page then mapped over its copy in the new table is a replace of a valid leaf."""
    pt = vm()
    pt.map(2 * MiB, 0x4000_0000, 2 * MiB)
    log(pt)
    pt.map(2 * MiB + 8 * KiB, 0x9000_0000, 4 * KiB)       # one page inside the block
    assert log(pt) == [ipa_ev(2 * MiB, 2, s2pt.TLBI_SPLIT, bbm=1),
                       ipa_ev(2 * MiB + 8 * KiB, 3, s2pt.TLBI_REPLACE, bbm=1)]
    pt.map(GiB, 0x4000_0000, GiB)
    log(pt)
    pt.unmap(GiB + 4 * KiB, 4 * KiB)                      # unmap splits 1 GiB -> 2 MiB -> 4K
    assert log(pt) == [ipa_ev(GiB, 1, s2pt.TLBI_SPLIT, bbm=1),
                       ipa_ev(GiB, 2, s2pt.TLBI_SPLIT, bbm=1),
                       ipa_ev(GiB + 4 * KiB, 3, s2pt.TLBI_UNMAP)]
    t = pt.translate(GiB + 8 * KiB)
    assert t.pa == 0x4000_0000 + 8 * KiB and t.level == 3


@pytest.mark.parametrize("tlbi_range", [True, False])
def test_coalesce_is_one_range_or_vmid_event(tlbi_range):
    pt = vm(tlbi_range=tlbi_range)
    pt.map(4 * MiB, 0x4000_0000, 2 * MiB, blocks=False)   # 512 pages in one table
    log(pt)
    pt.map(4 * MiB, 0x8000_0000, 2 * MiB)                 # one block over that table
    if tlbi_range:
        want = [(s2pt.TLBI_RANGE, 4 * MiB, 2 * MiB, U, s2pt.TLBI_COALESCE, 1)]
    else:
        want = [(s2pt.TLBI_VMID, 0, 0, U, s2pt.TLBI_COALESCE, 1)]
    assert log(pt) == want
    assert pt.lookup(4 * MiB).level == 2


def test_protect_af_destroy_and_overflow():
    pt = vm()
    pt.map(0, 0x8000_0000, 2 * 4 * KiB, Prot.RW, blocks=False)
    log(pt)
    pt.protect(0, 2 * 4 * KiB, Prot.RW)                   # unchanged: nothing
    pt.protect(0, 4 * KiB, Prot.R)
    assert log(pt) == [ipa_ev(0, 3, s2pt.TLBI_PERM)]
    pt.set_access_flag(0, 2 * 4 * KiB, False)
    pt.set_access_flag(0, 2 * 4 * KiB, True)              # setting AF: nothing
    assert log(pt) == [ipa_ev(0, 3, s2pt.TLBI_AF), ipa_ev(4 * KiB, 3, s2pt.TLBI_AF)]
    pt.destroy()
    assert log(pt) == [(s2pt.TLBI_VMID, 0, 0, U, s2pt.TLBI_DESTROY, 0)]
    small = s2pt.Stage2(pool=s2pt.PagePool(16), tlbi_capacity=2)
    small.map(0, 0x8000_0000, 4 * 4 * KiB, blocks=False)
    small.unmap(0, 4 * 4 * KiB)
    assert log(small) == [(s2pt.TLBI_VMID, 0, 0, U, s2pt.TLBI_OVERFLOW, 0)]


def test_events_of_a_mixed_sequence_are_in_order():
    pt = vm()
    pt.map(0, 0x4000_0000, 4 * MiB)                       # two 2 MiB blocks
    log(pt)
    pt.map(2 * MiB - 4 * KiB, 0x9000_0000, 8 * KiB)       # straddles both: two splits
    ev = log(pt)
    assert ev == [ipa_ev(0, 2, s2pt.TLBI_SPLIT, bbm=1),
                  ipa_ev(2 * MiB - 4 * KiB, 3, s2pt.TLBI_REPLACE, bbm=1),
                  ipa_ev(2 * MiB, 2, s2pt.TLBI_SPLIT, bbm=1),
                  ipa_ev(2 * MiB, 3, s2pt.TLBI_REPLACE, bbm=1)]
    np.testing.assert_array_equal(
        [pt.translate(a).pa for a in (2 * MiB - 8 * KiB, 2 * MiB - 4 * KiB, 2 * MiB + 4 * KiB)],
        [0x4000_0000 + 2 * MiB - 8 * KiB, 0x9000_0000, 0x4000_0000 + 2 * MiB + 4 * KiB])
