"""Bad input: every call raises its specific error class and changes nothing.

Each failing call is bracketed by a snapshot of the whole memory image (``pool.words``), the
reference counts, ``pool.used``, ``stats()`` and the TLB log; they must be identical after.
"""

import pickle

import numpy as np
import pytest

import s2pt
from s2pt import MemAttr, Prot, errors

MiB, GiB = 1 << 20, 1 << 30
U64 = 1 << 64


def snapshot(pt):
    pool = pt.pool
    return {
        "words": pool.words.copy(),
        "refcounts": pool.refcounts.copy(),
        "used": pool.used,
        "stats": pt.stats(),
        "table_pages": pt.table_pages,
        "tlbi": pt.tlbi_log(clear=False).copy(),
        "mappings": list(pt.mappings()),
    }


def assert_unchanged(pt, before):
    after = snapshot(pt)
    assert (after["words"] == before["words"]).all(), "pool.words changed"
    assert (after["refcounts"] == before["refcounts"]).all(), "refcounts changed"
    for key in ("used", "stats", "table_pages", "mappings"):
        assert after[key] == before[key], f"{key} changed"
    assert after["tlbi"].tobytes() == before["tlbi"].tobytes(), "TLB log changed"
    pt.check()


def populated(granule=4096, ipa_bits=40, pa_bits=48, pages=64):
    pool = s2pt.PagePool(pages, granule=granule)
    pt = s2pt.Stage2(ipa_bits=ipa_bits, granule=granule, pa_bits=pa_bits, pool=pool)
    g = granule
    block = 1 << ((granule.bit_length() - 4) + granule.bit_length() - 1)  # level-2 block
    pt.map(0, 0x1000_0000, 3 * g, Prot.RW)
    pt.map(block, 4 * block, block, Prot.RX)
    pt.map(8 * block - g, 0x2000_0000, g, Prot.R, af=False)
    if granule == 4096:
        pt.map(GiB, 4 * GiB, GiB, Prot.RWX)
    pt.unmap(g, g)  # leave something in the TLB log
    return pt


def check_raises(pt, exc, call):
    before = snapshot(pt)
    with pytest.raises(exc) as info:
        call(pt)
    assert_unchanged(pt, before)
    return info.value


# ---- alignment ---------------------------------------------------------------------------------

ALIGN_CASES_4K = {
    "map-ipa": lambda pt: pt.map(0x5001, 0x9000_0000, 0x1000),
    "map-ipa-half": lambda pt: pt.map(0x5800, 0x9000_0000, 0x1000),
    "map-pa": lambda pt: pt.map(0x5000, 0x9000_0008, 0x1000),
    "map-size": lambda pt: pt.map(0x5000, 0x9000_0000, 0x800),
    "map-size+1": lambda pt: pt.map(0x5000, 0x9000_0000, 0x1001),
    "map-block-pa": lambda pt: pt.map(2 * MiB, 0x9000_0004, 2 * MiB),
    "unmap-ipa": lambda pt: pt.unmap(0x1, 0x1000),
    "unmap-size": lambda pt: pt.unmap(0, 0xFFF),
    "unmap-in-block": lambda pt: pt.unmap(2 * MiB + 0x10, 0x1000),
    "protect-ipa": lambda pt: pt.protect(0x800, 0x1000, Prot.R),
    "protect-size": lambda pt: pt.protect(0, 0x1800, Prot.R),
}


@pytest.mark.parametrize("name", list(ALIGN_CASES_4K))
def test_alignment_errors_4k(name):
    pt = populated()
    e = check_raises(pt, s2pt.AlignmentError, ALIGN_CASES_4K[name])
    assert isinstance(e, ValueError) and isinstance(e, s2pt.S2ptError)


@pytest.mark.parametrize("granule", [16384, 65536])
@pytest.mark.parametrize("call", [
    lambda pt: pt.map(0x1000, 0x9000_0000, pt.granule),
    lambda pt: pt.map(0, 0x9000_1000, pt.granule),
    lambda pt: pt.map(0, 0x9000_0000, 0x1000),
    lambda pt: pt.unmap(0x1000, pt.granule),
    lambda pt: pt.unmap(0, pt.granule + 0x1000),
    lambda pt: pt.protect(pt.granule // 2, pt.granule, Prot.R),
], ids=["ipa", "pa", "size", "unmap-ipa", "unmap-size", "protect"])
def test_alignment_errors_large_granules(granule, call):
    pt = populated(granule)
    check_raises(pt, s2pt.AlignmentError, call)


# ---- range ---------------------------------------------------------------------------------

RANGE_CASES = {
    # beyond the 40-bit IPA / 48-bit PA spaces
    "map-ipa-top": lambda pt: pt.map(1 << 40, 0x9000_0000, 0x1000),
    "map-ipa-crosses-top": lambda pt: pt.map((1 << 40) - 0x1000, 0x9000_0000, 0x2000),
    "map-pa-top": lambda pt: pt.map(0x5000, 1 << 48, 0x1000),
    "map-pa-crosses-top": lambda pt: pt.map(0x5000, (1 << 48) - 0x1000, 0x2000),
    "unmap-ipa-top": lambda pt: pt.unmap(1 << 40, 0x1000),
    "unmap-crosses-top": lambda pt: pt.unmap((1 << 40) - 0x1000, 0x2000),
    "protect-crosses-top": lambda pt: pt.protect(0, (1 << 40) + 0x1000, Prot.R),
    # 64-bit wrap-around
    "map-ipa-wrap": lambda pt: pt.map(0x1000, 0x9000_0000, U64 - 0x1000),
    "map-pa-wrap": lambda pt: pt.map(0, U64 - 0x1000, 0x2000),
    "map-wrap-exact": lambda pt: pt.map(U64 - 0x1000, 0, 0x1000),
    "unmap-wrap": lambda pt: pt.unmap(0x1000, U64 - 0x1000),
    "unmap-wrap2": lambda pt: pt.unmap(U64 - 0x1000, 0x2000),
    "protect-wrap": lambda pt: pt.protect(0x1000, U64 - 0x1000, Prot.R),
    # negative ints
    "map-neg-ipa": lambda pt: pt.map(-0x1000, 0x9000_0000, 0x1000),
    "map-neg-pa": lambda pt: pt.map(0x5000, -0x1000, 0x1000),
    "map-neg-size": lambda pt: pt.map(0x5000, 0x9000_0000, -0x1000),
    "unmap-neg": lambda pt: pt.unmap(-0x1000, 0x1000),
    "unmap-neg-size": lambda pt: pt.unmap(0, -0x1000),
    "protect-neg": lambda pt: pt.protect(-0x1000, 0x1000, Prot.R),
    "translate-neg": lambda pt: pt.translate(-1),
    "lookup-neg": lambda pt: pt.lookup(-0x1000),
    "walk-neg": lambda pt: pt.walk(-1),
    "mappings-neg": lambda pt: list(pt.mappings(-0x1000)),
    # ints that do not fit in 64 bits
    "map-ipa-2**64": lambda pt: pt.map(U64, 0x9000_0000, 0x1000),
    "map-pa-2**64": lambda pt: pt.map(0x5000, U64, 0x1000),
    "map-size-2**64": lambda pt: pt.map(0, 0, U64),
    "map-huge": lambda pt: pt.map(1 << 100, 0, 0x1000),
    "unmap-2**64": lambda pt: pt.unmap(U64, 0x1000),
    "unmap-size-2**64": lambda pt: pt.unmap(0, U64),
    "protect-2**64": lambda pt: pt.protect(0, U64, Prot.R),
    "translate-2**64": lambda pt: pt.translate(U64),
    "lookup-2**70": lambda pt: pt.lookup(1 << 70),
    "walk-2**64": lambda pt: pt.walk(U64),
}


@pytest.mark.parametrize("name", list(RANGE_CASES))
def test_range_errors(name):
    pt = populated()
    e = check_raises(pt, s2pt.RangeError, RANGE_CASES[name])
    assert isinstance(e, ValueError) and isinstance(e, s2pt.S2ptError)


def test_range_error_small_pa_space():
    pool = s2pt.PagePool(16, base_pa=0x1000_0000)
    pt = s2pt.Stage2(ipa_bits=36, pa_bits=36, pool=pool)
    pt.map(0, (1 << 36) - 0x1000, 0x1000)  # the last page is fine
    check_raises(pt, s2pt.RangeError, lambda pt: pt.map(0x1000, 1 << 36, 0x1000))
    check_raises(pt, s2pt.RangeError, lambda pt: pt.map(0x1000, (1 << 36) - 0x1000, 0x2000))
    check_raises(pt, s2pt.RangeError, lambda pt: pt.map(1 << 36, 0, 0x1000))


# ---- invalid arguments -----------------------------------------------------------------------

INVALID_CASES = {
    "prot-16": lambda pt: pt.map(0x5000, 0x9000_0000, 0x1000, 16),
    "prot-R|16": lambda pt: pt.map(0x5000, 0x9000_0000, 0x1000, 16 | 1),
    "prot-PX": lambda pt: pt.map(0x5000, 0x9000_0000, 0x1000, Prot.PX),
    "prot-UX": lambda pt: pt.map(0x5000, 0x9000_0000, 0x1000, Prot.UX),
    "prot-RW|PX": lambda pt: pt.map(0x5000, 0x9000_0000, 0x1000, Prot.RW | Prot.PX),
    "prot-neg": lambda pt: pt.map(0x5000, 0x9000_0000, 0x1000, -1),
    "memattr-4": lambda pt: pt.map(0x5000, 0x9000_0000, 0x1000, Prot.RW, 4),
    "memattr-8": lambda pt: pt.map(0x5000, 0x9000_0000, 0x1000, Prot.RW, 8),
    "memattr-16": lambda pt: pt.map(0x5000, 0x9000_0000, 0x1000, Prot.RW, 16),
    "memattr-neg": lambda pt: pt.map(0x5000, 0x9000_0000, 0x1000, Prot.RW, -1),
    "protect-16": lambda pt: pt.protect(0, 0x1000, 16),
    "protect-PX": lambda pt: pt.protect(0, 0x1000, Prot.PX),
    "protect-UX-in-block": lambda pt: pt.protect(2 * MiB, 0x1000, Prot.R | Prot.UX),
}
for _attr in (MemAttr.DEVICE_nGnRnE, MemAttr.DEVICE_nGnRE, MemAttr.DEVICE_nGRE, MemAttr.DEVICE_GRE):
    for _prot in (Prot.X, Prot.RX, Prot.RWX):
        INVALID_CASES[f"exec-{_attr.name}-{_prot.name}"] = (
            lambda pt, a=_attr, p=_prot: pt.map(0x5000, 0x9000_0000, 0x1000, p, a))


@pytest.mark.parametrize("name", list(INVALID_CASES))
def test_invalid_arguments(name):
    pt = populated()
    e = check_raises(pt, s2pt.InvalidArgumentError, INVALID_CASES[name])
    assert isinstance(e, ValueError)


def test_device_without_exec_is_fine():
    pt = populated()
    for k, attr in enumerate(a for a in MemAttr if a.is_device):
        pt.map(0x10_0000 + k * 0x1000, 0x900_0000, 0x1000, Prot.RW, attr)
        assert pt.lookup(0x10_0000 + k * 0x1000).memattr == attr


@pytest.mark.parametrize("call", [
    lambda pt: pt.map(0x5000 + 0.5, 0x9000_0000, 0x1000),
    lambda pt: pt.map(0x5000, 0x9000_0000 + 0.25, 0x1000),
    lambda pt: pt.unmap(0.5, 0x1000),
    lambda pt: pt.translate(0x1000 + 0.5),
], ids=["map-ipa", "map-pa", "unmap", "translate"])
def test_non_integer_addresses_rejected(call):
    pt = populated()
    check_raises(pt, (TypeError, ValueError), call)


# ---- pool exhaustion ---------------------------------------------------------------------------


@pytest.mark.parametrize("granule,ipa_bits", [(4096, 40), (4096, 48), (4096, 33), (16384, 40),
                                              (16384, 47), (65536, 32), (65536, 46),
                                              (65536, 48)])
def test_pool_exhausted_then_exactly_enough(granule, ipa_bits):
    cfg = s2pt.Stage2Config(ipa_bits=ipa_bits, granule=granule)
    need = cfg.root_tables + (cfg.levels - 1)  # roots plus one table per lower level
    ipa = (1 << ipa_bits) - granule
    small = s2pt.Stage2(ipa_bits=ipa_bits, granule=granule,
                        pool=s2pt.PagePool(need - 1, granule=granule))
    e = check_raises(small, s2pt.PoolExhaustedError,
                     lambda pt: pt.map(ipa, 0x1_0000_0000, granule))
    assert isinstance(e, MemoryError) and isinstance(e, s2pt.S2ptError)
    assert small.lookup(ipa) is None
    exact = s2pt.Stage2(ipa_bits=ipa_bits, granule=granule,
                        pool=s2pt.PagePool(need, granule=granule))
    exact.map(ipa, 0x1_0000_0000, granule)
    assert exact.pool.free == 0
    assert exact.translate(ipa).pa == 0x1_0000_0000


def test_pool_exhausted_multi_table_map_is_atomic():
    # [1 GiB - 8 KiB, 1 GiB + 8 KiB) in pages: two level-2 tables and two level-3 tables
    lo, size = GiB - 0x2000, 0x4000
    small = s2pt.Stage2(pool=s2pt.PagePool(2 + 3))
    check_raises(small, s2pt.PoolExhaustedError,
                 lambda pt: pt.map(lo, 0x8000_0000, size, blocks=False))
    assert small.lookup(lo) is None and small.lookup(lo + size - 0x1000) is None
    exact = s2pt.Stage2(pool=s2pt.PagePool(2 + 4))
    exact.map(lo, 0x8000_0000, size, blocks=False)
    assert exact.pool.free == 0
    assert exact.translate(lo + size - 1).pa == 0x8000_0000 + size - 1


@pytest.mark.parametrize("op", ["unmap", "protect", "map-page"])
def test_pool_exhausted_split_is_atomic(op):
    calls = {
        "unmap": lambda pt: pt.unmap(GiB + 0x5000, 0x1000),
        "protect": lambda pt: pt.protect(GiB + 0x5000, 0x1000, Prot.R),
        "map-page": lambda pt: pt.map(GiB + 0x5000, 0x1000, 0x1000),
    }
    # a 1 GiB block lives in the root: splitting one page out of it needs two more tables
    small = s2pt.Stage2(pool=s2pt.PagePool(3))
    small.map(GiB, 4 * GiB, GiB, Prot.RW)
    check_raises(small, s2pt.PoolExhaustedError, calls[op])
    t = small.translate(GiB + 0x5000, s2pt.Access.WRITE)
    assert (t.pa, t.level) == (4 * GiB + 0x5000, 1)
    exact = s2pt.Stage2(pool=s2pt.PagePool(4))
    exact.map(GiB, 4 * GiB, GiB, Prot.RW)
    calls[op](exact)
    assert exact.pool.free == 0 and exact.table_pages == 4
    exact.check()


def test_pool_too_small_for_the_root():
    pool = s2pt.PagePool(1)
    with pytest.raises(s2pt.PoolExhaustedError):
        s2pt.Stage2(ipa_bits=40, pool=pool)  # two concatenated root tables
    assert pool.used == 0 and not pool.refcounts.any()
    # an aligned 16-page root cannot fit in 16 pages whose base is only page aligned
    pool = s2pt.PagePool(16, base_pa=0x4000_1000)
    with pytest.raises(s2pt.PoolExhaustedError):
        s2pt.Stage2(ipa_bits=34, pool=pool)
    assert pool.used == 0


# ---- destroyed VM --------------------------------------------------------------------------------

DESTROYED_CALLS = {
    "map": lambda pt: pt.map(0, 0, 0x1000),
    "unmap": lambda pt: pt.unmap(0, 0x1000),
    "protect": lambda pt: pt.protect(0, 0x1000, Prot.R),
    "set_access_flag": lambda pt: pt.set_access_flag(0, 0x1000),
    "translate": lambda pt: pt.translate(0),
    "lookup": lambda pt: pt.lookup(0),
    "translate_many": lambda pt: pt.translate_many(np.zeros(2, np.uint64)),
    "translate_many-empty": lambda pt: pt.translate_many([]),
    "walk": lambda pt: pt.walk(0),
    "mappings": lambda pt: list(pt.mappings()),
    "stats": lambda pt: pt.stats(),
    "check": lambda pt: pt.check(),
    "root_pa": lambda pt: pt.root_pa,
    "vttbr": lambda pt: pt.vttbr,
    "table_pages": lambda pt: pt.table_pages,
    "enter": lambda pt: pt.__enter__(),
}


@pytest.mark.parametrize("name", list(DESTROYED_CALLS))
def test_destroyed_vm(name):
    pool = s2pt.PagePool(16)
    pt = s2pt.Stage2(pool=pool)
    pt.map(0, 0x1000_0000, 0x1000)
    pt.destroy()
    assert pt.destroyed and pool.used == 0
    with pytest.raises(s2pt.DestroyedError) as info:
        DESTROYED_CALLS[name](pt)
    assert isinstance(info.value, ValueError)
    assert pool.used == 0 and not pool.refcounts.any()
    pt.destroy()  # twice is harmless


def test_destroyed_vm_with_statement():
    pt = s2pt.Stage2(pool=s2pt.PagePool(4))
    pt.destroy()
    with pytest.raises(s2pt.DestroyedError):
        with pt:
            pass


# ---- pool arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,exc", [
    (dict(pages=0), s2pt.InvalidArgumentError),
    (dict(pages=4, granule=8192), s2pt.InvalidArgumentError),
    (dict(pages=4, granule=16384, base_pa=0x1000), s2pt.AlignmentError),
    (dict(pages=4, base_pa=0x4000_0800), s2pt.AlignmentError),
    (dict(pages=4, base_pa=-4096), s2pt.RangeError),
    (dict(pages=-1), s2pt.RangeError),
    (dict(pages=4, base_pa=U64), s2pt.RangeError),
])
def test_bad_pool_arguments(kwargs, exc):
    with pytest.raises(exc) as info:
        s2pt.PagePool(**kwargs)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("offset,exc", [(-0x1000, s2pt.RangeError), (1, s2pt.AlignmentError),
                                        (0x8, s2pt.AlignmentError), (4 * 4096, s2pt.RangeError)])
def test_bad_refcount_address(offset, exc):
    pool = s2pt.PagePool(4)
    with pytest.raises(exc):
        pool.refcount(pool.base_pa + offset)


# ---- classes and codes ----------------------------------------------------------------------------


def test_class_hierarchy():
    assert issubclass(s2pt.ConfigError, ValueError)
    assert issubclass(s2pt.AlignmentError, ValueError)
    assert issubclass(s2pt.RangeError, ValueError)
    assert issubclass(s2pt.InvalidArgumentError, ValueError)
    assert issubclass(s2pt.ArrayError, s2pt.InvalidArgumentError)
    assert issubclass(s2pt.ArrayError, TypeError)
    assert issubclass(s2pt.PoolExhaustedError, MemoryError)
    assert issubclass(s2pt.DestroyedError, ValueError)
    for cls in (s2pt.ConfigError, s2pt.AlignmentError, s2pt.RangeError, s2pt.PoolExhaustedError,
                s2pt.InvalidArgumentError, s2pt.ArrayError, s2pt.Stage2Fault, s2pt.InvariantError,
                s2pt.DestroyedError, s2pt.PoolBusyError, s2pt.UnknownS2ptError):
        assert issubclass(cls, s2pt.S2ptError)
        assert getattr(errors, cls.__name__) is cls
    assert not issubclass(s2pt.PoolExhaustedError, ValueError)
    assert not issubclass(s2pt.Stage2Fault, ValueError)


@pytest.mark.parametrize("code", sorted(errors._BY_CODE))
def test_error_codes(code):
    cls = errors._BY_CODE[code]
    assert cls.code == code
    assert code < 0
    assert errors.error_class(code) is cls
    assert issubclass(cls, s2pt.S2ptError)


def test_codes_are_unique_and_unknown_code():
    codes = list(errors._BY_CODE)
    assert len(codes) == len(set(codes))
    assert len({cls for cls in errors._BY_CODE.values()}) == len(codes)
    assert errors.error_class(-12345) is s2pt.UnknownS2ptError
    assert errors.error_class(0) is s2pt.UnknownS2ptError


def test_stage2_fault_pickles():
    f = s2pt.Stage2Fault(s2pt.FaultKind.PERMISSION, 2, 0b001110, 0x1234)
    g = pickle.loads(pickle.dumps(f))
    assert (g.kind, g.level, g.fsc, g.ipa, str(g)) == (f.kind, f.level, f.fsc, f.ipa, str(f))
