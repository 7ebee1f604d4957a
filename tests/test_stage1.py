"""Stage-1 tables and the two-dimensional walk, checked against the architecture: geometry
and TCR_EL1 fields from the level formula, descriptor bits read back from guest memory, the
EL1&0 permission rules, every read of a nested walk in hardware order (against independent
walks of both trees), faults with their stage, level, FSC and S1PTW, and the combined memory
type with and without FWB."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

import s2pt
from s2pt import FaultKind, GuestAccess, MemAttr, Prot

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

S1_IPA = 0x4000_0000            # where the guest keeps its stage-1 tables
S1_PA = 0x8000_0000             # where the VM puts that guest RAM
DATA_IPA, DATA_PA = 0x5000_0000, 0xC000_0000
VA = 0x1F0_1234_5000            # below 2^41: a non-zero index at every level


def nested(ipa_bits=48, va_bits=48, granule=4096, s2_granule=4096, fwb=False, pages=16, va=VA):
    """A VM whose stage-2 maps the guest's stage-1 tables (and one data page at ``va``)."""
    vm = s2pt.Stage2(ipa_bits=ipa_bits, granule=s2_granule, fwb=fwb,
                     pool=s2pt.PagePool(256, s2_granule, 1 << 32))
    s1 = s2pt.Stage1(va_bits=va_bits, granule=granule, ips_bits=48, asid=9,
                     pool=s2pt.PagePool(pages, granule, S1_IPA))
    vm.map(S1_IPA, S1_PA, pages * granule, blocks=False)
    s1.map(va & ~(granule - 1), DATA_IPA, granule, Prot.RW, user=True)
    vm.map(DATA_IPA, DATA_PA, max(granule, s2_granule), blocks=False)
    return vm, s1


# -- geometry and registers -----------------------------------------------------------------

@pytest.mark.parametrize("va_bits,granule,lpa2", [
    (48, 4096, False), (39, 4096, False), (25, 4096, False), (42, 4096, False),
    (48, 16384, False), (47, 16384, False), (52, 16384, True), (36, 16384, False),
    (48, 65536, False), (42, 65536, False), (52, 65536, False), (25, 65536, False),
    (52, 4096, True), (49, 4096, True),
])
def test_geometry_from_the_level_formula(va_bits, granule, lpa2):
    s1 = s2pt.Stage1(va_bits=va_bits, granule=granule, ips_bits=52 if va_bits == 52 else 48,
                     lpa2=lpa2, pool=s2pt.PagePool(4, granule, S1_IPA))
    g = granule.bit_length() - 1
    stride = g - 3
    levels = math.ceil((va_bits - g) / stride)        # no concatenation at stage 1
    assert s1.levels == levels and s1.start_level == 4 - levels
    assert s1.root_entries == 1 << (va_bits - g - stride * (levels - 1))
    assert s1.table_pages == 1 and s1.t0sz == 64 - va_bits
    assert s1.tcr & 0x3F == 64 - va_bits


def test_tcr_and_ttbr_fields():
    s1 = s2pt.Stage1(va_bits=48, granule=65536, ips_bits=40, asid=300,
                     pool=s2pt.PagePool(4, 65536, S1_IPA), mair=0x1234)
    tcr = s1.tcr
    assert (tcr >> 14) & 3 == 0b01                    # TG0: 64K
    assert (tcr >> 32) & 7 == 0b010                   # IPS: 40 bits
    assert (tcr >> 8) & 3 == 1 and (tcr >> 10) & 3 == 1 and (tcr >> 12) & 3 == 3
    assert tcr >> 23 & 1 == 1                         # EPD1: TTBR1 walks disabled
    assert tcr >> 36 & 1 == 1                         # AS: 16-bit ASIDs
    assert s1.ttbr == s1.root_ipa | 300 << 48 and s1.root_ipa == S1_IPA
    assert s1.mair == 0x1234
    four_k = s2pt.Stage1(pool=s2pt.PagePool(4, 4096, S1_IPA))
    assert (four_k.tcr >> 14) & 3 == 0 and (four_k.tcr >> 32) & 7 == 0b101
    assert four_k.mair == s2pt.DEFAULT_MAIR


@pytest.mark.parametrize("kwargs", [
    dict(va_bits=24), dict(va_bits=49), dict(va_bits=53, lpa2=True),
    dict(ips_bits=52), dict(ips_bits=46), dict(granule=8192), dict(asid=1 << 16),
    dict(granule=65536, lpa2=True),
])
def test_bad_geometry_is_a_config_error(kwargs):
    granule = kwargs.get("granule", 4096)
    with pytest.raises(s2pt.ConfigError):
        s2pt.Stage1(pool=s2pt.PagePool(4, 4096 if granule == 8192 else granule, S1_IPA),
                    **kwargs)


def test_pool_must_suit_the_tables():
    with pytest.raises(s2pt.ConfigError):             # 16K tables, 4K pool pages
        s2pt.Stage1(granule=16384, pool=s2pt.PagePool(4, 4096, S1_IPA))
    with pytest.raises(s2pt.ConfigError):             # pool above the 32-bit IPS
        s2pt.Stage1(ips_bits=32, pool=s2pt.PagePool(4, 4096, 1 << 33))


# -- descriptors read back from guest memory ------------------------------------------------

def test_leaf_bits_in_guest_memory():
    s1 = s2pt.Stage1(pool=s2pt.PagePool(16, 4096, S1_IPA))
    s1.map(VA, 0x9000_0000, 4 * KiB, Prot.R | Prot.UX, attr=3, user=True, global_=False)
    leaf_step = s1.walk(VA)[-1]
    assert leaf_step.level == 3
    desc = int(s1.pool.page_words(leaf_step.table_pa)[leaf_step.index])
    assert desc == leaf_step.desc
    assert desc & 3 == 0b11                           # page
    assert desc & ~0xFFF & ((1 << 48) - 1) == 0x9000_0000
    assert (desc >> 2) & 7 == 3                       # AttrIndx
    assert (desc >> 5) & 1 == 0                       # NS
    assert (desc >> 6) & 3 == 0b11                    # AP[2:1]: read-only, EL0 too
    assert (desc >> 8) & 3 == 0b11                    # inner shareable
    assert (desc >> 10) & 1 == 1                      # AF
    assert (desc >> 11) & 1 == 1                      # nG
    assert (desc >> 53) & 1 == 1 and (desc >> 54) & 1 == 0   # PXN set, UXN clear
    # A 2 MiB block, EL1 RWX, global: type 0b01 at level 2, AP 0b00, PXN = UXN = 0.
    s1.map(0x4020_0000, 0x6000_0000, 2 * MiB, Prot.RWX)
    block = s1.walk(0x4020_0000)[-1]
    assert block.level == 2 and block.desc & 3 == 0b01
    assert (block.desc >> 6) & 3 == 0 and (block.desc >> 11) & 1 == 0
    assert (block.desc >> 53) & 3 == 0
    # Table descriptors: no APTable / XNTable / PXNTable limits.
    assert all(step.desc >> 59 == 0 and step.desc & 3 == 3 for step in s1.walk(VA)[:-1])
    t = s1.translate(VA + 0x10, GuestAccess.EXEC_EL0)
    assert (t.pa, t.level, t.memattr, t.prot) == (0x9000_0010, 3, 3, Prot.R | Prot.UX | Prot.USER)
    assert [(m.ipa, m.pa, m.level) for m in s1.mappings()] == [
        (0x4020_0000, 0x6000_0000, 2), (VA, 0x9000_0000, 3)]      # in VA order
    s1.check()


def test_mappings_and_table_pages_follow_kvm_page_empty():
    s1 = s2pt.Stage1(pool=s2pt.PagePool(16, 4096, S1_IPA))
    s1.map(VA, 0x9000_0000, 8 * KiB)
    assert s1.table_pages == 4                        # root + levels 1, 2, 3
    assert [(m.ipa, m.pa, m.size) for m in s1.mappings()] == [
        (VA, 0x9000_0000, 4 * KiB), (VA + 4 * KiB, 0x9000_1000, 4 * KiB)]
    assert s1.unmap(VA, 4 * KiB) == 4 * KiB and s1.table_pages == 4
    assert s1.unmap(VA + 4 * KiB, 4 * KiB) == 4 * KiB
    assert s1.table_pages == 1 and s1.pool.used == 1  # every emptied table freed at once
    assert s1.lookup(VA) is None


# -- EL1&0 permissions --------------------------------------------------------------------

A = GuestAccess
PERMISSIONS = [
    (Prot.R, {A.READ}),
    (Prot.RW, {A.READ, A.WRITE}),
    (Prot.RW | Prot.PX, {A.READ, A.WRITE, A.EXEC}),
    (Prot.R | Prot.UX, {A.READ, A.EXEC_EL0}),                   # execute-only at EL0
    (Prot.R | Prot.USER, {A.READ, A.READ_EL0}),
    (Prot.R | Prot.USER | Prot.PX, {A.READ, A.READ_EL0, A.EXEC}),
    (Prot.RW | Prot.USER, {A.READ, A.WRITE, A.READ_EL0, A.WRITE_EL0}),
    # Writable at EL0: never executable at EL1 (implicit PXN).
    (Prot.RWX | Prot.USER, {A.READ, A.WRITE, A.READ_EL0, A.WRITE_EL0, A.EXEC_EL0}),
]


@pytest.mark.parametrize("prot,allowed", PERMISSIONS, ids=lambda p: repr(p))
def test_el1_and_el0_permissions(prot, allowed):
    s1 = s2pt.Stage1(pool=s2pt.PagePool(16, 4096, S1_IPA))
    s1.map(VA, 0x9000_0000, 4 * KiB, prot)
    for access in GuestAccess:
        if access in allowed:
            assert s1.translate(VA + 8, access).pa == 0x9000_0008
        else:
            with pytest.raises(s2pt.Stage1Fault) as info:
                s1.translate(VA + 8, access)
            fault = info.value
            assert (fault.kind, fault.level, fault.fsc) == (FaultKind.PERMISSION, 3, 0x0F)
            assert (fault.stage, fault.s1ptw, fault.va, fault.ipa) == (1, False, VA + 8, None)


def test_stage1_translation_and_access_flag_faults():
    s1 = s2pt.Stage1(va_bits=39, pool=s2pt.PagePool(16, 4096, S1_IPA))
    with pytest.raises(s2pt.Stage1Fault) as info:
        s1.translate(1 << 39)                         # beyond the VA size: level 0
    assert info.value.fsc == 0x04
    with pytest.raises(s2pt.Stage1Fault) as info:
        s1.translate(0x1000)                          # empty root at level 1
    assert info.value.fsc == 0x05
    s1.map(0x1000, 0x2000, 4 * KiB, af=False)
    with pytest.raises(s2pt.Stage1Fault) as info:
        s1.translate(0x1000, GuestAccess.WRITE_EL0)   # AF before permission
    assert info.value.kind == FaultKind.ACCESS_FLAG and info.value.fsc == 0x0B
    assert pickle.loads(pickle.dumps(info.value)).fsc == 0x0B


def test_bad_input_changes_nothing():
    s1 = s2pt.Stage1(pool=s2pt.PagePool(4, 4096, S1_IPA))
    s1.map(VA, 0x9000_0000, 4 * KiB)
    before = (s1.table_pages, s1.pool.used, s1.walk(VA))
    with pytest.raises(s2pt.InvalidArgumentError):
        s1.map(VA, 0x9000_0000, 4 * KiB, Prot.W)      # stage 1 always grants EL1 read
    with pytest.raises(s2pt.InvalidArgumentError):
        s1.map(VA, 0x9000_0000, 4 * KiB, attr=8)      # AttrIndx is 3 bits
    with pytest.raises(s2pt.InvalidArgumentError):
        s1.protect(VA, 4 * KiB, Prot.X)
    with pytest.raises(s2pt.AlignmentError):
        s1.map(VA + 8, 0x9000_0000, 4 * KiB)
    with pytest.raises(s2pt.RangeError):
        s1.map(1 << 48, 0x9000_0000, 4 * KiB)
    with pytest.raises(s2pt.RangeError):
        s1.map(0, 1 << 48, 4 * KiB)                   # beyond the 48-bit IPS
    with pytest.raises(s2pt.PoolExhaustedError):
        s1.map(0x10_0000_0000, 0x9000_0000, 4 * KiB)  # new level-1..3 tables; the 4 pages are used
    with pytest.raises(s2pt.InvalidArgumentError):
        s1.translate(VA, 6)
    with pytest.raises(s2pt.ArgumentTypeError):
        s1.map(float(VA), 0x9000_0000, 4 * KiB)
    assert (s1.table_pages, s1.pool.used, s1.walk(VA)) == before
    s1.check()
    vm = s2pt.Stage2()
    with pytest.raises(s2pt.InvalidArgumentError):
        vm.map(0, 0, 4 * KiB, Prot.R | Prot.USER)     # stage 2 has no EL0 access bit
    with pytest.raises(s2pt.InvalidArgumentError):
        vm.translate(0, GuestAccess.READ_EL0)         # nor EL0 data accesses
    assert vm.table_pages == vm.root_tables


# -- the two-dimensional walk ---------------------------------------------------------------

def expected_steps(vm, s1, va):
    """The reads hardware makes, from independent single-stage walks of both trees."""
    out = []

    def s2_walk(ipa):
        for step in vm.walk(ipa):
            out.append((2, step.level, ipa, step.desc_pa, step.desc))

    for step in s1.walk(va):
        s2_walk(step.desc_pa)                         # the descriptor's IPA, through stage 2
        pa = vm.translate(step.desc_pa).pa
        out.append((1, step.level, step.desc_pa, pa, step.desc))
    s2_walk(s1.translate(va).pa)
    return out


@pytest.mark.parametrize("ipa_bits,va_bits,granule,s1_levels,s2_levels", [
    (48, 48, 4096, 4, 4),      # 4 + 4: 24 reads
    (40, 42, 65536, 2, 3),     # 2 + 3: 11 reads
    (40, 47, 16384, 3, 3),
    (40, 39, 4096, 3, 3),
])
def test_nested_reads_in_hardware_order(ipa_bits, va_bits, granule, s1_levels, s2_levels):
    va = VA & ((1 << va_bits) - 1)                    # still a non-zero index at every level
    vm, s1 = nested(ipa_bits, va_bits, granule, va=va)
    assert (s1.levels, vm.levels) == (s1_levels, s2_levels)
    t = vm.translate2(va + 0x678, s1)
    assert len(t.steps) == s1_levels * (s2_levels + 1) + s2_levels
    assert [tuple(step) for step in t.steps] == expected_steps(vm, s1, va + 0x678)
    offset = (va + 0x678) & (granule - 1)
    assert (t.ipa, t.pa) == (DATA_IPA + offset, DATA_PA + offset)
    assert [s.stage for s in t.steps[:s2_levels + 1]] == [2] * s2_levels + [1]
    # Each stage-1 descriptor was read at the PA where stage 2 put the guest's table page.
    for step in t.steps:
        if step.stage == 1:
            assert step.desc_pa == S1_PA + (step.ipa - S1_IPA)
    assert t.s1.level == 3 and t.s2.level == 3
    assert t.prot == Prot.RW | Prot.USER and t.memattr == MemAttr.NORMAL


def test_s1ptw_faults_report_the_table_ipa():
    vm, s1 = nested()
    steps = s1.walk(VA)
    table_ipa = steps[2].table_pa                     # the level-2 table's page
    desc_ipa = steps[2].desc_pa
    vm.unmap(table_ipa, 4 * KiB)
    with pytest.raises(s2pt.Stage2Fault) as info:
        vm.translate2(VA, s1)
    f = info.value
    assert (f.stage, f.s1ptw, f.kind, f.level, f.fsc) == (2, True, FaultKind.TRANSLATION, 3, 0x07)
    assert (f.ipa, f.va) == (desc_ipa, VA)
    vm.map(table_ipa, S1_PA + (table_ipa - S1_IPA), 4 * KiB, Prot.W)   # no stage-2 read
    with pytest.raises(s2pt.Stage2Fault) as info:
        vm.translate2(VA, s1, GuestAccess.WRITE)
    assert (info.value.s1ptw, info.value.kind, info.value.fsc) == (True, FaultKind.PERMISSION,
                                                                   0x0F)
    vm.map(table_ipa, S1_PA + (table_ipa - S1_IPA), 4 * KiB, Prot.R, af=False)
    with pytest.raises(s2pt.Stage2Fault) as info:
        vm.translate2(VA, s1)
    assert (info.value.s1ptw, info.value.fsc) == (True, 0x0B)
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.s1ptw, again.va, again.ipa) == (True, VA, desc_ipa)


def test_stage1_faults_come_before_stage2():
    vm, s1 = nested(40)
    vm.unmap(DATA_IPA, 4 * KiB)                       # stage 2 would fault on the output
    s1.protect(VA, 4 * KiB, Prot.R)
    with pytest.raises(s2pt.Stage1Fault) as info:
        vm.translate2(VA, s1, GuestAccess.READ_EL0)   # stage 1 refuses EL0 first
    assert (info.value.stage, info.value.fsc, info.value.va) == (1, 0x0F, VA)
    with pytest.raises(s2pt.Stage2Fault) as info:
        vm.translate2(VA + 16, s1)
    f = info.value
    # The data page's level-3 table went with its only entry, so stage 2 faults at level 2.
    assert (f.stage, f.s1ptw, f.kind, f.level, f.ipa) == (2, False, FaultKind.TRANSLATION, 2,
                                                          DATA_IPA + 16)
    s1.map(0x1000, 1 << 41, 4 * KiB)                  # an IPA beyond stage 2's 40 bits
    with pytest.raises(s2pt.Stage2Fault) as info:
        vm.translate2(0x1000, s1)
    assert (info.value.fsc, info.value.ipa, info.value.s1ptw) == (0x04, 1 << 41, False)


def test_combined_permissions():
    vm, s1 = nested(40)
    vm.protect(DATA_IPA, 4 * KiB, Prot.R)
    with pytest.raises(s2pt.Stage2Fault) as info:
        vm.translate2(VA, s1, GuestAccess.WRITE_EL0)  # stage 1 lets EL0 write, stage 2 not
    assert (info.value.stage, info.value.kind) == (2, FaultKind.PERMISSION)
    assert vm.translate2(VA, s1, GuestAccess.READ_EL0).prot == Prot.R | Prot.USER
    s1.protect(VA, 4 * KiB, Prot.RWX, user=True)
    vm.protect(DATA_IPA, 4 * KiB, Prot.RWX)
    # EL0-writable: no EL1 execute even with PX at both stages.
    assert vm.translate2(VA, s1).prot == Prot.RW | Prot.USER | Prot.UX
    with pytest.raises(s2pt.Stage1Fault):
        vm.translate2(VA, s1, GuestAccess.EXEC)


MAIR = 0xFF | 0x04 << 8 | 0x44 << 16 | 0xAA << 24 | 0x00 << 32 | 0xF4 << 40


@pytest.mark.parametrize("attr,s2_memattr,fwb,combined", [
    (0, MemAttr.NORMAL, False, MemAttr.NORMAL),
    (1, MemAttr.NORMAL, False, MemAttr.DEVICE_nGnRE),            # Device at either stage wins
    (2, MemAttr.NORMAL, False, MemAttr.NORMAL_NC),               # the weaker cacheability
    (3, MemAttr.NORMAL_NC, False, MemAttr.NORMAL_NC),
    (0, MemAttr.DEVICE_GRE, False, MemAttr.DEVICE_GRE),
    (4, MemAttr.DEVICE_GRE, False, MemAttr.DEVICE_nGnRnE),       # the more restrictive Device
    (5, MemAttr.NORMAL_WT, False, 0x9),                          # outer WT, inner NC
    (1, MemAttr.NORMAL, True, MemAttr.NORMAL),                   # FWB 0b0110 forces WB
    (3, MemAttr.STAGE1, True, MemAttr.NORMAL_WT),                # FWB 0b0111: stage 1 decides
    (1, MemAttr.NORMAL_NC, True, MemAttr.DEVICE_nGnRE),          # FWB NC keeps stage-1 Device
    (0, MemAttr.NORMAL_NC, True, MemAttr.NORMAL_NC),
])
def test_combined_memory_type(attr, s2_memattr, fwb, combined):
    vm = s2pt.Stage2(ipa_bits=40, fwb=fwb, pool=s2pt.PagePool(64, 4096, 1 << 32))
    s1 = s2pt.Stage1(pool=s2pt.PagePool(16, 4096, S1_IPA), mair=MAIR)
    vm.map(S1_IPA, S1_PA, 16 * 4096)
    s1.map(VA, DATA_IPA, 4 * KiB, attr=attr)
    vm.map(DATA_IPA, DATA_PA, 4 * KiB, Prot.R, s2_memattr)
    t = vm.translate2(VA, s1)
    assert t.s1.memattr == attr and t.memattr == combined


def test_translate2_arguments():
    vm, s1 = nested(40)
    with pytest.raises(s2pt.InvalidArgumentError):
        vm.translate2(VA, s1, 6)
    with pytest.raises(TypeError):
        vm.translate2(VA, vm)
    with pytest.raises(s2pt.ArgumentTypeError):
        vm.translate2("0x1000", s1)
    s1.destroy()
    with pytest.raises(s2pt.DestroyedError):
        vm.translate2(VA, s1)


# -- the batch walk ---------------------------------------------------------------------------

def mixed_guest():
    """A VM and guest tables with every outcome of a nested walk: pages, a stage-1 block,
    stage-1 permission and AF faults, stage-2 holes and permissions, an output IPA beyond
    stage 2's 40 bits, and a stage-1 table page stage 2 no longer maps (S1PTW)."""
    vm, s1 = nested(40, pages=32)
    vm.map(DATA_IPA, DATA_PA, 2 * MiB, blocks=False)
    s1.map(VA, DATA_IPA, 64 * KiB, Prot.RWX, user=True, blocks=False)
    s1.protect(VA + 8 * KiB, 4 * KiB, Prot.R)
    s1.unmap(VA + 9 * 4 * KiB, 4 * KiB)
    s1.map(VA + 9 * 4 * KiB, DATA_IPA + 9 * 4 * KiB, 4 * KiB, Prot.RW, af=False)
    vm.protect(DATA_IPA + 10 * 4 * KiB, 4 * KiB, Prot.R)
    s1.unmap(VA + 11 * 4 * KiB, 4 * KiB)
    s1.map(VA + 11 * 4 * KiB, 0x7000_0000, 4 * KiB, Prot.RW)       # stage 2 maps nothing there
    s1.unmap(VA + 12 * 4 * KiB, 4 * KiB)
    s1.map(VA + 12 * 4 * KiB, 1 << 41, 4 * KiB, Prot.RW)           # beyond stage 2's 40 bits
    s1.map(0x4000_0000, DATA_IPA, 2 * MiB, Prot.RW)                # a stage-1 block
    far = 0x7F00_0000_0000
    s1.map(far, DATA_IPA, 4 * KiB)
    vm.unmap(s1.walk(far)[3].table_pa, 4 * KiB)                    # its level-3 table page
    vas = [VA + i * 4 * KiB + 0x18 for i in range(16)] + [
        0x4000_0000 + 0x12_3456, far + 8, 0x3000, 1 << 48, VA + 4 * KiB]
    return vm, s1, vas, far


@pytest.mark.parametrize("access", list(GuestAccess))
def test_translate2_many_gives_what_translate2_gives(access):
    vm, s1, vas, _ = mixed_guest()
    ipa = np.zeros(len(vas), dtype=np.uint64)
    pa, fsc, stage, reads = vm.translate2_many(np.array(vas, dtype=np.uint64), s1, access,
                                               ipa=ipa)
    for i, va in enumerate(vas):
        try:
            t = vm.translate2(va, s1, access)
        except (s2pt.Stage1Fault, s2pt.Stage2Fault) as f:
            assert (pa[i], stage[i]) == (0, f.stage)
            assert fsc[i] == f.fsc | (s2pt.FSC_S1PTW if f.s1ptw else 0)
            assert ipa[i] == (f.ipa if f.stage == 2 else 0)
            continue
        assert (pa[i], ipa[i], fsc[i], stage[i]) == (t.pa, t.ipa, s2pt.FSC_NONE, 0)
        assert reads[i] == len(t.steps)


def test_translate2_many_facts():
    vm, s1, vas, far = mixed_guest()
    pa, fsc, stage, reads = vm.translate2_many(vas, s1, GuestAccess.WRITE)
    assert s1.levels == 4 and vm.levels == 3
    assert pa[1] == DATA_PA + 4 * KiB + 0x18 and reads[1] == 4 * (3 + 1) + 3
    assert (stage[2], fsc[2]) == (1, 0x0F)                         # read-only at stage 1
    assert (stage[9], fsc[9]) == (1, 0x0B)                         # access flag
    assert (stage[10], fsc[10]) == (2, 0x0F)                       # read-only at stage 2
    assert (stage[11], fsc[11]) == (2, 0x06)                       # stage-2 hole, level 2
    assert (stage[12], fsc[12]) == (2, 0x04)                       # IPA beyond 40 bits
    assert pa[16] == DATA_PA + 0x12_3456 and reads[16] == 3 * 4 + 3
    assert (stage[17], fsc[17]) == (2, s2pt.FSC_S1PTW | 0x07)      # S1PTW, level 3
    assert reads[17] == 3 * 4 + 3 and fsc[17] & 0x3F == 0x07
    assert (stage[18], fsc[18]) == (1, 0x05)       # level-1 entry 0 is empty (the block is in 1)
    assert (stage[19], fsc[19], reads[19]) == (1, 0x04, 0)         # VA beyond 48 bits
    # Nothing carries over from one call to the next.
    vm.unmap(DATA_IPA, 2 * MiB)
    assert vm.translate2_many(vas[:1], s1)[2][0] == 2


def test_translate2_many_bad_input():
    vm, s1, vas, _ = mixed_guest()
    with pytest.raises(s2pt.InvalidArgumentError):
        vm.translate2_many(vas, s1, 6)
    with pytest.raises(s2pt.ArgumentTypeError):
        vm.translate2_many(np.array(vas, dtype=np.int64), s1)
    with pytest.raises(s2pt.ArgumentTypeError):
        vm.translate2_many(vas, s1, ipa=np.zeros(len(vas) - 1, dtype=np.uint64))
    with pytest.raises(s2pt.ArgumentTypeError):
        vm.translate2_many(vas, s1, ipa=np.zeros(len(vas), dtype=np.int64))
    with pytest.raises(TypeError):
        vm.translate2_many(vas, vm)
    empty = vm.translate2_many(np.array([], dtype=np.uint64), s1)
    assert [len(a) for a in empty] == [0, 0, 0, 0]
    s1.destroy()
    with pytest.raises(s2pt.DestroyedError):
        vm.translate2_many(vas, s1)


# -- TTBR1 and the regime ------------------------------------------------------------------

@pytest.mark.parametrize("granule,tg1", [(4096, 0b10), (16384, 0b01), (65536, 0b11)])
def test_ttbr1_tcr_half(granule, tg1):
    hi = s2pt.Stage1(va_bits=39, granule=granule, ips_bits=40, ttbr=1,
                     pool=s2pt.PagePool(4, granule, S1_IPA))
    tcr = hi.tcr
    assert (tcr >> 16) & 0x3F == 25 and (tcr >> 30) & 3 == tg1     # T1SZ, TG1 (not TG0's code)
    assert (tcr >> 24) & 3 == 1 and (tcr >> 26) & 3 == 1 and (tcr >> 28) & 3 == 3
    assert tcr & 0xFFFF == 1 << 7                                    # EPD0; no TTBR0 fields
    assert (tcr >> 23) & 1 == 0 and (tcr >> 32) & 7 == 0b010        # EPD1 clear; IPS 40 bits
    assert hi.va_start == (1 << 64) - (1 << 39) and hi.ttbr_index == 1


def regime_guest():
    vm = s2pt.Stage2(ipa_bits=40, pool=s2pt.PagePool(64, 4096, 1 << 32))
    lo = s2pt.Stage1(va_bits=39, asid=4, pool=s2pt.PagePool(16, 4096, S1_IPA))
    hi = s2pt.Stage1(va_bits=39, asid=4, ttbr=1, pool=s2pt.PagePool(16, 4096, S1_IPA + MiB))
    vm.map(S1_IPA, S1_PA, 2 * MiB, blocks=False)
    vm.map(DATA_IPA, DATA_PA, 2 * MiB, blocks=False)
    return vm, lo, hi


def test_ttbr1_tables_take_whole_vas():
    vm, lo, hi = regime_guest()
    top = (1 << 64) - 4 * KiB
    hi.map(top, DATA_IPA + 0x3000, 4 * KiB)                          # the last page of the VA space
    hi.map(hi.va_start, DATA_IPA, 4 * KiB, Prot.R)
    assert [(m.ipa, m.pa) for m in hi.mappings()] == [(hi.va_start, DATA_IPA),
                                                     (top, DATA_IPA + 0x3000)]
    assert hi.translate(top + 8).pa == DATA_IPA + 0x3008
    walk = hi.walk(top)
    assert [s.index for s in walk] == [511, 511, 511]                # the last entry per level
    with pytest.raises(s2pt.RangeError):
        hi.map(0x1000, DATA_IPA, 4 * KiB)                            # a low VA
    with pytest.raises(s2pt.RangeError):
        hi.map(top, DATA_IPA, 8 * KiB)                               # past 2**64
    with pytest.raises(s2pt.Stage1Fault) as info:
        hi.translate(top - 4 * KiB)
    assert info.value.va == top - 4 * KiB and info.value.fsc == 0x07
    assert hi.table_pages == 1 + 2 * 2                               # root; L2 + L3 per end
    assert hi.unmap(top, 4 * KiB) == 4 * KiB and hi.table_pages == 3
    hi.check()


def test_regime_picks_the_half_by_va55():
    vm, lo, hi = regime_guest()
    lo.map(0x1000, DATA_IPA + 0x1000, 4 * KiB)
    hi.map((1 << 64) - 4 * KiB, DATA_IPA + 0x2000, 4 * KiB)
    rg = s2pt.Regime(lo, hi)
    regs = rg.registers()
    assert regs["TTBR0_EL1"] == lo.ttbr and regs["TTBR1_EL1"] == hi.ttbr
    assert regs["TTBR1_EL1"] >> 48 == 4 and regs["MAIR_EL1"] == s2pt.DEFAULT_MAIR
    tcr = rg.tcr
    assert tcr & 0x3F == 25 and (tcr >> 16) & 0x3F == 25 and (tcr >> 7) & 1 == 0
    assert (tcr >> 23) & 1 == 0 and (tcr >> 14) & 3 == 0 and (tcr >> 30) & 3 == 0b10
    assert vm.translate2(0x1010, rg).pa == DATA_PA + 0x1010
    t = vm.translate2((1 << 64) - 8, rg)
    assert t.pa == DATA_PA + 0x2FF8 and len(t.steps) == 3 * (3 + 1) + 3
    assert vm.translate2((1 << 64) - 8, hi).pa == t.pa                # a Stage1 is its own half
    # Bits above the VA size must all equal VA[55] (no TBI); a half without tables faults.
    for bad in (0xFF00_0000_0000_1000, 0x8080_0000_0000_1000, 1 << 39):
        with pytest.raises(s2pt.Stage1Fault) as info:
            vm.translate2(bad, rg)
        assert (info.value.fsc, info.value.va) == (0x04, bad)
    with pytest.raises(s2pt.Stage1Fault) as info:
        vm.translate2((1 << 64) - 8, lo)                             # EPD1
    assert info.value.fsc == 0x04
    vas = np.array([0x1010, (1 << 64) - 8, 1 << 39, (1 << 64) - (1 << 39)], dtype=np.uint64)
    pa, fsc, stage, reads = vm.translate2_many(vas, rg)
    assert pa.tolist()[:2] == [DATA_PA + 0x1010, DATA_PA + 0x2FF8]
    assert stage.tolist() == [0, 0, 1, 1] and fsc.tolist()[2:] == [0x04, 0x05]
    assert reads.tolist() == [15, 15, 0, 4]                          # level-1 entry 0 is empty


def test_regime_refuses_what_one_tcr_cannot_hold():
    vm, lo, hi = regime_guest()
    with pytest.raises(s2pt.InvalidArgumentError):
        s2pt.Regime(hi, lo)                                          # each in its own half
    with pytest.raises(s2pt.InvalidArgumentError):
        s2pt.Regime()
    other = s2pt.Stage1(va_bits=39, asid=5, ttbr=1, pool=s2pt.PagePool(4, 4096, S1_IPA))
    with pytest.raises(s2pt.InvalidArgumentError):
        s2pt.Regime(lo, other)                                       # one ASID (TCR_EL1.A1 = 0)
    mair = s2pt.Stage1(va_bits=39, asid=4, ttbr=1, mair=0xFF,
                       pool=s2pt.PagePool(4, 4096, S1_IPA))
    with pytest.raises(s2pt.InvalidArgumentError):
        s2pt.Regime(lo, mair)
    assert s2pt.Regime(lo, mair, mair=0x44).mair == 0x44
    with pytest.raises(s2pt.ArgumentTypeError):
        s2pt.Regime(vm)
    with pytest.raises(s2pt.InvalidArgumentError):
        s2pt.Stage1(ttbr=2)
    with pytest.raises(TypeError):
        vm.translate2(0x1000, object())


def test_stage1_tlb_events_name_vas():
    """The engine's invalidation rules hold at stage 1 (break-before-make is the Arm ARM's for
    both stages); the events carry VAs, whole ones for TTBR1 tables."""
    lo = s2pt.Stage1(va_bits=39, pool=s2pt.PagePool(16, 4096, S1_IPA))
    lo.map(0x4000_0000, DATA_IPA, 4 * 4 * KiB)
    assert len(lo.tlbi_log()) == 0                                   # new entries: nothing cached
    lo.unmap(0x4000_1000, 4 * KiB)
    lo.protect(0x4000_2000, 4 * KiB, Prot.R)
    ev = lo.tlbi_log()
    assert [(e["kind"], e["ipa"], e["size"], e["level"], e["reason"]) for e in ev] == [
        (s2pt.TLBI_IPA, 0x4000_1000, 4 * KiB, 3, s2pt.TLBI_UNMAP),
        (s2pt.TLBI_IPA, 0x4000_2000, 4 * KiB, 3, s2pt.TLBI_PERM)]
    hi = s2pt.Stage1(va_bits=39, ttbr=1, pool=s2pt.PagePool(16, 4096, S1_IPA + MiB))
    top = (1 << 64) - 4 * KiB
    hi.map(top - 4 * KiB, DATA_IPA, 8 * KiB)
    hi.unmap(top, 4 * KiB)
    ev = hi.tlbi_log()
    assert [(e["ipa"], e["level"], e["reason"]) for e in ev] == [(top, 3, s2pt.TLBI_UNMAP)]
    hi.map((1 << 64) - 2 * MiB, DATA_IPA, 2 * MiB)                   # pages give way to a block
    ev = hi.tlbi_log()
    assert len(ev) == 1 and ev[0]["ipa"] == (1 << 64) - 2 * MiB and ev[0]["bbm"] == 1
    assert ev[0]["reason"] == s2pt.TLBI_COALESCE and ev[0]["size"] == 2 * MiB
    off = s2pt.Stage1(va_bits=39, tlbi_capacity=0, pool=s2pt.PagePool(8, 4096, S1_IPA))
    off.map(0, DATA_IPA, 4 * KiB)
    off.unmap(0, 4 * KiB)
    assert len(off.tlbi_log()) == 0


def test_a_guest_travels_with_its_vm():
    """pickle / deepcopy of (VM, regime): the pools travel once each, the trees are checked on
    the way in, and the copy walks as the original, TTBR1 VAs and TLB log included."""
    vm, lo, hi = regime_guest()
    lo.map(0x1000, DATA_IPA + 0x1000, 4 * KiB, Prot.RW, user=True, global_=False)
    hi.map((1 << 64) - 8 * KiB, DATA_IPA + 0x2000, 8 * KiB)
    hi.unmap((1 << 64) - 4 * KiB, 4 * KiB)
    rg = s2pt.Regime(lo, hi, mair=0xFF44)
    vm2, rg2 = pickle.loads(pickle.dumps((vm, rg)))
    assert rg2.mair == 0xFF44 and rg2.registers() == rg.registers()
    assert rg2.ttbr1.pool is not hi.pool and rg2.ttbr1.mappings() == hi.mappings()
    assert rg2.ttbr1.tlbi_log(clear=False).tolist() == hi.tlbi_log(clear=False).tolist()
    for va in (0x1010, (1 << 64) - 8 * KiB + 0x18):
        t, t2 = vm.translate2(va, rg), vm2.translate2(va, rg2)
        assert (t2.pa, t2.ipa, t2.prot, t2.steps) == (t.pa, t.ipa, t.prot, t.steps)
    import copy
    lo3 = copy.deepcopy(lo)
    lo3.unmap(0x1000, 4 * KiB)
    assert lo.translate(0x1000).pa == DATA_IPA + 0x1000 and lo3.lookup(0x1000) is None
    lo3.check()
    state = lo._state()
    state["version"] = s2pt._core.STATE_VERSION + 1
    with pytest.raises(s2pt.StateFormatError):
        s2pt._core._s1_from_state(lo.pool, state)


def test_five_level_stage1_with_lpa2():
    """4K with LPA2 and a 52-bit VA: five levels from level -1 (a 16-entry root, T0SZ 12),
    level-0 blocks of 512 GiB, 5 * (4 + 1) + 4 = 29 reads over a four-level stage 2, and
    FEAT_LPA2's level -1 translation fault, FSC 0b101011."""
    vm = s2pt.Stage2(ipa_bits=48, pool=s2pt.PagePool(64, 4096, 1 << 33))
    s1 = s2pt.Stage1(va_bits=52, ips_bits=52, lpa2=True, pool=s2pt.PagePool(16, 4096, S1_IPA))
    assert (s1.levels, s1.start_level, s1.root_entries, s1.t0sz) == (5, -1, 16, 12)
    assert (s1.tcr >> 59) & 1 == 1                                  # DS
    vm.map(S1_IPA, S1_PA, 16 * 4096, blocks=False)
    vm.map(DATA_IPA, DATA_PA, 4 * KiB)
    va = 0x000F_1234_5678_9000                                      # root index 15
    s1.map(va, DATA_IPA, 4 * KiB)
    walk = s1.walk(va)
    assert [s.level for s in walk] == [-1, 0, 1, 2, 3] and walk[0].index == 15
    assert s1.table_pages == 5
    t = vm.translate2(va + 0x10, s1)
    assert (t.pa, len(t.steps)) == (DATA_PA + 0x10, 29) and t.steps[4].level == -1
    s1.map(0x0003_0000_0000_0000, 1 << 39, 1 << 39)                 # a level-0 block
    assert s1.lookup(0x0003_0000_0000_0000).level == 0
    with pytest.raises(s2pt.Stage1Fault) as info:
        s1.translate(0x0001_0000_0000_0000)
    assert (info.value.level, info.value.fsc) == (-1, 0x2B)
    assert s2pt.FaultKind.TRANSLATION.fsc(-1) == 0x2B and s2pt.FaultKind.ADDRESS_SIZE.fsc(-1) == 0x29
    pa, fsc, stage, reads = vm.translate2_many([va, 0x0001_0000_0000_0000], s1)
    assert fsc.tolist() == [s2pt.FSC_NONE, 0x2B] and reads.tolist() == [29, 5]
    s1.check()


def test_review_fixes_travel_registers_and_tagged_normal():
    """A pickled stage-1 Translation keeps AttrIndx; a TTBR1-only regime takes its ASID from
    TTBR1_EL1 (TCR_EL1.A1 = 1); MAIR 0xF0 (FEAT_MTE2 Tagged Normal) is write-back."""
    vm, lo, hi = regime_guest()
    lo.map(0x1000, DATA_IPA, 4 * KiB, attr=3)
    t = lo.translate(0x1000)
    again = pickle.loads(pickle.dumps(t))
    assert again.memattr == 3 and type(again.memattr) is int and again == t
    regs = s2pt.Regime(ttbr1=hi).registers()
    assert regs["TTBR1_EL1"] >> 48 == 4 and (regs["TCR_EL1"] >> 22) & 1 == 1   # A1: TTBR1's
    assert (s2pt.Regime(lo, hi).tcr >> 22) & 1 == 0
    tagged = s2pt.Stage1(va_bits=39, mair=0xF0, pool=s2pt.PagePool(8, 4096, S1_IPA + 2 * MiB))
    vm.map(S1_IPA + 2 * MiB, S1_PA + 2 * MiB, 8 * 4096, blocks=False)
    tagged.map(0x2000, DATA_IPA, 4 * KiB)
    assert vm.translate2(0x2000, tagged).memattr == MemAttr.NORMAL
    big = s2pt.Stage1(va_bits=39, pool=s2pt.PagePool(16, 4096, S1_IPA + 4 * MiB))
    big.map(0x4000_0000, DATA_IPA, 4 * MiB, blocks=False)         # a GIL-free call
    assert big.unmap(0x4000_0000, 4 * MiB) == 4 * MiB and big.table_pages == 1
    with pytest.raises(s2pt.InvalidArgumentError):
        s2pt.Regime(lo).__init__(lo)
    with pytest.raises(s2pt.InvalidArgumentError):
        vm.translate2(0x1000, s2pt.Regime.__new__(s2pt.Regime))
