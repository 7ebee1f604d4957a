/*
 * TLB-invalidation events: what changed in entries hardware may have cached (valid leaves and
 * tables) must be announced; changes to invalid entries need nothing.
 */
#include <string.h>

#include "s2pt_testlib.h"

#define RW (S2PT_PROT_R | S2PT_PROT_W)
#define NORMAL S2PT_MEMATTR_NORMAL

static int covers(const struct fx *f, uint64_t ipa)
{
	for (uint32_t i = 0; i < f->log.count; i++) {
		const struct s2pt_tlbi *e = &f->log.events[i];

		if (e->kind == S2PT_TLBI_VMID)
			return 1;
		if (ipa >= e->ipa && ipa - e->ipa < e->size)
			return 1;
	}
	return 0;
}

TEST(tlbi_unmap_valid_page)
{
	struct fx f;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(4), KiB(8), RW, NORMAL, 0), 0);
	fx_log(&f, 16);
	REQUIRE_EQ(s2pt_unmap(&f.pt, GiB(2) + KiB(4), KiB(4), NULL), 0);
	REQUIRE_EQ(f.log.count, 1);
	check_tlbi(&f.events[0], S2PT_TLBI_IPA, GiB(2) + KiB(4), KiB(4), 3);
	CHECK_EQ(f.log.overflowed, 0);
	/* Unmapping a hole: nothing was cached, no event. */
	REQUIRE_EQ(s2pt_unmap(&f.pt, GiB(2) + KiB(4), KiB(4), NULL), 0);
	CHECK_EQ(f.log.count, 1);
	fx_fini(&f);
}

TEST(tlbi_freed_tables)
{
	struct fx f;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2) + MiB(4) + KiB(12), GiB(4), KiB(4), RW, NORMAL, 0), 0);
	fx_log(&f, 16);
	REQUIRE_EQ(s2pt_unmap(&f.pt, GiB(2) + MiB(4) + KiB(12), KiB(4), NULL), 0);
	/* The page, then the level-3 table (a level-2 entry, 2 MiB), then the level-2 table. */
	REQUIRE_EQ(f.log.count, 3);
	check_tlbi(&f.events[0], S2PT_TLBI_IPA, GiB(2) + MiB(4) + KiB(12), KiB(4), 3);
	check_tlbi(&f.events[1], S2PT_TLBI_IPA, GiB(2) + MiB(4), MiB(2), S2PT_TLBI_LEVEL_UNKNOWN);
	check_tlbi(&f.events[2], S2PT_TLBI_IPA, GiB(2), GiB(1), S2PT_TLBI_LEVEL_UNKNOWN);
	CHECK_EQ(f.pt.table_pages, 2);
	fx_fini(&f);
}

TEST(tlbi_map_replace_identical_and_new)
{
	struct fx f;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	fx_log(&f, 16);
	/* New mappings over invalid entries: nothing to invalidate. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(4), KiB(8), RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(3), GiB(4), GiB(1), RW, NORMAL, 0), 0);
	CHECK_EQ(f.log.count, 0);
	/* Identical remap: no event. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(4), KiB(8), RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(3), GiB(4), GiB(1), RW, NORMAL, 0), 0);
	CHECK_EQ(f.log.count, 0);
	/* Replacing a valid leaf: one IPA event with the leaf level. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2) + KiB(4), GiB(5), KiB(4), RW, NORMAL, 0), 0);
	REQUIRE_EQ(f.log.count, 1);
	check_tlbi(&f.events[0], S2PT_TLBI_IPA, GiB(2) + KiB(4), KiB(4), 3);
	/* Different attributes only (AF): still a change. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(3), GiB(4), GiB(1), RW, NORMAL, S2PT_MAP_NO_AF), 0);
	REQUIRE_EQ(f.log.count, 2);
	check_tlbi(&f.events[1], S2PT_TLBI_IPA, GiB(3), GiB(1), 1);
	fx_fini(&f);
}

TEST(tlbi_protect)
{
	struct fx f;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(4), KiB(8), RW, NORMAL, 0), 0);
	fx_log(&f, 16);
	REQUIRE_EQ(s2pt_protect(&f.pt, GiB(2), KiB(16), RW), 0);
	CHECK_EQ(f.log.count, 0);
	REQUIRE_EQ(s2pt_protect(&f.pt, GiB(2), KiB(16), S2PT_PROT_R), 0);
	REQUIRE_EQ(f.log.count, 2);
	check_tlbi(&f.events[0], S2PT_TLBI_IPA, GiB(2), KiB(4), 3);
	check_tlbi(&f.events[1], S2PT_TLBI_IPA, GiB(2) + KiB(4), KiB(4), 3);
	fx_fini(&f);
}

TEST(tlbi_split_and_coalesce_cover_old_leaves)
{
	struct fx f;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), GiB(4), GiB(1), RW, NORMAL, 0), 0);
	fx_log(&f, 16);
	/* The 1 GiB block was valid and is replaced by a table: it must be invalidated. */
	REQUIRE_EQ(s2pt_unmap(&f.pt, GiB(1) + MiB(6), KiB(4), NULL), 0);
	CHECK(f.log.count >= 1);
	CHECK(covers(&f, GiB(1)));
	CHECK(covers(&f, GiB(2) - 1));
	CHECK(covers(&f, GiB(1) + MiB(6)));
	/* Coalescing: every old leaf under the freed table is covered. */
	fx_log(&f, 16);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1) + MiB(6), GiB(8), MiB(2), RW, NORMAL, 0), 0);
	CHECK(f.log.count >= 1);
	CHECK(covers(&f, GiB(1) + MiB(6) + KiB(4)));
	CHECK(covers(&f, GiB(1) + MiB(8) - KiB(4)));
	fx_fini(&f);
}

TEST(tlbi_overflow_collapses_to_vmid)
{
	struct fx f;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(4), KiB(64), RW, NORMAL, 0), 0);
	fx_log(&f, 2);
	for (int i = 0; i < 5; i++)
		REQUIRE_EQ(s2pt_unmap(&f.pt, GiB(2) + KiB(4) * (uint64_t)i, KiB(4), NULL), 0);
	CHECK_EQ(f.log.overflowed, 1);
	REQUIRE_EQ(f.log.count, 1);
	CHECK_EQ(f.events[0].kind, S2PT_TLBI_VMID);
	CHECK_EQ(f.events[0].level, S2PT_TLBI_LEVEL_UNKNOWN);
	/* Exactly at capacity is not an overflow. */
	fx_log(&f, 2);
	REQUIRE_EQ(s2pt_unmap(&f.pt, GiB(2) + KiB(20), KiB(8), NULL), 0);
	CHECK_EQ(f.log.count, 2);
	CHECK_EQ(f.log.overflowed, 0);
	/* Capacity 0: logging off. */
	fx_log(&f, 0);
	REQUIRE_EQ(s2pt_unmap(&f.pt, GiB(2) + KiB(28), KiB(4), NULL), 0);
	CHECK_EQ(f.log.count, 0);
	CHECK_EQ(f.log.overflowed, 0);
	fx_fini(&f);
}

TEST(tlbi_destroy_vmid_event)
{
	struct fx f;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(4), MiB(3), RW, NORMAL, 0), 0);
	fx_log(&f, 16);
	s2pt_pgtable_destroy(&f.pt);
	REQUIRE(f.log.count >= 1);
	check_tlbi(&f.events[f.log.count - 1], S2PT_TLBI_VMID, 0, 0, S2PT_TLBI_LEVEL_UNKNOWN);
	CHECK_EQ(f.pool.used, 0);
	fx_fini(&f);
}

/* s2pt_set_af(): whole leaves in place, invalidation only when AF is cleared. */
TEST(set_af_in_place_and_events)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	uint64_t young = 99;
	uint32_t pages;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(4), KiB(4), RW, NORMAL, S2PT_MAP_NO_AF), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2) + KiB(4), GiB(5), KiB(4), RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(3), GiB(6), GiB(1), RW, NORMAL, 0), 0);
	pages = f.pt.table_pages;
	fx_log(&f, 16);

	REQUIRE_EQ(s2pt_set_af(&f.pt, GiB(2), KiB(16), 0, &young), 0);
	CHECK_EQ(young, 1);
	CHECK_EQ(sw_desc(&f.pt, GiB(2), 3), a_leaf(GiB(4), 3, RW, NORMAL, 0));
	CHECK_EQ(sw_desc(&f.pt, GiB(2) + KiB(4), 3), a_leaf(GiB(5), 3, RW, NORMAL, 0));
	REQUIRE_EQ(f.log.count, 1);
	check_tlbi(&f.events[0], S2PT_TLBI_IPA, GiB(2) + KiB(4), KiB(4), 3);
	CHECK_EQ(s2pt_translate(&f.pt, GiB(2) + KiB(4), S2PT_ACCESS_READ, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.kind, S2PT_FAULT_ACCESS_FLAG);
	CHECK_EQ(flt.fsc, 0x0B);

	/* Setting AF needs no invalidation (an entry with AF = 0 is never cached). */
	fx_log(&f, 16);
	REQUIRE_EQ(s2pt_set_af(&f.pt, GiB(2), KiB(8), 1, &young), 0);
	CHECK_EQ(young, 0);
	CHECK_EQ(f.log.count, 0);
	CHECK_EQ(sw_desc(&f.pt, GiB(2), 3), a_leaf(GiB(4), 3, RW, NORMAL, 1));
	CHECK_EQ(s2pt_translate(&f.pt, GiB(2) + KiB(4), S2PT_ACCESS_READ, &t, &flt), 0);

	/* Part of a block: the whole block, in place, no split. */
	REQUIRE_EQ(s2pt_set_af(&f.pt, GiB(3) + MiB(5), KiB(4), 0, &young), 0);
	CHECK_EQ(young, 1);
	CHECK_EQ(f.pt.table_pages, pages);
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 3), a_leaf(GiB(6), 1, RW, NORMAL, 0));
	REQUIRE_EQ(f.log.count, 1);
	check_tlbi(&f.events[0], S2PT_TLBI_IPA, GiB(3), GiB(1), 1);

	/* Errors change nothing. */
	{
		struct snap s;

		snap_take(&s, &f);
		young = 5;
		CHECK_EQ(s2pt_set_af(&f.pt, GiB(2) + 1, KiB(4), 1, &young), S2PT_EALIGN);
		CHECK_EQ(young, 0);
		CHECK_EQ(s2pt_set_af(&f.pt, (1ull << 40) - KiB(4), KiB(8), 1, NULL), S2PT_ERANGE);
		CHECK_EQ(s2pt_set_af(&f.pt, 0xFFFFFFFFFFFFF000ull, KiB(8), 1, NULL), S2PT_ERANGE);
		CHECK_UNCHANGED(&s, &f);
		snap_free(&s);
	}
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}
