"""map / unmap / protect: table pages, reference counts, leaf shapes and TLB events.

After every change the tables are audited from the raw memory image (``pool.words``) by an
independent walker written here: every table page reachable from the root, every leaf, and each
table's reference count recomputed as KVM defines it (1 + non-zero entries). The engine's
counters (``table_pages``, ``stats()``, ``pool.used``, ``pool.refcount``) must agree with it.
"""

from collections import Counter

import numpy as np
import pytest

import s2pt
from s2pt import MemAttr, Prot

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
OA_MASK = (1 << 48) - 1
SW_BITS = 0xF << 55
TRANSLATION_FSC = 0b000100


def stride(granule):
    return granule.bit_length() - 1 - 3


def level_shift(granule, level):
    return stride(granule) * (4 - level) + 3


def level_size(granule, level):
    return 1 << level_shift(granule, level)


def audit(pt, exclusive=True):
    """Walk the tables in ``pool.words`` from the root and check every counter against it.

    Returns {"tables": {pa: level}, "table_pages_by_level", "leaves_by_level", "mapped_bytes",
    "leaf_descs": np.ndarray of every leaf descriptor}.
    """
    pool = pt.pool
    g, base = pool.granule, pool.base_pa
    words = pool.words
    per_page = g // 8
    start = pt.start_level
    tables = {}
    leaves = Counter()
    mapped = 0
    leaf_descs = []

    def entries(pa, n):
        i = (pa - base) // 8
        return words[i:i + n]

    def visit(table_pa, level, n):
        nonlocal mapped
        ent = entries(table_pa, n)
        kind = ent & 0b11
        valid = (ent & 1) == 1
        if level < 3:
            is_table = kind == 0b11
            is_leaf = kind == 0b01
        else:
            is_table = np.zeros_like(valid)
            is_leaf = kind == 0b11
            assert not ((kind == 0b01).any()), "0b01 at level 3 is reserved"
        assert not (valid & ~is_table & ~is_leaf).any()
        nleaf = int(np.count_nonzero(is_leaf))
        leaves[level] += nleaf
        mapped += nleaf * level_size(g, level)
        leaf_descs.append(ent[is_leaf])
        for d in ent[is_table]:
            d = int(d)
            nxt = d & OA_MASK & ~(g - 1)
            assert d == nxt | 0b11, f"table descriptor {d:#x} carries more than the next PA"
            assert base <= nxt < pool.end_pa
            assert nxt not in tables, "a table page is referenced twice"
            tables[nxt] = level + 1
            visit(nxt, level + 1, per_page)

    root_entries = 2 ** (pt.ipa_bits - level_shift(g, start))
    for i in range(pt.root_tables):
        tables[pt.root_pa + i * g] = start
    visit(pt.root_pa, start, root_entries)
    tail = entries(pt.root_pa, pt.root_tables * per_page)[root_entries:]
    assert not tail.any(), "root entries beyond the IPA size are in use"

    counts = pool.refcounts
    for pa in tables:
        expected = 1 + int(np.count_nonzero(entries(pa, per_page)))
        assert pool.refcount(pa) == expected, f"refcount of table {pa:#x}"
        assert counts[(pa - base) // g] == expected
    by_level = Counter(tables.values())
    st = pt.stats()
    assert pt.table_pages == len(tables)
    assert st["table_pages"] == len(tables)
    assert {k: v for k, v in st["table_pages_by_level"].items() if v} == dict(by_level)
    assert {k: v for k, v in st["leaves_by_level"].items() if v} == {k: v for k, v in leaves.items() if v}
    assert st["mapped_bytes"] == mapped
    if exclusive:
        assert pool.used == len(tables)
        in_use = {base + int(i) * g for i in np.flatnonzero(counts)}
        assert in_use == set(tables)
    pt.check()
    return {
        "tables": tables,
        "table_pages_by_level": dict(by_level),
        "leaves_by_level": {k: v for k, v in leaves.items() if v},
        "mapped_bytes": mapped,
        "leaf_descs": np.concatenate(leaf_descs) if leaf_descs else np.zeros(0, np.uint64),
    }


def events(pt):
    """The TLB events since the last call, as a list of (kind, level, ipa, size) tuples."""
    log = pt.tlbi_log()
    return [(int(e["kind"]), int(e["level"]), int(e["ipa"]), int(e["size"])) for e in log]


def make(granule=4096, ipa_bits=40, pages=64):
    pool = s2pt.PagePool(pages, granule=granule)
    return s2pt.Stage2(ipa_bits=ipa_bits, granule=granule, pool=pool)


CONFIGS = [(4096, 32), (4096, 36), (4096, 40), (4096, 44), (4096, 48), (16384, 36), (16384, 40),
           (16384, 42), (16384, 48), (65536, 32), (65536, 40), (65536, 46), (65536, 48)]


# ---- table counts ---------------------------------------------------------------------------


@pytest.mark.parametrize("granule,ipa_bits", CONFIGS)
def test_map_one_page_then_unmap(granule, ipa_bits):
    pt = make(granule, ipa_bits)
    g, start = granule, pt.start_level
    roots = pt.root_tables
    a = audit(pt)
    assert a["tables"] == {pt.root_pa + i * g: start for i in range(roots)}

    ipa = ((1 << ipa_bits) - 1) // 3 // g * g
    pt.map(ipa, 0x1_0000_0000, g)
    a = audit(pt)
    # one table at every level below the start
    assert pt.table_pages == roots + (pt.levels - 1)
    expected_by_level = {start: roots, **{lv: 1 for lv in range(start + 1, 4)}}
    assert a["table_pages_by_level"] == expected_by_level
    assert a["leaves_by_level"] == {3: 1}
    assert a["mapped_bytes"] == g
    # the root page holding the entry has one reference more; the others have none
    root_entries_per_page = g // 8
    idx = ipa >> level_shift(g, start)
    for i in range(roots):
        pa = pt.root_pa + i * g
        assert pt.pool.refcount(pa) == (2 if i == idx // root_entries_per_page else 1)
    for step in pt.walk(ipa)[1:]:
        assert pt.pool.refcount(step.table_pa) == 2
    assert pt.translate(ipa + 8).pa == 0x1_0000_0008

    assert events(pt) == []  # nothing was valid before: nothing to invalidate
    assert pt.unmap(ipa, g) == g
    a = audit(pt)
    assert pt.table_pages == roots and pt.pool.used == roots
    assert not pt.pool.page_words(pt.root_pa).any()
    assert all(pt.pool.refcount(pt.root_pa + i * g) == 1 for i in range(roots))


@pytest.mark.parametrize("granule,ipa_bits", [(4096, 40), (16384, 47), (65536, 46)])
def test_unmap_frees_every_emptied_table_upward(granule, ipa_bits):
    pt = make(granule, ipa_bits, pages=128)
    g = granule
    top = 1 << ipa_bits
    l2 = level_size(g, 2)
    ipas = sorted({0, g, 7 * g, l2, l2 + 3 * g, 5 * l2 + g, top // 2, top // 2 + g,
                   top - g, top - l2})
    for k, ipa in enumerate(ipas):
        pt.map(ipa, (k + 1) << 32, g)
    audit(pt)
    for k, ipa in enumerate(ipas):
        before = pt.table_pages
        assert pt.unmap(ipa, g) == g
        a = audit(pt)
        assert pt.table_pages <= before
        # every remaining page still translates
        for j, other in enumerate(ipas[k + 1:], k + 1):
            assert pt.translate(other).pa == (j + 1) << 32
        assert pt.lookup(ipa) is None
    assert pt.table_pages == pt.root_tables
    assert pt.pool.used == pt.root_tables
    assert a["leaves_by_level"] == {}


def test_unmap_keeps_shared_tables():
    pt = make()
    pt.map(0x20_0000, 0x1000_0000, 0x1000)
    pt.map(0x20_1000, 0x1000_1000, 0x1000)
    assert pt.table_pages == 4
    pt.unmap(0x20_0000, 0x1000)
    assert pt.table_pages == 4
    l3 = pt.walk(0x20_1000)[-1].table_pa
    assert pt.pool.refcount(l3) == 2
    pt.unmap(0x20_1000, 0x1000)
    assert pt.table_pages == 2
    assert pt.pool.refcount(l3) == 0
    audit(pt)


# ---- split -----------------------------------------------------------------------------------

SPLITS = [  # granule, block size, block level, extra tables after unmapping one page in it
    (4096, GiB, 1, 2),
    (4096, 2 * MiB, 2, 1),
    (16384, 32 * MiB, 2, 1),
    (65536, 512 * MiB, 2, 1),
]


def attr_bits(desc):
    return int(desc) & ~(OA_MASK & ~0xFFF) & ~0b11 & ~SW_BITS


@pytest.mark.parametrize("granule,size,level,extra", SPLITS)
def test_split_block_by_unmapping_one_page(granule, size, level, extra):
    pt = make(granule, 44 if granule == 4096 else 46, pages=40)
    g = granule
    ipa, pa = 2 * size, 8 * size
    pt.map(ipa, pa, size, Prot.RX, MemAttr.NORMAL_WT)
    a0 = audit(pt)
    block_desc = pt.walk(ipa)[-1].desc
    assert pt.walk(ipa)[-1].level == level
    tables0 = pt.table_pages
    used0 = pt.pool.used
    events(pt)

    hole = ipa + size // 2 + 3 * g
    assert pt.unmap(hole, g) == g
    a = audit(pt)
    assert pt.table_pages == tables0 + extra
    assert pt.pool.used == used0 + extra
    assert a["mapped_bytes"] == a0["mapped_bytes"] - g

    # every other page of the old block still translates to the same PA with the same attributes
    ipas = np.arange(ipa, ipa + size, g, dtype=np.uint64)
    out, fsc = pt.translate_many(ipas, s2pt.Access.EXEC)
    k = (hole - ipa) // g
    ok = np.ones(len(ipas), bool)
    ok[k] = False
    assert (fsc[ok] == s2pt.FSC_NONE).all()
    assert (out[ok] == ipas[ok] - ipa + pa).all()
    assert fsc[k] == TRANSLATION_FSC | 3
    assert all(attr_bits(d) == attr_bits(block_desc) for d in a["leaf_descs"])
    maps = list(pt.mappings(ipa, size))
    assert sum(m.size for m in maps) == size - g
    assert all(m.prot == Prot.RX and m.memattr == MemAttr.NORMAL_WT and m.af for m in maps)
    # the cached block must be invalidated at its level
    ev = events(pt)
    assert (s2pt.TLBI_IPA, level, ipa, size) in ev or any(
        e[0] == s2pt.TLBI_RANGE and e[2] <= ipa and ipa + size <= e[2] + e[3] for e in ev)
    assert any(e[0] == s2pt.TLBI_VMID or (e[2] <= hole < e[2] + max(e[3], 1)) for e in ev)


def test_split_keeps_access_flag_and_device_attrs():
    pt = make()
    pt.map(2 * MiB, 0x3000_0000, 2 * MiB, Prot.R, MemAttr.DEVICE_nGnRE, af=False)
    pt.unmap(2 * MiB, 4096)
    for m in pt.mappings():
        assert (m.prot, m.memattr, m.af) == (Prot.R, MemAttr.DEVICE_nGnRE, False)
        assert m.pa - 0x3000_0000 == m.ipa - 2 * MiB
    audit(pt)


# ---- coalesce -----------------------------------------------------------------------------------

COALESCE = [(4096, 2 * MiB, 2), (16384, 32 * MiB, 2), (65536, 512 * MiB, 2)]


@pytest.mark.parametrize("granule,span,level", COALESCE)
@pytest.mark.parametrize("fill", ["full", "sparse"])
def test_coalesce_table_into_block(granule, span, level, fill):
    pt = make(granule, 40, pages=40)
    g = granule
    ipa = 3 * span
    if fill == "full":
        pt.map(ipa, 0x10 * span, span, blocks=False)
    else:
        for k in (0, 5, span // g - 1):
            pt.map(ipa + k * g, 0x20 * span + k * g, g)
    pt.map(ipa + span, 0x30 * span, g)  # a neighbour that must survive
    a0 = audit(pt)
    l3 = pt.walk(ipa)[-1].table_pa
    used0 = pt.pool.used
    events(pt)

    pt.map(ipa, 0x40 * span, span)
    a = audit(pt)
    assert pt.pool.used == used0 - 1
    assert pt.pool.refcount(l3) == 0
    assert a["leaves_by_level"][level] == 1
    t = pt.translate(ipa + span - 8)
    assert (t.pa, t.level, t.size) == (0x40 * span + span - 8, level, span)
    assert pt.translate(ipa + span).pa == 0x30 * span
    assert (s2pt.TLBI_RANGE, ipa, span) in [(e[0], e[2], e[3]) for e in events(pt)]
    assert a["mapped_bytes"] == span + g
    del a0


def test_coalesce_1g_frees_whole_subtree():
    pt = make(pages=16)
    pt.map(GiB + 5 * 4096, 0x1000, 4096)
    pt.map(GiB + 300 * MiB, 0x2000_0000, 2 * MiB)
    audit(pt)
    assert pt.table_pages == 4
    used0 = pt.pool.used
    events(pt)
    pt.map(GiB, 4 * GiB, GiB)
    a = audit(pt)
    assert pt.pool.used == used0 - 2
    assert a["leaves_by_level"] == {1: 1}
    assert (s2pt.TLBI_RANGE, GiB, GiB) in [(e[0], e[2], e[3]) for e in events(pt)]


# ---- remap -----------------------------------------------------------------------------------


@pytest.mark.parametrize("granule", [4096, 16384, 65536])
def test_identical_remap_is_a_no_op(granule):
    pt = make(granule, 40)
    g = granule
    l2 = level_size(g, 2)
    pt.map(0, 0x1_0000_0000, 3 * g, Prot.RX)
    pt.map(l2, 0x2_0000_0000, l2, Prot.R, MemAttr.NORMAL_NC)
    pt.map(3 * l2 - g, 0x3_0000_0000 - g, l2 + 2 * g, Prot.RW)  # page, block, page
    audit(pt)
    events(pt)
    words, counts, used = pt.pool.words.copy(), pt.pool.refcounts.copy(), pt.pool.used
    pt.map(0, 0x1_0000_0000, 3 * g, Prot.RX)
    pt.map(g, 0x1_0000_0000 + g, g, Prot.RX)
    pt.map(l2, 0x2_0000_0000, l2, Prot.R, MemAttr.NORMAL_NC)
    pt.map(3 * l2 - g, 0x3_0000_0000 - g, l2 + 2 * g, Prot.RW)
    # part of a block, exactly as the block already maps it: no split
    pt.map(l2 + 7 * g, 0x2_0000_0000 + 7 * g, 2 * g, Prot.R, MemAttr.NORMAL_NC)
    assert (pt.pool.words == words).all()
    assert (pt.pool.refcounts == counts).all()
    assert pt.pool.used == used
    assert events(pt) == []
    audit(pt)


@pytest.mark.parametrize("what", ["pa", "prot", "memattr", "af"])
def test_remap_page_with_other_attributes(what):
    pt = make()
    ipa = 0x4567_8000
    pt.map(ipa, 0x1000_0000, 4096)
    pt.map(ipa + 4096, 0x1000_1000, 4096)
    events(pt)
    kw = dict(pa=0x1000_0000, prot=Prot.RW, memattr=MemAttr.NORMAL, af=True)
    other = dict(pa=0x2000_0000, prot=Prot.R, memattr=MemAttr.NORMAL_NC, af=False)
    kw[what] = other[what]
    pt.map(ipa, kw["pa"], 4096, kw["prot"], kw["memattr"], af=kw["af"])
    t = pt.lookup(ipa)
    assert (t.pa, t.prot, t.memattr, t.af) == (kw["pa"], kw["prot"], kw["memattr"], kw["af"])
    assert [(e[0], e[1], e[2]) for e in events(pt)] == [(s2pt.TLBI_IPA, 3, ipa)]
    audit(pt)


@pytest.mark.parametrize("granule,size,level", [(4096, GiB, 1), (4096, 2 * MiB, 2),
                                                (16384, 32 * MiB, 2), (65536, 512 * MiB, 2)])
def test_remap_block_with_other_pa(granule, size, level):
    pt = make(granule, 44 if granule == 4096 else 46)
    ipa = 5 * size
    pt.map(ipa, 2 * size, size)
    tables = pt.table_pages
    events(pt)
    pt.map(ipa, 9 * size, size)
    assert pt.table_pages == tables
    t = pt.translate(ipa + size - 8)
    assert (t.pa, t.level) == (10 * size - 8, level)
    assert [(e[0], e[1], e[2]) for e in events(pt)] == [(s2pt.TLBI_IPA, level, ipa)]
    audit(pt)


def test_remap_one_page_of_block_splits():
    pt = make()
    pt.map(2 * MiB, 0x4000_0000, 2 * MiB)
    pt.map(2 * MiB + 4096, 0x7000_0000, 4096)
    a = audit(pt)
    assert a["leaves_by_level"] == {3: 512}
    assert pt.translate(2 * MiB + 4096).pa == 0x7000_0000
    assert pt.translate(2 * MiB + 8192).pa == 0x4000_2000
    assert pt.translate(2 * MiB).pa == 0x4000_0000


# ---- unmap ------------------------------------------------------------------------------------


def test_unmap_returns_exactly_the_mapped_bytes():
    pt = make()
    A, B = 0x1000_0000, 0x4000_0000
    pt.map(A, 0x1_0000_0000, 3 * 4096)
    pt.map(A + 5 * 4096, 0x1_0001_0000, 4096)
    pt.map(B, 0x2_0000_0000, 2 * MiB)
    pt.map(B + 2 * MiB, 0x2_0020_0000, 2 * MiB)
    audit(pt)
    assert pt.unmap(A - 4096, 8 * 4096) == 4 * 4096
    assert pt.unmap(A - 4096, 8 * 4096) == 0
    assert pt.unmap(B + MiB, 2 * MiB) == 2 * MiB
    assert pt.translate(B + MiB - 4096).pa == 0x2_0000_0000 + MiB - 4096
    assert pt.translate(B + 3 * MiB).pa == 0x2_0030_0000
    assert pt.unmap(B, 4 * MiB) == 2 * MiB
    assert pt.unmap(0, 1 << 40) == 0
    audit(pt)
    assert pt.table_pages == 2


def test_unmap_nothing_changes_nothing():
    pt = make()
    pt.map(0x20_0000, 0x1000_0000, 4096)
    audit(pt)
    events(pt)
    words, used = pt.pool.words.copy(), pt.pool.used
    assert pt.unmap(0x20_1000, 0x1000) == 0
    assert pt.unmap(0x8000_0000, 1 << 30) == 0
    assert pt.unmap(0x20_0000, 0) == 0
    assert (pt.pool.words == words).all() and pt.pool.used == used
    assert events(pt) == []


@pytest.mark.parametrize("granule,ipa_bits", CONFIGS)
def test_range_ending_at_top_of_ipa_space(granule, ipa_bits):
    pt = make(granule, ipa_bits)
    g = granule
    top = 1 << ipa_bits
    block = level_size(g, 2)
    pt.map(top - g, 0x5000_0000, g)
    assert pt.translate(top - 1).pa == 0x5000_0000 + g - 1
    pt.map(top - 2 * block, 0x8 * block, 2 * block)  # replaces the page too
    t = pt.translate(top - 1)
    assert (t.pa, t.level) == (0xA * block - 1, 2)
    audit(pt)
    assert pt.unmap(top - 2 * block, 2 * block) == 2 * block
    assert pt.table_pages == pt.root_tables
    pt.protect(top - g, g, Prot.R)


# ---- protect ------------------------------------------------------------------------------------


def test_protect_leaves_holes():
    pt = make()
    g = 4096
    pt.map(0, 0x1000_0000, g)
    pt.map(2 * g, 0x1000_2000, g)
    audit(pt)
    words = pt.pool.words.copy()
    pt.protect(0, 3 * g, Prot.R)
    assert pt.lookup(g) is None
    assert pt.lookup(0).prot == Prot.R and pt.lookup(2 * g).prot == Prot.R
    assert pt.lookup(0).pa == 0x1000_0000 and pt.lookup(2 * g).pa == 0x1000_2000
    changed = np.flatnonzero(pt.pool.words != words)
    assert len(changed) == 2  # just the two leaves
    pt.protect(0x4000_0000, GiB, Prot.R)  # nothing mapped there
    assert pt.lookup(0x4000_0000) is None
    audit(pt)


def test_protect_partial_block_same_prot_does_not_split():
    pt = make()
    pt.map(4 * MiB, 0x8000_0000, 2 * MiB, Prot.RW)
    audit(pt)
    events(pt)
    words, tables = pt.pool.words.copy(), pt.table_pages
    pt.protect(4 * MiB + 4096, 8192, Prot.RW)
    assert pt.table_pages == tables
    assert (pt.pool.words == words).all()
    assert pt.lookup(4 * MiB).level == 2
    assert events(pt) == []


def test_protect_partial_block_other_prot_splits():
    pt = make()
    pt.map(4 * MiB, 0x8000_0000, 2 * MiB, Prot.RW, MemAttr.NORMAL_WT)
    tables = pt.table_pages
    events(pt)
    pt.protect(4 * MiB + 4096, 8192, Prot.R)
    a = audit(pt)
    assert pt.table_pages == tables + 1
    assert a["leaves_by_level"] == {3: 512}
    for m in pt.mappings(4 * MiB, 2 * MiB):
        inside = 4 * MiB + 4096 <= m.ipa < 4 * MiB + 3 * 4096
        assert m.prot == (Prot.R if inside else Prot.RW)
        assert m.memattr == MemAttr.NORMAL_WT
        assert m.pa - 0x8000_0000 == m.ipa - 4 * MiB
    ev = events(pt)
    assert ev, "write permission was removed from a cached leaf: must invalidate"
    with pytest.raises(s2pt.Stage2Fault):
        pt.translate(4 * MiB + 4096, s2pt.Access.WRITE)
    pt.translate(4 * MiB, s2pt.Access.WRITE)


def test_protect_whole_block_stays_block():
    pt = make()
    pt.map(GiB, 4 * GiB, GiB, Prot.RW)
    pt.protect(GiB, GiB, Prot.RX)
    a = audit(pt)
    assert a["leaves_by_level"] == {1: 1}
    assert pt.lookup(GiB + 5).prot == Prot.RX


# ---- TLB events -------------------------------------------------------------------------------


def test_tlbi_unmap_page_and_freed_tables():
    pt = make()
    ipa = 0x12_3456_7000
    pt.map(ipa, 0x1000_0000, 4096)
    pt.map(ipa + 4096, 0x1000_1000, 4096)
    assert events(pt) == []
    pt.unmap(ipa, 4096)
    assert [(e[0], e[1], e[2]) for e in events(pt)] == [(s2pt.TLBI_IPA, 3, ipa)]
    pt.unmap(ipa + 4096, 4096)
    ev = events(pt)
    assert ev[0][:3] == (s2pt.TLBI_IPA, 3, ipa + 4096)
    freed = {(e[0], e[1], e[2]) for e in ev[1:]}
    # the level-3 table (2 MiB span) and the level-2 table (1 GiB span) were freed
    assert freed == {(s2pt.TLBI_IPA, s2pt.TLBI_LEVEL_UNKNOWN, (ipa + 4096) & ~(2 * MiB - 1)),
                     (s2pt.TLBI_IPA, s2pt.TLBI_LEVEL_UNKNOWN, (ipa + 4096) & ~(GiB - 1))}
    assert len(ev) == 3


def test_tlbi_log_clear_flag_and_dtype():
    pt = make()
    pt.map(0, 0x1000, 4096)
    pt.map(4096, 0x2000, 4096)
    pt.unmap(0, 4096)
    log = pt.tlbi_log(clear=False)
    assert set(log.dtype.names) >= {"kind", "level", "ipa", "size"}
    assert len(log) == 1 and len(pt.tlbi_log(clear=False)) == 1
    assert len(pt.tlbi_log()) == 1
    assert len(pt.tlbi_log()) == 0
    assert len({s2pt.TLBI_IPA, s2pt.TLBI_RANGE, s2pt.TLBI_VMID}) == 3


def test_tlbi_overflow_becomes_vmid_event():
    pool = s2pt.PagePool(16)
    pt = s2pt.Stage2(pool=pool, tlbi_capacity=4)
    pt.map(0, 0x1000_0000, 64 * 4096, blocks=False)
    pt.unmap(0, 64 * 4096)
    ev = events(pt)
    assert any(e[0] == s2pt.TLBI_VMID for e in ev)


def test_map_one_page_into_block_invalidates_the_block():
    pt = make()
    pt.map(2 * MiB, 0x4000_0000, 2 * MiB)
    events(pt)
    pt.map(2 * MiB + 4096, 0x7000_0000, 4096)
    ev = events(pt)
    assert (s2pt.TLBI_IPA, 2, 2 * MiB) in [(e[0], e[1], e[2]) for e in ev] or any(
        e[0] == s2pt.TLBI_VMID for e in ev)
    audit(pt)


def test_stats_values_are_python_ints():
    pt = make()
    pt.map(0, 0x1000, 0x1000)
    st = pt.stats()
    for key in ("table_pages", "mapped_bytes"):
        assert type(st[key]) is int
    for key in ("table_pages_by_level", "leaves_by_level"):
        assert all(type(k) is int and type(v) is int for k, v in st[key].items())
    assert type(pt.table_pages) is int and type(pt.root_pa) is int and type(pt.vttbr) is int
    for step in pt.walk(0):
        assert all(type(x) is int for x in step)
    m = next(iter(pt.mappings()))
    assert all(type(x) is int for x in (m.ipa, m.pa, m.size, m.level))
    assert type(pt.unmap(0, 0x1000)) is int


@pytest.mark.parametrize("granule,ipa_bits,block_level", [(4096, 33, 2), (4096, 34, 2),
                                                          (4096, 39, 1), (16384, 36, 2),
                                                          (16384, 40, 2), (65536, 42, 2),
                                                          (65536, 46, 2)])
def test_blocks_in_the_root(granule, ipa_bits, block_level):
    """When the start level allows blocks, a block lives directly in the (concatenated) root."""
    pt = make(granule, ipa_bits)
    assert pt.start_level == block_level
    size = level_size(granule, block_level)
    top = 1 << ipa_bits
    pt.map(top - size, 2 * size, size)
    pt.map(0, 5 * size, size)
    a = audit(pt)
    assert pt.table_pages == pt.root_tables
    assert a["leaves_by_level"] == {block_level: 2}
    steps = pt.walk(top - 1)
    assert len(steps) == 1 and steps[0].level == block_level
    assert steps[0].index == (top - 1) >> level_shift(granule, block_level)
    assert pt.translate(top - 1).pa == 3 * size - 1
    assert pt.unmap(top - size, size) == size
    assert pt.unmap(0, size) == size
    audit(pt)


NON_KVM = [  # granule, ipa_bits, SL0 -> start level (architecturally valid, not what KVM picks)
    (4096, 40, 2, 0),
    (4096, 32, 1, 1),
    (4096, 43, 2, 0),
    (16384, 40, 2, 1),
    (16384, 37, 2, 1),
    (65536, 32, 0, 3),
    (65536, 46, 2, 1),
    (65536, 43, 2, 1),
]


@pytest.mark.parametrize("granule,ipa_bits,sl0,start", NON_KVM)
def test_non_kvm_start_levels_work(granule, ipa_bits, sl0, start):
    tg0 = {4096: 0, 65536: 1, 16384: 2}[granule]
    vtcr = (64 - ipa_bits) | sl0 << 6 | 0b0101 << 8 | 0b11 << 12 | tg0 << 14 | 5 << 16 | 1 << 31
    cfg = s2pt.Stage2Config.from_vtcr(vtcr)
    assert cfg.start_level == start
    pt = s2pt.Stage2.from_config(cfg, pool=s2pt.PagePool(64, granule=granule))
    g = granule
    top = 1 << ipa_bits
    pt.map(top - g, 0x1_0000_0000, g)
    pt.map(0, 0x2_0000_0000, level_size(g, max(2, start)))
    a = audit(pt)
    assert a["table_pages_by_level"][start] == pt.root_tables
    steps = pt.walk(top - g)
    assert [st.level for st in steps] == list(range(start, 4))
    for st in steps:
        entries = 2 ** (ipa_bits - level_shift(g, start)) if st.level == start else g // 8
        assert st.index == ((top - g) >> level_shift(g, st.level)) & (entries - 1)
    assert pt.translate(top - 1).pa == 0x1_0000_0000 + g - 1
    with pytest.raises(s2pt.Stage2Fault) as info:
        pt.translate(top)
    assert info.value.level == 0
    pt.unmap(0, top)
    a = audit(pt)
    assert pt.table_pages == pt.root_tables


@pytest.mark.parametrize("op", ["unmap", "protect", "map"])
def test_split_at_block_granularity_needs_one_table(op):
    """Taking an aligned 2 MiB out of a 1 GiB block needs one level-2 table, no level-3 one."""
    pt = s2pt.Stage2(pool=s2pt.PagePool(3))
    pt.map(GiB, 4 * GiB, GiB, Prot.RW)
    if op == "unmap":
        assert pt.unmap(GiB + 2 * MiB, 2 * MiB) == 2 * MiB
    elif op == "protect":
        pt.protect(GiB + 2 * MiB, 2 * MiB, Prot.R)
    else:
        pt.map(GiB + 2 * MiB, 0, 2 * MiB)
    a = audit(pt)
    assert pt.table_pages == 3
    assert a["leaves_by_level"][2] == 512 - (op == "unmap")


@pytest.mark.parametrize("granule,size,level", [(4096, GiB, 1), (4096, 2 * MiB, 2),
                                                (16384, 32 * MiB, 2), (65536, 512 * MiB, 2)])
def test_tlbi_unmap_block(granule, size, level):
    pt = make(granule, 44 if granule == 4096 else 46)
    ipa = 6 * size
    pt.map(ipa, 0, size)
    pt.map(ipa + size, size, size)  # keeps the table that holds the block alive
    events(pt)
    assert pt.unmap(ipa, size) == size
    assert [(e[0], e[1], e[2]) for e in events(pt)] == [(s2pt.TLBI_IPA, level, ipa)]
    audit(pt)


def test_mappings_order_and_range():
    pt = make()
    pt.map(GiB, 8 * GiB, GiB, Prot.R)
    pt.map(0x20_0000, 0x1000_0000, 0x3000, Prot.RW, MemAttr.NORMAL_NC)
    pt.map(0x40_0000, 0x2000_0000, 2 * MiB, Prot.RX)
    got = [(m.ipa, m.pa, m.size, m.level, m.prot, m.memattr) for m in pt.mappings()]
    assert got == [
        (0x20_0000, 0x1000_0000, 0x1000, 3, Prot.RW, MemAttr.NORMAL_NC),
        (0x20_1000, 0x1000_1000, 0x1000, 3, Prot.RW, MemAttr.NORMAL_NC),
        (0x20_2000, 0x1000_2000, 0x1000, 3, Prot.RW, MemAttr.NORMAL_NC),
        (0x40_0000, 0x2000_0000, 2 * MiB, 2, Prot.RX, MemAttr.NORMAL),
        (GiB, 8 * GiB, GiB, 1, Prot.R, MemAttr.NORMAL),
    ]
    # whole leaves that intersect the range
    assert [m.ipa for m in pt.mappings(0x20_1000, 0x1000)] == [0x20_1000]
    assert [m.ipa for m in pt.mappings(0x40_1000, GiB)] == [0x40_0000, GiB]
    assert list(pt.mappings(0x60_0000, 0x1000)) == []


@pytest.mark.parametrize("pa", [
    (1 << 30) - 65536, 1 << 30, (1 << 30) + 65536,  # one 30-bit digit, then two
    (1 << 51) + (1 << 30), (1 << 52) - 65536,       # two digits, at the top of a 52-bit PA
])
def test_addresses_read_exactly_whatever_their_int_size(pa):
    """Ints reach C by a digit-level fast path up to 2**60 and the general one beyond: every
    size reads as its value (a descriptor holds the PA's bits 51:12 exactly)."""
    pt = s2pt.Stage2(ipa_bits=52, granule=65536, pa_bits=52, pool=s2pt.PagePool(16, 65536))
    ipa = (1 << 51) + (1 << 31) if pa >= 1 << 40 else 1 << 31
    pt.map(ipa, pa, 65536)
    t = pt.translate(ipa + 0x1238)
    assert t.pa == pa + 0x1238 and t.level == 3
    assert pt.unmap(ipa, 65536) == 65536


@pytest.mark.parametrize("value", [1 << 60, (1 << 60) + 4096, (1 << 64) + 4096, -(1 << 40)])
def test_addresses_beyond_the_fast_path_are_refused_not_truncated(value):
    pt = make()
    with pytest.raises(s2pt.RangeError):
        pt.map(0, value, 4096)
    with pytest.raises(s2pt.RangeError):
        pt.map(value, 0, 4096)
    assert pt.table_pages == pt.root_tables
