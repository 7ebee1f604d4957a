/*
 * Geometry and VTCR_EL2: every expected value is derived here from the architecture's rules
 * (level shifts, concatenation, field layout), independently of the core.
 */
#include <string.h>

#include "s2pt_testlib.h"

static const uint32_t granules[] = {4096, 16384, 65536};
static const uint32_t pa_list[] = {32, 36, 40, 42, 44, 48};

static uint32_t log2u(uint32_t x)
{
	uint32_t n = 0;

	while ((1u << n) < x)
		n++;
	return n;
}

/* VTCR_EL2.PS / PARange encoding */
static uint64_t ps_enc(uint32_t pa_bits)
{
	switch (pa_bits) {
	case 32: return 0;
	case 36: return 1;
	case 40: return 2;
	case 42: return 3;
	case 44: return 4;
	default: return 5; /* 48 */
	}
}

/* TG0: 4K = 0b00, 64K = 0b01, 16K = 0b10 */
static uint64_t tg0_enc(uint32_t granule)
{
	return granule == 4096 ? 0 : granule == 65536 ? 1 : 2;
}

/* SL0 from the start level: 4K counts down from 2, 16K and 64K from 3. */
static uint64_t sl0_enc(uint32_t granule, int start)
{
	return (uint64_t)((granule == 4096 ? 2 : 3) - start);
}

static uint64_t compose_vtcr(uint32_t ipa, uint32_t granule, uint32_t pa, int start, uint32_t vmid)
{
	uint64_t v = 0;

	v |= (uint64_t)(64 - ipa) << 0;         /* T0SZ 5:0 */
	v |= sl0_enc(granule, start) << 6;      /* SL0 7:6 */
	v |= 1ull << 8;                         /* IRGN0 9:8 = WBWA */
	v |= 1ull << 10;                        /* ORGN0 11:10 = WBWA */
	v |= 3ull << 12;                        /* SH0 13:12 = inner shareable */
	v |= tg0_enc(granule) << 14;            /* TG0 15:14 */
	v |= ps_enc(pa) << 16;                  /* PS 18:16 */
	if (vmid > 255)
		v |= 1ull << 19;                /* VS */
	v |= 1ull << 31;                        /* RES1 */
	return v;
}

struct geo {
	uint32_t stride, levels, root_tables;
	int start;
	uint64_t root_entries;
	int min_block;
};

static struct geo expect_geo(uint32_t ipa, uint32_t granule)
{
	struct geo e;
	uint32_t g = log2u(granule);
	uint32_t bits;

	e.stride = g - 3;
	e.levels = (ipa - 8) / e.stride;
	if (e.levels < 2)
		e.levels = 2;
	e.start = 4 - (int)e.levels;
	bits = ipa - a_shift(g, e.start);
	e.root_entries = 1ull << bits;
	e.root_tables = bits > e.stride ? 1u << (bits - e.stride) : 1u;
	/* Blocks: 4K at levels 1 and 2, 16K/64K at level 2 only (no 52-bit). */
	e.min_block = granule == 4096 ? 1 : 2;
	if (e.min_block < e.start)
		e.min_block = e.start;
	return e;
}

static void check_cfg(const struct s2pt_config *c, uint32_t ipa, uint32_t granule, uint32_t pa,
		      uint32_t vmid)
{
	struct geo e = expect_geo(ipa, granule);
	uint32_t bits = ipa - a_shift(log2u(granule), e.start);

	/* The start-level table resolves 1..stride+4 bits (at most 16 concatenated tables). */
	CHECK(bits >= 1 && bits <= e.stride + 4);
	CHECK(e.root_tables >= 1 && e.root_tables <= 16);
	CHECK_EQ(c->ipa_bits, ipa);
	CHECK_EQ(c->pa_bits, pa);
	CHECK_EQ(c->granule_shift, log2u(granule));
	CHECK_EQ(c->stride, e.stride);
	CHECK_EQ(c->levels, e.levels);
	CHECK_EQ(c->start_level, e.start);
	CHECK_EQ(c->root_tables, e.root_tables);
	CHECK_EQ(c->root_entries, e.root_entries);
	CHECK_EQ(c->min_block_level, e.min_block);
	CHECK_EQ(c->t0sz, 64 - ipa);
	CHECK_EQ(c->sl0, sl0_enc(granule, e.start));
	CHECK_EQ(c->vmid, vmid);
	CHECK_EQ(c->vtcr, compose_vtcr(ipa, granule, pa, e.start, vmid));
}

TEST(config_geometry_every_granule_and_ipa)
{
	static const uint32_t vmids[] = {0, 1, 255, 256, 65535};

	for (unsigned gi = 0; gi < 3; gi++) {
		for (uint32_t ipa = 32; ipa <= 48; ipa++) {
			for (unsigned pi = 0; pi < 6; pi++) {
				uint32_t pa = pa_list[pi];

				if (pa < ipa)
					continue;
				for (unsigned vi = 0; vi < 5; vi++) {
					struct s2pt_config c;
					int r = s2pt_config_init(&c, ipa, granules[gi], pa, vmids[vi], 0);

					CHECK_MSG(r == 0, "config %u/%u/%u/%u -> %d", granules[gi], ipa, pa,
						  vmids[vi], r);
					if (r == 0)
						check_cfg(&c, ipa, granules[gi], pa, vmids[vi]);
				}
			}
		}
	}
}

TEST(config_worked_examples)
{
	struct s2pt_config c;

	/* 4K / 40: 3 levels from level 1, 1024 root entries = 2 concatenated tables. */
	REQUIRE_EQ(s2pt_config_init(&c, 40, 4096, 48, 1, 0), 0);
	CHECK_EQ(c.levels, 3);
	CHECK_EQ(c.start_level, 1);
	CHECK_EQ(c.root_tables, 2);
	CHECK_EQ(c.root_entries, 1024);
	CHECK_EQ(c.t0sz, 24);
	CHECK_EQ(c.sl0, 1);
	CHECK_EQ(c.vtcr, 0x80053558ull);

	/* 4K / 32: 2 levels from level 2, 11 bits = 4 tables, SL0 0. */
	REQUIRE_EQ(s2pt_config_init(&c, 32, 4096, 48, 1, 0), 0);
	CHECK_EQ(c.levels, 2);
	CHECK_EQ(c.start_level, 2);
	CHECK_EQ(c.root_tables, 4);
	CHECK_EQ(c.sl0, 0);
	CHECK_EQ(c.vtcr, 0x80053520ull);

	/* 4K / 44: 4 levels from level 0, 32 entries in one table, SL0 2. */
	REQUIRE_EQ(s2pt_config_init(&c, 44, 4096, 48, 1, 0), 0);
	CHECK_EQ(c.levels, 4);
	CHECK_EQ(c.start_level, 0);
	CHECK_EQ(c.root_tables, 1);
	CHECK_EQ(c.root_entries, 32);
	CHECK_EQ(c.sl0, 2);

	/* 16K / 40: start level 2, 15 bits = 16 tables, TG0 0b10. */
	REQUIRE_EQ(s2pt_config_init(&c, 40, 16384, 48, 1, 0), 0);
	CHECK_EQ(c.levels, 2);
	CHECK_EQ(c.start_level, 2);
	CHECK_EQ(c.root_tables, 16);
	CHECK_EQ(c.sl0, 1);
	CHECK_EQ(c.vtcr, 0x8005B558ull);

	/* 16K / 41: 3 levels from level 1. */
	REQUIRE_EQ(s2pt_config_init(&c, 41, 16384, 48, 1, 0), 0);
	CHECK_EQ(c.start_level, 1);
	CHECK_EQ(c.root_tables, 1);
	CHECK_EQ(c.sl0, 2);

	/* 64K / 32: the formula gives 1 level, KVM forces 2; 3 bits at level 2 = 1 table. */
	REQUIRE_EQ(s2pt_config_init(&c, 32, 65536, 32, 1, 0), 0);
	CHECK_EQ(c.levels, 2);
	CHECK_EQ(c.start_level, 2);
	CHECK_EQ(c.root_tables, 1);
	CHECK_EQ(c.root_entries, 8);
	CHECK_EQ(c.vtcr, 0x80007560ull);

	/* 64K / 46: 17 bits at level 2 = 16 tables. */
	REQUIRE_EQ(s2pt_config_init(&c, 46, 65536, 48, 1, 0), 0);
	CHECK_EQ(c.start_level, 2);
	CHECK_EQ(c.root_tables, 16);
	CHECK_EQ(c.vtcr, 0x80057552ull);

	/* 64K / 47: 3 levels from level 1, SL0 2. */
	REQUIRE_EQ(s2pt_config_init(&c, 47, 65536, 48, 1, 0), 0);
	CHECK_EQ(c.levels, 3);
	CHECK_EQ(c.start_level, 1);
	CHECK_EQ(c.root_tables, 1);
	CHECK_EQ(c.vtcr, 0x80057591ull);

	/* VMID 256 needs 16-bit VMIDs: VS (bit 19). VMID 255 does not. */
	REQUIRE_EQ(s2pt_config_init(&c, 40, 4096, 48, 256, 0), 0);
	CHECK_EQ(c.vtcr, 0x800D3558ull);
	REQUIRE_EQ(s2pt_config_init(&c, 40, 4096, 48, 255, 0), 0);
	CHECK_EQ(c.vtcr, 0x80053558ull);
}

TEST(config_ps_encodings)
{
	static const uint64_t ps[] = {0, 1, 2, 3, 4, 5};

	for (unsigned i = 0; i < 6; i++) {
		struct s2pt_config c;

		REQUIRE_EQ(s2pt_config_init(&c, 32, 4096, pa_list[i], 1, 0), 0);
		CHECK_EQ((c.vtcr >> 16) & 7, ps[i]);
		CHECK_EQ(c.pa_bits, pa_list[i]);
	}
}

TEST(config_level_shift)
{
	/* Bytes mapped by one entry per level (Arm ARM; kernel-notes 1.1). */
	static const uint32_t exp[3][4] = {{39, 30, 21, 12}, {47, 36, 25, 14}, {55, 42, 29, 16}};

	for (unsigned gi = 0; gi < 3; gi++) {
		struct s2pt_config c;

		REQUIRE_EQ(s2pt_config_init(&c, 32, granules[gi], 48, 1, 0), 0);
		for (int l = 0; l < 4; l++)
			CHECK_EQ(s2pt_level_shift(&c, l), exp[gi][l]);
	}
}

TEST(config_invalid_rejected_and_cfg_untouched)
{
	struct {
		uint32_t ipa, granule, pa, vmid, flags;
	} bad[] = {
		{31, 4096, 48, 1, 0},     {49, 4096, 48, 1, 0},     {49, 65536, 48, 1, 0},
		{0, 4096, 48, 1, 0},      {40, 4096, 36, 1, 0},     {33, 4096, 32, 1, 0},
		{48, 16384, 44, 1, 0},    {40, 4096, 52, 1, 0},     {40, 4096, 33, 1, 0},
		{40, 4096, 0, 1, 0},      {40, 8192, 48, 1, 0},     {40, 0, 48, 1, 0},
		{40, 4095, 48, 1, 0},     {40, 32768, 48, 1, 0},    {40, 4096, 48, 1, 0x20},
		{40, 4096, 48, 65536, 0}, {40, 4096, 48, 0xffffffffu, 0},
		/* LPA2 is a 4K/16K format; 52-bit PA needs LPA2 or 64K; IPA <= PA; <= 52 bits */
		{40, 65536, 48, 1, S2PT_CONFIG_LPA2}, {49, 4096, 52, 1, 0},
		{48, 16384, 52, 1, S2PT_CONFIG_FWB},  {49, 16384, 48, 1, S2PT_CONFIG_LPA2},
		{53, 65536, 52, 1, 0},                {53, 4096, 52, 1, S2PT_CONFIG_LPA2},
		{49, 65536, 48, 1, 0},
	};

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct s2pt_config c, before;

		memset(&c, 0xa5, sizeof(c));
		before = c;
		CHECK_EQ(s2pt_config_init(&c, bad[i].ipa, bad[i].granule, bad[i].pa, bad[i].vmid,
					  bad[i].flags),
			 S2PT_ECONFIG);
		CHECK_MSG(memcmp(&c, &before, sizeof(c)) == 0, "case %u: cfg written on error", i);
	}
}

static void check_same_cfg(const struct s2pt_config *a, const struct s2pt_config *b)
{
	CHECK_EQ(a->ipa_bits, b->ipa_bits);
	CHECK_EQ(a->pa_bits, b->pa_bits);
	CHECK_EQ(a->granule_shift, b->granule_shift);
	CHECK_EQ(a->stride, b->stride);
	CHECK_EQ(a->levels, b->levels);
	CHECK_EQ(a->start_level, b->start_level);
	CHECK_EQ(a->root_tables, b->root_tables);
	CHECK_EQ(a->root_entries, b->root_entries);
	CHECK_EQ(a->min_block_level, b->min_block_level);
	CHECK_EQ(a->t0sz, b->t0sz);
	CHECK_EQ(a->sl0, b->sl0);
	CHECK_EQ(a->vmid, b->vmid);
	CHECK_EQ(a->vtcr, b->vtcr);
}

TEST(config_from_vtcr_round_trip)
{
	static const uint32_t vmids[] = {0, 7, 255, 256, 65535};

	for (unsigned gi = 0; gi < 3; gi++)
		for (uint32_t ipa = 32; ipa <= 48; ipa++)
			for (unsigned pi = 0; pi < 6; pi++)
				for (unsigned vi = 0; vi < 5; vi++) {
					struct s2pt_config a, b;

					if (pa_list[pi] < ipa)
						continue;
					REQUIRE_EQ(s2pt_config_init(&a, ipa, granules[gi], pa_list[pi],
								    vmids[vi], 0),
						   0);
					memset(&b, 0, sizeof(b));
					CHECK_EQ(s2pt_config_from_vtcr(&b, a.vtcr, vmids[vi], 0), 0);
					check_same_cfg(&a, &b);
				}
}

/* VTCR builder for the from_vtcr tests. */
static uint64_t vtcr_of(uint32_t t0sz, uint32_t sl0, uint32_t tg0, uint32_t ps)
{
	return (uint64_t)t0sz | (uint64_t)sl0 << 6 | 1ull << 8 | 1ull << 10 | 3ull << 12 |
	       (uint64_t)tg0 << 14 | (uint64_t)ps << 16 | 1ull << 31;
}

TEST(config_from_vtcr_non_kvm_valid)
{
	struct {
		uint32_t t0sz, sl0, tg0, ps;
		int start;
		uint32_t levels, root_tables, granule_shift;
		uint64_t root_entries;
	} ok[] = {
		/* 4K, IPA 40 starting at level 0 (KVM would start at 1): 1 bit = 2 entries. */
		{24, 2, 0, 5, 0, 4, 1, 12, 2},
		/* 4K, IPA 44 at level 0 with PS 44 bits (level 0 needs PAMax >= 44). */
		{20, 2, 0, 4, 0, 4, 1, 12, 32},
		/* 4K, IPA 34 from level 1: 4 bits at level 1. */
		{30, 1, 0, 5, 1, 3, 1, 12, 16},
		/* 4K, IPA 32 from level 1: 2 bits. */
		{32, 1, 0, 5, 1, 3, 1, 12, 4},
		/* 4K, IPA 43 from level 1: 13 bits = 16 concatenated tables. */
		{21, 1, 0, 5, 1, 3, 16, 12, 8192},
		/* 16K, IPA 40 from level 1 (KVM: level 2), PS 42. */
		{24, 2, 2, 3, 1, 3, 1, 14, 16},
		/* 64K, IPA 32 from level 3: one level of 8 concatenated tables. */
		{32, 0, 1, 5, 3, 1, 8, 16, 65536},
		/* 64K, IPA 33 from level 3: 16 tables. */
		{31, 0, 1, 5, 3, 1, 16, 16, 131072},
		/* 64K, IPA 44 from level 1 with PS 44. */
		{20, 2, 1, 4, 1, 3, 1, 16, 4},
	};

	for (unsigned i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct s2pt_config c;
		uint64_t v = vtcr_of(ok[i].t0sz, ok[i].sl0, ok[i].tg0, ok[i].ps);
		int r = s2pt_config_from_vtcr(&c, v, 1, 0);

		CHECK_MSG(r == 0, "case %u: vtcr %#llx rejected (%d)", i, (unsigned long long)v, r);
		if (r)
			continue;
		CHECK_EQ(c.ipa_bits, 64 - ok[i].t0sz);
		CHECK_EQ(c.granule_shift, ok[i].granule_shift);
		CHECK_EQ(c.start_level, ok[i].start);
		CHECK_EQ(c.levels, ok[i].levels);
		CHECK_EQ(c.root_tables, ok[i].root_tables);
		CHECK_EQ(c.root_entries, ok[i].root_entries);
		CHECK_EQ(c.sl0, ok[i].sl0);
		CHECK_EQ(c.t0sz, ok[i].t0sz);
		CHECK_EQ(c.vtcr, v);
	}
}

TEST(config_from_vtcr_attributes_and_vs)
{
	struct s2pt_config c;
	uint64_t base = vtcr_of(24, 1, 0, 5);
	/* Other walk cacheability / shareability encodings are valid. */
	uint64_t nc = base & ~(0xfull << 8 | 3ull << 12); /* IRGN0 = ORGN0 = NC, SH0 = non-shareable */
	uint64_t outer = (base & ~(3ull << 12)) | 2ull << 12;

	CHECK_EQ(s2pt_config_from_vtcr(&c, nc, 1, 0), 0);
	CHECK_EQ(c.vtcr, nc);
	CHECK_EQ(s2pt_config_from_vtcr(&c, outer, 1, 0), 0);
	/* VS with a small VMID is allowed; VS is needed for VMID 300. */
	CHECK_EQ(s2pt_config_from_vtcr(&c, base | 1ull << 19, 5, 0), 0);
	CHECK_EQ(c.vmid, 5);
	CHECK_EQ(s2pt_config_from_vtcr(&c, base | 1ull << 19, 300, 0), 0);
	CHECK_EQ(c.vmid, 300);
	/* RES1 bit 31 absent in the input: accepted, and the result has it. */
	CHECK_EQ(s2pt_config_from_vtcr(&c, base & ~(1ull << 31), 1, 0), 0);
	CHECK_EQ(c.vtcr & (1ull << 31), 1ull << 31);
}

TEST(config_from_vtcr_inconsistent_rejected)
{
	uint64_t bad[] = {
		/* 4K IPA 40 with SL0 0 (start 2 resolves 22..34 bits) */
		vtcr_of(24, 0, 0, 5),
		/* 4K IPA 44 with SL0 1 (start 1: 31..43) */
		vtcr_of(20, 1, 0, 5),
		/* 4K IPA 35 with SL0 0 */
		vtcr_of(29, 0, 0, 5),
		/* 4K IPA 39 at level 0 (40..52) */
		vtcr_of(25, 2, 0, 5),
		/* 4K SL0 3 (needs FEAT_TTST) */
		vtcr_of(40, 3, 0, 5),
		/* 16K IPA 41 from level 2 (26..40) */
		vtcr_of(23, 1, 2, 5),
		/* 16K IPA 36 from level 1 (37..51) */
		vtcr_of(28, 2, 2, 5),
		/* 16K SL0 0 = level 3 resolves 15..29 bits: IPA 32 too big */
		vtcr_of(32, 0, 2, 5),
		/* 16K SL0 3 = level 0 needs DS */
		vtcr_of(16, 3, 2, 5),
		/* 64K IPA 47 from level 2 (30..46) */
		vtcr_of(17, 1, 1, 5),
		/* 64K IPA 34 from level 3 (17..33) */
		vtcr_of(30, 0, 1, 5),
		/* 64K IPA 42 from level 1 (43..59) */
		vtcr_of(22, 2, 1, 5),
		/* 64K SL0 3 reserved */
		vtcr_of(20, 3, 1, 5),
		/* TG0 = 0b11 reserved */
		vtcr_of(24, 1, 3, 5),
		/* PS 0b110 (52 bits) for 4K / 16K without DS, and 0b111 (reserved) */
		vtcr_of(24, 1, 0, 6),
		vtcr_of(24, 2, 2, 6),
		vtcr_of(24, 1, 0, 7),
		/* DS with 64K (RES0 there); 16K level 0 with DS resolves 48..62 bits: IPA 47 */
		vtcr_of(22, 1, 1, 5) | 1ull << 32,
		vtcr_of(17, 3, 2, 5) | 1ull << 32,
		/* IPA 49 with DS but PS 48: larger than the PA size */
		vtcr_of(15, 2, 0, 5) | 1ull << 32,
		/* SH0 = 0b01 reserved */
		(vtcr_of(24, 1, 0, 5) & ~(3ull << 12)) | 1ull << 12,
		/* HA, HD, SL2 (with and without DS), NSW set */
		vtcr_of(24, 1, 0, 5) | 1ull << 21,
		vtcr_of(24, 1, 0, 5) | 1ull << 22,
		vtcr_of(24, 1, 0, 5) | 1ull << 33,
		vtcr_of(12, 0, 0, 6) | 3ull << 32,
		vtcr_of(24, 1, 0, 5) | 1ull << 29,
		/* T0SZ 33 (IPA 31) and 15 (IPA 49), even where the level window would allow them */
		vtcr_of(33, 1, 0, 5),
		vtcr_of(15, 2, 0, 5),
		/* T0SZ 0 */
		vtcr_of(0, 2, 0, 5),
		/* 4K level 0 needs PAMax >= 44 */
		vtcr_of(24, 2, 0, 3),
		/* 16K level 1 needs PAMax >= 42 */
		vtcr_of(24, 2, 2, 2),
	};

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct s2pt_config c;

		memset(&c, 0, sizeof(c));
		CHECK_MSG(s2pt_config_from_vtcr(&c, bad[i], 1, 0) == S2PT_ECONFIG,
			  "case %u: vtcr %#llx accepted", i, (unsigned long long)bad[i]);
	}
	{
		struct s2pt_config c;

		/* VMID 300 without VS, and a VMID that does not fit 16 bits. */
		CHECK_EQ(s2pt_config_from_vtcr(&c, vtcr_of(24, 1, 0, 5), 300, 0), S2PT_ECONFIG);
		CHECK_EQ(s2pt_config_from_vtcr(&c, vtcr_of(24, 1, 0, 5) | 1ull << 19, 65536, 0),
			 S2PT_ECONFIG);
	}
}

TEST(config_strerror)
{
	for (int e = 0; e > S2PT_E__COUNT; e--) {
		const char *s = s2pt_strerror(e);

		CHECK(s != NULL && s[0] != '\0');
		for (int f = 0; f > e; f--)
			CHECK_MSG(strcmp(s, s2pt_strerror(f)) != 0, "codes %d and %d share a message", e, f);
	}
	CHECK(s2pt_strerror(1) != NULL);
	CHECK(s2pt_strerror(-1000) != NULL);
}
