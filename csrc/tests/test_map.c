/*
 * s2pt_map(): descriptors read back from pool memory and compared with values composed from
 * the architectural field layout; table placement by index; block choice; split; coalesce.
 */
#include <string.h>

#include "s2pt_testlib.h"

#define RW (S2PT_PROT_R | S2PT_PROT_W)
#define NORMAL S2PT_MEMATTR_NORMAL

static int is_pool_page_of(const struct fx *f, uint64_t pa)
{
	uint64_t g = 1ull << f->pool.granule_shift;
	uint32_t idx;

	if (pa < f->pool.base_pa || pa >= f->pool.base_pa + (uint64_t)f->pool.capacity * g ||
	    (pa & (g - 1)))
		return 0;
	idx = (uint32_t)((pa - f->pool.base_pa) / g);
	return f->pool.owner[idx] == f->pt.owner && f->pool.refcount[idx] > 0;
}

TEST(map_one_page_4k_descriptors_and_counts)
{
	struct fx f;
	const uint64_t ipa = 0x80000000ull, pa = 0x400000000ull;
	uint64_t d1, d2, d3, l2, l3;
	struct s2pt_stats st;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, ipa, pa, 4096, RW, NORMAL, 0), 0);

	/* Level 1: index ipa >> 30 = 2 in the concatenated root. */
	d1 = rd_desc(&f.pool, f.pt.root_pa, 2);
	CHECK_EQ(d1 & 3, 3);
	l2 = d1 & ~0xfffull;
	CHECK_EQ(d1, l2 | 3); /* table descriptor: next table PA | 0b11, nothing else */
	CHECK(is_pool_page_of(&f, l2));
	/* Level 2: index (ipa >> 21) & 511 = 0. */
	d2 = rd_desc(&f.pool, l2, 0);
	l3 = d2 & ~0xfffull;
	CHECK_EQ(d2, l3 | 3);
	CHECK(is_pool_page_of(&f, l3));
	CHECK_NE(l2, l3);
	/* Level 3: index (ipa >> 12) & 511 = 0; the page descriptor, bit by bit. */
	d3 = rd_desc(&f.pool, l3, 0);
	CHECK_EQ(d3, pa | 0x3 | 0xFull << 2 | 0x3ull << 6 | 0x3ull << 8 | 1ull << 10 | 1ull << 54);
	CHECK_EQ(d3, 0x00400004000007FFull);
	CHECK_EQ(d3, a_leaf(pa, 3, RW, NORMAL, 1));

	/* Nothing else was written. */
	CHECK_EQ(nonzero_entries(&f.pool, f.pt.root_pa), 1);
	CHECK_EQ(nonzero_entries(&f.pool, f.pt.root_pa + 4096), 0);
	CHECK_EQ(nonzero_entries(&f.pool, l2), 1);
	CHECK_EQ(nonzero_entries(&f.pool, l3), 1);
	/* Counts: 1 + non-zero entries. */
	CHECK_EQ(rc_at(&f.pool, f.pt.root_pa), 2);
	CHECK_EQ(rc_at(&f.pool, f.pt.root_pa + 4096), 1);
	CHECK_EQ(rc_at(&f.pool, l2), 2);
	CHECK_EQ(rc_at(&f.pool, l3), 2);
	CHECK_EQ(f.pt.table_pages, 4);
	CHECK_EQ(f.pool.used, 4);
	REQUIRE_EQ(s2pt_stats(&f.pt, &st), 0);
	CHECK_EQ(st.table_pages, 4);
	CHECK_EQ(st.table_pages_by_level[1], 2);
	CHECK_EQ(st.table_pages_by_level[2], 1);
	CHECK_EQ(st.table_pages_by_level[3], 1);
	CHECK_EQ(st.leaves_by_level[3], 1);
	CHECK_EQ(st.leaves_by_level[1] + st.leaves_by_level[2], 0);
	CHECK_EQ(st.mapped_bytes, 4096);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_indices_span_concatenated_root)
{
	struct fx f;
	/* ipa >> 30 = 513: the second root page, entry 1; L2 index 1; L3 index 3. */
	const uint64_t ipa = 0x8040203000ull, pa = 0x12345000ull;
	uint64_t d1, d2, l2, l3;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, ipa, pa, 4096, S2PT_PROT_R, NORMAL, 0), 0);
	CHECK_EQ(nonzero_entries(&f.pool, f.pt.root_pa), 0);
	CHECK_EQ(nonzero_entries(&f.pool, f.pt.root_pa + 4096), 1);
	d1 = rd_desc(&f.pool, f.pt.root_pa, 513);
	CHECK_EQ(d1, pa_ptr(&f.pool, f.pt.root_pa + 4096)[1]);
	l2 = d1 & ~0xfffull;
	CHECK_EQ(d1, l2 | 3);
	d2 = rd_desc(&f.pool, l2, 1);
	l3 = d2 & ~0xfffull;
	CHECK_EQ(d2, l3 | 3);
	CHECK_EQ(nonzero_entries(&f.pool, l2), 1);
	CHECK_EQ(rd_desc(&f.pool, l3, 3), pa | 0x3 | 0xFull << 2 | 1ull << 6 | 3ull << 8 |
						  1ull << 10 | 1ull << 54);
	CHECK_EQ(nonzero_entries(&f.pool, l3), 1);
	CHECK_EQ(rc_at(&f.pool, f.pt.root_pa), 1);
	CHECK_EQ(rc_at(&f.pool, f.pt.root_pa + 4096), 2);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_1g_block_at_level1)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	struct s2pt_stats st;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), 0x80000000ull, GiB(1), RW, NORMAL, 0), 0);
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 1), 0x00400000800007FDull);
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 1) & 3, 1); /* block */
	CHECK_EQ(f.pt.table_pages, 2);
	CHECK_EQ(f.pool.used, 2);
	CHECK_EQ(rc_at(&f.pool, f.pt.root_pa), 2);
	REQUIRE_EQ(s2pt_translate(&f.pt, GiB(1) + 0x12345678ull, S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.pa, 0x80000000ull + 0x12345678ull);
	CHECK_EQ(t.level, 1);
	CHECK_EQ(t.size, GiB(1));
	CHECK_EQ(t.prot, RW);
	CHECK_EQ(t.memattr, NORMAL);
	CHECK_EQ(t.af, 1);
	CHECK_EQ(t.pte, 0x00400000800007FDull);
	REQUIRE_EQ(s2pt_stats(&f.pt, &st), 0);
	CHECK_EQ(st.leaves_by_level[1], 1);
	CHECK_EQ(st.mapped_bytes, GiB(1));
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_2m_blocks_when_pa_only_2m_aligned)
{
	struct fx f;
	uint64_t l2;
	struct s2pt_stats st;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), 0x80200000ull, GiB(1), RW, NORMAL, 0), 0);
	l2 = sw_table(&f.pt, GiB(1), 2);
	REQUIRE(l2 != 0);
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 1), l2 | 3);
	for (uint64_t i = 0; i < 512; i++) {
		uint64_t want = (0x80200000ull + i * MiB(2)) | 0x7FD | 1ull << 54;

		if (rd_desc(&f.pool, l2, i) != want) {
			CHECK_EQ(rd_desc(&f.pool, l2, i), want);
			break;
		}
	}
	CHECK_EQ(rc_at(&f.pool, l2), 513);
	CHECK_EQ(f.pt.table_pages, 3);
	REQUIRE_EQ(s2pt_stats(&f.pt, &st), 0);
	CHECK_EQ(st.leaves_by_level[2], 512);
	CHECK_EQ(st.leaves_by_level[1], 0);
	CHECK_EQ(st.mapped_bytes, GiB(1));
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_largest_leaf_per_chunk)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	/* [1G - 2M, 2G + 2M + 4K) with PA = IPA + 4G: 2M block, 1G block, 2M block, 4K page. */
	const uint64_t ipa = GiB(1) - MiB(2), size = GiB(1) + MiB(4) + KiB(4), off = GiB(4);
	static const struct {
		uint64_t ipa;
		int level;
	} probe[] = {
		{GiB(1) - MiB(2), 2}, {GiB(1) - 4096, 2}, {GiB(1), 1},          {GiB(2) - 4096, 1},
		{GiB(2), 2},          {GiB(2) + MiB(2), 3},
	};

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, ipa, ipa + off, size, RW, NORMAL, 0), 0);
	for (unsigned i = 0; i < sizeof(probe) / sizeof(probe[0]); i++) {
		REQUIRE_EQ(s2pt_translate(&f.pt, probe[i].ipa + 8, S2PT_ACCESS_WRITE, &t, &flt), 0);
		CHECK_EQ(t.level, probe[i].level);
		CHECK_EQ(t.pa, probe[i].ipa + 8 + off);
	}
	CHECK_EQ(s2pt_translate(&f.pt, GiB(2) + MiB(2) + 4096, S2PT_ACCESS_READ, &t, &flt),
		 S2PT_EFAULT);
	CHECK_EQ(s2pt_translate(&f.pt, GiB(1) - MiB(2) - 4096, S2PT_ACCESS_READ, &t, &flt),
		 S2PT_EFAULT);
	/* Tables: L2 under root[0], L2 under root[2], L3 under the second one. */
	CHECK_EQ(f.pt.table_pages, 5);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_no_blocks_flag_gives_pages)
{
	struct fx f;
	uint64_t l3;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, MiB(2), GiB(2), MiB(2), RW, NORMAL, S2PT_MAP_NO_BLOCKS), 0);
	l3 = sw_table(&f.pt, MiB(2), 3);
	REQUIRE(l3 != 0);
	for (uint64_t i = 0; i < 512; i++)
		if (rd_desc(&f.pool, l3, i) != a_leaf(GiB(2) + i * 4096, 3, RW, NORMAL, 1)) {
			CHECK_EQ(rd_desc(&f.pool, l3, i), a_leaf(GiB(2) + i * 4096, 3, RW, NORMAL, 1));
			break;
		}
	CHECK_EQ(rc_at(&f.pool, l3), 513);
	CHECK_EQ(rd_desc(&f.pool, sw_table(&f.pt, MiB(2), 2), 1), l3 | 3);
	CHECK_EQ(f.pt.table_pages, 4);
	/* 1 GiB with NO_BLOCKS: 512 level-3 tables. */
	REQUIRE_EQ(s2pt_unmap(&f.pt, MiB(2), MiB(2), NULL), 0);
	CHECK_EQ(f.pt.table_pages, 2);
	fx_fini(&f);

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 600, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), GiB(1), GiB(1), RW, NORMAL, S2PT_MAP_NO_BLOCKS), 0);
	CHECK_EQ(f.pt.table_pages, 2 + 1 + 512);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_permission_bits)
{
	static const uint32_t prots[] = {
		0, S2PT_PROT_R, S2PT_PROT_W, RW, S2PT_PROT_X, S2PT_PROT_R | S2PT_PROT_X,
		S2PT_PROT_W | S2PT_PROT_X, S2PT_PROT_ALL,
	};
	struct fx f;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	for (unsigned i = 0; i < sizeof(prots) / sizeof(prots[0]); i++) {
		uint64_t ipa = (uint64_t)i * 4096, pa = GiB(3) + (uint64_t)i * 4096;
		uint64_t want = pa | 3 | 0xFull << 2 | 3ull << 8 | 1ull << 10;
		struct s2pt_translation t;
		struct s2pt_fault flt;

		if (prots[i] & S2PT_PROT_R)
			want |= 1ull << 6;
		if (prots[i] & S2PT_PROT_W)
			want |= 1ull << 7;
		if (!(prots[i] & S2PT_PROT_X))
			want |= 1ull << 54;
		REQUIRE_EQ(s2pt_map(&f.pt, ipa, pa, 4096, prots[i], NORMAL, 0), 0);
		CHECK_EQ(sw_desc(&f.pt, ipa, 3), want);
		REQUIRE_EQ(s2pt_lookup(&f.pt, ipa, &t, &flt), 0);
		CHECK_EQ(t.prot, prots[i]);
	}
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_memattr_and_af_bits)
{
	/* The 13 defined stage-2 MemAttr encodings without FWB. */
	static const uint32_t attrs[] = {0x0, 0x1, 0x2, 0x3, 0x5, 0x6, 0x7,
					 0x9, 0xA, 0xB, 0xD, 0xE, 0xF};
	struct fx f;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	for (unsigned i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
		uint64_t ipa = (uint64_t)i * 4096, pa = GiB(5) + (uint64_t)i * 4096;

		REQUIRE_EQ(s2pt_map(&f.pt, ipa, pa, 4096, RW, attrs[i], 0), 0);
		CHECK_EQ(sw_desc(&f.pt, ipa, 3),
			 pa | 3 | (uint64_t)attrs[i] << 2 | 3ull << 6 | 3ull << 8 | 1ull << 10 | 1ull << 54);
	}
	/* Device-nGnRE: MemAttr 0b0001. */
	CHECK_EQ(sw_desc(&f.pt, 4096, 3), (GiB(5) + 4096) | 0x7C7 | 1ull << 54);
	/* NO_AF leaves bit 10 clear, at every level. */
	REQUIRE_EQ(s2pt_map(&f.pt, MiB(64), GiB(6), 4096, RW, NORMAL, S2PT_MAP_NO_AF), 0);
	CHECK_EQ(sw_desc(&f.pt, MiB(64), 3), GiB(6) | 0x3FF | 1ull << 54);
	REQUIRE_EQ(s2pt_map(&f.pt, MiB(66), GiB(6), MiB(2), RW, NORMAL, S2PT_MAP_NO_AF), 0);
	CHECK_EQ(sw_desc(&f.pt, MiB(66), 2), GiB(6) | 0x3FD | 1ull << 54);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(8), GiB(6), GiB(1), S2PT_PROT_R | S2PT_PROT_X, NORMAL,
			    S2PT_MAP_NO_AF),
		   0);
	CHECK_EQ(sw_desc(&f.pt, GiB(8), 1), GiB(6) | 0x37D);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_replace_existing_leaf)
{
	struct fx f;
	uint64_t l3;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), GiB(2), KiB(8), RW, NORMAL, 0), 0);
	l3 = sw_table(&f.pt, GiB(1), 3);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1) + 4096, GiB(9), 4096, S2PT_PROT_R,
			    S2PT_MEMATTR_DEVICE_nGnRE, 0),
		   0);
	CHECK_EQ(sw_table(&f.pt, GiB(1) + 4096, 3), l3);
	CHECK_EQ(rd_desc(&f.pool, l3, 0), a_leaf(GiB(2), 3, RW, NORMAL, 1));
	CHECK_EQ(rd_desc(&f.pool, l3, 1), a_leaf(GiB(9), 3, S2PT_PROT_R, 1, 1));
	CHECK_EQ(rc_at(&f.pool, l3), 3);
	CHECK_EQ(f.pt.table_pages, 4);
	/* Identical remap: nothing at all changes. */
	{
		struct snap s;

		snap_take(&s, &f);
		CHECK_EQ(s2pt_map(&f.pt, GiB(1), GiB(2), 4096, RW, NORMAL, 0), 0);
		CHECK_UNCHANGED(&s, &f);
		snap_free(&s);
	}
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_split_block_by_unmap_one_page)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	const uint64_t blk = GiB(1), pa = 0x80000000ull, hole = GiB(1) + 0x123000ull;
	uint64_t un = 0, l2, l3;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, blk, pa, GiB(1), RW, NORMAL, 0), 0);
	CHECK_EQ(f.pt.table_pages, 2);
	REQUIRE_EQ(s2pt_unmap(&f.pt, hole, 4096, &un), 0);
	CHECK_EQ(un, 4096);
	CHECK_EQ(f.pt.table_pages, 4); /* two new tables: level 2 and level 3 */
	CHECK_EQ(f.pool.used, 4);
	l2 = sw_table(&f.pt, hole, 2);
	l3 = sw_table(&f.pt, hole, 3);
	REQUIRE(l2 && l3);
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 1), l2 | 3);
	CHECK_EQ(rd_desc(&f.pool, l2, 0), l3 | 3);
	for (uint64_t i = 1; i < 512; i++)
		if (rd_desc(&f.pool, l2, i) != a_leaf(pa + i * MiB(2), 2, RW, NORMAL, 1)) {
			CHECK_EQ(rd_desc(&f.pool, l2, i), a_leaf(pa + i * MiB(2), 2, RW, NORMAL, 1));
			break;
		}
	for (uint64_t j = 0; j < 512; j++) {
		uint64_t want = j == 0x123 ? 0 : a_leaf(pa + j * 4096, 3, RW, NORMAL, 1);

		if (rd_desc(&f.pool, l3, j) != want) {
			CHECK_EQ(rd_desc(&f.pool, l3, j), want);
			break;
		}
	}
	CHECK_EQ(rc_at(&f.pool, l2), 513);
	CHECK_EQ(rc_at(&f.pool, l3), 512);
	CHECK_EQ(rc_at(&f.pool, f.pt.root_pa), 2);
	/* The hole faults at level 3; the rest translates as before. */
	CHECK_EQ(s2pt_translate(&f.pt, hole, S2PT_ACCESS_READ, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.level, 3);
	REQUIRE_EQ(s2pt_translate(&f.pt, hole - 4096 + 5, S2PT_ACCESS_WRITE, &t, &flt), 0);
	CHECK_EQ(t.pa, pa + 0x122000 + 5);
	CHECK_EQ(t.level, 3);
	REQUIRE_EQ(s2pt_translate(&f.pt, hole + 4096, S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.pa, pa + 0x124000);
	REQUIRE_EQ(s2pt_translate(&f.pt, blk + MiB(2) + 7, S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.pa, pa + MiB(2) + 7);
	CHECK_EQ(t.level, 2);
	CHECK_EQ(t.size, MiB(2));
	REQUIRE_EQ(s2pt_translate(&f.pt, blk + GiB(1) - 1, S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.pa, pa + GiB(1) - 1);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_split_block_by_partial_map)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), GiB(3), GiB(1), RW, NORMAL, 0), 0);
	/* Remap one page inside the block elsewhere: the block is split, the rest stays. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1) + MiB(5), GiB(10), 4096, S2PT_PROT_R, NORMAL, 0), 0);
	CHECK_EQ(f.pt.table_pages, 4);
	REQUIRE_EQ(s2pt_translate(&f.pt, GiB(1) + MiB(5), S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.pa, GiB(10));
	CHECK_EQ(t.prot, S2PT_PROT_R);
	REQUIRE_EQ(s2pt_translate(&f.pt, GiB(1) + MiB(5) + 4096, S2PT_ACCESS_WRITE, &t, &flt), 0);
	CHECK_EQ(t.pa, GiB(3) + MiB(5) + 4096);
	CHECK_EQ(t.level, 3);
	REQUIRE_EQ(s2pt_translate(&f.pt, GiB(1) + MiB(4) - 1, S2PT_ACCESS_WRITE, &t, &flt), 0);
	CHECK_EQ(t.pa, GiB(3) + MiB(4) - 1);
	CHECK_EQ(t.level, 2);
	CHECK_EQ(rc_at(&f.pool, sw_table(&f.pt, GiB(1), 2)), 513);
	CHECK_EQ(rc_at(&f.pool, sw_table(&f.pt, GiB(1) + MiB(5), 3)), 513);
	CHECK_INVARIANTS(&f.pt);

	/* A map that matches the block where it lands needs no split: nothing changes. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(20), GiB(3), GiB(1), RW, NORMAL, 0), 0);
	{
		struct snap s;

		snap_take(&s, &f);
		CHECK_EQ(s2pt_map(&f.pt, GiB(20) + MiB(6), GiB(3) + MiB(6), KiB(12), RW, NORMAL, 0), 0);
		CHECK_UNCHANGED(&s, &f);
		snap_free(&s);
	}
	fx_fini(&f);
}

TEST(map_coalesce_table_into_block)
{
	struct fx f;
	uint64_t l2, l3;
	uint32_t used;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, MiB(4), GiB(2), MiB(2), RW, NORMAL, S2PT_MAP_NO_BLOCKS), 0);
	l2 = sw_table(&f.pt, MiB(4), 2);
	l3 = sw_table(&f.pt, MiB(4), 3);
	used = f.pool.used;
	CHECK_EQ(used, 4);
	/* The whole 2 MiB span, blocks allowed: the level-3 table becomes one block. */
	REQUIRE_EQ(s2pt_map(&f.pt, MiB(4), GiB(4), MiB(2), S2PT_PROT_R, NORMAL, 0), 0);
	CHECK_EQ(f.pool.used, used - 1);
	CHECK_EQ(f.pt.table_pages, 3);
	CHECK_EQ(rd_desc(&f.pool, l2, 2), a_leaf(GiB(4), 2, S2PT_PROT_R, NORMAL, 1));
	CHECK_EQ(rc_at(&f.pool, l2), 2);
	CHECK_EQ(rc_at(&f.pool, l3), 0);
	CHECK_EQ(nonzero_entries(&f.pool, l3), 0);
	CHECK_INVARIANTS(&f.pt);

	/* A 1 GiB block over a level-2 table that has a level-3 table below it. */
	REQUIRE_EQ(s2pt_map(&f.pt, MiB(10), GiB(4), KiB(8), RW, NORMAL, 0), 0);
	CHECK_EQ(f.pt.table_pages, 4);
	REQUIRE_EQ(s2pt_map(&f.pt, 0, GiB(7), GiB(1), RW, NORMAL, 0), 0);
	CHECK_EQ(f.pt.table_pages, 2);
	CHECK_EQ(f.pool.used, 2);
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 0), a_leaf(GiB(7), 1, RW, NORMAL, 1));
	CHECK_EQ(rc_at(&f.pool, f.pt.root_pa), 2);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_ipa_space_end_and_start)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	const uint64_t top = 1ull << 40;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	CHECK_EQ(s2pt_map(&f.pt, top - 4096, GiB(1), 4096, RW, NORMAL, 0), 0);
	CHECK_EQ(s2pt_map(&f.pt, top - GiB(1), GiB(1), GiB(1), RW, NORMAL, 0), 0);
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 1023), a_leaf(GiB(1), 1, RW, NORMAL, 1));
	REQUIRE_EQ(s2pt_translate(&f.pt, top - 1, S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.pa, GiB(2) - 1);
	CHECK_EQ(s2pt_map(&f.pt, 0, 0, 4096, RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_translate(&f.pt, 0, S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.pa, 0);
	/* pa + size may reach 2^pa_bits exactly. */
	CHECK_EQ(s2pt_map(&f.pt, GiB(5), (1ull << 48) - GiB(1), GiB(1), RW, NORMAL, 0), 0);
	CHECK_EQ(sw_desc(&f.pt, GiB(5), 1), a_leaf((1ull << 48) - GiB(1), 1, RW, NORMAL, 1));
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_4k_ipa32_root_at_level2)
{
	struct fx f;

	/* 4 concatenated level-2 root pages; 1 GiB = 512 level-2 blocks in root page 1. */
	REQUIRE_EQ(fx_init(&f, 32, 4096, 40, 16, 0x40000000ull), 0);
	CHECK_EQ(f.cfg.root_tables, 4);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), GiB(5), GiB(1), RW, NORMAL, 0), 0);
	CHECK_EQ(f.pt.table_pages, 4);
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 512), a_leaf(GiB(5), 2, RW, NORMAL, 1));
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 1023), a_leaf(GiB(6) - MiB(2), 2, RW, NORMAL, 1));
	CHECK_EQ(nonzero_entries(&f.pool, f.pt.root_pa + 4096), 512);
	CHECK_EQ(rc_at(&f.pool, f.pt.root_pa + 4096), 513);
	CHECK_EQ(rc_at(&f.pool, f.pt.root_pa), 1);
	/* A page in the last root page: index (ipa >> 21) = 2047. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(4) - 4096, GiB(2), 4096, RW, NORMAL, 0), 0);
	{
		uint64_t d = rd_desc(&f.pool, f.pt.root_pa, 2047);

		CHECK_EQ(d & 3, 3);
		CHECK_EQ(rd_desc(&f.pool, d & ~0xfffull, 511), a_leaf(GiB(2), 3, RW, NORMAL, 1));
	}
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_4k_ipa44_start_level0)
{
	struct fx f;
	/* ipa >> 39 = 17; (>> 30) & 511 = 3; (>> 21) & 511 = 4; (>> 12) & 511 = 5 */
	const uint64_t ipa = (17ull << 39) | (3ull << 30) | (4ull << 21) | (5ull << 12);
	uint64_t d0, d1, d2;

	REQUIRE_EQ(fx_init(&f, 44, 4096, 48, 16, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, ipa, GiB(1), 4096, RW, NORMAL, 0), 0);
	CHECK_EQ(f.pt.table_pages, 4);
	d0 = rd_desc(&f.pool, f.pt.root_pa, 17);
	CHECK_EQ(d0 & 0xfff, 3);
	d1 = rd_desc(&f.pool, d0 & ~0xfffull, 3);
	CHECK_EQ(d1 & 0xfff, 3);
	d2 = rd_desc(&f.pool, d1 & ~0xfffull, 4);
	CHECK_EQ(d2 & 0xfff, 3);
	CHECK_EQ(rd_desc(&f.pool, d2 & ~0xfffull, 5), a_leaf(GiB(1), 3, RW, NORMAL, 1));
	/* A 1 GiB block sits at level 1 under a level-0 table (no level-0 blocks). */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), GiB(1), GiB(1), RW, NORMAL, 0), 0);
	CHECK_EQ(sw_desc(&f.pt, GiB(1), 1), a_leaf(GiB(1), 1, RW, NORMAL, 1));
	CHECK_EQ(f.pt.table_pages, 5);
	/* 512 GiB aligned: still 512 level-1 blocks, never a level-0 block. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(512), GiB(512), GiB(512), RW, NORMAL, 0), 0);
	CHECK_EQ(sw_desc(&f.pt, GiB(512), 0) & 3, 3);
	CHECK_EQ(sw_desc(&f.pt, GiB(1023), 1), a_leaf(GiB(1023), 1, RW, NORMAL, 1));
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_16k_and_64k_geometry)
{
	struct fx f;
	uint64_t d;

	/* 16K / 40: 16 concatenated level-2 root pages of 2048 entries, 32 MiB blocks. */
	REQUIRE_EQ(fx_init(&f, 40, 16384, 48, 32, 0x40004000ull), 0);
	CHECK_EQ(f.pt.root_pa % (16 * 16384), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, (1ull << 40) - MiB(32), GiB(2), MiB(32), RW, NORMAL, 0), 0);
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 32767), a_leaf(GiB(2), 2, RW, NORMAL, 1));
	CHECK_EQ(pa_ptr(&f.pool, f.pt.root_pa + 15 * 16384)[2047], a_leaf(GiB(2), 2, RW, NORMAL, 1));
	CHECK_EQ(rc_at(&f.pool, f.pt.root_pa + 15 * 16384), 2);
	/* A 16 KiB page: index (ipa >> 25) in the root, (ipa >> 14) & 2047 below. */
	REQUIRE_EQ(s2pt_map(&f.pt, MiB(32) * 5 + 16384 * 7, GiB(3), 16384, RW, NORMAL, 0), 0);
	d = rd_desc(&f.pool, f.pt.root_pa, 5);
	CHECK_EQ(d & 0x3fff, 3);
	CHECK_EQ(rd_desc(&f.pool, d & ~0x3fffull, 7), a_leaf(GiB(3), 3, RW, NORMAL, 1));
	CHECK_EQ(f.pt.table_pages, 17);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);

	/* 16K / 47: 3 levels from level 1; level-1 entries span 64 GiB but hold no blocks. */
	REQUIRE_EQ(fx_init(&f, 47, 16384, 48, 32, 0x40000000ull), 0);
	CHECK_EQ(f.cfg.start_level, 1);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(64), GiB(64), GiB(64), RW, NORMAL, 0), 0);
	CHECK_EQ(sw_desc(&f.pt, GiB(64), 1) & 3, 3);
	CHECK_EQ(sw_desc(&f.pt, GiB(64), 2), a_leaf(GiB(64), 2, RW, NORMAL, 1));
	CHECK_EQ(f.pt.table_pages, 2);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);

	/* 64K / 32: 8 root entries of 512 MiB, 64 KiB pages. */
	REQUIRE_EQ(fx_init(&f, 32, 65536, 32, 8, 0x40000000ull), 0);
	CHECK_EQ(f.cfg.root_entries, 8);
	REQUIRE_EQ(s2pt_map(&f.pt, MiB(512), GiB(1), MiB(512), RW, NORMAL, 0), 0);
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 1), a_leaf(GiB(1), 2, RW, NORMAL, 1));
	REQUIRE_EQ(s2pt_map(&f.pt, 0x10000ull * 3, GiB(2), 65536, RW, NORMAL, 0), 0);
	d = rd_desc(&f.pool, f.pt.root_pa, 0);
	CHECK_EQ(d & 0xffff, 3);
	CHECK_EQ(rd_desc(&f.pool, d & ~0xffffull, 3), a_leaf(GiB(2), 3, RW, NORMAL, 1));
	CHECK_EQ(f.pt.table_pages, 2);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);

	/* 64K / 47: level-1 root, 512 MiB blocks at level 2 only. */
	REQUIRE_EQ(fx_init(&f, 47, 65536, 48, 8, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, (1ull << 42) * 31, GiB(4), (1ull << 42), RW, NORMAL, 0), 0);
	CHECK_EQ(sw_desc(&f.pt, (1ull << 42) * 31, 1) & 3, 3);
	CHECK_EQ(sw_desc(&f.pt, (1ull << 42) * 31 + MiB(512), 2),
		 a_leaf(GiB(4) + MiB(512), 2, RW, NORMAL, 1));
	CHECK_EQ(f.pt.table_pages, 2);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_from_vtcr_single_level_64k)
{
	/* 64K, IPA 32, SL0 0: one level (start 3) of 8 concatenated tables of page descriptors. */
	struct fx f;
	struct s2pt_config cfg;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	uint64_t vtcr = 32 | 0ull << 6 | 1ull << 8 | 1ull << 10 | 3ull << 12 | 1ull << 14 |
			5ull << 16 | 1ull << 31;

	REQUIRE_EQ(s2pt_config_from_vtcr(&cfg, vtcr, 1, 0), 0);
	REQUIRE_EQ(cfg.start_level, 3);
	REQUIRE_EQ(fx_pool(&f, 65536, 16, 0x40000000ull), 0);
	f.cfg = cfg;
	REQUIRE_EQ(s2pt_pgtable_init(&f.pt, &f.cfg, &f.pool), 0);
	f.have_pt = 1;
	CHECK_EQ(f.pt.table_pages, 8);
	CHECK_EQ(f.pt.root_pa % (8 * 65536), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(3) + 0x70000, GiB(1), 0x20000, RW, NORMAL, 0), 0);
	/* ipa >> 16 = 49159: root page 6, entry 7. */
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 49159), a_leaf(GiB(1), 3, RW, NORMAL, 1));
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 49160), a_leaf(GiB(1) + 65536, 3, RW, NORMAL, 1));
	CHECK_EQ(rc_at(&f.pool, f.pt.root_pa + 6 * 65536), 3);
	REQUIRE_EQ(s2pt_translate(&f.pt, GiB(3) + 0x80004, S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.pa, GiB(1) + 0x10004);
	CHECK_EQ(t.level, 3);
	CHECK_EQ(f.pt.table_pages, 8);
	CHECK_INVARIANTS(&f.pt);
	CHECK_EQ(s2pt_unmap(&f.pt, GiB(3), GiB(1), NULL), 0);
	CHECK_EQ(rc_at(&f.pool, f.pt.root_pa + 6 * 65536), 1);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_from_vtcr_partial_level1_root_4k)
{
	/* 4K, IPA 34, SL0 1: starts at level 1 with a 16-entry root (KVM would use level 2). */
	struct fx f;
	struct s2pt_config cfg;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	uint64_t vtcr = 30 | 1ull << 6 | 1ull << 8 | 1ull << 10 | 3ull << 12 | 5ull << 16 | 1ull << 31;

	REQUIRE_EQ(s2pt_config_from_vtcr(&cfg, vtcr, 1, 0), 0);
	REQUIRE_EQ(cfg.start_level, 1);
	REQUIRE_EQ(cfg.root_entries, 16);
	REQUIRE_EQ(fx_pool(&f, 4096, 16, 0x40000000ull), 0);
	f.cfg = cfg;
	REQUIRE_EQ(s2pt_pgtable_init(&f.pt, &f.cfg, &f.pool), 0);
	f.have_pt = 1;
	CHECK_EQ(f.pt.table_pages, 1);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(15), GiB(3), GiB(1), RW, NORMAL, 0), 0);
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 15), a_leaf(GiB(3), 1, RW, NORMAL, 1));
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2) + MiB(2) + KiB(4), GiB(3), KiB(4), RW, NORMAL, 0), 0);
	CHECK_EQ(f.pt.table_pages, 3);
	REQUIRE_EQ(s2pt_translate(&f.pt, GiB(16) - 1, S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.pa, GiB(4) - 1);
	CHECK_EQ(s2pt_translate(&f.pt, GiB(16), S2PT_ACCESS_READ, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.level, 0);
	CHECK_EQ(s2pt_map(&f.pt, GiB(15), GiB(3), GiB(1) + KiB(4), RW, NORMAL, 0), S2PT_ERANGE);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	CHECK_EQ(s2pt_unmap(&f.pt, 0, GiB(16), NULL), 0);
	CHECK_EQ(f.pt.table_pages, 1);
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);
}
