/*
 * map, unmap and protect: each is a reservation pass that counts the table pages the change
 * needs (so that a failure changes nothing) followed by one walk that makes the change.
 */
#include "internal.h"

struct map_args {
	uint64_t ipa;   /* start of the range */
	uint64_t pa;    /* output address of ipa (= ipa for annotations: no alignment limit) */
	uint64_t attrs; /* leaf attribute bits (no address, no type); annotations: the entry */
	int blocks;
	int annotate;   /* write invalid owner entries (s2pt_set_owner) instead of pages */
};

static inline uint64_t pa_for(const struct map_args *m, uint64_t ipa)
{
	return m->pa + (ipa - m->ipa); /* modulo 2^64: consistent for ipa < m->ipa too */
}

/* The entry the change writes for the span at @ipa, @level. */
static inline uint64_t new_entry(const struct s2pt_pgtable *pt, const struct map_args *m,
				 uint64_t ipa, int level)
{
	return m->annotate ? m->attrs : s2pt_leaf_pte(&pt->cfg, pa_for(m, ipa), m->attrs, level);
}

/*
 * A leaf may go at this level for an entry whose whole span is covered: always at level 3,
 * otherwise when blocks are allowed at the level and the output address is block aligned.
 * The alignment test is the same for every entry of a level, since entries are span-aligned.
 */
static inline int leaf_allowed(const struct s2pt_pgtable *pt, const struct map_args *m, int level)
{
	if (level == 3)
		return 1;
	return m->blocks && level >= pt->cfg.min_block_level &&
	       !((m->pa - m->ipa) & (s2pt__span(&pt->cfg, level) - 1));
}

/* The block at this entry already is what the request asks (annotations: blocks == 0). */
static inline int block_identical(const struct s2pt_pgtable *pt, const struct map_args *m,
				  uint64_t pte, uint64_t entry_ipa)
{
	if (m->annotate)
		return pte == m->attrs;
	return s2pt_pte_valid(pte) && s2pt_pte_attrs(&pt->cfg, pte) == m->attrs &&
	       s2pt_pte_addr(&pt->cfg, pte) == pa_for(m, entry_ipa);
}

/*
 * KVM's semantics leave a valid leaf that differs from the new one only in its permissions
 * alone (stage2_pte_needs_update(): -EAGAIN, which its fault handler answers with
 * relax_perms).
 */
static inline int kvm_keeps(const struct s2pt_pgtable *pt, uint64_t old, uint64_t pte)
{
	return s2pt__kvm(pt) && s2pt_pte_valid(old) && s2pt_pte_valid(pte) &&
	       !((old ^ pte) & ~S2PT_PTE_PERM);
}

/*
 * An existing block that already maps what the request asks for its part is kept whole by
 * exact semantics; KVM replaces it all the same (its -E2BIG path), so kvm mode never keeps.
 */
static inline int keep_block(const struct s2pt_pgtable *pt, const struct map_args *m,
			     uint64_t pte, uint64_t entry_ipa)
{
	return m->blocks && !s2pt__kvm(pt) && block_identical(pt, m, pte, entry_ipa);
}

/*
 * Pages needed below one entry at level - 1 to map [a, b) into an empty table at @level.
 * A block split for a partial map needs the same: its pieces never match the request
 * (the block did not), so every decision below it is the one an empty table gets.
 */
static uint64_t need_empty(const struct s2pt_pgtable *pt, const struct map_args *m, int level,
			   uint64_t a, uint64_t b)
{
	uint64_t span, first, last, n = 0;

	if (level == 3)
		return 0;
	span = s2pt__span(&pt->cfg, level);
	first = a & ~(span - 1);
	last = (b - 1) & ~(span - 1);
	if (first == last)
		return (a == first && b == first + span && leaf_allowed(pt, m, level))
			       ? 0
			       : 1 + need_empty(pt, m, level + 1, a, b);
	/* Partial first and last entries, and a run of whole entries that all decide alike. */
	if (a != first) {
		n += 1 + need_empty(pt, m, level + 1, a, first + span);
		first += span;
	}
	if (b != last + span)
		n += 1 + need_empty(pt, m, level + 1, last, b);
	else
		last += span;
	if (last > first && !leaf_allowed(pt, m, level))
		n += ((last - first) / span) * (1 + need_empty(pt, m, level + 1, first, first + span));
	return n;
}

static uint64_t need_map(const struct s2pt_pgtable *pt, const struct map_args *m,
			 const uint64_t *table, uint64_t nentries, int level, uint64_t a, uint64_t b)
{
	uint32_t shift = s2pt_level_shift(&pt->cfg, level);
	uint64_t span = 1ull << shift;
	int whole_ok = leaf_allowed(pt, m, level);
	uint64_t n = 0;

	if (level == 3)
		return 0;
	for (uint64_t e = a & ~(span - 1); e < b; e += span) {
		uint64_t ea = e > a ? e : a, eb = e + span < b ? e + span : b;
		int covered = ea == e && eb == e + span;
		uint64_t pte;

		/* A whole entry that takes a leaf needs nothing, whatever is there now. */
		if (covered && whole_ok) {
			/* Skip to the last entry: only a partial one can still need pages. */
			if (b - e > span)
				e = ((b - 1) & ~(span - 1)) - span;
			continue;
		}
		pte = table[(e >> shift) & (nentries - 1)];
		if (s2pt_pte_is_table(pte, level))
			n += need_map(pt, m, s2pt__child(pt, pte), 1ull << pt->cfg.stride, level + 1,
				      ea, eb);
		else if (keep_block(pt, m, pte, e))
			continue;
		else
			n += 1 + need_empty(pt, m, level + 1, ea, eb);
	}
	return n;
}

/* Pages a block split at @level - 1 needs so that only [a, b) is affected inside it. */
static uint64_t need_split(const struct s2pt_pgtable *pt, int level, uint64_t a, uint64_t b)
{
	uint64_t span, first, last, n = 0;

	if (level == 3)
		return 0;
	span = s2pt__span(&pt->cfg, level);
	first = a & ~(span - 1);
	last = (b - 1) & ~(span - 1);
	if (a != first)
		n += 1 + need_split(pt, level + 1, a, first + span < b ? first + span : b);
	if (b != last + span && (last != first || a == first))
		n += 1 + need_split(pt, level + 1, last > a ? last : a, b);
	return n;
}

/*
 * Pages unmap or protect need: only blocks that the range covers in part are split, and only
 * the entries at the two ends of the range can be such blocks. @keep_prot >= 0 (protect):
 * blocks that already have these permissions are left whole.
 */
uint64_t s2pt__need_edges(const struct s2pt_pgtable *pt, const uint64_t *table, uint64_t nentries,
			   int level, uint64_t a, uint64_t b, int64_t keep_prot)
{
	uint32_t shift = s2pt_level_shift(&pt->cfg, level);
	uint64_t span = 1ull << shift;
	uint64_t ends[2] = {a & ~(span - 1), (b - 1) & ~(span - 1)};
	uint64_t n = 0;

	if (level == 3)
		return 0;
	for (int i = 0; i < 2; i++) {
		uint64_t e = ends[i];
		uint64_t ea = e > a ? e : a, eb = e + span < b ? e + span : b;
		uint64_t pte;

		if (i == 1 && e == ends[0])
			break;
		if (ea == e && eb == e + span)
			continue;
		pte = table[(e >> shift) & (nentries - 1)];
		if (s2pt_pte_is_table(pte, level))
			n += s2pt__need_edges(pt, s2pt__child(pt, pte), 1ull << pt->cfg.stride, level + 1, ea,
					eb, keep_prot);
		else if (s2pt_pte_valid(pte) &&
			 (keep_prot == S2PT__EDGE_ANY ||
			  (keep_prot == S2PT__EDGE_WRITABLE ? (pte & S2PT_PTE_S2AP_W) != 0
							    : s2pt_pte_prot(&pt->cfg, pte) !=
								      (uint32_t)keep_prot)))
			n += 1 + need_split(pt, level + 1, ea, eb);
	}
	return n;
}

/*
 * An upper bound on the pages any change of [a, b) can allocate: one table per entry the
 * range touches at each level above the last (a split or a new table needs no more). When
 * the pool has that many free pages the exact count is not needed, so the common case of a
 * large pool skips the counting walk. Debug builds always count and check the bound.
 */
static uint64_t alloc_bound(const struct s2pt_pgtable *pt, uint64_t a, uint64_t b)
{
	uint64_t bound = 0;

	for (int level = pt->cfg.start_level; level < 3; level++) {
		uint32_t shift = s2pt_level_shift(&pt->cfg, level);

		bound += ((b - 1) >> shift) - (a >> shift) + 1;
	}
	return bound;
}

/* The pool surely has every page the change needs (never trusted in debug builds). */
int s2pt__bound_settles(const struct s2pt_pgtable *pt, uint64_t a, uint64_t b)
{
	return !S2PT_DEBUG && alloc_bound(pt, a, b) <= s2pt_pool_free_pages(pt->pool);
}

/*
 * The change itself, once the caller has counted the pages it needs (0 when the bound settled
 * it): refuse if the pool is short, else walk. Debug builds check the count was exact.
 */
int s2pt__walk_reserved(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint64_t need,
			 const struct s2pt_walker *w)
{
	int ret;

#if S2PT_DEBUG
	{
		/* KVM's semantics change whole leaves: the bound is over the largest blocks the
		 * range touches. */
		uint64_t span = s2pt__kvm(pt) ? s2pt__span(&pt->cfg, pt->cfg.min_block_level) : 1;
		uint64_t a = ipa & ~(span - 1), b = (ipa + size + span - 1) & ~(span - 1);

		S2PT_ASSERT(need <= alloc_bound(pt, a, b));
	}
#endif
	if (need > s2pt_pool_free_pages(pt->pool))
		return S2PT_ENOMEM;
	pt->allocs = 0;
	ret = s2pt_walk(pt, ipa, size, w);
	S2PT_ASSERT(ret == 0 && pt->allocs == need);
	return ret;
}

/*
 * Replace the block at ctx->ptep by a table. With @keep, the table holds the block's mapping
 * as next-level leaves (same attributes, consecutive output addresses), so the part of the
 * block outside the range stays mapped; without it the table starts empty (the range covers
 * the whole block and rewrites it). The old block is invalidated first (break-before-make).
 */
int s2pt__split_block(const struct s2pt_walk_ctx *ctx, int keep)
{
	struct s2pt_pgtable *pt = ctx->pt;
	const struct s2pt_config *cfg = &pt->cfg;
	uint64_t nentries = 1ull << cfg->stride;
	uint32_t index;
	uint64_t *child;
	int ret = s2pt__table_alloc(pt, &index);

	S2PT_ASSERT(ret == 0);
	if (ret)
		return ret;
	child = s2pt__page_ptr(pt->pool, index);
	if (keep && s2pt_pte_valid(ctx->old)) {
		uint64_t attrs = s2pt_pte_attrs(cfg, ctx->old);
		uint64_t pa = s2pt_pte_addr(cfg, ctx->old);
		uint64_t step = s2pt__span(cfg, ctx->level + 1);

		for (uint64_t i = 0; i < nentries; i++)
			child[i] = s2pt_leaf_pte(cfg, pa + i * step, attrs, ctx->level + 1);
		pt->pool->refcount[index] += (uint32_t)nentries;
		pt->pool->hint[index] = ~0ull;
	}
	if (s2pt_pte_valid(ctx->old))
		s2pt__tlbi_leaf(pt, ctx->addr, ctx->level, S2PT_TLBI_SPLIT);
	s2pt__set_pte(pt, ctx->ptep, s2pt_table_pte(cfg, s2pt__page_pa(pt->pool, index)));
	return 0;
}

/* A run of whole entries: a table at a time, the hot path of large maps. */
static int map_run(const struct s2pt_walk_ctx *ctx, const struct map_args *m)
{
	struct s2pt_pgtable *pt = ctx->pt;
	const struct s2pt_config *cfg = &pt->cfg;
	uint64_t span = s2pt__span(cfg, ctx->level);
	uint64_t *ptep = ctx->ptep;
	uint32_t nr = ctx->nr, added = 0;
	uint64_t pa = pa_for(m, ctx->addr);
	/* Consecutive leaves differ by span in their descriptors too, unless the run crosses
	 * the top of the in-place address field (2^48, 2^50 with LPA2) in a 52-bit format.
	 * Annotations are all the same entry. */
	uint64_t inc = m->annotate ? 0 : span;
	int linear = m->annotate || !((pa ^ (pa + (nr - 1) * span)) & ~(cfg->oa_mask | (span - 1)));
	uint32_t *count;
	uint64_t pte;

	if (!leaf_allowed(pt, m, ctx->level)) {
		/* Tables go in (empty: the entry is covered whole); the walker descends. */
		for (uint32_t i = 0; i < nr; i++) {
			struct s2pt_walk_ctx one = s2pt__run_entry(ctx, i);
			int ret;

			if (keep_block(pt, m, one.old, one.addr))
				continue;
			ret = s2pt__split_block(&one, 0);
			if (ret)
				return ret;
		}
		return 1; /* descend into the new tables */
	}
	count = s2pt__page_count(pt, ptep);
	pte = new_entry(pt, m, ctx->addr, ctx->level);
	if (*count == 1 && S2PT_LIKELY(linear)) {
		/* KVM's count says the page holds nothing: a plain fill, nothing to invalidate. */
		for (uint32_t i = 0; i < nr; i++)
			ptep[i] = pte + i * inc;
		*count += nr;
		s2pt__hint_range(pt->pool, ptep, nr);
		return 0;
	}
	s2pt__hint_range(pt->pool, ptep, nr);
	for (uint32_t i = 0; i < nr; i++) {
		uint64_t old = ptep[i];

		if (!linear)
			pte = s2pt_leaf_pte(cfg, pa + i * span, m->attrs, ctx->level);
		else if (i)
			pte += inc;
		if (old == pte || kvm_keeps(pt, old, pte))
			continue; /* already exactly this: no write, no event */
		s2pt__tlbi_replace(pt, old, pte, ctx->addr + i * span, ctx->level);
		added += !old;
		ptep[i] = pte;
	}
	*count += added;
	return 0;
}

static int map_cb(const struct s2pt_walk_ctx *ctx, uint32_t visit)
{
	struct s2pt_pgtable *pt = ctx->pt;
	const struct map_args *m = ctx->arg;
	uint64_t span = s2pt__span(&pt->cfg, ctx->level);
	int covered = ctx->addr >= ctx->start && ctx->addr + span <= ctx->end;
	uint64_t pte;

	if (visit == S2PT_WALK_LEAF_RUN)
		return map_run(ctx, m);
	if (covered && leaf_allowed(pt, m, ctx->level)) {
		pte = new_entry(pt, m, ctx->addr, ctx->level);
		if (visit == S2PT_WALK_TABLE_PRE) {
			/* Coalesce: the table's whole span becomes one block; free the subtree.
			 * Without FEAT_TLBIRANGE KVM invalidates the whole VMID instead. */
			int ret = s2pt__clear_range(pt, ctx->addr, span);

			if (ret)
				return ret;
			s2pt__tlbi_coalesce(pt, ctx->addr, span);
		} else if (ctx->old == pte || kvm_keeps(pt, ctx->old, pte)) {
			return 0; /* already exactly this: no write, no event */
		} else {
			s2pt__tlbi_replace(pt, ctx->old, pte, ctx->addr, ctx->level);
		}
		s2pt__set_pte(pt, ctx->ptep, pte);
		return 0;
	}
	if (visit == S2PT_WALK_TABLE_PRE)
		return 0; /* descend into the existing table */
	/* A leaf does not fit here: put a table in place and let the walker descend into it.
	 * KVM's table starts empty: the rest of a block is dropped and faulted back lazily. */
	if (keep_block(pt, m, ctx->old, ctx->addr))
		return 0;
	return s2pt__split_block(ctx, !covered && !s2pt__kvm(pt));
}

/* Everything s2pt_map() checks before it looks at the tables. */
static int map_check(const struct s2pt_pgtable *pt, uint64_t ipa, uint64_t pa, uint64_t size,
		     uint32_t prot, uint32_t memattr, uint32_t flags)
{
	int ret;

	if (pt->destroyed)
		return S2PT_EDESTROYED;
	if (s2pt__check_prot(&pt->cfg, prot) || s2pt_memattr_field(&pt->cfg, memattr) < 0 ||
	    (flags & ~(S2PT_MAP_NO_BLOCKS | S2PT_MAP_NO_AF | S2PT_MAP_SW_MASK |
		       (s2pt_is_stage1(&pt->cfg) ? S2PT_MAP_NG : 0))))
		return S2PT_EINVAL;
	/* KVM refuses execute permission (EL1 or EL0) on Device memory (stage 2: at stage 1
	 * the type is in MAIR, and execute there is the guest's business). */
	if (!s2pt_is_stage1(&pt->cfg) && (prot & S2PT_PROT_X) && s2pt_memattr_is_device(memattr))
		return S2PT_EINVAL;
	if (pa & ((1ull << pt->cfg.granule_shift) - 1))
		return S2PT_EALIGN;
	ret = s2pt__check_range(pt, ipa, size);
	if (ret)
		return ret;
	if (pa + size < pa || pa + size > (1ull << pt->cfg.pa_bits))
		return S2PT_ERANGE;
	return 0;
}

/*
 * The common case of callers that map one leaf per call (a page per call; a fault handler's
 * page or block): the tables down to the leaf's level exist and the entry there is not a
 * table, so the change is one entry and needs no page. Returns 1 when done, 0 when the
 * general path must run (a hole or a block on the way, or a table to coalesce).
 */
static int map_leaf_fast(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t pa, uint64_t attrs,
			 int leaf_level)
{
	const struct s2pt_config *cfg = &pt->cfg;
	uint64_t *table = pt->root;
	uint64_t *ptep, pte;

	for (int level = cfg->start_level;; level++) {
		uint64_t idx = ipa >> s2pt_level_shift(cfg, level);

		/* The start level indexes the whole concatenated root. */
		ptep = &table[level == cfg->start_level ? idx : idx & ((1ull << cfg->stride) - 1)];
		if (level == leaf_level)
			break;
		if (!s2pt_pte_is_table(*ptep, level))
			return 0;
		table = s2pt__child(pt, *ptep);
	}
	if (s2pt_pte_is_table(*ptep, leaf_level))
		return 0;
	pte = s2pt_leaf_pte(cfg, pa, attrs, leaf_level);
	if (*ptep == pte || kvm_keeps(pt, *ptep, pte))
		return 1; /* already exactly this: no write, no event */
	s2pt__tlbi_replace(pt, *ptep, pte, ipa, leaf_level);
	s2pt__set_pte(pt, ptep, pte);
	return 1;
}

/* Reserve, then walk: the change @m describes over [m->ipa, m->ipa + size). */
static int map_walk(struct s2pt_pgtable *pt, const struct map_args *m, uint64_t size)
{
	const struct s2pt_walker w = {
		.cb = map_cb,
		.arg = (void *)m,
		.flags = S2PT_WALK_LEAF | S2PT_WALK_LEAF_RUN | S2PT_WALK_TABLE_PRE,
	};
	uint64_t need;

	need = s2pt__bound_settles(pt, m->ipa, m->ipa + size)
		       ? 0
		       : need_map(pt, m, pt->root, pt->cfg.root_entries, pt->cfg.start_level,
				  m->ipa, m->ipa + size);
	return s2pt__walk_reserved(pt, m->ipa, size, need, &w);
}

/* Reserve, then change: the arguments are already checked. */
static int map_apply(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t pa, uint64_t size,
		     uint32_t prot, uint32_t memattr, uint32_t flags)
{
	struct map_args m = {.ipa = ipa, .pa = pa, .blocks = !(flags & S2PT_MAP_NO_BLOCKS)};

	if (size == 0)
		return 0;
	m.attrs = s2pt_leaf_attrs(&pt->cfg, prot, (uint32_t)s2pt_memattr_field(&pt->cfg, memattr),
				  !(flags & S2PT_MAP_NO_AF),
				  (flags & S2PT_MAP_SW_MASK) >> S2PT_MAP_SW_SHIFT) |
		  ((flags & S2PT_MAP_NG) ? S2PT_PTE_NG : 0);
	pt->allocs = 0;
	/* One leaf: a page, or an aligned block where blocks are allowed (its span is the size). */
	for (int level = 3; level >= pt->cfg.min_block_level && (level == 3 || m.blocks); level--) {
		uint64_t span = s2pt__span(&pt->cfg, level);

		if (size == span) {
			if (!((ipa | pa) & (span - 1)) && map_leaf_fast(pt, ipa, pa, m.attrs, level))
				return 0;
			break;
		}
		if (size < span)
			break;
	}
	return map_walk(pt, &m, size);
}

int s2pt_set_owner(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint32_t owner)
{
	/* Page-level entries only, as KVM's set_owner (force_pte): no blocks, so no coalescing
	 * and no partial annotation to split later. */
	struct map_args m = {.ipa = ipa, .pa = ipa, .blocks = 0, .annotate = 1};
	int ret;

	if (pt->destroyed)
		return S2PT_EDESTROYED;
	if (owner == 0 || owner > S2PT_OWNER_MAX)
		return S2PT_EINVAL;
	ret = s2pt__check_range(pt, ipa, size);
	if (ret || size == 0)
		return ret;
	m.attrs = (uint64_t)owner << S2PT_PTE_OWNER_SHIFT;
	return map_walk(pt, &m, size);
}

int s2pt_map(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t pa, uint64_t size,
	     uint32_t prot, uint32_t memattr, uint32_t flags)
{
	int ret = map_check(pt, ipa, pa, size, prot, memattr, flags);

	return ret ? ret : map_apply(pt, ipa, pa, size, prot, memattr, flags);
}

/* Does @f still name an empty entry of @pt where a leaf of @size at @ipa belongs? No table
 * of @pt freed since the walk means the entry's table is still the one that walk reached. */
static uint64_t *fault_entry(const struct s2pt_pgtable *pt, const struct s2pt_fault *f,
			     uint64_t ipa, uint64_t pa, uint64_t size, uint32_t flags)
{
	const struct s2pt_pool *pool = pt->pool;
	uint64_t span, offset;
	int level;

	if (!f || !f->ptep || f->kind != S2PT_FAULT_TRANSLATION || f->frees != pt->frees)
		return NULL;
	level = f->level;
	if (level < pt->cfg.min_block_level || level > 3 || (level < 3 && (flags & S2PT_MAP_NO_BLOCKS)))
		return NULL;
	span = s2pt__span(&pt->cfg, level);
	if (size != span || ((ipa | pa) & (span - 1)) || (f->ipa & ~(span - 1)) != ipa)
		return NULL;
	offset = (uint64_t)((uintptr_t)f->ptep - (uintptr_t)pool->mem);
	if ((uintptr_t)f->ptep < (uintptr_t)pool->mem || offset >> pool->granule_shift >= pool->capacity ||
	    pool->owner[offset >> pool->granule_shift] != pt->owner || *f->ptep)
		return NULL;
	return f->ptep;
}

int s2pt_map_fault(struct s2pt_pgtable *pt, const struct s2pt_fault *f, uint64_t ipa,
		   uint64_t pa, uint64_t size, uint32_t prot, uint32_t memattr, uint32_t flags)
{
	int ret = map_check(pt, ipa, pa, size, prot, memattr, flags);
	uint64_t *ptep;

	if (ret)
		return ret;
	ptep = fault_entry(pt, f, ipa, pa, size, flags);
	if (!ptep)
		return map_apply(pt, ipa, pa, size, prot, memattr, flags);
	/* An empty entry becomes a leaf: nothing was cached, so no invalidation (as s2pt_map). */
	pt->allocs = 0;
	s2pt__set_pte(pt, ptep,
		      s2pt_leaf_pte(&pt->cfg, pa,
				    s2pt_leaf_attrs(&pt->cfg, prot,
						    (uint32_t)s2pt_memattr_field(&pt->cfg, memattr),
						    !(flags & S2PT_MAP_NO_AF),
						    (flags & S2PT_MAP_SW_MASK) >> S2PT_MAP_SW_SHIFT) |
					    ((flags & S2PT_MAP_NG) ? S2PT_PTE_NG : 0),
				    f->level));
	return 0;
}

int s2pt_map_many(struct s2pt_pgtable *pt, const uint64_t *ipas, const uint64_t *pas,
		  const uint64_t *sizes, size_t size_stride, size_t n, uint32_t prot,
		  uint32_t memattr, uint32_t flags, size_t *done)
{
	size_t i;
	int ret = pt->destroyed ? S2PT_EDESTROYED : 0;

	*done = 0;
	if (ret)
		return ret;
	/* Every element's arguments first, so a bad one changes nothing at all. */
	for (i = 0; i < n && !ret; i++)
		ret = map_check(pt, ipas[i], pas[i], sizes[i * size_stride], prot, memattr, flags);
	if (ret) {
		*done = i - 1;
		return ret;
	}
	for (i = 0; i < n && !ret; i++)
		ret = map_apply(pt, ipas[i], pas[i], sizes[i * size_stride], prot, memattr, flags);
	*done = ret ? i - 1 : n;
	return ret;
}

struct unmap_args {
	uint64_t unmapped;
	int deferred; /* one RANGE event after the walk instead of one per leaf */
};

/*
 * A run of whole entries. Sparse tables are the common case, so only the parts of the page
 * that the occupancy hint marks are read, and the scan stops once the page's count says it
 * is empty (count 1, kvm_page_empty).
 */
static void unmap_run(const struct s2pt_walk_ctx *ctx, struct unmap_args *u)
{
	struct s2pt_pgtable *pt = ctx->pt;
	struct s2pt_pool *pool = pt->pool;
	uint64_t span = s2pt__span(&pt->cfg, ctx->level);
	uint32_t page = s2pt__ptep_index(pool, ctx->ptep);
	uint32_t *count = &pool->refcount[page];
	uint64_t *hint = &pool->hint[page];
	uint64_t first = s2pt__ptep_slot(pool, ctx->ptep), end = first + ctx->nr;
	uint64_t *table = ctx->ptep - first;
	uint32_t shift = s2pt__hint_shift(pool);
	uint64_t lo = first >> shift, hi = (end - 1) >> shift;
	uint64_t parts = *hint & (hi == 63 ? ~0ull : (2ull << hi) - 1) & ~((1ull << lo) - 1);

	while (parts && *count > 1) {
		uint64_t b = (uint64_t)__builtin_ctzll(parts);
		uint64_t a = b << shift, z = (b + 1) << shift;
		uint64_t from = a > first ? a : first, to = z < end ? z : end;
		uint64_t left = 0;

		parts &= parts - 1;
		for (uint64_t e = from; e < to; e++) {
			uint64_t old = table[e];

			if (!old)
				continue;
			if (s2pt_pte_valid(old)) {
				u->unmapped += span;
				if (!u->deferred)
					s2pt__tlbi_leaf(pt, ctx->addr + (e - first) * span,
							ctx->level, S2PT_TLBI_UNMAP);
			}
			table[e] = 0;
			--*count;
		}
		/* The part outside the run may still hold entries; the bit goes once all are 0. */
		for (uint64_t e = a; e < from && !left; e++)
			left = table[e];
		for (uint64_t e = to; e < z && !left; e++)
			left = table[e];
		if (!left)
			*hint &= ~(1ull << b);
	}
}

static int unmap_cb(const struct s2pt_walk_ctx *ctx, uint32_t visit)
{
	struct s2pt_pgtable *pt = ctx->pt;
	uint64_t span = s2pt__span(&pt->cfg, ctx->level);

	if (visit == S2PT_WALK_LEAF_RUN) {
		unmap_run(ctx, ctx->arg);
		return 0;
	}
	if (visit == S2PT_WALK_TABLE_POST) {
		uint32_t child = s2pt__child_index(pt, ctx->old);

		/* kvm_page_empty(): only the allocation reference is left. */
		if (pt->pool->refcount[child] == 1) {
			s2pt__set_pte(pt, ctx->ptep, 0);
			s2pt__table_free(pt, child);
			/* Not deferred even when leaves are: KVM invalidates a removed table at
			 * once, by IPA without a level hint. */
			s2pt__tlbi(pt, S2PT_TLBI_IPA, ctx->addr, span, S2PT_TLBI_LEVEL_UNKNOWN,
				   S2PT_TLBI_TABLE);
		}
		return 0;
	}
	if (!ctx->old)
		return 0;
	/* KVM removes every leaf the range touches whole ("rely on the remaining portions
	 * being faulted back lazily"); exact semantics split one covered in part. */
	if ((ctx->addr >= ctx->start && ctx->addr + span <= ctx->end) || s2pt__kvm(pt)) {
		if (s2pt_pte_valid(ctx->old)) {
			struct unmap_args *u = ctx->arg;

			u->unmapped += span;
			if (!u->deferred)
				s2pt__tlbi_leaf(pt, ctx->addr, ctx->level, S2PT_TLBI_UNMAP);
		}
		s2pt__set_pte(pt, ctx->ptep, 0);
		return 0;
	}
	/* A block covered in part: keep the rest as next-level leaves, then descend. */
	return s2pt_pte_valid(ctx->old) ? s2pt__split_block(ctx, 1) : 0;
}

/*
 * The common case of callers that unmap one leaf per call: [ipa, ipa + size) is exactly one
 * non-empty entry, in a table that keeps other entries (or a root), so nothing splits and no
 * table is freed. Returns 1 when done, 0 when the walker must run.
 */
static int unmap_leaf_fast(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size,
			   struct unmap_args *u)
{
	const struct s2pt_config *cfg = &pt->cfg;
	uint64_t *table = pt->root, *ptep, pte, span;
	int level;

	for (level = cfg->start_level;; level++) {
		uint64_t idx = ipa >> s2pt_level_shift(cfg, level);

		ptep = &table[level == cfg->start_level ? idx : idx & ((1ull << cfg->stride) - 1)];
		pte = *ptep;
		if (!s2pt_pte_is_table(pte, level))
			break;
		table = s2pt__child(pt, pte);
	}
	span = s2pt__span(cfg, level);
	if (!pte || size != span || (ipa & (span - 1)) ||
	    (level != cfg->start_level && *s2pt__page_count(pt, ptep) <= 2))
		return 0;
	pt->allocs = 0;
	if (s2pt_pte_valid(pte)) {
		u->unmapped += span;
		if (!u->deferred)
			s2pt__tlbi_leaf(pt, ipa, level, S2PT_TLBI_UNMAP);
	}
	s2pt__set_pte(pt, ptep, 0);
	return 1;
}

static int unmap_apply(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint64_t *unmapped)
{
	struct unmap_args u = {.deferred = s2pt__unmap_deferred(&pt->cfg)};
	const struct s2pt_walker w = {
		.cb = unmap_cb,
		.arg = &u,
		.flags = S2PT_WALK_LEAF | S2PT_WALK_LEAF_RUN | S2PT_WALK_TABLE_POST,
	};
	uint64_t need;
	int ret;

	if (size == 0)
		return 0;
	if (unmap_leaf_fast(pt, ipa, size, &u)) {
		ret = 0;
	} else {
		need = s2pt__bound_settles(pt, ipa, ipa + size) || s2pt__kvm(pt)
			       ? 0
			       : s2pt__need_edges(pt, pt->root, pt->cfg.root_entries,
					    pt->cfg.start_level, ipa, ipa + size, S2PT__EDGE_ANY);
		ret = s2pt__walk_reserved(pt, ipa, size, need, &w);
	}
	/* KVM issues its deferred range flush even when nothing was mapped. */
	if (!ret && u.deferred && (u.unmapped || s2pt__kvm(pt)))
		s2pt__tlbi(pt, S2PT_TLBI_RANGE, ipa, size, S2PT_TLBI_LEVEL_UNKNOWN, S2PT_TLBI_UNMAP);
	*unmapped += u.unmapped;
	return ret;
}

int s2pt_unmap(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint64_t *unmapped)
{
	uint64_t bytes = 0;
	int ret = pt->destroyed ? S2PT_EDESTROYED : s2pt__check_range(pt, ipa, size);

	if (!ret)
		ret = unmap_apply(pt, ipa, size, &bytes);
	if (unmapped)
		*unmapped = bytes;
	return ret;
}

int s2pt_unmap_many(struct s2pt_pgtable *pt, const uint64_t *ipas, const uint64_t *sizes,
		    size_t size_stride, size_t n, uint64_t *unmapped, size_t *done)
{
	uint64_t bytes = 0;
	size_t i;
	int ret = pt->destroyed ? S2PT_EDESTROYED : 0;

	for (i = 0; i < n && !ret; i++)
		ret = s2pt__check_range(pt, ipas[i], sizes[i * size_stride]);
	if (ret) {
		*done = i ? i - 1 : 0;
		*unmapped = 0;
		return ret;
	}
	for (i = 0; i < n && !ret; i++)
		ret = unmap_apply(pt, ipas[i], sizes[i * size_stride], &bytes);
	*done = ret ? i - 1 : n;
	*unmapped = bytes;
	return ret;
}

struct protect_args {
	uint32_t prot;
};

static int protect_cb(const struct s2pt_walk_ctx *ctx, uint32_t visit)
{
	struct s2pt_pgtable *pt = ctx->pt;
	const struct protect_args *p = ctx->arg;
	uint64_t span = s2pt__span(&pt->cfg, ctx->level);
	uint64_t pte;

	if (visit == S2PT_WALK_LEAF_RUN) {
		for (uint32_t i = 0; i < ctx->nr; i++) {
			uint64_t old = ctx->ptep[i];

			pte = s2pt_pte_with_prot(&pt->cfg, old, p->prot);
			if (!s2pt_pte_valid(old) || pte == old)
				continue;
			s2pt__tlbi_leaf(pt, ctx->addr + i * span, ctx->level, S2PT_TLBI_PERM);
			ctx->ptep[i] = pte; /* non-zero to non-zero: the count does not move */
		}
		return 0;
	}
	if (!s2pt_pte_valid(ctx->old))
		return 0;
	pte = s2pt_pte_with_prot(&pt->cfg, ctx->old, p->prot);
	if (pte == ctx->old)
		return 0;
	/* KVM's attribute walker changes whole leaves; exact semantics split a partial one. */
	if ((ctx->addr >= ctx->start && ctx->addr + span <= ctx->end) || s2pt__kvm(pt)) {
		s2pt__tlbi_leaf(pt, ctx->addr, ctx->level, S2PT_TLBI_PERM);
		*ctx->ptep = pte; /* non-zero to non-zero: the count does not move */
		return 0;
	}
	return s2pt__split_block(ctx, 1);
}

/* Execute permission on a Device leaf is refused, as at map time. */
static int device_exec_cb(const struct s2pt_walk_ctx *ctx, uint32_t visit)
{
	(void)visit;
	for (uint32_t i = 0; i < ctx->nr; i++) {
		uint64_t pte = ctx->ptep[i];

		if (s2pt_pte_valid(pte) &&
		    s2pt_memattr_is_device(
			    s2pt_memattr_decode(&ctx->pt->cfg, s2pt_pte_memattr_field(pte))))
			return S2PT_EINVAL;
	}
	return 0;
}

int s2pt_protect(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint32_t prot)
{
	struct protect_args p = {.prot = prot};
	const struct s2pt_walker w = {
		.cb = protect_cb,
		.arg = &p,
		.flags = S2PT_WALK_LEAF | S2PT_WALK_LEAF_RUN,
	};
	uint64_t need;
	int ret;

	if (pt->destroyed)
		return S2PT_EDESTROYED;
	if (s2pt__check_prot(&pt->cfg, prot))
		return S2PT_EINVAL;
	ret = s2pt__check_range(pt, ipa, size);
	if (ret || size == 0)
		return ret;
	if ((prot & S2PT_PROT_X) && !s2pt_is_stage1(&pt->cfg)) {
		const struct s2pt_walker dw = {
			.cb = device_exec_cb,
			.flags = S2PT_WALK_LEAF | S2PT_WALK_LEAF_RUN,
		};

		ret = s2pt_walk(pt, ipa, size, &dw);
		if (ret)
			return ret;
	}
	need = s2pt__bound_settles(pt, ipa, ipa + size) || s2pt__kvm(pt)
		       ? 0
		       : s2pt__need_edges(pt, pt->root, pt->cfg.root_entries,
				    pt->cfg.start_level, ipa, ipa + size, prot);
	ret = s2pt__walk_reserved(pt, ipa, size, need, &w);
	return ret;
}

struct af_args {
	int af;
	uint64_t young;
};

static int af_cb(const struct s2pt_walk_ctx *ctx, uint32_t visit)
{
	struct af_args *a = ctx->arg;
	uint64_t span = s2pt__span(&ctx->pt->cfg, ctx->level);

	(void)visit;
	for (uint32_t i = 0; i < ctx->nr; i++) {
		uint64_t pte = ctx->ptep[i];

		if (!s2pt_pte_valid(pte))
			continue;
		if (pte & S2PT_PTE_AF)
			a->young++;
		if (a->af) {
			/* An entry with AF = 0 is never held in a TLB: setting it needs no TLBI. */
			ctx->ptep[i] = pte | S2PT_PTE_AF;
		} else if (pte & S2PT_PTE_AF) {
			ctx->ptep[i] = pte & ~S2PT_PTE_AF;
			s2pt__tlbi_leaf(ctx->pt, ctx->addr + i * span, ctx->level, S2PT_TLBI_AF);
		}
	}
	return 0;
}

int s2pt_set_af(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, int af, uint64_t *young)
{
	struct af_args a = {.af = af};
	const struct s2pt_walker w = {
		.cb = af_cb,
		.arg = &a,
		.flags = S2PT_WALK_LEAF | S2PT_WALK_LEAF_RUN,
	};
	int ret;

	if (young)
		*young = 0;
	if (pt->destroyed)
		return S2PT_EDESTROYED;
	ret = s2pt__check_range(pt, ipa, size);
	if (ret)
		return ret;
	ret = s2pt_walk(pt, ipa, size, &w);
	if (young)
		*young = a.young;
	return ret;
}
