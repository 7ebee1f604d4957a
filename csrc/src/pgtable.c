/* Page-table lifetime, argument checks and the TLB-invalidation log. */
#include "internal.h"

int s2pt_pgtable_init(struct s2pt_pgtable *pt, const struct s2pt_config *cfg,
		      struct s2pt_pool *pool)
{
	uint32_t index;
	int ret;

	if (!pt || !cfg || !pool)
		return S2PT_EINVAL;
	if (cfg->granule_shift != pool->granule_shift)
		return S2PT_ECONFIG;
	/* Table addresses are output addresses of the walk: the pool must fit the PA size. */
	if (s2pt__pool_end_pa(pool) > (1ull << cfg->pa_bits))
		return S2PT_ECONFIG;
	ret = s2pt__pages_alloc_aligned(pool, pool->next_owner, cfg->root_tables, &index);
	if (ret)
		return ret;
	memset(pt, 0, sizeof(*pt));
	pt->cfg = *cfg;
	pt->pool = pool;
	pt->owner = pool->next_owner++;
	pt->root = s2pt__page_ptr(pool, index);
	pt->root_pa = s2pt__page_pa(pool, index);
	pt->root_index = index;
	pt->table_pages = cfg->root_tables;
	pool->live_tables++;
	return 0;
}

int s2pt_pgtable_restore(struct s2pt_pgtable *pt, const struct s2pt_config *cfg,
			 struct s2pt_pool *pool, uint64_t root_pa, uint32_t owner, uint64_t frees,
			 char *msg, size_t msg_len)
{
	uint64_t index;
	uint32_t pages = 0;
	int ret;

	if (!pt || !cfg || !pool || owner == 0)
		return S2PT_EINVAL;
	if (cfg->granule_shift != pool->granule_shift ||
	    s2pt__pool_end_pa(pool) > (1ull << cfg->pa_bits))
		return S2PT_ECONFIG;
	if (!s2pt__pa_in_pool(pool, root_pa) || (root_pa - pool->base_pa) & (s2pt__granule(pool) - 1))
		return S2PT_ERANGE;
	index = (root_pa - pool->base_pa) >> pool->granule_shift;
	if (index + cfg->root_tables > pool->hiwater)
		return S2PT_ERANGE;
	for (uint32_t i = 0; i < pool->hiwater; i++)
		pages += pool->refcount[i] && pool->owner[i] == owner;
	memset(pt, 0, sizeof(*pt));
	pt->cfg = *cfg;
	pt->pool = pool;
	pt->owner = owner;
	pt->root = s2pt__page_ptr(pool, (uint32_t)index);
	pt->root_pa = root_pa;
	pt->root_index = (uint32_t)index;
	pt->table_pages = pages;
	pt->frees = frees;
	/* The whole tree (its pages must carry @owner) and the pool's bookkeeping, before anyone uses it. */
	ret = s2pt_check(pt, msg, msg_len);
	if (ret) {
		memset(pt, 0, sizeof(*pt));
		pt->destroyed = 1;
	}
	return ret;
}

/*
 * Clear the table page @index (entries at @level) and free every table below it. Only the
 * parts the occupancy hint marks are read, and only while the page's count says entries
 * are left, so a sparse VM costs what it maps, not the size of its IPA space.
 */
static void clear_page(struct s2pt_pgtable *pt, uint32_t index, int level)
{
	struct s2pt_pool *pool = pt->pool;
	uint64_t *table = (uint64_t *)(pool->mem + ((size_t)index << pool->granule_shift));
	uint32_t shift = s2pt__hint_shift(pool);
	uint64_t parts = pool->hint[index];

	while (parts && pool->refcount[index] > 1) {
		uint32_t b = (uint32_t)__builtin_ctzll(parts);

		parts &= parts - 1;
		for (uint64_t e = (uint64_t)b << shift; e < ((uint64_t)b + 1) << shift; e++) {
			uint64_t pte = table[e];

			if (!pte)
				continue;
			if (s2pt_pte_is_table(pte, level)) {
				uint32_t child = s2pt__child_index(pt, pte);

				clear_page(pt, child, level + 1);
				s2pt__table_free(pt, child);
			}
			table[e] = 0;
			pool->refcount[index]--;
		}
	}
	S2PT_ASSERT(pool->refcount[index] == 1);
	pool->hint[index] = 0;
}

void s2pt_pgtable_destroy(struct s2pt_pgtable *pt)
{
	if (!pt || pt->destroyed)
		return;
	/* Tables are unreachable once the VM is gone: one VMID-wide invalidation covers all. */
	for (uint32_t i = 0; i < pt->cfg.root_tables; i++)
		clear_page(pt, pt->root_index + i, pt->cfg.start_level);
	for (uint32_t i = 0; i < pt->cfg.root_tables; i++)
		s2pt__table_free(pt, pt->root_index + i);
	S2PT_ASSERT(pt->table_pages == 0);
	s2pt__tlbi(pt, S2PT_TLBI_VMID, 0, 0, S2PT_TLBI_LEVEL_UNKNOWN, S2PT_TLBI_DESTROY);
	pt->pool->live_tables--;
	pt->destroyed = 1;
	pt->root = NULL;
}

void s2pt__tlbi_record(struct s2pt_tlbi_log *log, int kind, uint64_t ipa, uint64_t size,
		       int level, uint32_t reason)
{
	struct s2pt_tlbi *ev;

	if (log->count == log->capacity) {
		/* Too many to track one by one: invalidate the whole VMID instead. */
		log->overflowed = 1;
		log->count = 1;
		ev = &log->events[0];
		kind = S2PT_TLBI_VMID;
		ipa = size = 0;
		level = S2PT_TLBI_LEVEL_UNKNOWN;
		reason = S2PT_TLBI_OVERFLOW;
	} else {
		ev = &log->events[log->count++];
	}
	ev->kind = kind;
	ev->ipa = ipa;
	ev->size = size;
	ev->level = level;
	ev->reason = reason;
	ev->bbm = reason == S2PT_TLBI_REPLACE || reason == S2PT_TLBI_SPLIT ||
		  reason == S2PT_TLBI_COALESCE;
}
