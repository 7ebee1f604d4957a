/*
 * KVM's leaf operations (kvm_pgtable_stage2_wrprotect / mkyoung / test_clear_young /
 * relax_perms / split) and collapse, on the one range walker; single-address ones on a short
 * walk to the leaf. The policy that decides when to call them lives in mmu.c.
 */
#include "internal.h"

static inline int covered(const struct s2pt_walk_ctx *ctx, uint64_t span)
{
	return ctx->addr >= ctx->start && ctx->addr + span <= ctx->end;
}

int s2pt_get_leaf(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t **ptep, int *level)
{
	const struct s2pt_config *cfg = &pt->cfg;
	uint64_t *table = pt->root;

	if (pt->destroyed)
		return S2PT_EDESTROYED;
	if (ipa >> cfg->ipa_bits)
		return S2PT_ERANGE;
	for (int lv = cfg->start_level;; lv++) {
		uint64_t idx = ipa >> s2pt_level_shift(cfg, lv);
		uint64_t *entry, addr;

		/* The start level indexes the whole concatenated root. */
		entry = &table[lv == cfg->start_level ? idx : idx & ((1ull << cfg->stride) - 1)];
		if (!s2pt_pte_is_table(*entry, lv)) {
			*ptep = entry;
			*level = lv;
			return 0;
		}
		addr = s2pt_pte_addr(cfg, *entry);
		if (S2PT_UNLIKELY(!s2pt__pa_in_pool(pt->pool, addr)))
			return S2PT_EINVARIANT;
		table = s2pt__table_ptr(pt->pool, addr);
	}
}

/* ---- wrprotect ------------------------------------------------------------------------ */

struct wp_args {
	uint64_t changed;
	int whole;
};

static int wrprotect_cb(const struct s2pt_walk_ctx *ctx, uint32_t visit)
{
	struct wp_args *a = ctx->arg;
	uint64_t span = s2pt__span(&ctx->pt->cfg, ctx->level);

	if (visit == S2PT_WALK_LEAF_RUN) {
		/* W goes from the valid writable leaves (bit 7: S2AP[1]). */
		a->changed += s2pt__scan_bit(ctx->ptep, ctx->nr, 7, 1) * span;
		return 0;
	}
	if (!s2pt_pte_valid(ctx->old) || !(ctx->old & S2PT_PTE_S2AP_W))
		return 0;
	if (a->whole || covered(ctx, span)) {
		*ctx->ptep = ctx->old & ~S2PT_PTE_S2AP_W;
		a->changed += span;
		return 0;
	}
	/* A writable block covered in part: keep the rest writable, then descend. */
	return s2pt__split_block(ctx, 1);
}

int s2pt_wrprotect(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint32_t flags,
		   uint64_t *changed)
{
	struct wp_args a = {.whole = (flags & S2PT_LEAF_WHOLE) != 0};
	const struct s2pt_walker w = {
		.cb = wrprotect_cb,
		.arg = &a,
		.flags = S2PT_WALK_LEAF | S2PT_WALK_LEAF_RUN,
	};
	uint64_t need = 0;
	int ret;

	if (changed)
		*changed = 0;
	if (pt->destroyed)
		return S2PT_EDESTROYED;
	/* S2AP[1] is stage 2's write bit; stage 1 changes permissions with s2pt_protect(). */
	if ((flags & ~S2PT_LEAF_WHOLE) || s2pt_is_stage1(&pt->cfg))
		return S2PT_EINVAL;
	ret = s2pt__check_range(pt, ipa, size);
	if (ret || size == 0)
		return ret;
	if (!a.whole && !s2pt__bound_settles(pt, ipa, ipa + size))
		need = s2pt__need_edges(pt, pt->root, pt->cfg.root_entries, pt->cfg.start_level, ipa,
					ipa + size, S2PT__EDGE_WRITABLE);
	ret = s2pt__walk_reserved(pt, ipa, size, need, &w);
	if (changed)
		*changed = a.changed;
	return ret;
}

/* ---- access flag ---------------------------------------------------------------------- */

int s2pt_mkyoung(struct s2pt_pgtable *pt, uint64_t ipa, int *found)
{
	uint64_t *ptep;
	int level, ret;

	*found = 0;
	ret = s2pt_get_leaf(pt, ipa, &ptep, &level);
	if (ret == S2PT_ERANGE)
		return 0; /* beyond the IPA space: a hole */
	if (ret)
		return ret;
	if (s2pt_pte_valid(*ptep)) {
		/* No invalidation: an entry with AF = 0 is never held in a TLB. */
		*ptep |= S2PT_PTE_AF;
		*found = 1;
	}
	return 0;
}

struct young_args {
	uint64_t *bitmap; /* NULL: only find whether any leaf is young */
	int clear;
	int young;
};

/* Set bits [first, first + n) of a bitmap. */
static void set_bits(uint64_t *bitmap, uint64_t first, uint64_t n)
{
	while (n) {
		uint64_t bit = first & 63, take = 64 - bit < n ? 64 - bit : n;
		uint64_t mask = take == 64 ? ~0ull : ((1ull << take) - 1) << bit;

		bitmap[first >> 6] |= mask;
		first += take;
		n -= take;
	}
}

static int young_cb(const struct s2pt_walk_ctx *ctx, uint32_t visit)
{
	struct young_args *a = ctx->arg;
	struct s2pt_pgtable *pt = ctx->pt;
	uint32_t gshift = pt->cfg.granule_shift;
	uint64_t span = s2pt__span(&pt->cfg, ctx->level);

	(void)visit;
	if (!a->bitmap) {
		/* test_clear_young (bit 10: AF); mkold changes no count and needs no TLBI. */
		uint64_t young = a->clear ? s2pt__scan_bit(ctx->ptep, ctx->nr, 10, 1)
					  : s2pt__scan_bit(ctx->ptep, ctx->nr, 10, 0);

		a->young |= young != 0;
		return 0;
	}
	for (uint32_t i = 0; i < ctx->nr; i++) {
		uint64_t pte = ctx->ptep[i];

		if ((pte & (S2PT_PTE_VALID | S2PT_PTE_AF)) != (S2PT_PTE_VALID | S2PT_PTE_AF))
			continue;
		a->young = 1;
		if (a->bitmap) {
			uint64_t lo = ctx->addr + i * span, hi = lo + span;

			lo = lo > ctx->start ? lo : ctx->start;
			hi = hi < ctx->end ? hi : ctx->end;
			set_bits(a->bitmap, (lo - ctx->start) >> gshift, (hi - lo) >> gshift);
		}
		/* Whole leaves, in place; no invalidation (KVM's mkold issues none). */
		if (a->clear)
			ctx->ptep[i] = pte & ~S2PT_PTE_AF;
	}
	return 0;
}

static int young_walk(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, struct young_args *a)
{
	const struct s2pt_walker w = {
		.cb = young_cb,
		.arg = a,
		.flags = S2PT_WALK_LEAF | S2PT_WALK_LEAF_RUN,
	};
	int ret;

	if (pt->destroyed)
		return S2PT_EDESTROYED;
	ret = s2pt__check_range(pt, ipa, size);
	if (ret)
		return ret;
	return s2pt_walk(pt, ipa, size, &w);
}

int s2pt_test_clear_young(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, int mkold,
			  int *young)
{
	struct young_args a = {.clear = mkold != 0};
	int ret = young_walk(pt, ipa, size, &a);

	*young = a.young;
	return ret;
}

int s2pt_young_bitmap(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, int clear,
		      uint64_t *bitmap)
{
	struct young_args a = {.bitmap = bitmap, .clear = clear != 0};
	uint64_t pages;
	int ret;

	if (pt->destroyed)
		return S2PT_EDESTROYED;
	if (size && !bitmap)
		return S2PT_EINVAL;
	ret = s2pt__check_range(pt, ipa, size);
	if (ret)
		return ret;
	pages = size >> pt->cfg.granule_shift;
	if (pages)
		memset(bitmap, 0, ((pages + 63) / 64) * sizeof(uint64_t));
	return young_walk(pt, ipa, size, &a);
}

/* ---- relax_perms ---------------------------------------------------------------------- */

int s2pt_relax_perms(struct s2pt_pgtable *pt, uint64_t ipa, uint32_t prot, int *found)
{
	uint64_t *ptep, pte;
	uint32_t now;
	int level, ret;

	*found = 0;
	if (pt->destroyed)
		return S2PT_EDESTROYED;
	/* KVM's fault-path operation on stage-2 permissions; stage 1 uses s2pt_protect(). */
	if (s2pt__check_prot(&pt->cfg, prot) || s2pt_is_stage1(&pt->cfg))
		return S2PT_EINVAL;
	ret = s2pt_get_leaf(pt, ipa, &ptep, &level);
	if (ret == S2PT_ERANGE)
		return 0;
	if (ret)
		return ret;
	pte = *ptep;
	if (!s2pt_pte_valid(pte)) {
		/* The walk met no leaf (-EAGAIN in KVM: a race with an unmap). KVM flushes then
		 * too, with no level hint: the fault came from an entry the TLB may still hold. */
		s2pt__tlbi(pt, S2PT_TLBI_IPA, ipa & ~((1ull << pt->cfg.granule_shift) - 1),
			   1ull << pt->cfg.granule_shift, S2PT_TLBI_LEVEL_UNKNOWN, S2PT_TLBI_PERM);
		return 0;
	}
	now = s2pt_pte_prot(&pt->cfg, pte) | prot;
	if (s2pt__check_prot(&pt->cfg, now))
		return S2PT_EINVAL;
	if ((prot & S2PT_PROT_X) &&
	    s2pt_memattr_is_device(s2pt_memattr_decode(&pt->cfg, s2pt_pte_memattr_field(pte))))
		return S2PT_EINVAL;
	/* Adding permissions needs no break-before-make; non-zero to non-zero: no count move. */
	*ptep = s2pt_pte_set_prot(pte, now);
	*found = 1;
	/* KVM flushes the IPA from the local TLB whenever it reached a leaf. */
	s2pt__tlbi_leaf(pt, ipa & ~(s2pt__span(&pt->cfg, level) - 1), level, S2PT_TLBI_PERM);
	return 0;
}

/* ---- split ---------------------------------------------------------------------------- */

/* Tables a full split of one block at @level down to the last level needs. */
static uint64_t full_split(const struct s2pt_config *cfg, int level)
{
	uint64_t n = 0, per = 1;

	for (int lv = level; lv < 3; lv++, per <<= cfg->stride)
		n += per;
	return n;
}

/* Tables needed to split to pages exactly the part [a, b) of a block at @level. */
static uint64_t part_split(const struct s2pt_config *cfg, int level, uint64_t a, uint64_t b)
{
	uint64_t span, first, last, n = 1;

	if (level == 2)
		return 1; /* one table of pages */
	span = s2pt__span(cfg, level + 1);
	first = a & ~(span - 1);
	last = (b - 1) & ~(span - 1);
	if (first == last)
		return n + ((a == first && b == first + span) ? full_split(cfg, level + 1)
							       : part_split(cfg, level + 1, a, b));
	/* The two ends may be partial; the entries between them are split whole. */
	if (a != first) {
		n += part_split(cfg, level + 1, a, first + span);
		first += span;
	}
	if (b != last + span)
		n += part_split(cfg, level + 1, last, b);
	else
		last += span;
	return n + ((last - first) / span) * full_split(cfg, level + 1);
}

struct split_count {
	uint64_t need;
};

static int split_count_cb(const struct s2pt_walk_ctx *ctx, uint32_t visit)
{
	struct split_count *c = ctx->arg;
	const struct s2pt_config *cfg = &ctx->pt->cfg;
	uint64_t span = s2pt__span(cfg, ctx->level);

	if (ctx->level == 3)
		return 0;
	for (uint32_t i = 0; i < ctx->nr; i++) {
		uint64_t pte = ctx->ptep[i];
		uint64_t lo = ctx->addr + i * span;

		if (!s2pt_pte_valid(pte))
			continue;
		if (visit == S2PT_WALK_LEAF_RUN || covered(ctx, span) || s2pt__kvm(ctx->pt))
			c->need += full_split(cfg, ctx->level);
		else
			c->need += part_split(cfg, ctx->level, lo > ctx->start ? lo : ctx->start,
					      lo + span < ctx->end ? lo + span : ctx->end);
	}
	return 0;
}

static int split_cb(const struct s2pt_walk_ctx *ctx, uint32_t visit);

static const struct s2pt_walker split_walker = {
	.cb = split_cb,
	.flags = S2PT_WALK_LEAF | S2PT_WALK_LEAF_RUN,
};

/* Split one valid block (entry @one): into a table holding it, which the walk then enters. */
static int split_one(const struct s2pt_walk_ctx *one)
{
	struct s2pt_pgtable *pt = one->pt;
	uint64_t span = s2pt__span(&pt->cfg, one->level);
	int ret = s2pt__split_block(one, 1);

	/* KVM splits the whole block, also the part outside the range: walk all of it now. */
	if (!ret && s2pt__kvm(pt) && !covered(one, span))
		ret = s2pt_walk(pt, one->addr, span, &split_walker);
	return ret;
}

static int split_cb(const struct s2pt_walk_ctx *ctx, uint32_t visit)
{
	int split = 0;

	if (ctx->level == 3)
		return 0;
	if (visit == S2PT_WALK_LEAF)
		return s2pt_pte_valid(ctx->old) ? split_one(ctx) : 0;
	for (uint32_t i = 0; i < ctx->nr; i++) {
		struct s2pt_walk_ctx one = s2pt__run_entry(ctx, i);
		int ret;

		if (!s2pt_pte_valid(one.old))
			continue;
		ret = split_one(&one);
		if (ret)
			return ret;
		split = 1;
	}
	return split; /* 1: descend into the new tables */
}

/* The pages a split of the (validated) range needs; the count walk only reads. */
static int split_need(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint64_t *need)
{
	struct split_count c = {0};
	const struct s2pt_walker count = {
		.cb = split_count_cb,
		.arg = &c,
		.flags = S2PT_WALK_LEAF | S2PT_WALK_LEAF_RUN,
	};
	int ret = s2pt_walk(pt, ipa, size, &count);

	*need = c.need;
	return ret;
}

int s2pt_split_pages(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint64_t *pages)
{
	int ret;

	*pages = 0;
	if (pt->destroyed)
		return S2PT_EDESTROYED;
	ret = s2pt__check_range(pt, ipa, size);
	return ret ? ret : split_need(pt, ipa, size, pages);
}

int s2pt_split(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint64_t *tables)
{
	uint64_t need = 0;
	int ret;

	if (tables)
		*tables = 0;
	if (pt->destroyed)
		return S2PT_EDESTROYED;
	ret = s2pt__check_range(pt, ipa, size);
	if (ret || size == 0)
		return ret;
	/* KVM's semantics split whole blocks, beyond the range the bound is about: count. */
	if (s2pt__kvm(pt) || !s2pt__bound_settles(pt, ipa, ipa + size)) {
		ret = split_need(pt, ipa, size, &need);
		if (ret)
			return ret;
	}
	ret = s2pt__walk_reserved(pt, ipa, size, need, &split_walker);
	if (tables)
		*tables = pt->allocs;
	return ret;
}

/* ---- collapse ------------------------------------------------------------------------- */

struct collapse_args {
	uint64_t blocks;
};

/*
 * The block that can stand for the table @child (entries at @level): every entry a valid leaf
 * with the same attributes, output addresses one run aligned to the parent's span. 0 if none.
 */
static uint64_t merged_block(const struct s2pt_pgtable *pt, const uint64_t *child, int level)
{
	const struct s2pt_config *cfg = &pt->cfg;
	uint64_t first = child[0], step = s2pt__span(cfg, level);
	uint64_t attrs, pa;

	if (!s2pt_pte_valid(first) || s2pt_pte_is_table(first, level) ||
	    (level == 3 && !(first & S2PT_PTE_TYPE)))
		return 0;
	attrs = s2pt_pte_attrs(cfg, first);
	pa = s2pt_pte_addr(cfg, first);
	if (pa & (s2pt__span(cfg, level - 1) - 1))
		return 0;
	/* Comparing whole descriptors covers the 52-bit formats' split address fields. */
	for (uint64_t i = 1; i < (1ull << cfg->stride); i++)
		if (child[i] != s2pt_leaf_pte(cfg, pa + i * step, attrs, level))
			return 0;
	return s2pt_leaf_pte(cfg, pa, attrs, level - 1);
}

static int collapse_cb(const struct s2pt_walk_ctx *ctx, uint32_t visit)
{
	struct s2pt_pgtable *pt = ctx->pt;
	struct collapse_args *a = ctx->arg;
	uint64_t span = s2pt__span(&pt->cfg, ctx->level);
	uint64_t block;
	int ret;

	(void)visit; /* TABLE_POST only: the children were collapsed first */
	if (ctx->level < pt->cfg.min_block_level || !covered(ctx, span))
		return 0;
	block = merged_block(pt, s2pt__child(pt, ctx->old), ctx->level + 1);
	if (!block)
		return 0;
	ret = s2pt__clear_range(pt, ctx->addr, span);
	if (ret)
		return ret;
	/* Break-before-make over the span, as map's coalesce (KVM's table-pre path). */
	s2pt__tlbi_coalesce(pt, ctx->addr, span);
	s2pt__set_pte(pt, ctx->ptep, block);
	a->blocks++;
	return 0;
}

int s2pt_collapse(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint64_t *blocks)
{
	struct collapse_args a = {0};
	const struct s2pt_walker w = {
		.cb = collapse_cb,
		.arg = &a,
		.flags = S2PT_WALK_TABLE_POST,
	};
	int ret;

	if (blocks)
		*blocks = 0;
	if (pt->destroyed)
		return S2PT_EDESTROYED;
	ret = s2pt__check_range(pt, ipa, size);
	if (ret || size == 0)
		return ret;
	ret = s2pt_walk(pt, ipa, size, &w);
	if (blocks)
		*blocks = a.blocks;
	return ret;
}
