/*
 * The two-dimensional walk: the reads in hardware order (each stage-1 descriptor after the
 * stage-2 walk of its IPA, then the stage-2 walk of the output), checked against independent
 * walks of both trees; faults with their stage, level, FSC and S1PTW; combined permissions
 * and memory types by the Arm ARM's rules, with and without FWB.
 */
#include <string.h>

#include "s2pt_testlib.h"

#define R S2PT_PROT_R
#define W S2PT_PROT_W
#define PX S2PT_PROT_PX
#define UX S2PT_PROT_UX
#define USER S2PT_PROT_USER
#define NORMAL S2PT_MEMATTR_NORMAL

/* Stage-1 tables live at this IPA; stage 2 maps them to S1_POOL_PA. */
#define S1_POOL_IPA 0x40000000ull
#define S1_POOL_PA 0x80000000ull
#define S1_POOL_PAGES 16u
#define DATA_IPA 0x50000000ull
#define DATA_PA 0xc0000000ull
/* Below 2^41: inside every VA size used here, with a non-zero index at each level. */
#define VA 0x000001f012345000ull

/* MAIR_EL1: Attr0 Normal WB, Attr1 Device-nGnRE, Attr2 Normal NC, Attr3 Normal WT,
 * Attr4 Device-nGnRnE, Attr5 outer WB / inner NC. */
#define MAIR_VALUE (0xffull | 0x04ull << 8 | 0x44ull << 16 | 0xaaull << 24 | 0x00ull << 32 | \
		    0xf4ull << 40)

struct two {
	struct fx s2, s1;
	struct s2pt_regime rg; /* s1 at TTBR0, MAIR_VALUE */
};

/* Stage 2 (@ipa_bits, 4K, its own pool at PA 4 GiB) and stage 1 (@va_bits, @s1_granule)
 * with its pool mapped by stage 2; VA -> DATA_IPA -> DATA_PA, one stage-1 page. */
static void two_init(struct two *t, uint32_t ipa_bits, uint32_t va_bits, uint32_t s1_granule,
		     uint32_t s2_flags)
{
	const uint64_t s1_bytes = (uint64_t)S1_POOL_PAGES * s1_granule;

	REQUIRE_EQ(fx_init_flags(&t->s2, ipa_bits, 4096, 48, 64, 0x100000000ull, s2_flags), 0);
	REQUIRE_EQ(fx_init_s1(&t->s1, va_bits, s1_granule, 48, S1_POOL_PAGES, S1_POOL_IPA, 9, 0),
		   0);
	t->rg = (struct s2pt_regime){.ttbr0 = &t->s1.pt, .mair = MAIR_VALUE};
	REQUIRE_EQ(s2pt_map(&t->s2.pt, S1_POOL_IPA, S1_POOL_PA, s1_bytes, R | W, NORMAL,
			    S2PT_MAP_NO_BLOCKS),
		   0);
	REQUIRE_EQ(s2pt_map(&t->s1.pt, VA & ~(uint64_t)(s1_granule - 1), DATA_IPA, s1_granule,
			    R | W | USER, 0, 0),
		   0);
	/* Pages, so that the output's stage-2 walk goes down to level 3 too. */
	REQUIRE_EQ(s2pt_map(&t->s2.pt, DATA_IPA, DATA_PA, MiB(2), R | W, NORMAL,
			    S2PT_MAP_NO_BLOCKS),
		   0);
}

static void two_fini(struct two *t)
{
	fx_fini(&t->s1);
	fx_fini(&t->s2);
}

/* Check steps[*k..] against an independent stage-2 walk of @ipa. */
static void expect_s2_walk(const struct two *t, const struct s2pt_nested_step *steps,
			   uint32_t *k, uint64_t ipa)
{
	struct sw_step sw[4];
	int leaf;
	int n = sw_walk(&t->s2.pt, ipa, sw, &leaf);

	for (int i = 0; i < n; i++, (*k)++) {
		CHECK_EQ(steps[*k].stage, 2u);
		CHECK_EQ(steps[*k].level, sw[i].level);
		CHECK_EQ(steps[*k].ipa, ipa);
		CHECK_EQ(steps[*k].desc_pa, sw[i].table_pa + sw[i].index * 8);
		CHECK_EQ(steps[*k].desc, sw[i].desc);
	}
}

static void check_full_walk(uint32_t ipa_bits, uint32_t va_bits, uint32_t s1_granule,
			    uint32_t s1_levels, uint32_t s2_levels)
{
	struct two t;
	struct s2pt_translation2 out;
	struct s2pt_fault2 f;
	struct s2pt_nested_step steps[S2PT_MAX_NESTED_STEPS];
	struct sw_step s1w[4];
	uint32_t n = 0, k = 0;
	int leaf;

	two_init(&t, ipa_bits, va_bits, s1_granule, 0);
	REQUIRE_EQ(t.s1.cfg.levels, s1_levels);
	REQUIRE_EQ(t.s2.cfg.levels, s2_levels);
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA + 0x678,
				   S2PT_ACCESS_READ, &out, &f, steps, &n),
		   0);
	/* Each stage-1 level costs a stage-2 walk plus its own read; the output one more walk. */
	CHECK_EQ(n, s1_levels * (s2_levels + 1) + s2_levels);
	REQUIRE_EQ(sw_walk(&t.s1.pt, VA, s1w, &leaf), (int)s1_levels);
	for (uint32_t l = 0; l < s1_levels; l++) {
		uint64_t desc_ipa = s1w[l].table_pa + s1w[l].index * 8;

		expect_s2_walk(&t, steps, &k, desc_ipa);
		CHECK_EQ(steps[k].stage, 1u);
		CHECK_EQ(steps[k].level, s1w[l].level);
		CHECK_EQ(steps[k].ipa, desc_ipa);
		CHECK_EQ(steps[k].desc_pa, S1_POOL_PA + (desc_ipa - S1_POOL_IPA));
		CHECK_EQ(steps[k].desc, s1w[l].desc);
		k++;
	}
	expect_s2_walk(&t, steps, &k, DATA_IPA + ((VA + 0x678) & (s1_granule - 1)));
	CHECK_EQ(k, n);
	CHECK_EQ(out.ipa, DATA_IPA + ((VA + 0x678) & (s1_granule - 1)));
	CHECK_EQ(out.pa, DATA_PA + ((VA + 0x678) & (s1_granule - 1)));
	CHECK_EQ(out.s1.level, 3);
	CHECK_EQ(out.s2.level, 3);
	CHECK_EQ(out.s2.size, 4096ull);
	/* Without steps the result is the same. */
	{
		struct s2pt_translation2 plain;

		REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA + 0x678,
					   S2PT_ACCESS_READ, &plain, &f, NULL, NULL),
			   0);
		CHECK_EQ(plain.pa, out.pa);
		CHECK_EQ(plain.s1.pte, out.s1.pte);
		CHECK_EQ(plain.s2.pte, out.s2.pte);
	}
	two_fini(&t);
}

TEST(nested_walk_4_plus_4_levels_reads_24_descriptors)
{
	check_full_walk(48, 48, 4096, 4, 4);
}

TEST(nested_walk_2_plus_3_levels)
{
	/* 64K stage 1 with a 42-bit VA: two levels; 4K stage 2 with a 40-bit IPA: three. */
	check_full_walk(40, 42, 65536, 2, 3);
}

TEST(nested_walk_3_plus_3_with_16k_stage1)
{
	check_full_walk(40, 47, 16384, 3, 3);
}

/* The stage-2 page that holds @t's stage-1 table at @level (4K stage-2 pages). */
static uint64_t s1_table_page(const struct two *t, int level)
{
	return sw_table(&t->s1.pt, VA, level) & ~0xfffull;
}

TEST(nested_s1ptw_faults_name_the_table_ipa)
{
	struct two t;
	struct s2pt_translation2 out;
	struct s2pt_fault2 f;
	struct s2pt_nested_step steps[S2PT_MAX_NESTED_STEPS];
	struct sw_step s1w[4];
	uint32_t n;
	int leaf;
	uint64_t page, desc_ipa;

	two_init(&t, 48, 48, 4096, 0);
	REQUIRE_EQ(sw_walk(&t.s1.pt, VA, s1w, &leaf), 4);
	page = s1_table_page(&t, 2);
	desc_ipa = s1w[2].table_pa + s1w[2].index * 8;
	/* Translation: stage 2 no longer maps the level-2 table's page. */
	REQUIRE_EQ(s2pt_unmap(&t.s2.pt, page, 4096, NULL), 0);
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA, S2PT_ACCESS_READ, &out, &f,
				   steps, &n),
		   S2PT_EFAULT);
	CHECK_EQ(f.stage, 2u);
	CHECK_EQ(f.s1ptw, 1u);
	CHECK_EQ(f.kind, S2PT_FAULT_TRANSLATION);
	CHECK_EQ(f.level, 3);
	CHECK_EQ(f.fsc, 0x07u);
	CHECK_EQ(f.ipa, desc_ipa);
	CHECK_EQ(f.va, VA);
	/* Levels 0 and 1 read (4 + 1 each), then the four stage-2 reads that faulted. */
	CHECK_EQ(n, 14u);
	CHECK_EQ(steps[13].stage, 2u);
	CHECK_EQ(steps[13].desc, 0ull);
	/* Permission: mapped write-only at stage 2 (a table walk needs read). */
	REQUIRE_EQ(s2pt_map(&t.s2.pt, page, S1_POOL_PA + (page - S1_POOL_IPA), 4096, W, NORMAL, 0),
		   0);
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA, S2PT_ACCESS_WRITE, &out, &f,
				   NULL, NULL),
		   S2PT_EFAULT);
	CHECK_EQ(f.stage, 2u);
	CHECK_EQ(f.s1ptw, 1u);
	CHECK_EQ(f.kind, S2PT_FAULT_PERMISSION);
	CHECK_EQ(f.fsc, 0x0fu);
	CHECK_EQ(f.ipa, desc_ipa);
	/* Access flag: readable again but AF clear. */
	REQUIRE_EQ(s2pt_map(&t.s2.pt, page, S1_POOL_PA + (page - S1_POOL_IPA), 4096, R,
			    NORMAL, S2PT_MAP_NO_AF),
		   0);
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA, S2PT_ACCESS_READ, &out, &f,
				   NULL, NULL),
		   S2PT_EFAULT);
	CHECK_EQ(f.s1ptw, 1u);
	CHECK_EQ(f.fsc, 0x0bu);
	two_fini(&t);
}

TEST(nested_stage1_faults)
{
	struct two t;
	struct s2pt_translation2 out;
	struct s2pt_fault2 f;
	uint64_t *leafp;

	two_init(&t, 40, 48, 4096, 0);
	/* Nothing at this VA: the stage-1 walk stops at level 3 (the table exists). */
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA + 0x1000, S2PT_ACCESS_READ,
				   &out, &f, NULL, NULL),
		   S2PT_EFAULT);
	CHECK_EQ(f.stage, 1u);
	CHECK_EQ(f.s1ptw, 0u);
	CHECK_EQ(f.fsc, 0x07u);
	CHECK_EQ(f.ipa, 0ull);
	CHECK_EQ(f.va, VA + 0x1000);
	/* Above the 48-bit VA: level 0 translation fault (EPD1: no TTBR1 walk). */
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, 1ull << 48, S2PT_ACCESS_READ,
				   &out, &f, NULL, NULL),
		   S2PT_EFAULT);
	CHECK_EQ(f.fsc, 0x04u);
	/* EL1 executes nothing EL0 may write: stage-1 permission fault, before stage 2. */
	REQUIRE_EQ(s2pt_protect(&t.s1.pt, VA, 4096, R | W | USER | PX | UX), 0);
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA, S2PT_ACCESS_EXEC, &out, &f,
				   NULL, NULL),
		   S2PT_EFAULT);
	CHECK_EQ(f.stage, 1u);
	CHECK_EQ(f.fsc, 0x0fu);
	/* An output address beyond the 48-bit IPS: stage-1 address size fault at the leaf. */
	leafp = pa_ptr(&t.s1.pool, sw_table(&t.s1.pt, VA, 3) + ((VA >> 12) & 511) * 8);
	*leafp |= 1ull << 47;
	REQUIRE_EQ(s2pt_s1_config_init(&t.s1.pt.cfg, 48, 4096, 40, 9, 0), 0); /* IPS 40 */
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA, S2PT_ACCESS_READ, &out, &f,
				   NULL, NULL),
		   S2PT_EFAULT);
	CHECK_EQ(f.stage, 1u);
	CHECK_EQ(f.kind, S2PT_FAULT_ADDRESS_SIZE);
	CHECK_EQ(f.fsc, 0x03u);
	*leafp &= ~(1ull << 47);
	two_fini(&t);
}

TEST(nested_final_stage2_faults)
{
	struct two t;
	struct s2pt_translation2 out;
	struct s2pt_fault2 f;

	two_init(&t, 40, 48, 4096, 0);
	/* EL0 write: stage 1 allows it (USER, W); stage 2 made read-only. */
	REQUIRE_EQ(s2pt_protect(&t.s2.pt, DATA_IPA, MiB(2), R), 0);
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA + 8, S2PT_ACCESS_WRITE_EL0,
				   &out, &f, NULL, NULL),
		   S2PT_EFAULT);
	CHECK_EQ(f.stage, 2u);
	CHECK_EQ(f.s1ptw, 0u);
	CHECK_EQ(f.kind, S2PT_FAULT_PERMISSION);
	CHECK_EQ(f.level, 3);
	CHECK_EQ(f.ipa, DATA_IPA + 8);
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA + 8, S2PT_ACCESS_READ_EL0,
				   &out, &f, NULL, NULL),
		   0);
	CHECK_EQ(out.prot, R | USER); /* stage 1 R W USER, stage 2 R */
	/* EL0 fetch of a page stage 1 maps without UX: a stage-1 fault, stage 2 not asked. */
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA, S2PT_ACCESS_EXEC_EL0, &out,
				   &f, NULL, NULL),
		   S2PT_EFAULT);
	CHECK_EQ(f.stage, 1u);
	/* Stage 1 grants UX, stage 2 does not. */
	REQUIRE_EQ(s2pt_protect(&t.s1.pt, VA, 4096, R | USER | UX), 0);
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA, S2PT_ACCESS_EXEC_EL0, &out,
				   &f, NULL, NULL),
		   S2PT_EFAULT);
	CHECK_EQ(f.stage, 2u);
	CHECK_EQ(f.fsc, 0x0fu);
	/* No stage-2 mapping of the output: translation fault with the IPA. */
	REQUIRE_EQ(s2pt_unmap(&t.s2.pt, DATA_IPA, MiB(2), NULL), 0);
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA + 0x10, S2PT_ACCESS_READ,
				   &out, &f, NULL, NULL),
		   S2PT_EFAULT);
	CHECK_EQ(f.stage, 2u);
	CHECK_EQ(f.s1ptw, 0u);
	CHECK_EQ(f.kind, S2PT_FAULT_TRANSLATION);
	CHECK_EQ(f.ipa, DATA_IPA + 0x10);
	/* An output IPA beyond stage 2's 40-bit input: stage-2 translation fault, level 0. */
	REQUIRE_EQ(s2pt_map(&t.s1.pt, 0x1000, 1ull << 41, 4096, R, 0, 0), 0);
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, 0x1000, S2PT_ACCESS_READ, &out,
				   &f, NULL, NULL),
		   S2PT_EFAULT);
	CHECK_EQ(f.stage, 2u);
	CHECK_EQ(f.fsc, 0x04u);
	CHECK_EQ(f.ipa, 1ull << 41);
	two_fini(&t);
}

TEST(nested_combined_permissions)
{
	static const struct {
		uint32_t s1, s2, combined;
	} cases[] = {
		{R | W | PX | UX, R | W | PX | UX, R | W | PX | UX},
		{R | W | PX | UX, R | PX | UX, R | PX | UX},
		{R | W | USER | PX | UX, R | W | PX | UX, R | W | USER | UX}, /* implicit PXN */
		{R | USER | PX, R | W, R | USER},
		{R | W, W, W}, /* stage 2 write-only: EL1 may write, not read */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct two t;
		struct s2pt_translation2 out;
		struct s2pt_fault2 f;

		two_init(&t, 40, 48, 4096, S2PT_CONFIG_XNX);
		REQUIRE_EQ(s2pt_protect(&t.s1.pt, VA, 4096, cases[i].s1), 0);
		REQUIRE_EQ(s2pt_protect(&t.s2.pt, DATA_IPA, MiB(2), cases[i].s2), 0);
		/* EL1 write succeeds wherever the combination says W. */
		REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA,
					   (cases[i].combined & W) ? S2PT_ACCESS_WRITE
								   : S2PT_ACCESS_READ,
					   &out, &f, NULL, NULL),
			   (cases[i].combined & (R | W)) ? 0 : S2PT_EFAULT);
		CHECK_MSG(out.prot == cases[i].combined, "case %zu: %#x", i, out.prot);
		two_fini(&t);
	}
}

TEST(nested_mair_attribute_decoding)
{
	CHECK_EQ(s2pt_s1_memattr(0xff), S2PT_MEMATTR_NORMAL);         /* WB RW-alloc */
	CHECK_EQ(s2pt_s1_memattr(0x44), S2PT_MEMATTR_NORMAL_NC);
	CHECK_EQ(s2pt_s1_memattr(0xbb), S2PT_MEMATTR_NORMAL_WT);      /* WT non-transient */
	CHECK_EQ(s2pt_s1_memattr(0x22), S2PT_MEMATTR_NORMAL_WT);      /* WT transient */
	CHECK_EQ(s2pt_s1_memattr(0x77), S2PT_MEMATTR_NORMAL);         /* WB transient */
	CHECK_EQ(s2pt_s1_memattr(0xf4), 0xdu);                        /* outer WB, inner NC */
	CHECK_EQ(s2pt_s1_memattr(0x00), S2PT_MEMATTR_DEVICE_nGnRnE);
	CHECK_EQ(s2pt_s1_memattr(0x04), S2PT_MEMATTR_DEVICE_nGnRE);
	CHECK_EQ(s2pt_s1_memattr(0x08), S2PT_MEMATTR_DEVICE_nGRE);
	CHECK_EQ(s2pt_s1_memattr(0x0c), S2PT_MEMATTR_DEVICE_GRE);
	CHECK(s2pt_s1_memattr(0x01) & S2PT_MEMATTR_RESERVED);        /* 0b0000ddxx, xx != 0 */
	CHECK(s2pt_s1_memattr(0x40) & S2PT_MEMATTR_RESERVED);        /* inner 0b0000 */
}

TEST(nested_memory_type_combination)
{
	struct s2pt_config plain, fwb;

	REQUIRE_EQ(s2pt_config_init(&plain, 40, 4096, 48, 1, 0), 0);
	REQUIRE_EQ(s2pt_config_init(&fwb, 40, 4096, 48, 1, S2PT_CONFIG_FWB), 0);
	/* Without FWB: Device wins, the more restrictive Device of two, the weaker Normal. */
	CHECK_EQ(s2pt_combine_memattr(&plain, S2PT_MEMATTR_NORMAL, 0xf), S2PT_MEMATTR_NORMAL);
	CHECK_EQ(s2pt_combine_memattr(&plain, S2PT_MEMATTR_DEVICE_nGnRE, 0xf),
		 S2PT_MEMATTR_DEVICE_nGnRE);
	CHECK_EQ(s2pt_combine_memattr(&plain, S2PT_MEMATTR_NORMAL, 0x2), S2PT_MEMATTR_DEVICE_nGRE);
	CHECK_EQ(s2pt_combine_memattr(&plain, S2PT_MEMATTR_DEVICE_GRE, 0x1),
		 S2PT_MEMATTR_DEVICE_nGnRE);
	CHECK_EQ(s2pt_combine_memattr(&plain, S2PT_MEMATTR_DEVICE_nGnRnE, 0x3),
		 S2PT_MEMATTR_DEVICE_nGnRnE);
	CHECK_EQ(s2pt_combine_memattr(&plain, S2PT_MEMATTR_NORMAL, 0xa), S2PT_MEMATTR_NORMAL_WT);
	CHECK_EQ(s2pt_combine_memattr(&plain, S2PT_MEMATTR_NORMAL_WT, 0x5),
		 S2PT_MEMATTR_NORMAL_NC);
	CHECK_EQ(s2pt_combine_memattr(&plain, 0xd, 0xe), 0xdu); /* outer WB; inner NC < WT */
	CHECK_EQ(s2pt_combine_memattr(&plain, 0xd, 0xb), 0x9u); /* outer WT, inner NC */
	/* With FWB: 0b0110 forces write-back, even over a stage-1 Device; 0b0111 is stage 1's;
	 * 0b0101 is NC unless stage 1 says Device; 0b00xx Device combines as without. */
	CHECK_EQ(s2pt_combine_memattr(&fwb, S2PT_MEMATTR_DEVICE_nGnRnE, 0x6), S2PT_MEMATTR_NORMAL);
	CHECK_EQ(s2pt_combine_memattr(&fwb, S2PT_MEMATTR_NORMAL_WT, 0x6), S2PT_MEMATTR_NORMAL);
	CHECK_EQ(s2pt_combine_memattr(&fwb, S2PT_MEMATTR_NORMAL_WT, 0x7), S2PT_MEMATTR_NORMAL_WT);
	CHECK_EQ(s2pt_combine_memattr(&fwb, S2PT_MEMATTR_DEVICE_GRE, 0x7), S2PT_MEMATTR_DEVICE_GRE);
	CHECK_EQ(s2pt_combine_memattr(&fwb, S2PT_MEMATTR_NORMAL, 0x5), S2PT_MEMATTR_NORMAL_NC);
	CHECK_EQ(s2pt_combine_memattr(&fwb, S2PT_MEMATTR_DEVICE_nGRE, 0x5),
		 S2PT_MEMATTR_DEVICE_nGRE);
	CHECK_EQ(s2pt_combine_memattr(&fwb, S2PT_MEMATTR_NORMAL, 0x1), S2PT_MEMATTR_DEVICE_nGnRE);
	CHECK(s2pt_combine_memattr(&fwb, S2PT_MEMATTR_NORMAL, 0x4) & S2PT_MEMATTR_RESERVED);
	CHECK(s2pt_combine_memattr(&plain, S2PT_MEMATTR_NORMAL, 0x4) & S2PT_MEMATTR_RESERVED);
}

/* A block ends the output's stage-2 walk early: 4 * 5 + 3 reads. */
TEST(nested_walk_stops_at_a_stage2_block)
{
	struct two t;
	struct s2pt_translation2 out;
	struct s2pt_fault2 f;
	struct s2pt_nested_step steps[S2PT_MAX_NESTED_STEPS];
	uint32_t n;

	two_init(&t, 48, 48, 4096, 0);
	REQUIRE_EQ(s2pt_map(&t.s2.pt, DATA_IPA, DATA_PA, MiB(2), R | W, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA, S2PT_ACCESS_READ, &out, &f,
				   steps, &n),
		   0);
	CHECK_EQ(n, 23u);
	CHECK_EQ(steps[22].stage, 2u);
	CHECK_EQ(steps[22].level, 2);
	CHECK_EQ(steps[22].desc & 3, 1ull); /* a block descriptor */
	CHECK_EQ(out.s2.size, MiB(2));
	two_fini(&t);
}

TEST(nested_walk_reports_the_combined_type)
{
	static const struct {
		uint32_t attr_index, s2_memattr, s2_flags, combined;
	} cases[] = {
		{0, NORMAL, 0, S2PT_MEMATTR_NORMAL},
		{1, NORMAL, 0, S2PT_MEMATTR_DEVICE_nGnRE},
		{2, NORMAL, 0, S2PT_MEMATTR_NORMAL_NC},
		{3, S2PT_MEMATTR_NORMAL_NC, 0, S2PT_MEMATTR_NORMAL_NC},
		{0, S2PT_MEMATTR_DEVICE_nGnRnE, 0, S2PT_MEMATTR_DEVICE_nGnRnE},
		{4, S2PT_MEMATTR_DEVICE_GRE, 0, S2PT_MEMATTR_DEVICE_nGnRnE},
		{1, NORMAL, S2PT_CONFIG_FWB, S2PT_MEMATTR_NORMAL},
		{3, S2PT_MEMATTR_STAGE1, S2PT_CONFIG_FWB, S2PT_MEMATTR_NORMAL_WT},
		{5, S2PT_MEMATTR_STAGE1, S2PT_CONFIG_FWB, 0xd},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct two t;
		struct s2pt_translation2 out;
		struct s2pt_fault2 f;

		two_init(&t, 40, 48, 4096, cases[i].s2_flags);
		REQUIRE_EQ(s2pt_map(&t.s1.pt, VA, DATA_IPA, 4096, R, cases[i].attr_index, 0), 0);
		REQUIRE_EQ(s2pt_map(&t.s2.pt, DATA_IPA, DATA_PA, MiB(2), R, cases[i].s2_memattr, 0),
			   0);
		REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA, S2PT_ACCESS_READ,
					   &out, &f, NULL, NULL),
			   0);
		CHECK_EQ(out.s1.memattr, cases[i].attr_index);
		CHECK_MSG(out.memattr == cases[i].combined, "case %zu: %#x", i, out.memattr);
		two_fini(&t);
	}
}

TEST(nested_walk_refuses_bad_arguments)
{
	struct two t;
	struct s2pt_translation2 out;
	struct s2pt_fault2 f;
	struct s2pt_nested_step steps[S2PT_MAX_NESTED_STEPS];
	uint32_t n;

	two_init(&t, 40, 48, 4096, 0);
	CHECK_EQ(s2pt_translate2(&t.s1.pt, &t.rg, VA, 0, &out, &f, NULL, NULL), S2PT_EINVAL);
	CHECK_EQ(s2pt_translate2(&t.s2.pt, &(struct s2pt_regime){.ttbr0 = &t.s2.pt}, VA, 0, &out, &f, NULL, NULL), S2PT_EINVAL);
	CHECK_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA, 6, &out, &f, NULL, NULL), S2PT_EINVAL);
	CHECK_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA, 0, &out, &f, steps, NULL), S2PT_EINVAL);
	s2pt_pgtable_destroy(&t.s1.pt);
	t.s1.have_pt = 0;
	CHECK_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA, 0, &out, &f, steps, &n),
		 S2PT_EDESTROYED);
	two_fini(&t);
}

/* The batch gives, VA by VA, what the single walk gives: hits, every fault kind and stage,
 * S1PTW, repeated VAs (its caches), and the uncached read count of each walk. */
TEST(nested_batch_matches_the_single_walk)
{
	struct two t;
	struct s2pt_walk_step path[4];
	uint32_t np, stage1_levels, stage2_levels;
	const uint64_t far_va = 0x00007f0000000000ull; /* its own stage-1 tables below level 0 */
	uint64_t vas[40];
	uint64_t pa[40], ipa[40];
	uint8_t fsc[40], stage[40], reads[40];
	size_t n = 0;
	int64_t faults, want_faults = 0;

	two_init(&t, 40, 48, 4096, 0);
	stage1_levels = t.s1.pt.cfg.levels;
	stage2_levels = t.s2.pt.cfg.levels;
	/* VA + 1..7 pages: ordinary; +8 read-only; +9 no AF; +10 an IPA stage 2 does not map;
	 * +11 beyond stage 2's 40 bits; a 2 MiB stage-1 block; far_va whose level-3 table
	 * page stage 2 does not map (S1PTW); an unmapped VA; a VA beyond 48 bits. */
	REQUIRE_EQ(s2pt_map(&t.s1.pt, VA + 0x1000, DATA_IPA + 0x1000, 7 * 0x1000, R | W, 0, 0), 0);
	REQUIRE_EQ(s2pt_map(&t.s1.pt, VA + 0x8000, DATA_IPA + 0x8000, 0x1000, R, 0, 0), 0);
	REQUIRE_EQ(s2pt_map(&t.s1.pt, VA + 0x9000, DATA_IPA + 0x9000, 0x1000, R | W, 0,
			    S2PT_MAP_NO_AF),
		   0);
	REQUIRE_EQ(s2pt_map(&t.s1.pt, VA + 0xa000, 0x70000000ull, 0x1000, R | W, 0, 0), 0);
	REQUIRE_EQ(s2pt_map(&t.s1.pt, VA + 0xb000, 1ull << 41, 0x1000, R | W, 0, 0), 0);
	REQUIRE_EQ(s2pt_map(&t.s1.pt, 0x40000000ull, DATA_IPA, MiB(2), R | W, 0, 0), 0);
	REQUIRE_EQ(s2pt_map(&t.s1.pt, far_va, DATA_IPA, 0x1000, R | W, 0, 0), 0);
	REQUIRE_EQ(s2pt_walk_path(&t.s1.pt, far_va, path, &np), 0);
	REQUIRE_EQ(np, 4u);
	REQUIRE_EQ(s2pt_unmap(&t.s2.pt, path[3].table_pa, 0x1000, NULL), 0);
	for (int i = 0; i < 12; i++)
		vas[n++] = VA + (uint64_t)i * 0x1000 + 0x18;
	vas[n++] = 0x40000000ull + 0x123456;
	vas[n++] = far_va + 8;
	vas[n++] = 0x3000;
	vas[n++] = 1ull << 48;
	for (int i = 0; i < 12; i++) /* again, in another order: the caches are warm now */
		vas[n++] = VA + (uint64_t)(11 - i) * 0x1000;
	vas[n++] = far_va;
	vas[n++] = VA + 0x4000;

	for (uint32_t access = 0; access <= S2PT_ACCESS_WRITE_EL0; access++) {
		want_faults = 0;
		memset(reads, 0xee, sizeof(reads));
		faults = s2pt_translate2_many(&t.s2.pt, &t.rg, vas, n, access, pa, ipa, fsc,
					      stage, reads);
		for (size_t i = 0; i < n; i++) {
			struct s2pt_nested_step steps[S2PT_MAX_NESTED_STEPS];
			struct s2pt_translation2 out;
			struct s2pt_fault2 f;
			uint32_t ns;
			int ret = s2pt_translate2(&t.s2.pt, &t.rg, vas[i], access, &out, &f,
						  steps, &ns);

			CHECK_MSG(reads[i] == ns, "access %u va %#llx: %u reads, single walk %u",
				  access, (unsigned long long)vas[i], reads[i], ns);
			if (ret == 0) {
				CHECK_EQ(stage[i], 0);
				CHECK_EQ(fsc[i], S2PT_FSC_NONE);
				CHECK_EQ(pa[i], out.pa);
				CHECK_EQ(ipa[i], out.ipa);
				continue;
			}
			REQUIRE_EQ(ret, S2PT_EFAULT);
			want_faults++;
			CHECK_EQ(pa[i], 0);
			CHECK_EQ(stage[i], f.stage);
			CHECK_EQ(fsc[i], f.fsc | (f.s1ptw ? S2PT_FSC_S1PTW : 0));
			CHECK_EQ(ipa[i], f.stage == 2 ? f.ipa : 0);
		}
		CHECK_EQ(faults, want_faults);
	}
	/* Facts, not just agreement: a page walk reads 4 * (3 + 1) + 3 descriptors; S1PTW on
	 * far_va's level-3 table read (stage-2 level 3 translation fault, FSC 0x07). */
	faults = s2pt_translate2_many(&t.s2.pt, &t.rg, vas, n, S2PT_ACCESS_WRITE, pa, ipa, fsc,
				      stage, reads);
	CHECK_EQ(reads[1], stage1_levels * (stage2_levels + 1) + stage2_levels);
	CHECK_EQ(reads[1], 19);
	CHECK_EQ(pa[1], DATA_PA + 0x1018);
	CHECK_EQ(stage[8], 1);
	CHECK_EQ(fsc[8], 0x0f);                         /* read-only at stage 1: permission L3 */
	CHECK_EQ(stage[9], 1);
	CHECK_EQ(fsc[9], 0x0b);                         /* access flag L3 */
	CHECK_EQ(stage[10], 2);
	CHECK_EQ(fsc[10], 0x06);                        /* no stage-2 level-3 table there: L2 */
	CHECK_EQ(ipa[10], 0x70000018ull);
	CHECK_EQ(fsc[11], 0x04);                        /* beyond 40 bits: level 0 */
	CHECK_EQ(pa[12], DATA_PA + 0x123456);           /* the block: 3 * 4 + 3 reads */
	CHECK_EQ(reads[12], 15);
	CHECK_EQ(stage[13], 2);
	CHECK_EQ(fsc[13], S2PT_FSC_S1PTW | 0x07);
	CHECK_EQ(ipa[13], path[3].desc_pa);
	CHECK_EQ(reads[13], 3 * 4 + 3);                 /* three levels, then the faulting walk */
	CHECK_EQ(stage[15], 1);
	CHECK_EQ(fsc[15], 0x04);                        /* VA beyond 48 bits */
	CHECK_EQ(reads[15], 0);
	CHECK_EQ(faults, 7 + 5);                        /* the second pass repeats five */
	/* Nothing is remembered from one call to the next. */
	REQUIRE_EQ(s2pt_unmap(&t.s2.pt, DATA_IPA, MiB(2), NULL), 0);
	faults = s2pt_translate2_many(&t.s2.pt, &t.rg, vas, 1, S2PT_ACCESS_READ, pa, NULL, fsc,
				      stage, NULL);
	CHECK_EQ(faults, 1);
	CHECK_EQ(stage[0], 2);
	CHECK_EQ(s2pt_translate2_many(&t.s1.pt, &t.rg, vas, 1, 0, pa, NULL, fsc, stage, NULL),
		 S2PT_EINVAL);
	CHECK_EQ(s2pt_translate2_many(&t.s2.pt, &t.rg, vas, 1, 6, pa, NULL, fsc, stage, NULL),
		 S2PT_EINVAL);
	two_fini(&t);
}

/* TTBR1: the TCR_EL1 half it programs; VA[55] picks the table, the bits above the VA size
 * must all equal it (no TBI) and a half without a table faults (EPDx), each a stage-1
 * translation fault at level 0 with no read. */
TEST(nested_walk_through_ttbr1)
{
	static const struct {
		uint32_t granule, tg1;
	} tg[] = {{4096, 2}, {16384, 1}, {65536, 3}};
	const uint64_t hi_pool_ipa = S1_POOL_IPA + 0x100000ull;
	const uint64_t upper = ~0ull << 48; /* the first VA of a 48-bit upper half */
	struct two t;
	struct fx hi;
	struct s2pt_config cfg;
	struct s2pt_translation2 out;
	struct s2pt_fault2 f;
	struct s2pt_nested_step steps[S2PT_MAX_NESTED_STEPS];
	uint32_t ns;
	uint64_t vas[5], pa[5], ipa[5];
	uint8_t fsc[5], stage[5], reads[5];

	for (size_t i = 0; i < sizeof(tg) / sizeof(tg[0]); i++) {
		REQUIRE_EQ(s2pt_s1_config_init(&cfg, 39, tg[i].granule, 40, 1, S2PT_CONFIG_TTBR1),
			   0);
		CHECK_EQ(cfg.vtcr >> S2PT_TCR_T1SZ_SHIFT & 0x3f, 25u);
		CHECK_EQ(cfg.vtcr >> S2PT_TCR_TG1_SHIFT & 3, tg[i].tg1);
		CHECK_EQ(cfg.vtcr >> S2PT_TCR_IRGN1_SHIFT & 3, 1u);
		CHECK_EQ(cfg.vtcr >> S2PT_TCR_SH1_SHIFT & 3, 3u);
		CHECK_EQ(cfg.vtcr & S2PT_TCR_EPD0, S2PT_TCR_EPD0);
		CHECK_EQ(cfg.vtcr & S2PT_TCR_EPD1, 0);
		CHECK_EQ(cfg.vtcr & 0xffffull, (uint64_t)S2PT_TCR_EPD0); /* no TTBR0 fields */
		CHECK_EQ(cfg.vtcr >> S2PT_TCR_IPS_SHIFT & 7, 2u);       /* 40 bits */
	}

	two_init(&t, 40, 48, 4096, 0);
	REQUIRE_EQ(fx_init_s1(&hi, 48, 4096, 48, S1_POOL_PAGES, hi_pool_ipa, 9, S2PT_CONFIG_TTBR1),
		   0);
	REQUIRE_EQ(s2pt_map(&t.s2.pt, hi_pool_ipa, S1_POOL_PA + 0x100000ull,
			    S1_POOL_PAGES * 4096ull, R, NORMAL, S2PT_MAP_NO_BLOCKS),
		   0);
	/* The upper half's last page (VA 0xffff_ffff_ffff_f000) and one at its start. */
	REQUIRE_EQ(s2pt_map(&hi.pt, (1ull << 48) - 0x1000, DATA_IPA + 0x3000, 0x1000, R | W, 0, 0),
		   0);
	REQUIRE_EQ(s2pt_map(&hi.pt, 0, DATA_IPA + 0x5000, 0x1000, R, 0, 0), 0);
	t.rg.ttbr1 = &hi.pt;

	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, ~0ull - 0xff, S2PT_ACCESS_WRITE, &out, &f, steps,
				   &ns),
		   0);
	CHECK_EQ(out.ipa, DATA_IPA + 0x3f00);
	CHECK_EQ(out.pa, DATA_PA + 0x3f00);
	CHECK_EQ(ns, 4u * 4 + 3);
	CHECK_EQ(steps[3].stage, 1u);                    /* after a 3-level stage-2 walk */
	CHECK_EQ(steps[3].ipa, hi.pt.root_pa + 511 * 8); /* the root's last entry */
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, upper + 0x10, S2PT_ACCESS_READ, &out, &f, NULL,
				   NULL),
		   0);
	CHECK_EQ(out.pa, DATA_PA + 0x5010);
	/* TTBR0 still serves the lower half. */
	REQUIRE_EQ(s2pt_translate2(&t.s2.pt, &t.rg, VA, S2PT_ACCESS_READ, &out, &f, NULL, NULL), 0);
	CHECK_EQ(out.pa, DATA_PA);

	/* VA[55] = 1 but bits 63:48 not all ones; VA[55] = 0 with bits above 48 set. */
	for (int k = 0; k < 2; k++) {
		uint64_t bad = k ? 0xff00800000000000ull : 0x8080000000000000ull;

		CHECK_EQ(s2pt_translate2(&t.s2.pt, &t.rg, bad, S2PT_ACCESS_READ, &out, &f, steps,
					 &ns),
			 S2PT_EFAULT);
		CHECK_EQ(f.stage, 1u);
		CHECK_EQ(f.fsc, 0x04u);
		CHECK_EQ(f.va, bad);
		CHECK_EQ(ns, 0u);
	}
	/* The batch agrees, VA by VA, across both halves. */
	vas[0] = ~0ull - 0xff;
	vas[1] = VA + 0x10;
	vas[2] = upper + 0x20;
	vas[3] = 0x8080000000000000ull;
	vas[4] = upper + 0x1000; /* unmapped in the upper table */
	REQUIRE_EQ(s2pt_translate2_many(&t.s2.pt, &t.rg, vas, 5, S2PT_ACCESS_READ, pa, ipa, fsc,
					stage, reads),
		   2);
	CHECK_EQ(pa[0], DATA_PA + 0x3f00);
	CHECK_EQ(pa[1], DATA_PA + 0x10);
	CHECK_EQ(pa[2], DATA_PA + 0x5020);
	CHECK_EQ(stage[3], 1);
	CHECK_EQ(fsc[3], 0x04);
	CHECK_EQ(reads[3], 0);
	CHECK_EQ(stage[4], 1);
	CHECK_EQ(fsc[4], 0x07); /* level-3 entry of the start's table is empty */
	CHECK_EQ(reads[0], 19);

	/* EPD1: no upper table, so an upper VA faults at level 0. */
	t.rg.ttbr1 = NULL;
	CHECK_EQ(s2pt_translate2(&t.s2.pt, &t.rg, ~0ull - 0xff, S2PT_ACCESS_READ, &out, &f, NULL,
				 NULL),
		 S2PT_EFAULT);
	CHECK_EQ(f.fsc, 0x04u);
	/* A regime must put each table in its own half, and have one. */
	CHECK_EQ(s2pt_translate2(&t.s2.pt, &(struct s2pt_regime){.ttbr0 = &hi.pt}, VA,
				 S2PT_ACCESS_READ, &out, &f, NULL, NULL),
		 S2PT_EINVAL);
	CHECK_EQ(s2pt_translate2(&t.s2.pt, &(struct s2pt_regime){.ttbr1 = &t.s1.pt}, VA,
				 S2PT_ACCESS_READ, &out, &f, NULL, NULL),
		 S2PT_EINVAL);
	CHECK_EQ(s2pt_translate2(&t.s2.pt, &(struct s2pt_regime){0}, VA, S2PT_ACCESS_READ, &out,
				 &f, NULL, NULL),
		 S2PT_EINVAL);
	CHECK_EQ(s2pt_translate2_many(&t.s2.pt, &(struct s2pt_regime){0}, vas, 1, 0, pa, NULL, fsc,
				      stage, NULL),
		 S2PT_EINVAL);
	/* Halves one TCR_EL1 cannot hold together: another ASID (A1 = 0), another IPS. */
	{
		struct fx other;

		REQUIRE_EQ(fx_init_s1(&other, 48, 4096, 48, 4, hi_pool_ipa, 8, S2PT_CONFIG_TTBR1), 0);
		CHECK_EQ(s2pt_translate2(&t.s2.pt,
					 &(struct s2pt_regime){.ttbr0 = &t.s1.pt, .ttbr1 = &other.pt},
					 VA, S2PT_ACCESS_READ, &out, &f, NULL, NULL),
			 S2PT_EINVAL);
		fx_fini(&other);
		REQUIRE_EQ(fx_init_s1(&other, 48, 4096, 40, 4, hi_pool_ipa, 9, S2PT_CONFIG_TTBR1), 0);
		CHECK_EQ(s2pt_translate2(&t.s2.pt,
					 &(struct s2pt_regime){.ttbr0 = &t.s1.pt, .ttbr1 = &other.pt},
					 VA, S2PT_ACCESS_READ, &out, &f, NULL, NULL),
			 S2PT_EINVAL);
		fx_fini(&other);
	}
	fx_fini(&hi);
	two_fini(&t);
}

/* 4K with LPA2 and a 52-bit VA: five stage-1 levels from level -1 (a 16-entry root), and a
 * nested walk over a four-level stage 2 of 5 * (4 + 1) + 4 = 29 reads. */
TEST(nested_walk_of_a_five_level_stage1)
{
	struct fx s2, s1;
	struct s2pt_regime rg;
	struct s2pt_walk_step path[S2PT_MAX_WALK_STEPS];
	struct s2pt_nested_step steps[S2PT_MAX_NESTED_STEPS];
	struct s2pt_translation2 out;
	struct s2pt_translation t;
	struct s2pt_fault f1;
	struct s2pt_fault2 f;
	struct s2pt_stats st;
	const uint64_t va = 0x000f123456789000ull; /* above 2^51: root index 15 */
	uint64_t vas[2] = {va + 0x10, va - 0x1000}, pa[2];
	uint8_t fsc[2], stage[2], reads[2];
	uint32_t n;

	REQUIRE_EQ(fx_init_flags(&s2, 48, 4096, 48, 64, 0x100000000ull, 0), 0);
	REQUIRE_EQ(fx_init_s1(&s1, 52, 4096, 52, S1_POOL_PAGES, S1_POOL_IPA, 1, S2PT_CONFIG_LPA2),
		   0);
	CHECK_EQ(s1.pt.cfg.levels, 5u);
	CHECK_EQ(s1.pt.cfg.start_level, -1);
	CHECK_EQ(s1.pt.cfg.root_entries, 16u);
	CHECK_EQ(s1.pt.cfg.t0sz, 12u);
	CHECK_EQ(s1.pt.cfg.vtcr & S2PT_TCR_DS, S2PT_TCR_DS);
	REQUIRE_EQ(s2pt_map(&s2.pt, S1_POOL_IPA, S1_POOL_PA, S1_POOL_PAGES * 4096ull, R, NORMAL,
			    S2PT_MAP_NO_BLOCKS),
		   0);
	REQUIRE_EQ(s2pt_map(&s2.pt, DATA_IPA, DATA_PA, 0x1000, R | W, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&s1.pt, va, DATA_IPA, 0x1000, R | W, 0, 0), 0);
	CHECK_EQ(s1.pt.table_pages, 5u);
	REQUIRE_EQ(s2pt_walk_path(&s1.pt, va, path, &n), 0);
	CHECK_EQ(n, 5u);
	CHECK_EQ(path[0].level, -1);
	CHECK_EQ(path[0].index, 15u);
	CHECK_EQ(path[4].level, 3);
	REQUIRE_EQ(s2pt_translate(&s1.pt, va + 8, S2PT_ACCESS_READ, &t, &f1), 0);
	CHECK_EQ(t.pa, DATA_IPA + 8);
	REQUIRE_EQ(s2pt_stats(&s1.pt, &st), 0);
	CHECK_EQ(st.table_pages, 5u);
	CHECK_EQ(st.table_pages_by_level[0], 2u); /* the level -1 root and the level-0 table */
	CHECK_EQ(st.leaves_by_level[3], 1u);
	CHECK_EQ(s2pt_check(&s1.pt, NULL, 0), 0);

	rg = (struct s2pt_regime){.ttbr0 = &s1.pt, .mair = MAIR_VALUE};
	REQUIRE_EQ(s2pt_translate2(&s2.pt, &rg, va + 0x10, S2PT_ACCESS_WRITE, &out, &f, steps, &n),
		   0);
	CHECK_EQ(n, 29u);
	CHECK_EQ(out.pa, DATA_PA + 0x10);
	CHECK_EQ(steps[4].stage, 1u);
	CHECK_EQ(steps[4].level, -1);
	CHECK_EQ(steps[4].ipa, s1.pt.root_pa + 15 * 8);
	REQUIRE_EQ(s2pt_translate2_many(&s2.pt, &rg, vas, 2, S2PT_ACCESS_READ, pa, NULL, fsc, stage,
					reads),
		   1);
	CHECK_EQ(pa[0], DATA_PA + 0x10);
	CHECK_EQ(reads[0], 29);
	CHECK_EQ(stage[1], 1);
	CHECK_EQ(fsc[1], 0x07); /* the level-3 entry below va is empty */
	/* An empty root entry: FEAT_LPA2's translation fault at level -1, FSC 0b101011. */
	CHECK_EQ(s2pt_translate(&s1.pt, 0x0001000000000000ull, S2PT_ACCESS_READ, &t, &f1),
		 S2PT_EFAULT);
	CHECK_EQ(f1.level, -1);
	CHECK_EQ(f1.fsc, 0x2bu);
	vas[1] = 0x0001000000000000ull;
	REQUIRE_EQ(s2pt_translate2_many(&s2.pt, &rg, vas, 2, S2PT_ACCESS_READ, pa, NULL, fsc, stage,
					reads),
		   1);
	CHECK_EQ(fsc[1], 0x2b);
	CHECK_EQ(reads[1], 4 + 1); /* the root entry's stage-2 walk, then the entry */
	REQUIRE_EQ(s2pt_unmap(&s1.pt, va, 0x1000, NULL), 0);
	CHECK_EQ(s1.pt.table_pages, 1u);
	fx_fini(&s1);
	fx_fini(&s2);
}
