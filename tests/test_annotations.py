"""Invalid-but-annotated entries (KVM's set_owner): an owner id in bits 9:2 of an invalid
descriptor. Hardware ignores invalid entries (bit 0 clear), so they translate to a translation
fault; KVM counts every non-zero entry in its table's reference count (stage2_pte_is_counted),
so an annotation keeps its table alive until it is cleared."""

from __future__ import annotations

import pytest

import s2pt
from s2pt import FaultKind, Prot
from s2pt.model import ReferenceStage2

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def vm():
    return s2pt.Stage2(pool=s2pt.PagePool(64))


def events(pt):
    return [(int(e["kind"]), int(e["ipa"]), int(e["level"]), int(e["reason"]))
            for e in pt.tlbi_log()]


@pytest.mark.parametrize("owner", [1, 0x5A, 255])
def test_owner_bits_fault_and_refcount(owner):
    pt = vm()
    pt.set_owner(0x20_3000, 4 * KiB, owner)
    steps = pt.walk(0x20_3008)
    desc = steps[-1].desc
    assert steps[-1].level == 3
    assert desc == owner << 2 and desc & 1 == 0                  # invalid, id in bits 9:2
    assert pt.owner(0x20_3008) == owner and pt.owner(0x20_4000) == 0
    with pytest.raises(s2pt.Stage2Fault) as info:
        pt.translate(0x20_3008)
    assert (info.value.kind, info.value.level, info.value.fsc) == (FaultKind.TRANSLATION, 3, 0b111)
    assert pt.lookup(0x20_3008) is None and list(pt.mappings()) == []
    table = steps[-1].table_pa
    assert pt.pool.refcount(table) == 2                          # 1 + the annotation
    pt.map(0x20_4000, 0x8000_0000, 4 * KiB)
    assert pt.pool.refcount(table) == 3
    pt.unmap(0x20_4000, 4 * KiB)                                 # the annotation keeps it
    assert pt.pool.refcount(table) == 2 and pt.table_pages == 4
    assert pt.stats()["annotated_bytes"] == 4 * KiB
    pt.check()
    assert pt.unmap(0x20_0000, 2 * MiB) == 0                     # clears it: never mapped
    assert pt.table_pages == pt.root_tables and pt.owner(0x20_3008) == 0
    pt.check()


def test_pages_only_like_kvm_force_pte():
    """KVM's set_owner maps with force_pte: one level-3 entry per page, even for a range that
    covers whole blocks; a valid block covered in part is split and the rest stays mapped."""
    pt = vm()
    pt.map(GiB, 0x4000_0000, 2 * MiB)                            # a valid 2 MiB block
    pt.set_owner(GiB + 4 * KiB, 2 * MiB, 3)                      # half in it, half beyond
    for ipa in (GiB + 4 * KiB, GiB + 2 * MiB, GiB + 2 * MiB + 4 * KiB - 8):
        steps = pt.walk(ipa)
        assert [s.level for s in steps] == [1, 2, 3] and steps[-1].desc == 3 << 2
    assert pt.translate(GiB + 8).pa == 0x4000_0008              # the rest of the block
    assert pt.stats()["annotated_bytes"] == 2 * MiB
    assert pt.stats()["leaves_by_level"] == {1: 0, 2: 0, 3: 1}
    pt.unmap(GiB + 8 * KiB, 4 * KiB)
    assert pt.owner(GiB + 4 * KiB) == 3 and pt.owner(GiB + 8 * KiB) == 0
    assert pt.stats()["annotated_bytes"] == 2 * MiB - 4 * KiB
    pt.check()


def test_set_owner_over_mappings_and_map_over_annotations():
    pt = vm()
    pt.map(0, 0x4000_0000, 2 * MiB)                              # a block
    pt.map(2 * MiB, 0x8000_0000, 4 * KiB)                        # a page
    events(pt)
    pt.set_owner(0, 2 * MiB + 4 * KiB, 9)
    # KVM (force_pte) breaks the block into a table (IPA + block level), and removes the page
    assert events(pt) == [(s2pt.TLBI_IPA, 0, 2, s2pt.TLBI_SPLIT),
                          (s2pt.TLBI_IPA, 2 * MiB, 3, s2pt.TLBI_UNMAP)]
    assert pt.walk(0)[-1].desc == 9 << 2 and pt.owner(2 * MiB) == 9
    pt.set_owner(0, 2 * MiB + 4 * KiB, 9)                        # identical: nothing at all
    assert events(pt) == []
    pt.map(4 * KiB, 0x9000_0000, 4 * KiB)                        # over one annotated page
    assert events(pt) == []
    assert pt.owner(0) == 9 and pt.translate(4 * KiB).pa == 0x9000_0000
    pt.protect(0, 4 * MiB, Prot.R)                               # annotations are not leaves
    pt.set_access_flag(0, 4 * MiB, False)
    assert pt.owner(8 * KiB) == 9 and pt.walk(8 * KiB)[-1].desc == 9 << 2
    pt.check()


@pytest.mark.parametrize("owner", [0, 256, -1])
def test_bad_owner_changes_nothing(owner):
    pt = vm()
    pt.map(0, 0x4000_0000, 4 * KiB)
    before = pt.pool.words.copy()
    with pytest.raises((s2pt.InvalidArgumentError, s2pt.RangeError)):
        pt.set_owner(0, 4 * KiB, owner)
    with pytest.raises(s2pt.AlignmentError):
        pt.set_owner(1, 4 * KiB, 1)
    with pytest.raises(s2pt.RangeError):
        pt.set_owner(1 << 40, 4 * KiB, 1)
    assert (pt.pool.words == before).all()


def test_set_owner_is_atomic_on_pool_exhaustion():
    pool = s2pt.PagePool(3)
    pt = s2pt.Stage2(pool=pool)                                  # 2 root pages, 1 free
    before = pool.words.copy()
    with pytest.raises(s2pt.PoolExhaustedError):
        pt.set_owner(4 * KiB, 4 * KiB, 1)                        # needs a level-2 and a level-3
    assert (pool.words == before).all() and pool.used == 2
    exact = s2pt.Stage2(pool=s2pt.PagePool(4))                   # 2 roots + exactly 2 tables
    exact.set_owner(4 * KiB, 4 * KiB, 1)
    assert exact.pool.used == 4 and exact.owner(4 * KiB) == 1


def test_model_agrees_on_a_sequence():
    ops = [("map", 0, 0x4000_0000, 4 * MiB), ("set_owner", 2 * MiB - 8 * KiB, 16 * KiB, 4),
           ("set_owner", GiB, 4 * MiB, 5), ("unmap", GiB + 2 * MiB, 4 * KiB),
           ("map", GiB + 4 * MiB, 0x8000_0000, 2 * MiB), ("set_owner", 0, 8 * KiB, 6),
           ("unmap", 0, 4 * MiB)]
    pt, m = vm(), ReferenceStage2()
    for name, *args in ops:
        assert getattr(pt, name)(*args) == getattr(m, name)(*args)
        assert pt.stats()["annotated_bytes"] == m.stats()["annotated_bytes"]
        assert pt.table_pages == m.table_pages
        assert list(pt.mappings()) == list(m.mappings())
        for ipa in range(0, 2 * GiB, 2 * MiB - 4 * KiB):
            assert pt.owner(ipa) == m.owner(ipa)
        pt.check()
