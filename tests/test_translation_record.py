"""s2pt.Translation: a record that behaves as the named tuple it replaced.

Its fields are checked against the leaf that translated (the page's PA plus the offset, the
level and size of a 4K page and of a 2 MiB block, S2AP and the MemAttr field of the raw
descriptor); the record protocol against a named tuple's: unpacking, indexing, equality and
hash with the tuple of the same values, ordering, _fields / _asdict / _replace, pickling.
"""

import copy
import pickle

import pytest

import s2pt
from s2pt import Access, MemAttr, Prot

KiB, MiB = 1 << 10, 1 << 20
FIELDS = ("pa", "level", "size", "prot", "memattr", "af", "pte", "sw")


def page_and_block():
    pt = s2pt.Stage2(ipa_bits=40, granule=4096)
    pt.map(0x4000_0000, 0x8_0000_0000, 4 * KiB, Prot.R, MemAttr.DEVICE_nGnRE, sw=5)
    pt.map(0x4020_0000, 0x8_0020_0000, 2 * MiB, Prot.RW)
    return pt, pt.translate(0x4000_0123), pt.translate(0x4030_0008, Access.WRITE)


def test_fields_are_the_leaf_that_translated():
    _, page, block = page_and_block()
    assert (page.pa, page.level, page.size) == (0x8_0000_0123, 3, 4 * KiB)
    assert (block.pa, block.level, block.size) == (0x8_0030_0008, 2, 2 * MiB)
    assert (page.prot, page.memattr, page.af, page.sw) == (Prot.R, MemAttr.DEVICE_nGnRE, True, 5)
    assert (block.prot, block.memattr, block.sw) == (Prot.RW, MemAttr.NORMAL, 0)
    # The raw descriptors: bit 1 set for a page (level 3), clear for a block; S2AP in 7:6
    # (01 read-only, 11 read-write); MemAttr 5:2 (0001 Device-nGnRE, 1111 Normal WB).
    assert page.pte & 0b11 == 0b11 and block.pte & 0b11 == 0b01
    assert (page.pte >> 6) & 0b11 == 0b01 and (block.pte >> 6) & 0b11 == 0b11
    assert (page.pte >> 2) & 0xF == 0b0001 and (block.pte >> 2) & 0xF == 0b1111
    assert page.pte & 0xFFFF_FFFF_F000 == 0x8_0000_0000
    assert (page.pte >> 55) & 0xF == 5
    assert isinstance(page.prot, Prot) and isinstance(page.memattr, MemAttr)
    assert type(page.pa) is int and type(page.af) is bool


def test_behaves_as_the_named_tuple():
    _, page, _ = page_and_block()
    values = (0x8_0000_0123, 3, 4 * KiB, Prot.R, MemAttr.DEVICE_nGnRE, True, page.pte, 5)
    assert tuple(page) == values and list(page) == list(values) and len(page) == 8
    pa, level, size, prot, memattr, af, pte, sw = page
    assert (pa, level, size, sw) == (0x8_0000_0123, 3, 4 * KiB, 5)
    assert page[0] == page.pa and page[-1] == page.sw and page[1:3] == (3, 4 * KiB)
    assert page == values and values == page and page != values[:-1] + (6,)
    assert hash(page) == hash(values)
    assert {page: 1}[s2pt.Translation(*values)] == 1
    assert page._fields == s2pt.Translation._fields == FIELDS
    assert page._asdict() == dict(zip(FIELDS, values))
    moved = page._replace(pa=0x1000, prot=Prot.RW)
    assert (moved.pa, moved.prot) == (0x1000, Prot.RW) and moved[2:] == (4 * KiB, Prot.RW) + values[4:]
    assert page.pa == 0x8_0000_0123  # immutable: _replace made a new record
    with pytest.raises(AttributeError):
        page.pa = 0
    with pytest.raises(ValueError):
        page._replace(ipa=0)
    assert not isinstance(page, tuple)  # documented: a record, not a tuple subclass


def test_ordering_is_the_tuples():
    _, page, block = page_and_block()
    assert sorted([block, page]) == sorted([tuple(block), tuple(page)])
    assert (page < block) == (tuple(page) < tuple(block))
    assert page <= tuple(page) and page >= tuple(page)
    with pytest.raises(TypeError):
        page < 3  # noqa: B015


def test_equal_records_from_engine_and_constructor():
    pt, page, _ = page_and_block()
    again = pt.translate(0x4000_0123)
    assert again == page and again is not page
    built = s2pt.Translation(page.pa, page.level, page.size, page.prot, page.memattr,
                             page.af, page.pte, page.sw)
    assert built == page and hash(built) == hash(page)
    assert s2pt.Translation(1, 3, 4096, Prot.R, MemAttr.NORMAL) == (1, 3, 4096, Prot.R,
                                                                   MemAttr.NORMAL, True, 0, 0)
    assert pt.lookup(0x4000_0123) == page
    assert page != pt.translate(0x4000_0124)


def test_pickle_and_copy_round_trip():
    _, page, block = page_and_block()
    for t in (page, block):
        back = pickle.loads(pickle.dumps(t))
        assert back == t and type(back) is s2pt.Translation and back.memattr is t.memattr
        assert copy.copy(t) is t and copy.deepcopy(t) is t


def test_repr_names_every_field():
    _, page, _ = page_and_block()
    assert repr(page) == (f"Translation(pa=0x800000123, level=3, size=0x1000, prot={Prot.R!r}, "
                          f"memattr={MemAttr.DEVICE_nGnRE!r}, af=True, pte={page.pte:#x}, sw=5)")


@pytest.mark.parametrize("args, error", [
    ((-1, 3, 4096, Prot.R, MemAttr.NORMAL), s2pt.RangeError),
    ((0, 3, 4096, 32, MemAttr.NORMAL), s2pt.InvalidArgumentError),   # Prot: 5 bits
    ((0, 3, 4096, Prot.R, 1 << 20), s2pt.InvalidArgumentError),
    ((0, 4, 4096, Prot.R, MemAttr.NORMAL), s2pt.InvalidArgumentError),   # levels are 0..3
    ((0, 3, 4097, Prot.R, MemAttr.NORMAL), s2pt.InvalidArgumentError),   # leaf sizes: 2**k
    ((0, 3, 2048, Prot.R, MemAttr.NORMAL), s2pt.InvalidArgumentError),   # >= the 4K granule
    ((0, 3, 4096, Prot.R, MemAttr.NORMAL, True, 0, 16), s2pt.InvalidArgumentError),  # SW 58:55
    ((0.5, 3, 4096, Prot.R, MemAttr.NORMAL), s2pt.ArgumentTypeError),
    (("0", 3, 4096, Prot.R, MemAttr.NORMAL), s2pt.ArgumentTypeError),
])
def test_constructor_refuses_values_no_leaf_has(args, error):
    with pytest.raises(error):
        s2pt.Translation(*args)
