"""The performance workloads: the rows of the speed table, defined once.

``s2pt bench`` and the pytest-benchmark suite in ``benchmarks/`` both run these. A workload
builds its state outside the timed part (:meth:`Row.prepare`) and returns a :class:`Case`:
the timed call, how many operations it performs (pages, blocks, lookups or calls), and a check
of the result against architectural facts (leaf and table counts, bytes, translations), so a
fast wrong answer cannot pass for a result.

Each row runs on :class:`s2pt.Stage2` and on the pure-Python reference model
(:class:`s2pt.model.ReferenceStage2`) at the same small scale, so the speed-up is a ratio
measured in one run. The reference figures are the Linux kernel's stage-2 code
(arch/arm64/kvm/hyp/pgtable.c) built as a user-space program on a 2-core AMD EPYC (Zen 3),
gcc -O2, 4K granule, 40-bit IPA.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._core import PagePool, Stage2
from ._types import FSC_NONE

GiB = 1 << 30
#: Output addresses start here: 1 GiB-aligned, inside every PA size s2pt supports.
PA_BASE = 1 << 32
#: Random pages are drawn from this much IPA space (the kernel comparison's shape).
RANDOM_SPAN = 64 * GiB
SEED = 20261125

#: name -> (granule, ipa_bits)
CONFIGS = {"4k40": (4096, 40), "4k48": (4096, 48), "16k40": (16384, 40), "64k42": (65536, 42)}

#: Scales: "full" is the kernel comparison's size (1 GiB of pages, 2**18 random pages in
#: 64 GiB); "cache" fits in the caches; "model" is small enough for the reference model (whose
#: changes cost time in proportion to the leaves it holds), and s2pt runs it too for the ratio.
SCALES = {"full": {"bytes": GiB, "random": 1 << 18},
          "cache": {"bytes": 16 << 20, "random": 1 << 12},
          "model": {"bytes": 1 << 20, "random": 1 << 8}}


@dataclass
class Case:
    """One prepared workload: ``run()`` is timed, ``check(run())`` is not."""

    run: Callable[[], object]
    ops: int
    check: Callable[[object], None]


def _vm(engine, config: str):
    """A fresh VM. s2pt runs with its TLB event log off, as the kernel figures were taken
    with TLB maintenance stubbed out (the log costs a few ns per event until it fills)."""
    granule, ipa_bits = CONFIGS[config]
    if engine is Stage2:
        return Stage2(ipa_bits=ipa_bits, granule=granule, tlbi_capacity=0)
    return engine(ipa_bits=ipa_bits, granule=granule)


def _warm(vm, size: int, blocks: bool = False, pa: int = PA_BASE):
    """Map and unmap once, so the pool pages the workload allocates are committed and on the
    free stack: the steady state of a long-running VM, not the kernel's first-touch faults
    (a cold 2 MiB huge page costs ~0.1-0.3 ms to fault in and zero)."""
    vm.map(0, pa, size, blocks=blocks)
    vm.unmap(0, size)
    return vm


def _leaves(vm, level: int) -> int:
    return vm.stats()["leaves_by_level"].get(level, 0)


def _random_pages(config: str, scale: str) -> np.ndarray:
    """Distinct random granule pages (IPAs, uint64) in the random span of the scale."""
    granule, ipa_bits = CONFIGS[config]
    n = SCALES[scale]["random"]
    span = RANDOM_SPAN if scale == "full" else 64 * n * granule
    span = min(span, 1 << ipa_bits)
    rng = np.random.default_rng(SEED)
    pages = rng.choice(span // granule, size=n, replace=False).astype(np.uint64)
    return pages * np.uint64(granule)


def expected_table_pages(vm, ipas: np.ndarray) -> int:
    """KVM's table count for leaf pages at ``ipas``: the roots, plus one table per distinct
    span of an entry at every level from the start level down to the one above the last."""
    count = vm.root_tables
    for level in range(vm.start_level, 3):
        shift = vm.config.level_size(level).bit_length() - 1
        count += len(np.unique(ipas >> np.uint64(shift)))
    return count


def _map_random(vm, ipas: np.ndarray) -> None:
    pas = ipas + np.uint64(PA_BASE)
    if hasattr(vm, "map_many"):
        vm.map_many(ipas, pas, vm.config.granule)
    else:
        for ipa, pa in zip(ipas.tolist(), pas.tolist()):
            vm.map(ipa, pa, vm.config.granule)


def _translator(vm, ipas, out):
    """The timed lookup pass, after one untimed pass: a simulator translates against tables
    it uses all the time. (The first pass over tables just built costs ~1-4 ns more per
    lookup at the full scale, while their lines move into the caches.)"""
    if isinstance(vm, Stage2):
        vm.translate_many(ipas, out=out)
        return lambda: vm.translate_many(ipas, out=out)
    return lambda: vm.translate_many(ipas)  # the model allocates its own arrays


def _outputs(n: int):
    """Caller-owned result arrays, touched once: a simulator translating batch after batch
    reuses them (fresh arrays cost a page fault per 4 KiB the first time they are written)."""
    return np.full(n, 1, dtype=np.uint64), np.full(n, 1, dtype=np.uint8)


# ---- the rows --------------------------------------------------------------------------------

def map_pages(engine, config, scale):
    size = SCALES[scale]["bytes"]
    vm = _warm(_vm(engine, config), size)
    n = size // vm.config.granule

    def check(_):
        assert _leaves(vm, 3) == n

    return Case(lambda: vm.map(0, PA_BASE, size, blocks=False), n, check)


def map_blocks(engine, config, scale):
    vm = _vm(engine, config)
    block = vm.config.level_size(2)
    # As many blocks as 4K's 2 MiB blocks in the scale's bytes (512 at full scale), so the
    # per-block figure is comparable across granules (16K: 32 MiB, 64K: 512 MiB blocks).
    size = max(2, SCALES[scale]["bytes"] // (2 << 20)) * block
    # The output is block-aligned but not 1 GiB-aligned with the IPA: level-2 blocks only.
    pa = PA_BASE + block
    _warm(vm, size, blocks=True, pa=pa)

    def check(_):
        assert _leaves(vm, 2) == size // block and vm.stats()["mapped_bytes"] == size

    return Case(lambda: vm.map(0, pa, size), size // block, check)


def map_per_call(engine, config, scale):
    vm = _warm(_vm(engine, config), SCALES[scale]["bytes"])
    granule = vm.config.granule
    n = SCALES[scale]["bytes"] // granule
    pairs = [(i * granule, PA_BASE + i * granule) for i in range(n)]
    map_ = vm.map

    def run():
        for ipa, pa in pairs:
            map_(ipa, pa, granule)

    def check(_):
        assert _leaves(vm, 3) == n

    return Case(run, n, check)


def _sequential_vm(engine, config, scale):
    vm = _vm(engine, config)
    size = SCALES[scale]["bytes"]
    vm.map(0, PA_BASE, size, blocks=False)
    return vm, size // vm.config.granule


def translate_seq(engine, config, scale):
    vm, n = _sequential_vm(engine, config, scale)
    granule = vm.config.granule
    ipas = np.random.default_rng(SEED).permutation(n).astype(np.uint64) * np.uint64(granule)
    ipas += np.uint64(granule // 2)

    out = _outputs(n)

    def check(result):
        pa, fsc = result
        assert (fsc == FSC_NONE).all() and (pa == ipas + np.uint64(PA_BASE)).all()

    return Case(_translator(vm, ipas, out), n, check)


def translate_random(engine, config, scale):
    vm = _vm(engine, config)
    pages = _random_pages(config, scale)
    _map_random(vm, pages)
    ipas = np.random.default_rng(SEED + 1).permutation(pages)

    out = _outputs(len(ipas))

    def check(result):
        pa, fsc = result
        assert (fsc == FSC_NONE).all() and (pa == ipas + np.uint64(PA_BASE)).all()

    return Case(_translator(vm, ipas, out), len(ipas), check)


def unmap_seq(engine, config, scale):
    vm, n = _sequential_vm(engine, config, scale)
    size = n * vm.config.granule

    def check(unmapped):
        assert unmapped == size and vm.stats()["table_pages"] == vm.root_tables

    return Case(lambda: vm.unmap(0, size), n, check)


def unmap_random(engine, config, scale):
    vm = _vm(engine, config)
    pages = _random_pages(config, scale)
    _map_random(vm, pages)
    span = int(pages.max()) + vm.config.granule

    def check(unmapped):
        assert unmapped == len(pages) * vm.config.granule
        assert vm.stats()["table_pages"] == vm.root_tables

    return Case(lambda: vm.unmap(0, span), len(pages), check)


def unmap_per_call(engine, config, scale):
    vm, n = _sequential_vm(engine, config, scale)
    granule = vm.config.granule
    ipas = [i * granule for i in range(n)]
    unmap = vm.unmap

    def run():
        for ipa in ipas:
            unmap(ipa, granule)

    def check(_):
        assert vm.stats()["table_pages"] == vm.root_tables

    return Case(run, n, check)


@dataclass(frozen=True)
class Row:
    name: str
    title: str
    unit: str
    kernel_ns: float
    target_ns: float
    prepare: Callable[[object, str, str], Case]
    configs: tuple = ("4k40", "4k48")


ROWS = (
    Row("map_pages", "map 1 GiB of pages, one call", "page", 19.7, 4, map_pages,
        tuple(CONFIGS)),
    Row("map_blocks", "map 1 GiB as 2 MiB blocks, one call", "block", 21, 10, map_blocks,
        tuple(CONFIGS)),
    Row("map_per_call", "map one page per call (Python loop)", "call", 64, 250, map_per_call,
        tuple(CONFIGS)),
    Row("translate_seq", "translate_many, sequential pages, shuffled", "lookup", 43, 10,
        translate_seq, tuple(CONFIGS)),
    Row("translate_random", "translate_many, random pages in 64 GiB", "lookup", 202, 100,
        translate_random, tuple(CONFIGS)),
    Row("unmap_seq", "unmap the whole range, sequential pages", "page", 7.6, 4, unmap_seq),
    Row("unmap_random", "unmap the whole range, random pages", "page", 415, 50, unmap_random),
    Row("unmap_per_call", "unmap one page per call (Python loop)", "call", 40, 250,
        unmap_per_call),
)
ROW = {row.name: row for row in ROWS}
#: The kernel's table pages for 2**18 random pages in 64 GiB (its own random set).
KERNEL_TABLE_PAGES = 32_821


def table_pages(config: str = "4k40", scale: str = "full") -> tuple[int, int]:
    """(table pages s2pt uses, KVM's count for the same pages) for the random workload."""
    vm = _vm(Stage2, config)
    pages = _random_pages(config, scale)
    _map_random(vm, pages)
    return vm.stats()["table_pages"], expected_table_pages(vm, pages)


def measure(row: Row, engine, config: str, scale: str, repeat: int = 5) -> float:
    """Median ns per operation over ``repeat`` fresh cases (setup and checks not timed)."""
    samples = []
    for _ in range(repeat):
        case = row.prepare(engine, config, scale)
        start = time.perf_counter_ns()
        result = case.run()
        samples.append((time.perf_counter_ns() - start) / case.ops)
        case.check(result)
    return statistics.median(samples)
