/* s2pt_unmap() and s2pt_protect(): exact byte counts, table freeing, splits, permission bits. */
#include <string.h>

#include "s2pt_testlib.h"

#define RW (S2PT_PROT_R | S2PT_PROT_W)
#define NORMAL S2PT_MEMATTR_NORMAL

static void check_only_roots(struct fx *f)
{
	struct s2pt_stats st;

	CHECK_EQ(f->pt.table_pages, f->cfg.root_tables);
	CHECK_EQ(f->pool.used, f->cfg.root_tables);
	for (uint32_t i = 0; i < f->cfg.root_tables; i++) {
		uint64_t pa = f->pt.root_pa + ((uint64_t)i << f->cfg.granule_shift);

		CHECK_EQ(nonzero_entries(&f->pool, pa), 0);
		CHECK_EQ(rc_at(&f->pool, pa), 1);
	}
	REQUIRE_EQ(s2pt_stats(&f->pt, &st), 0);
	CHECK_EQ(st.table_pages, f->cfg.root_tables);
	CHECK_EQ(st.mapped_bytes, 0);
	CHECK_INVARIANTS(&f->pt);
	CHECK_REFCOUNTS(&f->pt);
}

TEST(unmap_returns_exact_bytes)
{
	struct fx f;
	uint64_t un = 99;
	const uint64_t x = GiB(3) + MiB(6);

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, x, GiB(1), 4096, RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, x + KiB(8), GiB(1), 4096, RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, x + KiB(16), GiB(1), 4096, RW, NORMAL, 0), 0);
	CHECK_EQ(s2pt_unmap(&f.pt, x, KiB(20), &un), 0);
	CHECK_EQ(un, KiB(12));
	check_only_roots(&f);

	/* Unmapping nothing: 0 bytes, nothing changes. size 0 is a no-op too. */
	{
		struct snap s;

		snap_take(&s, &f);
		un = 99;
		CHECK_EQ(s2pt_unmap(&f.pt, 0, GiB(4), &un), 0);
		CHECK_EQ(un, 0);
		un = 99;
		CHECK_EQ(s2pt_unmap(&f.pt, GiB(1), 0, &un), 0);
		CHECK_EQ(un, 0);
		CHECK_UNCHANGED(&s, &f);
		snap_free(&s);
	}

	/* Block, 2M blocks and pages together; unmap a superset, then a range cutting leaves. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1) - MiB(4) - KiB(8), GiB(9) - MiB(4) - KiB(8),
			    GiB(1) + MiB(8) + KiB(16), RW, NORMAL, 0),
		   0);
	CHECK_EQ(s2pt_unmap(&f.pt, GiB(1) - MiB(2), GiB(1) + MiB(4), &un), 0);
	CHECK_EQ(un, GiB(1) + MiB(4));
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	CHECK_EQ(s2pt_unmap(&f.pt, 0, 1ull << 40, &un), 0);
	CHECK_EQ(un, MiB(4) + KiB(16));
	check_only_roots(&f);
	CHECK_EQ(s2pt_unmap(&f.pt, 0, 4096, NULL), 0);
	fx_fini(&f);
}

TEST(unmap_frees_every_emptied_table_upward)
{
	struct fx f;
	uint64_t un, total = 0;
	static const struct {
		uint64_t ipa, size;
		uint32_t flags;
	} m[] = {
		{0, KiB(4), 0},
		{GiB(1) + MiB(2) * 3, MiB(2), S2PT_MAP_NO_BLOCKS},
		{GiB(2), GiB(1), 0},
		{GiB(511), MiB(6), 0},
		{GiB(512) + KiB(4), KiB(8), 0},  /* second root page */
		{(1ull << 40) - KiB(4), KiB(4), 0},
		{GiB(700) + MiB(2) - KiB(4), KiB(8), S2PT_MAP_NO_BLOCKS},
	};

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 64, 0x40000000ull), 0);
	for (unsigned i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		REQUIRE_EQ(s2pt_map(&f.pt, m[i].ipa, m[i].ipa, m[i].size, RW, NORMAL, m[i].flags), 0);
		total += m[i].size;
	}
	CHECK(f.pt.table_pages > 8);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	/* Unmap piece by piece in reverse order; invariants hold after each step. */
	for (unsigned i = sizeof(m) / sizeof(m[0]); i-- > 0;) {
		REQUIRE_EQ(s2pt_unmap(&f.pt, m[i].ipa, m[i].size, &un), 0);
		CHECK_EQ(un, m[i].size);
		CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	}
	check_only_roots(&f);

	/* Again, but one unmap of the whole IPA space. */
	for (unsigned i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		REQUIRE_EQ(s2pt_map(&f.pt, m[i].ipa, m[i].ipa, m[i].size, RW, NORMAL, m[i].flags), 0);
	REQUIRE_EQ(s2pt_unmap(&f.pt, 0, 1ull << 40, &un), 0);
	CHECK_EQ(un, total);
	check_only_roots(&f);
	fx_fini(&f);
}

TEST(unmap_range_not_aligned_to_tables)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	uint64_t un;

	/* Pages across an L3-table boundary and an L2-table boundary. */
	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 64, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1) - KiB(8), GiB(4), KiB(16), RW, NORMAL, 0), 0);
	CHECK_EQ(f.pt.table_pages, 6);
	REQUIRE_EQ(s2pt_unmap(&f.pt, GiB(1) - KiB(4), KiB(8), &un), 0);
	CHECK_EQ(un, KiB(8));
	CHECK_EQ(s2pt_translate(&f.pt, GiB(1) - KiB(8), S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.pa, GiB(4));
	CHECK_EQ(s2pt_translate(&f.pt, GiB(1) + KiB(4), S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.pa, GiB(4) + KiB(12));
	CHECK_EQ(s2pt_translate(&f.pt, GiB(1) - KiB(4), S2PT_ACCESS_READ, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(s2pt_translate(&f.pt, GiB(1), S2PT_ACCESS_READ, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(f.pt.table_pages, 6);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	REQUIRE_EQ(s2pt_unmap(&f.pt, GiB(1) - KiB(8), KiB(4), &un), 0);
	CHECK_EQ(f.pt.table_pages, 4);
	REQUIRE_EQ(s2pt_unmap(&f.pt, GiB(1) + KiB(4), KiB(4), &un), 0);
	check_only_roots(&f);
	fx_fini(&f);
}

TEST(unmap_part_of_2m_block_and_whole_block)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	uint64_t un, l2;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 64, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, MiB(2), GiB(2), MiB(4), RW, NORMAL, 0), 0);
	l2 = sw_table(&f.pt, MiB(2), 2);
	CHECK_EQ(rc_at(&f.pool, l2), 3);
	/* Last 4 KiB of the first block: that block becomes 511 pages. */
	REQUIRE_EQ(s2pt_unmap(&f.pt, MiB(4) - KiB(4), KiB(4), &un), 0);
	CHECK_EQ(un, KiB(4));
	CHECK_EQ(f.pt.table_pages, 4);
	CHECK_EQ(rc_at(&f.pool, sw_table(&f.pt, MiB(2), 3)), 512);
	CHECK_EQ(rc_at(&f.pool, l2), 3);
	REQUIRE_EQ(s2pt_translate(&f.pt, MiB(4) - KiB(8), S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.pa, GiB(2) + MiB(2) - KiB(8));
	CHECK_EQ(t.level, 3);
	/* The whole second block: no split, entry cleared. */
	REQUIRE_EQ(s2pt_unmap(&f.pt, MiB(4), MiB(2), &un), 0);
	CHECK_EQ(un, MiB(2));
	CHECK_EQ(rd_desc(&f.pool, l2, 2), 0);
	CHECK_EQ(rc_at(&f.pool, l2), 2);
	CHECK_EQ(f.pt.table_pages, 4);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	/* The rest of the split block: the L3 table and then the L2 table go. */
	REQUIRE_EQ(s2pt_unmap(&f.pt, MiB(2), MiB(2) - KiB(4), &un), 0);
	CHECK_EQ(un, MiB(2) - KiB(4));
	check_only_roots(&f);
	fx_fini(&f);
}

TEST(protect_page_bits_and_counts)
{
	struct fx f;
	uint64_t l3;
	uint32_t rc;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), GiB(2), KiB(4), RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1) + KiB(8), GiB(3), KiB(4), RW, S2PT_MEMATTR_DEVICE_nGnRE,
			    S2PT_MAP_NO_AF),
		   0);
	l3 = sw_table(&f.pt, GiB(1), 3);
	rc = rc_at(&f.pool, l3);
	CHECK_EQ(rc, 3);
	/* Holes stay holes; memattr, AF and PA are kept; the count does not move. */
	REQUIRE_EQ(s2pt_protect(&f.pt, GiB(1), KiB(16), S2PT_PROT_R), 0);
	CHECK_EQ(rd_desc(&f.pool, l3, 0), a_leaf(GiB(2), 3, S2PT_PROT_R, NORMAL, 1));
	CHECK_EQ(rd_desc(&f.pool, l3, 1), 0);
	CHECK_EQ(rd_desc(&f.pool, l3, 2), a_leaf(GiB(3), 3, S2PT_PROT_R, 1, 0));
	CHECK_EQ(rd_desc(&f.pool, l3, 3), 0);
	CHECK_EQ(rc_at(&f.pool, l3), rc);
	CHECK_EQ(f.pt.table_pages, 4);
	/* Write-only, none, then X on the Normal page: bit 54 clears. */
	REQUIRE_EQ(s2pt_protect(&f.pt, GiB(1) + KiB(8), KiB(4), S2PT_PROT_W), 0);
	CHECK_EQ(rd_desc(&f.pool, l3, 2), a_leaf(GiB(3), 3, S2PT_PROT_W, 1, 0));
	REQUIRE_EQ(s2pt_protect(&f.pt, GiB(1), KiB(4), 0), 0);
	CHECK_EQ(rd_desc(&f.pool, l3, 0), GiB(2) | 0x73F | 1ull << 54);
	REQUIRE_EQ(s2pt_protect(&f.pt, GiB(1), KiB(4), S2PT_PROT_X), 0);
	CHECK_EQ(rd_desc(&f.pool, l3, 0), GiB(2) | 0x73F);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(protect_splits_partial_block_only_when_needed)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), GiB(3), GiB(1), RW, NORMAL, 0), 0);
	/* Same permissions on part of the block: nothing to do, nothing changes. */
	{
		struct snap s;

		snap_take(&s, &f);
		CHECK_EQ(s2pt_protect(&f.pt, GiB(1) + KiB(4), KiB(4), RW), 0);
		CHECK_UNCHANGED(&s, &f);
		snap_free(&s);
	}
	/* Read-only on one page: split into L2 + L3, the rest keeps RW. */
	REQUIRE_EQ(s2pt_protect(&f.pt, GiB(1) + KiB(4), KiB(4), S2PT_PROT_R), 0);
	CHECK_EQ(f.pt.table_pages, 4);
	CHECK_EQ(sw_desc(&f.pt, GiB(1) + KiB(4), 3), a_leaf(GiB(3) + KiB(4), 3, S2PT_PROT_R, NORMAL, 1));
	CHECK_EQ(sw_desc(&f.pt, GiB(1), 3), a_leaf(GiB(3), 3, RW, NORMAL, 1));
	CHECK_EQ(sw_desc(&f.pt, GiB(1) + MiB(2), 2), a_leaf(GiB(3) + MiB(2), 2, RW, NORMAL, 1));
	CHECK_EQ(s2pt_translate(&f.pt, GiB(1) + KiB(4), S2PT_ACCESS_WRITE, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.kind, S2PT_FAULT_PERMISSION);
	CHECK_EQ(flt.level, 3);
	CHECK_EQ(s2pt_translate(&f.pt, GiB(1) + KiB(8), S2PT_ACCESS_WRITE, &t, &flt), 0);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	/* 2 MiB inside another 1 GiB block: one new level-2 table. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(5), GiB(3), GiB(1), RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_protect(&f.pt, GiB(5) + MiB(8), MiB(2), S2PT_PROT_R), 0);
	CHECK_EQ(f.pt.table_pages, 5);
	CHECK_EQ(sw_desc(&f.pt, GiB(5) + MiB(8), 2), a_leaf(GiB(3) + MiB(8), 2, S2PT_PROT_R, NORMAL, 1));
	/* The whole block: changed in place. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(7), GiB(3), GiB(1), RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_protect(&f.pt, GiB(7), GiB(1), S2PT_PROT_R | S2PT_PROT_X), 0);
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 7), a_leaf(GiB(3), 1, S2PT_PROT_R | S2PT_PROT_X, NORMAL, 1));
	CHECK_EQ(f.pt.table_pages, 5);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}
