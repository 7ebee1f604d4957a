"""map_many / unmap_many: elements apply in order, exactly as single calls would; a bad
element changes nothing; pool exhaustion stops at the element that needs the page."""

import numpy as np
import pytest

import s2pt
from s2pt import MemAttr, Prot

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def u64(values):
    return np.array(values, dtype=np.uint64)


def small(**kw):
    """A VM on a small pool, so that snapshots of the memory image are cheap."""
    return s2pt.Stage2(pool=s2pt.PagePool(256, granule=kw.get("granule", 4096)), **kw)


def image(pt):
    """Everything an observer can see: memory image, counts, mappings, events."""
    return (pt.pool.words.copy(), pt.pool.refcounts.copy(), pt.pool.used, pt.stats(),
            list(pt.mappings()), pt.tlbi_log(clear=False).tobytes())


def assert_same(a, b):
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert a[2:] == b[2:]


@pytest.mark.parametrize("granule", [4096, 16384, 65536])
def test_map_many_equals_single_calls_in_order(granule):
    rng = np.random.default_rng(granule)
    ipa_bits = 40
    pages = rng.choice(1 << 12, size=300, replace=True)  # repeats: later elements win
    ipas = u64(pages * granule)
    pas = u64((rng.integers(1 << 14, size=300) + (1 << 14)) * granule)
    sizes = u64(rng.integers(1, 4, size=300) * granule)
    batch = s2pt.Stage2(ipa_bits=ipa_bits, granule=granule)
    single = s2pt.Stage2(ipa_bits=ipa_bits, granule=granule)
    batch.map_many(ipas, pas, sizes, Prot.R, MemAttr.NORMAL_NC, af=False)
    for ipa, pa, size in zip(ipas.tolist(), pas.tolist(), sizes.tolist()):
        single.map(ipa, pa, size, Prot.R, MemAttr.NORMAL_NC, af=False)
    # Same tables, leaf for leaf; the pools are private, so compare through the walks.
    assert list(batch.mappings()) == list(single.mappings())
    assert batch.stats() == single.stats()
    batch.check()
    assert batch.unmap_many(ipas, sizes) == single.unmap(0, 1 << ipa_bits)
    assert batch.stats()["table_pages"] == batch.root_tables
    batch.check()


def test_map_many_blocks_and_broadcast_size():
    pt = small()
    pt.map_many(u64([0, 2 * MiB, 1 * GiB]), u64([4 * GiB, 6 * GiB, 8 * GiB]), 2 * MiB)
    leaves = list(pt.mappings())
    # 2 MiB at 2 MiB-aligned IPA and PA: level-2 blocks (4K granule).
    assert [(m.ipa, m.pa, m.level, m.size) for m in leaves] == [
        (0, 4 * GiB, 2, 2 * MiB), (2 * MiB, 6 * GiB, 2, 2 * MiB), (1 * GiB, 8 * GiB, 2, 2 * MiB)]
    # Roots (2) + one level-2 table per GiB touched (2); no level-3 table.
    assert pt.stats()["table_pages_by_level"] == {1: 2, 2: 2, 3: 0}
    pt.map_many(u64([0]), u64([4 * GiB]), 2 * MiB, blocks=False)
    assert pt.stats()["leaves_by_level"][3] == 512


def test_map_many_bad_element_changes_nothing():
    pt = small()
    pt.map(0, GiB, 4 * KiB)
    before = image(pt)
    cases = [
        (u64([4 * KiB, 8 * KiB + 1]), u64([GiB, GiB]), 4 * KiB, s2pt.AlignmentError, 1),
        (u64([4 * KiB, 1 << 40]), u64([GiB, GiB]), 4 * KiB, s2pt.RangeError, 1),
        (u64([4 * KiB, 8 * KiB]), u64([GiB, (1 << 48) - 4 * KiB]), 8 * KiB, s2pt.RangeError, 1),
        (u64([(1 << 40) - 4 * KiB]), u64([GiB]), 8 * KiB, s2pt.RangeError, 0),
    ]
    for ipas, pas, size, exc, index in cases:
        with pytest.raises(exc) as info:
            pt.map_many(ipas, pas, size)
        assert info.value.index == index
        assert f"element {index}" in str(info.value)
        assert_same(image(pt), before)
    with pytest.raises(s2pt.InvalidArgumentError):
        pt.map_many(u64([0]), u64([GiB]), 4 * KiB, Prot.X, MemAttr.DEVICE_nGnRE)
    assert_same(image(pt), before)


def test_map_many_pool_exhaustion_keeps_earlier_elements():
    pool = s2pt.PagePool(5)  # 4K/40: 2 root pages, then L2 + L3 per new GiB
    pt = s2pt.Stage2(pool=pool)
    with pytest.raises(s2pt.PoolExhaustedError) as info:
        pt.map_many(u64([0, GiB, 2 * GiB]), u64([GiB, GiB, GiB]), 4 * KiB)
    assert info.value.index == 1
    assert pool.used == 4
    assert pt.translate(0).pa == GiB
    with pytest.raises(s2pt.Stage2Fault) as fault:
        pt.translate(GiB)
    assert fault.value.kind == s2pt.FaultKind.TRANSLATION and fault.value.level == 1
    pt.check()


def test_unmap_many_totals_and_frees_tables():
    pt = small()
    pt.map(0, GiB, 4 * MiB, blocks=False)
    pt.map(GiB, 2 * GiB, 2 * MiB)
    # 8 KiB, a whole level-3 table's worth, the block, then 4 KiB already gone.
    total = pt.unmap_many(u64([0, 2 * MiB, GiB, 0]), u64([8 * KiB, 2 * MiB, 2 * MiB, 4 * KiB]))
    assert total == 8 * KiB + 2 * MiB + 2 * MiB
    # Left: pages [8 KiB, 2 MiB): roots + the GiB-0 level-2 table + one level-3 table.
    assert pt.stats()["table_pages_by_level"] == {1: 2, 2: 1, 3: 1}
    pt.check()


def test_unmap_many_bad_element_changes_nothing():
    pt = small()
    pt.map(0, GiB, 8 * KiB)
    before = image(pt)
    with pytest.raises(s2pt.RangeError) as info:
        pt.unmap_many(u64([0, (1 << 40) - 4 * KiB]), u64([4 * KiB, 8 * KiB]))
    assert info.value.index == 1
    assert_same(image(pt), before)


@pytest.mark.parametrize("call", [
    lambda pt: pt.map_many(np.array([0], dtype=np.int64), u64([0]), 4096),
    lambda pt: pt.map_many(u64([0, 4096]), u64([0]), 4096),
    lambda pt: pt.map_many(u64([0]), u64([0]), u64([4096, 4096])),
    lambda pt: pt.map_many(u64([0]), u64([0]), [4096.0]),
    lambda pt: pt.map_many([0.5], [0], 4096),
    lambda pt: pt.unmap_many(u64([0, 4096, 8192])[::2], 4096),
    lambda pt: pt.unmap_many(u64([0]), "4096"),
], ids=["int64", "length", "sizes-length", "float-sizes", "float-ipa", "strided", "str-size"])
def test_batch_argument_types(call):
    pt = small()
    pt.map(0, GiB, 4096)
    before = image(pt)
    with pytest.raises(s2pt.ArrayError):
        call(pt)
    assert_same(image(pt), before)


def test_empty_batches_and_destroyed():
    pt = small()
    pt.map_many(u64([]), u64([]), 4096)
    assert pt.unmap_many([], 4096) == 0
    pt.destroy()
    with pytest.raises(s2pt.DestroyedError):
        pt.map_many(u64([]), u64([]), 4096)
    with pytest.raises(s2pt.DestroyedError):
        pt.unmap_many(u64([0]), 4096)


def test_translate_many_into_caller_arrays():
    pt = small()
    pt.map(0, GiB, 8 * KiB, Prot.R)
    ipas = u64([0x10, 0x1008, 0x2000, 1 << 40])
    pa, fsc = np.full(4, 7, dtype=np.uint64), np.zeros(4, dtype=np.uint8)
    got = pt.translate_many(ipas, s2pt.Access.WRITE, out=(pa, fsc))
    assert got[0] is pa and got[1] is fsc
    # Read-only pages: permission faults at level 3 (0b0011LL); beyond the pages: translation
    # fault at level 3 (the table exists); beyond the IPA size: translation fault, level 0.
    assert fsc.tolist() == [0x0F, 0x0F, 0x07, 0x04] and pa.tolist() == [0, 0, 0, 0]
    pt.translate_many(ipas, out=(pa, fsc))
    assert pa.tolist()[:2] == [GiB + 0x10, GiB + 0x1008]
    assert fsc.tolist()[:2] == [s2pt.FSC_NONE] * 2


@pytest.mark.parametrize("out", [
    (np.zeros(4, dtype=np.int64), np.zeros(4, dtype=np.uint8)),
    (np.zeros(4, dtype=np.uint64), np.zeros(3, dtype=np.uint8)),
    (np.zeros(8, dtype=np.uint64)[::2], np.zeros(4, dtype=np.uint8)),
    (np.zeros(4, dtype=np.uint64),),
    None.__class__,
], ids=["dtype", "length", "strided", "one-array", "not-a-pair"])
def test_translate_many_out_checked(out):
    pt = small()
    with pytest.raises(s2pt.ArrayError):
        pt.translate_many(u64([0, 1, 2, 3]), out=out)
