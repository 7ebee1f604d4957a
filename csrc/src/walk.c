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

static int walk_table(struct walk_data *wd, uint64_t *table, uint64_t nentries, int level)
{
	uint32_t shift = s2pt_level_shift(&wd->pt->cfg, level);
	uint64_t idx = (wd->addr >> shift) & (nentries - 1);

	for (; idx < nentries && wd->addr < wd->end; idx++) {
		int ret = visit(wd, &table[idx], level);

		if (ret)
			return ret;
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

	if (visit_kind == S2PT_WALK_LEAF) {
		if (ctx->old)
			s2pt__set_pte(pt, ctx->ptep, 0);
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
		.flags = S2PT_WALK_LEAF | S2PT_WALK_TABLE_POST,
	};

	return s2pt_walk(pt, ipa, size, &w);
}
