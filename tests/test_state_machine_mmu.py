"""Differential state machines for the MMU layer: the engine against the reference model.

Each machine is the engine-vs-model machine of test_state_machine.py (its rules and its
after-every-step comparison stay) plus the MMU's operations: memslots added and deleted, random
guest accesses through ``access_many`` and ``fault`` (faults mapping pages and blocks, access
flag, permission and dirty faults, MMIO and aborts), dirty logging switched on and off (with
and without eager split), harvests with and without clearing, ``clear_dirty_log`` masks, aging
scans, and the leaf operations (wrprotect, split, collapse, relax_perms, mkyoung). After every
step, on top of the tables: the memslots, every logging slot's dirty bitmap and the fault
counters must agree. Every granule runs, in both semantics modes, some in a small shared pool
so that a fault that needs pages the pool lacks must change nothing in both.
"""

from __future__ import annotations

import copy
import os
import pickle
import sys

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

sys.path.insert(0, os.path.dirname(__file__))
import test_state_machine as base  # noqa: E402

from s2pt import Access, Prot  # noqa: E402

Geo = base.Geo
U64 = base.U64
MiB, GiB = base.MiB, base.GiB

GEOS = [
    # 4K, 3 levels, 1 GiB blocks in the region: exact semantics.
    Geo("mmu_4k_40", 4096, 40, 48, 511 * GiB, 2, weight=0.6),
    # 4K, 2 levels from level 2 at the IPA top, tight pool shared with a neighbour: kvm mode.
    Geo("mmu_4k_32_kvm", 4096, 32, 32, (1 << 32) - 8 * MiB, 4, pool_slack=6, neighbor_bits=32,
        weight=0.6, options=(("semantics", "kvm"),)),
    # 16K, 2 levels, 32 MiB blocks: kvm mode.
    Geo("mmu_16k_36_kvm", 16384, 36, 36, 0, 3, weight=0.4, options=(("semantics", "kvm"),)),
    # 16K, 3 levels, tight pool: exact.
    Geo("mmu_16k_47", 16384, 47, 48, 64 * GiB - 64 * MiB, 4, pool_slack=5, neighbor_bits=36,
        weight=0.4),
    # 64K, 512 MiB blocks, without FEAT_TLBIRANGE: exact.
    Geo("mmu_64k_42", 65536, 42, 42, 3 * 512 * MiB, 2, weight=0.25,
        options=(("tlbi_range", False),)),
    # 64K/33: 16 root entries, the region at the IPA top: kvm mode.
    Geo("mmu_64k_33_kvm", 65536, 33, 36, (1 << 33) - 1 * GiB, 2, weight=0.25,
        options=(("semantics", "kvm"),)),
]

ACCESSES = [Access.READ, Access.READ, Access.WRITE, Access.WRITE, Access.EXEC, Access.EXEC_EL0]


class MMUDifferential(base.Stage2Differential):
    # -- helpers -----------------------------------------------------------------------------------
    def slot_sizes(self):
        """Sizes a slot may have: pages and block spans, kept small enough (a few thousand
        pages at most) for the model to follow page by page."""
        geo = self.GEO
        return [geo.granule, 4 * geo.granule, geo.span(2) // 2, geo.span(2),
                2 * geo.span(2), 2 * geo.span(2) + 3 * geo.granule]

    def backings(self):
        geo = self.GEO
        sizes = [geo.granule, geo.granule, geo.span(2)]
        if geo.cfg.min_block_level <= 1 and geo.span(1) <= 2 * GiB:
            sizes.append(geo.span(1))
        return sizes

    def pick_slot(self, data):
        slots = self.model.memslots()
        choice = data.draw(st.integers(-1, max(0, len(slots) - 1)), label="slot")
        if choice < 0 or not slots:
            return data.draw(st.sampled_from([7, 99, -1, 2 ** 32]), label="bad_slot")
        return slots[choice].id

    def guest_ipas(self, data, n):
        """IPAs a guest touches: mostly inside the slots (any byte offset), some in holes."""
        geo = self.GEO
        slots = self.model.memslots()
        out = []
        for _ in range(n):
            kind = data.draw(st.sampled_from(["slot", "slot", "slot", "region", "any"]),
                             label="where")
            if kind == "slot" and slots:
                s = data.draw(st.sampled_from(slots), label="in_slot")
                out.append(s.ipa + data.draw(st.integers(0, s.size - 1), label="offset"))
            elif kind == "region":
                out.append(data.draw(st.integers(geo.region_base, geo.region_end - 1),
                                     label="ipa"))
            else:
                out.append(data.draw(st.integers(0, (1 << geo.ipa_bits) + geo.granule),
                                     label="ipa"))
        return out

    # -- memslots ------------------------------------------------------------------------------
    @rule(data=st.data())
    def add_memslot(self, data):
        geo = self.GEO
        g = geo.granule
        unit = data.draw(st.sampled_from([g, geo.span(2)]), label="unit")
        ipa = geo.region_base + data.draw(st.integers(0, geo.region_size // unit), label="at") * unit
        ipa += data.draw(st.sampled_from([0, 0, 0, g, 3 * g]), label="nudge")
        size = data.draw(st.sampled_from(self.slot_sizes()), label="size")
        # Host PAs: sharing the IPA's block alignment (blocks possible) or a few pages off it.
        pa = (ipa - geo.region_base + geo.top_span +
              data.draw(st.sampled_from([0, 0, g, geo.span(2)]), label="pa_off"))
        backing = data.draw(st.sampled_from(self.backings() + [3 * g]), label="backing")
        readonly = data.draw(st.sampled_from([False, False, False, True]), label="readonly")
        log_dirty = data.draw(st.sampled_from([False, False, True]), label="log_dirty")
        if data.draw(st.integers(0, 15), label="bad") == 0:
            ipa += data.draw(st.sampled_from([1, g // 2]), label="misalign")
        self.note_range(ipa & ~(g - 1), size)
        self.both(lambda vm: vm.add_memslot(ipa, pa, size, readonly=readonly,
                                            log_dirty=log_dirty, backing=backing))

    @rule(data=st.data())
    def delete_memslot(self, data):
        slot = self.pick_slot(data)
        self.both(lambda vm: vm.delete_memslot(slot))

    @rule(data=st.data(), enable=st.booleans(), eager=st.booleans())
    def set_log_dirty(self, data, enable, eager):
        slot = self.pick_slot(data)
        self.both(lambda vm: vm.set_log_dirty(slot, enable, eager_split=eager))

    # -- the guest -------------------------------------------------------------------------------
    @rule(data=st.data(), access=st.sampled_from(ACCESSES))
    def guest_accesses(self, data, access):
        ipas = np.array(self.guest_ipas(data, data.draw(st.integers(1, 12), label="n")),
                        dtype=np.uint64)
        self.recent_probes = [int(x) for x in ipas[:4]]
        self.both(lambda vm: vm.access_many(ipas, access))

    @rule(data=st.data(), access=st.sampled_from(ACCESSES))
    def one_fault(self, data, access):
        (ipa,) = self.guest_ipas(data, 1)
        self.recent_probes = [ipa]
        self.both(lambda vm: vm.fault(ipa, access))

    @rule(data=st.data())
    def harvest(self, data):
        slot = self.pick_slot(data)
        clear = data.draw(st.booleans(), label="clear")
        self.both(lambda vm: vm.get_dirty_log(slot, clear=clear).tolist())

    @rule(data=st.data())
    def clear_dirty_log(self, data):
        slot = self.pick_slot(data)
        first = data.draw(st.sampled_from([0, 0, 64, 1, 128]), label="first_page")
        mask = data.draw(st.one_of(st.integers(0, 2 ** 64 - 1),
                                   st.sampled_from([1, 0xff, 2 ** 63, 2 ** 64 - 1])), label="mask")
        as_array = data.draw(st.booleans(), label="array")
        arg = np.array([mask, mask >> 1], dtype=np.uint64) if as_array else mask
        self.both(lambda vm: vm.clear_dirty_log(slot, first, arg))

    # -- aging and leaf operations ------------------------------------------------------------------
    @rule(data=st.data())
    def aging(self, data):
        ipa, size = data.draw(base.ranges(self.GEO), label="range")
        op = data.draw(st.sampled_from(["test_clear_young", "peek", "young", "young_clear",
                                        "mkyoung"]), label="op")
        self.note_range(ipa, size)
        if op == "test_clear_young":
            self.both(lambda vm: vm.test_clear_young(ipa, size))
        elif op == "peek":
            self.both(lambda vm: vm.test_clear_young(ipa, size, mkold=False))
        elif op == "mkyoung":
            self.both(lambda vm: vm.mkyoung(ipa + 5))
        else:
            clear = op == "young_clear"
            if size // self.GEO.granule > 1 << 16:
                return
            self.both(lambda vm: vm.young(ipa, size, clear=clear).tolist())

    @rule(data=st.data())
    def leaf_operation(self, data):
        geo = self.GEO
        ipa, size = data.draw(base.ranges(geo), label="range")
        op = data.draw(st.sampled_from(["wrprotect", "split", "collapse", "relax"]), label="op")
        self.note_range(ipa, size)
        if op == "wrprotect":
            self.both(lambda vm: vm.wrprotect(ipa, size))
        elif op == "split":
            # Splitting a top-level block whole makes too many leaves for the model to follow
            # step by step: keep to small ranges, and (kvm mode splits whole blocks) to ranges
            # that touch no leaf larger than a level-2 block.
            if size > 2 * geo.span(2):
                return
            try:
                big = [m for m in self.model.mappings(ipa, size) if m.size > geo.span(2)]
            except Exception:  # noqa: BLE001 - a bad range: both must refuse it alike
                big = []
            if big and self.model.semantics == "kvm":
                return
            self.both(lambda vm: vm.split(ipa, size))
        elif op == "collapse":
            self.both(lambda vm: vm.collapse(ipa, size))
        else:
            prot = data.draw(st.sampled_from(base.PROTS), label="prot")
            self.both(lambda vm: vm.relax_perms(ipa + 7, prot))

    @rule(how=st.sampled_from(["pickle", "deepcopy"]))
    def travel(self, how):
        """The engine's VMs (with the neighbour sharing their pool) go through pickle or
        deepcopy and the machine goes on with the copies: a restored VM must keep behaving as
        its model twin, which does not travel."""
        vms = [self.engine] + ([self.n_engine] if self.n_engine is not None else [])
        words = self.engine.pool.words.copy()
        moved = pickle.loads(pickle.dumps(vms)) if how == "pickle" else copy.deepcopy(vms)
        assert np.array_equal(moved[0].pool.words, words)
        assert all(vm.pool is moved[0].pool for vm in moved)
        self.engine = moved[0]
        if self.n_engine is not None:
            self.n_engine = moved[1]
        assert self.engine.diff(self.model) == []

    # -- after every step --------------------------------------------------------------------------
    def invariant_mmu(self):
        assert self.engine.memslots() == self.model.memslots()
        assert self.engine.fault_counts() == self.model.fault_counts()
        for slot in self.model.memslots():
            if slot.log_dirty:
                self.both(lambda vm: vm.get_dirty_log(slot.id, clear=False).tolist())

    def agree(self):
        super().agree()
        self.invariant_mmu()

    agree = base.invariant()(agree)


for _geo in GEOS:
    _machine = type(f"MMUDifferential_{_geo.name}", (MMUDifferential,), {"GEO": _geo})
    _machine.TestCase.settings = settings(
        settings.default, max_examples=max(1, round(settings.default.max_examples * _geo.weight)))
    globals()[f"Test{_geo.name}"] = _machine.TestCase
del _geo, _machine
