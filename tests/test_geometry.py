"""Geometry and control registers of a VM, against the Arm architecture and KVM's choices.

Every expected value here is written down from the architecture (kernel-notes sections 1.1-1.4):
an explicit per-IPA table of levels / start level / concatenated root tables, and VTCR_EL2 composed
field by field from its documented layout. Nothing is taken from what the engine returns.
"""

import pytest

import s2pt

GRANULES = (4096, 16384, 65536)
IPA_RANGE = range(32, 49)

# ---- the expected geometry, written out (kernel-notes 1.3 table) --------------------------------


def _rows(spec):
    """Expand {(lo, hi): (levels, start, tables or [tables per ipa])} into {ipa: (levels, start, tables)}."""
    out = {}
    for (lo, hi), (levels, start, tables) in spec.items():
        for k, ipa in enumerate(range(lo, hi + 1)):
            out[ipa] = (levels, start, tables[k] if isinstance(tables, list) else tables)
    return out


EXPECTED = {
    4096: _rows({
        (32, 34): (2, 2, [4, 8, 16]),
        (35, 39): (3, 1, 1),
        (40, 43): (3, 1, [2, 4, 8, 16]),
        (44, 48): (4, 0, 1),
    }),
    16384: _rows({
        (32, 36): (2, 2, 1),
        (37, 40): (2, 2, [2, 4, 8, 16]),
        (41, 47): (3, 1, 1),
        (48, 48): (3, 1, 2),
    }),
    65536: _rows({
        (32, 33): (2, 2, 1),  # the formula gives one level; KVM forces two
        (34, 42): (2, 2, 1),
        (43, 46): (2, 2, [2, 4, 8, 16]),
        (47, 48): (3, 1, 1),
    }),
}

# VTCR_EL2 field encodings (kernel-notes 1.2, 1.4).
TG0 = {4096: 0b00, 65536: 0b01, 16384: 0b10}
SL0_BASE = {4096: 2, 16384: 3, 65536: 3}
PS = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5}
PA_BITS = tuple(PS)


def expected_vtcr(ipa_bits, granule, pa_bits, vmid, start_level):
    t0sz = 64 - ipa_bits
    sl0 = SL0_BASE[granule] - start_level
    value = t0sz                    # T0SZ   5:0
    value |= sl0 << 6               # SL0    7:6
    value |= 0b01 << 8              # IRGN0  9:8   write-back, write-allocate
    value |= 0b01 << 10             # ORGN0 11:10  write-back, write-allocate
    value |= 0b11 << 12             # SH0   13:12  inner shareable
    value |= TG0[granule] << 14     # TG0   15:14
    value |= PS[pa_bits] << 16      # PS    18:16
    value |= (vmid > 255) << 19     # VS    19     16-bit VMID
    value |= 1 << 31                # RES1
    return value


def level_shift(granule, level):
    s = granule.bit_length() - 1 - 3
    return s * (4 - level) + 3


ALL_CONFIGS = [(g, ipa) for g in GRANULES for ipa in IPA_RANGE]


def test_expected_table_is_complete_and_consistent():
    """The hand-written table agrees with the architectural rules it was read from."""
    for g in GRANULES:
        assert sorted(EXPECTED[g]) == list(IPA_RANGE)
        gs = g.bit_length() - 1
        s = gs - 3
        for ipa, (levels, start, tables) in EXPECTED[g].items():
            assert start == 4 - levels
            # start table resolves between 1 and s + 4 bits; >s bits means concatenation
            bits = ipa - level_shift(g, start)
            assert 1 <= bits <= s + 4
            assert tables == max(1, 2 ** (bits - s))


@pytest.mark.parametrize("granule,ipa_bits", ALL_CONFIGS)
def test_config_geometry(granule, ipa_bits):
    levels, start, tables = EXPECTED[granule][ipa_bits]
    cfg = s2pt.Stage2Config(ipa_bits=ipa_bits, granule=granule, pa_bits=48)
    assert (cfg.levels, cfg.start_level, cfg.root_tables) == (levels, start, tables)
    assert cfg.t0sz == 64 - ipa_bits
    assert cfg.sl0 == SL0_BASE[granule] - start
    assert cfg.vtcr == expected_vtcr(ipa_bits, granule, 48, 1, start)
    assert (cfg.ipa_bits, cfg.granule, cfg.pa_bits, cfg.vmid) == (ipa_bits, granule, 48, 1)


@pytest.mark.parametrize("granule,ipa_bits", ALL_CONFIGS)
def test_vm_geometry_and_root(granule, ipa_bits):
    levels, start, tables = EXPECTED[granule][ipa_bits]
    # A pool whose base is page aligned but deliberately misaligned for any multi-page root.
    base = 0x4000_0000 + granule
    pool = s2pt.PagePool(48, granule=granule, base_pa=base)
    pt = s2pt.Stage2(ipa_bits=ipa_bits, granule=granule, pa_bits=48, vmid=7, pool=pool)
    try:
        assert (pt.levels, pt.start_level, pt.root_tables) == (levels, start, tables)
        assert pt.vtcr == expected_vtcr(ipa_bits, granule, 48, 7, start)
        root_size = tables * granule
        assert pt.root_pa % root_size == 0, "VTTBR.BADDR must be aligned to the root's size"
        assert pool.base_pa <= pt.root_pa and pt.root_pa + root_size <= pool.end_pa
        assert pt.vttbr == pt.root_pa | (7 << 48)
        assert pt.table_pages == tables
        assert pool.used == tables
        for i in range(tables):
            assert pool.refcount(pt.root_pa + i * granule) == 1
    finally:
        pt.destroy()
    assert pool.used == 0


@pytest.mark.parametrize("pa_bits", PA_BITS)
@pytest.mark.parametrize("granule", GRANULES)
def test_ps_field(granule, pa_bits):
    levels, start, tables = EXPECTED[granule][32]
    cfg = s2pt.Stage2Config(ipa_bits=32, granule=granule, pa_bits=pa_bits)
    assert cfg.vtcr == expected_vtcr(32, granule, pa_bits, 1, start)
    assert (cfg.vtcr >> 16) & 0b111 == PS[pa_bits]


@pytest.mark.parametrize("vmid", [0, 1, 255, 256, 0x1234, 65535])
def test_vmid_and_vs_bit(vmid):
    cfg = s2pt.Stage2Config(ipa_bits=40, vmid=vmid)
    assert cfg.vtcr == expected_vtcr(40, 4096, 48, vmid, 1)
    assert bool(cfg.vtcr >> 19 & 1) == (vmid > 255)
    pool = s2pt.PagePool(8)
    with s2pt.Stage2(ipa_bits=40, vmid=vmid, pool=pool) as pt:
        assert pt.vttbr == pt.root_pa | (vmid << 48)
        assert pt.vttbr >> 48 == vmid


def test_defaults():
    cfg = s2pt.Stage2Config()
    assert (cfg.ipa_bits, cfg.granule, cfg.pa_bits, cfg.vmid) == (40, 4096, 48, 1)
    assert (cfg.levels, cfg.start_level, cfg.root_tables) == (3, 1, 2)
    assert cfg.vtcr == 0x8005_3558  # the worked example: T0SZ 24, SL0 1, 4K, PS 48-bit
    with s2pt.Stage2() as pt:
        assert (pt.levels, pt.start_level, pt.root_tables) == (3, 1, 2)
        assert pt.vtcr == 0x8005_3558


# ---- invalid configurations -----------------------------------------------------------------

BAD_CONFIGS = [
    dict(ipa_bits=31),
    dict(ipa_bits=49),
    dict(ipa_bits=40, pa_bits=36),
    dict(ipa_bits=44, pa_bits=42),
    dict(ipa_bits=40, pa_bits=52),
    dict(ipa_bits=40, pa_bits=41),
    dict(granule=8192),
    dict(vmid=65536),
    dict(granule=65536, lpa2=True),           # LPA2 is a 4K/16K format
    dict(ipa_bits=49, lpa2=True),             # IPA larger than the (48-bit) PA size
    dict(ipa_bits=49, pa_bits=52),            # 4K without LPA2 cannot hold 52-bit addresses
    dict(granule=16384, pa_bits=52),
    dict(ipa_bits=53, pa_bits=52, lpa2=True),
    dict(granule=65536, ipa_bits=53, pa_bits=52),
    dict(granule=65536, ipa_bits=49),         # needs the 52-bit PA size
]


@pytest.mark.parametrize("kwargs", BAD_CONFIGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_invalid_config(kwargs):
    with pytest.raises(s2pt.ConfigError):
        s2pt.Stage2Config(**kwargs)
    # A pool already holding another VM's pages: the failed creation allocates nothing.
    pool = s2pt.PagePool(64)
    other = s2pt.Stage2(ipa_bits=40, pool=pool, vmid=9)
    other.map(0, 0x1_0000_0000, 0x1000)
    used, words, counts = pool.used, pool.words.copy(), pool.refcounts.copy()
    with pytest.raises(s2pt.ConfigError) as info:
        s2pt.Stage2(pool=pool, **kwargs)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, s2pt.S2ptError)
    assert pool.used == used
    assert (pool.words == words).all() and (pool.refcounts == counts).all()
    other.destroy()


@pytest.mark.parametrize("kwargs", BAD_CONFIGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_invalid_config_own_pool(kwargs):
    with pytest.raises(s2pt.ConfigError):
        s2pt.Stage2(**kwargs)


@pytest.mark.parametrize("vm_granule,pool_granule", [(4096, 16384), (4096, 65536), (16384, 4096),
                                                     (65536, 16384)])
def test_pool_of_other_granule(vm_granule, pool_granule):
    pool = s2pt.PagePool(64, granule=pool_granule)
    with pytest.raises(s2pt.ConfigError):
        s2pt.Stage2(ipa_bits=40, granule=vm_granule, pool=pool)
    assert pool.used == 0
    assert not pool.refcounts.any()


@pytest.mark.parametrize("base_pa,pages", [
    (1 << 36, 16),               # entirely above 2**32
    ((1 << 32) - 8 * 4096, 16),  # straddles 2**32
])
def test_pool_beyond_pa_bits(base_pa, pages):
    pool = s2pt.PagePool(pages, base_pa=base_pa)
    with pytest.raises(s2pt.ConfigError):
        s2pt.Stage2(ipa_bits=32, pa_bits=32, pool=pool)
    assert pool.used == 0
    assert not pool.refcounts.any()


def test_pool_ending_exactly_at_pa_limit_is_accepted():
    pool = s2pt.PagePool(16, base_pa=(1 << 32) - 16 * 4096)
    with s2pt.Stage2(ipa_bits=32, pa_bits=32, pool=pool) as pt:
        assert pt.root_pa + pt.root_tables * 4096 <= 1 << 32
        assert pt.root_pa % (pt.root_tables * 4096) == 0


# ---- from_vtcr --------------------------------------------------------------------------------

VALID_CONFIGS = [(g, ipa, pa) for g in GRANULES for ipa in IPA_RANGE for pa in PA_BITS if ipa <= pa]


@pytest.mark.parametrize("granule,ipa_bits,pa_bits", VALID_CONFIGS)
def test_from_vtcr_round_trip(granule, ipa_bits, pa_bits):
    cfg = s2pt.Stage2Config(ipa_bits=ipa_bits, granule=granule, pa_bits=pa_bits, vmid=3)
    back = s2pt.Stage2Config.from_vtcr(cfg.vtcr, vmid=3)
    levels, start, tables = EXPECTED[granule][ipa_bits]
    assert (back.ipa_bits, back.granule, back.pa_bits) == (ipa_bits, granule, pa_bits)
    assert (back.levels, back.start_level, back.root_tables) == (levels, start, tables)
    assert (back.t0sz, back.sl0, back.vtcr) == (64 - ipa_bits, SL0_BASE[granule] - start, cfg.vtcr)
    assert back == cfg


@pytest.mark.parametrize("vmid", [0, 255, 256, 65535])
def test_from_vtcr_round_trip_vmid(vmid):
    cfg = s2pt.Stage2Config(ipa_bits=36, granule=16384, vmid=vmid)
    back = s2pt.Stage2Config.from_vtcr(cfg.vtcr, vmid=vmid)
    assert back.vmid == vmid and back.vtcr == cfg.vtcr


def _arch_start_level_ok(granule, ipa_bits, sl0):
    """The architecture's verdict on a (T0SZ, SL0) pair with PS = 48 bits, no DS, no TTST."""
    gs = granule.bit_length() - 1
    s = gs - 3
    if granule == 4096 and sl0 == 3:
        return None  # level 3 start needs FEAT_TTST
    if granule != 4096 and sl0 == 3:
        return None  # 16K level 0 needs DS; reserved for 64K
    start = SL0_BASE[granule] - sl0
    further = 3 - start
    if not further * s + gs + 1 <= ipa_bits <= further * s + gs + s + 4:
        return None
    return start


ALL_SL0 = [(g, ipa, sl0) for g in GRANULES for ipa in IPA_RANGE for sl0 in range(4)]


@pytest.mark.parametrize("granule,ipa_bits,sl0", ALL_SL0)
def test_from_vtcr_every_sl0(granule, ipa_bits, sl0):
    """Architecturally valid start levels are accepted (KVM's or not); inconsistent ones refused."""
    vtcr = ((64 - ipa_bits) | sl0 << 6 | 0b01 << 8 | 0b01 << 10 | 0b11 << 12
            | TG0[granule] << 14 | PS[48] << 16 | 1 << 31)
    start = _arch_start_level_ok(granule, ipa_bits, sl0)
    if start is None:
        with pytest.raises(s2pt.ConfigError):
            s2pt.Stage2Config.from_vtcr(vtcr)
        return
    cfg = s2pt.Stage2Config.from_vtcr(vtcr)
    s = granule.bit_length() - 1 - 3
    bits = ipa_bits - level_shift(granule, start)
    assert cfg.start_level == start
    assert cfg.levels == 4 - start
    assert cfg.root_tables == max(1, 2 ** (bits - s))
    assert cfg.root_entries == 2 ** bits
    assert cfg.vtcr == vtcr
    assert (cfg.t0sz, cfg.sl0, cfg.ipa_bits, cfg.granule) == (64 - ipa_bits, sl0, ipa_bits, granule)


def test_from_vtcr_4k_ipa40_start_level0():
    """4K, 40-bit IPA with SL0 = 2: four levels from level 0, one root table using 2 entries."""
    vtcr = expected_vtcr(40, 4096, 48, 1, 1) & ~(0b11 << 6) | (2 << 6)
    cfg = s2pt.Stage2Config.from_vtcr(vtcr)
    assert (cfg.levels, cfg.start_level, cfg.root_tables, cfg.root_entries) == (4, 0, 1, 2)
    pool = s2pt.PagePool(16)
    pt = s2pt.Stage2.from_config(cfg, pool=pool)
    top = (1 << 40) - 4096
    pt.map(top, 0x8000_0000, 4096)
    steps = pt.walk(top)
    assert [st.level for st in steps] == [0, 1, 2, 3]
    assert steps[0].table_pa == pt.root_pa and steps[0].index == 1
    assert [st.index for st in steps[1:]] == [511, 511, 511]
    assert pt.translate(top + 0x123).pa == 0x8000_0123
    assert pt.table_pages == 4
    with pytest.raises(s2pt.Stage2Fault) as info:
        pt.translate(1 << 40)
    assert info.value.kind == s2pt.FaultKind.TRANSLATION and info.value.level == 0
    pt.destroy()


def _vtcr40(**over):
    fields = dict(t0sz=24, sl0=1, irgn=1, orgn=1, sh=3, tg=0, ps=5, vs=0, extra=0)
    fields.update(over)
    return (fields["t0sz"] | fields["sl0"] << 6 | fields["irgn"] << 8 | fields["orgn"] << 10
            | fields["sh"] << 12 | fields["tg"] << 14 | fields["ps"] << 16 | fields["vs"] << 19
            | 1 << 31 | fields["extra"])


def test_vtcr40_helper_matches_worked_example():
    assert _vtcr40() == 0x8005_3558
    assert s2pt.Stage2Config.from_vtcr(_vtcr40()).root_tables == 2


@pytest.mark.parametrize("vtcr,vmid", [
    (_vtcr40(t0sz=64 - 44, sl0=1), 1),   # 4K start level 1 cannot resolve 44-bit (14 bits > 13)
    (_vtcr40(t0sz=64 - 36, sl0=2), 1),   # 4K start level 0 with 36 bits: fewer than 1 bit
    (_vtcr40(t0sz=64 - 35, sl0=0), 1),   # 4K start level 2 with 35 bits: 14 bits > 13
    (_vtcr40(t0sz=64 - 40, sl0=0, tg=2), 1),  # 16K level 3 with 40 bits
    (_vtcr40(t0sz=64 - 41, sl0=1, tg=2), 1),  # 16K start level 2 with 41 bits: 16 > 15
    (_vtcr40(t0sz=64 - 47, sl0=1, tg=1), 1),  # 64K start level 2 with 47 bits: 18 > 17
    (_vtcr40(t0sz=64 - 40, sl0=2, tg=1), 1),  # 64K start level 1 with 40 bits: < 1 bit
    (_vtcr40(tg=0b11), 1),                 # reserved granule
    (_vtcr40(ps=0b110), 1),                # 52-bit PA without LPA2/LPA support
    (_vtcr40(ps=0b111), 1),                # reserved
    (_vtcr40(sh=0b01), 1),                 # reserved shareability
    (_vtcr40(extra=1 << 21), 1),           # HA
    (_vtcr40(t0sz=24, sl0=1, tg=1, extra=1 << 32), 1),  # DS with 64K (RES0 there)
    (_vtcr40(), 300),                      # 16-bit VMID without VS
    (_vtcr40(t0sz=64 - 31, sl0=1), 1),     # 31-bit IPA (outside 32..48)
    (_vtcr40(t0sz=64 - 49, sl0=2), 1),     # 49-bit IPA without LPA2
], ids=["4k-sl1-44", "4k-sl0-36", "4k-sl2-35", "16k-l3-40", "16k-l2-41", "64k-l2-47",
        "64k-l1-40", "tg0-11", "ps-110", "ps-111", "sh0-01", "ha", "ds-64k", "vmid300-novs",
        "ipa31", "ipa49"])
def test_from_vtcr_rejects(vtcr, vmid):
    with pytest.raises(s2pt.ConfigError) as info:
        s2pt.Stage2Config.from_vtcr(vtcr, vmid=vmid)
    assert isinstance(info.value, ValueError)


def test_from_vtcr_vmid300_with_vs():
    cfg = s2pt.Stage2Config.from_vtcr(_vtcr40(vs=1), vmid=300)
    assert cfg.vmid == 300 and cfg.vtcr == _vtcr40(vs=1)


@pytest.mark.parametrize("kwargs", [dict(ipa_bits=-1), dict(vmid=-1), dict(vmid=2**32 + 1),
                                    dict(pa_bits=2**40), dict(granule=-4096)],
                         ids=["ipa-neg", "vmid-neg", "vmid-2**32+1", "pa-huge", "granule-neg"])
def test_out_of_range_config_ints(kwargs):
    with pytest.raises(s2pt.S2ptError) as info:
        s2pt.Stage2Config(**kwargs)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("kwargs", [dict(ipa_bits=40.5), dict(vmid=1.5)], ids=["ipa", "vmid"])
def test_non_integer_config_rejected(kwargs):
    with pytest.raises((TypeError, ValueError)):
        s2pt.Stage2Config(**kwargs)
