/* Read-only whole-table queries: stats, the leaf list and the invariant check. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static int stats_cb(const struct s2pt_walk_ctx *ctx, uint32_t visit)
{
	struct s2pt_stats *st = ctx->arg;
	uint64_t span = s2pt__span(&ctx->pt->cfg, ctx->level);

	if (visit == S2PT_WALK_TABLE_PRE) {
		st->table_pages_by_level[ctx->level + 1]++;
		st->table_pages++;
	} else if (s2pt_pte_valid(ctx->old)) {
		st->leaves_by_level[ctx->level]++;
		st->mapped_bytes += span;
	} else if (ctx->old) {
		st->annotated_bytes += span;
	}
	return 0;
}

int s2pt_stats(const struct s2pt_pgtable *pt, struct s2pt_stats *out)
{
	const struct s2pt_walker w = {
		.cb = stats_cb,
		.arg = out,
		.flags = S2PT_WALK_LEAF | S2PT_WALK_TABLE_PRE,
	};

	memset(out, 0, sizeof(*out));
	if (pt->destroyed)
		return S2PT_EDESTROYED;
	out->table_pages = pt->cfg.root_tables;
	/* A five-level stage 1's level -1 root is counted with the level-0 tables. */
	out->table_pages_by_level[pt->cfg.start_level < 0 ? 0 : pt->cfg.start_level] =
		pt->cfg.root_tables;
	/* The walker takes a mutable table; these visits only read. */
	return s2pt_walk((struct s2pt_pgtable *)pt, 0, 1ull << pt->cfg.ipa_bits, &w);
}

struct leaves_args {
	struct s2pt_leaf *out;
	size_t cap;
	size_t n;
	uint64_t resume;
};

#define LEAVES_FULL 1 /* positive: stops the walk without being an error code */

static int leaves_cb(const struct s2pt_walk_ctx *ctx, uint32_t visit)
{
	struct leaves_args *la = ctx->arg;
	const struct s2pt_pgtable *pt = ctx->pt;
	struct s2pt_leaf *leaf;

	(void)visit;
	if (!s2pt_pte_valid(ctx->old))
		return 0;
	if (la->n == la->cap) {
		la->resume = ctx->addr;
		return LEAVES_FULL;
	}
	leaf = &la->out[la->n++];
	leaf->ipa = ctx->addr;
	leaf->size = s2pt__span(&pt->cfg, ctx->level);
	leaf->pa = s2pt_pte_addr(&pt->cfg, ctx->old) & ~(leaf->size - 1);
	leaf->pte = ctx->old;
	leaf->level = ctx->level;
	leaf->prot = s2pt_pte_prot(&pt->cfg, ctx->old);
	leaf->memattr = s2pt_memattr_decode(&pt->cfg, s2pt_pte_memattr_field(ctx->old));
	leaf->af = !!(ctx->old & S2PT_PTE_AF);
	leaf->sw = s2pt_pte_sw(ctx->old);
	return 0;
}

int s2pt_leaves(const struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, struct s2pt_leaf *out,
		size_t cap, size_t *n, uint64_t *next_ipa)
{
	struct leaves_args la = {.out = out, .cap = cap, .resume = ipa + size};
	const struct s2pt_walker w = {.cb = leaves_cb, .arg = &la, .flags = S2PT_WALK_LEAF};
	int ret;

	*n = 0;
	*next_ipa = ipa + size;
	if (pt->destroyed)
		return S2PT_EDESTROYED;
	ret = s2pt__check_range(pt, ipa, size);
	if (ret)
		return ret;
	if (cap == 0)
		return S2PT_EINVAL;
	ret = s2pt_walk((struct s2pt_pgtable *)pt, ipa, size, &w);
	*n = la.n;
	*next_ipa = la.resume;
	return ret == LEAVES_FULL ? 0 : ret;
}

/* ---- check ---------------------------------------------------------------------------- */

struct checker {
	const struct s2pt_pgtable *pt;
	uint8_t *seen; /* per pool page */
	uint64_t reachable;
	/* s2pt_pgtable_attach(): the tree is not the pool's yet, so pages must be free or
	 * reserved, and counts, hints and owners are not checked (they are rebuilt after). */
	int adopt;
	/* The descriptor being checked, named in the message (0 between descriptors). */
	uint64_t desc_pa, desc_ipa;
	int desc_level, at_desc;
	char *msg;
	size_t msg_len;
};

__attribute__((format(printf, 2, 3))) static int fail(struct checker *c, const char *fmt, ...)
{
	if (c->msg && c->msg_len) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(c->msg, c->msg_len, fmt, ap);
		va_end(ap);
		if (c->at_desc) {
			size_t used = strlen(c->msg);

			snprintf(c->msg + used, c->msg_len - used,
				 " (descriptor at PA %#llx, level %d, IPA %#llx)",
				 (unsigned long long)c->desc_pa, c->desc_level,
				 (unsigned long long)c->desc_ipa);
		}
	}
	return S2PT_EINVARIANT;
}

/* Leaf attribute bits beyond the address and type that are well formed for the VM. */
static const char *leaf_attrs_wrong(const struct s2pt_config *cfg, uint64_t pte)
{
	if (s2pt_memattr_name(cfg, s2pt_pte_memattr_field(pte)) < 0)
		return "reserved MemAttr";
	if ((pte & S2PT_PTE_SH & ~cfg->oa_hi_mask) != (cfg->leaf_sh & ~cfg->oa_hi_mask))
		return "not inner shareable";
	if (s2pt_is_stage1(cfg)) /* PXN is a bit of its own; NS (bit 5) is not written */
		return (pte & (1ull << 5)) ? "NS set" : NULL;
	if ((pte & S2PT_PTE_XN0) && !(cfg->flags & S2PT_CONFIG_XNX))
		return "XN[0] set without FEAT_XNX";
	return NULL;
}

/* Check one table page (or one page of the root) and everything below it. */
static int check_table(struct checker *c, uint32_t index, uint64_t nentries, int level,
		       uint64_t base_ipa, int is_root)
{
	const struct s2pt_pgtable *pt = c->pt;
	const struct s2pt_config *cfg = &pt->cfg;
	const struct s2pt_pool *pool = pt->pool;
	const uint64_t *table = s2pt__page_ptr(pool, index);
	uint64_t per_page = 1ull << cfg->stride;
	uint64_t span = s2pt__span(cfg, level);
	uint64_t addr_bits = s2pt_addr_bits(cfg);
	uint64_t page_pa = s2pt__page_pa(pool, index);
	uint64_t nonzero = 0;
	int ret;

	if (c->seen[index])
		return fail(c, "table page %#llx reachable twice", (unsigned long long)page_pa);
	c->seen[index] = 1;
	c->reachable++;
	if (c->adopt) {
		if (pool->refcount[index] && pool->owner[index] != S2PT_OWNER_RESERVED)
			return fail(c, "table page %#llx (level %d) is already in use by page table %u",
				    (unsigned long long)page_pa, level, pool->owner[index]);
	} else if (pool->owner[index] != pt->owner)
		return fail(c, "table page %#llx owned by %u, not by this table (%u)",
			    (unsigned long long)page_pa, pool->owner[index], pt->owner);
	for (uint64_t i = 0; i < per_page; i++) {
		uint64_t pte = table[i];
		uint64_t ipa = base_ipa + i * span;
		uint64_t addr = s2pt_pte_addr(cfg, pte);
		const char *wrong;

		if (!pte)
			continue;
		c->at_desc = 1;
		c->desc_pa = page_pa + i * 8;
		c->desc_level = level;
		c->desc_ipa = ipa;
		nonzero++;
		if (!c->adopt && !(pool->hint[index] >> (i >> s2pt__hint_shift(pool)) & 1))
			return fail(c, "entry %llu of table page %#llx is not in its occupancy hint",
				    (unsigned long long)i, (unsigned long long)page_pa);
		if (i >= nentries)
			return fail(c, "entry %llu of root page %#llx lies beyond the IPA space",
				    (unsigned long long)i, (unsigned long long)page_pa);
		if (!s2pt_pte_valid(pte)) {
			/* Only owner annotations, at the last level where s2pt_set_owner() puts them. */
			if ((pte & ~S2PT_PTE_OWNER) || level != 3)
				return fail(c, "invalid entry %#llx at IPA %#llx level %d is not an "
					    "owner annotation", (unsigned long long)pte,
					    (unsigned long long)ipa, level);
			continue;
		}
		if (addr >> cfg->pa_bits)
			return fail(c, "address of %#llx beyond the %u-bit PA size",
				    (unsigned long long)pte, cfg->pa_bits);
		if (s2pt_pte_is_table(pte, level)) {
			if (pte & ~(addr_bits | S2PT_PTE_TYPE_MASK))
				return fail(c, "table descriptor %#llx has stray bits",
					    (unsigned long long)pte);
			if (!s2pt__pa_in_pool(pool, addr))
				return fail(c, "table descriptor %#llx points outside the pool",
					    (unsigned long long)pte);
			ret = check_table(c, s2pt__child_index(pt, pte), per_page, level + 1, ipa, 0);
			if (ret)
				return ret;
			continue;
		}
		/* At the last level 0b01 is reserved: hardware treats it as invalid. */
		if (level == 3 && (pte & S2PT_PTE_TYPE_MASK) != S2PT_PTE_TYPE_PAGE)
			return fail(c, "level-3 entry %#llx uses the reserved type 0b01",
				    (unsigned long long)pte);
		if (level < 3 && level < cfg->min_block_level)
			return fail(c, "block %#llx at level %d where blocks are not allowed",
				    (unsigned long long)pte, level);
		if (pte & ~(addr_bits | s2pt_leaf_attr_mask(cfg) | S2PT_PTE_TYPE_MASK))
			return fail(c, "leaf %#llx has stray bits", (unsigned long long)pte);
		if (addr & (span - 1))
			return fail(c, "leaf %#llx at level %d: output address not aligned to %#llx",
				    (unsigned long long)pte, level, (unsigned long long)span);
		wrong = leaf_attrs_wrong(cfg, pte);
		if (wrong)
			return fail(c, "leaf %#llx: %s", (unsigned long long)pte, wrong);
	}
	c->at_desc = 0;
	if (!c->adopt && pool->refcount[index] != 1 + nonzero)
		return fail(c, "table page %#llx (level %d): count %u, expected 1 + %llu entries",
			    (unsigned long long)page_pa, level, pool->refcount[index],
			    (unsigned long long)nonzero);
	if (!is_root && nonzero == 0)
		return fail(c, c->adopt ? "empty table page %#llx at level %d (s2pt frees empty "
					  "tables: unlink it first)"
					: "empty table page %#llx at level %d was not freed",
			    (unsigned long long)page_pa, level);
	return 0;
}

/* The pool's own bookkeeping: free stack, free pages zero, counts. @seen: capacity bytes. */
static int pool_problem(struct checker *c, const struct s2pt_pool *pool, uint8_t *seen)
{
	uint64_t words = s2pt__granule(pool) / 8;
	uint32_t used = 0;

	if (pool->hiwater > pool->capacity || pool->nfree > pool->hiwater)
		return fail(c, "pool high-water mark %u / %u free of %u pages", pool->hiwater,
			    pool->nfree, pool->capacity);
	memset(seen, 0, pool->capacity);
	for (uint32_t i = 0; i < pool->nfree; i++) {
		uint32_t idx = pool->free_stack[i];
		const uint64_t *page;

		if (idx >= pool->hiwater || seen[idx])
			return fail(c, "free stack entry %u is out of range or repeated", idx);
		seen[idx] = 1;
		if (pool->refcount[idx] || pool->owner[idx])
			return fail(c, "free page %u has count %u and owner %u", idx,
				    pool->refcount[idx], pool->owner[idx]);
		page = s2pt__page_ptr(pool, idx);
		for (uint64_t w = 0; w < words; w++)
			if (page[w])
				return fail(c, "free page %u is not zero", idx);
	}
	for (uint32_t i = 0; i < pool->hiwater; i++) {
		if (pool->refcount[i]) {
			used++;
			if (pool->owner[i] == S2PT_OWNER_RESERVED ? pool->refcount[i] != 1
								  : !pool->owner[i] ||
									    pool->owner[i] >= pool->next_owner)
				return fail(c, "page %u has count %u but owner %u", i,
					    pool->refcount[i], pool->owner[i]);
		} else if (!seen[i]) {
			return fail(c, "page %u is neither allocated nor on the free stack", i);
		}
	}
	if (used != pool->used || pool->nfree + used != pool->hiwater)
		return fail(c, "pool counts: %u used (recorded %u), %u free, high-water %u", used,
			    pool->used, pool->nfree, pool->hiwater);
	return 0;
}

static int check_pool(struct checker *c)
{
	const struct s2pt_pool *pool = c->pt->pool;
	uint32_t mine = 0;
	int ret = pool_problem(c, pool, c->seen);

	if (ret)
		return ret;
	for (uint32_t i = 0; i < pool->hiwater; i++)
		mine += pool->refcount[i] && pool->owner[i] == c->pt->owner;
	if (mine != c->pt->table_pages)
		return fail(c, "%u pages carry this table's owner id, it holds %u", mine,
			    c->pt->table_pages);
	return 0;
}

int s2pt_pool_check(const struct s2pt_pool *pool, char *msg, size_t msg_len)
{
	struct checker c = {.msg = msg, .msg_len = msg_len};
	uint8_t *seen;
	int ret;

	if (msg && msg_len)
		msg[0] = '\0';
	if (!pool)
		return S2PT_EINVAL;
	seen = calloc(pool->capacity, 1);
	if (!seen)
		return S2PT_ENOMEM;
	ret = pool_problem(&c, pool, seen);
	free(seen);
	return ret;
}

int s2pt_check(const struct s2pt_pgtable *pt, char *msg, size_t msg_len)
{
	const struct s2pt_config *cfg = &pt->cfg;
	struct checker c = {.pt = pt, .msg = msg, .msg_len = msg_len};
	uint64_t per_page = 1ull << cfg->stride;
	uint64_t root_span = per_page * s2pt__span(cfg, cfg->start_level);
	int ret;

	if (msg && msg_len)
		msg[0] = '\0';
	if (pt->destroyed)
		return S2PT_EDESTROYED;
	c.seen = calloc(pt->pool->capacity, 1);
	if (!c.seen)
		return S2PT_ENOMEM;
	if (pt->root_pa & (((uint64_t)cfg->root_tables << cfg->granule_shift) - 1)) {
		ret = fail(&c, "root %#llx not aligned to its size", (unsigned long long)pt->root_pa);
		goto out;
	}
	for (uint32_t i = 0; i < cfg->root_tables; i++) {
		uint64_t remaining = cfg->root_entries - i * per_page;

		ret = check_table(&c, pt->root_index + i, remaining < per_page ? remaining : per_page,
				  cfg->start_level, i * root_span, 1);
		if (ret)
			goto out;
	}
	if (c.reachable != pt->table_pages) {
		ret = fail(&c, "%llu table pages reachable, %u recorded",
			   (unsigned long long)c.reachable, pt->table_pages);
		goto out;
	}
	ret = check_pool(&c);
out:
	free(c.seen);
	return ret;
}

int s2pt__tree_adoptable(const struct s2pt_pgtable *pt, uint8_t *seen, uint64_t *pages,
			 char *msg, size_t msg_len)
{
	const struct s2pt_config *cfg = &pt->cfg;
	struct checker c = {.pt = pt, .seen = seen, .msg = msg, .msg_len = msg_len, .adopt = 1};
	uint64_t per_page = 1ull << cfg->stride;
	uint64_t root_span = per_page * s2pt__span(cfg, cfg->start_level);

	for (uint32_t i = 0; i < cfg->root_tables; i++) {
		uint64_t remaining = cfg->root_entries - i * per_page;
		int ret = check_table(&c, pt->root_index + i,
				      remaining < per_page ? remaining : per_page, cfg->start_level,
				      i * root_span, 1);

		if (ret)
			return ret;
	}
	*pages = c.reachable;
	return 0;
}
