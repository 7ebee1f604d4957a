/* The generic range walker shared by every range operation. */
#include "internal.h"

struct walk_data {
	struct s2pt_pgtable *pt;
	const struct s2pt_walker *w;
	uint64_t start;
	uint64_t end;
	uint64_t addr; /* next IPA to visit; always advanced to the end of an entry's span */
};

static int walk_table(struct walk_data *wd, uint64_t *table, uint64_t nentries, int level);

/*
 * Prefetch the parts of a table page that its occupancy hint says can hold entries.
 * always_inline: as a function of its own, GCC finds it free of side effects and drops it.
 */
static inline __attribute__((always_inline)) void prefetch_table(const struct s2pt_pool *pool, uint32_t index)
{
	const uint8_t *page = (const uint8_t *)s2pt__page_ptr(pool, index);
	uint32_t part_shift = pool->granule_shift - 6;
	uint64_t parts = pool->hint[index];

	for (int k = 0; parts && k < 16; k++, parts &= parts - 1)
		__builtin_prefetch(page + ((uint64_t)__builtin_ctzll(parts) << part_shift));
}

static int visit(struct walk_data *wd, uint64_t *ptep, int level)
{
	struct s2pt_pgtable *pt = wd->pt;
	uint64_t span = s2pt__span(&pt->cfg, level);
	struct s2pt_walk_ctx ctx = {
		.pt = pt,
		.ptep = ptep,
		.old = *ptep,
		.start = wd->start,
		.end = wd->end,
		/* Align down: a range starting mid-entry must not carry its offset into the
		 * next entry (the kernel's 2021 walker fix). */
		.addr = wd->addr & ~(span - 1),
		.level = level,
		.nr = 1,
		.arg = wd->w->arg,
	};
	uint32_t flags = wd->w->flags;
	int table = s2pt_pte_is_table(ctx.old, level);
	int ret;

	if (table && (flags & S2PT_WALK_TABLE_PRE)) {
		ret = wd->w->cb(&ctx, S2PT_WALK_TABLE_PRE);
		if (ret)
			return ret;
		/* Re-read: the visit may have replaced the table by a leaf and freed it. */
		table = s2pt_pte_is_table(*ptep, level);
	} else if (!table && (flags & S2PT_WALK_LEAF)) {
		ret = wd->w->cb(&ctx, S2PT_WALK_LEAF);
		if (ret)
			return ret;
		/* Re-read: the visit may have installed a table (split, new table). */
		table = s2pt_pte_is_table(*ptep, level);
	}
	if (!table) {
		wd->addr = ctx.addr + span;
		return 0;
	}
	ret = walk_table(wd, s2pt__child(pt, *ptep), 1ull << pt->cfg.stride, level + 1);
	if (ret)
		return ret;
	if (flags & S2PT_WALK_TABLE_POST) {
		ctx.old = *ptep;
		ret = wd->w->cb(&ctx, S2PT_WALK_TABLE_POST);
	}
	return ret;
}

/*
 * One S2PT_WALK_LEAF_RUN visit for the non-table entries from table[idx] on that the range
 * covers whole, then a descent into any entry the visit turned into a table.
 * Return: entries consumed (> 0), or a negative code.
 */
static int64_t visit_run(struct walk_data *wd, uint64_t *table, uint64_t idx, uint64_t nentries,
			 int level, uint64_t addr, uint64_t span)
{
	struct s2pt_pgtable *pt = wd->pt;
	uint64_t n = 1;
	struct s2pt_walk_ctx ctx;
	int ret;

	/* A run stays inside one table page (a concatenated root is several, each counted)
	 * and inside the range. */
	uint64_t limit = nentries - idx;
	uint64_t page_left = (1ull << pt->cfg.stride) - (idx & ((1ull << pt->cfg.stride) - 1));
	uint64_t in_range = (wd->end - addr) / span;

	limit = limit < page_left ? limit : page_left;
	limit = limit < in_range ? limit : in_range;
	if (level == 3)
		n = limit; /* no tables at the last level: no need to read the entries */
	else
		while (n < limit && (table[idx + n] & S2PT_PTE_TYPE_MASK) != S2PT_PTE_TYPE_TABLE)
			n++;
	ctx = (struct s2pt_walk_ctx){
		.pt = pt,
		.ptep = &table[idx],
		.old = 0, /* not read: the run visit reads its entries (this one could be a miss) */
		.start = wd->start,
		.end = wd->end,
		.addr = addr,
		.level = level,
		.nr = (uint32_t)n,
		.arg = wd->w->arg,
	};
	ret = wd->w->cb(&ctx, S2PT_WALK_LEAF_RUN);
	if (ret < 0)
		return ret;
	/* 1: the visit turned entries into tables, to be walked in order. */
	if (ret == 1) {
		for (uint64_t i = 0; i < n; i++) {
			if (!s2pt_pte_is_table(table[idx + i], level))
				continue;
			wd->addr = addr + i * span;
			ret = walk_table(wd, s2pt__child(pt, table[idx + i]), 1ull << pt->cfg.stride,
					 level + 1);
			if (!ret && (wd->w->flags & S2PT_WALK_TABLE_POST)) {
				ctx.ptep = &table[idx + i];
				ctx.old = table[idx + i];
				ctx.addr = addr + i * span;
				ctx.nr = 1;
				ret = wd->w->cb(&ctx, S2PT_WALK_TABLE_POST);
			}
			if (ret)
				return ret;
		}
	}
	wd->addr = addr + n * span;
	return (int64_t)n;
}

static int walk_table(struct walk_data *wd, uint64_t *table, uint64_t nentries, int level)
{
	uint32_t shift = s2pt_level_shift(&wd->pt->cfg, level);
	uint64_t span = 1ull << shift;
	uint64_t idx = (wd->addr >> shift) & (nentries - 1);
	int runs = (wd->w->flags & S2PT_WALK_LEAF_RUN) != 0;

	while (idx < nentries && wd->addr < wd->end) {
		uint64_t addr = wd->addr & ~(span - 1);
		int ret;

		/* Last-level entries are never tables: no need to read one (a cache miss). */
		if (runs && addr >= wd->start && addr + span <= wd->end &&
		    (level == 3 || !s2pt_pte_is_table(table[idx], level))) {
			int64_t n = visit_run(wd, table, idx, nentries, level, addr, span);

			if (n < 0)
				return (int)n;
			idx += (uint64_t)n;
			continue;
		}
		/* Tables are scattered through the pool: start fetching the next child while this
		 * one is visited, so a walk over many sparse tables overlaps their cache misses. */
		if (level < 3 && idx + 1 < nentries && s2pt_pte_is_table(table[idx + 1], level))
			prefetch_table(wd->pt->pool, s2pt__child_index(wd->pt, table[idx + 1]));
		ret = visit(wd, &table[idx], level);
		if (ret)
			return ret;
		idx++;
	}
	return 0;
}

int s2pt_walk(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size,
	      const struct s2pt_walker *walker)
{
	struct walk_data wd = {
		.pt = pt,
		.w = walker,
		.start = ipa,
		.end = ipa + size,
		.addr = ipa,
	};

	if (pt->destroyed)
		return S2PT_EDESTROYED;
	if (size == 0)
		return 0;
	/* The concatenated root is one table of root_entries descriptors. */
	return walk_table(&wd, pt->root, pt->cfg.root_entries, pt->cfg.start_level);
}

/* Clear everything in a range and free the tables that lie entirely inside it. */
static int clear_cb(const struct s2pt_walk_ctx *ctx, uint32_t visit_kind)
{
	struct s2pt_pgtable *pt = ctx->pt;

	if (visit_kind != S2PT_WALK_TABLE_POST) {
		uint32_t cleared = 0;

		for (uint32_t i = 0; i < ctx->nr; i++) {
			cleared += ctx->ptep[i] != 0;
			ctx->ptep[i] = 0;
		}
		*s2pt__page_count(pt, ctx->ptep) -= cleared;
		return 0;
	}
	/* TABLE_POST: only tables whose whole span is inside; the ancestors stay. */
	if (ctx->addr >= ctx->start && ctx->addr + s2pt__span(&pt->cfg, ctx->level) <= ctx->end) {
		uint32_t child = s2pt__child_index(pt, ctx->old);

		S2PT_ASSERT(pt->pool->refcount[child] == 1);
		s2pt__set_pte(pt, ctx->ptep, 0);
		s2pt__table_free(pt, child);
	}
	return 0;
}

int s2pt__clear_range(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size)
{
	const struct s2pt_walker w = {
		.cb = clear_cb,
		.flags = S2PT_WALK_LEAF | S2PT_WALK_LEAF_RUN | S2PT_WALK_TABLE_POST,
	};

	return s2pt_walk(pt, ipa, size, &w);
}
