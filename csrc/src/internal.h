/* Private helpers shared by the C core's translation units. */
#ifndef S2PT_INTERNAL_H
#define S2PT_INTERNAL_H

#include <string.h>

#include "s2pt/desc.h"
#include "s2pt/s2pt.h"

#ifndef S2PT_DEBUG
#define S2PT_DEBUG 0
#endif

/* Debug-build invariant checks. Not assert(): Python's build flags carry -DNDEBUG. */
#define S2PT_ASSERT(cond)                          \
	do {                                       \
		if (S2PT_DEBUG && !(cond))         \
			__builtin_trap();          \
	} while (0)

#define S2PT_LIKELY(x) __builtin_expect(!!(x), 1)
#define S2PT_UNLIKELY(x) __builtin_expect(!!(x), 0)

/*
 * Of the entries ptep[0..n), those valid with bit @bit set: counted, and the bit cleared in
 * them when @clear (a leaf's own bit, so no entry changes between zero and non-zero and no
 * count moves). Inline: callers pass a constant @clear. The scans of whole tables (wrprotect, test_clear_young, a harvest) run here:
 * fixed-size, branch-free chunks are what the compiler vectorises at -O2, 3-4x the speed of
 * the plain loop.
 */
static inline uint64_t s2pt__scan_bit(uint64_t *ptep, uint64_t n, unsigned bit, int clear)
{
	uint64_t hits = 0, i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t chunk = 0;

		for (unsigned j = 0; j < 8; j++) {
			uint64_t pte = ptep[i + j], hit = pte & (pte >> bit) & 1;

			chunk += hit;
			if (clear)
				ptep[i + j] = pte & ~(hit << bit);
		}
		hits += chunk;
	}
	for (; i < n; i++) {
		uint64_t pte = ptep[i], hit = pte & (pte >> bit) & 1;

		hits += hit;
		if (clear)
			ptep[i] = pte & ~(hit << bit);
	}
	return hits;
}

static inline uint64_t s2pt__span(const struct s2pt_config *cfg, int level)
{
	return 1ull << s2pt_level_shift(cfg, level);
}

static inline uint64_t s2pt__granule(const struct s2pt_pool *pool)
{
	return 1ull << pool->granule_shift;
}

static inline uint64_t s2pt__pool_end_pa(const struct s2pt_pool *pool)
{
	return pool->base_pa + ((uint64_t)pool->capacity << pool->granule_shift);
}

static inline uint64_t *s2pt__page_ptr(const struct s2pt_pool *pool, uint32_t index)
{
	return (uint64_t *)(pool->mem + ((size_t)index << pool->granule_shift));
}

static inline uint64_t s2pt__page_pa(const struct s2pt_pool *pool, uint32_t index)
{
	return pool->base_pa + ((uint64_t)index << pool->granule_shift);
}

/* Table PA -> pointer. The caller knows pa is a page of the pool. */
static inline uint64_t *s2pt__table_ptr(const struct s2pt_pool *pool, uint64_t pa)
{
	return (uint64_t *)(pool->mem + (pa - pool->base_pa));
}

static inline int s2pt__pa_in_pool(const struct s2pt_pool *pool, uint64_t pa)
{
	return pa >= pool->base_pa && pa < s2pt__pool_end_pa(pool);
}

/* Pool index of the page an entry lives in. */
static inline uint32_t s2pt__ptep_index(const struct s2pt_pool *pool, const uint64_t *ptep)
{
	return (uint32_t)(((const uint8_t *)ptep - pool->mem) >> pool->granule_shift);
}

/* Index of an entry within its page. */
static inline uint64_t s2pt__ptep_slot(const struct s2pt_pool *pool, const uint64_t *ptep)
{
	return (((const uint8_t *)ptep - pool->mem) >> 3) & ((1ull << (pool->granule_shift - 3)) - 1);
}

/* log2 of the entries one occupancy-hint bit stands for (a 64th of the page). */
static inline uint32_t s2pt__hint_shift(const struct s2pt_pool *pool)
{
	return pool->granule_shift - 3 - 6;
}

/* Entries ptep[0 .. nr-1] (one page) may now be non-zero. */
static inline void s2pt__hint_range(struct s2pt_pool *pool, const uint64_t *ptep, uint32_t nr)
{
	uint32_t page = s2pt__ptep_index(pool, ptep);
	uint64_t first = s2pt__ptep_slot(pool, ptep);
	uint32_t shift = s2pt__hint_shift(pool);
	uint64_t lo = first >> shift, hi = (first + nr - 1) >> shift;

	pool->hint[page] |= (hi == 63 ? ~0ull : (2ull << hi) - 1) & ~((1ull << lo) - 1);
}

/*
 * Write an entry and keep KVM's count: a page holds 1 + its non-zero entries, so only a
 * zero <-> non-zero change moves the count of the page the entry lives in.
 */
static inline void s2pt__set_pte(struct s2pt_pgtable *pt, uint64_t *ptep, uint64_t pte)
{
	uint64_t old = *ptep;

	*ptep = pte;
	if (pte)
		s2pt__hint_range(pt->pool, ptep, 1);
	if (!old != !pte) {
		uint32_t *rc = &pt->pool->refcount[s2pt__ptep_index(pt->pool, ptep)];

		if (pte)
			(*rc)++;
		else
			(*rc)--;
	}
}

/* The count of the table page an entry lives in. */
static inline uint32_t *s2pt__page_count(struct s2pt_pgtable *pt, const uint64_t *ptep)
{
	return &pt->pool->refcount[s2pt__ptep_index(pt->pool, ptep)];
}

/* Child table of a table descriptor. */
static inline uint64_t *s2pt__child(const struct s2pt_pgtable *pt, uint64_t pte)
{
	return s2pt__table_ptr(pt->pool, s2pt_pte_addr(&pt->cfg, pte));
}

static inline uint32_t s2pt__child_index(const struct s2pt_pgtable *pt, uint64_t pte)
{
	return (uint32_t)((s2pt_pte_addr(&pt->cfg, pte) - pt->pool->base_pa) >>
			  pt->cfg.granule_shift);
}

/* Pool page allocation (the page comes back zero with count 1). */
int s2pt__page_alloc(struct s2pt_pool *pool, uint32_t owner, uint32_t *index);
/* Free a page whose entries are all zero. */
void s2pt__page_free(struct s2pt_pool *pool, uint32_t index);
/* n contiguous pages aligned to n pages (in PA), for the concatenated root. */
int s2pt__pages_alloc_aligned(struct s2pt_pool *pool, uint32_t owner, uint32_t n,
			      uint32_t *index);

/* Allocate a table page for pt (reserved beforehand). */
static inline int s2pt__table_alloc(struct s2pt_pgtable *pt, uint32_t *index)
{
	int ret = s2pt__page_alloc(pt->pool, pt->owner, index);

	if (!ret) {
		pt->table_pages++;
		pt->allocs++;
	}
	return ret;
}

static inline void s2pt__table_free(struct s2pt_pgtable *pt, uint32_t index)
{
	s2pt__page_free(pt->pool, index);
	pt->table_pages--;
	pt->frees++;
}

/*
 * The tree of @pt (cfg, pool, root_index set; nothing recorded in the pool yet) obeys every
 * descriptor rule of s2pt_check() and reaches only pool pages that are free or reserved, none
 * twice. Marks them in @seen (capacity bytes, zeroed), counts them in *@pages.
 */
int s2pt__tree_adoptable(const struct s2pt_pgtable *pt, uint8_t *seen, uint64_t *pages,
			 char *msg, size_t msg_len);

/* The VM runs with KVM's semantics (S2PT_CONFIG_KVM). */
static inline int s2pt__kvm(const struct s2pt_pgtable *pt)
{
	return (pt->cfg.flags & S2PT_CONFIG_KVM) != 0;
}

/* Record a TLB invalidation; a full log collapses into one VMID-wide event. */
void s2pt__tlbi_record(struct s2pt_tlbi_log *log, int kind, uint64_t ipa, uint64_t size,
		       int level, uint32_t reason);

/* Inline so that leaf loops pay one test when nothing is logged or the log has overflowed. */
static inline void s2pt__tlbi(struct s2pt_pgtable *pt, int kind, uint64_t ipa, uint64_t size,
			      int level, uint32_t reason)
{
	struct s2pt_tlbi_log *log = pt->tlbi;

	if (log && !log->overflowed && log->capacity)
		s2pt__tlbi_record(log, kind, ipa, size, level, reason);
}

/* The invalidation for a leaf: by IPA with its level as the hint. */
static inline void s2pt__tlbi_leaf(struct s2pt_pgtable *pt, uint64_t ipa, int level,
				   uint32_t reason)
{
	s2pt__tlbi(pt, S2PT_TLBI_IPA, ipa, s2pt__span(&pt->cfg, level), level, reason);
}

/*
 * Replace an entry by a leaf or an annotation. Only a change of software bits (ignored by
 * hardware) is written without break-before-make; a valid leaf replaced by anything else is
 * broken first and invalidated (by an annotation: plainly removed).
 */
static inline void s2pt__tlbi_replace(struct s2pt_pgtable *pt, uint64_t old, uint64_t pte,
				      uint64_t ipa, int level)
{
	if (s2pt_pte_valid(old) && ((old ^ pte) & ~S2PT_PTE_SW))
		s2pt__tlbi_leaf(pt, ipa, level,
				s2pt_pte_valid(pte) ? S2PT_TLBI_REPLACE : S2PT_TLBI_UNMAP);
}

/* A table replaced by a block: KVM flushes the block's span, the whole VMID without
 * FEAT_TLBIRANGE. */
static inline void s2pt__tlbi_coalesce(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t span)
{
	if (pt->cfg.flags & S2PT_CONFIG_NO_TLBIRANGE)
		s2pt__tlbi(pt, S2PT_TLBI_VMID, 0, 0, S2PT_TLBI_LEVEL_UNKNOWN, S2PT_TLBI_COALESCE);
	else
		s2pt__tlbi(pt, S2PT_TLBI_RANGE, ipa, span, S2PT_TLBI_LEVEL_UNKNOWN,
			   S2PT_TLBI_COALESCE);
}

/* KVM defers unmap invalidations to one range flush when it has FWB and FEAT_TLBIRANGE. */
static inline int s2pt__unmap_deferred(const struct s2pt_config *cfg)
{
	return (cfg->flags & (S2PT_CONFIG_FWB | S2PT_CONFIG_NO_TLBIRANGE)) == S2PT_CONFIG_FWB;
}

/* Validate a range against the IPA space: alignment, then size and wrap-around. */
static inline int s2pt__check_range(const struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size)
{
	uint64_t gmask = (1ull << pt->cfg.granule_shift) - 1;

	if ((ipa | size) & gmask)
		return S2PT_EALIGN;
	/* ipa + size may reach 2^ipa_bits exactly (the kernel's 2021 off-by-one fix), never wrap. */
	if (ipa + size < ipa || ipa + size > (1ull << pt->cfg.ipa_bits))
		return S2PT_ERANGE;
	return 0;
}

/* Validate a prot value for the VM (PX without UX and the reverse need FEAT_XNX). */
static inline int s2pt__check_prot(const struct s2pt_config *cfg, uint32_t prot)
{
	/* Stage 1: a valid leaf always grants EL1 read; PXN and UXN are separate bits. */
	if (s2pt_is_stage1(cfg))
		return (prot & ~(S2PT_PROT_ALL | S2PT_PROT_USER)) || !(prot & S2PT_PROT_R)
			       ? S2PT_EINVAL
			       : 0;
	if (prot & ~S2PT_PROT_ALL)
		return S2PT_EINVAL;
	/* Without FEAT_XNX one XN bit governs EL1 and EL0 execute alike. */
	if (!(cfg->flags & S2PT_CONFIG_XNX) && !(prot & S2PT_PROT_PX) != !(prot & S2PT_PROT_UX))
		return S2PT_EINVAL;
	return 0;
}

/* Clear [ipa, ipa + size) and free every table entirely inside it, without events. */
int s2pt__clear_range(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size);

/* ---- shared by the range operations of map.c and leafops.c -------------------------- */

/*
 * s2pt__need_edges() rules for which valid blocks covered in part by a range get split:
 * every one, only writable ones, or (a prot >= 0) those whose permissions differ from it.
 */
#define S2PT__EDGE_ANY (-1)
#define S2PT__EDGE_WRITABLE (-2)

/* Pages needed to split the blocks at the two ends of [a, b) that the rule selects. */
uint64_t s2pt__need_edges(const struct s2pt_pgtable *pt, const uint64_t *table, uint64_t nentries,
			  int level, uint64_t a, uint64_t b, int64_t keep_prot);
/* The pool surely has every page a change of [a, b) can need (never trusted in debug). */
int s2pt__bound_settles(const struct s2pt_pgtable *pt, uint64_t a, uint64_t b);
/* Refuse if the pool has fewer than @need free pages, else walk (debug: count exact). */
int s2pt__walk_reserved(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint64_t need,
			const struct s2pt_walker *w);
/* Replace the block (or empty entry) at ctx->ptep by a table; @keep: holding the block. */
int s2pt__split_block(const struct s2pt_walk_ctx *ctx, int keep);

/* The one entry at index @i of a run, as a single visit sees it. */
static inline struct s2pt_walk_ctx s2pt__run_entry(const struct s2pt_walk_ctx *ctx, uint32_t i)
{
	struct s2pt_walk_ctx one = *ctx;

	one.ptep = &ctx->ptep[i];
	one.old = ctx->ptep[i];
	one.addr = ctx->addr + i * s2pt__span(&ctx->pt->cfg, ctx->level);
	one.nr = 1;
	return one;
}

#endif /* S2PT_INTERNAL_H */
