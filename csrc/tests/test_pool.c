/* The pool: initialisation, root placement and alignment, reuse, exhaustion, sharing. */
#include <stdlib.h>
#include <string.h>

#include "s2pt_testlib.h"

TEST(pool_init_arguments)
{
	struct s2pt_pool p;
	uint64_t mem[512 * 4];
	uint64_t meta[5 * 4 / 2]; /* 20 bytes a page: hint (8), count, owner, free slot (4 each) */

	memset(mem, 0, sizeof(mem));
	memset(meta, 0, sizeof(meta));
	CHECK_EQ(s2pt_pool_meta_bytes(4), 80);
	CHECK_EQ(s2pt_pool_meta_bytes(1), 20);
	CHECK_EQ(s2pt_pool_init(NULL, mem, 4, meta, 0, 4096), S2PT_EINVAL);
	CHECK_EQ(s2pt_pool_init(&p, NULL, 4, meta, 0, 4096), S2PT_EINVAL);
	CHECK_EQ(s2pt_pool_init(&p, mem, 4, NULL, 0, 4096), S2PT_EINVAL);
	CHECK_EQ(s2pt_pool_init(&p, mem, 0, meta, 0, 4096), S2PT_EINVAL);
	CHECK_EQ(s2pt_pool_init(&p, mem, 0x80000001u, meta, 0, 4096), S2PT_EINVAL);
	CHECK_EQ(s2pt_pool_init(&p, mem, 4, meta, 0, 8192), S2PT_EINVAL);
	CHECK_EQ(s2pt_pool_init(&p, mem, 4, meta, 0, 0), S2PT_EINVAL);
	CHECK_EQ(s2pt_pool_init(&p, mem, 4, meta, 0x800, 4096), S2PT_EALIGN);
	CHECK_EQ(s2pt_pool_init(&p, mem, 1, meta, 0x1000, 16384), S2PT_EALIGN);
	CHECK_EQ(s2pt_pool_init(&p, mem, 4, meta, 1ull << 52, 4096), S2PT_ERANGE);
	/* The last page must end at or below 2^52. */
	CHECK_EQ(s2pt_pool_init(&p, mem, 4, meta, (1ull << 52) - 3 * 4096, 4096), S2PT_ERANGE);
	CHECK_EQ(s2pt_pool_init(&p, mem, 4, meta, (1ull << 52) - 4 * 4096, 4096), 0);
	CHECK_EQ(s2pt_pool_init(&p, mem, 4, meta, 0x40000000, 4096), 0);
	CHECK_EQ(p.capacity, 4);
	CHECK_EQ(p.used, 0);
	CHECK_EQ(p.base_pa, 0x40000000);
	CHECK_EQ(p.granule_shift, 12);
	CHECK_EQ(s2pt_pool_free_pages(&p), 4);
}

TEST(pool_refcount_query)
{
	struct fx f;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 8, 0x80000000ull), 0);
	CHECK_EQ(rc_at(&f.pool, f.pt.root_pa), 1);
	CHECK_EQ(rc_at(&f.pool, f.pt.root_pa + 4096), 1);
	CHECK_EQ(rc_at(&f.pool, 0x80000000ull + 7 * 4096), 0); /* free page */
	{
		uint32_t c = 77;

		CHECK_EQ(s2pt_pool_refcount(&f.pool, 0x80000000ull - 4096, &c), S2PT_ERANGE);
		CHECK_EQ(s2pt_pool_refcount(&f.pool, 0x80000000ull + 8 * 4096, &c), S2PT_ERANGE);
		CHECK_EQ(s2pt_pool_refcount(&f.pool, 0x80000000ull + 8, &c), S2PT_EALIGN);
		CHECK_EQ(c, 77);
	}
	fx_fini(&f);
}

/* Roots are contiguous and aligned to their combined size, as VTTBR_EL2.BADDR requires. */
TEST(pool_root_alignment_with_page_aligned_base)
{
	static const struct {
		uint32_t ipa, granule;
	} cases[] = {
		{40, 4096}, {41, 4096}, {42, 4096}, {43, 4096}, {32, 4096}, {34, 4096},
		{40, 16384}, {39, 16384}, {48, 16384}, {46, 65536}, {44, 65536}, {36, 4096},
	};

	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fx f;
		uint64_t g = cases[i].granule;
		/* Base is one page past a 1 MiB boundary: page aligned, never root aligned. */
		uint64_t base = 0x40000000ull + g;
		uint32_t pages = 40;
		uint32_t n;

		REQUIRE_EQ(fx_init(&f, cases[i].ipa, cases[i].granule, 48, pages, base), 0);
		n = f.cfg.root_tables;
		CHECK_MSG(f.pt.root_pa % (n * g) == 0, "case %u: root %#llx not aligned to %llu", i,
			  (unsigned long long)f.pt.root_pa, (unsigned long long)(n * g));
		CHECK(f.pt.root_pa >= base);
		CHECK(f.pt.root_pa + n * g <= base + pages * g);
		CHECK_EQ((uint64_t)f.pt.root, (uint64_t)pa_ptr(&f.pool, f.pt.root_pa));
		CHECK_EQ(f.pt.table_pages, n);
		CHECK_EQ(f.pool.used, n);
		CHECK_EQ(s2pt_vttbr(&f.pt), f.pt.root_pa | (1ull << 48));
		for (uint32_t k = 0; k < n; k++)
			CHECK_EQ(rc_at(&f.pool, f.pt.root_pa + k * g), 1);
		CHECK_INVARIANTS(&f.pt);
		/* Pages skipped to align the root are still usable: fill the pool with tables. */
		{
			uint64_t span2 = 1ull << a_shift(f.cfg.granule_shift, 2);
			uint32_t free_pages = s2pt_pool_free_pages(&f.pool);
			uint32_t mapped = 0;

			/* Each NO_BLOCKS page mapping in a fresh level-2 span needs at least 1 page. */
			for (uint64_t k = 0; s2pt_pool_free_pages(&f.pool) > 0 && k < 64; k++) {
				int r = s2pt_map(&f.pt, k * span2, 0, g, S2PT_PROT_R, S2PT_MEMATTR_NORMAL,
						 S2PT_MAP_NO_BLOCKS);

				if (r == S2PT_ENOMEM)
					break;
				CHECK_EQ(r, 0);
				mapped++;
			}
			CHECK(mapped > 0);
			CHECK(s2pt_pool_free_pages(&f.pool) < free_pages);
			CHECK_INVARIANTS(&f.pt);
		}
		fx_fini(&f);
	}
}

TEST(pool_exhaustion_on_pgtable_init)
{
	struct fx f;
	struct s2pt_config cfg;
	struct s2pt_pgtable pt2;
	struct snap s;

	/* 16K / 40 needs 16 root pages aligned to 256 KiB. */
	REQUIRE_EQ(s2pt_config_init(&cfg, 40, 16384, 48, 1, 0), 0);
	REQUIRE_EQ(fx_pool(&f, 16384, 15, 0x40000000ull), 0);
	snap_take(&s, &f);
	CHECK_EQ(s2pt_pgtable_init(&f.pt, &cfg, &f.pool), S2PT_ENOMEM);
	CHECK_UNCHANGED(&s, &f);
	snap_free(&s);
	fx_fini(&f);

	/* 20 free pages but the only 256 KiB-aligned run starts at page 13: no room. */
	REQUIRE_EQ(fx_pool(&f, 16384, 20, 0x40000000ull + 3 * 16384), 0);
	snap_take(&s, &f);
	CHECK_EQ(s2pt_pgtable_init(&f.pt, &cfg, &f.pool), S2PT_ENOMEM);
	CHECK_UNCHANGED(&s, &f);
	snap_free(&s);
	fx_fini(&f);

	/* Exactly enough: 16 pages at an aligned base. */
	REQUIRE_EQ(fx_pool(&f, 16384, 16, 0x40000000ull), 0);
	CHECK_EQ(s2pt_pgtable_init(&f.pt, &cfg, &f.pool), 0);
	f.have_pt = 1;
	CHECK_EQ(f.pool.used, 16);
	/* A second page table cannot get even one root page now. */
	{
		struct s2pt_config c2;

		REQUIRE_EQ(s2pt_config_init(&c2, 36, 16384, 48, 2, 0), 0);
		CHECK_EQ(c2.root_tables, 1);
		CHECK_EQ(s2pt_pgtable_init(&pt2, &c2, &f.pool), S2PT_ENOMEM);
	}
	fx_fini(&f);
}

TEST(pool_pgtable_init_config_mismatch)
{
	struct fx f;
	struct s2pt_config cfg;
	struct s2pt_pgtable pt;

	/* Granule mismatch. */
	REQUIRE_EQ(fx_pool(&f, 4096, 16, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_config_init(&cfg, 40, 16384, 48, 1, 0), 0);
	CHECK_EQ(s2pt_pgtable_init(&pt, &cfg, &f.pool), S2PT_ECONFIG);
	CHECK_EQ(f.pool.used, 0);
	fx_fini(&f);

	/* Table PAs are output addresses: the whole pool must lie below 2^pa_bits. */
	REQUIRE_EQ(fx_pool(&f, 4096, 16, 0xFFFF8000ull), 0); /* ends at 2^32 + 32 KiB */
	REQUIRE_EQ(s2pt_config_init(&cfg, 32, 4096, 32, 1, 0), 0);
	CHECK_EQ(s2pt_pgtable_init(&pt, &cfg, &f.pool), S2PT_ECONFIG);
	CHECK_EQ(f.pool.used, 0);
	fx_fini(&f);

	/* Ending exactly at 2^32 is fine. */
	REQUIRE_EQ(fx_pool(&f, 4096, 16, 0xFFFF0000ull), 0);
	CHECK_EQ(s2pt_pgtable_init(&pt, &cfg, &f.pool), 0);
	CHECK(pt.root_pa + 4 * 4096 <= (1ull << 32));
	s2pt_pgtable_destroy(&pt);
	CHECK_EQ(f.pool.used, 0);
	fx_fini(&f);
}

TEST(pool_freed_pages_are_reused)
{
	struct fx f;
	uint64_t ipa = GiB(2), l2, l3;
	uint32_t hiwater;
	uint64_t un = 0;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 64, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, ipa, GiB(16), 4096, S2PT_PROT_R | S2PT_PROT_W,
			    S2PT_MEMATTR_NORMAL, 0),
		   0);
	l2 = sw_table(&f.pt, ipa, 2);
	l3 = sw_table(&f.pt, ipa, 3);
	CHECK_EQ(f.pool.used, 4);
	hiwater = f.pool.hiwater;
	CHECK_EQ(s2pt_unmap(&f.pt, ipa, 4096, &un), 0);
	CHECK_EQ(un, 4096);
	CHECK_EQ(f.pool.used, 2);
	/* Freed pages are zero and count 0. */
	CHECK_EQ(rc_at(&f.pool, l2), 0);
	CHECK_EQ(rc_at(&f.pool, l3), 0);
	CHECK_EQ(nonzero_entries(&f.pool, l2), 0);
	CHECK_EQ(nonzero_entries(&f.pool, l3), 0);
	CHECK_INVARIANTS(&f.pt);
	/* Map somewhere else: the same two pages come back, no new page is touched. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(7), GiB(16), 4096, S2PT_PROT_R, S2PT_MEMATTR_NORMAL, 0), 0);
	CHECK_EQ(f.pool.hiwater, hiwater);
	CHECK_EQ(f.pool.used, 4);
	{
		uint64_t n2 = sw_table(&f.pt, GiB(7), 2), n3 = sw_table(&f.pt, GiB(7), 3);

		CHECK((n2 == l2 && n3 == l3) || (n2 == l3 && n3 == l2));
	}
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);
}

TEST(pool_shared_by_two_page_tables)
{
	struct fx f;
	struct s2pt_config c2;
	struct s2pt_pgtable pt2;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	uint32_t used_after_pt1;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 64, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_config_init(&c2, 36, 4096, 48, 2, 0), 0);
	REQUIRE_EQ(s2pt_pgtable_init(&pt2, &c2, &f.pool), 0);
	CHECK_NE(pt2.owner, f.pt.owner);
	CHECK_NE(pt2.root_pa, f.pt.root_pa);
	CHECK_EQ(f.pool.used, 3);
	CHECK_EQ(f.pool.live_tables, 2);
	CHECK_EQ(s2pt_vttbr(&pt2), pt2.root_pa | (2ull << 48));

	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), GiB(4), MiB(4), S2PT_PROT_R, S2PT_MEMATTR_NORMAL,
			    S2PT_MAP_NO_BLOCKS),
		   0);
	used_after_pt1 = f.pool.used;
	REQUIRE_EQ(s2pt_map(&pt2, GiB(1), GiB(8), MiB(4), S2PT_PROT_R | S2PT_PROT_W,
			    S2PT_MEMATTR_NORMAL, S2PT_MAP_NO_BLOCKS),
		   0);
	CHECK_EQ(f.pool.used, used_after_pt1 + 3); /* one level-2 and two level-3 tables */
	CHECK_EQ(f.pt.table_pages + pt2.table_pages, f.pool.used);
	CHECK_INVARIANTS(&f.pt);
	CHECK_INVARIANTS(&pt2);

	CHECK_EQ(s2pt_translate(&f.pt, GiB(1) + 0x1234, S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.pa, GiB(4) + 0x1234);
	CHECK_EQ(s2pt_translate(&pt2, GiB(1) + 0x1234, S2PT_ACCESS_WRITE, &t, &flt), 0);
	CHECK_EQ(t.pa, GiB(8) + 0x1234);
	/* Every page of each table carries its owner. */
	for (uint32_t i = 0; i < f.pool.hiwater; i++)
		if (f.pool.refcount[i])
			CHECK(f.pool.owner[i] == f.pt.owner || f.pool.owner[i] == pt2.owner);

	s2pt_pgtable_destroy(&f.pt);
	CHECK_EQ(f.pool.used, pt2.table_pages);
	CHECK_EQ(f.pool.live_tables, 1);
	CHECK_EQ(s2pt_translate(&pt2, GiB(1) + MiB(3), S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.pa, GiB(8) + MiB(3));
	CHECK_INVARIANTS(&pt2);
	/* The freed pages serve the other table. */
	REQUIRE_EQ(s2pt_map(&pt2, GiB(3), GiB(8), KiB(4), S2PT_PROT_R, S2PT_MEMATTR_NORMAL, 0), 0);
	CHECK_INVARIANTS(&pt2);
	s2pt_pgtable_destroy(&pt2);
	CHECK_EQ(f.pool.used, 0);
	CHECK_EQ(f.pool.live_tables, 0);
	fx_fini(&f);
}

TEST(pool_destroy_returns_everything)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	struct s2pt_stats st;
	uint64_t un;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 128, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 0, 0, GiB(2) + MiB(6) + KiB(12), S2PT_PROT_R,
			    S2PT_MEMATTR_NORMAL, 0),
		   0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(100), GiB(1) + KiB(4), MiB(3), S2PT_PROT_R,
			    S2PT_MEMATTR_NORMAL, 0),
		   0);
	CHECK(f.pool.used > 2);
	s2pt_pgtable_destroy(&f.pt);
	CHECK_EQ(f.pool.used, 0);
	CHECK_EQ(f.pt.table_pages, 0);
	for (uint32_t i = 0; i < f.pool.capacity; i++) {
		CHECK_EQ(f.pool.refcount[i], 0);
		CHECK_EQ(f.pool.owner[i], 0);
		CHECK_EQ(nonzero_entries(&f.pool, f.pool.base_pa + (uint64_t)i * 4096), 0);
	}
	CHECK_EQ(s2pt_map(&f.pt, 0, 0, 4096, S2PT_PROT_R, S2PT_MEMATTR_NORMAL, 0), S2PT_EDESTROYED);
	CHECK_EQ(s2pt_unmap(&f.pt, 0, 4096, &un), S2PT_EDESTROYED);
	CHECK_EQ(s2pt_protect(&f.pt, 0, 4096, S2PT_PROT_R), S2PT_EDESTROYED);
	CHECK_EQ(s2pt_translate(&f.pt, 0, S2PT_ACCESS_READ, &t, &flt), S2PT_EDESTROYED);
	CHECK_EQ(s2pt_lookup(&f.pt, 0, &t, &flt), S2PT_EDESTROYED);
	CHECK_EQ(s2pt_stats(&f.pt, &st), S2PT_EDESTROYED);
	CHECK_EQ(s2pt_check(&f.pt, NULL, 0), S2PT_EDESTROYED);
	s2pt_pgtable_destroy(&f.pt); /* second destroy is harmless */
	CHECK_EQ(f.pool.used, 0);
	fx_fini(&f);
}

TEST(pool_large_lazy_capacity)
{
	/* 1 GiB of 4K table pages: only the touched pages cost memory. */
	struct fx f;
	uint32_t pages = 262144;

	REQUIRE_EQ(fx_init(&f, 48, 4096, 48, pages, 0x100000000ull), 0);
	CHECK_EQ(f.pool.capacity, pages);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1000), GiB(4), MiB(8), S2PT_PROT_R, S2PT_MEMATTR_NORMAL,
			    S2PT_MAP_NO_BLOCKS),
		   0);
	CHECK_EQ(f.pool.used, 1 + 1 + 1 + 4); /* root, L1, L2, four L3 tables */
	CHECK(f.pool.hiwater <= 7);
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);
}
