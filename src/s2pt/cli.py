"""The ``s2pt`` command: ``s2pt geometry``, ``s2pt demo``, ``s2pt bench`` and ``s2pt replay``."""

from __future__ import annotations

import argparse
import sys

from . import (Access, ConfigError, FaultOutcome, MemAttr, Prot, Stage2, Stage2Config,
               Stage2Fault, bitmap_pages)
from . import _core
from ._core import TLBI_IPA, TLBI_RANGE, TLBI_VMID, TLBI_LEVEL_UNKNOWN

GiB, MiB, KiB = 1 << 30, 1 << 20, 1 << 10


def _size(n: int) -> str:
    """2 MiB, or 1 GiB + 12 KiB for sizes that are not one unit."""
    parts = []
    for unit, name in ((1 << 40, "TiB"), (GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB"), (1, "B")):
        if n >= unit:
            parts.append(f"{n // unit} {name}")
            n %= unit
    return " + ".join(parts) or "0 B"


def _prot(prot: Prot) -> str:
    names = [name for name, bit in (("R", Prot.R), ("W", Prot.W), ("X", Prot.X)) if prot & bit]
    return "".join(names) or "none"


def geometry(args: argparse.Namespace) -> int:
    """Print the stage-2 geometry for one configuration, or for every IPA size of a granule."""
    sizes = [args.ipa_bits] if args.ipa_bits else range(32, 49)
    if args.vtcr is not None:
        configs = [Stage2Config.from_vtcr(args.vtcr, vmid=args.vmid)]
    else:
        configs = []
        for ipa_bits in sizes:
            try:
                configs.append(Stage2Config(ipa_bits, args.granule, args.pa_bits, args.vmid))
            except ConfigError as exc:
                if args.ipa_bits:
                    raise
                print(f"# ipa_bits={ipa_bits}: {exc}", file=sys.stderr)
    header = (f"{'granule':>7} {'ipa':>3} {'pa':>3} {'levels':>6} {'start':>5} {'root':>4} "
              f"{'entries':>7} {'root size':>9} {'t0sz':>4} {'sl0':>3} {'vtcr':>12}  blocks")
    print(header)
    print("-" * len(header))
    for c in configs:
        blocks = ", ".join(f"L{lv} {_size(c.level_size(lv))}"
                           for lv in range(max(c.min_block_level, c.start_level), 3))
        print(f"{_size(c.granule):>7} {c.ipa_bits:>3} {c.pa_bits:>3} {c.levels:>6} "
              f"{c.start_level:>5} {c.root_tables:>4} {c.root_entries:>7} "
              f"{_size(c.root_size):>9} {c.t0sz:>4} {c.sl0:>3} {c.vtcr:#12x}  "
              f"{blocks or '-'}")
    print("\nroot = concatenated tables at the start level (KVM never adds a level instead); "
          "the root is aligned to its size.")
    return 0


def _tlbi_text(ev) -> str:
    kind, level, ipa, size = int(ev["kind"]), int(ev["level"]), int(ev["ipa"]), int(ev["size"])
    if kind == TLBI_VMID:
        return "TLBI VMALLS12E1 (whole VMID)"
    hint = "level ?" if level == TLBI_LEVEL_UNKNOWN else f"level {level}"
    if kind == TLBI_RANGE:
        return f"TLBI range {ipa:#x} + {_size(size)}"
    assert kind == TLBI_IPA
    return f"TLBI IPAS2E1 {ipa:#x} ({hint}, {_size(size)})"


#: TLB event reasons by value, for printing (TLBI_SPLIT -> "split").
_REASONS = {getattr(_core, f"TLBI_{name}"): name.lower()
            for name in ("UNMAP", "TABLE", "REPLACE", "SPLIT", "COALESCE", "PERM", "AF",
                         "DESTROY", "OVERFLOW", "WRPROTECT")}


def _outcomes(outcome) -> str:
    """'MAPPED 2, HIT 62': the FaultOutcome codes of an access_many result, counted."""
    import numpy as np

    counts = np.bincount(outcome, minlength=len(FaultOutcome))
    return ", ".join(f"{FaultOutcome(k).name} {n}" for k, n in enumerate(counts) if n)


def _pages(pages) -> str:
    return "[" + ", ".join(str(int(p)) for p in pages) + "]"


def _mmu_demo(pt: Stage2, out) -> None:
    """A live-migration round and an aging scan on a memslot of the VM (KVM's MMU layer)."""
    import collections

    import numpy as np

    g = pt.granule
    block = pt.config.level_size(2)
    ipa, pa, size = 0x8000_0000, 0x40_0000_0000, 2 * block
    npages = size // g

    def at(pages) -> np.ndarray:  # IPAs inside the given pages of the slot
        return np.asarray(pages, dtype=np.uint64) * np.uint64(g) + np.uint64(ipa + 0x10)

    def leaves() -> str:  # the slot's leaves by level
        levels = collections.Counter(m.level for m in pt.mappings(ipa, size))
        return ", ".join(f"L{lv}: {n}" for lv, n in sorted(levels.items())) or "none"

    def events() -> str:  # the TLB log since the last call, then cleared
        evs = pt.tlbi_log()
        if len(evs) > 3:
            reasons = collections.Counter(_REASONS.get(int(r), "?") for r in evs["reason"])
            return f"{len(evs)} events (" + ", ".join(f"{n} {r}" for r, n in reasons.items()) + ")"
        text = [f"{_tlbi_text(ev)} [{_REASONS.get(int(ev['reason']), '?')}]" for ev in evs]
        return "; ".join(text) or "none"

    out("\nLive migration round (KVM's MMU layer: memslot, guest faults, dirty logging):")
    slot = pt.add_memslot(ipa, pa, size, backing=block)
    out(f"  add_memslot({ipa:#x} -> {pa:#x}, {_size(size)}, backing {_size(block)}) -> slot "
        f"{slot}: {npages} pages, nothing mapped yet")
    touched = at(range(0, npages, 16))
    _, outcome = pt.access_many(touched, Access.WRITE)
    out(f"  guest writes every 16th page ({len(touched)} accesses): {_outcomes(outcome)}; "
        f"slot leaves {leaves()}")
    pt.tlbi_log()
    pt.set_log_dirty(slot, True, eager_split=True)
    out(f"  set_log_dirty(on, eager_split): slot leaves {leaves()}, all read-only to the guest")
    out(f"    TLB: {events()}")
    written = [3, 17, 18, 700]
    _, outcome = pt.access_many(at(written), Access.WRITE)
    out(f"  guest writes pages {_pages(written)}: {_outcomes(outcome)}; TLB: {events()}")
    _, outcome = pt.access_many(at(written), Access.WRITE)
    out(f"  the same writes again: {_outcomes(outcome)} (writable now); TLB: {events()}")
    dirty = bitmap_pages(pt.get_dirty_log(slot))
    out(f"  get_dirty_log(clear=True): dirty pages {_pages(dirty)}")
    out(f"    TLB: {events()}")
    try:
        pt.translate(int(at([written[0]])[0]), Access.WRITE)
    except Stage2Fault as f:
        fault = f"{f.kind.name.lower()} fault, level {f.level}"
    else:  # pragma: no cover - the harvest write-protects the page
        raise AssertionError("harvested page still writable")
    _, outcome = pt.access_many(at(written[:1]), Access.WRITE)
    out(f"  page {written[0]} write-protected again ({fault}); next write: "
        f"{_outcomes(outcome)}; log now "
        f"{_pages(bitmap_pages(pt.get_dirty_log(slot, clear=False)))}")

    out("\nAging scan (access flags, as KVM's MMU notifiers age guest pages):")
    pt.tlbi_log()
    young = bitmap_pages(pt.young(ipa, size))
    out(f"  young pages: {len(young)} of {npages}")
    cleared = pt.test_clear_young(ipa, size)
    out(f"  test_clear_young(slot) -> {cleared}; young pages now: "
        f"{len(bitmap_pages(pt.young(ipa, size)))}; TLB: {events()}")
    read = [5, 9]
    _, outcome = pt.access_many(at(read), Access.READ)
    out(f"  guest reads pages {_pages(read)}: {_outcomes(outcome)} (mkyoung); young pages "
        f"{_pages(bitmap_pages(pt.young(ipa, size)))}")
    out(f"  test_clear_young -> {pt.test_clear_young(ipa, size)}, again -> "
        f"{pt.test_clear_young(ipa, size)}")
    counts = ", ".join(f"{k.name} {n}" for k, n in pt.fault_counts().items() if n)
    out(f"  fault_counts(): {counts}")
    before = pt.table_pages
    pt.delete_memslot(slot)
    pt.tlbi_log()
    out(f"  delete_memslot({slot}): table pages {before} -> {pt.table_pages}; "
        f"slots left {len(pt.memslots())}")


def _desc_kind(desc: int, level: int) -> str:
    if not desc & 1:
        return "invalid"
    return ("table" if level < 3 else "page") if desc & 2 else "block"


def _nested_demo(g: int, out) -> int:
    """One guest access walked through both stages, read by read; then the faults that
    name their stage (S1PTW among them) and a batch of accesses."""
    import numpy as np

    from . import GuestAccess, PagePool, Stage1, Stage1Fault

    ram_ipa, ram_pa, ram = 0x4000_0000, 0x8_0000_0000, 1 * GiB
    tables_ipa = ram_ipa + ram - 64 * g        # the guest keeps its page tables in its RAM
    vm = Stage2(ipa_bits=48, granule=g, pa_bits=48, vmid=7)
    s1 = Stage1(va_bits=48, granule=g, ips_bits=48, asid=3, pool=PagePool(64, g, tables_ipa))
    vm.map(ram_ipa, ram_pa, ram, blocks=False)  # no huge pages behind the guest's RAM
    out(f"VM: 48-bit IPA, {_size(g)} granule: {vm.levels} stage-2 levels from level "
        f"{vm.start_level}; guest RAM {_size(ram)} at IPA {ram_ipa:#x} -> PA {ram_pa:#x} "
        f"in {_size(g)} pages")
    out(f"  VTCR_EL2 = {vm.vtcr:#x}   VTTBR_EL2 = {vm.vttbr:#x}")
    out(f"Guest: 48-bit VA, {_size(g)} granule: {s1.levels} stage-1 levels from level "
        f"{s1.start_level}; its tables in its own RAM from IPA {tables_ipa:#x}")
    out(f"  TCR_EL1 = {s1.tcr:#x}   TTBR0_EL1 = {s1.ttbr:#x}   MAIR_EL1 = {s1.mair:#x}")

    va, data_ipa = 0x0000_7FFF_F012_3000 & ~(g - 1), ram_ipa + 0x0123_4000 & ~(g - 1)
    s1.map(va, data_ipa, 4 * g, Prot.RW, user=True, blocks=False)
    out(f"  guest map  VA {va:#x} -> IPA {data_ipa:#x}  {_size(4 * g)} RW, EL0 too")
    access = va + 0x5A8
    t = vm.translate2(access, s1, GuestAccess.READ_EL0)
    out(f"\nAn EL0 read of VA {access:#x} -> IPA {t.ipa:#x} -> PA {t.pa:#x}: "
        f"{len(t.steps)} descriptor reads, in the order hardware makes them")
    out("(IPA: what a stage-2 walk translates; of a stage-1 read, the descriptor's own IPA)")
    out(f"  {'#':>3}  {'stage':<5} {'level':<5} {'IPA':<16} {'descriptor PA':<16} "
        f"{'descriptor':<18}  kind")
    for i, step in enumerate(t.steps, 1):
        out(f"  {i:>3}  S{step.stage:<4} L{step.level:<4} {step.ipa:<#16x} {step.desc_pa:<#16x} "
            f"{step.desc:#018x}  {_desc_kind(step.desc, step.level)}")
    memattr = MemAttr(t.memattr).name if t.memattr in set(MemAttr) else hex(t.memattr)
    out(f"  both stages grant {_prot(t.prot)}{' (EL0 too)' if t.prot & Prot.USER else ''}; "
        f"memory type {memattr}")

    out("\nFaults, each with its stage (what ESR_EL1, or ESR_EL2 and HPFAR_EL2, would say):")
    s1.map(va + 8 * g, data_ipa + 8 * g, g, Prot.R)
    s1.map(va + 9 * g, ram_ipa + ram + 16 * g, g, Prot.RW)
    table_ipa = s1.walk(va)[-1].table_pa
    cases = [
        (va + 8 * g, GuestAccess.WRITE, "write to a page stage 1 maps read-only", None),
        (va + 8 * g, GuestAccess.READ_EL0, "EL0 read of a page without AP[1]", None),
        (va + 64 * g, GuestAccess.READ, "a VA stage 1 does not map", None),
        (va + 9 * g, GuestAccess.READ, "an output IPA beyond the guest's RAM", None),
        (va, GuestAccess.READ, "stage 2 no longer maps the guest's last-level table",
         table_ipa),
    ]
    for a, acc, why, unmap in cases:
        if unmap is not None:
            vm.unmap(unmap, g)
        try:
            vm.translate2(a, s1, acc)
        except (Stage1Fault, Stage2Fault) as f:
            extra = (f", S1PTW {int(f.s1ptw)}, IPA {f.ipa:#x}" if f.stage == 2 else "")
            out(f"  {why + ':':<54} stage {f.stage}, {f.kind.name.lower()} fault at level "
                f"{f.level}, FSC {f.fsc:#04x}{extra}")
        if unmap is not None:
            vm.map(unmap, ram_pa + (unmap - ram_ipa), g)

    vas = np.arange(va, va + 4 * g, g // 4, dtype=np.uint64)
    pa, fsc, stage, reads = vm.translate2_many(vas, s1, GuestAccess.READ)
    out(f"\ntranslate2_many over {len(vas)} VAs in one C call: {int((stage == 0).sum())} "
        f"translated, {int(reads[0])} descriptor reads each as hardware without walk caches "
        f"makes them")
    s1.check()
    vm.check()
    out("check(): both stages' refcounts, tables and descriptors are consistent.")
    return 0

def demo(args: argparse.Namespace) -> int:
    """A VM with a realistic guest layout, its walks, its faults and its table pages; then a
    live-migration round and an aging scan on a memslot. ``--nested``: the two-dimensional
    walk of a guest access instead."""
    out = print
    g = args.granule
    if args.nested:
        return _nested_demo(g, out)
    pt = Stage2(ipa_bits=40, granule=g, pa_bits=48, vmid=7)

    def counts(label: str) -> None:
        st = pt.stats()
        by_level = ", ".join(f"L{lv}: {n}" for lv, n in st["table_pages_by_level"].items())
        leaves = ", ".join(f"L{lv}: {n}" for lv, n in st["leaves_by_level"].items() if n)
        out(f"  [{label}] table pages {st['table_pages']} ({by_level}); leaves {leaves or '-'}; "
            f"mapped {_size(st['mapped_bytes']) if st['mapped_bytes'] else '0'}; "
            f"pool {pt.pool.used} used")

    out(f"VM: 40-bit IPA, {_size(g)} granule, 48-bit PA, VMID 7 -> {pt.levels} levels from "
        f"level {pt.start_level}, {pt.root_tables} concatenated root table(s)")
    out(f"  VTCR_EL2 = {pt.vtcr:#x}   VTTBR_EL2 = {pt.vttbr:#x}")
    counts("empty")

    block = Stage2Config(40, g).level_size(2)  # the level-2 block: 2 MiB / 32 MiB / 512 MiB
    layout = [
        # (name, ipa, pa, size, prot, memattr, af)
        ("flash (read-only, executable)", 0x0, 0x10_0000_0000, 2 * MiB, Prot.RX,
         MemAttr.NORMAL, True),
        ("UART (device)", 0x0900_0000, 0x0900_0000, g, Prot.RW, MemAttr.DEVICE_nGnRE, True),
        ("RAM bank 0", 0x4000_0000, 0x20_0000_0000, 2 * block + 3 * g, Prot.RWX,
         MemAttr.NORMAL, True),
        ("RAM bank 1 (not yet accessed)", 0x1_0000_0000, 0x30_0000_0000, 4 * g, Prot.RW,
         MemAttr.NORMAL, False),
    ]
    out("\nGuest layout (0x0a00_0000 is a hole; the largest aligned leaf wins):")
    for name, ipa, pa, size, prot, memattr, af in layout:
        pt.map(ipa, pa, size, prot, memattr, af=af)
        out(f"  map {ipa:#014x} -> {pa:#014x}  {_size(size):>15}  {_prot(prot):<4} "
            f"{memattr.name:<13} {name}")
    counts("mapped")
    pt.tlbi_log()  # a fresh VM has nothing cached: start the log here

    out("\nTranslations (each walk step: level, table PA[index] = descriptor):")
    probes = [
        (0x4000_0000 + 5 * g + 0x123, Access.READ),
        (0x4000_0000 + 2 * block + g + 0x8, Access.EXEC),
        (0x0900_0000 + 0x18, Access.WRITE),
        (0x0000_1000, Access.EXEC),
    ]
    for ipa, access in probes:
        t = pt.translate(ipa, access)
        out(f"  {access.name.lower():>5} {ipa:#014x} -> PA {t.pa:#014x}  level {t.level} "
            f"{_size(t.size)} leaf, {_prot(t.prot)}, {t.memattr.name}")
        for s in pt.walk(ipa):
            kind = ("table" if s.desc & 3 == 3 and s.level < 3 else
                    "page" if s.desc & 3 == 3 else "block" if s.desc & 1 else "invalid")
            out(f"        L{s.level}: {s.table_pa:#x}[{s.index}] @ {s.desc_pa:#x} = "
                f"{s.desc:#018x} ({kind})")

    out("\nFaults (what ESR_EL2 would say):")
    faulting = [
        (0x0000_2000, Access.WRITE, "write to flash"),
        (0x0A00_0000, Access.READ, "read from the hole"),
        (0x1_0000_0000, Access.READ, "first touch of RAM bank 1 (AF clear)"),
        (0x0900_0000, Access.EXEC, "execute from the UART"),
        (1 << 40, Access.READ, "IPA beyond the 40-bit IPA space"),
    ]
    for ipa, access, why in faulting:
        try:
            pt.translate(ipa, access)
        except Stage2Fault as f:
            out(f"  {access.name.lower():>5} {ipa:#014x}: {f.kind.name.lower():<12} fault, "
                f"level {f.level}, FSC {f.fsc:#04x}   ({why})")
        else:  # pragma: no cover - the layout above guarantees a fault
            raise AssertionError(f"{why}: no fault")

    out("\nUnmap one page in the middle of a block (the rest of the block stays mapped):")
    before = pt.table_pages
    pt.unmap(0x4000_0000 + g, g)
    t = pt.translate(0x4000_0000 + 2 * g)
    out(f"  table pages {before} -> {pt.table_pages}; {0x4000_0000 + 2 * g:#x} still maps to "
        f"{t.pa:#x} (level {t.level})")
    out("\nUnmap RAM bank 0 entirely: every emptied table is freed at once:")
    before = pt.table_pages
    n = pt.unmap(0x4000_0000, 2 * block + 3 * g)
    out(f"  {_size(n)} unmapped; table pages {before} -> {pt.table_pages}")
    counts("after unmap")
    events = pt.tlbi_log()
    out(f"\nTLB invalidations those unmaps require ({len(events)}):")
    for ev in events[:8]:
        out(f"  {_tlbi_text(ev)}")
    if len(events) > 8:
        out(f"  ... {len(events) - 8} more")
    _mmu_demo(pt, out)
    pt.check()
    out("\ncheck(): every refcount, table and descriptor is consistent.")
    pt.destroy()
    out(f"destroy(): pool back to {pt.pool.used} used pages.")
    return 0


def _machine() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = f"{names[0]}, {len(names)} CPUs"
    except OSError:
        pass
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}; Python {platform.python_version()}; {platform.system()} "
            f"{platform.release()}; load average {load:.2f} before the run")


def ptdump(args: argparse.Namespace) -> int:
    """Print VMs in KVM's stage-2 ptdump format: from an s2pt.save file, or the VM the
    default replay trace leaves behind."""
    import tempfile

    from ._state import load
    from .replay import replay

    if args.file is None:
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/default.npz"
            replay(None, granule=args.granule, ipa_bits=args.ipa_bits, progress=False,
                   save=path)
            vms = load(path)
        source = "the default replay trace"
    else:
        vms = load(args.file)
        source = args.file
    chosen = range(len(vms)) if args.vm is None else [args.vm]
    for i in chosen:
        if not 0 <= i < len(vms):
            print(f"s2pt: {source} holds {len(vms)} VM(s); there is no VM {i}", file=sys.stderr)
            return 2
        vm = vms[i]
        print(f"# VM {i} of {source}: {vm.granule // 1024}K granule, {vm.ipa_bits}-bit IPA, "
              f"VMID {vm.vmid}, VTTBR_EL2 {vm.vttbr:#x}, VTCR_EL2 {vm.vtcr:#x}")
        print(vm.dump(), end="")
    return 0


def _bench_rows() -> dict:
    """Every row of the speed table: the engine's and MMU's (s2pt.perf), then replay's."""
    from . import perf, replay

    return {row.name: row for row in (*perf.ROWS, *replay.bench_rows())}


def bench(args: argparse.Namespace) -> int:
    """The speed table on this machine: median per operation, the reference model's, and the
    ratios between rows (measured in this run, their repeats interleaved)."""
    import os
    import time

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from . import perf
    from .model import ReferenceStage2

    everything = _bench_rows()
    rows = [everything[name] for name in args.rows] if args.rows else list(everything.values())
    started = time.perf_counter()
    out = print
    out(f"s2pt bench: {args.config}, {args.scale} scale, median of {args.repeat} runs; "
        f"TLB event log off (the kernel's figures stub TLB maintenance out)")
    out(f"machine: {_machine()}")
    out(f"\n{'operation':<44} {'unit':<9} {'kernel':>7} {'target':>7} {'s2pt':>9} {'met':>4}"
        + ("" if args.no_model else f" {'model':>11} {'ratio':>9}"))
    ok = True
    results = {}
    for group in perf.groups(rows):
        if len(group) > 1:
            medians = perf.measure_rows(group, Stage2, args.config, args.scale, args.repeat)
        else:
            medians = {group[0].name: perf.measure(group[0], Stage2, args.config, args.scale,
                                                   args.repeat)}
        for row in group:
            ns = results[row.name] = medians[row.name]
            met = row.met(ns)
            ok &= met is not False or args.scale != "full"
            line = (f"{row.title:<44} {row.per:<9} {_opt(row.kernel_ns):>7} "
                    f"{_opt(row.shown(row.target_ns)):>7} {row.shown(ns):>9.2f} "
                    f"{_yes(met):>4}")
            if not args.no_model and row.model:
                small = perf.measure(row, Stage2, args.config, "model", args.repeat)
                model = perf.measure(row, ReferenceStage2, args.config, "model", 1)
                line += f" {model:>11.0f} {model / small:>8,.0f}x"
            elif not args.no_model:
                line += f" {'-':>11} {'-':>9}"
            out(line)
    used, expected = perf.table_pages(args.config, args.scale)
    out(f"{'table pages for the random pages':<44} {'pages':<9} "
        f"{perf.KERNEL_TABLE_PAGES if args.scale == 'full' else '-':>7} {'KVM':>7} {used:>9} "
        f"{'yes' if used == expected else 'no':>4}   (KVM's rule: {expected})")
    ratios = [r for r in perf.RATIOS if r.num in results and r.den in results]
    if ratios:
        out(f"\n{'ratio (same run, repeats interleaved)':<44} {'':<9} {'':>7} {'target':>7} "
            f"{'s2pt':>9} {'met':>4}")
    for ratio in ratios:
        value = ratio.value(results[ratio.num], results[ratio.den])
        met = ratio.met(value)
        ok &= met is not False or args.scale != "full"
        out(f"{ratio.title:<44} {'':<9} {'':>7} {ratio.goal:>7} {value:>8.2f}x "
            f"{_yes(met):>4}   ({ratio.num} / {ratio.den})")
    out(f"\nkernel: arch/arm64/kvm/hyp/pgtable.c as a user-space program, same kind of machine, "
        f"4K/40-bit. model: s2pt.model.ReferenceStage2 at the small scale, ratio = model/s2pt "
        f"at that scale (the MMU rows run on s2pt only). First-touch rows: fresh VMs on warm "
        f"pools (the handler, not the kernel zeroing memory). "
        f"{time.perf_counter() - started:.1f} s.")
    return 0 if ok and used == expected else 1


def _opt(value) -> str:
    return "-" if value is None else f"{value:g}"


def _yes(met) -> str:
    return {True: "yes", False: "no", None: "-"}[met]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="s2pt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("geometry", help="levels / start level / concatenation / VTCR per IPA size")
    p.add_argument("--granule", type=int, default=4096, choices=(4096, 16384, 65536))
    p.add_argument("--ipa-bits", type=int, default=None, help="one IPA size (default: 32..48)")
    p.add_argument("--pa-bits", type=int, default=48)
    p.add_argument("--vmid", type=int, default=1)
    p.add_argument("--vtcr", type=lambda s: int(s, 0), default=None,
                   help="decode and validate a VTCR_EL2 value instead")
    p.set_defaults(func=geometry)

    p = sub.add_parser("demo", help="a VM with a guest layout: walks, faults, unmaps, "
                                    "dirty logging, aging")
    p.add_argument("--granule", type=int, default=4096, choices=(4096, 16384, 65536))
    p.add_argument("--nested", action="store_true",
                   help="a guest's stage 1 on top: one access read by read through both stages")
    p.set_defaults(func=demo)

    p = sub.add_parser("ptdump", help="a VM's tables in KVM's stage-2 ptdump format")
    p.add_argument("file", nargs="?", default=None,
                   help="an s2pt.save file (default: replay the default trace, dump its VM)")
    p.add_argument("--vm", type=int, default=None, help="only this VM of the file (0, 1, ...)")
    p.add_argument("--granule", type=int, default=None, choices=(4096, 16384, 65536),
                   help="for the default trace")
    p.add_argument("--ipa-bits", type=int, default=None, help="for the default trace")
    p.set_defaults(func=ptdump)

    p = sub.add_parser("bench", help="the speed table on this machine (under a minute)")
    p.add_argument("--config", default="4k40", choices=("4k40", "4k48", "16k40", "64k42"))
    p.add_argument("--scale", default="full", choices=("full", "cache", "model"),
                   help="full: 1 GiB of pages, 2**18 random pages in 64 GiB (default)")
    p.add_argument("--repeat", type=int, default=5, help="runs per row; the median is shown")
    p.add_argument("--row", dest="rows", action="append",
                   choices=list(_bench_rows()),
                   help="only this row (repeatable)")
    p.add_argument("--no-model", action="store_true", help="skip the reference model")
    p.set_defaults(func=bench)

    from .replay import add_parser as add_replay_parser

    add_replay_parser(sub)  # s2pt replay [TRACE...] (src/s2pt/replay.py)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        parser.exit(2, f"s2pt: {exc}\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
