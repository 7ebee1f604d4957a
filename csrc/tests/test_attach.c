/*
 * s2pt_pool_init_foreign() and s2pt_pgtable_attach(): a tree another page table wrote, copied
 * into fresh memory, is adopted with KVM's counts; a broken one is refused and nothing moves.
 */
#include <stdlib.h>
#include <string.h>

#include "s2pt_testlib.h"

#define RW (S2PT_PROT_R | S2PT_PROT_W)
#define PAGES 32u
#define BASE 0x40000000ull

/* A 4K/40-bit VM with pages and a block, and a copy of its pool memory. */
static void copied_tree(struct fx *src, uint8_t **out)
{
	uint8_t *copy;

	*out = NULL;
	REQUIRE_EQ(fx_init(src, 40, 4096, 48, PAGES, BASE), 0);
	REQUIRE_EQ(s2pt_map(&src->pt, 0, 0x80000000ull, 3 * 4096, RW, S2PT_MEMATTR_NORMAL,
			    S2PT_MAP_NO_BLOCKS), 0);
	REQUIRE_EQ(s2pt_map(&src->pt, 1ull << 30, 0x100000000ull, 2u << 20, S2PT_PROT_R,
			    S2PT_MEMATTR_NORMAL, 0), 0);
	copy = malloc((size_t)PAGES * 4096);
	REQUIRE(copy != NULL);
	memcpy(copy, src->mem, (size_t)PAGES * 4096);
	*out = copy;
}

TEST(attach_adopts_a_copied_tree_with_kvm_counts)
{
	struct fx src;
	uint8_t *mem;
	void *meta = calloc(1, s2pt_pool_meta_bytes(PAGES));
	struct s2pt_pool pool;
	struct s2pt_pgtable pt;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	char msg[200];

	copied_tree(&src, &mem);
	REQUIRE(meta != NULL && mem != NULL);
	REQUIRE_EQ(s2pt_pool_init_foreign(&pool, mem, PAGES, meta, BASE, 4096), 0);
	/* Root page 0 and the three tables hold entries; root page 1 is all zero: free. */
	CHECK_EQ(pool.used, 4);
	CHECK_EQ(pool.hiwater, PAGES);
	CHECK_EQ(s2pt_pool_check(&pool, msg, sizeof(msg)), 0);
	REQUIRE_EQ(s2pt_pgtable_attach(&pt, &src.cfg, &pool, src.pt.root_pa, msg, sizeof(msg)), 0);
	CHECK_EQ(pt.table_pages, 5);
	CHECK_EQ(pool.used, 5);
	for (uint32_t i = 0; i < PAGES; i++)
		CHECK_EQ(pool.refcount[i], src.pool.refcount[i]);
	REQUIRE_EQ(s2pt_translate(&pt, 0x2008, S2PT_ACCESS_WRITE, &t, &flt), 0);
	CHECK_EQ(t.pa, 0x80002008ull);
	REQUIRE_EQ(s2pt_translate(&pt, (1ull << 30) + 0x1234, S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.level, 2);
	CHECK_INVARIANTS(&pt);
	CHECK_REFCOUNTS(&pt);
	/* Unmapping everything frees the adopted tables back to the pool. */
	REQUIRE_EQ(s2pt_unmap(&pt, 0, 1ull << 40, NULL), 0);
	CHECK_EQ(pt.table_pages, 2);
	CHECK_EQ(pool.used, 2);
	s2pt_pgtable_destroy(&pt);
	CHECK_EQ(pool.used, 0);
	CHECK_EQ(s2pt_pool_check(&pool, msg, sizeof(msg)), 0);
	free(meta);
	free(mem);
	fx_fini(&src);
}

TEST(attach_refuses_a_shared_subtable_and_changes_nothing)
{
	struct fx src;
	uint8_t *mem;
	void *meta = calloc(1, s2pt_pool_meta_bytes(PAGES));
	uint8_t *meta_before = malloc(s2pt_pool_meta_bytes(PAGES));
	uint64_t *root;
	struct s2pt_pool pool, pool_before;
	struct s2pt_pgtable pt;
	char msg[200];

	copied_tree(&src, &mem);
	REQUIRE(meta != NULL && meta_before != NULL && mem != NULL);
	root = (uint64_t *)(mem + (src.pt.root_pa - BASE));
	root[3] = root[0]; /* IPA 3 GiB shares IPA 0's level-2 table */
	REQUIRE_EQ(s2pt_pool_init_foreign(&pool, mem, PAGES, meta, BASE, 4096), 0);
	memcpy(meta_before, meta, s2pt_pool_meta_bytes(PAGES));
	pool_before = pool;
	CHECK_EQ(s2pt_pgtable_attach(&pt, &src.cfg, &pool, src.pt.root_pa, msg, sizeof(msg)),
		 S2PT_EINVARIANT);
	CHECK(strstr(msg, "reachable twice") != NULL);
	CHECK(strstr(msg, "level 1, IPA 0xc0000000") != NULL);
	CHECK(memcmp(meta_before, meta, s2pt_pool_meta_bytes(PAGES)) == 0);
	CHECK(memcmp(&pool_before, &pool, sizeof(pool)) == 0);
	/* Misaligned or outside roots. */
	CHECK_EQ(s2pt_pgtable_attach(&pt, &src.cfg, &pool, BASE + 4096, msg, sizeof(msg)),
		 S2PT_EALIGN);
	CHECK_EQ(s2pt_pgtable_attach(&pt, &src.cfg, &pool, BASE + PAGES * 4096ull, msg,
				     sizeof(msg)),
		 S2PT_ERANGE);
	free(meta_before);
	free(meta);
	free(mem);
	fx_fini(&src);
}
