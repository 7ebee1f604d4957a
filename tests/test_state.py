"""State that travels: pickle, copy.deepcopy, s2pt.save / s2pt.load, and Stage2.diff.

A round trip must be bit-exact (the same pool memory image, counts, stats and check), keep
pool sharing, carry memslots, dirty bitmaps, TLB logs and fault counters, and a restored VM
must go on exactly as the original does. Bad or foreign states are refused, never misread.
"""

import copy
import pickle

import numpy as np
import pytest

import s2pt
from s2pt import Access, FaultOutcome, MemAttr, Prot
from s2pt.errors import InvariantError, StateFormatError

MiB, GiB = 1 << 20, 1 << 30
PA = 0x1_0000_0000

# (granule, ipa_bits, pa_bits, extra Stage2 arguments): every granule, LPA2, 52-bit, FWB, kvm.
GEOMS = [
    (4096, 40, 48, {}),
    (4096, 44, 48, dict(semantics="kvm", tlbi_range=False)),
    (16384, 47, 48, dict(fwb=True)),
    (65536, 42, 48, dict(xnx=True)),
    (4096, 52, 52, dict(lpa2=True)),
    (16384, 52, 52, dict(lpa2=True, semantics="kvm")),
    (65536, 52, 52, {}),
]


def _vm(granule, ipa_bits, pa_bits, extra, pool=None, vmid=1):
    return s2pt.Stage2(ipa_bits=ipa_bits, granule=granule, pa_bits=pa_bits, vmid=vmid,
                       pool=pool, **extra)


def _populate(vm):
    """Blocks, pages, an annotation, FWB/Device attributes, memslots with faults, dirty
    logging with writes, and TLB events: everything a state carries."""
    g = vm.granule
    block = vm.config.level_size(2)
    vm.map(0, PA, 2 * block)                                   # blocks
    vm.map(2 * block, PA + 2 * block, 7 * g, Prot.R, blocks=False)
    vm.map(3 * block, PA + 3 * block, g, Prot.RW, MemAttr.DEVICE_nGnRE, af=False, sw=5)
    vm.set_owner(4 * block, 3 * g, 9)                          # annotations
    base = 8 * block
    slot = vm.add_memslot(base, PA + base, 4 * block)
    ro = vm.add_memslot(16 * block, PA + 16 * block, block, readonly=True)
    touched = base + np.arange(0, 4 * block, 3 * g, dtype=np.uint64)
    vm.access_many(touched, Access.WRITE)
    vm.set_log_dirty(slot, True)
    vm.access_many(touched[::5].copy(), Access.WRITE)
    vm.access_many(np.array([16 * block, 20 * block], dtype=np.uint64), Access.WRITE)
    return slot, ro


def _same(a, b):
    """Everything observable about two VMs and their pools is equal."""
    assert np.array_equal(a.pool.words, b.pool.words)
    assert np.array_equal(a.pool.refcounts, b.pool.refcounts)
    assert (a.pool.used, a.pool.free, a.pool.capacity, a.pool.base_pa) == \
        (b.pool.used, b.pool.free, b.pool.capacity, b.pool.base_pa)
    assert a.config == b.config and a.root_pa == b.root_pa and a.vttbr == b.vttbr
    assert a.stats() == b.stats() and a.table_pages == b.table_pages
    assert list(a.mappings()) == list(b.mappings())
    assert a.memslots() == b.memslots()
    for s in a.memslots():
        if s.log_dirty:
            assert np.array_equal(a.get_dirty_log(s.id, clear=False),
                                  b.get_dirty_log(s.id, clear=False))
    assert np.array_equal(a.tlbi_log(clear=False), b.tlbi_log(clear=False))
    assert a.fault_counts() == b.fault_counts()
    assert a.diff(b) == [] and b.diff(a) == []
    a.check()
    b.check()


def _go_on(vm, slot):
    """The same further work on twins: harvest, more faults, unmap, a new VM in the pool."""
    g = vm.granule
    block = vm.config.level_size(2)
    out = [vm.get_dirty_log(slot, clear=True)]
    pa, oc = vm.access_many(8 * block + np.arange(0, 2 * block, 5 * g, dtype=np.uint64),
                            Access.WRITE)
    out += [pa, oc, vm.unmap(0, block + 3 * g), vm.tlbi_log()]
    vm.map(40 * block, PA, block // 2, blocks=False)
    extra = s2pt.Stage2.from_config(vm.config, pool=vm.pool)
    extra.map(0, PA, 3 * g)
    out.append(extra.root_pa)
    return out


@pytest.mark.parametrize("geom", GEOMS, ids=lambda g: f"{g[0]//1024}k{g[1]}-{g[2]}{g[3]}")
@pytest.mark.parametrize("how", ["pickle", "deepcopy", "save"])
def test_round_trip_is_bit_exact_and_goes_on_alike(geom, how, tmp_path):
    vm = _vm(*geom, pool=s2pt.PagePool(2048, geom[0]))
    slot, _ = _populate(vm)
    if how == "pickle":
        back = pickle.loads(pickle.dumps(vm))
    elif how == "deepcopy":
        back = copy.deepcopy(vm)
    else:
        s2pt.save(tmp_path / "vm.npz", vm)
        [back] = s2pt.load(tmp_path / "vm.npz")
    assert back.pool is not vm.pool
    _same(vm, back)
    # A restored VM behaves as the original from here on: same PAs, outcomes, events, the
    # same pages allocated in the same order.
    a, b = _go_on(vm, slot), _go_on(back, slot)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    _same(vm, back)


def test_shared_pool_stays_shared(tmp_path):
    pool = s2pt.PagePool(512)
    a, b = s2pt.Stage2(pool=pool), s2pt.Stage2(pool=pool, vmid=2, semantics="kvm")
    other = s2pt.Stage2(ipa_bits=36)  # a pool of its own
    a.map(0, PA, 4 * MiB)
    b.map(GiB, PA, 64 * 1024, blocks=False)
    other.map(0, PA, 4096)
    a2, b2, o2 = pickle.loads(pickle.dumps([a, b, other]))
    c2, d2 = copy.deepcopy([a, b])
    s2pt.save(tmp_path / "three.npz", a, b, other)
    a3, b3, o3 = s2pt.load(tmp_path / "three.npz")
    for x, y, z in ((a2, b2, o2), (c2, d2, None), (a3, b3, o3)):
        assert x.pool is y.pool and x.pool is not pool
        _same(a, x)
        _same(b, y)
        if z is not None:
            assert z.pool is not x.pool
            _same(other, z)
        # Pages of both VMs in the shared pool: two root pairs and their tables.
        assert x.pool.used == a.table_pages + b.table_pages
        # A change through one is seen by the pool the other uses.
        x.map(2 * GiB, PA, 4096)
        assert y.pool.used == x.table_pages + y.table_pages


def test_destroyed_vm_and_empty_pool_round_trip():
    vm = s2pt.Stage2()
    vm.map(0, PA, 4096)
    vm.destroy()
    back = pickle.loads(pickle.dumps(vm))
    assert back.destroyed and back.pool.used == 0
    with pytest.raises(s2pt.DestroyedError):
        back.translate(0)
    pool = pickle.loads(pickle.dumps(s2pt.PagePool(64, 16384, base_pa=1 << 40)))
    assert (pool.capacity, pool.granule, pool.base_pa, pool.used) == (64, 16384, 1 << 40, 0)
    config = pickle.loads(pickle.dumps(s2pt.Stage2Config(47, 16384, lpa2=False, fwb=True)))
    assert config == s2pt.Stage2Config(47, 16384, fwb=True) and config.fwb


def _saved(tmp_path, vm):
    path = tmp_path / "vm.npz"
    s2pt.save(path, vm)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _resave(tmp_path, arrays, name="bad.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_newer_or_foreign_files_are_refused(tmp_path):
    vm = s2pt.Stage2()
    vm.map(0, PA, 2 * MiB)
    arrays = _saved(tmp_path, vm)
    newer = dict(arrays, version=np.array(s2pt._core.STATE_VERSION + 1))
    with pytest.raises(StateFormatError, match="newer|version"):
        s2pt.load(_resave(tmp_path, newer))
    state = vm._state()
    state["version"] = 99
    with pytest.raises(StateFormatError, match="version 99"):
        s2pt._core._vm_from_state(vm.pool, state)
    with pytest.raises(StateFormatError):
        s2pt.load(_resave(tmp_path, dict(arrays, magic=np.array("something-else"))))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(StateFormatError):
        s2pt.load(tmp_path / "junk.npz")


def test_malformed_states_are_refused_by_the_invariant_check(tmp_path):
    vm = s2pt.Stage2(pool=s2pt.PagePool(64))
    vm.map(0, PA, 4096)
    vm.map(GiB, PA, 2 * MiB)
    arrays = _saved(tmp_path, vm)
    words = arrays["pool0.words"]
    root = (vm.root_pa - vm.pool.base_pa) // 8

    def refused(change, match):
        bad = {k: v.copy() for k, v in arrays.items()}
        change(bad)
        with pytest.raises(InvariantError, match=match):
            s2pt.load(_resave(tmp_path, bad))

    # A table descriptor pointing outside the pool, a count that does not match the
    # entries, a non-zero free page, a free-stack entry that is also allocated.
    refused(lambda a: a["pool0.words"].__setitem__(root, (1 << 47) | 3), "outside the pool")
    refused(lambda a: a["pool0.refcount"].__setitem__(2, 7), "count")
    assert vm.pool.used < 64
    extra = s2pt.Stage2(pool=vm.pool, vmid=2)
    extra.destroy()  # leaves freed pages on the free stack
    arrays = _saved(tmp_path, vm)
    fs = int(arrays["pool0.free_stack"][0])
    refused(lambda a: a["pool0.words"].__setitem__(fs * 512 + 5, 1), "not zero")
    refused(lambda a: a["pool0.free_stack"].__setitem__(0, 0), "free")
    refused(lambda a: a["pool0.hint"].__setitem__(0, 0), "hint")
    refused(lambda a: a.__setitem__("vm0.root_pa", np.array(vm.root_pa + 4096)), "root|owned")
    refused(lambda a: a.pop("pool0.words"), "words")
    del words


def test_memslot_state_is_validated():
    vm = s2pt.Stage2()
    slot = vm.add_memslot(0, PA, 64 * 4096)
    vm.set_log_dirty(slot, True)
    vm.access_many(np.array([0, 5 * 4096], dtype=np.uint64), Access.WRITE)
    state = vm._state()
    assert state["dirty"].tolist() == [(1 << 0) | (1 << 5)]
    pool = pickle.loads(pickle.dumps(vm.pool))
    bad = dict(state, dirty=np.zeros(2, dtype=np.uint64))      # longer than the slot needs
    with pytest.raises(InvariantError, match="dirty"):
        s2pt._core._vm_from_state(pool, bad)
    slots = state["slots"].copy()
    slots[0, 3] = 3 * 4096                                      # a backing size no leaf has
    with pytest.raises(s2pt.InvalidArgumentError):
        s2pt._core._vm_from_state(pool, dict(state, slots=slots))
    # The refused VM left the pool as its state says: the good state still restores.
    good = s2pt._core._vm_from_state(pool, state)
    assert good.get_dirty_log(slot, clear=False).tolist() == [(1 << 0) | (1 << 5)]
    # Both writes were first touches of a logged slot: mapped (writable, page-sized), dirty.
    assert good.fault_counts()[FaultOutcome.MAPPED] == 2 == vm.fault_counts()[FaultOutcome.MAPPED]
    good.check()


def test_diff_names_the_leaves_that_differ():
    a, b = s2pt.Stage2(), s2pt.Stage2()
    for vm in (a, b):
        vm.map(0, PA, 2 * MiB)
        vm.map(4 * MiB, PA, 4096 * 4, blocks=False)
    assert a.diff(b) == []
    b.protect(4 * MiB + 4096, 4096, Prot.R)       # one page's permissions
    b.unmap(4 * MiB + 3 * 4096, 4096)             # one page gone
    b.map(8 * MiB, PA, 4096)                      # one page more
    d = a.diff(b)
    assert [(m.ipa, m.prot) for m in d] == [
        (4 * MiB + 4096, Prot.RW), (4 * MiB + 3 * 4096, Prot.RW),   # a's, not in b
        (4 * MiB + 4096, Prot.R), (8 * MiB, Prot.RW)]               # b's, not in a
    # Same translations, different leaf structure (a block against its pages) differ too.
    c = s2pt.Stage2()
    c.map(0, PA, 2 * MiB, blocks=False)
    c.map(4 * MiB, PA, 4096 * 4, blocks=False)
    assert len(a.diff(c)) == 1 + 512


def test_diff_agrees_with_the_model():
    from s2pt.model import ReferenceStage2

    rng = np.random.default_rng(3)
    vms = [(s2pt.Stage2(), ReferenceStage2()) for _ in range(2)]
    for k, (vm, model) in enumerate(vms):
        for _ in range(30):
            ipa = int(rng.integers(0, 64)) * 2 * MiB + int(rng.integers(0, 8)) * 4096 * k
            size = 4096 * int(rng.integers(1, 5))
            prot = Prot.R if rng.random() < .3 else Prot.RW
            for x in (vm, model):
                x.map(ipa, PA + ipa, size, prot)
    (a, ma), (b, mb) = vms
    assert a.diff(b) == ma.diff(mb) == a.diff(mb) and len(a.diff(b)) > 0
    # A VM and its own model twin do not differ.
    assert a.diff(ma) == [] and ma.diff(a) == []
