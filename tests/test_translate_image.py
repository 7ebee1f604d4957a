"""s2pt.translate_image: the hardware walk over any memory image (here copies of pool.words,
some with descriptors changed the way only a bug or a fuzzer would)."""

from __future__ import annotations

import numpy as np
import pytest

import s2pt
from s2pt import Access, FaultKind, Prot

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def image_of(pt):
    return pt.pool.words.copy()


@pytest.mark.parametrize("kw", [
    dict(), dict(ipa_bits=36, granule=16384, pa_bits=40), dict(ipa_bits=42, granule=65536),
    dict(ipa_bits=52, granule=4096, pa_bits=52, lpa2=True, xnx=True),
    dict(ipa_bits=52, granule=65536, pa_bits=52, fwb=True),
], ids=["4k", "16k", "64k", "4k-lpa2", "64k-52"])
def test_agrees_with_translate(kw):
    flags = {k: kw.pop(k) for k in ("fwb", "xnx") if k in kw}
    base = 0xF_0000_0000_0000 if kw.get("pa_bits") == 52 else 0x4000_0000
    pool = s2pt.PagePool(64, granule=kw.get("granule", 4096), base_pa=base)
    pt = s2pt.Stage2(pool=pool, **kw, **flags)
    rng = np.random.default_rng(5)
    g, top = pt.granule, 1 << pt.ipa_bits
    span = pt.config.level_size(2)
    for _ in range(12):
        ipa = int(rng.integers(0, top // span - 4)) * span
        pt.map(ipa, (1 << pt.pa_bits) - 8 * span, 2 * span, Prot.RW, af=bool(rng.random() < .8))
        pt.map(ipa + g, 0x1_2345_0000 // g * g, 3 * g, Prot.R, blocks=False)
        pt.unmap(ipa + span + 2 * g, g)
    image = image_of(pt)
    leaves = list(pt.mappings())[::7][:300]
    ipas = [m.ipa + off for m in leaves for off in (0, m.size - 8)] + \
        rng.integers(0, top, 500).tolist() + [top, top + 8]
    for ipa in ipas:
        for access in (Access.READ, Access.WRITE):
            try:
                want = pt.translate(ipa, access)
            except s2pt.Stage2Fault as e:
                with pytest.raises(s2pt.Stage2Fault) as info:
                    s2pt.translate_image(image, pool.base_pa, pt.vtcr, pt.vttbr, ipa, access,
                                         **flags)
                assert (info.value.kind, info.value.level, info.value.fsc) == \
                    (e.kind, e.level, e.fsc)
            else:
                assert s2pt.translate_image(image, pool.base_pa, pt.vtcr, pt.vttbr, ipa,
                                            access, **flags) == want


def test_address_size_faults_at_each_level():
    pool = s2pt.PagePool(16)
    pt = s2pt.Stage2(ipa_bits=40, pa_bits=40, pool=pool)       # levels 1, 2, 3
    pt.map(0x4000_1000, 0x80_0000, 4 * KiB)
    steps = pt.walk(0x4000_1000)
    assert [s.level for s in steps] == [1, 2, 3]
    for step in steps:
        image = image_of(pt)
        image[(step.desc_pa - pool.base_pa) // 8] |= 1 << 40    # the first bit beyond PS
        with pytest.raises(s2pt.Stage2Fault) as info:
            s2pt.translate_image(image, pool.base_pa, pt.vtcr, pt.vttbr, 0x4000_1008)
        assert (info.value.kind, info.value.level) == (FaultKind.ADDRESS_SIZE, step.level)
        assert info.value.fsc == step.level                     # 0b0000LL
    # a VTTBR base beyond the PA size: level 0, before any table is read
    with pytest.raises(s2pt.Stage2Fault) as info:
        s2pt.translate_image(image_of(pt), pool.base_pa, pt.vtcr, pt.vttbr | 1 << 44, 0)
    assert (info.value.kind, info.value.level, info.value.fsc) == (FaultKind.ADDRESS_SIZE, 0, 0)


def test_vttbr_fields():
    pool = s2pt.PagePool(16, base_pa=0xF_0000_0000_0000)
    pt = s2pt.Stage2(ipa_bits=48, pa_bits=52, lpa2=True, pool=pool, vmid=300)
    pt.map(0, 0x1000, 4 * KiB)
    image = image_of(pt)
    vttbr = pt.vttbr
    assert vttbr >> 48 == 300 and (vttbr >> 2) & 0xF == 0xF
    assert s2pt.translate_image(image, pool.base_pa, pt.vtcr, vttbr | 1, 8).pa == 0x1008  # CnP
    with pytest.raises(s2pt.AlignmentError):                    # BADDR below the root's size
        s2pt.translate_image(image, pool.base_pa, pt.vtcr, vttbr + 0x40, 8)
    with pytest.raises(s2pt.RangeError):                        # root outside the image
        s2pt.translate_image(image[:512], pool.base_pa + 4096, pt.vtcr, vttbr, 8)


def test_bad_arguments():
    pool = s2pt.PagePool(8)
    pt = s2pt.Stage2(pool=pool)
    pt.map(0, 0x1000, 4 * KiB)
    image = image_of(pt)
    leaf = pt.walk(0)[-1]
    with pytest.raises(s2pt.RangeError):                        # the level-2 table is missing
        s2pt.translate_image(image[:1024], pool.base_pa, pt.vtcr, pt.vttbr, 0)
    with pytest.raises(s2pt.ConfigError):
        s2pt.translate_image(image, pool.base_pa, pt.vtcr | 1 << 21, pt.vttbr, 0)   # HA
    with pytest.raises(s2pt.AlignmentError):
        s2pt.translate_image(image, pool.base_pa + 8, pt.vtcr, pt.vttbr, 0)
    with pytest.raises(s2pt.InvalidArgumentError):
        s2pt.translate_image(image, pool.base_pa, pt.vtcr, pt.vttbr, 0, 9)
    with pytest.raises(s2pt.ArrayError):
        s2pt.translate_image(image.astype(np.int64), pool.base_pa, pt.vtcr, pt.vttbr, 0)
    with pytest.raises(s2pt.RangeError):
        s2pt.translate_image(image[:0], pool.base_pa, pt.vtcr, pt.vttbr, 0)
    assert leaf.level == 3 and pt.translate(8).pa == 0x1008


def test_foreign_bits_read_as_hardware_reads_them():
    """Bit 53 is XN[0] only with FEAT_XNX (RES0, ignored, without it); an FWB MemAttr field
    other than 0b00xx / 0b0101 / 0b0110 / 0b0111 is reserved and reported as such; the image
    is only read."""
    pool = s2pt.PagePool(8)
    pt = s2pt.Stage2(pool=pool, fwb=True)
    pt.map(0, 0x1000, 4 * KiB, Prot.RX)
    image = image_of(pt)
    idx = (pt.walk(0)[-1].desc_pa - pool.base_pa) // 8
    image[idx] |= 1 << 53                                   # XN[1:0] = 0b01: EL0 only (XNX)
    before = image.copy()
    args = (image, pool.base_pa, pt.vtcr, pt.vttbr, 8)
    plain = s2pt.translate_image(*args, Access.EXEC, fwb=True)
    assert plain.prot == Prot.RX and plain.pa == 0x1008     # without XNX: executable at EL1
    with pytest.raises(s2pt.Stage2Fault) as info:
        s2pt.translate_image(*args, Access.EXEC, fwb=True, xnx=True)
    assert (info.value.kind, info.value.fsc) == (FaultKind.PERMISSION, 0b001111)
    assert s2pt.translate_image(*args, Access.EXEC_EL0, fwb=True, xnx=True).prot == Prot.R | Prot.UX
    for field, want in ((0x6, s2pt.MemAttr.NORMAL), (0x7, s2pt.MemAttr.STAGE1),
                        (0xF, s2pt.MemAttr.RESERVED | 0xF), (0x4, s2pt.MemAttr.RESERVED | 0x4)):
        image[idx] = (image[idx] & ~np.uint64(0xF << 2)) | np.uint64(field << 2)
        assert s2pt.translate_image(*args, fwb=True).memattr == want
        before[idx] = image[idx]
    assert (image == before).all()
