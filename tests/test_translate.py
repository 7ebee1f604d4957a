"""translate / lookup / translate_many against the architectural stage-2 walk and its faults.

Expected fault status codes are the ESR_ELx DFSC encodings (kernel-notes 1.5): translation
0b0001LL at the level the walk stopped (level 0 for an IPA beyond the input size), access flag
0b0010LL and permission 0b0011LL at the leaf level; permissions from S2AP (read, write) and XN.
"""

import numpy as np
import pytest

import s2pt
from s2pt import Access, FaultKind, MemAttr, Prot

MiB, GiB = 1 << 20, 1 << 30

FSC_TRANSLATION = 0b000100
FSC_ACCESS_FLAG = 0b001000
FSC_PERMISSION = 0b001100

PROTS = [Prot.NONE, Prot.R, Prot.W, Prot.RW, Prot.X, Prot.RX, Prot.WX, Prot.RWX]


def stride(granule):
    return granule.bit_length() - 1 - 3


def level_shift(granule, level):
    return stride(granule) * (4 - level) + 3


def allowed(prot, access):
    """Stage-2 permission check of an AArch64 EL2: S2AP[0] read, S2AP[1] write, PX (EL1) and
    UX (EL0) execute."""
    if access == Access.READ:
        return bool(prot & Prot.R)
    if access == Access.WRITE:
        return bool(prot & Prot.W)
    if access == Access.EXEC:
        return bool(prot & Prot.PX)
    return bool(prot & Prot.UX)


def fault_of(pt, ipa, access=Access.READ):
    with pytest.raises(s2pt.Stage2Fault) as info:
        pt.translate(ipa, access)
    return info.value


def make(granule=4096, ipa_bits=40, pages=64):
    return s2pt.Stage2(ipa_bits=ipa_bits, granule=granule,
                       pool=s2pt.PagePool(pages, granule=granule))


CONFIGS = [(4096, 32), (4096, 39), (4096, 40), (4096, 48), (16384, 36), (16384, 40), (16384, 48),
           (65536, 32), (65536, 46), (65536, 48)]


# ---- translation faults ---------------------------------------------------------------------


@pytest.mark.parametrize("granule,ipa_bits", CONFIGS)
def test_translation_fault_at_the_level_the_walk_stopped(granule, ipa_bits):
    pt = make(granule, ipa_bits)
    g = granule
    start = pt.start_level
    p = ((1 << ipa_bits) - 1) // 5 // g * g
    f = fault_of(pt, p)
    assert (f.kind, f.level, f.fsc, f.ipa) == (FaultKind.TRANSLATION, start,
                                              FSC_TRANSLATION | start, p)
    pt.map(p, 0x1_0000_0000, g)
    for level in range(start, 4):
        # differs from p only in the lowest index bit of ``level``: the walk shares every
        # table above it and finds an invalid entry at ``level``
        q = p ^ (1 << level_shift(g, level))
        assert q < 1 << ipa_bits
        f = fault_of(pt, q + 8)
        assert f.kind == FaultKind.TRANSLATION
        assert f.level == level
        assert f.fsc == FSC_TRANSLATION | level == FaultKind.TRANSLATION.fsc(level)
        assert f.ipa == q + 8
        assert pt.lookup(q) is None
    pt.destroy()


@pytest.mark.parametrize("granule,ipa_bits", CONFIGS)
def test_ipa_beyond_input_size_faults_at_level_0(granule, ipa_bits):
    pt = make(granule, ipa_bits)
    pt.map(0, 0x1_0000_0000, 2 * granule)
    for ipa in (1 << ipa_bits, (1 << ipa_bits) + granule, 1 << 48, (1 << 64) - 1):
        f = fault_of(pt, ipa)
        assert (f.kind, f.level, f.fsc, f.ipa) == (FaultKind.TRANSLATION, 0, FSC_TRANSLATION, ipa)
        assert pt.lookup(ipa) is None
    pt.destroy()


# ---- access flag ------------------------------------------------------------------------------


@pytest.mark.parametrize("granule,size,level", [(4096, 4096, 3), (4096, 2 * MiB, 2),
                                                (4096, GiB, 1), (16384, 32 * MiB, 2),
                                                (65536, 65536, 3)])
@pytest.mark.parametrize("prot", [Prot.RWX, Prot.NONE])
def test_access_flag_fault(granule, size, level, prot):
    pt = make(granule, 44 if granule == 4096 else 42)
    ipa = 3 * size
    pt.map(ipa, 5 * size, size, prot, af=False)
    for access in Access:
        f = fault_of(pt, ipa + size - 8, access)
        # the access flag is checked before permissions
        assert (f.kind, f.level, f.fsc) == (FaultKind.ACCESS_FLAG, level, FSC_ACCESS_FLAG | level)
        assert f.fsc == FaultKind.ACCESS_FLAG.fsc(level)
    t = pt.lookup(ipa + 8)
    assert t is not None and t.af is False
    assert (t.pa, t.level, t.size, t.prot) == (5 * size + 8, level, size, prot)
    pt.destroy()


# ---- permissions -----------------------------------------------------------------------------


@pytest.mark.parametrize("size,level", [(4096, 3), (2 * MiB, 2), (GiB, 1)])
@pytest.mark.parametrize("prot", PROTS, ids=lambda p: p.name or "NONE")
def test_permission_matrix(prot, size, level):
    pt = make()
    ipa, pa = 2 * GiB + 2 * size if size < GiB else 2 * GiB, 8 * GiB
    pt.map(ipa, pa, size, prot)
    for access in Access:
        if allowed(prot, access):
            t = pt.translate(ipa + 0x10, access)
            assert (t.pa, t.level, t.size, t.prot) == (pa + 0x10, level, size, prot)
            assert t.memattr == MemAttr.NORMAL and t.af
        else:
            f = fault_of(pt, ipa + 0x10, access)
            assert (f.kind, f.level, f.fsc, f.ipa) == (FaultKind.PERMISSION, level,
                                                      FSC_PERMISSION | level, ipa + 0x10)
        # lookup ignores permissions
        assert pt.lookup(ipa + 0x10).pa == pa + 0x10
    pt.destroy()


def test_exec_only_is_executable():
    pt = make()
    pt.map(0x10_0000, 0x20_0000, 4096, Prot.X)
    assert pt.translate(0x10_0004, Access.EXEC).pa == 0x20_0004
    assert fault_of(pt, 0x10_0004, Access.READ).kind == FaultKind.PERMISSION
    assert fault_of(pt, 0x10_0004, Access.WRITE).kind == FaultKind.PERMISSION


def test_translation_fields_and_device_memory():
    pt = make()
    pt.map(0x900_0000, 0x900_0000, 4096, Prot.RW, MemAttr.DEVICE_nGnRE)
    t = pt.translate(0x900_0abc, Access.WRITE)
    assert isinstance(t, s2pt.Translation)
    assert (t.pa, t.level, t.size, t.prot, t.memattr) == (0x900_0abc, 3, 4096, Prot.RW,
                                                          MemAttr.DEVICE_nGnRE)
    assert isinstance(t.pa, int) and isinstance(t.prot, Prot) and isinstance(t.memattr, MemAttr)
    assert fault_of(pt, 0x900_0000, Access.EXEC).kind == FaultKind.PERMISSION


def test_stage2_fault_is_an_s2pt_error():
    pt = make()
    f = fault_of(pt, 0x1234_5678)
    assert isinstance(f, s2pt.S2ptError)
    assert isinstance(f.kind, FaultKind)
    assert f.code == s2pt.Stage2Fault.code
    assert f.ipa == 0x1234_5678


def test_fault_kind_fsc_helper():
    assert [FaultKind.TRANSLATION.fsc(lv) for lv in range(4)] == [0x04, 0x05, 0x06, 0x07]
    assert [FaultKind.ACCESS_FLAG.fsc(lv) for lv in range(4)] == [0x08, 0x09, 0x0A, 0x0B]
    assert [FaultKind.PERMISSION.fsc(lv) for lv in range(4)] == [0x0C, 0x0D, 0x0E, 0x0F]
    assert [FaultKind.ADDRESS_SIZE.fsc(lv) for lv in range(4)] == [0x00, 0x01, 0x02, 0x03]
    assert s2pt.FSC_NONE > 0x3F  # not a valid 6-bit FSC


def test_invalid_access_kind():
    pt = make()
    pt.map(0, 0, 4096)
    for bad in (4, 7, -1):
        with pytest.raises((s2pt.InvalidArgumentError, s2pt.RangeError)):
            pt.translate(0, bad)
        with pytest.raises((s2pt.InvalidArgumentError, s2pt.RangeError)):
            pt.translate_many(np.zeros(3, np.uint64), bad)
    with pytest.raises(s2pt.InvalidArgumentError):
        pt.translate_many(np.zeros(0, np.uint64), 4)


# ---- translate_many ---------------------------------------------------------------------------


def mixed_vm(granule=4096):
    pt = make(granule)
    g = granule
    block = 1 << level_shift(g, 2)
    pt.map(0, 0x1_0000_0000, 4 * g, Prot.RW)
    pt.map(8 * g, 0x1_0010_0000, g, Prot.R, af=False)
    pt.map(10 * g, 0x1_0020_0000, g, Prot.NONE)
    pt.map(11 * g, 0x1_0030_0000, g, Prot.RX)
    pt.map(block, 0x2_0000_0000, 2 * block, Prot.RWX)
    pt.map(4 * block, 0x900_0000 // g * g, g, Prot.RW, MemAttr.DEVICE_nGnRnE)
    top = 1 << pt.ipa_bits
    ipas = [0, 5, g - 8, g, 3 * g + 1, 4 * g, 7 * g, 8 * g, 8 * g + 9, 9 * g, 10 * g, 11 * g + 3,
            block, block + 12345 * 8, 3 * block - 1, 3 * block, 4 * block, 4 * block + 8,
            top - g, top - 1, top, top + g, (1 << 64) - 1, 1 << 63]
    return pt, ipas


@pytest.mark.parametrize("granule", [4096, 16384, 65536])
@pytest.mark.parametrize("access", list(Access), ids=lambda a: a.name)
def test_translate_many_equals_loop(granule, access):
    pt, ipas = mixed_vm(granule)
    arr = np.array(ipas, dtype=np.uint64)
    pa, fsc = pt.translate_many(arr, access)
    assert pa.dtype == np.uint64 and fsc.dtype == np.uint8
    assert pa.shape == fsc.shape == (len(ipas),)
    kinds = set()
    for i, ipa in enumerate(ipas):
        try:
            t = pt.translate(ipa, access)
        except s2pt.Stage2Fault as f:
            kinds.add(f.kind)
            assert fsc[i] == f.fsc, f"ipa {ipa:#x}"
        else:
            assert fsc[i] == s2pt.FSC_NONE, f"ipa {ipa:#x}"
            assert int(pa[i]) == t.pa
    assert FaultKind.TRANSLATION in kinds and FaultKind.ACCESS_FLAG in kinds
    assert FaultKind.PERMISSION in kinds
    # a list of Python ints gives the same answer
    pa2, fsc2 = pt.translate_many(ipas, access)
    assert (pa2 == pa).all() and (fsc2 == fsc).all()


def test_translate_many_large_contiguous_block():
    pt = make()
    pt.map(GiB, 4 * GiB, GiB)
    ipas = np.arange(GiB - 64 * 4096, 2 * GiB + 64 * 4096, 4096, dtype=np.uint64) + 0x18
    pa, fsc = pt.translate_many(ipas)
    inside = (ipas >= GiB) & (ipas < 2 * GiB)
    assert (fsc[inside] == s2pt.FSC_NONE).all()
    assert (pa[inside] == ipas[inside] + 3 * GiB).all()
    assert (fsc[~inside] == FSC_TRANSLATION | 1).all()


@pytest.mark.parametrize("bad", [
    np.zeros(4, np.int64),
    np.zeros(4, np.float64),
    np.zeros(4, np.uint32),
    np.zeros(4, np.int32),
    np.zeros((2, 2), np.uint64),
    np.zeros((1, 4), np.uint64),
    np.zeros(8, np.uint64)[::2],
    np.zeros(8, np.uint64).reshape(2, 4)[:, 0],
    np.zeros(4, ">u8"),
], ids=["int64", "float64", "uint32", "int32", "2d", "1x4", "strided", "column", "bigendian"])
def test_translate_many_rejects_arrays(bad):
    pt = make()
    pt.map(0, 0x1000, 4096)
    with pytest.raises(s2pt.ArrayError) as info:
        pt.translate_many(bad)
    e = info.value
    assert isinstance(e, s2pt.InvalidArgumentError)
    assert isinstance(e, ValueError) and isinstance(e, TypeError)


@pytest.mark.parametrize("bad", [[-1], [1 << 64], [0, 1.5e30], [[0, 1], [2, 3]], ["x"]],
                         ids=["negative", "2**64", "huge-float", "nested", "str"])
def test_translate_many_rejects_bad_sequences(bad):
    pt = make()
    with pytest.raises(s2pt.S2ptError) as info:
        pt.translate_many(bad)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("ipas", [[], (), np.zeros(0, np.uint64), [0x1000, 0x2000],
                                  (0x1000,), range(0, 0x3000, 0x1000)],
                         ids=["list0", "tuple0", "array0", "list", "tuple", "range"])
def test_translate_many_accepts(ipas):
    pt = make()
    pt.map(0x1000, 0x5000, 0x1000)
    pa, fsc = pt.translate_many(ipas)
    assert len(pa) == len(fsc) == len(ipas)
    assert pa.dtype == np.uint64 and fsc.dtype == np.uint8
    for i, ipa in enumerate(ipas):
        if ipa == 0x1000:
            assert fsc[i] == s2pt.FSC_NONE and pa[i] == 0x5000
        else:  # same last-level table as 0x1000
            assert fsc[i] == FSC_TRANSLATION | 3


def test_translate_many_does_not_modify_input():
    pt = make()
    pt.map(0, 0x8000, 0x1000)
    arr = np.array([0, 8, 0x1000], np.uint64)
    before = arr.copy()
    pt.translate_many(arr)
    assert (arr == before).all()
    ro = arr.copy()
    ro.flags.writeable = False
    pa, fsc = pt.translate_many(ro)
    assert list(fsc[:2]) == [s2pt.FSC_NONE] * 2 and pa[1] == 0x8008


@pytest.mark.parametrize("bad", [[0x1000 + 0.5], [4096.7, 0], ["4096"]],
                         ids=["float", "float2", "str-int"])
def test_translate_many_rejects_non_integer_sequences(bad):
    pt = make()
    pt.map(0x1000, 0x5000, 0x1000)
    with pytest.raises(s2pt.ArrayError):
        pt.translate_many(bad)
