"""Tables in caller memory: PagePool.from_buffer over the caller's array, and Stage2.attach
adopting a tree found there, validated descriptor by descriptor. Trees come from another VM
(copied image) or are written by hand from the architecture's bit layout."""

from __future__ import annotations

import mmap

import numpy as np
import pytest

import s2pt
from s2pt import Access, Prot
from s2pt.errors import AlignmentError, ArrayError, InvariantError, RangeError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BASE = 0x4000_0000

# Stage-2 descriptor fields (Arm ARM, VMSAv8-64 stage 2), written out here on purpose.
TABLE = 0b11
PAGE = 0b11
BLOCK = 0b01
S2AP_R, S2AP_W = 1 << 6, 1 << 7
SH_INNER = 0b11 << 8
AF = 1 << 10
XN = 1 << 54
NORMAL = 0xF << 2

GEOMS = [
    dict(ipa_bits=40, granule=4096),                     # start level 1, 2 root pages
    dict(ipa_bits=48, granule=4096),                     # start level 0
    dict(ipa_bits=47, granule=16384),                    # start level 1 (16K)
    dict(ipa_bits=42, granule=65536),                    # start level 2, 64K
    dict(ipa_bits=52, granule=4096, pa_bits=52, lpa2=True),
    dict(ipa_bits=52, granule=65536, pa_bits=52, fwb=True),
]


def _source(kw, pages=128):
    base = 0xF_0000_0000_0000 if kw.get("pa_bits") == 52 else BASE
    pool = s2pt.PagePool(pages, kw["granule"], base_pa=base)
    vm = s2pt.Stage2(pool=pool, vmid=9, **kw)
    g, block = vm.granule, vm.config.level_size(2)
    vm.map(0, 0x8000_0000 // block * block, 2 * block)
    vm.map(4 * block, 0x9000_0000, 5 * g, Prot.R, blocks=False)
    vm.map(7 * block + g, 0xA000_0000, g, Prot.RWX, af=False, sw=3)
    vm.set_owner(9 * block, 2 * g, 17)
    vm.map((1 << vm.ipa_bits) - g, 0xB000_0000, g)
    return vm


def _flags(kw):
    return {k: kw[k] for k in ("fwb", "xnx") if k in kw}


@pytest.mark.parametrize("kw", GEOMS, ids=lambda kw: f"{kw['granule']//1024}k{kw['ipa_bits']}")
def test_attach_a_copied_image_is_the_same_vm(kw):
    src = _source(kw)
    ram = src.pool.words.copy()           # the simulator's memory, holding the tables
    pool = s2pt.PagePool.from_buffer(ram, src.pool.base_pa, kw["granule"])
    vm = s2pt.Stage2.attach(pool, src.vtcr, src.vttbr, **_flags(kw))
    assert (vm.vmid, vm.root_pa, vm.levels, vm.start_level) == \
        (9, src.root_pa, src.levels, src.start_level)
    assert vm.stats() == src.stats() and vm.table_pages == src.table_pages
    assert list(vm.mappings()) == list(src.mappings())
    assert np.array_equal(pool.refcounts, src.pool.refcounts)   # 1 + entries, rebuilt
    for m in list(src.mappings())[:20]:
        assert vm.walk(m.ipa) == src.walk(m.ipa)
        assert vm.lookup(m.ipa + 8) == src.lookup(m.ipa + 8)
    vm.check()
    # It is a VM like any other: changes land in the caller's array, tables come and go.
    g = vm.granule
    far = 11 * vm.config.level_size(2)
    used = pool.used
    vm.map(far, 0xC000_0000, g)
    assert vm.translate(far + 8, Access.WRITE).pa == 0xC000_0008
    assert pool.used == used + 1 or pool.used == used + 2
    leaf = vm.walk(far)[-1]
    assert ram[(leaf.desc_pa - pool.base_pa) // 8] == leaf.desc
    vm.unmap(far, g)
    assert pool.used == used
    vm.unmap(0, 1 << vm.ipa_bits)
    vm.check()
    assert vm.table_pages == vm.root_tables


def test_attach_hand_written_tables():
    """A 4K/40-bit tree written entry by entry: a 2 MiB block and two pages."""
    pages = 8
    ram = np.zeros(pages * 512, dtype=np.uint64)
    root, l2, l3 = BASE, BASE + 2 * 4096, BASE + 3 * 4096   # root: 2 concatenated pages
    ent = lambda pa: (pa - BASE) // 8                       # noqa: E731
    attrs = NORMAL | SH_INNER | AF
    ram[ent(root) + 1] = l2 | TABLE                          # IPA 1 GiB: level 1 entry 1
    ram[ent(l2) + 0] = 0x8000_0000 | attrs | S2AP_R | S2AP_W | XN | BLOCK
    ram[ent(l2) + 1] = l3 | TABLE
    ram[ent(l3) + 0] = 0x9000_0000 | attrs | S2AP_R | XN | PAGE
    ram[ent(l3) + 5] = 0x9000_5000 | attrs | S2AP_R | S2AP_W | PAGE   # executable
    ram[ent(BASE + 6 * 4096) + 3] = 0xDEAD                   # guest data in another page
    pool = s2pt.PagePool.from_buffer(ram, BASE)
    assert pool.used == 4 and pool.free == 4                 # non-zero pages are reserved
    cfg = s2pt.Stage2Config(40, 4096)
    vm = s2pt.Stage2.attach(pool, cfg.vtcr, root | (3 << 48))
    assert vm.vmid == 3 and vm.table_pages == 4              # 2 roots + l2 + l3
    t = vm.translate(GiB + 0x1234, Access.WRITE)
    assert (t.pa, t.level, t.size, t.prot) == (0x8000_1234, 2, 2 * MiB, Prot.RW)
    assert vm.translate(GiB + 2 * MiB + 0x5008, Access.EXEC).pa == 0x9000_5008
    with pytest.raises(s2pt.Stage2Fault):
        vm.translate(GiB + 2 * MiB, Access.WRITE)
    assert pool.refcount(root) == 2 and pool.refcount(root + 4096) == 1
    assert pool.refcount(l2) == 3 and pool.refcount(l3) == 3
    vm.check()
    # New tables go into the zero pages, lowest first, never into the reserved data page.
    vm.map(5 * GiB, 0x7000_0000, 4096)
    assert pool.used == 7 and ram[ent(BASE + 6 * 4096) + 3] == 0xDEAD
    assert {vm.walk(5 * GiB)[1].table_pa, vm.walk(5 * GiB)[2].table_pa} == \
        {BASE + 4 * 4096, BASE + 5 * 4096}


def _refused(ram, base, vtcr, vttbr, match, **kw):
    pool = s2pt.PagePool.from_buffer(ram, base, kw.pop("granule", 4096))
    before = (ram.copy(), pool.refcounts.copy(), pool.used, pool.free)
    with pytest.raises(InvariantError, match=match):
        s2pt.Stage2.attach(pool, vtcr, vttbr, **kw)
    assert np.array_equal(ram, before[0]) and np.array_equal(pool.refcounts, before[1])
    assert (pool.used, pool.free) == before[2:]


def test_malformed_trees_are_refused_and_change_nothing():
    src = s2pt.Stage2(pool=s2pt.PagePool(32, base_pa=BASE), vmid=2)
    src.map(0, 0x8000_0000, 4 * 4096, blocks=False)
    src.map(GiB, 0x4_0000_0000, 2 * MiB)
    good = src.pool.words.copy()
    steps = src.walk(0x1000)
    l1, l2, l3 = (s.desc_pa for s in steps)
    ent = lambda pa: (pa - BASE) // 8                       # noqa: E731
    blk = src.walk(GiB)[-1].desc_pa
    cases = {
        "outside the pool": (l1, (1 << 45) | TABLE),
        "stray bits": (l2, int(good[ent(l2)]) | (1 << 52)),
        "reserved type 0b01": (l3, int(good[ent(l3)]) & ~2),
        "not aligned": (blk, int(good[ent(blk)]) + 4096),
        "MemAttr": (blk, (int(good[ent(blk)]) & ~(0xF << 2)) | (0x4 << 2)),
        "annotation": (l2 + 8, 0x30),                         # an invalid entry at level 2
        # Bits 51:48 are RES0 in the 48-bit format (not address bits).
        # The message names the descriptor: its PA, level and IPA.
        rf"stray bits \(descriptor at PA {l3 + 16:#x}, level 3, IPA 0x3000\)":
            (l3 + 16, (1 << 48) | 0x7FF | 3),
    }
    for match, (pa, value) in cases.items():
        ram = good.copy()
        ram[ent(pa)] = value
        _refused(ram, BASE, src.vtcr, src.vttbr, match)
    # A subtable reached twice (two IPAs sharing it), and a cycle back to the root.
    ram = good.copy()
    ram[ent(l1) + 2] = ram[ent(l1)]
    _refused(ram, BASE, src.vtcr, src.vttbr, "twice")
    ram = good.copy()
    ram[ent(l2) + 7] = src.root_pa | TABLE
    _refused(ram, BASE, src.vtcr, src.vttbr, "twice")
    # An empty table linked in (s2pt frees empty tables; hardware would just fault).
    ram = good.copy()
    ram[ent(l2) + 9] = (BASE + 20 * 4096) | TABLE
    _refused(ram, BASE, src.vtcr, src.vttbr, "empty table")
    # A table already in use by another VM of the pool.
    pool = s2pt.PagePool.from_buffer(good.copy(), BASE)
    first = s2pt.Stage2.attach(pool, src.vtcr, src.vttbr)
    with pytest.raises(InvariantError, match="in use"):
        s2pt.Stage2.attach(pool, src.vtcr, src.vttbr)
    first.check()


def test_bad_roots_and_buffers():
    ram = np.zeros(8 * 512, dtype=np.uint64)
    pool = s2pt.PagePool.from_buffer(ram, BASE)
    cfg = s2pt.Stage2Config(40, 4096)                 # 2 root pages: 8 KiB alignment
    with pytest.raises(AlignmentError):
        s2pt.Stage2.attach(pool, cfg.vtcr, BASE + 4096)
    with pytest.raises(RangeError):
        s2pt.Stage2.attach(pool, cfg.vtcr, BASE + 8 * 4096)
    with pytest.raises(s2pt.ConfigError):
        s2pt.Stage2.attach(pool, 0xFFFF_FFFF, BASE)
    # An all-zero root is a valid empty VM.
    vm = s2pt.Stage2.attach(pool, cfg.vtcr, BASE)
    assert vm.table_pages == 2 and not list(vm.mappings())
    for bad, err in ((bytes(8192), ArrayError), (np.zeros(1000, dtype=np.uint64), ArrayError),
                     (np.zeros((4, 1024), dtype=np.uint64)[:, :512], ArrayError),
                     (np.zeros(4097, dtype=np.uint8)[1:], ArrayError), (42, TypeError)):
        with pytest.raises(err):
            s2pt.PagePool.from_buffer(bad, BASE)
    with pytest.raises(AlignmentError):
        s2pt.PagePool.from_buffer(bytearray(8192), BASE + 8)


def test_buffer_kinds_and_lifetime():
    """bytearray and mmap work; the pool keeps the buffer alive and locked against resizing."""
    for buf in (bytearray(16 * 4096), mmap.mmap(-1, 16 * 4096)):
        pool = s2pt.PagePool.from_buffer(buf, BASE)
        vm = s2pt.Stage2(pool=pool)
        vm.map(0, 0x8000_0000, 4096)
        leaf = vm.walk(0)[-1]
        off = leaf.desc_pa - BASE
        assert int.from_bytes(buf[off:off + 8], "little") == leaf.desc
        if isinstance(buf, bytearray):
            with pytest.raises(BufferError):
                buf.extend(b"x")
        del vm, pool
    # The pool is what keeps a temporary array alive.
    pool = s2pt.PagePool.from_buffer(np.zeros(4 * 512, dtype=np.uint64), BASE)
    vm = s2pt.Stage2(pool=pool)
    vm.map(0, 0x8000_0000, 4096)
    assert vm.translate(8).pa == 0x8000_0008
    assert np.count_nonzero(pool.words) == 3      # root, level-2 and level-3 entries


def test_attached_vm_travels():
    src = _source(GEOMS[0])
    pool = s2pt.PagePool.from_buffer(src.pool.words.copy(), src.pool.base_pa)
    vm = s2pt.Stage2.attach(pool, src.vtcr, src.vttbr)
    import pickle
    back = pickle.loads(pickle.dumps(vm))
    assert list(back.mappings()) == list(src.mappings()) and back.stats() == src.stats()
    back.check()
