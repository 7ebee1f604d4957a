"""Differential state machines: the engine (s2pt.Stage2) against the reference model.

One hypothesis RuleBasedStateMachine per configuration drives random map / unmap / protect /
set_access_flag calls -- valid ones, identical remaps, and bad ones (misaligned, out of range,
64-bit wrap, bad permissions or attributes, wrong types) -- against both s2pt.Stage2 and
s2pt.model.ReferenceStage2 (checked against architectural facts in test_model.py). Every call
must end the same way in both: the same return value, or the same exception class (a
Stage2Fault with the same kind, level, FSC and IPA). After every step the whole state is
compared: stats(), every leaf (mappings()), translate() / lookup() / translate_many() of probe
IPAs (the last range's ends, the region's ends, sampled leaf ends, random IPAs, IPAs beyond the
IPA space) for each access kind, and engine.check().

Addresses are concentrated in a region of a few top-level block spans, usually aligned to a
block boundary or a few pages off one, so that blocks are made, split, coalesced and their tables
freed all the time. Some configurations run in a small PagePool shared with a second VM, so that
pool exhaustion (which must change nothing) happens too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import s2pt
from s2pt import Access, MemAttr, Prot, Stage2Fault
from s2pt.model import ReferencePool, ReferenceStage2

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
U64 = 1 << 64


@dataclass(frozen=True)
class Geo:
    """One configuration under test and the address region its machine works in."""

    name: str
    granule: int
    ipa_bits: int
    pa_bits: int
    region_base: int  # aligned to the largest block span
    region_blocks: int  # region size, in spans of the largest block
    pool_slack: int | None = None  # tight shared pool: roots + this many pages; None: default
    neighbor_bits: int | None = None  # a second VM in the same pool (same granule)
    weight: float = 1.0  # share of the profile's max_examples (64K steps cost the most)
    options: tuple = ()  # (name, value) pairs: lpa2, fwb, xnx, tlbi_range
    cfg: s2pt.Stage2Config = field(init=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "cfg", s2pt.Stage2Config(self.ipa_bits, self.granule,
                                                          self.pa_bits, **self.opts))
        assert self.region_base % self.top_span == 0
        assert self.region_end <= 1 << self.ipa_bits

    @property
    def opts(self):
        return dict(self.options)

    def span(self, level):
        return 1 << ((self.granule.bit_length() - 4) * (4 - level) + 3)

    @property
    def top_span(self):
        """Span of the largest block this geometry allows."""
        return self.span(self.cfg.min_block_level)

    @property
    def units(self):
        """Alignments that matter: the granule and every block size."""
        return sorted({self.granule} | {self.span(lv) for lv in range(self.cfg.min_block_level, 3)})

    @property
    def region_size(self):
        return self.region_blocks * self.top_span

    @property
    def region_end(self):
        return self.region_base + self.region_size

    @property
    def page_limit(self):
        """Largest range mapped with pages only (blocks=False or a misaligned output)."""
        return self.span(2) + 4 * self.granule


GEOS = [
    # 4K, 3 levels from level 1, two concatenated root pages: the region straddles the second.
    Geo("4k_40", 4096, 40, 48, 511 * GiB, 2),
    # 4K, 2 levels from level 2 (blocks at the start level), four roots, at the IPA top.
    Geo("4k_32", 4096, 32, 32, (1 << 32) - 8 * MiB, 4, pool_slack=6, neighbor_bits=32),
    # 4K, 4 levels from level 0: the region straddles a level-0 entry; tight shared pool.
    Geo("4k_48", 4096, 48, 48, 511 * GiB, 2, pool_slack=7, neighbor_bits=39),
    # 16K, 2 levels from level 2 (32 MiB blocks at the start level), from IPA 0.
    Geo("16k_36", 16384, 36, 36, 0, 3, weight=0.6),
    # 16K, 3 levels from level 1 (no level-1 blocks): straddles a 64 GiB level-1 entry.
    Geo("16k_47", 16384, 47, 48, 64 * GiB - 64 * MiB, 4, pool_slack=5, neighbor_bits=36),
    # 64K, 2 levels from level 2, 512 MiB blocks.
    Geo("64k_42", 65536, 42, 42, 3 * 512 * MiB, 2, weight=0.3),
    # 64K, 33-bit: 16 root entries only; the region ends at the IPA top; tight shared pool.
    Geo("64k_33", 65536, 33, 36, (1 << 33) - 1 * GiB, 2, pool_slack=2, neighbor_bits=33,
        weight=0.3),
    # 4K LPA2, 52-bit IPA and PA: 16 concatenated level-0 tables, 512 GiB level-0 blocks, the
    # region straddles the second root page; FEAT_XNX (PX and UX apart).
    Geo("4k_52_lpa2", 4096, 52, 52, 256 * (1 << 40) - 512 * GiB, 2, weight=0.25,
        options=(("lpa2", True), ("xnx", True))),
    # 16K LPA2 from level 0 (SL0 = 3): 64 GiB level-1 blocks across a level-0 entry; FWB.
    Geo("16k_52_lpa2_fwb", 16384, 52, 52, 128 * (1 << 40) - 64 * GiB, 2, weight=0.5,
        options=(("lpa2", True), ("fwb", True))),
    # 64K with a 52-bit PA: OA[51:48] in bits 15:12, 4 TiB level-1 blocks at the IPA top;
    # FWB with and XNX without FEAT_TLBIRANGE.
    Geo("64k_52", 65536, 52, 52, (1 << 52) - 8 * (1 << 40), 2, weight=0.15,
        options=(("fwb", True), ("xnx", True), ("tlbi_range", False))),
]

# PX / UX alone are valid only with xnx; STAGE1 only with fwb, NORMAL_WT and 0x6 only without.
PROTS = [Prot.R, Prot.RW, Prot.RW, Prot.RWX, Prot.RX, Prot.NONE, Prot.W, Prot.X, Prot.WX,
         Prot.PX, Prot.R | Prot.UX]
MEMATTRS = [MemAttr.NORMAL] * 4 + [MemAttr.NORMAL_NC, MemAttr.NORMAL_WT, MemAttr.DEVICE_nGnRE,
                                   MemAttr.DEVICE_nGnRnE, 0x6, MemAttr.STAGE1]
SWS = [0, 0, 0, 1, 15]
NUDGES = st.one_of(st.just(0), st.just(0), st.integers(-3, 3))


# ---- comparing outcomes ---------------------------------------------------------------------


def outcome(call):
    """What a call did: ("ok", value) or ("raise", class[, fault details])."""
    try:
        value = call()
    except Stage2Fault as f:
        return ("raise", type(f), int(f.kind), f.level, f.fsc, f.ipa)
    except Exception as e:  # noqa: BLE001 - the class is what is compared
        return ("raise", type(e))
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], np.ndarray):
        value = tuple((a.dtype.str, a.tolist()) for a in value)
    elif hasattr(value, "__next__"):
        value = list(value)
    return ("ok", value)


def clamp(x, lo, hi):
    return max(lo, min(hi, x))


@st.composite
def ranges(draw, geo):
    """(ipa, size): block-aligned or a few pages off, sizes of pages and blocks."""
    g = geo.granule
    unit = draw(st.sampled_from(geo.units))
    ipa = geo.region_base + draw(st.integers(0, geo.region_size // unit)) * unit
    ipa = clamp(ipa + draw(NUDGES) * g, 0, geo.region_end + g)
    size_unit = draw(st.sampled_from(geo.units))
    size = draw(st.integers(0 if size_unit == g else 1, 4 if size_unit == g else 2)) * size_unit
    size = max(0, size + draw(NUDGES) * g)
    if ipa + size > geo.region_end + g:  # mostly stay in the region (or one page past it)
        size = max(0, geo.region_end - ipa)
    return ipa, size


# ---- the machine ----------------------------------------------------------------------------


class Stage2Differential(RuleBasedStateMachine):
    GEO: Geo

    def __init__(self):
        super().__init__()
        geo = self.GEO
        kw = dict(ipa_bits=geo.ipa_bits, granule=geo.granule, pa_bits=geo.pa_bits, **geo.opts)
        if geo.pool_slack is None:
            self.engine = s2pt.Stage2(**kw)
            self.mpool = ReferencePool(self.engine.pool.capacity)
            self.model = ReferenceStage2(**kw, pool=self.mpool)
            self.n_engine = self.n_model = None
        else:
            ncfg = s2pt.Stage2Config(geo.neighbor_bits, geo.granule, geo.pa_bits)
            pages = geo.cfg.root_tables + ncfg.root_tables + geo.pool_slack
            pool = s2pt.PagePool(pages, granule=geo.granule)
            self.engine = s2pt.Stage2(**kw, pool=pool)
            self.n_engine = s2pt.Stage2(geo.neighbor_bits, geo.granule, geo.pa_bits, pool=pool)
            self.mpool = ReferencePool(pages)
            self.model = ReferenceStage2(**kw, pool=self.mpool)
            self.n_model = ReferenceStage2(geo.neighbor_bits, geo.granule, geo.pa_bits,
                                           pool=self.mpool)
        g, top = geo.granule, 1 << geo.ipa_bits
        fixed = {0, g, top - g, top - 1, top, top + g, U64 - 1, geo.region_base - g,
                 geo.region_base, geo.region_end - 1, geo.region_end}
        for unit in geo.units[1:]:
            for k in range(0, geo.region_size // unit + 1, max(1, geo.region_size // unit // 4)):
                fixed.add(geo.region_base + k * unit)
                fixed.add(geo.region_base + k * unit - g)
        self.fixed_probes = sorted(x for x in fixed if 0 <= x < U64)
        self.recent_probes = []  # ends of the last range and the last random probes

    def teardown(self):
        if self.n_engine is not None:
            self.n_engine.destroy()
            self.n_model.destroy()
        self.both(lambda vm: vm.destroy())
        base, g = self.GEO.region_base, self.GEO.granule
        for call in (lambda vm: vm.map(base, 0, g), lambda vm: vm.unmap(base, g),
                     lambda vm: vm.protect(base, g, 0x10), lambda vm: vm.set_access_flag(0, g),
                     lambda vm: vm.translate(base, 3), lambda vm: vm.lookup(base),
                     lambda vm: vm.translate_many([base]), lambda vm: vm.mappings(),
                     lambda vm: vm.stats(), lambda vm: vm.check(), lambda vm: vm.table_pages,
                     lambda vm: vm.map(-1, 0, g), lambda vm: vm.destroy()):
            self.both(call)  # DestroyedError, after the Python-level argument conversions

    # -- helpers -------------------------------------------------------------------------------
    def both(self, call, engine=None, model=None):
        """Run call on the engine and the model; they must end the same way."""
        engine = self.engine if engine is None else engine
        model = self.model if model is None else model
        got = outcome(lambda: call(engine))
        want = outcome(lambda: call(model))
        assert got == want, f"engine: {got!r}\nmodel:  {want!r}"
        return got

    def note_range(self, ipa, size):
        g = self.GEO.granule
        self.recent_probes = [x for x in (ipa - g, ipa, ipa + size - 1, ipa + size, ipa + size // 2)
                              if 0 <= x < U64]

    # -- valid-looking operations ----------------------------------------------------------------
    @initialize(data=st.data())
    def populate(self, data):
        """Start from a few mappings, so that most steps have leaves to work on."""
        for _ in range(data.draw(st.integers(1, 3), label="maps")):
            self.map_random(data)

    @rule(data=st.data())
    def map(self, data):
        self.map_random(data)

    def map_random(self, data):
        geo = self.GEO
        g = geo.granule
        ipa, size = data.draw(ranges(geo), label="range")
        top = geo.top_span
        pa_base = data.draw(st.sampled_from(
            [top, 4 * top, (1 << geo.pa_bits) - geo.region_size,
             (1 << geo.pa_bits) - geo.region_size + top]), label="pa_base")
        offset = 0
        if size <= geo.page_limit:
            offset = data.draw(st.sampled_from([0, 0, geo.span(2), g, 3 * g]), label="offset")
        elif top != geo.span(2):
            # Off by the next block size down: those blocks instead of top-level ones (not 2 MiB
            # blocks under 512 GiB ones: 2**19 leaves make each model comparison take seconds).
            below = geo.span(geo.cfg.min_block_level + 1)
            offset = data.draw(st.sampled_from([0, 0, below]), label="offset")
        pa = max(0, ipa - geo.region_base + pa_base + offset)
        prot = data.draw(st.sampled_from(PROTS), label="prot")
        memattr = data.draw(st.sampled_from(MEMATTRS), label="memattr")
        blocks = data.draw(st.booleans(), label="blocks") if size <= geo.page_limit else True
        af = data.draw(st.sampled_from([True, True, True, False]), label="af")
        sw = data.draw(st.sampled_from(SWS), label="sw")
        self.note_range(ipa, size)
        self.both(lambda vm: vm.map(ipa, pa, size, prot, memattr, blocks=blocks, af=af, sw=sw))

    @rule(data=st.data())
    def on_leaf(self, data):
        self.on_leaf_random(data)

    @rule(data=st.data())
    def on_another_leaf(self, data):  # the same again: twice the weight
        self.on_leaf_random(data)

    def on_leaf_random(self, data):
        """An operation aimed at a leaf that exists: on a part of it (so it splits), on all of
        it, a little beyond it, or on the whole block span around it (so tables coalesce or
        are freed); a map with the leaf's own translation is an identical remap (a no-op)."""
        geo = self.GEO
        g = geo.granule
        leaves = list(self.model.mappings(geo.region_base, geo.region_size))
        if not leaves:
            return
        leaf = data.draw(st.sampled_from(leaves), label="leaf")
        pages = leaf.size // g
        where = data.draw(st.sampled_from(["start", "end", "middle", "whole", "beyond",
                                           "across_start", "across_end", "span"]), label="where")
        count = data.draw(st.integers(1, min(4, pages)), label="count")
        ipa, size = leaf.ipa, count * g
        if where == "end":
            ipa = leaf.ipa + leaf.size - size
        elif where == "middle":
            ipa = leaf.ipa + data.draw(st.integers(0, pages - count), label="first") * g
        elif where == "whole":
            size = leaf.size
        elif where == "beyond":
            before = data.draw(st.integers(0, 2), label="before")
            after = data.draw(st.integers(0 if before else 1, 2), label="after")
            ipa, size = max(0, leaf.ipa - before * g), leaf.size + (before + after) * g
        elif where == "across_start":  # from before the leaf into it
            ipa = max(0, leaf.ipa - data.draw(st.integers(1, 3), label="before") * g)
            size = leaf.ipa + count * g - ipa
        elif where == "across_end":  # from inside the leaf to beyond it
            ipa = leaf.ipa + leaf.size - size
            size += data.draw(st.integers(1, 3), label="after") * g
        elif where == "span":
            levels = range(geo.cfg.min_block_level, min(leaf.level, 2) + 1)
            span = geo.span(data.draw(st.sampled_from(levels), label="level"))
            ipa, size = leaf.ipa & ~(span - 1), span
        op = data.draw(st.sampled_from(["same", "same", "pages", "other", "unmap", "protect",
                                        "access_flag"]), label="op")
        self.note_range(ipa, size)
        if op == "unmap":
            self.both(lambda vm: vm.unmap(ipa, size))
        elif op == "protect":
            prot = data.draw(st.sampled_from(PROTS), label="prot")
            self.both(lambda vm: vm.protect(ipa, size, prot))
        elif op == "access_flag":
            af = data.draw(st.booleans(), label="af")
            self.both(lambda vm: vm.set_access_flag(ipa, size, af))
        else:
            pa = leaf.pa + (ipa - leaf.ipa)
            prot, af, sw, blocks = leaf.prot, leaf.af, leaf.sw, op != "pages"
            if op == "other":
                prot = data.draw(st.sampled_from(PROTS), label="prot")
                af = data.draw(st.booleans(), label="af")
                sw = data.draw(st.sampled_from(SWS), label="sw")
            if size > geo.page_limit and (not blocks or (pa - ipa) % geo.span(2)):
                return  # would be hundreds of thousands of pages
            self.both(lambda vm: vm.map(ipa, pa, size, prot, leaf.memattr, blocks=blocks, af=af,
                                        sw=sw))

    @rule(data=st.data())
    def unmap(self, data):
        ipa, size = data.draw(ranges(self.GEO), label="range")
        self.note_range(ipa, size)
        self.both(lambda vm: vm.unmap(ipa, size))

    @rule(data=st.data(), prot=st.sampled_from(PROTS))
    def protect(self, data, prot):
        ipa, size = data.draw(ranges(self.GEO), label="range")
        self.note_range(ipa, size)
        self.both(lambda vm: vm.protect(ipa, size, prot))

    @rule(data=st.data(), owner=st.sampled_from([1, 1, 2, 255, 0, 256]))
    def set_owner(self, data, owner):
        """Owner annotations (invalid entries that count in the refcount); 0 and 256 are bad."""
        ipa, size = data.draw(ranges(self.GEO), label="range")
        size = min(size, self.GEO.page_limit)  # one entry per page (KVM's force_pte)
        self.note_range(ipa, size)
        self.both(lambda vm: vm.set_owner(ipa, size, owner))

    @rule(data=st.data(), af=st.booleans())
    def set_access_flag(self, data, af):
        ipa, size = data.draw(ranges(self.GEO), label="range")
        self.note_range(ipa, size)
        self.both(lambda vm: vm.set_access_flag(ipa, size, af))

    @precondition(lambda self: self.n_engine is not None)
    @rule(k=st.integers(0, 7), pages=st.sampled_from([1, 1, 2, 512]), unmap=st.booleans())
    def neighbor(self, k, pages, unmap):
        """The other VM in the shared pool takes or gives back pages."""
        g = self.GEO.granule
        ipa, size = k * 3 * g * 512, pages * g
        if unmap:
            self.both(lambda vm: vm.unmap(ipa, size), self.n_engine, self.n_model)
        else:
            self.both(lambda vm: vm.map(ipa, 1 << 30, size), self.n_engine, self.n_model)

    @precondition(lambda self: self.GEO.cfg.start_level < self.GEO.cfg.min_block_level)
    @rule(data=st.data())
    def whole_start_entry(self, data):
        """Map, unmap or protect a whole start-level entry, where no block may be: a table
        full of the largest blocks (4K/48: 512 GiB; 16K/47: 64 GiB)."""
        geo = self.GEO
        span = geo.span(geo.cfg.start_level)
        at = data.draw(st.sampled_from([geo.region_base, geo.region_end - 1]), label="at")
        ipa = at & ~(span - 1)
        op = data.draw(st.sampled_from(["map", "unmap", "protect"]), label="op")
        self.note_range(ipa, span)
        if op == "map":
            pa = ipa + geo.top_span
            self.both(lambda vm: vm.map(ipa, pa, span, Prot.RW))
        elif op == "unmap":
            self.both(lambda vm: vm.unmap(ipa, span))
        else:
            self.both(lambda vm: vm.protect(ipa, span, Prot.R))

    # -- bad arguments ---------------------------------------------------------------------------
    @rule(data=st.data())
    def bad_call(self, data):
        geo = self.GEO
        g, top, pa_top = geo.granule, 1 << geo.ipa_bits, 1 << geo.pa_bits
        base, pa = geo.region_base, geo.top_span
        odd = data.draw(st.integers(1, g - 1), label="odd")
        calls = {
            "map ipa misaligned": lambda vm: vm.map(base + odd, pa, g),
            "map pa misaligned": lambda vm: vm.map(base, pa + odd, g),
            "map size misaligned": lambda vm: vm.map(base, pa, g + odd),
            "map pa misaligned beyond ipa": lambda vm: vm.map(top, pa + odd, g),
            "map beyond ipa": lambda vm: vm.map(top - g, pa, 2 * g),
            "map at ipa top": lambda vm: vm.map(top, pa, g),
            "map at ipa top, empty": lambda vm: vm.map(top, pa, 0),
            "map past ipa top, empty": lambda vm: vm.map(top + g, pa, 0),
            "map wrap": lambda vm: vm.map(U64 - g, pa, 2 * g),
            "map huge size": lambda vm: vm.map(base, pa, U64 - g),
            "map beyond pa": lambda vm: vm.map(base, pa_top - g, 2 * g),
            "map pa wrap": lambda vm: vm.map(base, U64 - g, 2 * g),
            "map empty beyond pa": lambda vm: vm.map(base, pa_top + g, 0),
            "map negative": lambda vm: vm.map(-g, pa, g),
            "map 2**64": lambda vm: vm.map(base, U64, g),
            "map float": lambda vm: vm.map(float(base), pa, g),
            "map str size": lambda vm: vm.map(base, pa, str(g)),
            "map PX only": lambda vm: vm.map(base, pa, g, Prot.PX),
            "map UX only": lambda vm: vm.map(base, pa, g, Prot.R | Prot.UX),
            "map prot 0x10": lambda vm: vm.map(base, pa, g, 0x13),
            "map prot -1": lambda vm: vm.map(base, pa, g, -1),
            "map prot 2**32": lambda vm: vm.map(base, pa, g, 1 << 32),
            "map prot float": lambda vm: vm.map(base, pa, g, 3.0),
            "map memattr 4": lambda vm: vm.map(base, pa, g, Prot.R, 0x4),
            "map memattr 8": lambda vm: vm.map(base, pa, g, Prot.R, 0x8),
            "map memattr 0xc": lambda vm: vm.map(base, pa, g, Prot.R, 0xC),
            "map memattr 0x10": lambda vm: vm.map(base, pa, g, Prot.R, 0x10),
            "map exec device": lambda vm: vm.map(base, pa, g, Prot.RX, MemAttr.DEVICE_nGnRE),
            "map bad prot before misaligned": lambda vm: vm.map(base + odd, pa, g, 0x10),
            "map misaligned before range": lambda vm: vm.map(U64 - g, pa + odd, g),
            "unmap misaligned": lambda vm: vm.unmap(base + odd, g),
            "unmap beyond": lambda vm: vm.unmap(top - g, 2 * g),
            "unmap wrap": lambda vm: vm.unmap(U64 - g, 2 * g),
            "unmap negative size": lambda vm: vm.unmap(base, -g),
            "unmap float": lambda vm: vm.unmap(base, float(g)),
            "protect misaligned": lambda vm: vm.protect(base, odd, Prot.R),
            "protect bad prot": lambda vm: vm.protect(base, g, 0x4),
            "protect bad prot, bad range": lambda vm: vm.protect(U64 - g, 2 * g, 0x20),
            "protect wrap": lambda vm: vm.protect(U64 - g, 2 * g, Prot.R),
            "protect exec everything": lambda vm: vm.protect(base, geo.region_size, Prot.RWX),
            "set_af misaligned": lambda vm: vm.set_access_flag(base + odd, g),
            "set_af beyond": lambda vm: vm.set_access_flag(top, g),
            "set_af wrap": lambda vm: vm.set_access_flag(U64 - g, 2 * g, False),
            "translate access 4": lambda vm: vm.translate(base, 4),
            "set_owner misaligned": lambda vm: vm.set_owner(base + odd, g, 1),
            "set_owner beyond": lambda vm: vm.set_owner(top, g, 1),
            "set_owner float": lambda vm: vm.set_owner(base, g, 1.0),
            "owner negative": lambda vm: vm.owner(-1),
            "translate access -1": lambda vm: vm.translate(base, -1),
            "translate access float": lambda vm: vm.translate(base, 1.0),
            "translate negative": lambda vm: vm.translate(-1),
            "translate 2**64": lambda vm: vm.translate(U64),
            "translate bad ipa and access": lambda vm: vm.translate(-1, 7),
            "translate float": lambda vm: vm.translate(float(base)),
            "lookup negative": lambda vm: vm.lookup(-1),
            "lookup float": lambda vm: vm.lookup(0.0),
            "translate_many int64": lambda vm: vm.translate_many(np.zeros(2, np.int64)),
            "translate_many 2-D": lambda vm: vm.translate_many(np.zeros((2, 2), np.uint64)),
            "translate_many strided": lambda vm: vm.translate_many(np.zeros(4, np.uint64)[::2]),
            "translate_many negative": lambda vm: vm.translate_many([base, -1]),
            "translate_many 2**64": lambda vm: vm.translate_many([U64]),
            "translate_many floats": lambda vm: vm.translate_many([1.5]),
            "translate_many not a sequence": lambda vm: vm.translate_many(5),
            "translate_many access 4": lambda vm: vm.translate_many([base], 4),
            "translate_many empty access 4": lambda vm: vm.translate_many([], 4),
            "translate_many empty": lambda vm: vm.translate_many(np.zeros(0, np.uint64)),
            "mappings misaligned": lambda vm: vm.mappings(base + odd),
            "mappings beyond": lambda vm: vm.mappings(top + g),
            "mappings at top": lambda vm: vm.mappings(top),
            "mappings wrap": lambda vm: vm.mappings(base, U64 - base),
            "mappings size beyond": lambda vm: vm.mappings(base, top),
            "mappings negative": lambda vm: vm.mappings(-g),
            "mappings empty": lambda vm: vm.mappings(base, 0),
        }
        name = data.draw(st.sampled_from(sorted(calls)), label="call")
        self.both(calls[name])

    # -- queries ---------------------------------------------------------------------------------
    @rule(data=st.data())
    def probe(self, data):
        geo = self.GEO
        ipas = data.draw(st.lists(st.one_of(
            st.integers(geo.region_base, geo.region_end - 1),
            st.integers(0, (1 << geo.ipa_bits) - 1),
            st.integers(0, U64 - 1)), min_size=1, max_size=8), label="ipas")
        self.recent_probes = ipas
        for ipa in ipas:
            for access in Access:
                self.both(lambda vm: vm.translate(ipa, access))
        self.both(lambda vm: vm.mappings(ipas[0] & ~(geo.granule - 1), geo.granule))

    # -- after every step --------------------------------------------------------------------------
    @invariant()
    def agree(self):
        engine, model = self.engine, self.model
        engine.check()
        model.check()
        assert engine.stats() == model.stats()
        assert engine.table_pages == model.table_pages
        leaves = list(model.mappings())
        assert list(engine.mappings()) == leaves
        if self.n_engine is not None:
            self.n_engine.check()
            assert self.n_engine.stats() == self.n_model.stats()
            assert list(self.n_engine.mappings()) == list(self.n_model.mappings())
            assert engine.pool.used == self.mpool.used
        step = max(1, len(leaves) // 8)
        sampled = [x for leaf in leaves[::step] for x in (leaf.ipa, leaf.ipa + leaf.size - 1)]
        probes = self.fixed_probes + self.recent_probes + sampled
        array = np.array(probes, dtype=np.uint64)
        for access in Access:
            self.both(lambda vm: vm.translate_many(array, access))
        for ipa in self.recent_probes + sampled[:8]:
            for access in Access:
                self.both(lambda vm: vm.translate(ipa, access))
            self.both(lambda vm: vm.lookup(ipa))
            self.both(lambda vm: vm.owner(ipa))
        for ipa in self.fixed_probes:
            self.both(lambda vm: vm.translate(ipa, Access.READ))
        if self.recent_probes:  # a window: the leaves that intersect it, whole
            ipa = self.recent_probes[0] & ~(self.GEO.granule - 1)
            self.both(lambda vm: vm.mappings(ipa, 2 * self.GEO.granule))


for _geo in GEOS:
    _machine = type(f"Stage2Differential_{_geo.name}", (Stage2Differential,), {"GEO": _geo})
    _machine.TestCase.settings = settings(
        settings.default, max_examples=max(1, round(settings.default.max_examples * _geo.weight)))
    globals()[f"Test{_geo.name}"] = _machine.TestCase
del _geo, _machine
