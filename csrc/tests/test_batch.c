/* s2pt_map_many() / s2pt_unmap_many(): order, totals, and which errors change what. */
#include "s2pt_testlib.h"

#define RW (S2PT_PROT_R | S2PT_PROT_W)
#define NORMAL S2PT_MEMATTR_NORMAL

TEST(map_many_applies_in_order)
{
	struct fx f;
	/* Element 1 overlaps element 0's page: order decides which PA wins. */
	const uint64_t ipas[] = {MiB(2), MiB(2), GiB(1), MiB(4)};
	const uint64_t pas[] = {GiB(1), GiB(2), GiB(3), GiB(4)};
	const uint64_t sizes[] = {KiB(4), KiB(4), MiB(2), KiB(8)};
	size_t done = 99;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 64, 0x40000000ull), 0);
	CHECK_EQ(s2pt_map_many(&f.pt, ipas, pas, sizes, 1, 4, RW, NORMAL, 0, &done), 0);
	CHECK_EQ(done, 4);
	CHECK_EQ(sw_desc(&f.pt, MiB(2), 3), a_leaf(GiB(2), 3, RW, NORMAL, 1));
	/* 2 MiB at a 2 MiB-aligned IPA and PA: one level-2 block. */
	CHECK_EQ(sw_desc(&f.pt, GiB(1), 2), a_leaf(GiB(3), 2, RW, NORMAL, 1));
	CHECK_EQ(sw_desc(&f.pt, MiB(4) + KiB(4), 3), a_leaf(GiB(4) + KiB(4), 3, RW, NORMAL, 1));
	/* 2 roots + L2 for GiB 0 + L3s for [2, 4) and [4, 6) MiB + L2 for GiB 1 (block) = 6. */
	CHECK_EQ(f.pt.table_pages, 6);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(map_many_one_size_for_all)
{
	struct fx f;
	const uint64_t ipas[] = {0, KiB(64), KiB(128)};
	const uint64_t pas[] = {GiB(1), GiB(1), GiB(2)};
	const uint64_t size = KiB(16);
	size_t done;
	struct s2pt_stats st;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 64, 0x40000000ull), 0);
	CHECK_EQ(s2pt_map_many(&f.pt, ipas, pas, &size, 0, 3, RW, NORMAL, 0, &done), 0);
	CHECK_EQ(done, 3);
	REQUIRE_EQ(s2pt_stats(&f.pt, &st), 0);
	CHECK_EQ(st.mapped_bytes, 3 * KiB(16));
	CHECK_EQ(st.leaves_by_level[3], 12);
	fx_fini(&f);
}

TEST(map_many_bad_element_changes_nothing)
{
	struct fx f;
	struct snap s;
	const uint64_t ipas[] = {0, KiB(4), KiB(8) + 1, KiB(12)};
	const uint64_t pas[] = {GiB(1), GiB(1), GiB(1), GiB(1)};
	const uint64_t size = KiB(4);
	const uint64_t big_pa[] = {GiB(1), (1ull << 48) - KiB(4), GiB(1)};
	const uint64_t sizes2[] = {KiB(4), KiB(8), KiB(4)};
	size_t done = 99;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 64, 0x40000000ull), 0);
	fx_log(&f, 64);
	snap_take(&s, &f);
	/* Element 2 is misaligned: the elements before it must not have been applied. */
	CHECK_EQ(s2pt_map_many(&f.pt, ipas, pas, &size, 0, 4, RW, NORMAL, 0, &done), S2PT_EALIGN);
	CHECK_EQ(done, 2);
	CHECK_UNCHANGED(&s, &f);
	/* Element 1's output runs past 2^48. */
	CHECK_EQ(s2pt_map_many(&f.pt, ipas, big_pa, sizes2, 1, 3, RW, NORMAL, 0, &done),
		 S2PT_ERANGE);
	CHECK_EQ(done, 1);
	CHECK_UNCHANGED(&s, &f);
	/* A bad prot is the first element's error. */
	CHECK_EQ(s2pt_map_many(&f.pt, ipas, pas, &size, 0, 2, 0x10, NORMAL, 0, &done), S2PT_EINVAL);
	CHECK_EQ(done, 0);
	CHECK_UNCHANGED(&s, &f);
	snap_free(&s);
	fx_fini(&f);
}

TEST(map_many_pool_exhaustion_stops_at_the_element)
{
	struct fx f;
	struct snap s;
	/* 4K/40: 2 root pages; each page in a new 1 GiB region needs an L2 and an L3 table. */
	const uint64_t ipas[] = {0, GiB(1), GiB(2)};
	const uint64_t pas[] = {GiB(1), GiB(1), GiB(1)};
	const uint64_t size = KiB(4);
	size_t done = 99;
	uint64_t un;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 5, 0x40000000ull), 0);
	REQUIRE_EQ(f.pool.used, 2);
	CHECK_EQ(s2pt_map_many(&f.pt, ipas, pas, &size, 0, 3, RW, NORMAL, 0, &done), S2PT_ENOMEM);
	CHECK_EQ(done, 1);
	/* Element 0 stays applied; element 1 took nothing from the pool. */
	CHECK_EQ(f.pool.used, 4);
	CHECK_EQ(sw_desc(&f.pt, 0, 3), a_leaf(GiB(1), 3, RW, NORMAL, 1));
	CHECK_EQ(sw_desc(&f.pt, GiB(1), 2), 0);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	/* The same failure again changes nothing at all. */
	snap_take(&s, &f);
	CHECK_EQ(s2pt_map_many(&f.pt, ipas + 1, pas, &size, 0, 1, RW, NORMAL, 0, &done), S2PT_ENOMEM);
	CHECK_EQ(done, 0);
	CHECK_UNCHANGED(&s, &f);
	snap_free(&s);
	CHECK_EQ(s2pt_unmap(&f.pt, 0, GiB(1), &un), 0);
	CHECK_EQ(un, KiB(4));
	fx_fini(&f);
}

TEST(unmap_many_totals_and_frees)
{
	struct fx f;
	const uint64_t ipas[] = {0, MiB(2), GiB(1), 0};
	const uint64_t sizes[] = {KiB(8), MiB(2), MiB(2), KiB(4)};
	uint64_t un = 99;
	size_t done = 99;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 64, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 0, GiB(1), MiB(4), RW, NORMAL, S2PT_MAP_NO_BLOCKS), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), GiB(2), MiB(2), RW, NORMAL, 0), 0);
	/* Elements: 8 KiB of pages, a whole L3 table's pages, a block, then nothing (already
	 * unmapped by element 0). */
	CHECK_EQ(s2pt_unmap_many(&f.pt, ipas, sizes, 1, 4, &un, &done), 0);
	CHECK_EQ(done, 4);
	CHECK_EQ(un, KiB(8) + MiB(2) + MiB(2));
	/* Left: pages 8 KiB .. 2 MiB in GiB 0 (roots + L2 + one L3); GiB 1's L2 is freed. */
	CHECK_EQ(f.pt.table_pages, 4);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(unmap_many_bad_element_changes_nothing)
{
	struct fx f;
	struct snap s;
	const uint64_t ipas[] = {0, GiB(1024) - KiB(4)};
	const uint64_t sizes[] = {KiB(4), KiB(8)}; /* element 1 runs past 2^40 */
	uint64_t un = 99;
	size_t done = 99;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 64, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 0, GiB(1), KiB(4), RW, NORMAL, 0), 0);
	fx_log(&f, 64);
	snap_take(&s, &f);
	CHECK_EQ(s2pt_unmap_many(&f.pt, ipas, sizes, 1, 2, &un, &done), S2PT_ERANGE);
	CHECK_EQ(done, 1);
	CHECK_EQ(un, 0);
	CHECK_UNCHANGED(&s, &f);
	snap_free(&s);
	fx_fini(&f);
}
