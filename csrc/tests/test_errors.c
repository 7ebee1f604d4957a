/*
 * Argument errors and atomicity: every failing call leaves pool memory, counts, owners, the
 * free stack and the page table exactly as they were. Pool exhaustion is exact: a pool one
 * page short fails with S2PT_ENOMEM and no change, a pool with exactly the pages succeeds.
 */
#include <string.h>

#include "s2pt_testlib.h"

#define RW (S2PT_PROT_R | S2PT_PROT_W)
#define NORMAL S2PT_MEMATTR_NORMAL

/* A populated 4K/40 table to run failing calls against. */
static int populate(struct fx *f)
{
	int r = fx_init(f, 40, 4096, 48, 64, 0x40000000ull);

	if (!r)
		r = s2pt_map(&f->pt, GiB(1), GiB(3), GiB(1), RW, NORMAL, 0);
	if (!r)
		r = s2pt_map(&f->pt, GiB(2) + MiB(2), GiB(8), MiB(4), RW, NORMAL, 0);
	if (!r)
		r = s2pt_map(&f->pt, GiB(600) + KiB(4), GiB(8), KiB(12), S2PT_PROT_R,
			     S2PT_MEMATTR_DEVICE_nGnRE, 0);
	if (!r)
		r = s2pt_map(&f->pt, (1ull << 40) - KiB(8), GiB(9), KiB(8), RW, NORMAL, 0);
	if (!r)
		fx_log(f, 64);
	return r;
}

struct map_case {
	uint64_t ipa, pa, size;
	uint32_t prot, memattr, flags;
	int err;
};

static void run_map_cases(struct fx *f, const struct map_case *c, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct snap s;
		int r;

		snap_take(&s, f);
		r = s2pt_map(&f->pt, c[i].ipa, c[i].pa, c[i].size, c[i].prot, c[i].memattr,
			     c[i].flags);
		CHECK_MSG(r == c[i].err, "map case %u (ipa %#llx pa %#llx size %#llx prot %#x attr %#x): %d, want %d",
			  i, (unsigned long long)c[i].ipa, (unsigned long long)c[i].pa,
			  (unsigned long long)c[i].size, c[i].prot, c[i].memattr, r, c[i].err);
		{
			const char *d = snap_diff(&s, f);

			CHECK_MSG(d == NULL, "map case %u changed %s", i, d);
		}
		snap_free(&s);
	}
}

TEST(errors_map_range_and_alignment_4k)
{
	struct fx f;
	const uint64_t top = 1ull << 40, ptop = 1ull << 48;
	const struct map_case c[] = {
		/* beyond the IPA space, by one page and entirely */
		{top - KiB(4), 0, KiB(8), RW, NORMAL, 0, S2PT_ERANGE},
		{top, 0, KiB(4), RW, NORMAL, 0, S2PT_ERANGE},
		{1ull << 41, 0, KiB(4), RW, NORMAL, 0, S2PT_ERANGE},
		/* 64-bit wrap-around */
		{0xFFFFFFFFFFFFF000ull, 0, KiB(8), RW, NORMAL, 0, S2PT_ERANGE},
		{KiB(8), 0, 0xFFFFFFFFFFFFF000ull, RW, NORMAL, 0, S2PT_ERANGE},
		/* PA beyond 2^48, PA wrap */
		{0, ptop - KiB(4), KiB(8), RW, NORMAL, 0, S2PT_ERANGE},
		{0, ptop, KiB(4), RW, NORMAL, 0, S2PT_ERANGE},
		{0, 0xFFFFFFFFFFFFF000ull, KiB(8), RW, NORMAL, 0, S2PT_ERANGE},
		/* misaligned ipa, pa, size */
		{GiB(4) + 0x800, GiB(1), KiB(4), RW, NORMAL, 0, S2PT_EALIGN},
		{GiB(4) + 1, GiB(1), KiB(4), RW, NORMAL, 0, S2PT_EALIGN},
		{GiB(4), GiB(1) + 8, KiB(4), RW, NORMAL, 0, S2PT_EALIGN},
		{GiB(4), GiB(1), KiB(4) + 1, RW, NORMAL, 0, S2PT_EALIGN},
		{GiB(4), GiB(1), 0x800, RW, NORMAL, 0, S2PT_EALIGN},
		/* bad prot: PX without UX and the reverse, undefined bits */
		{GiB(4), GiB(1), KiB(4), S2PT_PROT_R | S2PT_PROT_PX, NORMAL, 0, S2PT_EINVAL},
		{GiB(4), GiB(1), KiB(4), S2PT_PROT_UX, NORMAL, 0, S2PT_EINVAL},
		{GiB(4), GiB(1), KiB(4), RW | 0x10, NORMAL, 0, S2PT_EINVAL},
		{GiB(4), GiB(1), KiB(4), 0x80000000u, NORMAL, 0, S2PT_EINVAL},
		/* reserved MemAttr: Normal with inner 0b00, out of 4 bits */
		{GiB(4), GiB(1), KiB(4), RW, 0x4, 0, S2PT_EINVAL},
		{GiB(4), GiB(1), KiB(4), RW, 0x8, 0, S2PT_EINVAL},
		{GiB(4), GiB(1), KiB(4), RW, 0xC, 0, S2PT_EINVAL},
		{GiB(4), GiB(1), KiB(4), RW, 0x10, 0, S2PT_EINVAL},
		{GiB(4), GiB(1), KiB(4), RW, 0xFF, 0, S2PT_EINVAL},
		/* execute on Device memory */
		{GiB(4), GiB(1), KiB(4), S2PT_PROT_X, S2PT_MEMATTR_DEVICE_nGnRnE, 0, S2PT_EINVAL},
		{GiB(4), GiB(1), KiB(4), S2PT_PROT_ALL, S2PT_MEMATTR_DEVICE_nGnRE, 0, S2PT_EINVAL},
		{GiB(4), GiB(1), KiB(4), S2PT_PROT_R | S2PT_PROT_X, S2PT_MEMATTR_DEVICE_nGRE, 0, S2PT_EINVAL},
		{GiB(4), GiB(1), KiB(4), S2PT_PROT_X, S2PT_MEMATTR_DEVICE_GRE, 0, S2PT_EINVAL},
		/* unknown flags */
		{GiB(4), GiB(1), KiB(4), RW, NORMAL, 0x4, S2PT_EINVAL},
		/* on the replacing side too: a bad call over existing mappings changes nothing */
		{GiB(1), GiB(3), GiB(1) + KiB(4) + 1, RW, NORMAL, 0, S2PT_EALIGN},
		{GiB(1), GiB(3), KiB(4), RW, 0x4, 0, S2PT_EINVAL},
		/* size 0 is a no-op */
		{GiB(4), GiB(1), 0, RW, NORMAL, 0, 0},
	};

	REQUIRE_EQ(populate(&f), 0);
	run_map_cases(&f, c, sizeof(c) / sizeof(c[0]));
	CHECK_INVARIANTS(&f.pt);
	/* The end of the IPA and PA spaces themselves are fine. */
	CHECK_EQ(s2pt_map(&f.pt, top - KiB(4), ptop - KiB(4), KiB(4), RW, NORMAL, 0), 0);
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);
}

TEST(errors_map_alignment_16k_64k_and_small_pa)
{
	struct fx f;
	const struct map_case c16[] = {
		{KiB(4), 0, KiB(16), RW, NORMAL, 0, S2PT_EALIGN},
		{0, KiB(4), KiB(16), RW, NORMAL, 0, S2PT_EALIGN},
		{0, 0, KiB(4), RW, NORMAL, 0, S2PT_EALIGN},
		{(1ull << 40) - KiB(16), 0, KiB(32), RW, NORMAL, 0, S2PT_ERANGE},
	};
	const struct map_case c64[] = {
		{KiB(16), 0, KiB(64), RW, NORMAL, 0, S2PT_EALIGN},
		{0, KiB(32), KiB(64), RW, NORMAL, 0, S2PT_EALIGN},
		{0, 0, KiB(16), RW, NORMAL, 0, S2PT_EALIGN},
		/* PA size 36 bits */
		{0, (1ull << 36) - KiB(64), KiB(128), RW, NORMAL, 0, S2PT_ERANGE},
		{1ull << 36, 0, KiB(64), RW, NORMAL, 0, S2PT_ERANGE},
	};

	REQUIRE_EQ(fx_init(&f, 40, 16384, 48, 32, 0x40000000ull), 0);
	run_map_cases(&f, c16, sizeof(c16) / sizeof(c16[0]));
	fx_fini(&f);
	REQUIRE_EQ(fx_init(&f, 36, 65536, 36, 8, 0x40000000ull), 0);
	run_map_cases(&f, c64, sizeof(c64) / sizeof(c64[0]));
	CHECK_EQ(s2pt_map(&f.pt, (1ull << 36) - KiB(64), (1ull << 36) - KiB(64), KiB(64), RW, NORMAL, 0), 0);
	fx_fini(&f);
}

TEST(errors_unmap_protect_range_and_args)
{
	struct fx f;
	const uint64_t top = 1ull << 40;
	struct {
		uint64_t ipa, size;
		int err;
	} c[] = {
		{top - KiB(4), KiB(8), S2PT_ERANGE},
		{top, KiB(4), S2PT_ERANGE},
		{0xFFFFFFFFFFFFF000ull, KiB(8), S2PT_ERANGE},
		{KiB(4), 0xFFFFFFFFFFFFF000ull, S2PT_ERANGE},
		{GiB(1) + 0x10, KiB(4), S2PT_EALIGN},
		{GiB(1), KiB(4) + 0x10, S2PT_EALIGN},
		{GiB(1), 0x10, S2PT_EALIGN},
	};

	REQUIRE_EQ(populate(&f), 0);
	for (unsigned i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct snap s;
		uint64_t un = 1234;

		snap_take(&s, &f);
		CHECK_MSG(s2pt_unmap(&f.pt, c[i].ipa, c[i].size, &un) == c[i].err, "unmap case %u", i);
		CHECK_EQ(un, 0);
		CHECK_MSG(s2pt_protect(&f.pt, c[i].ipa, c[i].size, S2PT_PROT_R) == c[i].err,
			  "protect case %u", i);
		CHECK_UNCHANGED(&s, &f);
		snap_free(&s);
	}
	{
		static const uint32_t badprot[] = {S2PT_PROT_PX, S2PT_PROT_UX | S2PT_PROT_R, 0x10, 0x20};
		struct snap s;

		snap_take(&s, &f);
		for (unsigned i = 0; i < 4; i++)
			CHECK_EQ(s2pt_protect(&f.pt, GiB(1), GiB(1), badprot[i]), S2PT_EINVAL);
		/* Execute on a range holding a Device leaf: refused before anything changes,
		 * including the Normal block earlier in the range. */
		CHECK_EQ(s2pt_protect(&f.pt, GiB(1), GiB(600), S2PT_PROT_R | S2PT_PROT_X), S2PT_EINVAL);
		CHECK_EQ(s2pt_protect(&f.pt, GiB(600), GiB(1), S2PT_PROT_X), S2PT_EINVAL);
		CHECK_UNCHANGED(&s, &f);
		snap_free(&s);
	}
	/* Execute on a Normal range is fine; the end of the space is accepted. */
	CHECK_EQ(s2pt_protect(&f.pt, GiB(1), GiB(1), S2PT_PROT_R | S2PT_PROT_X), 0);
	CHECK_EQ(s2pt_protect(&f.pt, top - KiB(8), KiB(8), S2PT_PROT_R), 0);
	CHECK_EQ(sw_desc(&f.pt, top - KiB(4), 3), a_leaf(GiB(9) + KiB(4), 3, S2PT_PROT_R, NORMAL, 1));
	CHECK_EQ(s2pt_unmap(&f.pt, top - KiB(8), KiB(8), NULL), 0);
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);
}

/* ---- exact pool exhaustion ------------------------------------------------------------- */

struct scen {
	const char *name;
	uint32_t ipa_bits, granule;
	int (*setup)(struct fx *f);
	uint32_t setup_pages; /* table pages the setup leaves (beyond the roots) */
	int (*op)(struct fx *f);
	uint32_t need;  /* pages the operation allocates */
	uint32_t freed; /* pages it frees */
};

static int none(struct fx *f)
{
	(void)f;
	return 0;
}

static int block_1g(struct fx *f)
{
	return s2pt_map(&f->pt, GiB(1), GiB(3), GiB(1), RW, NORMAL, 0);
}

static int blocks_2x1g(struct fx *f)
{
	return s2pt_map(&f->pt, GiB(1), GiB(3), GiB(2), RW, NORMAL, 0);
}

static int block_2m(struct fx *f)
{
	return s2pt_map(&f->pt, MiB(2), GiB(3), MiB(2), RW, NORMAL, 0);
}

static int page_at_1m(struct fx *f)
{
	return s2pt_map(&f->pt, MiB(1), GiB(3), KiB(4), RW, NORMAL, 0);
}

static int op_map_page(struct fx *f)
{
	uint64_t g = 1ull << f->cfg.granule_shift;

	return s2pt_map(&f->pt, GiB(2) + g * 3, GiB(4), g, RW, NORMAL, 0);
}

static int op_map_4m_across_1g(struct fx *f)
{
	return s2pt_map(&f->pt, GiB(1) - MiB(2), GiB(4), MiB(4), RW, NORMAL, S2PT_MAP_NO_BLOCKS);
}

static int op_map_mixed(struct fx *f)
{
	return s2pt_map(&f->pt, GiB(1) - KiB(4), GiB(5) - KiB(4), GiB(1) + MiB(2) + KiB(8), RW,
			NORMAL, 0);
}

static int op_unmap_page_in_block(struct fx *f)
{
	return s2pt_unmap(&f->pt, GiB(1) + MiB(3) + KiB(4), KiB(4), NULL);
}

static int op_unmap_2m_in_block(struct fx *f)
{
	return s2pt_unmap(&f->pt, GiB(1) + MiB(4), MiB(2), NULL);
}

static int op_unmap_across_blocks(struct fx *f)
{
	return s2pt_unmap(&f->pt, GiB(2) - KiB(4), KiB(8), NULL);
}

static int op_unmap_page_in_2m(struct fx *f)
{
	return s2pt_unmap(&f->pt, MiB(2) + KiB(4), KiB(4), NULL);
}

static int op_unmap_whole_block(struct fx *f)
{
	return s2pt_unmap(&f->pt, GiB(1), GiB(1), NULL);
}

static int op_protect_page_in_block(struct fx *f)
{
	return s2pt_protect(&f->pt, GiB(1) + KiB(4), KiB(4), S2PT_PROT_R);
}

static int op_protect_across_blocks(struct fx *f)
{
	return s2pt_protect(&f->pt, GiB(2) - MiB(2), MiB(2) + KiB(4), S2PT_PROT_R);
}

static int op_map_page_into_block(struct fx *f)
{
	return s2pt_map(&f->pt, GiB(1) + MiB(7), GiB(9), KiB(4), S2PT_PROT_R, NORMAL, 0);
}

static int op_map_2m_into_block(struct fx *f)
{
	return s2pt_map(&f->pt, GiB(1) + MiB(8), GiB(9), MiB(2), RW, NORMAL, 0);
}

static int op_map_over_table_and_new(struct fx *f)
{
	return s2pt_map(&f->pt, 0, GiB(6), MiB(4) + KiB(4), RW, NORMAL, 0);
}

static int op_map_nb_over_block(struct fx *f)
{
	/* NO_BLOCKS over an identical 2 MiB block: split into 512 pages. */
	return s2pt_map(&f->pt, MiB(2), GiB(3), MiB(2), RW, NORMAL, S2PT_MAP_NO_BLOCKS);
}

static const struct scen scens[] = {
	{"map one page 4K/40", 40, 4096, none, 0, op_map_page, 2, 0},
	{"map 4M across 1G, no blocks", 40, 4096, none, 0, op_map_4m_across_1g, 4, 0},
	{"map page+1G+2M+page", 40, 4096, none, 0, op_map_mixed, 4, 0},
	{"unmap page in 1G block", 40, 4096, block_1g, 0, op_unmap_page_in_block, 2, 0},
	{"unmap 2M in 1G block", 40, 4096, block_1g, 0, op_unmap_2m_in_block, 1, 0},
	{"unmap across two 1G blocks", 40, 4096, blocks_2x1g, 0, op_unmap_across_blocks, 4, 0},
	{"unmap page in 2M block", 40, 4096, block_2m, 1, op_unmap_page_in_2m, 1, 0},
	{"unmap whole 1G block", 40, 4096, block_1g, 0, op_unmap_whole_block, 0, 0},
	{"protect page in 1G block", 40, 4096, block_1g, 0, op_protect_page_in_block, 2, 0},
	{"protect across two 1G blocks", 40, 4096, blocks_2x1g, 0, op_protect_across_blocks, 3, 0},
	{"map page into 1G block", 40, 4096, block_1g, 0, op_map_page_into_block, 2, 0},
	{"map 2M into 1G block", 40, 4096, block_1g, 0, op_map_2m_into_block, 1, 0},
	{"map over table + new page", 40, 4096, page_at_1m, 2, op_map_over_table_and_new, 1, 1},
	{"no-blocks map over 2M block", 40, 4096, block_2m, 1, op_map_nb_over_block, 1, 0},
	{"map one page 16K/47", 47, 16384, none, 0, op_map_page, 2, 0},
	{"map one page 64K/42", 42, 65536, none, 0, op_map_page, 1, 0},
	{"map one page 4K/48", 48, 4096, none, 0, op_map_page, 3, 0},
	{"map one page 4K/32", 32, 4096, none, 0, op_map_page, 1, 0},
};

static int scen_fixture(struct fx *f, const struct scen *sc, uint32_t extra)
{
	struct s2pt_config cfg;
	int r = s2pt_config_init(&cfg, sc->ipa_bits, sc->granule, 48, 1, 0);

	if (r)
		return r;
	r = fx_init(f, sc->ipa_bits, sc->granule, 48, cfg.root_tables + sc->setup_pages + extra,
		    0x40000000ull);
	if (r)
		return r;
	r = sc->setup(f);
	if (r)
		return r;
	return f->pt.table_pages == cfg.root_tables + sc->setup_pages ? 0 : S2PT_EINVARIANT;
}

TEST(errors_enomem_exact_page_counts)
{
	for (unsigned i = 0; i < sizeof(scens) / sizeof(scens[0]); i++) {
		const struct scen *sc = &scens[i];
		struct fx f;
		uint32_t before;
		int r;

		if (sc->need > 0) {
			struct snap s;

			REQUIRE_EQ(scen_fixture(&f, sc, sc->need - 1), 0);
			fx_log(&f, 16);
			snap_take(&s, &f);
			r = sc->op(&f);
			CHECK_MSG(r == S2PT_ENOMEM, "%s with %u free pages: %d, want ENOMEM", sc->name,
				  sc->need - 1, r);
			{
				const char *d = snap_diff(&s, &f);

				CHECK_MSG(d == NULL, "%s: ENOMEM changed %s", sc->name, d);
			}
			snap_free(&s);
			CHECK_INVARIANTS(&f.pt);
			fx_fini(&f);
		}
		REQUIRE_EQ(scen_fixture(&f, sc, sc->need), 0);
		before = f.pt.table_pages;
		r = sc->op(&f);
		CHECK_MSG(r == 0, "%s with exactly %u free pages: %d", sc->name, sc->need, r);
		CHECK_MSG(f.pt.table_pages == before + sc->need - sc->freed,
			  "%s: %u table pages, expected %u", sc->name, f.pt.table_pages,
			  before + sc->need - sc->freed);
		CHECK_EQ(f.pool.used, f.pt.table_pages);
		CHECK_INVARIANTS(&f.pt);
		CHECK_REFCOUNTS(&f.pt);
		fx_fini(&f);
	}
}

TEST(errors_enomem_with_full_pool_and_no_need)
{
	struct fx f;
	struct snap s;

	/* A full pool still allows everything that needs no page. */
	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 4, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), GiB(1), MiB(2), RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1) + MiB(2), GiB(1), KiB(4), RW, NORMAL, 0), 0);
	CHECK_EQ(s2pt_pool_free_pages(&f.pool), 0);
	CHECK_EQ(s2pt_map(&f.pt, GiB(2), GiB(1), GiB(1), RW, NORMAL, 0), 0);
	CHECK_EQ(s2pt_map(&f.pt, GiB(1) + MiB(2) + KiB(4), GiB(1), KiB(8), RW, NORMAL, 0), 0);
	CHECK_EQ(s2pt_protect(&f.pt, GiB(1), GiB(2), S2PT_PROT_R), 0);
	/* ... and nothing that needs one. */
	snap_take(&s, &f);
	CHECK_EQ(s2pt_map(&f.pt, GiB(5), GiB(1), KiB(4), RW, NORMAL, 0), S2PT_ENOMEM);
	CHECK_EQ(s2pt_unmap(&f.pt, GiB(2) + KiB(4), KiB(4), NULL), S2PT_ENOMEM);
	CHECK_EQ(s2pt_protect(&f.pt, GiB(2), MiB(2), RW), S2PT_ENOMEM);
	CHECK_EQ(s2pt_map(&f.pt, GiB(1), GiB(1), KiB(4), RW, NORMAL, 0), S2PT_ENOMEM);
	CHECK_UNCHANGED(&s, &f);
	snap_free(&s);
	CHECK_INVARIANTS(&f.pt);
	CHECK_EQ(s2pt_unmap(&f.pt, 0, 1ull << 40, NULL), 0);
	CHECK_EQ(f.pool.used, 2);
	fx_fini(&f);
}

/* The unit tests build the core with S2PT_DEBUG=1 (see the Makefile's CFLAGS_TEST): a copy of
 * the core must say so, or a "debug" build could silently be a release one. */
TEST(debug_build_reports_the_flavour)
{
	REQUIRE_EQ(s2pt_debug_build(), 1);
}
