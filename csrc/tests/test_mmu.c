/*
 * The MMU layer (s2pt/mmu.h): memslots, s2pt_handle_fault and its outcomes, dirty logging (with
 * eager split), KVM_GET_DIRTY_LOG / KVM_CLEAR_DIRTY_LOG harvests, s2pt_access_many and the
 * fault counters, for the 4K, 16K and 64K granules.
 *
 * Expected values come from KVM's documented rules and the architecture, never from what the
 * code returns: the mapping size is the largest leaf size of the granule not above the slot's
 * backing whose aligned block lies in the slot and whose alignment the slot's IPA and PA share
 * (user_mem_abort / fault_supports_stage2_huge_mapping), the page while logging (force_pte);
 * permissions R, W for a writable slot (while logging only on a write), X for a fetch, never
 * removed (relax_perms); leaves are read back as descriptor bits with the independent walker;
 * dirty bitmaps are compared with the exact pages written (bit i % 64 of word i / 64 is page i)
 * and a mask word is re-protected from its lowest to its highest bit
 * (kvm_mmu_write_protect_pt_masked); one flush over the slot follows a write-protect
 * (kvm_flush_remote_tlbs_memslot; the VMID without FEAT_TLBIRANGE).
 */
#include <stdlib.h>
#include <string.h>

#include "s2pt/mmu.h"
#include "s2pt_testlib.h"

#define RW (S2PT_PROT_R | S2PT_PROT_W)
#define RX (S2PT_PROT_R | S2PT_PROT_X)
#define R_ S2PT_PROT_R
#define NORMAL S2PT_MEMATTR_NORMAL
#define U S2PT_TLBI_LEVEL_UNKNOWN
#define POOL_BASE 0x40000000ull
#define OUT_PA GiB(8)
#define READ S2PT_ACCESS_READ
#define WRITE S2PT_ACCESS_WRITE
#define EXEC S2PT_ACCESS_EXEC
#define EXEC0 S2PT_ACCESS_EXEC_EL0
#define NOID 0xFFFFFFFFu

struct geom {
	uint32_t granule;
	uint32_t ipa_bits;
	int start;
	uint32_t roots;
};

static const struct geom GEOMS[] = {
	{4096, 40, 1, 2},
	{16384, 47, 1, 1},
	{65536, 42, 2, 1},
};
#define NGEOMS (sizeof(GEOMS) / sizeof(GEOMS[0]))

static uint64_t lsize(uint32_t granule, int level)
{
	return 1ull << a_shift((uint32_t)__builtin_ctz(granule), level);
}

static uint64_t block2(uint32_t granule)
{
	return lsize(granule, 2);
}

/* A VM with an MMU over it and a 256-event TLB log. */
struct mfx {
	struct fx f;
	struct s2pt_mmu mmu;
};

static int mfx_init(struct mfx *m, uint32_t ipa_bits, uint32_t granule, uint32_t pages,
		    uint32_t flags)
{
	int ret = fx_init_flags(&m->f, ipa_bits, granule, 48, pages, POOL_BASE, flags);

	if (ret)
		return ret;
	fx_log(&m->f, 256);
	s2pt_mmu_init(&m->mmu, &m->f.pt);
	return 0;
}

static int mk(struct mfx *m, const struct geom *g, uint32_t pages, uint32_t flags)
{
	int ret = mfx_init(m, g->ipa_bits, g->granule, pages, flags);

	if (!ret)
		CHECK_EQ(m->f.cfg.start_level, g->start);
	return ret;
}

static void mfx_fini(struct mfx *m)
{
	s2pt_mmu_release(&m->mmu);
	fx_fini(&m->f);
}

static void ev_reset(struct mfx *m)
{
	m->f.log.count = 0;
	m->f.log.overflowed = 0;
}

static uint32_t add_slot(struct mfx *m, uint64_t ipa, uint64_t pa, uint64_t size, uint32_t flags,
			 uint64_t backing)
{
	uint32_t id = NOID;
	int rc = s2pt_memslot_add(&m->mmu, ipa, pa, size, flags, backing, &id);

	CHECK_MSG(rc == 0, "memslot_add(%#llx, %#llx, %#llx, %u, %#llx) = %d",
		  (unsigned long long)ipa, (unsigned long long)pa, (unsigned long long)size, flags,
		  (unsigned long long)backing, rc);
	return id;
}

/* One access through the abort handler; its outcome (0xFF if the call failed). */
static uint32_t fault(struct mfx *m, uint64_t ipa, uint32_t access)
{
	uint32_t oc = 0xFF;
	int rc = s2pt_handle_fault(&m->mmu, ipa, access, &oc);

	CHECK_MSG(rc == 0, "handle_fault(%#llx, %u) = %d", (unsigned long long)ipa, access, rc);
	return rc ? 0xFF : oc;
}

static uint64_t leaf_at(const struct fx *f, uint64_t ipa, int *level)
{
	struct sw_step st[4];
	int leaf, n = sw_walk(&f->pt, ipa, st, &leaf);

	*level = n ? st[n - 1].level : -1;
	return n ? st[n - 1].desc : 0;
}

/* Word index in pool memory of the entry the walk of @ipa stops at. */
static uint64_t desc_word(const struct fx *f, uint64_t ipa)
{
	struct sw_step st[4];
	int leaf, n = sw_walk(&f->pt, ipa, st, &leaf);

	return n ? (st[n - 1].table_pa - f->pool.base_pa) / 8 + st[n - 1].index : ~0ull;
}

#define CHECK_LEAF(fp, ipa, lvl, want)                                                             \
	do {                                                                                       \
		int l_;                                                                            \
		uint64_t d_ = leaf_at(fp, ipa, &l_);                                               \
		CHECK_EQ(l_, lvl);                                                                 \
		CHECK_EQ(d_, want);                                                                \
	} while (0)

static int writable(const struct mfx *m, uint64_t ipa)
{
	int level;

	return (leaf_at(&m->f, ipa, &level) & (A_VALID | A_S2AP_W)) == (A_VALID | A_S2AP_W);
}

static struct s2pt_stats stats_of(const struct fx *f)
{
	struct s2pt_stats st;

	memset(&st, 0, sizeof(st));
	CHECK_EQ(s2pt_stats(&f->pt, &st), 0);
	return st;
}

static const char *ev_diff(const struct s2pt_tlbi_log *log, uint32_t i, int kind, uint64_t ipa,
			   uint64_t size, int level, uint32_t reason, uint32_t bbm, char *buf,
			   size_t len)
{
	const struct s2pt_tlbi *e;

	if (i >= log->count) {
		snprintf(buf, len, "event %u missing: %u recorded", i, log->count);
		return buf;
	}
	e = &log->events[i];
	if (e->kind == kind && e->ipa == ipa && e->size == size && e->level == level &&
	    e->reason == reason && e->bbm == bbm)
		return NULL;
	snprintf(buf, len,
		 "event %u = {kind %d ipa %#llx size %#llx level %d reason %u bbm %u}, "
		 "want {%d %#llx %#llx %d %u %u}",
		 i, e->kind, (unsigned long long)e->ipa, (unsigned long long)e->size, e->level,
		 e->reason, e->bbm, kind, (unsigned long long)ipa, (unsigned long long)size, level,
		 reason, bbm);
	return buf;
}

#define CHECK_EV(logp, i, kind, ipa, size, level, reason, bbm)                                     \
	do {                                                                                       \
		char eb_[256];                                                                     \
		const char *ed_ =                                                                  \
			ev_diff(logp, i, kind, ipa, size, level, reason, bbm, eb_, sizeof(eb_));   \
		CHECK_MSG(ed_ == NULL, "%s", ed_);                                                 \
	} while (0)

/* The flush after write-protecting a slot: a range over it. */
#define CHECK_WP_EV(logp, i, ipa, size)                                                            \
	CHECK_EV(logp, i, S2PT_TLBI_RANGE, ipa, size, U, S2PT_TLBI_WRPROTECT, 0)

/* Whole-state snapshot of a VM and its MMU: tables, pool, log, slots, dirty bitmaps, counts. */
#define MSNAP_SLOTS 8
struct msnap {
	struct snap s;
	uint32_t nslots;
	struct s2pt_memslot slots[MSNAP_SLOTS];
	uint64_t *dirty[MSNAP_SLOTS];
	uint64_t counts[S2PT_OUTCOME__COUNT];
};

static uint64_t slot_words(const struct mfx *m, const struct s2pt_memslot *s)
{
	return ((s->size >> m->f.cfg.granule_shift) + 63) / 64;
}

static void msnap_take(struct msnap *ms, const struct mfx *m)
{
	memset(ms, 0, sizeof(*ms));
	snap_take(&ms->s, &m->f);
	ms->nslots = m->mmu.nslots;
	for (uint32_t i = 0; i < m->mmu.nslots && i < MSNAP_SLOTS; i++) {
		const struct s2pt_memslot *s = &m->mmu.slots[i];

		ms->slots[i] = *s;
		if (s->dirty) {
			ms->dirty[i] = malloc(slot_words(m, s) * sizeof(uint64_t));
			if (ms->dirty[i])
				memcpy(ms->dirty[i], s->dirty, slot_words(m, s) * sizeof(uint64_t));
		}
	}
	memcpy(ms->counts, m->mmu.counts, sizeof(ms->counts));
}

static const char *msnap_diff(const struct msnap *ms, const struct mfx *m)
{
	const char *d = snap_diff(&ms->s, &m->f);

	if (d)
		return d;
	if (ms->nslots != m->mmu.nslots || ms->nslots > MSNAP_SLOTS)
		return "number of slots";
	for (uint32_t i = 0; i < ms->nslots; i++) {
		const struct s2pt_memslot *a = &ms->slots[i], *b = &m->mmu.slots[i];

		if (a->ipa != b->ipa || a->pa != b->pa || a->size != b->size ||
		    a->backing != b->backing || a->id != b->id || a->flags != b->flags ||
		    a->ndirty != b->ndirty || !a->dirty != !b->dirty)
			return "a slot";
		if (a->dirty && (!ms->dirty[i] || memcmp(ms->dirty[i], b->dirty,
							 slot_words(m, b) * sizeof(uint64_t))))
			return "a dirty bitmap";
	}
	if (memcmp(ms->counts, m->mmu.counts, sizeof(ms->counts)))
		return "fault counters";
	return NULL;
}

static void msnap_free(struct msnap *ms)
{
	snap_free(&ms->s);
	for (uint32_t i = 0; i < MSNAP_SLOTS; i++)
		free(ms->dirty[i]);
}

#define CHECK_MUNCHANGED(msp, mp)                                                                  \
	do {                                                                                       \
		const char *md_ = msnap_diff(msp, mp);                                             \
		CHECK_MSG(md_ == NULL, "state changed: %s", md_);                                  \
	} while (0)

/* A call that must fail with @expect and change nothing at all. */
#define BAD(mp, expect, call)                                                                      \
	do {                                                                                       \
		struct msnap bs_;                                                                  \
		msnap_take(&bs_, mp);                                                              \
		CHECK_EQ((call), (expect));                                                        \
		CHECK_MUNCHANGED(&bs_, mp);                                                        \
		msnap_free(&bs_);                                                                  \
	} while (0)

static void set_bits(uint64_t *bm, size_t words, const uint64_t *pages, size_t n)
{
	memset(bm, 0, words * sizeof(uint64_t));
	for (size_t i = 0; i < n; i++)
		bm[pages[i] / 64] |= 1ull << (pages[i] % 64);
}

/*
 * Guest writes, 8 bytes into each of the slot pages @pages, in one s2pt_access_many(): each
 * lands at the slot's PA; the first write to a page has outcome @first, a repeat is a HIT.
 */
static void write_pages(struct mfx *m, uint32_t id, const uint64_t *pages, size_t n, uint32_t first)
{
	const struct s2pt_memslot *s = s2pt_memslot_find(&m->mmu, id);
	uint32_t gs = m->f.cfg.granule_shift;
	uint64_t *ipas = calloc(n, sizeof(uint64_t)), *pa = calloc(n, sizeof(uint64_t)), *seen;
	uint8_t *oc = calloc(n, 1);
	size_t done = 0;

	if (!s || !ipas || !pa || !oc) {
		CHECK_MSG(0, "write_pages: no slot %u or no memory", id);
		free(ipas);
		free(pa);
		free(oc);
		return;
	}
	seen = calloc(slot_words(m, s), sizeof(uint64_t));
	for (size_t i = 0; i < n; i++)
		ipas[i] = s->ipa + (pages[i] << gs) + 8;
	CHECK_EQ(s2pt_access_many(&m->mmu, ipas, n, WRITE, pa, oc, &done), 0);
	CHECK_EQ(done, n);
	for (size_t i = 0; i < n && seen; i++) {
		uint64_t p = pages[i], bit = 1ull << (p % 64);
		uint32_t want = (seen[p / 64] & bit) ? S2PT_OUTCOME_HIT : first;

		CHECK_MSG(pa[i] == s->pa + (p << gs) + 8, "page %llu: pa %#llx",
			  (unsigned long long)p, (unsigned long long)pa[i]);
		CHECK_MSG(oc[i] == want, "page %llu: outcome %u, want %u", (unsigned long long)p,
			  oc[i], want);
		seen[p / 64] |= bit;
	}
	free(seen);
	free(ipas);
	free(pa);
	free(oc);
}

/* ---- memslots ------------------------------------------------------------------------------ */

TEST(mmu_memslot_add_maps_nothing_find_and_lowest_free_ids)
{
	struct mfx m;
	const struct s2pt_memslot *s;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, 0), 0);
	CHECK_EQ(add_slot(&m, GiB(1), OUT_PA, MiB(4), 0, MiB(2)), 0);
	CHECK_EQ(add_slot(&m, GiB(3), OUT_PA, MiB(4), S2PT_MEMSLOT_READONLY, KiB(4)), 1);
	CHECK_EQ(add_slot(&m, GiB(2), OUT_PA + MiB(4), KiB(400), S2PT_MEMSLOT_LOG_DIRTY, KiB(4)),
		 2);
	/* Nothing mapped, no event: the tables fill on faults. */
	CHECK_EQ(m.f.pt.table_pages, 2);
	CHECK_EQ(m.f.pool.used, 2);
	CHECK_EQ(m.f.log.count, 0);
	/* Sorted by IPA. */
	REQUIRE_EQ(m.mmu.nslots, 3);
	CHECK_EQ(m.mmu.slots[0].ipa, GiB(1));
	CHECK_EQ(m.mmu.slots[1].ipa, GiB(2));
	CHECK_EQ(m.mmu.slots[2].ipa, GiB(3));
	s = s2pt_memslot_find(&m.mmu, 2);
	REQUIRE(s != NULL);
	CHECK_EQ(s->ipa, GiB(2));
	CHECK_EQ(s->pa, OUT_PA + MiB(4));
	CHECK_EQ(s->size, KiB(400));
	CHECK_EQ(s->backing, KiB(4));
	CHECK_EQ(s->flags, S2PT_MEMSLOT_LOG_DIRTY);
	CHECK(s->dirty != NULL);
	s = s2pt_memslot_find(&m.mmu, 1);
	REQUIRE(s != NULL);
	CHECK_EQ(s->flags, S2PT_MEMSLOT_READONLY);
	CHECK(s->dirty == NULL);
	CHECK(s2pt_memslot_find(&m.mmu, 3) == NULL);
	CHECK(s2pt_memslot_find(&m.mmu, NOID) == NULL);
	/* The lowest free id is handed out again. */
	REQUIRE_EQ(s2pt_memslot_delete(&m.mmu, 1), 0);
	CHECK(s2pt_memslot_find(&m.mmu, 1) == NULL);
	CHECK_EQ(add_slot(&m, GiB(5), OUT_PA, KiB(4), 0, KiB(4)), 1);
	CHECK_EQ(add_slot(&m, GiB(6), OUT_PA, KiB(4), 0, KiB(4)), 3);
	/* Adjacent slots do not overlap. */
	CHECK_EQ(add_slot(&m, GiB(1) + MiB(4), OUT_PA, KiB(4), 0, KiB(4)), 4);
	CHECK_EQ(add_slot(&m, GiB(1) - KiB(4), OUT_PA, KiB(4), 0, KiB(4)), 5);
	CHECK_EQ(m.mmu.nslots, 6);
	for (uint32_t i = 1; i < m.mmu.nslots; i++)
		CHECK_LE(m.mmu.slots[i - 1].ipa + m.mmu.slots[i - 1].size, m.mmu.slots[i].ipa);
	CHECK_EQ(m.f.pt.table_pages, 2);
	mfx_fini(&m);
}

/* ---- mapping sizes -------------------------------------------------------------------------- */

TEST(mmu_fault_maps_the_largest_leaf_the_slot_allows)
{
	for (unsigned k = 0; k < NGEOMS; k++) {
		const struct geom *g = &GEOMS[k];
		const uint64_t gr = g->granule, bs = block2(g->granule);
		struct s2pt_translation t;
		struct s2pt_fault flt;
		struct mfx m;
		uint32_t id;

		/* Block backing, IPA and PA sharing the block alignment: a level-2 block. A read
		 * fault outside logging maps RW (a writable slot), no exec, AF set. */
		REQUIRE_EQ(mk(&m, g, 16, 0), 0);
		id = add_slot(&m, 4 * bs, OUT_PA, 2 * bs, 0, bs);
		CHECK_EQ(m.f.pt.table_pages, g->roots);
		CHECK_EQ(fault(&m, 5 * bs + 3 * gr + 5, READ), S2PT_OUTCOME_MAPPED);
		CHECK_LEAF(&m.f, 5 * bs, 2, a_leaf(OUT_PA + bs, 2, RW, NORMAL, 1));
		CHECK_EQ(stats_of(&m.f).mapped_bytes, bs);
		CHECK_EQ(m.f.log.count, 0); /* a new leaf over an invalid entry */
		CHECK_EQ(fault(&m, 5 * bs + 3 * gr + 5, WRITE), S2PT_OUTCOME_HIT);
		REQUIRE_EQ(s2pt_translate(&m.f.pt, 5 * bs + 3 * gr + 5, WRITE, &t, &flt), 0);
		CHECK_EQ(t.pa, OUT_PA + bs + 3 * gr + 5);
		CHECK_EQ(s2pt_memslot_find(&m.mmu, id)->backing, bs);
		CHECK_INVARIANTS(&m.f.pt);
		mfx_fini(&m);

		/* ipa % bs != pa % bs: pages. */
		REQUIRE_EQ(mk(&m, g, 16, 0), 0);
		add_slot(&m, 4 * bs, OUT_PA + gr, 2 * bs, 0, bs);
		CHECK_EQ(fault(&m, 4 * bs + 7 * gr + 1, READ), S2PT_OUTCOME_MAPPED);
		CHECK_LEAF(&m.f, 4 * bs + 7 * gr, 3, a_leaf(OUT_PA + 8 * gr, 3, RW, NORMAL, 1));
		CHECK_EQ(stats_of(&m.f).mapped_bytes, gr);
		mfx_fini(&m);

		/* [4bs, 5bs + 3g): the second block would cross the slot's end. */
		REQUIRE_EQ(mk(&m, g, 16, 0), 0);
		add_slot(&m, 4 * bs, OUT_PA, bs + 3 * gr, 0, bs);
		CHECK_EQ(fault(&m, 5 * bs + gr, READ), S2PT_OUTCOME_MAPPED);
		CHECK_LEAF(&m.f, 5 * bs + gr, 3, a_leaf(OUT_PA + bs + gr, 3, RW, NORMAL, 1));
		CHECK_EQ(fault(&m, 4 * bs + 5, READ), S2PT_OUTCOME_MAPPED);
		CHECK_LEAF(&m.f, 4 * bs, 2, a_leaf(OUT_PA, 2, RW, NORMAL, 1));
		mfx_fini(&m);

		/* A slot starting one page into a block: its first and last blocks are partial. */
		REQUIRE_EQ(mk(&m, g, 16, 0), 0);
		add_slot(&m, 4 * bs + gr, OUT_PA + gr, 2 * bs, 0, bs);
		CHECK_EQ(fault(&m, 4 * bs + 2 * gr, READ), S2PT_OUTCOME_MAPPED);
		CHECK_LEAF(&m.f, 4 * bs + 2 * gr, 3, a_leaf(OUT_PA + 2 * gr, 3, RW, NORMAL, 1));
		CHECK_EQ(fault(&m, 5 * bs + 7 * gr, READ), S2PT_OUTCOME_MAPPED);
		CHECK_LEAF(&m.f, 5 * bs, 2, a_leaf(OUT_PA + bs, 2, RW, NORMAL, 1));
		CHECK_EQ(fault(&m, 6 * bs, READ), S2PT_OUTCOME_MAPPED); /* the slot's last page */
		CHECK_LEAF(&m.f, 6 * bs, 3, a_leaf(OUT_PA + 2 * bs, 3, RW, NORMAL, 1));
		CHECK_INVARIANTS(&m.f.pt);
		mfx_fini(&m);

		/* Granule backing: pages even where everything is block aligned. */
		REQUIRE_EQ(mk(&m, g, 16, 0), 0);
		add_slot(&m, 4 * bs, OUT_PA, bs, 0, gr);
		CHECK_EQ(fault(&m, 4 * bs, READ), S2PT_OUTCOME_MAPPED);
		CHECK_LEAF(&m.f, 4 * bs, 3, a_leaf(OUT_PA, 3, RW, NORMAL, 1));
		mfx_fini(&m);
	}
}

TEST(mmu_fault_1g_backing_4k)
{
	struct mfx m;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, 0), 0);
	add_slot(&m, GiB(1), OUT_PA, GiB(2), 0, GiB(1));
	CHECK_EQ(fault(&m, GiB(2) + 12345, READ), S2PT_OUTCOME_MAPPED);
	CHECK_LEAF(&m.f, GiB(2), 1, a_leaf(OUT_PA + GiB(1), 1, RW, NORMAL, 1));
	CHECK_EQ(m.f.pt.table_pages, 2); /* a level-1 block lives in the root */
	/* 1 GiB backing, but no whole aligned GiB in the slot: 2 MiB, the next size down. */
	add_slot(&m, GiB(4), GiB(16), MiB(512), 0, GiB(1));
	CHECK_EQ(fault(&m, GiB(4) + MiB(3), READ), S2PT_OUTCOME_MAPPED);
	CHECK_LEAF(&m.f, GiB(4) + MiB(3), 2, a_leaf(GiB(16) + MiB(2), 2, RW, NORMAL, 1));
	/* GiB aligned, 2 MiB backing: never larger than the host page. */
	add_slot(&m, GiB(8), GiB(32), GiB(1), 0, MiB(2));
	CHECK_EQ(fault(&m, GiB(8), READ), S2PT_OUTCOME_MAPPED);
	CHECK_LEAF(&m.f, GiB(8), 2, a_leaf(GiB(32), 2, RW, NORMAL, 1));
	/* 1 GiB backing, IPA and PA sharing only 2 MiB alignment. */
	add_slot(&m, GiB(16), GiB(64) + MiB(2), GiB(2), 0, GiB(1));
	CHECK_EQ(fault(&m, GiB(17), READ), S2PT_OUTCOME_MAPPED);
	CHECK_LEAF(&m.f, GiB(17), 2, a_leaf(GiB(65) + MiB(2), 2, RW, NORMAL, 1));
	CHECK_INVARIANTS(&m.f.pt);
	mfx_fini(&m);
}

/* ---- permissions and outcomes --------------------------------------------------------------- */

TEST(mmu_fetch_maps_rwx_and_permission_faults_relax_never_remove)
{
	static const uint32_t fetches[] = {EXEC, EXEC0};
	struct mfx m;

	for (unsigned i = 0; i < 2; i++) {
		REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, 0), 0);
		add_slot(&m, GiB(1), OUT_PA, MiB(4), 0, MiB(2));
		CHECK_EQ(fault(&m, GiB(1) + 8, fetches[i]), S2PT_OUTCOME_MAPPED);
		CHECK_LEAF(&m.f, GiB(1), 2, a_leaf(OUT_PA, 2, S2PT_PROT_ALL, NORMAL, 1));
		mfx_fini(&m);
	}
	REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, 0), 0);
	add_slot(&m, GiB(1), OUT_PA, MiB(4), 0, KiB(4));
	CHECK_EQ(fault(&m, GiB(1) + KiB(4), READ), S2PT_OUTCOME_MAPPED);
	CHECK_LEAF(&m.f, GiB(1) + KiB(4), 3, a_leaf(OUT_PA + KiB(4), 3, RW, NORMAL, 1));
	ev_reset(&m);
	/* The leaf has the mapping size: relax_perms adds X, keeps RW; one PERM event. */
	CHECK_EQ(fault(&m, GiB(1) + KiB(4) + 8, EXEC), S2PT_OUTCOME_RELAXED);
	CHECK_LEAF(&m.f, GiB(1) + KiB(4), 3, a_leaf(OUT_PA + KiB(4), 3, S2PT_PROT_ALL, NORMAL, 1));
	REQUIRE_EQ(m.f.log.count, 1);
	CHECK_EV(&m.f.log, 0, S2PT_TLBI_IPA, GiB(1) + KiB(4), KiB(4), 3, S2PT_TLBI_PERM, 0);
	CHECK_EQ(fault(&m, GiB(1) + KiB(4), WRITE), S2PT_OUTCOME_HIT);
	CHECK_EQ(fault(&m, GiB(1) + KiB(4), EXEC0), S2PT_OUTCOME_HIT);
	mfx_fini(&m);
}

TEST(mmu_logging_read_maps_read_only_pages_writes_are_dirty)
{
	struct mfx m;
	uint64_t bm[16];
	uint32_t id;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, 0), 0);
	id = add_slot(&m, GiB(1), OUT_PA, MiB(4), S2PT_MEMSLOT_LOG_DIRTY, MiB(2));
	/* While logging: a page (force_pte) without W, so that the first write faults. */
	CHECK_EQ(fault(&m, GiB(1) + KiB(8), READ), S2PT_OUTCOME_MAPPED);
	CHECK_LEAF(&m.f, GiB(1) + KiB(8), 3, a_leaf(OUT_PA + KiB(8), 3, R_, NORMAL, 1));
	CHECK_EQ(fault(&m, GiB(1) + KiB(12), EXEC), S2PT_OUTCOME_MAPPED);
	CHECK_LEAF(&m.f, GiB(1) + KiB(12), 3, a_leaf(OUT_PA + KiB(12), 3, RX, NORMAL, 1));
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 0), 0);
	for (unsigned i = 0; i < 8; i++)
		CHECK_EQ(bm[i], 0);
	ev_reset(&m);
	/* Writes: relaxed to W at the page, marked dirty; the exec permission stays. */
	CHECK_EQ(fault(&m, GiB(1) + KiB(8), WRITE), S2PT_OUTCOME_DIRTY);
	CHECK_LEAF(&m.f, GiB(1) + KiB(8), 3, a_leaf(OUT_PA + KiB(8), 3, RW, NORMAL, 1));
	CHECK_EQ(fault(&m, GiB(1) + KiB(12), WRITE), S2PT_OUTCOME_DIRTY);
	CHECK_LEAF(&m.f, GiB(1) + KiB(12), 3,
		   a_leaf(OUT_PA + KiB(12), 3, S2PT_PROT_ALL, NORMAL, 1));
	REQUIRE_EQ(m.f.log.count, 2);
	CHECK_EV(&m.f.log, 0, S2PT_TLBI_IPA, GiB(1) + KiB(8), KiB(4), 3, S2PT_TLBI_PERM, 0);
	CHECK_EV(&m.f.log, 1, S2PT_TLBI_IPA, GiB(1) + KiB(12), KiB(4), 3, S2PT_TLBI_PERM, 0);
	/* A write to a page never mapped: a translation fault, mapped RW, dirty. */
	CHECK_EQ(fault(&m, GiB(1) + MiB(3), WRITE), S2PT_OUTCOME_MAPPED);
	CHECK_LEAF(&m.f, GiB(1) + MiB(3), 3, a_leaf(OUT_PA + MiB(3), 3, RW, NORMAL, 1));
	/* Pages 2, 3 and 768 of 1024: words 0 and 12 of 16. */
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 0), 0);
	CHECK_EQ(bm[0], 1ull << 2 | 1ull << 3);
	for (unsigned i = 1; i < 8; i++)
		CHECK_EQ(bm[i], 0);
	{
		uint64_t full[16];

		REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, full, 0), 0);
		CHECK_EQ(full[12], 1ull);
	}
	CHECK_INVARIANTS(&m.f.pt);
	mfx_fini(&m);
}

TEST(mmu_readonly_slot)
{
	struct mfx m;
	struct msnap ms;
	uint32_t id;
	int young;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, 0), 0);
	id = add_slot(&m, GiB(1), OUT_PA, MiB(4), S2PT_MEMSLOT_READONLY, MiB(2));
	/* A write: MMIO (exit to user space), nothing mapped. */
	msnap_take(&ms, &m);
	CHECK_EQ(fault(&m, GiB(1) + 8, WRITE), S2PT_OUTCOME_MMIO);
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_MMIO], 1);
	m.mmu.counts[S2PT_OUTCOME_MMIO] = 0;
	CHECK_MUNCHANGED(&ms, &m);
	msnap_free(&ms);
	CHECK_EQ(fault(&m, GiB(1) + 8, READ), S2PT_OUTCOME_MAPPED);
	CHECK_LEAF(&m.f, GiB(1), 2, a_leaf(OUT_PA, 2, R_, NORMAL, 1));
	/* Now a permission fault: still MMIO, still no change. */
	msnap_take(&ms, &m);
	CHECK_EQ(fault(&m, GiB(1) + 8, WRITE), S2PT_OUTCOME_MMIO);
	m.mmu.counts[S2PT_OUTCOME_MMIO] = 0;
	CHECK_MUNCHANGED(&ms, &m);
	msnap_free(&ms);
	CHECK_EQ(fault(&m, GiB(1) + 8, EXEC), S2PT_OUTCOME_RELAXED);
	CHECK_LEAF(&m.f, GiB(1), 2, a_leaf(OUT_PA, 2, RX, NORMAL, 1));
	CHECK_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, 0), S2PT_EINVAL);
	/* Access flag clear: a write still exits first (KVM checks the slot before AF). */
	REQUIRE_EQ(s2pt_test_clear_young(&m.f.pt, GiB(1), MiB(4), 1, &young), 0);
	CHECK_EQ(fault(&m, GiB(1), WRITE), S2PT_OUTCOME_MMIO);
	CHECK_LEAF(&m.f, GiB(1), 2, a_leaf(OUT_PA, 2, RX, NORMAL, 0));
	CHECK_EQ(fault(&m, GiB(1), READ), S2PT_OUTCOME_YOUNG);
	CHECK_LEAF(&m.f, GiB(1), 2, a_leaf(OUT_PA, 2, RX, NORMAL, 1));
	mfx_fini(&m);
}

TEST(mmu_holes_beyond_the_ipa_space_and_annotations)
{
	static const uint32_t acc[] = {READ, WRITE, EXEC, EXEC0};
	const uint64_t top = 1ull << 40;
	struct mfx m;
	struct msnap ms;
	uint32_t oc;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, 0), 0);
	add_slot(&m, GiB(1), OUT_PA, MiB(4), 0, MiB(2));
	REQUIRE_EQ(s2pt_set_owner(&m.f.pt, GiB(1) + MiB(2), KiB(4), 9), 0);
	ev_reset(&m);
	msnap_take(&ms, &m);
	for (unsigned i = 0; i < 4; i++) {
		int fetch = acc[i] == EXEC || acc[i] == EXEC0;
		uint32_t outside = fetch ? S2PT_OUTCOME_ABORT : S2PT_OUTCOME_MMIO;

		/* No slot: MMIO, or an abort for an instruction fetch. */
		CHECK_EQ(fault(&m, GiB(1) - KiB(4), acc[i]), outside);
		CHECK_EQ(fault(&m, 0, acc[i]), outside);
		/* Beyond the IPA size: an abort. */
		CHECK_EQ(fault(&m, top, acc[i]), S2PT_OUTCOME_ABORT);
		CHECK_EQ(fault(&m, top + KiB(4), acc[i]), S2PT_OUTCOME_ABORT);
		CHECK_EQ(fault(&m, UINT64_MAX, acc[i]), S2PT_OUTCOME_ABORT);
		/* An owner annotation: not the MMU's to map. */
		CHECK_EQ(fault(&m, GiB(1) + MiB(2) + 8, acc[i]), S2PT_OUTCOME_PERMISSION);
	}
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_MMIO], 4);
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_ABORT], 4 + 12);
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_PERMISSION], 4);
	memset(m.mmu.counts, 0, sizeof(m.mmu.counts));
	/* Bad access types. */
	CHECK_EQ(s2pt_handle_fault(&m.mmu, GiB(1), 4, &oc), S2PT_EINVAL);
	CHECK_EQ(s2pt_handle_fault(&m.mmu, GiB(1), 0xFFFFFFFFu, &oc), S2PT_EINVAL);
	CHECK_MUNCHANGED(&ms, &m);
	msnap_free(&ms);
	mfx_fini(&m);
}

TEST(mmu_access_flag_cleared_then_young_without_events)
{
	for (unsigned k = 0; k < NGEOMS; k++) {
		const struct geom *g = &GEOMS[k];
		const uint64_t gr = g->granule, bs = block2(g->granule);
		const uint64_t block = a_leaf(OUT_PA, 2, RW, NORMAL, 1);
		static const uint32_t acc[] = {READ, WRITE};
		struct mfx m;
		int young;

		REQUIRE_EQ(mk(&m, g, 16, 0), 0);
		add_slot(&m, 4 * bs, OUT_PA, bs, 0, bs);
		CHECK_EQ(fault(&m, 4 * bs + gr, WRITE), S2PT_OUTCOME_MAPPED);
		CHECK_LEAF(&m.f, 4 * bs, 2, block);
		REQUIRE_EQ(s2pt_test_clear_young(&m.f.pt, 4 * bs, bs, 1, &young), 0);
		CHECK_EQ(young, 1);
		CHECK_LEAF(&m.f, 4 * bs, 2, block & ~A_AF);
		ev_reset(&m);
		for (unsigned i = 0; i < 2; i++) {
			CHECK_EQ(fault(&m, 4 * bs + 5 * gr, acc[i]), S2PT_OUTCOME_YOUNG);
			CHECK_LEAF(&m.f, 4 * bs, 2, block); /* AF back, nothing else changed */
			CHECK_EQ(fault(&m, 4 * bs + 5 * gr, acc[i]), S2PT_OUTCOME_HIT);
			REQUIRE_EQ(s2pt_test_clear_young(&m.f.pt, 4 * bs, bs, 1, &young), 0);
		}
		CHECK_EQ(m.f.log.count, 0); /* mkyoung / mkold: no TLBI */
		mfx_fini(&m);
	}
}

TEST(mmu_access_flag_then_dirty_in_one_access)
{
	struct mfx m;
	uint64_t ipa = GiB(1) + 16, pa = 0, bm[8];
	uint8_t oc = 0xFF;
	size_t done = 0;
	uint32_t id;
	int young;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, 0), 0);
	id = add_slot(&m, GiB(1), OUT_PA, MiB(2), S2PT_MEMSLOT_LOG_DIRTY, KiB(4));
	CHECK_EQ(fault(&m, GiB(1), READ), S2PT_OUTCOME_MAPPED); /* a read-only page */
	REQUIRE_EQ(s2pt_test_clear_young(&m.f.pt, GiB(1), KiB(4), 1, &young), 0);
	memset(m.mmu.counts, 0, sizeof(m.mmu.counts));
	/* The access-flag fault comes first, then the permission fault: two handler runs. */
	REQUIRE_EQ(s2pt_access_many(&m.mmu, &ipa, 1, WRITE, &pa, &oc, &done), 0);
	CHECK_EQ(done, 1);
	CHECK_EQ(pa, OUT_PA + 16);
	CHECK_EQ(oc, S2PT_OUTCOME_DIRTY);
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_YOUNG], 1);
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_DIRTY], 1);
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_HIT], 0);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 1), 0);
	CHECK_EQ(bm[0], 1);
	mfx_fini(&m);
}

TEST(mmu_fetch_from_a_device_leaf_aborts_and_changes_nothing)
{
	/* A user mapping of Device memory inside a slot: KVM refuses execute there (-ENOEXEC). */
	struct mfx m;
	struct msnap ms;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, 0), 0);
	add_slot(&m, GiB(1), OUT_PA, MiB(4), 0, KiB(4));
	REQUIRE_EQ(s2pt_map(&m.f.pt, GiB(1), OUT_PA, KiB(4), RW, S2PT_MEMATTR_DEVICE_nGnRE, 0), 0);
	ev_reset(&m);
	msnap_take(&ms, &m);
	CHECK_EQ(fault(&m, GiB(1) + 4, EXEC), S2PT_OUTCOME_ABORT);
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_ABORT], 1);
	m.mmu.counts[S2PT_OUTCOME_ABORT] = 0;
	CHECK_MUNCHANGED(&ms, &m);
	msnap_free(&ms);
	CHECK_LEAF(&m.f, GiB(1), 3, a_leaf(OUT_PA, 3, RW, S2PT_MEMATTR_DEVICE_nGnRE, 1));
	CHECK_EQ(fault(&m, GiB(1) + 4, WRITE), S2PT_OUTCOME_HIT);
	mfx_fini(&m);
}

TEST(mmu_fault_pool_exhausted_changes_nothing)
{
	for (int log = 0; log < 2; log++) {
		struct mfx m;
		struct msnap ms;
		uint32_t oc;

		REQUIRE_EQ(mfx_init(&m, 40, 4096, 2, 0), 0); /* the two roots and no page more */
		add_slot(&m, GiB(1), OUT_PA, MiB(4), log ? S2PT_MEMSLOT_LOG_DIRTY : 0, MiB(2));
		msnap_take(&ms, &m);
		CHECK_EQ(s2pt_handle_fault(&m.mmu, GiB(1) + KiB(4), WRITE, &oc), S2PT_ENOMEM);
		CHECK_MUNCHANGED(&ms, &m); /* no dirty bit, no count */
		msnap_free(&ms);
		/* A level-1 block needs no table: 1 GiB slots still fault in. */
		add_slot(&m, GiB(4), GiB(4), GiB(1), 0, GiB(1));
		CHECK_EQ(fault(&m, GiB(4), WRITE), S2PT_OUTCOME_MAPPED);
		mfx_fini(&m);
	}
}

/* ---- dirty logging -------------------------------------------------------------------------- */

/* A 64 MiB 2 MiB-backed slot at 1 GiB, every block faulted in by a read. */
static uint32_t faulted_in_slot(struct mfx *m)
{
	uint64_t ipas[32], pa[32];
	uint8_t oc[32];
	size_t done = 0;
	uint32_t id = add_slot(m, GiB(1), OUT_PA, MiB(64), 0, MiB(2));

	for (unsigned i = 0; i < 32; i++)
		ipas[i] = GiB(1) + i * MiB(2);
	CHECK_EQ(s2pt_access_many(&m->mmu, ipas, 32, READ, pa, oc, &done), 0);
	CHECK_EQ(done, 32);
	for (unsigned i = 0; i < 32; i++) {
		CHECK_EQ(oc[i], S2PT_OUTCOME_MAPPED);
		CHECK_EQ(pa[i], OUT_PA + i * MiB(2));
	}
	CHECK_EQ(stats_of(&m->f).leaves_by_level[2], 32);
	ev_reset(m);
	return id;
}

TEST(mmu_dirty_log_full_cycle_without_eager_split)
{
	static uint64_t bm[256], bm2[256], want[256];
	uint64_t pages[304], rs = 12345, blocks_written = 0, *before, nwords;
	uint8_t *is_dirty_desc;
	struct s2pt_stats st;
	struct mfx m;
	uint32_t id, tables;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 64, 0), 0);
	id = faulted_in_slot(&m);
	tables = m.f.pt.table_pages;
	CHECK_EQ(tables, 2 + 1);
	REQUIRE_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, 0), 0);
	CHECK_EQ(s2pt_memslot_find(&m.mmu, id)->flags & S2PT_MEMSLOT_LOG_DIRTY,
		 S2PT_MEMSLOT_LOG_DIRTY);
	/* Every block lost W in place; no split; one flush over the slot. */
	for (unsigned i = 0; i < 32; i++)
		CHECK_LEAF(&m.f, GiB(1) + i * MiB(2), 2,
			   a_leaf(OUT_PA + i * MiB(2), 2, R_, NORMAL, 1));
	CHECK_EQ(m.f.pt.table_pages, tables);
	REQUIRE_EQ(m.f.log.count, 1);
	CHECK_WP_EV(&m.f.log, 0, GiB(1), MiB(64));
	/* Round 1: 300 random pages and some repeats. */
	for (unsigned i = 0; i < 300; i++)
		pages[i] = rng_below(&rs, 16384);
	pages[300] = 5;
	pages[301] = 5;
	pages[302] = 6;
	pages[303] = 16383;
	write_pages(&m, id, pages, 304, S2PT_OUTCOME_DIRTY);
	set_bits(want, 256, pages, 304);
	for (unsigned b = 0; b < 32; b++) {
		uint64_t any = 0;

		for (unsigned w = b * 8; w < b * 8 + 8; w++)
			any |= want[w];
		blocks_written += any != 0;
	}
	/* Exact semantics: each block written into was split; its rest stays read-only pages. */
	st = stats_of(&m.f);
	CHECK_EQ(st.leaves_by_level[2], 32 - blocks_written);
	CHECK_EQ(st.leaves_by_level[3], 512 * blocks_written);
	CHECK_EQ(st.table_pages, tables + blocks_written);
	for (unsigned p = 0; p < 16384; p++)
		if (writable(&m, GiB(1) + p * KiB(4)) != !!(want[p / 64] >> (p % 64) & 1)) {
			CHECK_MSG(0, "page %u: writable %d", p, writable(&m, GiB(1) + p * KiB(4)));
			break;
		}
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 0), 0);
	CHECK_EQ(memcmp(bm, want, sizeof(bm)), 0);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm2, 0), 0); /* unchanged */
	CHECK_EQ(memcmp(bm2, want, sizeof(bm2)), 0);
	/* The harvest: W cleared in the descriptors of exactly the written pages. */
	nwords = m.f.mem_bytes / 8;
	before = malloc(m.f.mem_bytes);
	is_dirty_desc = calloc(nwords, 1);
	REQUIRE(before && is_dirty_desc);
	memcpy(before, m.f.pool.mem, m.f.mem_bytes);
	for (unsigned p = 0; p < 16384; p++)
		if (want[p / 64] >> (p % 64) & 1)
			is_dirty_desc[desc_word(&m.f, GiB(1) + p * KiB(4))] = 1;
	ev_reset(&m);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm2, 1), 0);
	CHECK_EQ(memcmp(bm2, want, sizeof(bm2)), 0);
	{
		const uint64_t *now = (const uint64_t *)m.f.pool.mem;
		uint64_t bad = 0;

		for (uint64_t w = 0; w < nwords; w++) {
			uint64_t x = before[w] ^ now[w];

			if (is_dirty_desc[w] ? x != A_S2AP_W || !(before[w] & A_S2AP_W) : x != 0)
				bad++;
		}
		CHECK_EQ(bad, 0);
	}
	free(before);
	free(is_dirty_desc);
	REQUIRE_EQ(m.f.log.count, 1);
	CHECK_WP_EV(&m.f.log, 0, GiB(1), MiB(64));
	/* Nothing new: an empty bitmap and no flush. */
	ev_reset(&m);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 1), 0);
	for (unsigned i = 0; i < 256; i++)
		CHECK_EQ(bm[i], 0);
	CHECK_EQ(m.f.log.count, 0);
	/* Round 2 sees only its own writes. */
	for (unsigned i = 0; i < 100; i++)
		pages[i] = rng_below(&rs, 16384);
	pages[100] = 5;
	write_pages(&m, id, pages, 101, S2PT_OUTCOME_DIRTY);
	set_bits(want, 256, pages, 101);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 1), 0);
	CHECK_EQ(memcmp(bm, want, sizeof(bm)), 0);
	CHECK_INVARIANTS(&m.f.pt);
	CHECK_REFCOUNTS(&m.f.pt);
	mfx_fini(&m);
}

TEST(mmu_dirty_log_with_eager_split)
{
	static const uint64_t pages[] = {0, 1, 511, 512, 9000, 16383, 1};
	static uint64_t bm[256], want[256];
	struct s2pt_stats st;
	struct mfx m;
	struct msnap ms;
	uint32_t id, bad = 0;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 64, 0), 0);
	id = faulted_in_slot(&m);
	REQUIRE_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, S2PT_LOG_EAGER_SPLIT), 0);
	st = stats_of(&m.f);
	CHECK_EQ(st.table_pages, 2 + 1 + 32);
	CHECK_EQ(st.leaves_by_level[2], 0);
	CHECK_EQ(st.leaves_by_level[3], 16384);
	for (unsigned p = 0; p < 16384 && !bad; p++)
		if (sw_desc(&m.f.pt, GiB(1) + p * KiB(4), 3) !=
		    a_leaf(OUT_PA + p * KiB(4), 3, R_, NORMAL, 1))
			bad = p + 1;
	CHECK_EQ(bad, 0);
	REQUIRE_EQ(m.f.log.count, 33);
	for (uint32_t i = 0; i < 32; i++)
		CHECK_EV(&m.f.log, i, S2PT_TLBI_IPA, GiB(1) + i * MiB(2), MiB(2), 2,
			 S2PT_TLBI_SPLIT, 1);
	CHECK_WP_EV(&m.f.log, 32, GiB(1), MiB(64));
	/* Enabling again is a no-op, eager split or not. */
	msnap_take(&ms, &m);
	CHECK_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, S2PT_LOG_EAGER_SPLIT), 0);
	CHECK_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, 0), 0);
	CHECK_MUNCHANGED(&ms, &m);
	msnap_free(&ms);
	ev_reset(&m);
	write_pages(&m, id, pages, 7, S2PT_OUTCOME_DIRTY);
	CHECK_EQ(m.f.pt.table_pages, 2 + 1 + 32); /* no more splits */
	REQUIRE_EQ(m.f.log.count, 6);
	for (uint32_t i = 0; i < 6; i++)
		CHECK_EV(&m.f.log, i, S2PT_TLBI_IPA, GiB(1) + pages[i] * KiB(4), KiB(4), 3,
			 S2PT_TLBI_PERM, 0);
	set_bits(want, 256, pages, 7);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 1), 0);
	CHECK_EQ(memcmp(bm, want, sizeof(bm)), 0);
	CHECK_INVARIANTS(&m.f.pt);
	CHECK_REFCOUNTS(&m.f.pt);
	mfx_fini(&m);
}

TEST(mmu_eager_split_pool_exhausted_changes_nothing)
{
	struct mfx m;
	struct msnap ms;
	uint64_t bm[256];
	uint32_t id;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 2 + 1 + 31, 0), 0); /* the split needs 32 tables */
	id = faulted_in_slot(&m);
	msnap_take(&ms, &m);
	CHECK_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, S2PT_LOG_EAGER_SPLIT), S2PT_ENOMEM);
	CHECK_MUNCHANGED(&ms, &m);
	msnap_free(&ms);
	CHECK_EQ(s2pt_memslot_find(&m.mmu, id)->flags & S2PT_MEMSLOT_LOG_DIRTY, 0);
	CHECK_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 0), S2PT_EINVAL);
	CHECK_EQ(fault(&m, GiB(1), WRITE), S2PT_OUTCOME_HIT); /* still writable blocks */
	CHECK_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, 0), 0); /* without the split: fine */
	CHECK_EQ(s2pt_memslot_find(&m.mmu, id)->flags & S2PT_MEMSLOT_LOG_DIRTY,
		 S2PT_MEMSLOT_LOG_DIRTY);
	mfx_fini(&m);
}

TEST(mmu_kvm_eager_split_of_a_slot_inside_a_1g_block)
{
	struct s2pt_tlbi ev[600];
	struct s2pt_tlbi_log log = {ev, 600, 0, 0};
	struct s2pt_stats st;
	struct mfx m;
	uint64_t page = 5, bm[16];
	uint32_t id;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 600, S2PT_CONFIG_KVM), 0);
	m.f.pt.tlbi = &log;
	REQUIRE_EQ(s2pt_map(&m.f.pt, GiB(1), OUT_PA, GiB(1), RW, NORMAL, 0), 0);
	id = add_slot(&m, GiB(1), OUT_PA, MiB(4), 0, KiB(4));
	log.count = 0;
	REQUIRE_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, S2PT_LOG_EAGER_SPLIT), 0); /* traps today */
	/* The whole block lost W (whole leaves) and became pages. */
	st = stats_of(&m.f);
	CHECK_EQ(st.table_pages, 2 + 1 + 512);
	CHECK_EQ(st.leaves_by_level[3], 512 * 512);
	CHECK_LEAF(&m.f, GiB(2) - KiB(4), 3, a_leaf(OUT_PA + GiB(1) - KiB(4), 3, R_, NORMAL, 1));
	REQUIRE_EQ(log.count, 513 + 1);
	CHECK_EV(&log, 0, S2PT_TLBI_IPA, GiB(1), GiB(1), 1, S2PT_TLBI_SPLIT, 1);
	CHECK_WP_EV(&log, 513, GiB(1), MiB(4));
	write_pages(&m, id, &page, 1, S2PT_OUTCOME_DIRTY);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 1), 0);
	CHECK_EQ(bm[0], 1ull << 5);
	CHECK_INVARIANTS(&m.f.pt);
	mfx_fini(&m);
}


TEST(mmu_dirty_logging_per_granule_bit_positions)
{
	for (unsigned k = 0; k < NGEOMS; k++)
		for (int eager = 0; eager < 2; eager++) {
			const struct geom *g = &GEOMS[k];
			const uint64_t gr = g->granule, bs = block2(g->granule), n = bs / gr;
			const uint64_t pages[] = {0, 1, 63, 64, n - 1, n, 2 * n - 1, 1};
			const uint64_t words = (2 * n + 63) / 64;
			uint64_t *bm = calloc(words, 8), *want = calloc(words, 8);
			struct mfx m;
			uint32_t id;

			REQUIRE(bm && want);
			REQUIRE_EQ(mk(&m, g, 16, 0), 0);
			id = add_slot(&m, 4 * bs, OUT_PA, 2 * bs, 0, bs);
			CHECK_EQ(fault(&m, 4 * bs, READ), S2PT_OUTCOME_MAPPED);
			CHECK_EQ(fault(&m, 5 * bs, READ), S2PT_OUTCOME_MAPPED);
			ev_reset(&m);
			REQUIRE_EQ(
				s2pt_set_log_dirty(&m.mmu, id, 1, eager ? S2PT_LOG_EAGER_SPLIT : 0),
				0);
			if (eager) {
				CHECK_EQ(stats_of(&m.f).leaves_by_level[3], 2 * n);
				REQUIRE_EQ(m.f.log.count, 3);
				CHECK_EV(&m.f.log, 0, S2PT_TLBI_IPA, 4 * bs, bs, 2, S2PT_TLBI_SPLIT,
					 1);
				CHECK_EV(&m.f.log, 1, S2PT_TLBI_IPA, 5 * bs, bs, 2, S2PT_TLBI_SPLIT,
					 1);
				CHECK_WP_EV(&m.f.log, 2, 4 * bs, 2 * bs);
				CHECK_LEAF(&m.f, 5 * bs + gr, 3,
					   a_leaf(OUT_PA + bs + gr, 3, R_, NORMAL, 1));
			} else {
				CHECK_LEAF(&m.f, 4 * bs, 2, a_leaf(OUT_PA, 2, R_, NORMAL, 1));
				CHECK_LEAF(&m.f, 5 * bs, 2, a_leaf(OUT_PA + bs, 2, R_, NORMAL, 1));
				REQUIRE_EQ(m.f.log.count, 1);
				CHECK_WP_EV(&m.f.log, 0, 4 * bs, 2 * bs);
			}
			write_pages(&m, id, pages, 8, S2PT_OUTCOME_DIRTY);
			for (unsigned i = 0; i < 7; i++)
				CHECK_LEAF(&m.f, 4 * bs + pages[i] * gr, 3,
					   a_leaf(OUT_PA + pages[i] * gr, 3, RW, NORMAL, 1));
			CHECK(!writable(&m, 4 * bs + 2 * gr));
			set_bits(want, words, pages, 8);
			ev_reset(&m);
			REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 1), 0);
			CHECK_EQ(memcmp(bm, want, words * 8), 0);
			CHECK_EQ(bm[0], 1ull | 2ull | 1ull << 63);
			CHECK_EQ(bm[1], 1ull);
			CHECK_EQ(bm[words - 1] >> 63, 1); /* page 2n - 1 */
			for (unsigned i = 0; i < 7; i++)
				CHECK_LEAF(&m.f, 4 * bs + pages[i] * gr, 3,
					   a_leaf(OUT_PA + pages[i] * gr, 3, R_, NORMAL, 1));
			REQUIRE_EQ(m.f.log.count, 1);
			CHECK_WP_EV(&m.f.log, 0, 4 * bs, 2 * bs);
			REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 1), 0);
			for (uint64_t w = 0; w < words; w++)
				CHECK_EQ(bm[w], 0);
			CHECK_INVARIANTS(&m.f.pt);
			CHECK_REFCOUNTS(&m.f.pt);
			mfx_fini(&m);
			free(bm);
			free(want);
		}
}

TEST(mmu_clear_dirty_log_chosen_mask)
{
	static const uint64_t dirty[] = {0, 1, 5, 63, 64, 70, 100, 200};
	static uint64_t bm[256], want[256];
	struct mfx m;
	struct msnap ms;
	uint64_t mask[2];
	uint32_t id;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 64, 0), 0);
	id = faulted_in_slot(&m);
	REQUIRE_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, S2PT_LOG_EAGER_SPLIT), 0);
	write_pages(&m, id, dirty, 8, S2PT_OUTCOME_DIRTY);
	for (unsigned i = 0; i < 8; i++)
		CHECK(writable(&m, GiB(1) + dirty[i] * KiB(4)));
	ev_reset(&m);
	/* Pages 1 and 63 of word 0: KVM write-protects from its lowest to its highest bit, so
	 * page 5 (still dirty) loses W too and page 0 keeps it. */
	mask[0] = 1ull << 1 | 1ull << 63;
	REQUIRE_EQ(s2pt_clear_dirty_log(&m.mmu, id, 0, mask, 1), 0);
	{
		static const uint64_t left[] = {0, 5, 64, 70, 100, 200};

		set_bits(want, 256, left, 6);
	}
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 0), 0);
	CHECK_EQ(memcmp(bm, want, sizeof(bm)), 0);
	CHECK(writable(&m, GiB(1)));
	CHECK(!writable(&m, GiB(1) + 1 * KiB(4)));
	CHECK(!writable(&m, GiB(1) + 5 * KiB(4)));
	CHECK(!writable(&m, GiB(1) + 63 * KiB(4)));
	CHECK(writable(&m, GiB(1) + 64 * KiB(4)));
	REQUIRE_EQ(m.f.log.count, 1);
	CHECK_WP_EV(&m.f.log, 0, GiB(1), MiB(64));
	/* From page 64, two words: pages 64 and 70 (page 100 of the same word stays dirty and
	 * writable: it lies above the highest bit cleared). */
	ev_reset(&m);
	mask[0] = 1ull << 0 | 1ull << 6;
	mask[1] = 0;
	REQUIRE_EQ(s2pt_clear_dirty_log(&m.mmu, id, 64, mask, 2), 0);
	{
		static const uint64_t left[] = {0, 5, 100, 200};

		set_bits(want, 256, left, 4);
	}
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 0), 0);
	CHECK_EQ(memcmp(bm, want, sizeof(bm)), 0);
	CHECK(!writable(&m, GiB(1) + 64 * KiB(4)));
	CHECK(!writable(&m, GiB(1) + 70 * KiB(4)));
	CHECK(writable(&m, GiB(1) + 100 * KiB(4)));
	CHECK(writable(&m, GiB(1) + 200 * KiB(4)));
	REQUIRE_EQ(m.f.log.count, 1);
	CHECK_WP_EV(&m.f.log, 0, GiB(1), MiB(64));
	/* Bits that are not dirty: nothing cleared, nothing protected, no flush. */
	ev_reset(&m);
	msnap_take(&ms, &m);
	mask[0] = 1ull << 2;
	CHECK_EQ(s2pt_clear_dirty_log(&m.mmu, id, 0, mask, 1), 0);
	mask[0] = mask[1] = 0;
	CHECK_EQ(s2pt_clear_dirty_log(&m.mmu, id, 128, mask, 2), 0);
	CHECK_EQ(s2pt_clear_dirty_log(&m.mmu, id, 0, mask, 0), 0);
	CHECK_MUNCHANGED(&ms, &m);
	msnap_free(&ms);
	/* A still-dirty page that lost W faults again and stays dirty once. */
	CHECK_EQ(fault(&m, GiB(1) + 5 * KiB(4), WRITE), S2PT_OUTCOME_DIRTY);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 1), 0);
	CHECK_EQ(memcmp(bm, want, sizeof(bm)), 0);
	for (unsigned i = 0; i < 8; i++)
		CHECK(!writable(&m, GiB(1) + dirty[i] * KiB(4)));
	mfx_fini(&m);
}

TEST(mmu_dirty_word_across_two_last_level_tables)
{
	/* The slot starts 32 pages into a 2 MiB span: word 7 (slot pages 448..511) covers IPA
	 * pages 480..543 of the span, across two level-3 tables. */
	const uint64_t base = GiB(1) + 32 * KiB(4);
	static const uint64_t dirty[] = {450, 500, 440, 520};
	static uint64_t bm[16];
	struct mfx m;
	uint64_t mask;
	uint32_t id;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, 0), 0);
	id = add_slot(&m, base, OUT_PA, MiB(4), S2PT_MEMSLOT_LOG_DIRTY, KiB(4));
	write_pages(&m, id, dirty, 4, S2PT_OUTCOME_MAPPED);
	CHECK(sw_table(&m.f.pt, base + 450 * KiB(4), 3) !=
	      sw_table(&m.f.pt, base + 500 * KiB(4), 3));
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 0), 0);
	CHECK_EQ(bm[6], 1ull << (440 - 384));
	CHECK_EQ(bm[7], 1ull << (450 - 448) | 1ull << (500 - 448));
	CHECK_EQ(bm[8], 1ull << (520 - 512));
	/* Clear word 7 alone: both of its pages lose W, the other words' pages keep it. */
	mask = bm[7];
	REQUIRE_EQ(s2pt_clear_dirty_log(&m.mmu, id, 448, &mask, 1), 0);
	CHECK(!writable(&m, base + 450 * KiB(4)));
	CHECK(!writable(&m, base + 500 * KiB(4)));
	CHECK(writable(&m, base + 440 * KiB(4)));
	CHECK(writable(&m, base + 520 * KiB(4)));
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 1), 0);
	CHECK_EQ(bm[7], 0);
	CHECK(!writable(&m, base + 440 * KiB(4)));
	CHECK(!writable(&m, base + 520 * KiB(4)));
	CHECK_INVARIANTS(&m.f.pt);
	mfx_fini(&m);
}

TEST(mmu_harvest_after_the_tables_changed_under_the_dirty_log)
{
	/* A dirty page's last-level table is freed (the user unmaps the range) and its page is
	 * reused by another table: the harvest must not write through the old entry. */
	struct s2pt_translation t;
	struct s2pt_fault flt;
	struct mfx m;
	uint64_t bm[16], page = 3;
	uint32_t id;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, 0), 0);
	id = add_slot(&m, GiB(1), OUT_PA, MiB(4), S2PT_MEMSLOT_LOG_DIRTY, KiB(4));
	write_pages(&m, id, &page, 1, S2PT_OUTCOME_MAPPED);
	REQUIRE_EQ(s2pt_unmap(&m.f.pt, GiB(1), MiB(2), NULL), 0);
	CHECK_EQ(m.f.pt.table_pages, 2);
	/* Writable pages at entries 0..3 of a table that takes a freed page. */
	REQUIRE_EQ(s2pt_map(&m.f.pt, GiB(5), OUT_PA, KiB(16), RW, NORMAL, S2PT_MAP_NO_BLOCKS), 0);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 1), 0);
	CHECK_EQ(bm[0], 1ull << 3);
	for (uint64_t i = 0; i < 4; i++)
		CHECK_EQ(s2pt_translate(&m.f.pt, GiB(5) + i * KiB(4), WRITE, &t, &flt), 0);
	CHECK_INVARIANTS(&m.f.pt);
	CHECK_REFCOUNTS(&m.f.pt);
	mfx_fini(&m);
}

TEST(mmu_disable_logging_then_write_coalesces_to_a_block)
{
	static const uint64_t written[] = {3, 700};
	struct mfx m;
	struct snap s;
	uint64_t bm[256];
	uint32_t id, tables;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 64, 0), 0);
	id = faulted_in_slot(&m);
	REQUIRE_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, 0), 0);
	write_pages(&m, id, written, 2, S2PT_OUTCOME_DIRTY); /* splits blocks 0 and 1 */
	tables = m.f.pt.table_pages;
	CHECK_EQ(tables, 2 + 1 + 2);
	ev_reset(&m);
	/* Off: the bitmap goes, the tables stay as they are, no event. */
	snap_take(&s, &m.f);
	REQUIRE_EQ(s2pt_set_log_dirty(&m.mmu, id, 0, 0), 0);
	CHECK_UNCHANGED(&s, &m.f);
	snap_free(&s);
	CHECK_EQ(s2pt_memslot_find(&m.mmu, id)->flags & S2PT_MEMSLOT_LOG_DIRTY, 0);
	CHECK_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 0), S2PT_EINVAL);
	/* A write to a read-only page: the mapping size is 2 MiB again, a different leaf size
	 * from the page's, so it is mapped (the table becomes a block: COALESCE). */
	CHECK_EQ(fault(&m, GiB(1) + 4 * KiB(4), WRITE), S2PT_OUTCOME_MAPPED);
	CHECK_LEAF(&m.f, GiB(1), 2, a_leaf(OUT_PA, 2, RW, NORMAL, 1));
	CHECK_EQ(m.f.pt.table_pages, tables - 1);
	REQUIRE_EQ(m.f.log.count, 1);
	CHECK_EV(&m.f.log, 0, S2PT_TLBI_RANGE, GiB(1), MiB(2), U, S2PT_TLBI_COALESCE, 1);
	/* A page written while logging is writable: no fault, it stays a page. */
	CHECK_EQ(fault(&m, GiB(1) + 700 * KiB(4), WRITE), S2PT_OUTCOME_HIT);
	/* A read-only block never split: the same size, relaxed in place. */
	CHECK_EQ(fault(&m, GiB(1) + MiB(10), WRITE), S2PT_OUTCOME_RELAXED);
	CHECK_LEAF(&m.f, GiB(1) + MiB(10), 2, a_leaf(OUT_PA + MiB(10), 2, RW, NORMAL, 1));
	/* Logging again starts from a clear bitmap. */
	REQUIRE_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, 0), 0);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 1), 0);
	for (unsigned i = 0; i < 256; i++)
		CHECK_EQ(bm[i], 0);
	CHECK_INVARIANTS(&m.f.pt);
	mfx_fini(&m);
}

TEST(mmu_enable_logging_protects_whole_leaves_across_the_slot_edge)
{
	/* stage2_wp_range: whole leaves, never a split, in both semantics: a user block crossing
	 * the slot's edge loses W outside the slot too. The pool has no page to spare. */
	for (int kvm = 0; kvm < 2; kvm++) {
		struct mfx m;
		uint32_t id;

		REQUIRE_EQ(mfx_init(&m, 40, 4096, 3, kvm ? S2PT_CONFIG_KVM : 0), 0);
		REQUIRE_EQ(s2pt_map(&m.f.pt, GiB(1), OUT_PA, MiB(2), RW, NORMAL, 0), 0);
		id = add_slot(&m, GiB(1) + MiB(1), OUT_PA + MiB(1), MiB(4), 0, KiB(4));
		ev_reset(&m);
		REQUIRE_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, 0), 0);
		CHECK_LEAF(&m.f, GiB(1), 2, a_leaf(OUT_PA, 2, R_, NORMAL, 1));
		REQUIRE_EQ(m.f.log.count, 1);
		CHECK_WP_EV(&m.f.log, 0, GiB(1) + MiB(1), MiB(4));
		mfx_fini(&m);
	}
}

TEST(mmu_wrprotect_flush_is_the_vmid_without_tlbi_range)
{
	struct mfx m;
	uint64_t bm[256], page = 7, mask = 1ull << 7;
	uint32_t id;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 64, S2PT_CONFIG_NO_TLBIRANGE), 0);
	id = faulted_in_slot(&m);
	REQUIRE_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, 0), 0);
	REQUIRE_EQ(m.f.log.count, 1);
	CHECK_EV(&m.f.log, 0, S2PT_TLBI_VMID, 0, 0, U, S2PT_TLBI_WRPROTECT, 0);
	write_pages(&m, id, &page, 1, S2PT_OUTCOME_DIRTY);
	ev_reset(&m);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 1), 0);
	REQUIRE_EQ(m.f.log.count, 1);
	CHECK_EV(&m.f.log, 0, S2PT_TLBI_VMID, 0, 0, U, S2PT_TLBI_WRPROTECT, 0);
	write_pages(&m, id, &page, 1, S2PT_OUTCOME_DIRTY);
	ev_reset(&m);
	REQUIRE_EQ(s2pt_clear_dirty_log(&m.mmu, id, 0, &mask, 1), 0);
	REQUIRE_EQ(m.f.log.count, 1);
	CHECK_EV(&m.f.log, 0, S2PT_TLBI_VMID, 0, 0, U, S2PT_TLBI_WRPROTECT, 0);
	mfx_fini(&m);
}

TEST(mmu_logging_an_empty_slot_records_nothing)
{
	struct mfx m;
	uint64_t bm[3];
	uint32_t a, b;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, 0), 0);
	a = add_slot(&m, GiB(1), OUT_PA, KiB(400), S2PT_MEMSLOT_LOG_DIRTY, KiB(4)); /* 100 pages */
	b = add_slot(&m, GiB(2), OUT_PA, MiB(4), 0, MiB(2));
	REQUIRE_EQ(s2pt_set_log_dirty(&m.mmu, b, 1, S2PT_LOG_EAGER_SPLIT), 0);
	CHECK_EQ(m.f.log.count, 0);
	CHECK_EQ(m.f.pt.table_pages, 2);
	/* (100 + 63) / 64 = 2 words, every one written. */
	bm[0] = bm[1] = ~0ull;
	bm[2] = 0x77;
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, a, bm, 0), 0);
	CHECK_EQ(bm[0], 0);
	CHECK_EQ(bm[1], 0);
	CHECK_EQ(bm[2], 0x77);
	CHECK_EQ(fault(&m, GiB(1) + 99 * KiB(4), WRITE), S2PT_OUTCOME_MAPPED);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, a, bm, 0), 0);
	CHECK_EQ(bm[0], 0);
	CHECK_EQ(bm[1], 1ull << 35);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, a, bm, 1), 0);
	CHECK_EQ(bm[1], 1ull << 35);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, a, bm, 1), 0);
	CHECK_EQ(bm[1], 0);
	mfx_fini(&m);
}

TEST(mmu_add_logging_slot_over_existing_mappings_write_protects_them)
{
	/* kvm_mmu_slot_apply_flags() for a new slot with KVM_MEM_LOG_DIRTY_PAGES. */
	struct mfx m;
	uint64_t bm[16];
	uint32_t id;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, 0), 0);
	REQUIRE_EQ(s2pt_map(&m.f.pt, GiB(1), OUT_PA, MiB(2), RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&m.f.pt, GiB(1) + MiB(2), OUT_PA, KiB(4), RW, NORMAL, 0), 0);
	ev_reset(&m);
	id = add_slot(&m, GiB(1), OUT_PA, MiB(4), S2PT_MEMSLOT_LOG_DIRTY, KiB(4));
	CHECK_LEAF(&m.f, GiB(1), 2, a_leaf(OUT_PA, 2, R_, NORMAL, 1));
	CHECK_LEAF(&m.f, GiB(1) + MiB(2), 3, a_leaf(OUT_PA, 3, R_, NORMAL, 1));
	REQUIRE_EQ(m.f.log.count, 1);
	CHECK_WP_EV(&m.f.log, 0, GiB(1), MiB(4));
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 0), 0);
	for (unsigned i = 0; i < 16; i++)
		CHECK_EQ(bm[i], 0);
	mfx_fini(&m);
}

TEST(mmu_kvm_dirty_write_into_a_block_drops_the_rest)
{
	/* Logging turned on over a 2 MiB block: a write maps one page into it (force_pte). KVM
	 * drops the rest of the block (faulted back later); exact keeps it, read-only. */
	for (int kvm = 0; kvm < 2; kvm++) {
		struct s2pt_stats st;
		struct mfx m;
		uint64_t bm[16];
		uint32_t id;

		REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, kvm ? S2PT_CONFIG_KVM : 0), 0);
		id = add_slot(&m, GiB(1), OUT_PA, MiB(4), 0, MiB(2));
		CHECK_EQ(fault(&m, GiB(1), READ), S2PT_OUTCOME_MAPPED);
		REQUIRE_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, 0), 0);
		ev_reset(&m);
		CHECK_EQ(fault(&m, GiB(1) + 5 * KiB(4), WRITE), S2PT_OUTCOME_DIRTY);
		CHECK_EV(&m.f.log, 0, S2PT_TLBI_IPA, GiB(1), MiB(2), 2, S2PT_TLBI_SPLIT, 1);
		CHECK_LEAF(&m.f, GiB(1) + 5 * KiB(4), 3,
			   a_leaf(OUT_PA + 5 * KiB(4), 3, RW, NORMAL, 1));
		st = stats_of(&m.f);
		if (kvm) {
			CHECK_EQ(st.mapped_bytes, KiB(4));
			/* The dropped pages fault back as read-only pages while logging. */
			CHECK_EQ(fault(&m, GiB(1) + KiB(4), READ), S2PT_OUTCOME_MAPPED);
			CHECK_LEAF(&m.f, GiB(1) + KiB(4), 3,
				   a_leaf(OUT_PA + KiB(4), 3, R_, NORMAL, 1));
		} else {
			CHECK_EQ(st.leaves_by_level[3], 512);
			CHECK_EQ(st.mapped_bytes, MiB(2));
			CHECK_LEAF(&m.f, GiB(1) + KiB(4), 3,
				   a_leaf(OUT_PA + KiB(4), 3, R_, NORMAL, 1));
		}
		REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 1), 0);
		CHECK_EQ(bm[0], 1ull << 5);
		CHECK_INVARIANTS(&m.f.pt);
		mfx_fini(&m);
	}
}

TEST(mmu_kvm_access_many_sees_later_translations_change)
{
	/* A handler run can change translations later in the same batch (KVM dropping the rest
	 * of a block): access_many must not trust translations made before it. */
	const uint64_t ipas[] = {GiB(1) + KiB(4), GiB(1) + KiB(8), GiB(1) + KiB(12),
				 GiB(1) + KiB(8)};
	uint64_t pa[4], bm[8];
	uint8_t oc[4];
	size_t done = 0;
	struct mfx m;
	uint32_t id;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, S2PT_CONFIG_KVM), 0);
	id = add_slot(&m, GiB(1), OUT_PA, MiB(2), 0, MiB(2));
	CHECK_EQ(fault(&m, GiB(1), READ), S2PT_OUTCOME_MAPPED);
	REQUIRE_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, 0), 0);
	REQUIRE_EQ(s2pt_access_many(&m.mmu, ipas, 4, WRITE, pa, oc, &done), 0);
	CHECK_EQ(done, 4);
	for (unsigned i = 0; i < 4; i++)
		CHECK_EQ(pa[i], ipas[i] - GiB(1) + OUT_PA);
	/* DIRTY (page into the block, rest dropped), then translation faults on the dropped
	 * pages: MAPPED (and dirty); the repeat hits. */
	CHECK_EQ(oc[0], S2PT_OUTCOME_DIRTY);
	CHECK_EQ(oc[1], S2PT_OUTCOME_MAPPED);
	CHECK_EQ(oc[2], S2PT_OUTCOME_MAPPED);
	CHECK_EQ(oc[3], S2PT_OUTCOME_HIT);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 1), 0);
	CHECK_EQ(bm[0], 0xEull);
	mfx_fini(&m);
}

/* ---- deleting slots ------------------------------------------------------------------------- */

TEST(mmu_delete_memslot_unmaps_and_frees_to_the_roots)
{
	const uint64_t reads[] = {GiB(1) + MiB(3), GiB(1) + MiB(40) + KiB(5)};
	const uint64_t writes[] = {GiB(1) + MiB(10), GiB(1) + MiB(50) + KiB(8)};
	struct s2pt_leaf leaves[8];
	uint64_t pa[2], next;
	uint8_t oc[2];
	size_t done, n = 0, u = 0;
	struct mfx m;
	uint32_t id;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 64, 0), 0);
	id = add_slot(&m, GiB(1), OUT_PA, MiB(64), 0, MiB(2));
	REQUIRE_EQ(s2pt_access_many(&m.mmu, reads, 2, READ, pa, oc, &done), 0);
	REQUIRE_EQ(s2pt_set_log_dirty(&m.mmu, id, 1, 0), 0);
	REQUIRE_EQ(s2pt_access_many(&m.mmu, writes, 2, WRITE, pa, oc, &done), 0);
	REQUIRE_EQ(s2pt_leaves(&m.f.pt, 0, 1ull << 40, leaves, 8, &n, &next), 0);
	CHECK_EQ(n, 4); /* two blocks, two pages */
	CHECK(m.f.pt.table_pages > 2);
	ev_reset(&m);
	REQUIRE_EQ(s2pt_memslot_delete(&m.mmu, id), 0);
	CHECK_EQ(stats_of(&m.f).mapped_bytes, 0);
	CHECK_EQ(m.mmu.nslots, 0);
	CHECK_EQ(m.f.pt.table_pages, 2);
	CHECK_EQ(m.f.pool.used, 2);
	/* One UNMAP per leaf, in IPA order, at its level; TABLE for each table freed. */
	for (uint32_t i = 0; i < m.f.log.count; i++) {
		const struct s2pt_tlbi *e = &m.f.events[i];

		if (e->reason != S2PT_TLBI_UNMAP) {
			CHECK_EQ(e->reason, S2PT_TLBI_TABLE);
			continue;
		}
		REQUIRE(u < n);
		CHECK_EV(&m.f.log, i, S2PT_TLBI_IPA, leaves[u].ipa, leaves[u].size, leaves[u].level,
			 S2PT_TLBI_UNMAP, 0);
		u++;
	}
	CHECK_EQ(u, n);
	/* No slot there any more: accesses exit to user space, nothing is mapped. */
	CHECK_EQ(fault(&m, reads[0], READ), S2PT_OUTCOME_MMIO);
	CHECK_EQ(fault(&m, writes[1], WRITE), S2PT_OUTCOME_MMIO);
	CHECK_EQ(fault(&m, writes[1], EXEC), S2PT_OUTCOME_ABORT);
	CHECK_EQ(m.f.pt.table_pages, 2);
	CHECK_EQ(s2pt_memslot_delete(&m.mmu, id), S2PT_EINVAL);
	/* The id is free again. */
	CHECK_EQ(add_slot(&m, GiB(1), OUT_PA, KiB(4), 0, KiB(4)), id);
	CHECK_INVARIANTS(&m.f.pt);
	mfx_fini(&m);
}

TEST(mmu_delete_memslot_keeps_mappings_outside)
{
	struct s2pt_translation t;
	struct s2pt_fault flt;
	struct mfx m;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 64, 0), 0);
	for (uint32_t i = 0; i < 4; i++)
		CHECK_EQ(add_slot(&m, GiB(i + 1), OUT_PA, MiB(4), 0, KiB(4)), i);
	REQUIRE_EQ(s2pt_map(&m.f.pt, GiB(10), OUT_PA, MiB(2), RW, NORMAL, 0), 0);
	for (uint32_t i = 0; i < 4; i++)
		CHECK_EQ(fault(&m, GiB(i + 1), READ), S2PT_OUTCOME_MAPPED);
	REQUIRE_EQ(s2pt_memslot_delete(&m.mmu, 1), 0);
	REQUIRE_EQ(s2pt_memslot_delete(&m.mmu, 2), 0);
	REQUIRE_EQ(m.mmu.nslots, 2);
	CHECK_EQ(m.mmu.slots[0].id, 0);
	CHECK_EQ(m.mmu.slots[1].id, 3);
	CHECK_EQ(add_slot(&m, GiB(20), OUT_PA, KiB(4), 0, KiB(4)), 1);
	CHECK_EQ(m.mmu.slots[2].ipa, GiB(20));
	CHECK_EQ(s2pt_translate(&m.f.pt, GiB(10), READ, &t, &flt), 0);
	CHECK_EQ(t.pa, OUT_PA);
	CHECK_EQ(s2pt_lookup(&m.f.pt, GiB(2), &t, &flt), S2PT_EFAULT);
	CHECK_EQ(s2pt_lookup(&m.f.pt, GiB(3), &t, &flt), S2PT_EFAULT);
	CHECK_EQ(s2pt_lookup(&m.f.pt, GiB(1), &t, &flt), 0);
	CHECK_EQ(s2pt_lookup(&m.f.pt, GiB(4), &t, &flt), 0);
	CHECK_INVARIANTS(&m.f.pt);
	mfx_fini(&m);
}

TEST(mmu_delete_memslot_pool_exhausted_changes_nothing)
{
	/* Exact semantics: a user block crossing the slot's edge must be split to unmap only the
	 * slot's part, and the pool has no page for it. KVM removes the whole block. */
	for (int kvm = 0; kvm < 2; kvm++) {
		struct mfx m;
		uint32_t id;

		REQUIRE_EQ(mfx_init(&m, 40, 4096, 3, kvm ? S2PT_CONFIG_KVM : 0), 0);
		REQUIRE_EQ(s2pt_map(&m.f.pt, GiB(1), OUT_PA, MiB(2), RW, NORMAL, 0), 0);
		id = add_slot(&m, GiB(1) + MiB(1), OUT_PA, MiB(2), 0, KiB(4));
		ev_reset(&m);
		if (!kvm) {
			BAD(&m, S2PT_ENOMEM, s2pt_memslot_delete(&m.mmu, id));
			CHECK(s2pt_memslot_find(&m.mmu, id) != NULL);
		} else {
			CHECK_EQ(s2pt_memslot_delete(&m.mmu, id), 0);
			CHECK_EQ(m.mmu.nslots, 0);
			CHECK_EQ(stats_of(&m.f).mapped_bytes, 0);
		}
		CHECK_INVARIANTS(&m.f.pt);
		mfx_fini(&m);
	}
}

/* ---- access_many ---------------------------------------------------------------------------- */

/* One guest access as a loop of s2pt_translate() and s2pt_handle_fault() (the header's
 * definition of s2pt_access_many). */
static void oracle_access(struct mfx *b, uint64_t ipa, uint32_t access, uint64_t *pa,
			  uint8_t *outcome)
{
	uint32_t last = S2PT_OUTCOME_HIT;
	struct s2pt_translation t;
	struct s2pt_fault flt;

	*pa = 0;
	for (int runs = 0;; runs++) {
		if (s2pt_translate(&b->f.pt, ipa, access, &t, &flt) == 0) {
			*pa = t.pa;
			break;
		}
		if (runs == 4)
			break;
		last = fault(b, ipa, access);
		CHECK(last != S2PT_OUTCOME_HIT);
		if (last >= S2PT_OUTCOME_MMIO)
			break;
	}
	*outcome = (uint8_t)last;
}

static void build_guest(struct mfx *m, uint32_t flags, struct s2pt_tlbi_log *log)
{
	CHECK_EQ(mfx_init(m, 40, 4096, 512, flags), 0);
	m->f.pt.tlbi = log;
	add_slot(m, GiB(1), OUT_PA, MiB(16), 0, MiB(2));
	add_slot(m, GiB(1) + MiB(16), OUT_PA + MiB(64), MiB(1), S2PT_MEMSLOT_READONLY, KiB(4));
	add_slot(m, GiB(2), OUT_PA + MiB(128), MiB(8), S2PT_MEMSLOT_LOG_DIRTY, MiB(2));
	add_slot(m, GiB(3) + KiB(4), OUT_PA + KiB(4), MiB(4), 0, MiB(2));
	CHECK_EQ(s2pt_set_owner(&m->f.pt, GiB(1) + MiB(16) + KiB(64), KiB(8), 3), 0);
}

TEST(mmu_access_many_agrees_with_handle_fault_and_translate)
{
	enum { N = 5 * 150 + 50 + 1, AGE = 10, HARVEST, NOLOG };
	static const uint32_t plan[] = {
		READ, WRITE, EXEC, WRITE, AGE, READ, EXEC0, HARVEST, WRITE, NOLOG, WRITE, READ,
	};
	static const struct {
		uint64_t base, size;
	} regions[] = {
		{GiB(1), MiB(17)},
		{GiB(2), MiB(8)},
		{GiB(3), MiB(5)},
		{GiB(1) - MiB(1), MiB(1)},
		{(1ull << 40) - KiB(8), KiB(16)},
	};
	static uint64_t ipas[N], pa_a[N], pa_b[N];
	static uint8_t oc_a[N], oc_b[N];
	static struct s2pt_tlbi ev_a[8192], ev_b[8192];

	for (int kvm = 0; kvm < 2; kvm++) {
		struct s2pt_tlbi_log la = {ev_a, 8192, 0, 0}, lb = {ev_b, 8192, 0, 0};
		struct mfx a, b;
		uint64_t rs = 7;

		build_guest(&a, kvm ? S2PT_CONFIG_KVM : 0, &la);
		build_guest(&b, kvm ? S2PT_CONFIG_KVM : 0, &lb);
		for (unsigned step = 0; step < sizeof(plan) / sizeof(plan[0]); step++) {
			size_t n = 0, done = 0;

			if (plan[step] == AGE) {
				int y;

				for (int v = 0; v < 2; v++) {
					struct s2pt_pgtable *pt = v ? &b.f.pt : &a.f.pt;

					CHECK_EQ(s2pt_test_clear_young(pt, GiB(1), MiB(4), 1, &y),
						 0);
					CHECK_EQ(s2pt_test_clear_young(pt, GiB(2), MiB(8), 1, &y),
						 0);
				}
				continue;
			}
			if (plan[step] == HARVEST) {
				static uint64_t ba[32], bb[32]; /* 2048 pages */

				CHECK_EQ(s2pt_get_dirty_log(&a.mmu, 2, ba, 1), 0);
				CHECK_EQ(s2pt_get_dirty_log(&b.mmu, 2, bb, 1), 0);
				CHECK_EQ(memcmp(ba, bb, sizeof(ba)), 0);
				continue;
			}
			if (plan[step] == NOLOG) {
				CHECK_EQ(s2pt_set_log_dirty(&a.mmu, 2, 0, 0), 0);
				CHECK_EQ(s2pt_set_log_dirty(&b.mmu, 2, 0, 0), 0);
				continue;
			}
			for (unsigned r = 0; r < 5; r++)
				for (unsigned i = 0; i < 150; i++)
					ipas[n++] = regions[r].base +
						    rng_below(&rs, regions[r].size / 8) * 8;
			for (size_t i = n; i > 1; i--) { /* Fisher-Yates */
				size_t j = (size_t)rng_below(&rs, i);
				uint64_t x = ipas[i - 1];

				ipas[i - 1] = ipas[j];
				ipas[j] = x;
			}
			for (unsigned i = 0; i < 50; i++) /* repeats */
				ipas[n++] = ipas[i];
			ipas[n++] = GiB(1) + MiB(16) + KiB(64); /* the annotation: PERMISSION */
			la.count = lb.count = 0;
			REQUIRE_EQ(s2pt_access_many(&a.mmu, ipas, n, plan[step], pa_a, oc_a, &done),
				   0);
			CHECK_EQ(done, n);
			for (size_t i = 0; i < n; i++)
				oracle_access(&b, ipas[i], plan[step], &pa_b[i], &oc_b[i]);
			CHECK_EQ(memcmp(pa_a, pa_b, n * sizeof(pa_a[0])), 0);
			CHECK_EQ(memcmp(oc_a, oc_b, n), 0);
			/* The same changes in the same order: identical pools and TLB logs. */
			CHECK_EQ(memcmp(a.f.pool.mem, b.f.pool.mem, a.f.mem_bytes), 0);
			CHECK_EQ(la.overflowed, 0);
			CHECK_EQ(la.count, lb.count);
			CHECK_EQ(memcmp(ev_a, ev_b, la.count * sizeof(ev_a[0])), 0);
		}
		for (int o = 1; o < S2PT_OUTCOME__COUNT; o++)
			CHECK_EQ(a.mmu.counts[o], b.mmu.counts[o]);
		CHECK_EQ(b.mmu.counts[S2PT_OUTCOME_HIT], 0);
		for (int o = 0; o < S2PT_OUTCOME__COUNT; o++)
			CHECK_MSG(a.mmu.counts[o] > 0, "outcome %d never seen", o);
		CHECK_INVARIANTS(&a.f.pt);
		mfx_fini(&a);
		mfx_fini(&b);
	}
}

TEST(mmu_access_many_pool_exhausted_stops_at_the_element)
{
	const uint64_t ipas[] = {GiB(1), GiB(1) + KiB(4), GiB(1) + MiB(2), GiB(1) + MiB(4),
				 GiB(1) + KiB(8)};
	struct s2pt_leaf leaves[8];
	uint64_t pa[5], next;
	uint8_t oc[5];
	size_t done = 99, n = 0;
	struct mfx m;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 2 + 1 + 2, 0), 0);
	add_slot(&m, GiB(1), OUT_PA, MiB(64), 0, KiB(4));
	/* The third level-3 table does not fit: element 3 fails, those before it stay. */
	CHECK_EQ(s2pt_access_many(&m.mmu, ipas, 5, READ, pa, oc, &done), S2PT_ENOMEM);
	CHECK_EQ(done, 3);
	REQUIRE_EQ(s2pt_leaves(&m.f.pt, 0, 1ull << 40, leaves, 8, &n, &next), 0);
	REQUIRE_EQ(n, 3);
	CHECK_EQ(leaves[0].ipa, GiB(1));
	CHECK_EQ(leaves[1].ipa, GiB(1) + KiB(4));
	CHECK_EQ(leaves[2].ipa, GiB(1) + MiB(2));
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_MAPPED], 3);
	/* Nothing to do, and bad access types. */
	CHECK_EQ(s2pt_access_many(&m.mmu, ipas, 0, READ, pa, oc, &done), 0);
	CHECK_EQ(done, 0);
	CHECK_EQ(s2pt_access_many(&m.mmu, ipas, 1, 4, pa, oc, &done), S2PT_EINVAL);
	CHECK_INVARIANTS(&m.f.pt);
	mfx_fini(&m);
}

TEST(mmu_fault_counters)
{
	uint64_t ipas[10], pa[10], bm[16];
	uint8_t oc[10];
	size_t done;
	struct mfx m;
	uint32_t id;
	int young;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 64, 0), 0);
	for (int o = 0; o < S2PT_OUTCOME__COUNT; o++)
		CHECK_EQ(m.mmu.counts[o], 0);
	id = add_slot(&m, GiB(1), OUT_PA, MiB(4), S2PT_MEMSLOT_LOG_DIRTY, KiB(4));
	add_slot(&m, GiB(2), OUT_PA, MiB(4), S2PT_MEMSLOT_READONLY, KiB(4));
	REQUIRE_EQ(s2pt_set_owner(&m.f.pt, GiB(1) + MiB(3), KiB(4), 1), 0);
	CHECK_EQ(fault(&m, GiB(1), READ), S2PT_OUTCOME_MAPPED);
	CHECK_EQ(fault(&m, GiB(1), READ), S2PT_OUTCOME_HIT);
	CHECK_EQ(fault(&m, GiB(1), WRITE), S2PT_OUTCOME_DIRTY);
	CHECK_EQ(fault(&m, GiB(1), EXEC), S2PT_OUTCOME_RELAXED);
	REQUIRE_EQ(s2pt_test_clear_young(&m.f.pt, GiB(1), KiB(4), 1, &young), 0);
	CHECK_EQ(fault(&m, GiB(1), READ), S2PT_OUTCOME_YOUNG);
	CHECK_EQ(fault(&m, GiB(2), WRITE), S2PT_OUTCOME_MMIO);
	CHECK_EQ(fault(&m, GiB(5), EXEC), S2PT_OUTCOME_ABORT);
	CHECK_EQ(fault(&m, GiB(1) + MiB(3), READ), S2PT_OUTCOME_PERMISSION);
	for (unsigned i = 0; i < 10; i++)
		ipas[i] = GiB(1);
	REQUIRE_EQ(s2pt_access_many(&m.mmu, ipas, 10, READ, pa, oc, &done), 0);
	for (unsigned i = 0; i < 10; i++) {
		CHECK_EQ(oc[i], S2PT_OUTCOME_HIT);
		CHECK_EQ(pa[i], OUT_PA);
	}
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_HIT], 11);
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_MAPPED], 1);
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_DIRTY], 1);
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_RELAXED], 1);
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_YOUNG], 1);
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_MMIO], 1);
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_PERMISSION], 1);
	CHECK_EQ(m.mmu.counts[S2PT_OUTCOME_ABORT], 1);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, id, bm, 1), 0);
	CHECK_EQ(bm[0], 1);
	mfx_fini(&m);
}

/* ---- bad input --------------------------------------------------------------------------- */

TEST(mmu_bad_input_returns_its_code_and_changes_nothing)
{
	const uint64_t g = KiB(4), top = 1ull << 40, PA_ = OUT_PA;
	struct mfx m;
	uint64_t bm[4], mask[3], ipa = GiB(1), pa;
	uint8_t oc;
	size_t done;
	uint32_t id = NOID, oc32;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 64, 0), 0);
	add_slot(&m, GiB(1), PA_, MiB(16), 0, MiB(2));
	add_slot(&m, GiB(2), PA_, 100 * g, S2PT_MEMSLOT_LOG_DIRTY, g); /* 100 pages: 2 words */
	add_slot(&m, GiB(3), PA_, MiB(4), S2PT_MEMSLOT_READONLY, g);
	add_slot(&m, GiB(4), PA_, 64 * g, S2PT_MEMSLOT_LOG_DIRTY, g); /* exactly one word */
	CHECK_EQ(fault(&m, GiB(1), READ), S2PT_OUTCOME_MAPPED);
	CHECK_EQ(fault(&m, GiB(2) + 3 * g, WRITE), S2PT_OUTCOME_MAPPED); /* page 3 dirty */
	CHECK_EQ(fault(&m, GiB(3), READ), S2PT_OUTCOME_MAPPED);
	memset(m.mmu.counts, 0, sizeof(m.mmu.counts));
	ev_reset(&m);

	/* Overlap (KVM's -EEXIST). */
	BAD(&m, S2PT_ERANGE, s2pt_memslot_add(&m.mmu, GiB(1) + MiB(8), PA_, MiB(16), 0, g, &id));
	BAD(&m, S2PT_ERANGE, s2pt_memslot_add(&m.mmu, GiB(1) - g, PA_, 2 * g, 0, g, &id));
	BAD(&m, S2PT_ERANGE, s2pt_memslot_add(&m.mmu, GiB(1) - g, PA_, MiB(32), 0, g, &id));
	BAD(&m, S2PT_ERANGE, s2pt_memslot_add(&m.mmu, GiB(1) + MiB(16) - g, PA_, g, 0, g, &id));
	BAD(&m, S2PT_ERANGE, s2pt_memslot_add(&m.mmu, GiB(1), PA_, g, 0, g, &id));
	/* Alignment, size 0, flags. */
	BAD(&m, S2PT_EALIGN, s2pt_memslot_add(&m.mmu, GiB(5) + 8, PA_, g, 0, g, &id));
	BAD(&m, S2PT_EALIGN, s2pt_memslot_add(&m.mmu, GiB(5), PA_ + 8, g, 0, g, &id));
	BAD(&m, S2PT_EALIGN, s2pt_memslot_add(&m.mmu, GiB(5), PA_, g + 8, 0, g, &id));
	BAD(&m, S2PT_EINVAL, s2pt_memslot_add(&m.mmu, GiB(5), PA_, 0, 0, g, &id));
	BAD(&m, S2PT_EINVAL, s2pt_memslot_add(&m.mmu, GiB(5), PA_, g, 0x4, g, &id));
	/* Outside the IPA or PA space, or wrapping. */
	BAD(&m, S2PT_ERANGE, s2pt_memslot_add(&m.mmu, top - g, PA_, 2 * g, 0, g, &id));
	BAD(&m, S2PT_ERANGE, s2pt_memslot_add(&m.mmu, top, PA_, g, 0, g, &id));
	BAD(&m, S2PT_ERANGE, s2pt_memslot_add(&m.mmu, 0 - g, PA_, 2 * g, 0, g, &id));
	BAD(&m, S2PT_ERANGE, s2pt_memslot_add(&m.mmu, 0 - g, PA_, g, 0, g, &id));
	BAD(&m, S2PT_ERANGE, s2pt_memslot_add(&m.mmu, GiB(5), (1ull << 48) - g, 2 * g, 0, g, &id));
	BAD(&m, S2PT_ERANGE, s2pt_memslot_add(&m.mmu, GiB(5), 0 - g, 2 * g, 0, g, &id));
	/* The backing must be a leaf size of the VM; logging a read-only slot is refused. */
	BAD(&m, S2PT_EINVAL, s2pt_memslot_add(&m.mmu, GiB(5), PA_, MiB(4), 0, 2 * g, &id));
	BAD(&m, S2PT_EINVAL, s2pt_memslot_add(&m.mmu, GiB(5), PA_, MiB(4), 0, 0, &id));
	BAD(&m, S2PT_EINVAL, s2pt_memslot_add(&m.mmu, GiB(5), PA_, MiB(4), 0, MiB(6), &id));
	BAD(&m, S2PT_EINVAL, s2pt_memslot_add(&m.mmu, GiB(5), PA_, MiB(4), 0, GiB(512), &id));
	BAD(&m, S2PT_EINVAL,
	    s2pt_memslot_add(&m.mmu, GiB(5), PA_, MiB(4),
			     S2PT_MEMSLOT_READONLY | S2PT_MEMSLOT_LOG_DIRTY, g, &id));
	CHECK_EQ(id, NOID);
	/* Ids. */
	BAD(&m, S2PT_EINVAL, s2pt_memslot_delete(&m.mmu, 99));
	BAD(&m, S2PT_EINVAL, s2pt_memslot_delete(&m.mmu, NOID));
	BAD(&m, S2PT_EINVAL, s2pt_set_log_dirty(&m.mmu, 99, 1, 0));
	BAD(&m, S2PT_EINVAL, s2pt_set_log_dirty(&m.mmu, 2, 1, 0)); /* read-only */
	BAD(&m, S2PT_EINVAL, s2pt_set_log_dirty(&m.mmu, 0, 1, 0x2));
	BAD(&m, S2PT_EINVAL, s2pt_set_log_dirty(&m.mmu, 1, 0, 0x80));
	BAD(&m, S2PT_EINVAL, s2pt_get_dirty_log(&m.mmu, 99, bm, 0));
	BAD(&m, S2PT_EINVAL, s2pt_get_dirty_log(&m.mmu, 0, bm, 1)); /* not logging */
	BAD(&m, S2PT_EINVAL, s2pt_get_dirty_log(&m.mmu, 2, bm, 1));
	mask[0] = 1;
	BAD(&m, S2PT_EINVAL, s2pt_clear_dirty_log(&m.mmu, 99, 0, mask, 1));
	BAD(&m, S2PT_EINVAL, s2pt_clear_dirty_log(&m.mmu, 0, 0, mask, 1));
	/* clear_dirty_log on slot 1 (100 pages; page 3 dirty): the start must be a multiple of
	 * 64 inside the slot and every set bit must name a page of the slot, checked before
	 * anything is cleared. */
	BAD(&m, S2PT_EINVAL, s2pt_clear_dirty_log(&m.mmu, 1, 1, mask, 1));
	BAD(&m, S2PT_EINVAL, s2pt_clear_dirty_log(&m.mmu, 1, 32, mask, 1));
	BAD(&m, S2PT_ERANGE, s2pt_clear_dirty_log(&m.mmu, 1, 128, mask, 1));
	BAD(&m, S2PT_ERANGE, s2pt_clear_dirty_log(&m.mmu, 1, 64 * 1000, mask, 1));
	mask[0] = 0;
	BAD(&m, S2PT_ERANGE, s2pt_clear_dirty_log(&m.mmu, 3, 64, mask, 1)); /* page 64 of 64 */
	mask[0] = 1ull << 36; /* page 100 */
	BAD(&m, S2PT_ERANGE, s2pt_clear_dirty_log(&m.mmu, 1, 64, mask, 1));
	mask[0] = 8;
	mask[1] = 1ull << 36;
	BAD(&m, S2PT_ERANGE, s2pt_clear_dirty_log(&m.mmu, 1, 0, mask, 2));
	mask[1] = 0;
	mask[2] = 1;
	BAD(&m, S2PT_ERANGE, s2pt_clear_dirty_log(&m.mmu, 1, 0, mask, 3));
	/* Access types. */
	BAD(&m, S2PT_EINVAL, s2pt_handle_fault(&m.mmu, GiB(1), 4, &oc32));
	BAD(&m, S2PT_EINVAL, s2pt_access_many(&m.mmu, &ipa, 1, 4, &pa, &oc, &done));
	CHECK_EQ(done, 0);
	/* Page 3 is still dirty and the bits up to page 99 still clear correctly. */
	mask[0] = 8;
	mask[1] = 1ull << 35;
	CHECK_EQ(s2pt_clear_dirty_log(&m.mmu, 1, 0, mask, 2), 0);
	REQUIRE_EQ(s2pt_get_dirty_log(&m.mmu, 1, bm, 0), 0);
	CHECK_EQ(bm[0] | bm[1], 0);
	CHECK_EQ(m.f.log.count, 1);
	CHECK_INVARIANTS(&m.f.pt);
	mfx_fini(&m);
}

TEST(mmu_backing_sizes_of_the_large_granules)
{
	for (unsigned k = 1; k < NGEOMS; k++) {
		const struct geom *g = &GEOMS[k];
		const uint64_t gr = g->granule, bs = block2(g->granule);
		/* Leaf sizes are the page and the level-2 block only (level 1 needs LPA2 for 16K,
		 * a 52-bit PA for 64K). */
		const uint64_t bad[] = {
			KiB(4), k == 1 ? MiB(2) : MiB(32), lsize(g->granule, 1), 2 * gr, GiB(1), 0};
		struct mfx m;
		uint32_t id = NOID;

		REQUIRE_EQ(mk(&m, g, 8, 0), 0);
		for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			BAD(&m, S2PT_EINVAL,
			    s2pt_memslot_add(&m.mmu, 4 * bs, OUT_PA, 2 * bs, 0, bad[i], &id));
		BAD(&m, S2PT_EALIGN,
		    s2pt_memslot_add(&m.mmu, 4 * bs + KiB(4), OUT_PA, 2 * bs, 0, gr, &id));
		CHECK_EQ(id, NOID);
		CHECK_EQ(add_slot(&m, 4 * bs, OUT_PA, 2 * bs, 0, bs), 0);
		CHECK_EQ(add_slot(&m, 8 * bs, OUT_PA, 2 * bs, 0, gr), 1);
		mfx_fini(&m);
	}
}

TEST(mmu_destroyed_vm)
{
	struct mfx m;
	uint64_t bm[4], mask = 1, ipa = GiB(1), pa;
	uint32_t id, oc;
	uint8_t oc8;
	size_t done;

	REQUIRE_EQ(mfx_init(&m, 40, 4096, 16, 0), 0);
	add_slot(&m, GiB(1), OUT_PA, MiB(4), 0, KiB(4));
	add_slot(&m, GiB(2), OUT_PA, MiB(4), S2PT_MEMSLOT_LOG_DIRTY, KiB(4));
	s2pt_pgtable_destroy(&m.f.pt);
	CHECK_EQ(s2pt_memslot_add(&m.mmu, GiB(5), OUT_PA, KiB(4), 0, KiB(4), &id), S2PT_EDESTROYED);
	CHECK_EQ(s2pt_memslot_delete(&m.mmu, 0), S2PT_EDESTROYED);
	CHECK_EQ(s2pt_set_log_dirty(&m.mmu, 0, 1, 0), S2PT_EDESTROYED);
	CHECK_EQ(s2pt_set_log_dirty(&m.mmu, 1, 0, 0), S2PT_EDESTROYED);
	CHECK_EQ(s2pt_get_dirty_log(&m.mmu, 1, bm, 1), S2PT_EDESTROYED);
	CHECK_EQ(s2pt_clear_dirty_log(&m.mmu, 1, 0, &mask, 1), S2PT_EDESTROYED);
	CHECK_EQ(s2pt_handle_fault(&m.mmu, GiB(1), READ, &oc), S2PT_EDESTROYED);
	CHECK_EQ(s2pt_access_many(&m.mmu, &ipa, 1, READ, &pa, &oc8, &done), S2PT_EDESTROYED);
	CHECK_EQ(s2pt_access_many(&m.mmu, &ipa, 0, READ, &pa, &oc8, &done), S2PT_EDESTROYED);
	CHECK_EQ(m.mmu.nslots, 2);
	for (int o = 0; o < S2PT_OUTCOME__COUNT; o++)
		CHECK_EQ(m.mmu.counts[o], 0);
	mfx_fini(&m);
}
