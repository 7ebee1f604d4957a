"""The page pool: sharing between VMs, reuse of freed pages, zero-copy read-only views."""

import gc

import numpy as np
import pytest

import s2pt
from s2pt import Prot

MiB, GiB = 1 << 20, 1 << 30


def page_index(pool, pa):
    return (pa - pool.base_pa) // pool.granule


def live_pages(pool):
    return {pool.base_pa + int(i) * pool.granule for i in np.flatnonzero(pool.refcounts)}


def table_pages_of(pt):
    """Every table page reachable from the root, read from the raw memory image."""
    pool, g = pt.pool, pt.granule
    out = {pt.root_pa + i * g for i in range(pt.root_tables)}
    todo = [(pt.root_pa, pt.start_level, pt.root_tables * g // 8)]
    while todo:
        pa, level, n = todo.pop()
        if level == 3:
            continue
        i = (pa - pool.base_pa) // 8
        ent = pool.words[i:i + n]
        for d in ent[(ent & 3) == 3]:
            nxt = int(d) & ((1 << 48) - 1) & ~(g - 1)
            out.add(nxt)
            todo.append((nxt, level + 1, g // 8))
    return out


def test_pool_basics():
    pool = s2pt.PagePool(32, granule=16384, base_pa=0x8000_0000)
    assert (pool.capacity, pool.used, pool.free) == (32, 0, 32)
    assert (pool.base_pa, pool.granule) == (0x8000_0000, 16384)
    assert pool.words.dtype == np.uint64 and pool.words.shape == (32 * 16384 // 8,)
    assert pool.refcounts.dtype == np.uint32 and pool.refcounts.shape == (32,)
    assert not pool.words.any() and not pool.refcounts.any()


def test_shared_pool_several_vms():
    pool = s2pt.PagePool(64)
    vms = [s2pt.Stage2(ipa_bits=bits, vmid=vmid, pool=pool)
           for bits, vmid in ((40, 1), (36, 2), (44, 300))]
    assert pool.used == sum(vm.table_pages for vm in vms) == 2 + 1 + 1
    for k, vm in enumerate(vms):
        vm.map(0x20_0000, (k + 1) << 32, 0x1000)
    assert pool.used == sum(vm.table_pages for vm in vms)
    pages = [table_pages_of(vm) for vm in vms]
    assert all(a.isdisjoint(b) for i, a in enumerate(pages) for b in pages[i + 1:])
    assert set().union(*pages) == live_pages(pool)
    for k, vm in enumerate(vms):
        assert vm.translate(0x20_0123).pa == ((k + 1) << 32) + 0x123
        assert vm.vttbr >> 48 == vm.vmid
        vm.check()
    # destroying one VM returns exactly its pages; the others keep working
    used = pool.used
    mine = table_pages_of(vms[1])
    vms[1].destroy()
    assert pool.used == used - len(mine)
    assert live_pages(pool) == pages[0] | pages[2]
    vms[0].unmap(0x20_0000, 0x1000)
    assert vms[2].translate(0x20_0000).pa == 3 << 32
    for vm in vms:
        vm.destroy()
    assert pool.used == 0


def test_shared_pool_granule_must_match():
    pool = s2pt.PagePool(64, granule=16384)
    vm = s2pt.Stage2(ipa_bits=40, granule=16384, pool=pool)
    with pytest.raises(s2pt.ConfigError):
        s2pt.Stage2(ipa_bits=40, granule=4096, pool=pool)
    with pytest.raises(s2pt.ConfigError):
        s2pt.Stage2(ipa_bits=40, granule=65536, pool=pool)
    assert pool.used == vm.table_pages
    vm.destroy()


def test_freed_pages_are_reused():
    pool = s2pt.PagePool(2 + 2)  # roots plus exactly one level-2 and one level-3 table
    pt = s2pt.Stage2(pool=pool)
    seen = set()
    for k in range(200):
        ipa = (k * 0x1234_5000) % (1 << 40) // 0x1000 * 0x1000
        pt.map(ipa, 0x1000 * k, 0x1000)
        assert pool.free == 0
        seen |= {st.table_pa for st in pt.walk(ipa)[1:]}
        assert pt.unmap(ipa, 0x1000) == 0x1000
        assert pool.used == 2
    assert len(seen) == 2  # the same two pages every time


def test_pages_freed_by_one_vm_serve_another():
    pool = s2pt.PagePool(6)  # two 2-page roots plus two tables
    a = s2pt.Stage2(pool=pool, vmid=1)
    b = s2pt.Stage2(pool=pool, vmid=2)
    a.map(0, 0, 0x1000)
    assert pool.free == 0
    freed = {st.table_pa for st in a.walk(0)[1:]}
    a.unmap(0, 0x1000)
    assert pool.free == 2
    b.map(GiB, 0, 0x1000)
    assert {st.table_pa for st in b.walk(GiB)[1:]} == freed


def test_words_is_a_zero_copy_view():
    pool = s2pt.PagePool(16)
    pt = s2pt.Stage2(pool=pool)
    w, rc = pool.words, pool.refcounts
    assert not w.any()
    root_index = page_index(pool, pt.root_pa)
    assert rc[root_index] == 1
    pt.map(3 * GiB, 0x1_0000_0000, 2 * MiB)  # a block in a new level-2 table
    step = pt.walk(3 * GiB)[0]
    assert w[(step.desc_pa - pool.base_pa) // 8] == step.desc != 0  # seen through the old view
    assert rc[root_index] == 2
    leaf = pt.walk(3 * GiB)[-1]
    assert w[(leaf.desc_pa - pool.base_pa) // 8] == leaf.desc
    assert np.shares_memory(w, pool.words)
    pt.unmap(3 * GiB, 2 * MiB)
    assert w[(step.desc_pa - pool.base_pa) // 8] == 0
    assert rc[root_index] == 1


@pytest.mark.parametrize("attr", ["words", "refcounts"])
def test_views_are_read_only(attr):
    pool = s2pt.PagePool(4)
    pt = s2pt.Stage2(pool=pool)
    pt.map(0, 0x1000, 0x1000)
    v = getattr(pool, attr)
    before = v.copy()
    assert not v.flags.writeable
    with pytest.raises(ValueError):
        v[0] = 1
    with pytest.raises(ValueError):
        v.setflags(write=True)
    with pytest.raises((ValueError, BufferError, TypeError)):
        memoryview(v)[0] = 1
    with pytest.raises((ValueError, BufferError, TypeError)):
        np.frombuffer(v, dtype=v.dtype).__setitem__(0, 1)
    assert (getattr(pool, attr) == before).all()
    pt.check()


def test_page_words_view():
    pool = s2pt.PagePool(8)
    pt = s2pt.Stage2(pool=pool)
    pt.map(0, 0x7000, 0x1000)
    l3 = pt.walk(0)[-1].table_pa
    pw = pool.page_words(l3)
    assert pw.shape == (512,) and pw[0] == pt.walk(0)[-1].desc
    assert not pw.flags.writeable
    assert pool.read(l3) == int(pw[0])


def test_view_outlives_vm_and_pool():
    pool = s2pt.PagePool(16)
    pt = s2pt.Stage2(pool=pool)
    pt.map(5 * GiB, 0x1_0000_0000, 0x1000)
    w, rc = pool.words, pool.refcounts
    n = len(w)
    del pt
    gc.collect()
    assert pool.used == 0  # the VM's pages went back to the pool
    assert not rc.any()
    snapshot = w.copy()
    del pool
    gc.collect()
    # the pool object is gone; the views still hold its memory and read it unchanged
    junk = [np.ones(1 << 16, np.uint64) for _ in range(16)]
    assert len(w) == n and (w == snapshot).all()
    assert not rc.any()
    assert int(w.sum()) == int(snapshot.sum())
    del junk


def test_view_of_private_pool_outlives_vm():
    pt = s2pt.Stage2()
    pt.map(0, 0x1000, 0x1000)
    w = pt.pool.words
    desc_pa = pt.walk(0)[0].desc_pa
    i = (desc_pa - pt.pool.base_pa) // 8
    assert w[i] != 0
    del pt
    gc.collect()
    w[: i + 1].sum()  # must not crash
    assert w.shape[0] > i


def test_destroy_returns_every_page():
    pool = s2pt.PagePool(600)
    keep = s2pt.Stage2(pool=pool, vmid=1)
    keep.map(0, 0x1000, 0x1000)
    used0 = pool.used
    pt = s2pt.Stage2(ipa_bits=44, pool=pool, vmid=2)
    pt.map(0, 0x1_0000_0000, 64 * MiB, blocks=False)
    pt.map(1 << 43, 0x2_0000_0000, 3 * GiB)
    pt.map(5 * GiB + 0x3000, 0x3000, 0x1000)
    assert pool.used == used0 + pt.table_pages
    pt.destroy()
    assert pt.destroyed
    assert pool.used == used0
    assert live_pages(pool) == table_pages_of(keep)
    keep.check()


def test_context_manager_destroys():
    pool = s2pt.PagePool(16)
    with s2pt.Stage2(pool=pool) as pt:
        pt.map(0, 0x1000, 0x1000)
        assert pool.used == 4
    assert pt.destroyed and pool.used == 0
    with pytest.raises(RuntimeError):
        with s2pt.Stage2(pool=pool) as pt2:
            pt2.map(0, 0x1000, 0x1000)
            raise RuntimeError("boom")
    assert pt2.destroyed and pool.used == 0


def test_del_without_destroy_returns_pages():
    pool = s2pt.PagePool(16)
    pt = s2pt.Stage2(pool=pool)
    pt.map(0, 0x1000, 0x1000, Prot.R)
    assert pool.used == 4
    del pt
    gc.collect()
    assert pool.used == 0 and not pool.refcounts.any()


def test_refcounts_view_matches_refcount():
    pool = s2pt.PagePool(32)
    pt = s2pt.Stage2(pool=pool)
    for k in range(5):
        pt.map(k * 0x20_1000, 0x1000 * k, 0x1000)
    rc = pool.refcounts
    assert rc.dtype == np.uint32 and len(rc) == pool.capacity
    for i in range(pool.capacity):
        pa = pool.base_pa + i * pool.granule
        assert pool.refcount(pa) == rc[i]
    tables = table_pages_of(pt)
    for i in range(pool.capacity):
        pa = pool.base_pa + i * pool.granule
        if pa in tables:
            words = pool.page_words(pa)
            assert rc[i] == 1 + np.count_nonzero(words)
        else:
            assert rc[i] == 0
    assert int(np.count_nonzero(rc)) == pool.used == pt.table_pages


def test_root_is_aligned_in_a_fragmented_shared_pool():
    pool = s2pt.PagePool(64, base_pa=0x4000_3000)
    a = s2pt.Stage2(pool=pool)
    for k in range(20):
        a.map(k << 30, 0, 0x1000)
    used = pool.used
    b = s2pt.Stage2(ipa_bits=43, pool=pool)  # 16 concatenated root tables, 64 KiB aligned
    assert b.root_pa % (16 * 4096) == 0
    assert pool.base_pa <= b.root_pa and b.root_pa + 16 * 4096 <= pool.end_pa
    assert pool.used == used + 16
    assert table_pages_of(a).isdisjoint(table_pages_of(b))
    b.map((1 << 43) - 0x1000, 0x1000, 0x1000)
    assert a.translate(19 << 30).pa == 0
    a.check()
    b.check()


@pytest.mark.parametrize("granule", [4096, 16384, 65536])
def test_dropped_pool_memory_comes_back_zero(granule):
    """Pools dropped with their VMs hand their memory to the next pool of the same size (a
    fresh VM must not pay for mmap and page faults): that pool must see all-zero pages,
    zero counts, and allocate from its first page, as a pool over fresh memory does."""
    pages = 256
    fresh = s2pt.PagePool(pages, granule)
    vm = s2pt.Stage2(40, granule, pool=fresh)
    root_first = vm.root_pa
    del vm, fresh
    gc.collect()
    for round_ in range(3):
        pool = s2pt.PagePool(pages, granule)
        assert not pool.words.any() and not pool.refcounts.any()
        assert pool.used == 0 and pool.free == pages
        vms = [s2pt.Stage2(40, granule, pool=pool, vmid=i + 1) for i in range(3)]
        assert vms[0].root_pa == root_first
        for i, vm in enumerate(vms):
            vm.map(i * granule * 512, 0x8000_0000, 64 * granule, blocks=False)
            vm.map(1 << 32, 0x4000_0000 * (i + 1), 32 << 20)
        vms[1].destroy()  # one destroyed, the others just dropped
        for vm in vms:
            if not vm.destroyed:
                vm.check()
        del vms, vm, pool
        gc.collect()


def test_vm_lifecycle_leaves_default_pool_clean():
    """A VM with its own default pool, created and dropped many times: every incarnation
    starts empty (two root pages for 4K/40-bit), and its tables are what it mapped."""
    for i in range(50):
        vm = s2pt.Stage2()
        assert vm.table_pages == vm.root_tables == 2
        assert vm.pool.used == 2 and not vm.pool.words.any()
        vm.map(i * 4096, 0x8000_0000, 4096)
        assert vm.table_pages == 4 and vm.translate(i * 4096).pa == 0x8000_0000
        if i % 2:
            vm.destroy()
        del vm
