"""Differential state machines for stage 1 and the two-dimensional walk: the engine
(s2pt.Stage1 and s2pt.Stage2.translate2 / translate2_many) against the reference models
(s2pt.model.ReferenceStage1, ReferenceStage2.translate2 / translate2_many).

Each machine runs a guest's stage-1 tables (in a small PagePool of guest RAM, so that pool
exhaustion happens too) under a VM's stage 2. It interleaves stage-1 map / unmap / protect
calls (valid ones, identical remaps, calls aimed at existing leaves and bad ones) with stage-2
map / unmap / protect / access-flag calls, both on the data the guest maps and on the guest
RAM holding the stage-1 table pages (a page unmapped, made unreadable or old provokes S1PTW
faults; a heal maps it all back), and with nested translations of random VAs for every
GuestAccess. Every call must end the same way in engine and model. After every step: both
tables' leaves (mappings()), table pages and pool use, check() of all four, stage-1 translate()
of probe VAs, translate2_many() of the probes for every GuestAccess (PA, FSC with S1PTW,
faulting stage, number of reads, IPA), and translate2() of the latest probes (the whole
Translation2: PA, IPA, both leaves, combined permissions and memory type, every read in
hardware order; or the fault's stage, kind, level, FSC, IPA, VA and S1PTW).

The model decides everything but where the engine put each table page: the model's nested
walk is given the table addresses the engines' single-stage walks report (``s1.walk(va)``,
``vm.walk(ipa)``) and predicts the rest from its own leaves.

Every stage-1 granule runs, each under a different stage-2 granule (4K/4K, 16K/4K, 64K/16K with
FWB, 4K/64K with FWB). One more machine runs a whole EL1&0 regime (s2pt.Regime against
s2pt.model.ReferenceRegime): TTBR0 tables (4K granule, 39-bit VAs) and TTBR1 tables (16K
granule, 48-bit VAs: the top of the address space) in two pools of guest RAM, every stage-1 rule
aimed at one half or the other, stage-2 changes to either half's table pages, and nested
translations of VAs in both halves, between them and non-canonical ones (VA[55] picks the half;
bits [63:va_bits] must all equal it), through the regime and through each half alone; TCR_EL1
and the other registers are compared with the model's.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import s2pt
from s2pt import GuestAccess, MemAttr, Prot, Stage1Fault, Stage2Fault
from s2pt.model import ReferencePool, ReferenceRegime, ReferenceStage1, ReferenceStage2

sys.path.insert(0, os.path.dirname(__file__))
from test_state_machine import ranges  # noqa: E402  ((addr, size) in a Space, as in a Geo)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
U64 = 1 << 64
MAIR = 0xBB_0C_F4_00_AA_44_04_FF  # WB, Device-nGnRE, NC, WT, Device-nGnRnE, WB/NC, GRE, WT
# The regime's own MAIR_EL1 (overriding the tables'): WT, WB/NC, Device-nGnRnE, GRE, NC,
# Device-nGnRE, WB, WB.
REGIME_MAIR = 0xBB_FF_04_44_0C_0C_F4_AA
ACCESSES = list(GuestAccess)


def span(granule, level):
    return 1 << ((granule.bit_length() - 4) * (4 - level) + 3)


@dataclass(frozen=True)
class Space:
    """An address region one side of the machine works in (what ``ranges`` draws from)."""

    granule: int
    min_block: int
    region_base: int
    region_blocks: int

    def span(self, level):
        return span(self.granule, level)

    @property
    def top_span(self):
        return self.span(self.min_block)

    @property
    def units(self):
        return sorted({self.granule} | {self.span(lv) for lv in range(self.min_block, 3)})

    @property
    def region_size(self):
        return self.region_blocks * self.top_span

    @property
    def region_end(self):
        return self.region_base + self.region_size

    @property
    def page_limit(self):
        """Largest range mapped with pages only: a level-2 span (4K: 512 pages) at most."""
        return min(self.span(2), 64 * self.granule) + 4 * self.granule


@dataclass(frozen=True)
class Upper:
    """TTBR1 tables of a regime machine (the VA region is given as whole VAs)."""

    s1_granule: int
    va_bits: int
    va_base: int
    va_blocks: int
    s1_pages: int
    pool_ipa: int


@dataclass(frozen=True)
class Nest:
    name: str
    s1_granule: int
    va_bits: int
    va_base: int
    va_blocks: int
    s1_pages: int  # the guest's table pool
    s2_granule: int
    ipa_bits: int
    pool_ipa: int  # guest RAM holding the stage-1 tables
    data_ipa: int  # where the guest's mappings point (stage 2 maps it)
    weight: float = 1.0
    fwb: bool = False
    upper: Optional[Upper] = None  # TTBR1 tables too: the guest runs a Regime of both halves


NESTS = [
    # 4 + 3 levels; the VA region straddles a level-0 entry (512 GiB); 2 concatenated s2 roots.
    Nest("s1_4k_48__s2_4k_40", 4096, 48, 511 * GiB, 2, 9, 4096, 40, 1 * GiB, 2 * GiB,
         weight=0.5),
    # 3 + 3 levels, 32 MiB stage-1 blocks across a 64 GiB level-1 entry; one 16K table page
    # is four stage-2 pages (S1PTW faults for some of its descriptors only).
    Nest("s1_16k_47__s2_4k_36", 16384, 47, 64 * GiB - 64 * MiB, 4, 6, 4096, 36, 1 * GiB,
         2 * GiB, weight=0.5),
    # 2 + 2 levels: 8192-entry stage-1 root, 512 MiB stage-1 blocks; 16 concatenated stage-2
    # roots with 32 MiB blocks; FWB memory types. Room for the root and one table only.
    Nest("s1_64k_42__s2_16k_40_fwb", 65536, 42, 3 * 512 * MiB, 2, 2, 16384, 40, 1 * GiB,
         4 * GiB, weight=0.3, fwb=True),
    # 3 + 2 levels, the VA region at the VA top; one 64K stage-2 page holds all the stage-1
    # tables (and more); FWB memory types.
    Nest("s1_4k_39__s2_64k_42_fwb", 4096, 39, 510 * GiB, 2, 5, 65536, 42, 1 * GiB, 4 * GiB,
         weight=0.25, fwb=True),
    # 5 + 4 levels: 4K with LPA2 and a 52-bit VA starts at level -1 (a 16-entry root; 512 GiB
    # blocks at level 0), the region across the 2**48 boundary of a level -1 entry; 29 reads.
    Nest("s1_4k_52_lpa2__s2_4k_48", 4096, 52, (1 << 48) - 512 * GiB, 2, 12, 4096, 48,
         1 * GiB, 2 * GiB, weight=0.3),
    # A regime: TTBR0 tables 4K / 39-bit (3 levels, 1 GiB blocks, the region across the first
    # 1 GiB entries) and TTBR1 tables 16K / 48-bit (4 levels: a 2-entry level-0 root, 32 MiB
    # blocks, the region across a 64 GiB level-1 entry below the top of the address space),
    # each in its own pool of guest RAM, under a 4K stage 2 (a 16K table page is four stage-2
    # pages).
    Nest("regime_4k_39_16k_48__s2_4k_40", 4096, 39, 0, 2, 6, 4096, 40, 1 * GiB, 2 * GiB,
         weight=0.45, upper=Upper(16384, 48, U64 - 64 * GiB - 64 * MiB, 4, 7, 1 * GiB + 1 * MiB)),
]

S1_PROTS = [Prot.R, Prot.RW, Prot.RW, Prot.RX, Prot.RWX, Prot.R | Prot.UX, Prot.R | Prot.PX,
            Prot.RW | Prot.PX, Prot.R | Prot.USER]
S2_PROTS = [Prot.R, Prot.RW, Prot.RW, Prot.RWX, Prot.RX, Prot.NONE, Prot.W, Prot.X]


def outcome(call):
    """What a call did: ("ok", value) or ("raise", class[, fault details])."""
    try:
        value = call()
    except (Stage1Fault, Stage2Fault) as f:
        return ("raise", type(f), f.stage, int(f.kind), f.level, f.fsc, f.ipa, f.va, f.s1ptw)
    except Exception as e:  # noqa: BLE001 - the class is what is compared
        return ("raise", type(e))
    if isinstance(value, tuple) and value and isinstance(value[0], np.ndarray):
        value = tuple((a.dtype.str, a.tolist()) for a in value)
    elif hasattr(value, "__next__"):
        value = list(value)
    return ("ok", value)


class Half:
    """One stage-1 table of the guest (TTBR0 or TTBR1), engine and model, and its guest RAM."""

    def __init__(self, ttbr, granule, va_bits, va_base, va_blocks, pages, pool_ipa, g2):
        self.ttbr, self.granule, self.va_bits, self.pages = ttbr, granule, va_bits, pages
        lpa2 = va_bits > 48 and granule != 65536  # 4K: five levels from level -1
        self.s1 = s2pt.Stage1(va_bits=va_bits, granule=granule, ips_bits=48, asid=5,
                              pool=s2pt.PagePool(pages, granule, pool_ipa), mair=MAIR, ttbr=ttbr,
                              lpa2=lpa2)
        self.mpool = ReferencePool(pages)
        self.ms1 = ReferenceStage1(va_bits=va_bits, granule=granule, ips_bits=48, asid=5,
                                   pool=self.mpool, mair=MAIR, root_ipa=pool_ipa, ttbr=ttbr,
                                   lpa2=lpa2)
        for attr in ("levels", "start_level", "root_entries", "min_block_level", "t0sz",
                     "ttbr", "table_pages", "tcr", "ttbr_index", "va_start", "mair"):
            assert getattr(self.s1, attr) == getattr(self.ms1, attr), attr
        self.va = Space(granule, self.s1.min_block_level, va_base, va_blocks)
        self.va_start = self.s1.va_start
        self.top = self.va_start + (1 << va_bits)  # one past the last VA (2**64 for TTBR1)
        self.pool_ipa = pool_ipa
        self.pool_size = -(-pages * granule // g2) * g2  # what stage 2 maps of guest RAM
        assert pool_ipa % max(granule, g2) == 0
        self.pool_pa = (1 << 40) + pool_ipa - 1 * GiB  # host PAs of the guest's table pages
        g1, base, sp = granule, va_base, self.va
        fixed = {self.va_start, self.va_start + g1, self.top - g1, self.top - 1, self.top,
                 U64 - 1, base - g1, base, sp.region_end - 1, sp.region_end}
        for unit in sp.units[1:]:
            step = max(1, sp.region_size // unit // 4)
            for k in range(0, sp.region_size // unit + 1, step):
                fixed.update({base + k * unit, base + k * unit - g1 + 0x18})
        self.fixed_probes = sorted(x for x in fixed if 0 <= x < U64)

    def owns(self, va):
        return self.va_start <= va < self.top


class NestedDifferential(RuleBasedStateMachine):
    NEST: Nest

    def __init__(self):
        super().__init__()
        n = self.NEST
        g2 = n.s2_granule
        self.vm = s2pt.Stage2(ipa_bits=n.ipa_bits, granule=g2, pa_bits=48, fwb=n.fwb)
        self.mvm = ReferenceStage2(ipa_bits=n.ipa_bits, granule=g2, pa_bits=48, fwb=n.fwb,
                                   pool=ReferencePool(self.vm.pool.capacity))
        self.halves = [Half(0, n.s1_granule, n.va_bits, n.va_base, n.va_blocks, n.s1_pages,
                            n.pool_ipa, g2)]
        u = n.upper
        if u is not None:
            self.halves.append(Half(1, u.s1_granule, u.va_bits, u.va_base, u.va_blocks,
                                    u.s1_pages, u.pool_ipa, g2))
            lo, hi = self.halves
            plain = s2pt.Regime(lo.s1, hi.s1)  # the tables' MAIR
            assert plain.registers() == ReferenceRegime(lo.ms1, hi.ms1).registers()
            assert plain.mair == MAIR
            # The nested walks use the regime's MAIR (the halves alone: the tables').
            self.target = s2pt.Regime(lo.s1, hi.s1, mair=REGIME_MAIR)
            self.mtarget = ReferenceRegime(lo.ms1, hi.ms1, mair=REGIME_MAIR)
            assert self.target.tcr == self.mtarget.tcr
            assert self.target.registers() == self.mtarget.registers()
            tcr = self.mtarget.tcr  # both halves walked: EPD0 and EPD1 clear
            assert not tcr & (1 << 7 | 1 << 23) and tcr & 0x3F == 64 - n.va_bits
            assert tcr >> 16 & 0x3F == 64 - u.va_bits
        else:
            self.target, self.mtarget = self.halves[0].s1, self.halves[0].ms1
        self.h = self.halves[0]  # the half the current rule works on
        cfg2 = self.vm.config
        size = max(h.va.region_size for h in self.halves)
        blocks2 = max(1, size // span(g2, cfg2.min_block_level))
        self.data = Space(g2, cfg2.min_block_level, n.data_ipa, blocks2)
        assert self.data.region_size >= size
        self.data_pa = 1 << 41
        self.fixed_probes = sorted({x for h in self.halves for x in h.fixed_probes})
        if u is not None:  # between the halves and non-canonical (no TBI): level-0 faults
            lo, hi = self.halves
            self.fixed_probes += [1 << 55, (1 << 55) - 1, 1 << 63, hi.va_start - 1,
                                  hi.va_start - hi.granule, 0xFF00_0000_0000_0000 | n.va_base,
                                  (1 << 55) | (hi.va.region_base & ((1 << u.va_bits) - 1)),
                                  (0xFF7F << 48) | (hi.va.region_base & ((1 << 48) - 1))]
        self.recent_probes = []
        self.turn = 0  # the access kind whose whole Translation2 the invariant compares

    # The half the current rule works on.
    @property
    def s1(self):
        return self.h.s1

    @property
    def ms1(self):
        return self.h.ms1

    @property
    def va(self):
        return self.h.va

    def pick(self, data):
        """Aim the rule at one half (drawn when the guest has two)."""
        if len(self.halves) > 1:
            self.h = self.halves[data.draw(st.integers(0, len(self.halves) - 1), label="half")]
        return self.h

    def half_of(self, va):
        """The half whose tables VA[55] selects (None: a single TTBR0 table, an upper VA)."""
        for h in self.halves:
            if h.ttbr == (va >> 55 & 1):
                return h
        return None

    # -- helpers -------------------------------------------------------------------------------
    def both(self, call, engine, model):
        got = outcome(lambda: call(engine))
        want = outcome(lambda: call(model))
        assert got == want, f"engine: {got!r}\nmodel:  {want!r}"
        return got

    def stage1(self, call, half=None):
        h = self.h if half is None else half
        return self.both(call, h.s1, h.ms1)

    def stage2(self, call):
        return self.both(call, self.vm, self.mvm)

    def note(self, va, size):
        g = self.va.granule
        self.recent_probes = [x for x in (va - g, va, va + size - 1, va + size, va + size // 2)
                              if 0 <= x < U64]

    def structure(self):
        """Where the engines put their tables (the model's only input from them), memoised
        for one unchanged state. The stage-1 walk is that of the half VA[55] picks."""
        s1_memo, s2_memo = {}, {}

        def s1_tables(va):
            if va not in s1_memo:
                h = self.half_of(va)
                s1_memo[va] = {step.level: step.table_pa for step in h.s1.walk(va)}
            return s1_memo[va]

        def s2_tables(ipa):
            if ipa not in s2_memo:
                s2_memo[ipa] = {step.level: step.table_pa for step in self.vm.walk(ipa)}
            return s2_memo[ipa]

        return s1_tables, s2_tables

    def targets(self, which):
        """(engine, model) stage-1 argument of the nested walk: the guest's regime (or its one
        table), or one half alone (a regime whose other half has no tables)."""
        if which is None:
            return self.target, self.mtarget
        h = self.halves[which]
        return h.s1, h.ms1

    def nested(self, vas, accesses, full, which=None):
        """translate2_many of ``vas`` for each access (and translate2 of each VA if full)."""
        s1_tables, s2_tables = self.structure()
        eng, mod = self.targets(which)
        array = np.array(vas, dtype=np.uint64)
        for access in accesses:
            ipa_e = np.zeros(len(vas), dtype=np.uint64)
            ipa_m = np.zeros(len(vas), dtype=np.uint64)
            got = outcome(lambda: self.vm.translate2_many(array, eng, access, ipa=ipa_e))
            want = outcome(lambda: self.mvm.translate2_many(
                array, mod, access, s1_tables=s1_tables, s2_tables=s2_tables, ipa=ipa_m))
            assert got == want, f"translate2_many({access!r}):\nengine: {got!r}\nmodel:  {want!r}"
            assert ipa_e.tolist() == ipa_m.tolist(), f"translate2_many({access!r}) ipa"
            if not full:
                continue
            for va in vas:
                got = outcome(lambda: self.vm.translate2(va, eng, access))
                want = outcome(lambda: self.mvm.translate2(
                    va, mod, access, s1_tables=s1_tables, s2_tables=s2_tables))
                assert got == want, (f"translate2({va:#x}, {access!r}):\n"
                                     f"engine: {got!r}\nmodel:  {want!r}")

    def guest_vas(self, data, n):
        """VAs a guest touches: mostly in its leaves (any byte offset), some in holes, beyond
        the tables' ranges or (with two halves) non-canonical."""
        out = []
        for _ in range(n):
            h = self.pick(data)
            leaves = h.ms1.mappings(h.va.region_base, h.va.region_size)
            kind = data.draw(st.sampled_from(["leaf", "leaf", "region", "any"]), label="where")
            if kind == "leaf" and leaves:
                m = data.draw(st.sampled_from(leaves), label="leaf")
                out.append(m.ipa + data.draw(st.integers(0, m.size - 1), label="offset"))
            elif kind in ("region", "leaf"):
                out.append(data.draw(st.integers(h.va.region_base, h.va.region_end - 1),
                                     label="va"))
            elif h.ttbr == 0:
                out.append(data.draw(st.integers(0, h.top + 4096), label="va"))
            else:
                low = data.draw(st.integers(0, (1 << h.va_bits) - 1), label="low")
                high = data.draw(st.sampled_from([U64 - (1 << h.va_bits), 1 << 55, 1 << 63,
                                                  U64 - (1 << (h.va_bits + 1))]), label="high")
                out.append(high | low)
        return out

    # -- set-up --------------------------------------------------------------------------------
    @initialize(data=st.data())
    def populate(self, data):
        """Stage 2 maps the guest's table pages and its data region; stage 1 maps a few
        ranges."""
        n = self.NEST
        for h in self.halves:
            blocks = data.draw(st.booleans(), label="pool_blocks")
            self.stage2(lambda vm: vm.map(h.pool_ipa, h.pool_pa, h.pool_size, Prot.RW,
                                          blocks=blocks))
        self.stage2(lambda vm: vm.map(n.data_ipa, self.data_pa, self.data.region_size,
                                      Prot.RWX))
        for _ in range(data.draw(st.integers(1, 2 + len(self.halves)), label="maps")):
            self.pick(data)
            self.s1_map_random(data)

    # -- stage 1 -------------------------------------------------------------------------------
    def output_ipa(self, data, va, size):
        """Where a stage-1 range points: usually the data region (aligned so that blocks
        are possible, or a page or a block off), sometimes a stage-2 hole, beyond stage 2's
        IPA size, or the guest's own table pages."""
        n, g = self.NEST, self.va.granule
        where = data.draw(st.sampled_from(["data"] * 6 + ["hole", "beyond", "tables"]),
                          label="out")
        rel = va - self.va.region_base
        if where == "tables":  # this half's table pages, or the other half's
            t = self.halves[data.draw(st.integers(0, len(self.halves) - 1), label="pool")]
            if size <= t.pool_size:
                return t.pool_ipa + data.draw(st.integers(0, (t.pool_size - size) // g),
                                              label="page") * g
            where = "data"
        if where == "hole":
            return n.data_ipa + self.data.region_size + 8 * self.va.top_span + rel
        if where == "beyond":
            return (1 << n.ipa_bits) + rel
        offset = 0
        if size <= self.va.page_limit:
            offset = data.draw(st.sampled_from([0, 0, self.va.span(2), g, 3 * g]),
                               label="offset")
        elif self.va.top_span != self.va.span(2):
            offset = data.draw(st.sampled_from([0, 0, self.va.span(self.va.min_block + 1)]),
                               label="offset")
        return max(0, n.data_ipa + rel + offset)

    def s1_map_random(self, data):
        va, size = data.draw(ranges(self.va), label="range")
        ipa = self.output_ipa(data, va, size)
        prot = data.draw(st.sampled_from(S1_PROTS), label="prot")
        attr = data.draw(st.integers(0, 7), label="attr")
        user = data.draw(st.sampled_from([True, True, False]), label="user")
        global_ = data.draw(st.sampled_from([True, True, False]), label="global")
        af = data.draw(st.sampled_from([True, True, True, False]), label="af")
        blocks = data.draw(st.booleans(), label="blocks") if size <= self.va.page_limit else True
        if not blocks or (ipa - va) % self.va.span(2):
            size = min(size, self.va.page_limit)
        self.note(va, size)
        self.stage1(lambda s1: s1.map(va, ipa, size, prot, attr, blocks=blocks, user=user,
                                      global_=global_, af=af))

    @rule(data=st.data())
    def s1_map(self, data):
        self.pick(data)
        self.s1_map_random(data)

    @rule(data=st.data())
    def s1_unmap(self, data):
        self.pick(data)
        va, size = data.draw(ranges(self.va), label="range")
        self.note(va, size)
        self.stage1(lambda s1: s1.unmap(va, size))

    @rule(data=st.data(), prot=st.sampled_from(S1_PROTS), user=st.booleans())
    def s1_protect(self, data, prot, user):
        self.pick(data)
        va, size = data.draw(ranges(self.va), label="range")
        self.note(va, size)
        self.stage1(lambda s1: s1.protect(va, size, prot, user=user))

    @rule(data=st.data())
    def s1_on_leaf(self, data):
        """An operation on part of an existing leaf (it splits), all of it, a little beyond it,
        or the block span around it (tables freed); the leaf's own translation again is an
        identical remap."""
        self.pick(data)
        sp, g = self.va, self.va.granule
        leaves = self.ms1.mappings(sp.region_base, sp.region_size)
        if not leaves:
            return
        leaf = data.draw(st.sampled_from(leaves), label="leaf")
        pages = leaf.size // g
        where = data.draw(st.sampled_from(["start", "end", "middle", "whole", "beyond",
                                           "span"]), label="where")
        count = data.draw(st.integers(1, min(4, pages)), label="count")
        va, size = leaf.ipa, count * g
        if where == "end":
            va = leaf.ipa + leaf.size - size
        elif where == "middle":
            va = leaf.ipa + data.draw(st.integers(0, pages - count), label="first") * g
        elif where == "whole":
            size = leaf.size
        elif where == "beyond":
            before = data.draw(st.integers(0, 2), label="before")
            va, size = max(0, leaf.ipa - before * g), leaf.size + (before + 1) * g
        elif where == "span":
            levels = range(sp.min_block, min(leaf.level, 2) + 1)
            s = sp.span(data.draw(st.sampled_from(levels), label="level"))
            va, size = leaf.ipa & ~(s - 1), s
        op = data.draw(st.sampled_from(["same", "same", "pages", "other", "unmap", "protect"]),
                       label="op")
        self.note(va, size)
        if op == "unmap":
            self.stage1(lambda s1: s1.unmap(va, size))
        elif op == "protect":
            prot = data.draw(st.sampled_from(S1_PROTS), label="prot")
            user = data.draw(st.booleans(), label="user")
            self.stage1(lambda s1: s1.protect(va, size, prot, user=user))
        else:
            ipa = leaf.pa + (va - leaf.ipa)
            prot, attr, af, blocks = leaf.prot, leaf.memattr, leaf.af, op != "pages"
            global_ = True
            if op == "other":
                prot = data.draw(st.sampled_from(S1_PROTS), label="prot")
                attr = data.draw(st.integers(0, 7), label="attr")
                af = data.draw(st.booleans(), label="af")
                global_ = data.draw(st.booleans(), label="global")
            if size > sp.page_limit and (not blocks or (ipa - va) % sp.span(2)):
                return  # would be too many pages for the model to follow
            self.stage1(lambda s1: s1.map(va, ipa, size, prot, attr, blocks=blocks,
                                          global_=global_, af=af))

    @rule(data=st.data())
    def s1_bad_call(self, data):
        h = self.pick(data)
        g, top = self.va.granule, h.top
        va, ipa = self.va.region_base, self.NEST.data_ipa
        low = h.va_start - g if h.va_start else 0  # TTBR1: below the range (a RangeError)
        odd = data.draw(st.integers(1, g - 1), label="odd")
        calls = {
            "map W only": lambda s1: s1.map(va, ipa, g, Prot.W),
            "map X only": lambda s1: s1.map(va, ipa, g, Prot.X),
            "map prot 0x20": lambda s1: s1.map(va, ipa, g, 0x21),
            "map attr 8": lambda s1: s1.map(va, ipa, g, Prot.R, 8),
            "map attr -1": lambda s1: s1.map(va, ipa, g, Prot.R, -1),
            "map misaligned va": lambda s1: s1.map(va + odd, ipa, g),
            "map misaligned ipa": lambda s1: s1.map(va, ipa + odd, g),
            "map misaligned size": lambda s1: s1.map(va, ipa, g + odd),
            "map bad prot, misaligned": lambda s1: s1.map(va + odd, ipa, g, Prot.W),
            "map beyond va": lambda s1: s1.map(top - g, ipa, 2 * g),
            "map at va top, empty": lambda s1: s1.map(top, ipa, 0),
            "map beyond ips": lambda s1: s1.map(va, (1 << 48) - g, 2 * g),
            "map wrap": lambda s1: s1.map(U64 - g, ipa, 2 * g),
            "map below range": lambda s1: s1.map(low, ipa, g),
            "map below range, float ipa": lambda s1: s1.map(low, float(ipa), g),
            "unmap below range": lambda s1: s1.unmap(low, g),
            "protect below range": lambda s1: s1.protect(low, g, Prot.R),
            "translate below range": lambda s1: s1.translate(low),
            "lookup below range": lambda s1: s1.lookup(low),
            "mappings below range": lambda s1: s1.mappings(low, g),
            "mappings default": lambda s1: s1.mappings(size=top - va),
            "map negative": lambda s1: s1.map(-g, ipa, g),
            "map float": lambda s1: s1.map(float(va), ipa, g),
            "unmap misaligned": lambda s1: s1.unmap(va + odd, g),
            "unmap beyond": lambda s1: s1.unmap(top - g, 2 * g),
            "unmap wrap": lambda s1: s1.unmap(U64 - g, 2 * g),
            "protect X only": lambda s1: s1.protect(va, g, Prot.X),
            "protect misaligned": lambda s1: s1.protect(va, odd, Prot.R),
            "protect wrap": lambda s1: s1.protect(U64 - g, 2 * g, Prot.R),
            "protect bad prot, bad range": lambda s1: s1.protect(U64 - g, 2 * g, 0x40),
            "translate access 6": lambda s1: s1.translate(va, 6),
            "translate negative": lambda s1: s1.translate(-1),
            "translate 2**64": lambda s1: s1.translate(U64),
            "lookup negative": lambda s1: s1.lookup(-1),
            "mappings misaligned": lambda s1: s1.mappings(va + odd),
            "mappings beyond": lambda s1: s1.mappings(top + g),
            "mappings at top": lambda s1: s1.mappings(top),
            "mappings wrap": lambda s1: s1.mappings(va, U64 - va),
        }
        name = data.draw(st.sampled_from(sorted(calls)), label="call")
        self.stage1(calls[name])

    # -- stage 2 ---------------------------------------------------------------------------------
    @rule(data=st.data())
    def s2_data(self, data):
        """Stage 2 changes the data region under the guest's mappings."""
        ipa, size = data.draw(ranges(self.data), label="range")
        op = data.draw(st.sampled_from(["map", "map", "unmap", "protect", "access_flag"]),
                       label="op")
        if op == "map":
            memattrs = self.s2_memattrs()
            prot = data.draw(st.sampled_from(S2_PROTS), label="prot")
            memattr = data.draw(st.sampled_from(memattrs), label="memattr")
            if memattr <= 3 and prot & Prot.X:
                prot &= ~Prot.X  # Device: never executable at stage 2
            af = data.draw(st.sampled_from([True, True, True, False]), label="af")
            pa = self.data_pa + (ipa - self.NEST.data_ipa)
            blocks = True
            if size <= self.data.page_limit:
                pa += data.draw(st.sampled_from([0, 0, self.data.granule]), label="offset")
                blocks = data.draw(st.booleans(), label="blocks")
            self.stage2(lambda vm: vm.map(ipa, pa, size, prot, memattr, blocks=blocks, af=af))
        elif op == "unmap":
            self.stage2(lambda vm: vm.unmap(ipa, size))
        elif op == "protect":
            prot = data.draw(st.sampled_from(S2_PROTS), label="prot")
            self.stage2(lambda vm: vm.protect(ipa, size, prot))
        else:
            af = data.draw(st.booleans(), label="af")
            self.stage2(lambda vm: vm.set_access_flag(ipa, size, af))

    @rule(data=st.data())
    def s2_table_pages(self, data):
        """Stage 2 changes the guest RAM holding stage-1 tables: a walk that reads a
        descriptor there faults with S1PTW (it needs read permission and the AF)."""
        h, g2 = self.pick(data), self.data.granule
        vias = [x for x in self.fixed_probes + self.recent_probes if h.owns(x)]
        via = data.draw(st.sampled_from(vias), label="via")
        walk = self.s1.walk(via)
        choices = [step.desc_pa for step in walk] + [h.pool_ipa, h.pool_ipa + h.pool_size - 1,
                                                     h.pool_ipa + h.granule]
        ipa = data.draw(st.sampled_from(choices), label="at") & ~(g2 - 1)
        size = data.draw(st.sampled_from([g2, g2, 2 * g2, h.pool_size]), label="size")
        size = min(size, h.pool_ipa + h.pool_size - ipa)
        op = data.draw(st.sampled_from(["unmap", "protect", "access_flag", "remap"]),
                       label="op")
        if op == "unmap":
            self.stage2(lambda vm: vm.unmap(ipa, size))
        elif op == "protect":
            prot = data.draw(st.sampled_from([Prot.NONE, Prot.W, Prot.X, Prot.R, Prot.RW]),
                             label="prot")
            self.stage2(lambda vm: vm.protect(ipa, size, prot))
        elif op == "access_flag":
            af = data.draw(st.booleans(), label="af")
            self.stage2(lambda vm: vm.set_access_flag(ipa, size, af))
        else:
            prot = data.draw(st.sampled_from([Prot.R, Prot.RW, Prot.W]), label="prot")
            pa = h.pool_pa + (ipa - h.pool_ipa)
            self.stage2(lambda vm: vm.map(ipa, pa, size, prot, blocks=False))
        self.recent_probes = [via, via ^ self.va.granule]
        if data.draw(st.booleans(), label="heal"):
            # Walks through the damage first, then the tables are whole again (so that one
            # broken table page does not hide everything else for the rest of the run).
            self.nested(self.recent_probes, ACCESSES, True)
            self.s2_heal()

    @rule(data=st.data())
    def s2_under_leaf(self, data):
        self.s2_under_leaf_random(data)

    @rule(data=st.data())
    def s2_under_another_leaf(self, data):  # the same again: twice the weight
        self.s2_under_leaf_random(data)

    def s2_under_leaf_random(self, data):
        """Stage 2 changes what one stage-1 leaf points at (part of it, or all): its
        permissions, memory type or access flag, so that both stages' rules combine."""
        self.pick(data)
        leaves = self.ms1.mappings(self.va.region_base, self.va.region_size)
        if not leaves:
            return
        leaf = data.draw(st.sampled_from(leaves), label="leaf")
        g2 = self.data.granule
        ipa = leaf.pa & ~(g2 - 1)
        size = data.draw(st.sampled_from([g2, -(-(leaf.pa + leaf.size) // g2) * g2 - ipa]),
                         label="size")
        self.recent_probes = [leaf.ipa + 0x18, leaf.ipa + leaf.size - 8]
        op = data.draw(st.sampled_from(["protect", "protect", "memattr", "access_flag"]),
                       label="op")
        if op == "protect":  # mostly readable: stage 1's permissions then matter too
            prot = data.draw(st.sampled_from([Prot.R, Prot.R, Prot.RX, Prot.RW, Prot.RWX,
                                              Prot.NONE, Prot.X, Prot.W]), label="prot")
            self.stage2(lambda vm: vm.protect(ipa, size, prot))
        elif op == "access_flag":
            self.stage2(lambda vm: vm.set_access_flag(ipa, size, False))
        else:
            memattr = data.draw(st.sampled_from(self.s2_memattrs()), label="memattr")
            prot = Prot.RW if memattr <= 3 else Prot.RWX
            pa = self.data_pa + (ipa - self.NEST.data_ipa)
            if size > 4 * self.data.page_limit:
                return
            self.stage2(lambda vm: vm.map(ipa, pa, size, prot, memattr))

    def s2_memattrs(self):
        if self.NEST.fwb:
            return [MemAttr.NORMAL, MemAttr.NORMAL_NC, MemAttr.DEVICE_nGnRE, MemAttr.STAGE1]
        return [MemAttr.NORMAL, MemAttr.NORMAL_NC, MemAttr.NORMAL_WT, MemAttr.DEVICE_nGnRE,
                MemAttr.DEVICE_GRE, 0xD]

    @rule()
    def s2_heal(self):
        """Map all the guest's table pages again, readable, so walks get through."""
        for h in self.halves:
            self.stage2(lambda vm: vm.map(h.pool_ipa, h.pool_pa, h.pool_size, Prot.RW))

    # -- the guest ---------------------------------------------------------------------------------
    @rule(data=st.data())
    def guest_translate(self, data):
        vas = self.guest_vas(data, data.draw(st.integers(1, 3), label="n"))
        self.recent_probes = vas
        self.nested(vas, ACCESSES, True)

    @rule(data=st.data(), access=st.sampled_from(ACCESSES))
    def guest_batch(self, data, access):
        vas = self.guest_vas(data, data.draw(st.integers(1, 24), label="n"))
        which = None
        if len(self.halves) > 1:  # sometimes through one half alone (the other: EPDx = 1)
            which = data.draw(st.sampled_from([None, None, 0, 1]), label="which")
        self.nested(vas, [access], which is not None, which)

    @rule(data=st.data())
    def nested_bad_call(self, data):
        """Bad arguments to the nested walk: the same exception class from both (checked
        as subclasses of what the engine raises: the model's batch errors are ArrayErrors)."""
        va = self.va.region_base
        s1_tables, s2_tables = self.structure()
        kw = dict(s1_tables=s1_tables, s2_tables=s2_tables)
        calls = {
            "access 6": (lambda vm, s1, **k: vm.translate2(va, s1, 6, **k)),
            "access -1": (lambda vm, s1, **k: vm.translate2(va, s1, -1, **k)),
            "va str": (lambda vm, s1, **k: vm.translate2(str(va), s1, **k)),
            "va 2**64": (lambda vm, s1, **k: vm.translate2(U64, s1, **k)),
            "many access 6": (lambda vm, s1, **k: vm.translate2_many([va], s1, 6, **k)),
            "many int64": (lambda vm, s1, **k: vm.translate2_many(
                np.array([va], dtype=np.int64), s1, **k)),
            "many empty": (lambda vm, s1, **k: vm.translate2_many(
                np.zeros(0, dtype=np.uint64), s1, **k)),
        }
        if len(self.halves) > 1:  # Regime construction, then a walk through it
            leaves = self.halves[1].ms1.mappings()
            hva = leaves[0].ipa + 0x18 if leaves else self.halves[1].va.region_base

            def regime(r, *args, **kwargs):
                return type(r)(*[getattr(r, a) if isinstance(a, str) and a.startswith("ttbr")
                                 else a for a in args], **kwargs)

            calls.update({
                "regime swapped": lambda vm, r, **k: regime(r, "ttbr1", "ttbr0"),
                "regime ttbr1 as ttbr0": lambda vm, r, **k: regime(r, "ttbr1"),
                "regime ttbr0 as ttbr1": lambda vm, r, **k: regime(r, None, "ttbr0"),
                "regime empty": lambda vm, r, **k: regime(r),
                "regime mair float": lambda vm, r, **k: regime(r, "ttbr0", "ttbr1",
                                                               mair=float(MAIR)),
                "regime mair 2**64": lambda vm, r, **k: regime(r, "ttbr0", "ttbr1", mair=U64),
                "regime ttbr0 int": lambda vm, r, **k: regime(r, 5, "ttbr1"),
                "regime tables' mair": lambda vm, r, **k: vm.translate2(
                    hva, regime(r, "ttbr0", "ttbr1"), **k),
                "regime own mair, registers": lambda vm, r, **k: regime(
                    r, "ttbr0", "ttbr1", mair=0x04_FF).registers(),
                "regime ttbr1 alone, registers": lambda vm, r, **k: regime(
                    r, None, "ttbr1").registers(),
                "regime ttbr0 alone, tcr": lambda vm, r, **k: regime(r, "ttbr0").tcr,
                "regime stage2 table": lambda vm, r, **k: vm.translate2(va, vm, **k),
            })
        name = data.draw(st.sampled_from(sorted(calls)), label="call")
        got = outcome(lambda: calls[name](self.vm, self.target))
        want = outcome(lambda: calls[name](self.mvm, self.mtarget, **kw))
        if got[0] == "raise" and want[0] == "raise":
            assert issubclass(want[1], got[1]), (name, got, want)
        else:
            assert got == want, (name, got, want)

    # -- after every step --------------------------------------------------------------------------
    @invariant()
    def agree(self):
        self.vm.check()
        self.mvm.check()
        assert self.vm.stats() == self.mvm.stats()
        assert list(self.vm.mappings()) == list(self.mvm.mappings())
        sampled = []
        for h in self.halves:
            h.s1.check()
            h.ms1.check()
            assert h.s1.table_pages == h.ms1.table_pages
            assert h.s1.pool.used == h.mpool.used
            leaves = h.ms1.mappings()
            assert h.s1.mappings() == leaves
            step = max(1, len(leaves) // 6)
            sampled += [x for m in leaves[::step] for x in (m.ipa, m.ipa + m.size - 8)]
        if len(self.halves) > 1:
            assert self.target.registers() == self.mtarget.registers()
        probes = self.fixed_probes + self.recent_probes + sampled
        self.nested(probes, ACCESSES, False)
        recent = (self.recent_probes + sampled)[:3]
        self.nested(recent, ACCESSES, True)
        # The whole Translation2 (combined permissions and memory type) of sampled leaves, for
        # reads and one other access kind in turn.
        self.turn = (self.turn + 1) % len(ACCESSES)
        self.nested(sampled[::2][:8], [GuestAccess.READ, ACCESSES[self.turn]], True)
        for va in recent:
            for h in self.halves:  # the other half's VAs: a RangeError or a level-0 fault
                for access in (ACCESSES if h.owns(va) else ACCESSES[:1]):
                    self.stage1(lambda s1: s1.translate(va, access), h)
                self.stage1(lambda s1: s1.lookup(va), h)


for _nest in NESTS:
    _machine = type(f"NestedDifferential_{_nest.name}", (NestedDifferential,), {"NEST": _nest})
    _machine.TestCase.settings = settings(
        settings.default,
        max_examples=max(1, round(settings.default.max_examples * _nest.weight)))
    globals()[f"Test{_nest.name}"] = _machine.TestCase
del _nest, _machine
