"""Threads: bulk calls (map / unmap of >= 64 pages, map_many, translate_many, translate2_many,
split, collapse, wrprotect, the young scans, the dirty log) run without the GIL, under one lock
per pool. Whatever the interleaving:

* two VMs with pools of their own give exactly what they give run one after the other;
* VMs sharing a pool, and threads sharing one VM, never corrupt anything (pt.check() passes,
  the pool's count equals the VMs' table pages) and, for operations that commute (disjoint
  IPA regions), the final tables equal a sequential oracle's.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import s2pt
from s2pt import Access, FaultOutcome as FO, Prot

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
PA = 8 * GiB
ROUNDS = 300


def run_threads(*fns):
    """Run each fn in its own thread, started together; re-raise the first error."""
    barrier = threading.Barrier(len(fns))
    results = [None] * len(fns)
    errors = []

    def wrap(i, fn):
        try:
            barrier.wait()
            results[i] = fn()
        except BaseException as exc:     # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "thread hung"
    if errors:
        raise errors[0]
    return results


def state(pt):
    return list(pt.mappings()), pt.stats()["leaves_by_level"], pt.stats()["table_pages"]


# ---- workloads -------------------------------------------------------------------------------

def big_workload(pt, seed):
    """Large GIL-free calls on one VM; returns everything observable, in order."""
    rng = np.random.default_rng(seed)
    out = []
    slot = pt.add_memslot(GiB, PA, 64 * MiB, backing=2 * MiB)
    pt.map(4 * GiB, PA, 256 * MiB)                          # blocks
    pt.map(8 * GiB + 4 * KiB, PA + 4 * KiB, 32 * MiB)       # pages (misaligned for blocks)
    for _ in range(4):
        ipas = (rng.integers(0, 300 * MiB, 50_000).astype(np.uint64)
                + np.uint64(4 * GiB))
        out.append(pt.translate_many(ipas))
        acc = rng.integers(GiB, GiB + 64 * MiB, 5_000).astype(np.uint64)
        out.append(pt.access_many(acc, Access.READ))
        out.append(pt.access_many(acc[:1000], Access.WRITE))
        out.append(pt.split(4 * GiB, 16 * MiB))
        out.append(pt.wrprotect(8 * GiB, 8 * MiB))
        out.append(pt.young(GiB, 64 * MiB, clear=True))
        out.append(pt.collapse(4 * GiB, 16 * MiB))
        out.append(pt.unmap(8 * GiB + 4 * KiB, 4 * MiB))
        pt.map(8 * GiB + 4 * KiB, PA, 4 * MiB)
    pt.set_log_dirty(slot, True, eager_split=True)
    out.append(pt.access_many(rng.integers(GiB, GiB + 64 * MiB, 3_000).astype(np.uint64),
                              Access.WRITE))
    out.append(pt.get_dirty_log(slot))
    out.append(state(pt))
    return out


def same_results(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, tuple) and x and isinstance(x[0], np.ndarray):
            assert all(np.array_equal(p, q) for p, q in zip(x, y))
        elif isinstance(x, np.ndarray):
            assert np.array_equal(x, y)
        else:
            assert x == y


def own_vm():
    return s2pt.Stage2(pool=s2pt.PagePool(4096))


def test_two_vms_with_own_pools_in_parallel_equal_sequential():
    oracle = [big_workload(own_vm(), seed) for seed in (1, 2)]
    for _ in range(2):
        vms = [own_vm(), own_vm()]
        got = run_threads(lambda: big_workload(vms[0], 1), lambda: big_workload(vms[1], 2))
        for g, o in zip(got, oracle):
            same_results(g, o)
        for pt in vms:
            pt.check()


# ---- shared pool -----------------------------------------------------------------------------

def churn(pt, base, rounds, seed):
    """Map and unmap a region of its own many times with ranges of >= 64 pages; returns the
    translations seen after each round (deterministic for the region)."""
    rng = np.random.default_rng(seed)
    seen = []
    probe = np.arange(base, base + 8 * MiB, 64 * KiB, dtype=np.uint64)
    for r in range(rounds):
        off = int(rng.integers(0, 64)) * 4 * KiB
        n = int(rng.integers(64, 1024)) * 4 * KiB
        pt.map(base + off, PA + off, n, blocks=bool(r % 2))
        pt.map(base + 4 * MiB, PA, 2 * MiB + 256 * KiB, Prot.R)
        seen.append(pt.translate_many(probe))
        pt.unmap(base + off + 64 * KiB, 256 * KiB)
        pt.unmap(base + 4 * MiB, 2 * MiB + 64 * KiB * (r % 5))
        seen.append(pt.translate_many(probe))
    pt.unmap(base, 2 * MiB)
    return seen


@pytest.mark.parametrize("layout", ["far_apart", "same_level2_table"])
def test_two_vms_sharing_a_pool(layout):
    bases = (GiB, 40 * GiB) if layout == "far_apart" else (GiB, GiB + 16 * MiB)
    oracle = []
    for i, base in enumerate(bases):
        pt = s2pt.Stage2(pool=s2pt.PagePool(1024))
        oracle.append((churn(pt, base, ROUNDS, i), state(pt)))
    pool = s2pt.PagePool(2048)
    vms = [s2pt.Stage2(pool=pool, vmid=1), s2pt.Stage2(pool=pool, vmid=2)]
    got = run_threads(*[lambda i=i: churn(vms[i], bases[i], ROUNDS, i) for i in range(2)])
    for i, pt in enumerate(vms):
        pt.check()
        same_results(got[i], oracle[i][0])
        assert state(pt) == oracle[i][1]
    assert pool.used == sum(pt.table_pages for pt in vms)
    for pt in vms:
        pt.destroy()
    assert pool.used == 0


def test_threads_on_the_same_vm_disjoint_regions():
    """Three writers on one VM (two of them under one level-2 table) and a reader of a fixed
    mapping that must never see it change."""
    bases = (GiB, GiB + 16 * MiB, 3 * GiB)
    oracle_pt = s2pt.Stage2(pool=s2pt.PagePool(2048))
    oracle = [churn(oracle_pt, b, ROUNDS, i) for i, b in enumerate(bases)]
    pt = s2pt.Stage2(pool=s2pt.PagePool(2048))
    pt.map(20 * GiB, PA, 64 * MiB)
    stable = np.arange(20 * GiB, 20 * GiB + 64 * MiB, 4 * KiB, dtype=np.uint64)
    expect_pa = stable - np.uint64(20 * GiB) + np.uint64(PA)
    left = [len(bases)]
    lock = threading.Lock()

    def writer(i):
        try:
            return churn(pt, bases[i], ROUNDS, i)
        finally:
            with lock:
                left[0] -= 1

    def reader():
        n = 0
        while left[0] or n < 3:
            pa, fsc = pt.translate_many(stable)
            assert (fsc == s2pt.FSC_NONE).all() and np.array_equal(pa, expect_pa)
            n += 1
        return n

    results = run_threads(*[lambda i=i: writer(i) for i in range(3)], reader)
    for i in range(3):
        same_results(results[i], oracle[i])
    assert results[3] >= 3
    pt.unmap(20 * GiB, 64 * MiB)
    assert state(pt) == state(oracle_pt)
    pt.check()


def test_same_vm_reader_sees_a_stable_region_while_others_churn():
    pt = s2pt.Stage2(pool=s2pt.PagePool(2048))
    pt.map(20 * GiB, PA, 64 * MiB)
    stable = np.arange(20 * GiB, 20 * GiB + 64 * MiB, 4 * KiB, dtype=np.uint64)
    expect_pa = stable - np.uint64(20 * GiB) + np.uint64(PA)
    done = threading.Event()

    def writers():
        try:
            return churn(pt, GiB, ROUNDS, 0)
        finally:
            done.set()

    def reader():
        n = 0
        while not done.is_set() or n < 3:
            pa, fsc = pt.translate_many(stable)
            assert (fsc == s2pt.FSC_NONE).all() and np.array_equal(pa, expect_pa)
            n += 1
        return n

    seen, reads = run_threads(writers, reader)
    assert reads >= 3
    oracle = s2pt.Stage2(pool=s2pt.PagePool(2048))
    same_results(seen, churn(oracle, GiB, ROUNDS, 0))
    pt.check()


def test_leaf_ops_and_faults_from_threads_on_one_vm():
    """Each thread works on a memslot of its own: faults, dirty logging, aging, splits."""
    def setup(pt):
        return [pt.add_memslot(GiB * (i + 1), PA + 64 * MiB * i, 32 * MiB, backing=2 * MiB)
                for i in range(2)]

    def guest(pt, slot, seed):
        rng = np.random.default_rng(seed)
        base = GiB * (slot + 1)
        out = []
        for r in range(6):
            ipas = (rng.integers(0, 32 * MiB, 2000).astype(np.uint64) + np.uint64(base))
            out.append(pt.access_many(ipas, Access.READ))
            if r == 1:
                pt.set_log_dirty(slot, True, eager_split=True)
            out.append(pt.access_many(ipas[:500], Access.WRITE))
            out.append(pt.young(base, 32 * MiB, clear=True))
            out.append(pt.test_clear_young(base, 32 * MiB))
            if 1 <= r <= 4:
                out.append(pt.get_dirty_log(slot))
            if r == 4:
                pt.set_log_dirty(slot, False)
                out.append(pt.collapse(base, 32 * MiB))
            out.append(pt.split(base, 4 * MiB))
            out.append(pt.wrprotect(base + 8 * MiB, 8 * MiB))
        out.append(list(pt.mappings(base, 32 * MiB)))
        return out

    oracle_pt = s2pt.Stage2(pool=s2pt.PagePool(2048))
    setup(oracle_pt)
    oracle = [guest(oracle_pt, i, 10 + i) for i in range(2)]
    pt = s2pt.Stage2(pool=s2pt.PagePool(2048))
    setup(pt)
    got = run_threads(lambda: guest(pt, 0, 10), lambda: guest(pt, 1, 11))
    for i in range(2):
        same_results(got[i], oracle[i])
    assert list(pt.mappings()) == list(oracle_pt.mappings())
    assert pt.fault_counts() == oracle_pt.fault_counts()
    pt.check()


def test_map_many_and_unmap_many_from_two_threads_sharing_a_pool():
    pool = s2pt.PagePool(4096)
    vms = [s2pt.Stage2(pool=pool, vmid=v) for v in (1, 2)]

    def work(pt, base):
        ipas = np.arange(base, base + 128 * MiB, 2 * MiB, dtype=np.uint64) + np.uint64(4 * KiB)
        pas = ipas + np.uint64(PA)
        for _ in range(200):
            pt.map_many(ipas, pas, 64 * KiB)
            pt.unmap_many(np.ascontiguousarray(ipas[::2]), 64 * KiB)
        return pt.translate_many(ipas)

    got = run_threads(lambda: work(vms[0], GiB), lambda: work(vms[1], GiB))
    for (pa, fsc), pt in zip(got, vms):
        assert (fsc[::2] != s2pt.FSC_NONE).all() and (fsc[1::2] == s2pt.FSC_NONE).all()
        pt.check()
    assert np.array_equal(got[0][0], got[1][0])
    assert pool.used == sum(pt.table_pages for pt in vms)


# ---- the nested walk ------------------------------------------------------------------------

def test_nested_batches_hold_both_pools_without_deadlock():
    """translate2_many holds the VM's pool and the guest's: two threads whose calls take two
    shared pools the other way round (each VM's pool is the other's guest-table pool) finish,
    and each batch sees a consistent state while a third thread maps and unmaps in them."""
    pools = [s2pt.PagePool(256, 4096, 1 << 32), s2pt.PagePool(256, 4096, 1 << 33)]
    vms, guests = [], []
    for k in range(2):
        vm = s2pt.Stage2(ipa_bits=40, pool=pools[k])
        s1 = s2pt.Stage1(va_bits=48, pool=pools[1 - k])
        base = pools[1 - k].base_pa                       # the guest's table pages, as IPAs
        vm.map(base, base + 64 * GiB, 256 * 4096, blocks=False)
        vm.map(0, PA, 2 * MiB, blocks=False)
        s1.map(0x7F00_0000_0000, 0, 2 * MiB, Prot.RW, blocks=False)
        vms.append(vm)
        guests.append(s1)
    vas = np.arange(0x7F00_0000_0000, 0x7F00_0020_0000, 4096, dtype=np.uint64)
    want = vas - np.uint64(0x7F00_0000_0000) + np.uint64(PA)

    def batches(k):
        def run():
            for _ in range(ROUNDS // 3):
                pa, fsc, stage, reads = vms[k].translate2_many(vas, guests[k])
                ok = stage == 0
                # Each batch sees the page at 1 MiB either mapped or not, never half-made.
                assert (pa[ok] == want[ok]).all() and set(stage.tolist()) <= {0, 2}
                assert (reads[ok] == 4 * (3 + 1) + 3).all()
        return run

    def churn():
        for i in range(ROUNDS):
            vm = vms[i % 2]
            vm.unmap(MiB, 64 * 4096)
            vm.map(MiB, PA + MiB, 64 * 4096, blocks=False)

    run_threads(batches(0), batches(1), churn)
    for k in range(2):
        vms[k].check()
        guests[k].check()
        pa, _, stage, _ = vms[k].translate2_many(vas, guests[k])
        assert (stage == 0).all() and (pa == want).all()
