/*
 * s2pt_map_fault(): a map that resolves a translation fault writes the entry the faulting walk
 * stopped at, and must be indistinguishable from s2pt_map() (descriptors, counts, events,
 * errors) whether the fault is fresh, stale, from another page table, or NULL.
 */
#include <string.h>

#include "s2pt_testlib.h"

#define RW (S2PT_PROT_R | S2PT_PROT_W)
#define NORMAL S2PT_MEMATTR_NORMAL

static int translation_fault(struct fx *f, uint64_t ipa, struct s2pt_fault *out)
{
	struct s2pt_translation t;

	return s2pt_translate(&f->pt, ipa, S2PT_ACCESS_READ, &t, out);
}

TEST(map_fault_reports_the_faulting_entry)
{
	struct fx f;
	struct s2pt_fault flt;
	const uint64_t ipa = 0x40201000ull;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	/* Empty tree: the walk stops at the level-1 root entry (index ipa >> 30 = 1). */
	REQUIRE_EQ(translation_fault(&f, ipa, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.kind, S2PT_FAULT_TRANSLATION);
	CHECK_EQ(flt.level, 1);
	CHECK(flt.ptep == pa_ptr(&f.pool, f.pt.root_pa + 1 * 8));
	CHECK_EQ(flt.frees, f.pt.frees);
	/* With the level-3 table there, the walk stops at the page's own entry (index 1). */
	REQUIRE_EQ(s2pt_map(&f.pt, 0x40200000ull, 0x80000000ull, 4096, RW, NORMAL, 0), 0);
	REQUIRE_EQ(translation_fault(&f, ipa, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.level, 3);
	CHECK(flt.ptep == pa_ptr(&f.pool, sw_table(&f.pt, ipa, 3) + 1 * 8));
	fx_fini(&f);
}

/* Map the same leaf on two identical VMs, once through the fault and once plainly. */
static void same_as_map(uint32_t granule, uint64_t ipa, uint64_t pa, uint64_t size, int level)
{
	struct fx a, b;
	struct s2pt_fault flt;
	const uint32_t shift = granule == 4096 ? 12 : granule == 16384 ? 14 : 16;
	const uint64_t warm = ipa ^ (1ull << a_shift(shift, level));

	/* 16K at 40 bits has 16 concatenated root pages. */
	REQUIRE_EQ(fx_init(&a, 40, granule, 48, 64, 0x40000000ull), 0);
	REQUIRE_EQ(fx_init(&b, 40, granule, 48, 64, 0x40000000ull), 0);
	/* A neighbour at the same level, so that the tables down to @level exist. */
	REQUIRE_EQ(s2pt_map(&a.pt, warm & ~(size - 1), pa ^ size, size, RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&b.pt, warm & ~(size - 1), pa ^ size, size, RW, NORMAL, 0), 0);
	fx_log(&a, 16);
	fx_log(&b, 16);
	REQUIRE_EQ(translation_fault(&a, ipa + 8, &flt), S2PT_EFAULT);
	REQUIRE_EQ(flt.level, level);
	REQUIRE_EQ(s2pt_map_fault(&a.pt, &flt, ipa, pa, size, RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&b.pt, ipa, pa, size, RW, NORMAL, 0), 0);
	CHECK_EQ(sw_desc(&a.pt, ipa, level), a_leaf(pa, level, RW, NORMAL, 1));
	CHECK_EQ(sw_desc(&a.pt, ipa, level), sw_desc(&b.pt, ipa, level));
	CHECK_EQ(a.pool.used, b.pool.used);
	CHECK_EQ(a.log.count, 0); /* empty -> valid: nothing cached, nothing invalidated */
	CHECK_EQ(b.log.count, 0);
	CHECK_INVARIANTS(&a.pt);
	CHECK_REFCOUNTS(&a.pt);
	fx_fini(&a);
	fx_fini(&b);
}

TEST(map_fault_page_and_block_like_map)
{
	same_as_map(4096, 0x40201000ull, 0x80005000ull, 4096, 3);
	same_as_map(4096, 0x40400000ull, 0x80200000ull, 2u << 20, 2);
	same_as_map(16384, 0x40204000ull, 0x80008000ull, 16384, 3);
	same_as_map(16384, 0x42000000ull, 0x84000000ull, 32u << 20, 2);
	same_as_map(65536, 0x40210000ull, 0x80030000ull, 65536, 3);
}

TEST(map_fault_stale_or_foreign_fault_falls_back_to_map)
{
	struct fx f, g;
	struct s2pt_fault flt, other;
	const uint64_t ipa = 0x40201000ull;
	uint64_t unmapped;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	REQUIRE_EQ(fx_pool(&g, 4096, 16, 0x60000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 0x40200000ull, 0x80000000ull, 4096, RW, NORMAL, 0), 0);
	REQUIRE_EQ(translation_fault(&f, ipa, &flt), S2PT_EFAULT);
	REQUIRE_EQ(flt.level, 3);
	/* Unmapping the neighbour frees the level-2 and level-3 tables: flt.ptep now points into
	 * a free page. The map must rebuild the tables, not write the old entry. */
	REQUIRE_EQ(s2pt_unmap(&f.pt, 0x40200000ull, 4096, &unmapped), 0);
	CHECK_NE(flt.frees, f.pt.frees);
	REQUIRE_EQ(s2pt_map_fault(&f.pt, &flt, ipa, 0x80001000ull, 4096, RW, NORMAL, 0), 0);
	CHECK_EQ(sw_desc(&f.pt, ipa, 3), a_leaf(0x80001000ull, 3, RW, NORMAL, 1));
	CHECK_EQ(f.pt.table_pages, 4); /* 2 root pages, a level-2 and a level-3 table */
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);

	/* A fault of another VM's walk (another pool) is never written through. */
	{
		struct s2pt_config cfg;
		struct s2pt_pgtable pt2;

		REQUIRE_EQ(s2pt_config_init(&cfg, 40, 4096, 48, 2, 0), 0);
		REQUIRE_EQ(s2pt_pgtable_init(&pt2, &cfg, &g.pool), 0);
		REQUIRE_EQ(s2pt_translate(&pt2, 0x1000, S2PT_ACCESS_READ, &(struct s2pt_translation){0},
					  &other),
			   S2PT_EFAULT);
		REQUIRE_EQ(s2pt_map_fault(&f.pt, &other, 0x1000, 0x90000000ull, 4096, RW, NORMAL, 0),
			   0);
		CHECK_EQ(sw_desc(&f.pt, 0x1000, 3), a_leaf(0x90000000ull, 3, RW, NORMAL, 1));
		CHECK_EQ(nonzero_entries(&g.pool, pt2.root_pa), 0);
		s2pt_pgtable_destroy(&pt2);
	}
	/* NULL, and a fault for another size or IPA: plain s2pt_map(). */
	REQUIRE_EQ(s2pt_map_fault(&f.pt, NULL, 0x2000, 0x90001000ull, 4096, RW, NORMAL, 0), 0);
	CHECK_EQ(sw_desc(&f.pt, 0x2000, 3), a_leaf(0x90001000ull, 3, RW, NORMAL, 1));
	REQUIRE_EQ(translation_fault(&f, 0x3000, &flt), S2PT_EFAULT);
	REQUIRE_EQ(s2pt_map_fault(&f.pt, &flt, 0x4000, 0x90004000ull, 4096, RW, NORMAL, 0), 0);
	CHECK_EQ(sw_desc(&f.pt, 0x3000, 3), 0);
	CHECK_EQ(sw_desc(&f.pt, 0x4000, 3), a_leaf(0x90004000ull, 3, RW, NORMAL, 1));
	/* A level-3 fault and a 2 MiB map: the block needs the general path (a table there). */
	REQUIRE_EQ(translation_fault(&f, 0x5000, &flt), S2PT_EFAULT);
	REQUIRE_EQ(flt.level, 3);
	REQUIRE_EQ(s2pt_map_fault(&f.pt, &flt, 0x200000, 0x90200000ull, 2u << 20, RW, NORMAL, 0), 0);
	CHECK_EQ(sw_desc(&f.pt, 0x200000, 2), a_leaf(0x90200000ull, 2, RW, NORMAL, 1));
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&g);
	fx_fini(&f);
}

TEST(map_fault_bad_arguments_change_nothing)
{
	struct fx f;
	struct s2pt_fault flt;
	struct snap s;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 16, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 0, 0x80000000ull, 4096, RW, NORMAL, 0), 0);
	REQUIRE_EQ(translation_fault(&f, 0x1000, &flt), S2PT_EFAULT);
	snap_take(&s, &f);
	CHECK_EQ(s2pt_map_fault(&f.pt, &flt, 0x1000, 0x80001001ull, 4096, RW, NORMAL, 0),
		 S2PT_EALIGN);
	CHECK_EQ(s2pt_map_fault(&f.pt, &flt, 0x1000, 0x80001000ull, 4096, 0x10, NORMAL, 0),
		 S2PT_EINVAL);
	CHECK_EQ(s2pt_map_fault(&f.pt, &flt, 0x1000, 0x80001000ull, 4096, S2PT_PROT_X,
				S2PT_MEMATTR_DEVICE_nGnRnE, 0),
		 S2PT_EINVAL);
	CHECK_EQ(s2pt_map_fault(&f.pt, &flt, 1ull << 40, 0x80001000ull, 4096, RW, NORMAL, 0),
		 S2PT_ERANGE);
	CHECK_EQ(s2pt_map_fault(&f.pt, &flt, 0x1000, 1ull << 48, 4096, RW, NORMAL, 0), S2PT_ERANGE);
	CHECK_UNCHANGED(&s, &f);
	snap_free(&s);
	fx_fini(&f);
}
