/*
 * Tables in memory s2pt did not write: a pool over a caller's buffer whatever it holds, and
 * adopting a stage-2 tree found there (a simulator's guest RAM, an image from elsewhere).
 */
#include <stdlib.h>

#include "internal.h"

static int page_is_zero(const struct s2pt_pool *pool, uint32_t index)
{
	const uint64_t *page = s2pt__page_ptr(pool, index);
	uint64_t words = s2pt__granule(pool) / 8, any = 0;

	for (uint64_t w = 0; w < words; w++)
		any |= page[w];
	return any == 0;
}

int s2pt_pool_init_foreign(struct s2pt_pool *pool, void *mem, uint32_t pages, void *meta,
			   uint64_t base_pa, uint32_t granule)
{
	int ret = s2pt_pool_init(pool, mem, pages, meta, base_pa, granule);

	if (ret)
		return ret;
	/* Every page is below the high-water mark: zero ones are free, the lowest handed out
	 * first (the stack is popped from its end); the others hold data s2pt must never
	 * overwrite, so they are reserved until s2pt_pgtable_attach() adopts them as tables. */
	pool->hiwater = pages;
	for (uint32_t i = pages; i-- > 0;) {
		if (page_is_zero(pool, i)) {
			pool->free_stack[pool->nfree++] = i;
		} else {
			pool->refcount[i] = 1;
			pool->owner[i] = S2PT_OWNER_RESERVED;
			pool->used++;
		}
	}
	return 0;
}

int s2pt_pgtable_attach(struct s2pt_pgtable *pt, const struct s2pt_config *cfg,
			struct s2pt_pool *pool, uint64_t root_pa, char *msg, size_t msg_len)
{
	struct s2pt_pgtable tmp;
	uint64_t index, pages = 0, root_bytes;
	uint8_t *seen;
	uint32_t owner, nfree = 0, old_hiwater;
	int ret;

	if (msg && msg_len)
		msg[0] = '\0';
	if (!pt || !cfg || !pool)
		return S2PT_EINVAL;
	if (cfg->granule_shift != pool->granule_shift ||
	    s2pt__pool_end_pa(pool) > (1ull << cfg->pa_bits))
		return S2PT_ECONFIG;
	/* VTTBR_EL2.BADDR: aligned to the concatenated root's size, and inside the pool. */
	root_bytes = (uint64_t)cfg->root_tables << cfg->granule_shift;
	if (root_pa & (root_bytes - 1))
		return S2PT_EALIGN;
	if (root_pa < pool->base_pa ||
	    root_pa - pool->base_pa + root_bytes > s2pt__pool_end_pa(pool) - pool->base_pa)
		return S2PT_ERANGE;
	if (pool->next_owner == S2PT_OWNER_RESERVED)
		return S2PT_ENOMEM;
	index = (root_pa - pool->base_pa) >> pool->granule_shift;
	memset(&tmp, 0, sizeof(tmp));
	tmp.cfg = *cfg;
	tmp.pool = pool;
	tmp.root_index = (uint32_t)index;
	tmp.root = s2pt__page_ptr(pool, (uint32_t)index);
	tmp.root_pa = root_pa;
	seen = calloc(pool->capacity, 1);
	if (!seen)
		return S2PT_ENOMEM;
	/* Everything is checked before anything is recorded: a refused tree changes nothing. */
	ret = s2pt__tree_adoptable(&tmp, seen, &pages, msg, msg_len);
	if (ret) {
		free(seen);
		return ret;
	}
	owner = pool->next_owner++;
	old_hiwater = pool->hiwater;
	for (uint32_t i = pool->hiwater; i < pool->capacity; i++)
		if (seen[i])
			pool->hiwater = i + 1;
	for (uint32_t i = 0; i < pool->hiwater; i++) {
		uint64_t *table = s2pt__page_ptr(pool, i);
		uint64_t entries = s2pt__granule(pool) / 8, hint = 0;
		uint32_t shift = s2pt__hint_shift(pool), count = 1;

		if (!seen[i])
			continue;
		/* KVM's count: 1 + non-zero entries; the hint exact, as the engine keeps it. */
		for (uint64_t e = 0; e < entries; e++) {
			if (table[e]) {
				count++;
				hint |= 1ull << (e >> shift);
			}
		}
		if (!pool->refcount[i])
			pool->used++;
		pool->refcount[i] = count;
		pool->owner[i] = owner;
		pool->hint[i] = hint;
	}
	/* The free stack without the adopted pages (and with the pages the mark passed over),
	 * keeping its order. */
	for (uint32_t k = 0; k < pool->nfree; k++)
		if (!seen[pool->free_stack[k]])
			pool->free_stack[nfree++] = pool->free_stack[k];
	pool->nfree = nfree;
	/* Pages the mark passed over are zero (above it nothing was ever written): free, the
	 * lowest handed out first. */
	for (uint32_t i = pool->hiwater; i-- > old_hiwater;)
		if (!seen[i])
			pool->free_stack[pool->nfree++] = i;
	free(seen);
	memset(pt, 0, sizeof(*pt));
	pt->cfg = *cfg;
	pt->pool = pool;
	pt->owner = owner;
	pt->root = s2pt__page_ptr(pool, (uint32_t)index);
	pt->root_pa = root_pa;
	pt->root_index = (uint32_t)index;
	pt->table_pages = (uint32_t)pages;
	pool->live_tables++;
	return 0;
}
