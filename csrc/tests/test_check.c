/*
 * s2pt_check(): 0 on every state the API produces (also asserted throughout the other
 * files), S2PT_EINVARIANT once memory or metadata is corrupted behind the core's back.
 * Every corruption is undone before teardown.
 */
#include <string.h>

#include "s2pt_testlib.h"

#define RW (S2PT_PROT_R | S2PT_PROT_W)
#define NORMAL S2PT_MEMATTR_NORMAL

static int setup(struct fx *f)
{
	int r = fx_init(f, 40, 4096, 40, 64, 0x40000000ull);

	if (!r)
		r = s2pt_map(&f->pt, GiB(1), GiB(2), KiB(4), RW, NORMAL, 0);   /* L2 + L3, 1 page */
	if (!r)
		r = s2pt_map(&f->pt, GiB(3), GiB(2), MiB(4), RW, NORMAL, 0);   /* L2, 2 blocks */
	if (!r)
		r = s2pt_map(&f->pt, GiB(5), GiB(2), GiB(1), RW, NORMAL, 0);   /* L1 block */
	if (!r)
		r = s2pt_map(&f->pt, GiB(600), GiB(2), KiB(8), RW, NORMAL, 0); /* root page 1 */
	return r;
}

/* Flip @bits in the word at @p, expect EINVARIANT, restore, expect 0. */
static void corrupt_word(struct fx *f, uint64_t *p, uint64_t newval, const char *what)
{
	uint64_t save = *p;
	char msg[256];
	int r;

	*p = newval;
	msg[0] = 0;
	r = s2pt_check(&f->pt, msg, sizeof(msg));
	CHECK_MSG(r == S2PT_EINVARIANT, "%s: s2pt_check() = %d", what, r);
	CHECK_MSG(msg[0] != 0, "%s: no message", what);
	*p = save;
	CHECK_INVARIANTS(&f->pt);
}

static uint32_t page_index(const struct fx *f, uint64_t pa)
{
	return (uint32_t)((pa - f->pool.base_pa) >> f->pool.granule_shift);
}

TEST(check_clean_states)
{
	struct fx f;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 40, 64, 0x40000000ull), 0);
	CHECK_INVARIANTS(&f.pt);
	CHECK_EQ(s2pt_check(&f.pt, NULL, 0), 0);
	fx_fini(&f);
	REQUIRE_EQ(setup(&f), 0);
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);
}

TEST(check_stray_leaf_bits)
{
	struct fx f;
	uint64_t *page, *blk2, *blk1;
	/* bit 11 (RES0 at stage 2), 52 (contiguous), 53 (XN[0], FEAT_XNX, which this VM lacks),
	 * 59 (PBHA, ignored), 51 (DBM), 63 (ignored), 47 out of a 40-bit PA size */
	static const uint64_t bits[] = {1ull << 11, 1ull << 52, 1ull << 53, 1ull << 59,
					1ull << 51, 1ull << 63, 1ull << 47};

	REQUIRE_EQ(setup(&f), 0);
	page = pa_ptr(&f.pool, sw_table(&f.pt, GiB(1), 3));
	blk2 = pa_ptr(&f.pool, sw_table(&f.pt, GiB(3), 2));
	blk1 = pa_ptr(&f.pool, f.pt.root_pa) + 5;
	for (unsigned i = 0; i < sizeof(bits) / sizeof(bits[0]); i++) {
		corrupt_word(&f, &page[0], page[0] | bits[i], "stray bit in a page");
		corrupt_word(&f, &blk2[0], blk2[0] | bits[i], "stray bit in a 2M block");
		corrupt_word(&f, blk1, *blk1 | bits[i], "stray bit in a 1G block");
	}
	/* Output address not aligned to the block size. */
	corrupt_word(&f, &blk2[0], blk2[0] | 1ull << 12, "2M block with PA bit 12");
	corrupt_word(&f, blk1, *blk1 | 1ull << 21, "1G block with PA bit 21");
	/* Reserved MemAttr; not inner shareable. */
	corrupt_word(&f, &page[0], (page[0] & ~(0xfull << 2)) | 0x4ull << 2, "MemAttr 0b0100");
	corrupt_word(&f, &page[0], page[0] & ~(1ull << 8), "SH 0b10");
	/* A non-zero invalid entry (no software annotations are ever written). */
	corrupt_word(&f, &page[0], page[0] & ~1ull, "invalid non-zero entry");
	fx_fini(&f);
}

/*
 * At level 3, bits[1:0] = 0b01 is a reserved encoding (the walk takes a level-3 translation
 * fault, as s2pt_translate() reports); it is not a well-formed descriptor at that level.
 */
TEST(check_level3_reserved_type_01)
{
	struct fx f;
	uint64_t *page;

	REQUIRE_EQ(setup(&f), 0);
	page = pa_ptr(&f.pool, sw_table(&f.pt, GiB(1), 3));
	corrupt_word(&f, &page[0], page[0] & ~2ull, "level-3 descriptor of type 0b01");
	fx_fini(&f);
}

TEST(check_table_descriptor_problems)
{
	struct fx f;
	uint64_t *root, l2_pa;

	REQUIRE_EQ(setup(&f), 0);
	root = pa_ptr(&f.pool, f.pt.root_pa);
	l2_pa = root[1] & ~0xfffull;
	corrupt_word(&f, &root[1], root[1] | 1ull << 10, "table descriptor with bit 10");
	corrupt_word(&f, &root[1], root[1] | 1ull << 63, "table descriptor with NSTable bit");
	/* Pointing at a page outside the pool, at another page of the table, twice. */
	corrupt_word(&f, &root[1], (f.pool.base_pa - 4096) | 3, "table outside the pool");
	corrupt_word(&f, &root[1], f.pt.root_pa | 3, "table pointing at the root");
	{
		uint64_t l2b = root[3];

		corrupt_word(&f, &root[3], l2_pa | 3, "the same table reachable twice");
		CHECK_EQ(root[3], l2b);
	}
	fx_fini(&f);
}

TEST(check_refcount_owner_and_counters)
{
	struct fx f;
	uint32_t l3, l2;

	REQUIRE_EQ(setup(&f), 0);
	l2 = page_index(&f, sw_table(&f.pt, GiB(1), 2));
	l3 = page_index(&f, sw_table(&f.pt, GiB(1), 3));
	CHECK_EQ(f.pool.refcount[l3], 2);
	f.pool.refcount[l3]++;
	CHECK_EQ(s2pt_check(&f.pt, NULL, 0), S2PT_EINVARIANT);
	f.pool.refcount[l3] -= 2;
	CHECK_EQ(s2pt_check(&f.pt, NULL, 0), S2PT_EINVARIANT);
	f.pool.refcount[l3]++;
	f.pool.refcount[f.pt.root_index + 1]++;
	CHECK_EQ(s2pt_check(&f.pt, NULL, 0), S2PT_EINVARIANT);
	f.pool.refcount[f.pt.root_index + 1]--;
	CHECK_INVARIANTS(&f.pt);
	/* Owner id of another table. */
	f.pool.owner[l2] += 7;
	CHECK_EQ(s2pt_check(&f.pt, NULL, 0), S2PT_EINVARIANT);
	f.pool.owner[l2] -= 7;
	/* Page count of the table and pool counters. */
	f.pt.table_pages++;
	CHECK_EQ(s2pt_check(&f.pt, NULL, 0), S2PT_EINVARIANT);
	f.pt.table_pages--;
	f.pool.used++;
	CHECK_EQ(s2pt_check(&f.pt, NULL, 0), S2PT_EINVARIANT);
	f.pool.used--;
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);
}

TEST(check_empty_non_root_table)
{
	struct fx f;
	uint64_t l3_pa;
	uint64_t *e;
	uint64_t save;

	REQUIRE_EQ(setup(&f), 0);
	l3_pa = sw_table(&f.pt, GiB(1), 3);
	e = pa_ptr(&f.pool, l3_pa);
	save = e[0];
	/* Zero its only entry and fix the count: counts are right, but the table is empty. */
	e[0] = 0;
	f.pool.refcount[page_index(&f, l3_pa)]--;
	CHECK_EQ(rc_at(&f.pool, l3_pa), 1);
	CHECK_EQ(s2pt_check(&f.pt, NULL, 0), S2PT_EINVARIANT);
	e[0] = save;
	f.pool.refcount[page_index(&f, l3_pa)]++;
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);
}

TEST(check_free_pages_and_leaked_pages)
{
	struct fx f;
	uint64_t *root;
	uint64_t save;

	REQUIRE_EQ(setup(&f), 0);
	/* Free the page at IPA 1G by unmapping: its tables go to the free stack. */
	REQUIRE_EQ(s2pt_unmap(&f.pt, GiB(1), KiB(4), NULL), 0);
	CHECK_INVARIANTS(&f.pt);
	REQUIRE(f.pool.nfree > 0);
	{
		uint32_t idx = f.pool.free_stack[0];
		uint64_t *w = pa_ptr(&f.pool, f.pool.base_pa + ((uint64_t)idx << 12)) + 17;

		corrupt_word(&f, w, 0x1234, "non-zero word in a free page");
	}
	/* A table detached from its parent (unreachable but still allocated). */
	root = pa_ptr(&f.pool, f.pt.root_pa);
	save = root[3];
	root[3] = 0;
	f.pool.refcount[f.pt.root_index]--;
	CHECK_EQ(s2pt_check(&f.pt, NULL, 0), S2PT_EINVARIANT);
	root[3] = save;
	f.pool.refcount[f.pt.root_index]++;
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);
}

TEST(check_block_at_disallowed_level)
{
	struct fx f;
	uint64_t *root;

	/* 4K / 44 starts at level 0, where blocks do not exist without LPA2. */
	REQUIRE_EQ(fx_init(&f, 44, 4096, 48, 16, 0x40000000ull), 0);
	root = pa_ptr(&f.pool, f.pt.root_pa);
	root[3] = a_leaf(GiB(512), 0, RW, NORMAL, 1);
	f.pool.refcount[f.pt.root_index]++;
	CHECK_EQ(s2pt_check(&f.pt, NULL, 0), S2PT_EINVARIANT);
	root[3] = 0;
	f.pool.refcount[f.pt.root_index]--;
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);
	/* 64K / 47 starts at level 1: no 4 TiB blocks without 52-bit PA. */
	REQUIRE_EQ(fx_init(&f, 47, 65536, 48, 4, 0x40000000ull), 0);
	root = pa_ptr(&f.pool, f.pt.root_pa);
	root[1] = a_leaf(1ull << 42, 1, RW, NORMAL, 1);
	f.pool.refcount[f.pt.root_index]++;
	CHECK_EQ(s2pt_check(&f.pt, NULL, 0), S2PT_EINVARIANT);
	root[1] = 0;
	f.pool.refcount[f.pt.root_index]--;
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);
	/* 4K / 36: a 64-entry root; an entry past the IPA space is invalid. */
	REQUIRE_EQ(fx_init(&f, 36, 4096, 48, 4, 0x40000000ull), 0);
	CHECK_EQ(f.cfg.root_entries, 64);
	root = pa_ptr(&f.pool, f.pt.root_pa);
	root[64] = a_leaf(GiB(1), 1, RW, NORMAL, 1);
	f.pool.refcount[f.pt.root_index]++;
	CHECK_EQ(s2pt_check(&f.pt, NULL, 0), S2PT_EINVARIANT);
	root[64] = 0;
	f.pool.refcount[f.pt.root_index]--;
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);
}

/* The occupancy hint may over-approximate (stale bits are fine), never miss an entry. */
TEST(check_occupancy_hint)
{
	struct fx f;
	uint64_t l3_pa, *l3;
	uint32_t idx;

	REQUIRE_EQ(setup(&f), 0);
	l3_pa = sw_table(&f.pt, GiB(1), 3);
	REQUIRE(l3_pa != 0);
	l3 = pa_ptr(&f.pool, l3_pa);
	idx = (uint32_t)((l3_pa - f.pool.base_pa) >> 12);
	/* One page at the start of the table: only part 0 (entries 0..7) need be marked. */
	CHECK(f.pool.hint[idx] & 1);
	corrupt_word(&f, &f.pool.hint[idx], f.pool.hint[idx] & ~1ull, "entry outside the hint");
	/* A stale bit is allowed. */
	f.pool.hint[idx] |= 1ull << 40;
	CHECK_INVARIANTS(&f.pt);
	/* Unmap reads only marked parts and still finds the page; the emptied table is freed. */
	CHECK_EQ(l3[0] != 0, 1);
	{
		uint64_t un = 0;

		CHECK_EQ(s2pt_unmap(&f.pt, GiB(1), MiB(2), &un), 0);
		CHECK_EQ(un, KiB(4));
		CHECK_EQ(sw_table(&f.pt, GiB(1), 3), 0);
	}
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}
