"""Descriptor formats beyond the 48-bit default, bit by bit against the Arm ARM's stage-2 layout.

* 64K with a 52-bit PA (FEAT_LPA): OA[47:16] in place, OA[51:48] in bits 15:12; level-1 blocks.
* FEAT_LPA2 (VTCR_EL2.DS = 1, 4K/16K): OA[49:g] in place, OA[51:50] in bits 9:8, so leaves
  carry no SH field (VTCR_EL2.SH0 gives it); level-0 (4K) and level-1 (16K) blocks; KVM's
  16 concatenated level-0 tables instead of level -1 for 4K with a 52-bit IPA.
* VTTBR_EL2.BADDR[5:2] = root PA[51:48].
* FWB MemAttr encodings (HCR_EL2.FWB = 1), FEAT_XNX's XN[1:0], software bits 58:55.
"""

from __future__ import annotations

import numpy as np
import pytest

import s2pt
from s2pt import Access, FaultKind, MemAttr, Prot
from s2pt.model import ReferenceStage2

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


def bits(value: int, hi: int, lo: int) -> int:
    return (value >> lo) & ((1 << (hi - lo + 1)) - 1)


def leaf_desc(pt, ipa):
    steps = pt.walk(ipa)
    return steps[-1].desc


def fault_of(pt, ipa, access):
    with pytest.raises(s2pt.Stage2Fault) as info:
        pt.translate(ipa, access)
    return info.value


# ---- geometry --------------------------------------------------------------------------------

# (granule, ipa_bits, flags) -> levels, start level, concatenated root tables, SL0
GEOMETRY = [
    (4096, 49, dict(lpa2=True), 4, 0, 2, 2),
    (4096, 50, dict(lpa2=True), 4, 0, 4, 2),
    (4096, 51, dict(lpa2=True), 4, 0, 8, 2),
    (4096, 52, dict(lpa2=True), 4, 0, 16, 2),       # KVM: 16 tables, never level -1
    (16384, 49, dict(lpa2=True), 3, 1, 4, 2),
    (16384, 51, dict(lpa2=True), 3, 1, 16, 2),
    (16384, 52, dict(lpa2=True), 4, 0, 1, 3),       # SL0 = 3 means level 0 only with DS
    (65536, 47, dict(), 3, 1, 1, 2),
    (65536, 49, dict(), 3, 1, 1, 2),
    (65536, 52, dict(), 3, 1, 1, 2),
]


@pytest.mark.parametrize("granule,ipa_bits,flags,levels,start,roots,sl0", GEOMETRY)
def test_52bit_geometry_and_vtcr(granule, ipa_bits, flags, levels, start, roots, sl0):
    cfg = s2pt.Stage2Config(ipa_bits=ipa_bits, granule=granule, pa_bits=52, **flags)
    assert (cfg.levels, cfg.start_level, cfg.root_tables, cfg.sl0) == (levels, start, roots, sl0)
    vtcr = cfg.vtcr
    assert bits(vtcr, 5, 0) == 64 - ipa_bits                 # T0SZ
    assert bits(vtcr, 7, 6) == sl0
    assert bits(vtcr, 18, 16) == 0b110                       # PS: 52 bits
    assert bits(vtcr, 32, 32) == bool(flags.get("lpa2"))     # DS
    assert bits(vtcr, 33, 33) == 0                           # SL2 never (KVM)
    assert bits(vtcr, 15, 14) == {4096: 0b00, 16384: 0b10, 65536: 0b01}[granule]
    back = s2pt.Stage2Config.from_vtcr(vtcr)
    assert (back.levels, back.start_level, back.root_tables, back.lpa2, back.pa_bits) == \
        (levels, start, roots, bool(flags.get("lpa2")), 52)


@pytest.mark.parametrize("granule,ipa_bits,pa_bits,lpa2,min_block", [
    (4096, 48, 48, False, 1), (4096, 48, 48, True, 0), (4096, 44, 52, True, 0),
    (4096, 40, 48, True, 1),                 # starts at level 1: no level-0 entry to hold one
    (16384, 47, 48, False, 2), (16384, 47, 48, True, 1), (16384, 40, 48, True, 2),
    (65536, 48, 48, False, 2), (65536, 48, 52, False, 1), (65536, 42, 52, False, 2),
])
def test_block_levels_per_format(granule, ipa_bits, pa_bits, lpa2, min_block):
    """4K level-0 and 16K level-1 blocks only with LPA2, 64K level-1 only with 52-bit PA
    (AArch64.BlockDescSupported), and never above the start level."""
    cfg = s2pt.Stage2Config(ipa_bits=ipa_bits, granule=granule, pa_bits=pa_bits, lpa2=lpa2)
    assert cfg.min_block_level == min_block


# ---- 64K with a 52-bit PA ---------------------------------------------------------------------

HIGH64 = 0xA_BCD0_0000_0000       # a pool whose PAs have bits 51:48 = 0xA


def test_64k_52bit_leaf_table_and_vttbr_bits():
    pool = s2pt.PagePool(16, granule=65536, base_pa=HIGH64)
    pt = s2pt.Stage2(ipa_bits=52, granule=65536, pa_bits=52, vmid=9, pool=pool)
    assert pt.root_pa >> 48 == 0xA
    vttbr = pt.vttbr
    assert bits(vttbr, 5, 2) == 0xA                          # BADDR[5:2] = root PA[51:48]
    assert bits(vttbr, 47, 6) << 6 == pt.root_pa & ((1 << 48) - 1)
    assert bits(vttbr, 63, 48) == 9
    ipa, pa = 0xF_1234_5678_0000, 0x9_8765_4321_0000
    pt.map(ipa, pa, 64 * KiB, Prot.RW)
    steps = pt.walk(ipa + 0x1234)
    assert [s.level for s in steps] == [1, 2, 3]
    leaf = steps[-1].desc
    assert bits(leaf, 15, 12) == 0x9                         # OA[51:48]
    assert bits(leaf, 47, 16) == bits(pa, 47, 16)
    assert bits(leaf, 1, 0) == 0b11 and bits(leaf, 9, 8) == 0b11 and bits(leaf, 10, 10) == 1
    for parent, child in zip(steps, steps[1:]):              # table descriptors: same layout
        assert bits(parent.desc, 1, 0) == 0b11
        table_pa = bits(parent.desc, 47, 16) << 16 | bits(parent.desc, 15, 12) << 48
        assert table_pa == child.table_pa and table_pa >> 48 == 0xA
        assert parent.desc & ~((0xFFFF_FFFF << 16) | (0xF << 12) | 3) == 0
    assert steps[0].table_pa == pt.root_pa
    t = pt.translate(ipa + 0x1234, Access.WRITE)
    assert (t.pa, t.level, t.size) == (pa + 0x1234, 3, 64 * KiB)
    pt.check()
    m = ReferenceStage2(ipa_bits=52, granule=65536, pa_bits=52)
    m.map(ipa, pa, 64 * KiB, Prot.RW)
    assert m.translate(ipa + 0x1234).pte == leaf           # the model encodes on its own


def test_64k_52bit_level1_block():
    pt = s2pt.Stage2(ipa_bits=52, granule=65536, pa_bits=52)
    ipa, pa = 5 * 4 * TiB, 0xC_0000_0000_0000 + 3 * 4 * TiB
    pt.map(ipa, pa, 4 * TiB, Prot.R)
    t = pt.translate(ipa + 4 * TiB - 8)
    assert (t.level, t.size, t.pa) == (1, 4 * TiB, pa + 4 * TiB - 8)
    desc = leaf_desc(pt, ipa)
    assert bits(desc, 1, 0) == 0b01 and bits(desc, 15, 12) == 0xC
    assert bits(desc, 47, 42) == bits(pa, 47, 42) and bits(desc, 41, 16) == 0
    assert pt.stats()["leaves_by_level"][1] == 1
    # With a 48-bit PA the same span takes 512 MiB level-2 blocks.
    small = s2pt.Stage2(ipa_bits=48, granule=65536, pa_bits=48)
    small.map(4 * TiB, 8 * TiB, 4 * TiB)
    assert small.stats()["leaves_by_level"] == {1: 0, 2: 8192, 3: 0}


# ---- LPA2 -------------------------------------------------------------------------------------

HIGH_LPA2 = 0xF_0000_0000_0000    # bits 51:50 = 0b11 and 49:48 = 0b11


@pytest.mark.parametrize("granule", [4096, 16384])
def test_lpa2_leaf_table_and_vttbr_bits(granule):
    pool = s2pt.PagePool(64, granule=granule, base_pa=HIGH_LPA2)
    pt = s2pt.Stage2(ipa_bits=52, granule=granule, pa_bits=52, lpa2=True, pool=pool)
    assert bits(pt.vtcr, 32, 32) == 1
    assert bits(pt.vttbr, 5, 2) == pt.root_pa >> 48 == 0xF
    g_shift = granule.bit_length() - 1
    ipa, pa = 0xE_DCBA_9876_0000 & ~(granule - 1), 0xB_2345_6789_C000 & ~(granule - 1)
    pt.map(ipa, pa, granule, Prot.RWX)
    steps = pt.walk(ipa)
    assert [s.level for s in steps] == list(range(pt.start_level, 4))
    leaf = steps[-1].desc
    assert bits(leaf, 9, 8) == pa >> 50 == 0b10              # OA[51:50]; no SH field
    assert bits(leaf, 49, g_shift) == bits(pa, 49, g_shift)
    assert bits(leaf, 1, 0) == 0b11 and bits(leaf, 10, 10) == 1 and bits(leaf, 54, 53) == 0
    for parent, child in zip(steps, steps[1:]):
        table_pa = bits(parent.desc, 49, g_shift) << g_shift | bits(parent.desc, 9, 8) << 50
        assert table_pa == child.table_pa and table_pa >> 48 == 0xF
    t = pt.translate(ipa + 8, Access.EXEC)
    assert (t.pa, t.level, t.size) == (pa + 8, 3, granule)
    pt.check()
    m = ReferenceStage2(ipa_bits=52, granule=granule, pa_bits=52, lpa2=True)
    m.map(ipa, pa, granule, Prot.RWX)
    assert m.translate(ipa).pte == leaf


def test_lpa2_with_48bit_pa_still_has_no_sh_field():
    pt = s2pt.Stage2(ipa_bits=44, granule=4096, pa_bits=48, lpa2=True)
    pt.map(0, 0x8000_0000, 4096)
    desc = leaf_desc(pt, 0)
    assert bits(desc, 9, 8) == 0 and bits(desc, 47, 12) == 0x8000_0000 >> 12
    legacy = s2pt.Stage2(ipa_bits=44, granule=4096, pa_bits=48)
    legacy.map(0, 0x8000_0000, 4096)
    assert leaf_desc(legacy, 0) == desc | 0b11 << 8          # the only difference: SH


@pytest.mark.parametrize("granule,level,span", [(4096, 0, 512 * GiB), (16384, 1, 64 * GiB)])
def test_lpa2_large_blocks(granule, level, span):
    pt = s2pt.Stage2(ipa_bits=52, granule=granule, pa_bits=52, lpa2=True)
    ipa, pa = 3 * span, (1 << 51) + 5 * span
    pt.map(ipa, pa, span)
    t = pt.translate(ipa + span - 8)
    assert (t.level, t.size, t.pa) == (level, span, pa + span - 8)
    desc = leaf_desc(pt, ipa)
    assert bits(desc, 1, 0) == 0b01 and bits(desc, 9, 8) == 0b10
    assert pt.stats()["leaves_by_level"][level] == 1
    plain = s2pt.Stage2(ipa_bits=48, granule=granule, pa_bits=48)  # without LPA2: one level down
    plain.map(ipa % (1 << 48), pa % (1 << 48), span)
    assert plain.stats()["leaves_by_level"][level] == 0


@pytest.mark.parametrize("granule,lpa2,boundary", [
    (4096, True, 1 << 50), (16384, True, 1 << 50), (65536, False, 1 << 48)])
def test_page_runs_across_the_in_place_address_field(granule, lpa2, boundary):
    """A run of leaves whose output addresses cross the top of the in-place OA field (2**50
    with LPA2, 2**48 for 64K) must carry into the split-off top bits, not into attributes."""
    pt = s2pt.Stage2(ipa_bits=52, granule=granule, pa_bits=52, lpa2=lpa2)
    ipa, pa, n = 64 * granule, boundary - 8 * granule, 16
    for blocks in (False, True):
        pt.map(ipa, pa, n * granule, Prot.RW, blocks=blocks, sw=3)
        for i in range(n):
            t = pt.translate(ipa + i * granule + 8)
            assert (t.pa, t.level, t.prot, t.sw) == (pa + i * granule + 8, 3, Prot.RW, 3)
        pt.check()
        pt.unmap(ipa, n * granule)
    pt.map(ipa + granule, pa + granule, granule)     # one page, then the run over it
    pt.map(ipa, pa, n * granule, Prot.R, blocks=False)
    assert [pt.translate(ipa + i * granule).pa for i in range(n)] == \
        [pa + i * granule for i in range(n)]
    pt.check()


def test_52bit_range_errors_change_nothing():
    pt = s2pt.Stage2(ipa_bits=52, granule=4096, pa_bits=52, lpa2=True,
                     pool=s2pt.PagePool(64))
    before = pt.pool.words.copy()
    with pytest.raises(s2pt.RangeError):
        pt.map(0, (1 << 52) - 4096, 8192)
    with pytest.raises(s2pt.RangeError):
        pt.map((1 << 52) - 4096, 0, 8192)
    assert (pt.pool.words == before).all() and pt.table_pages == 16
    pt.map((1 << 52) - 4096, (1 << 52) - 4096, 4096)   # the last page of both spaces
    assert pt.translate((1 << 52) - 8).pa == (1 << 52) - 8


# ---- FWB ----------------------------------------------------------------------------------------

FWB_FIELD = {MemAttr.DEVICE_nGnRnE: 0b0000, MemAttr.DEVICE_nGnRE: 0b0001,
             MemAttr.DEVICE_nGRE: 0b0010, MemAttr.DEVICE_GRE: 0b0011,
             MemAttr.NORMAL_NC: 0b0101, MemAttr.NORMAL: 0b0110, MemAttr.STAGE1: 0b0111}


@pytest.mark.parametrize("memattr,field", FWB_FIELD.items(), ids=lambda x: getattr(x, "name", x))
def test_fwb_memattr_fields(memattr, field):
    pt = s2pt.Stage2(fwb=True)
    prot = Prot.RW if memattr.is_device else Prot.RWX
    pt.map(0x20_0000, 0x8000_0000, 4096, prot, memattr)
    desc = leaf_desc(pt, 0x20_0000)
    assert bits(desc, 5, 2) == field
    assert pt.lookup(0x20_0000).memattr == memattr
    assert [m.memattr for m in pt.mappings()] == [memattr]
    pt.check()
    m = ReferenceStage2(fwb=True)
    m.map(0x20_0000, 0x8000_0000, 4096, prot, memattr)
    assert m.translate(0x20_0000).pte == desc


@pytest.mark.parametrize("fwb,memattr", [(True, MemAttr.NORMAL_WT), (True, 0xD), (True, 0x6),
                                         (True, 0x7), (False, MemAttr.STAGE1), (False, 0x4)])
def test_memattrs_a_vm_cannot_express(fwb, memattr):
    pt = s2pt.Stage2(fwb=fwb, pool=s2pt.PagePool(16))
    pt.map(0, 0x1000, 4096)
    before = pt.pool.words.copy()
    with pytest.raises(s2pt.InvalidArgumentError):
        pt.map(4096, 0x2000, 4096, Prot.RW, memattr)
    assert (pt.pool.words == before).all()


def test_fwb_execute_on_device_refused_stage1_allowed():
    pt = s2pt.Stage2(fwb=True)
    for memattr in (MemAttr.DEVICE_nGnRnE, MemAttr.DEVICE_GRE):
        with pytest.raises(s2pt.InvalidArgumentError):
            pt.map(0, 0x1000, 4096, Prot.RX, memattr)
    pt.map(0, 0x1000, 4096, Prot.RX, MemAttr.STAGE1)
    pt.map(4096, 0x2000, 4096, Prot.RW, MemAttr.DEVICE_nGnRE)
    with pytest.raises(s2pt.InvalidArgumentError):
        pt.protect(0, 8192, Prot.RX)
    assert pt.translate(0, Access.EXEC).memattr == MemAttr.STAGE1


# ---- FEAT_XNX ---------------------------------------------------------------------------------

# prot -> XN[1:0] (bits 54:53): 00 EL1+EL0, 01 EL0 only, 10 neither, 11 EL1 only
XN = {Prot.X: 0b00, Prot.UX: 0b01, Prot.NONE: 0b10, Prot.PX: 0b11}


@pytest.mark.parametrize("exec_prot,xn", XN.items(), ids=lambda x: getattr(x, "name", x))
@pytest.mark.parametrize("rw", [Prot.NONE, Prot.R, Prot.RW], ids=lambda p: p.name or "none")
def test_xnx_bits_and_checks(exec_prot, xn, rw):
    prot = exec_prot | rw
    pt = s2pt.Stage2(xnx=True)
    pt.map(0x4000, 0x9000, 4096, prot)
    desc = leaf_desc(pt, 0x4000)
    assert bits(desc, 54, 53) == xn
    assert bits(desc, 7, 6) == int(rw)
    assert pt.lookup(0x4000).prot == prot
    for access, need in ((Access.EXEC, Prot.PX), (Access.EXEC_EL0, Prot.UX),
                         (Access.READ, Prot.R), (Access.WRITE, Prot.W)):
        if prot & need:
            assert pt.translate(0x4008, access).pa == 0x9008
        else:
            f = fault_of(pt, 0x4008, access)
            assert (f.kind, f.level, f.fsc) == (FaultKind.PERMISSION, 3, 0b001111)
        pa, fsc = pt.translate_many(np.array([0x4008], dtype=np.uint64), access)
        assert (fsc[0] == s2pt.FSC_NONE) == bool(prot & need)
    pt.check()
    m = ReferenceStage2(xnx=True)
    m.map(0x4000, 0x9000, 4096, prot)
    assert m.lookup(0x4000).pte == desc


def test_without_xnx_px_and_ux_go_together():
    pt = s2pt.Stage2()
    for prot in (Prot.PX, Prot.UX, Prot.R | Prot.PX):
        with pytest.raises(s2pt.InvalidArgumentError):
            pt.map(0, 0x1000, 4096, prot)
    pt.map(0, 0x1000, 4096, Prot.RX)
    with pytest.raises(s2pt.InvalidArgumentError):
        pt.protect(0, 4096, Prot.UX)
    assert bits(leaf_desc(pt, 0), 54, 53) == 0b00
    pt.protect(0, 4096, Prot.R)
    assert bits(leaf_desc(pt, 0), 54, 53) == 0b10       # bit 53 stays RES0 without XNX
    xnx = s2pt.Stage2(xnx=True)
    xnx.map(0, 0x1000, 4096, Prot.RX)
    xnx.protect(0, 4096, Prot.R | Prot.PX)
    assert bits(leaf_desc(xnx, 0), 54, 53) == 0b11
    assert xnx.translate(0, Access.EXEC).pa == 0x1000
    assert fault_of(xnx, 0, Access.EXEC_EL0).kind == FaultKind.PERMISSION


def test_xnx_block_translate_many_slow_path():
    """EL1 execute of an XN = 0b11 leaf takes translate_many's general path; it must agree."""
    pt = s2pt.Stage2(xnx=True)
    pt.map(0, 0x4000_0000, 2 * MiB, Prot.PX)
    pt.map(2 * MiB, 0x8000_0000, 16 * 4096, Prot.UX, blocks=False)
    ipas = np.arange(0, 4 * MiB, 4096, dtype=np.uint64)
    for access in (Access.EXEC, Access.EXEC_EL0):
        pa, fsc = pt.translate_many(ipas, access)
        for ipa, p, f in zip(ipas.tolist(), pa.tolist(), fsc.tolist()):
            try:
                assert (p, f) == (pt.translate(ipa, access).pa, s2pt.FSC_NONE)
            except s2pt.Stage2Fault as e:
                assert (p, f) == (0, e.fsc)


# ---- software bits ------------------------------------------------------------------------------


@pytest.mark.parametrize("sw", range(16))
def test_software_bits(sw):
    pt = s2pt.Stage2()
    pt.map(2 * MiB, 0x4000_0000, 2 * MiB, Prot.RW, sw=sw)
    desc = leaf_desc(pt, 2 * MiB)
    # a level-2 block: OA, AF, SH inner, S2AP RW, MemAttr 0xF, XN, type 0b01; sw in 58:55
    block = 0x4000_0000 | 1 << 54 | 1 << 10 | 0b11 << 8 | 0b11 << 6 | 0xF << 2 | 0b01
    assert desc == block | sw << 55
    t = pt.translate(2 * MiB + 8)
    assert (t.sw, t.pa) == (sw, 0x4000_0008)
    assert [m.sw for m in pt.mappings()] == [sw]


def test_software_bit_change_is_in_place_without_event():
    pt = s2pt.Stage2()
    pt.map(0, 0x4000_0000, 2 * MiB, sw=1)
    pt.tlbi_log()
    pages = pt.table_pages
    pt.map(0, 0x4000_0000, 2 * MiB, sw=9)           # same mapping, other software bits
    assert len(pt.tlbi_log()) == 0 and pt.table_pages == pages
    assert pt.lookup(0).sw == 9 and pt.lookup(0).level == 2
    pt.map(0, 0x4000_0000, 4096, sw=5)              # part of the block: split, rest keeps 9
    assert [(m.ipa, m.size, m.sw) for m in pt.mappings()][:2] == [(0, 4096, 5), (4096, 4096, 9)]
    pt.protect(0, 2 * MiB, Prot.R)
    pt.unmap(4096, 4096)
    assert {m.sw for m in pt.mappings()} == {5, 9}
    pt.check()


@pytest.mark.parametrize("sw", [16, -1, 1 << 40])
def test_bad_software_bits(sw):
    pt = s2pt.Stage2()
    with pytest.raises((s2pt.InvalidArgumentError, s2pt.RangeError)):
        pt.map(0, 0, 4096, sw=sw)
    with pytest.raises((s2pt.InvalidArgumentError, s2pt.RangeError)):
        pt.map_many([0], [0], 4096, sw=sw)
    assert pt.table_pages == pt.root_tables and not list(pt.mappings())
    with pytest.raises((s2pt.InvalidArgumentError, s2pt.RangeError)):
        ReferenceStage2().map(0, 0, 4096, sw=sw)
