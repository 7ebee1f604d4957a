"""``Stage2.dump()``: KVM's stage-2 ptdump text (the per-VM debugfs file
``stage2_page_tables``, current mainline format; rules in csrc/src/ptdump.c).

The facts asserted, from the format: a ``---[ Guest IPA ]---`` line; then lines
``0x%016x-0x%016x``, three spaces, the size in 9 columns and its unit (KiB divided by 1024
while it stays a multiple of 1024: K M G T P E), a space, the level; for entries with any of
the valid / type / S2AP / AF / XN bits set six columns follow: `` `` or ``F`` (valid or not),
``R``, ``W``, the XN[1:0] pair (``px ux `` 00, ``PXNux `` 01, ``PXNUXN`` 10, ``px UXN`` 11),
``AF``, ``BLK`` (bits 1:0 = 0b01). Adjacent entries of one level with the same bits share a
line; the output address and MemAttr are not in the format, so they never split a line. The
lines tile ``[0, 2^ipa_bits)``.

Expected texts are written out by hand; the property test checks every dump against
``mappings()`` and ``stats()`` rather than against the dump's own code.
"""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import s2pt
from s2pt import MemAttr, Prot

K, M, G = 1 << 10, 1 << 20, 1 << 30
HEADER = "---[ Guest IPA ]---"
LINE = re.compile(
    r"0x(?P<start>[0-9a-f]{16})-0x(?P<end>[0-9a-f]{16})   (?P<size> {0,8}\d+[KMGTPE]) "
    r"(?P<level>\d)(?P<attrs> (?P<valid>[ F]) (?P<r>[R ]) (?P<w>[W ]) "
    r"(?P<xn>px ux |PXNux |PXNUXN|px UXN) (?P<af>AF|  ) (?P<blk>BLK|   ))?"
)
# XN[1:0] as the format names it, from the permissions (R/W aside).
XN_COLUMN = {Prot.X: "px ux ", Prot.UX: "PXNux ", Prot.NONE: "PXNUXN", Prot.PX: "px UXN"}


def size_column(nbytes):
    """The size as the format prints it (9 columns, then the unit)."""
    n, unit = nbytes >> 10, 0
    while n % 1024 == 0 and unit < 5:
        n //= 1024
        unit += 1
    return f"{n:9d}{'KMGTPE'[unit]}"


def parse(text):
    """Check the layout of every line; return (start, end, level, attrs-or-None) per line."""
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    assert lines[0] == HEADER
    out = []
    for line in lines[1:]:
        m = LINE.fullmatch(line)
        assert m, f"malformed line {line!r}"
        start, end = int(m["start"], 16), int(m["end"], 16)
        assert start < end
        assert m["size"] == size_column(end - start), line
        out.append((start, end, int(m["level"]), m["attrs"]))
    return out


def leaf_attrs(m, level):
    """The six columns of a valid leaf."""
    xn = XN_COLUMN[m.prot & Prot.X]
    return (f"   {'R' if m.prot & Prot.R else ' '} {'W' if m.prot & Prot.W else ' '} {xn} "
            f"{'AF' if m.af else '  '} {'BLK' if level < 3 else '   '}")


def check_dump(pt):
    """Every fact about one VM's dump that its tables determine; returns the parsed lines."""
    text = pt.dump()
    lines = parse(text)
    span = {lv: 1 << ((pt.granule.bit_length() - 4) * (4 - lv) + 3) for lv in range(4)}
    # The lines tile the IPA space; each covers whole entries of its level.
    assert lines[0][0] == 0 and lines[-1][1] == 1 << pt.ipa_bits
    for (s0, e0, l0, a0), (s1, _, l1, a1) in zip(lines, lines[1:]):
        assert e0 == s1
        # Coalescing is maximal: neighbours differ in level or attributes.
        assert (l0, a0) != (l1, a1)
    for start, end, level, _ in lines:
        assert pt.start_level <= level <= 3
        assert start % span[level] == 0 and (end - start) % span[level] == 0
    # Valid lines are exactly the mapped leaves, with their attributes.
    maps = list(pt.mappings())
    valid = [ln for ln in lines if ln[3] is not None and ln[3][1] == " "]
    assert sum(e - s for s, e, _, _ in valid) == pt.stats()["mapped_bytes"]
    k = 0
    for m in maps:
        while not (lines[k][0] <= m.ipa < lines[k][1]):
            k += 1
        start, end, level, attrs = lines[k]
        assert level == m.level and m.ipa + m.size <= end
        assert attrs == leaf_attrs(m, level), (m, attrs)
    return lines


def test_destroyed_vm_raises():
    pt = s2pt.Stage2()
    pt.destroy()
    with pytest.raises(s2pt.DestroyedError):
        pt.dump()


@pytest.mark.parametrize(
    "kw, line",
    [
        (dict(ipa_bits=40), "0x0000000000000000-0x0000010000000000           1T 1"),
        (dict(ipa_bits=32), "0x0000000000000000-0x0000000100000000           4G 2"),
        (dict(ipa_bits=48), "0x0000000000000000-0x0001000000000000         256T 0"),
        (dict(ipa_bits=52, lpa2=True, pa_bits=52),
         "0x0000000000000000-0x0010000000000000           4P 0"),
        (dict(ipa_bits=52, granule=16384, lpa2=True, pa_bits=52),
         "0x0000000000000000-0x0010000000000000           4P 0"),
        (dict(ipa_bits=52, granule=65536, pa_bits=52),
         "0x0000000000000000-0x0010000000000000           4P 1"),
        (dict(ipa_bits=36, granule=16384), "0x0000000000000000-0x0000001000000000          64G 2"),
        (dict(ipa_bits=42, granule=65536), "0x0000000000000000-0x0000040000000000           4T 2"),
    ],
)
def test_empty_vm_is_one_line_at_the_start_level(kw, line):
    # The root's empty entries, over every concatenated root page, coalesce into one line.
    pt = s2pt.Stage2(**kw)
    assert pt.dump() == f"{HEADER}\n{line}\n"


def test_block_2m_blocks_pages_and_holes_4k():
    pt = s2pt.Stage2(ipa_bits=40)
    pt.map(1 * G, 4 * G, 1 * G, Prot.RWX)                     # a 1G block (level 1)
    pt.map(4 * M, 8 * G, 2 * M)                               # two 2M blocks, PAs apart
    pt.map(6 * M, 9 * G, 2 * M)
    pt.map(0, 5 * G, 12 * K, blocks=True)                     # three 4K pages
    pt.map(16 * K, 5 * G, 4 * K, Prot.R)                      # read-only, after a hole
    pt.map(20 * K, 5 * G, 4 * K, Prot.RX)                     # executable
    assert pt.dump() == (
        f"{HEADER}\n"
        "0x0000000000000000-0x0000000000003000          12K 3   R W PXNUXN AF    \n"
        "0x0000000000003000-0x0000000000004000           4K 3\n"
        "0x0000000000004000-0x0000000000005000           4K 3   R   PXNUXN AF    \n"
        "0x0000000000005000-0x0000000000006000           4K 3   R   px ux  AF    \n"
        "0x0000000000006000-0x0000000000200000        2024K 3\n"
        "0x0000000000200000-0x0000000000400000           2M 2\n"
        "0x0000000000400000-0x0000000000800000           4M 2   R W PXNUXN AF BLK\n"
        "0x0000000000800000-0x0000000040000000        1016M 2\n"
        "0x0000000040000000-0x0000000080000000           1G 1   R W px ux  AF BLK\n"
        "0x0000000080000000-0x0000010000000000        1022G 1\n"
    )
    check_dump(pt)
    # Unmapping all of it gives back the empty VM's text.
    pt.unmap(0, 2 * G)
    assert pt.dump() == f"{HEADER}\n0x0000000000000000-0x0000010000000000           1T 1\n"


def test_output_address_and_memattr_never_split_a_line():
    # Neither the PA nor MemAttr is in the format: these pages print as one run.
    text = None
    for fwb in (False, True):
        pt = s2pt.Stage2(fwb=fwb)
        pt.map(0, 7 * G, 4 * K)
        pt.map(4 * K, 3 * G, 4 * K, memattr=MemAttr.NORMAL_NC)
        pt.map(8 * K, 1 * G, 4 * K, Prot.RW, MemAttr.DEVICE_nGnRE)
        lines = check_dump(pt)
        assert lines[0] == (0, 12 * K, 3, "   R W PXNUXN AF    ")
        # FWB changes the MemAttr encoding only: the same text.
        text = text or pt.dump()
        assert pt.dump() == text


def test_permission_and_access_flag_columns():
    pt = s2pt.Stage2(xnx=True)
    cases = [
        (Prot.R, True, "   R   PXNUXN AF    "),
        (Prot.W, True, "     W PXNUXN AF    "),
        (Prot.RW, False, "   R W PXNUXN       "),
        (Prot.RX, True, "   R   px ux  AF    "),
        (Prot.R | Prot.PX, True, "   R   px UXN AF    "),   # XN[1:0] = 11
        (Prot.R | Prot.UX, True, "   R   PXNux  AF    "),   # XN[1:0] = 01
        (Prot.NONE, True, "       PXNUXN AF    "),
    ]
    for i, (prot, af, _) in enumerate(cases):
        pt.map(i * 4 * K, 2 * G, 4 * K, prot, af=af)
    lines = check_dump(pt)
    for i, (_, _, attrs) in enumerate(cases):
        assert lines[i] == (i * 4 * K, (i + 1) * 4 * K, 3, attrs)
    # Taking write away from the RW page, and setting its AF, makes it the R page's twin.
    pt.protect(2 * 4 * K, 4 * K, Prot.R)
    pt.set_access_flag(2 * 4 * K, 4 * K)
    lines = check_dump(pt)
    assert lines[0][3] == lines[2][3] == "   R   PXNUXN AF    "


def test_read_only_run_inside_a_split_block():
    pt = s2pt.Stage2()
    pt.map(0, 1 * G, 2 * M)
    pt.protect(1 * M, 64 * K, Prot.R)                          # splits the block
    assert check_dump(pt)[:4] == [
        (0, 1 * M, 3, "   R W PXNUXN AF    "),
        (1 * M, 1 * M + 64 * K, 3, "   R   PXNUXN AF    "),
        (1 * M + 64 * K, 2 * M, 3, "   R W PXNUXN AF    "),
        (2 * M, 1 * G, 2, None),
    ]
    # 1024K is a multiple of 1024 KiB, so the first run's size reads 1M.
    assert pt.dump().split("\n")[1].endswith("           1M 3   R W PXNUXN AF    ")


@pytest.mark.parametrize(
    "granule, page, block, block_level_line",
    [
        (16384, "16K", 32 * M, "       32M 2   R W PXNUXN AF BLK"),
        (65536, "64K", 512 * M, "      512M 2   R W PXNUXN AF BLK"),
    ],
)
def test_granules(granule, page, block, block_level_line):
    pt = s2pt.Stage2(ipa_bits=42, granule=granule)
    pt.map(0, 1 * G, granule)
    pt.map(block, 2 * G, block)
    text = pt.dump()
    lines = text.split("\n")
    assert lines[1] == f"0x0000000000000000-{granule:#018x}{page:>13} 3   R W PXNUXN AF    "
    assert lines[3] == f"{block:#018x}-{2 * block:#018x}   {block_level_line}"
    check_dump(pt)


def test_concatenated_root_pages_print_as_one_space():
    # 40-bit 4K: 1024 level-1 entries in two concatenated root pages; 600G is in the second.
    pt = s2pt.Stage2(ipa_bits=40)
    assert pt.root_tables == 2
    pt.map(600 * G, 8 * G, 1 * G)
    assert pt.dump() == (
        f"{HEADER}\n"
        "0x0000000000000000-0x0000009600000000         600G 1\n"
        "0x0000009600000000-0x0000009640000000           1G 1   R W PXNUXN AF BLK\n"
        "0x0000009640000000-0x0000010000000000         423G 1\n"
    )


def test_lpa2_52bit_level0_block_and_top_page():
    pt = s2pt.Stage2(ipa_bits=52, lpa2=True, pa_bits=52)
    assert pt.root_tables == 16 and pt.start_level == 0
    pt.map(0, 0, 512 * G)                                     # LPA2: level-0 blocks
    top = (1 << 52) - 4 * K
    pt.map(top, 0xF_0000_0000_0000, 4 * K, Prot.RWX)          # OA bits 51:50 in SH's place
    assert pt.dump() == (
        f"{HEADER}\n"
        "0x0000000000000000-0x0000008000000000         512G 0   R W PXNUXN AF BLK\n"
        "0x0000008000000000-0x000fff8000000000        4095T 0\n"
        "0x000fff8000000000-0x000fffffc0000000         511G 1\n"
        "0x000fffffc0000000-0x000fffffffe00000        1022M 2\n"
        "0x000fffffffe00000-0x000ffffffffff000        2044K 3\n"
        "0x000ffffffffff000-0x0010000000000000           4K 3   R W px ux  AF    \n"
    )
    check_dump(pt)


def test_64k_52bit_pa():
    pt = s2pt.Stage2(ipa_bits=52, granule=65536, pa_bits=52)
    pt.map(1 << 51, 0xF_0000_0001_0000, 64 * K)               # OA[51:48] in bits 15:12
    lines = check_dump(pt)
    assert (1 << 51, (1 << 51) + 64 * K, 3, "   R W PXNUXN AF    ") in lines


def test_owner_annotations_show_only_through_the_attribute_bits():
    pt = s2pt.Stage2()
    pt.set_owner(0, 8 * K, 1)       # bit 2: none of the columns' bits, prints as a hole
    pt.set_owner(8 * K, 4 * K, 0x30)  # bits 6 and 7, S2AP's bits: invalid, "R W"
    assert pt.dump().split("\n")[1:4] == [
        "0x0000000000000000-0x0000000000002000           8K 3",
        "0x0000000000002000-0x0000000000003000           4K 3 F R W px ux        ",
        "0x0000000000003000-0x0000000000200000        2036K 3",
    ]


def test_long_dump():
    # Longer than the first buffer the binding tries: every other page mapped.
    pt = s2pt.Stage2()
    for i in range(0, 512, 2):
        pt.map(i * 4 * K, 1 * G, 4 * K)
    text = pt.dump()
    assert len(text) > 4096
    lines = check_dump(pt)
    assert len(lines) == 512 + 2
    assert lines[510] == (510 * 4 * K, 511 * 4 * K, 3, "   R W PXNUXN AF    ")
    assert lines[511] == (511 * 4 * K, 2 * M, 3, None)


def test_kvm_faulted_vm():
    # Tables the MMU layer built on guest faults print like any others.
    pt = s2pt.Stage2(semantics="kvm")
    slot = pt.add_memslot(0x4000_0000, 0x8000_0000, 4 * M, backing=2 * M)
    for ipa in (0x4000_0000, 0x4020_0000 + 12 * K):
        pt.fault(ipa, s2pt.Access.READ)
    lines = check_dump(pt)
    assert (0x4000_0000, 0x4040_0000, 2, "   R W PXNUXN AF BLK") in lines
    pt.set_log_dirty(slot, True, eager_split=True)
    lines = check_dump(pt)
    assert (0x4000_0000, 0x4040_0000, 3, "   R   PXNUXN AF    ") in lines


CONFIGS = [
    dict(ipa_bits=40),
    dict(ipa_bits=36, granule=16384),
    dict(ipa_bits=42, granule=65536),
    dict(ipa_bits=52, lpa2=True, pa_bits=52),
]
PROTS = [Prot.RW, Prot.R, Prot.RX, Prot.RWX, Prot.W]


@settings(max_examples=25)
@given(cfg=st.sampled_from(CONFIGS), data=st.data())
def test_dump_matches_mappings(cfg, data):
    pt = s2pt.Stage2(**cfg)
    g = pt.granule
    block = g << (pt.granule.bit_length() - 4)               # a level-2 block
    ops = data.draw(st.lists(st.tuples(
        st.sampled_from(["map", "unmap", "protect"]),
        st.integers(0, 63), st.integers(1, 3 * block // g),
        st.sampled_from(PROTS), st.booleans()), max_size=8))
    for op, first, npages, prot, af in ops:
        ipa, size = block * 2 + first * g * 7, npages * g
        if op == "map":
            pt.map(ipa, 1 << 32, size, prot, af=af)
        elif op == "unmap":
            pt.unmap(ipa, size)
        else:
            pt.protect(ipa, size, prot)
    check_dump(pt)
