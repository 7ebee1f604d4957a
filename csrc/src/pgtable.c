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

void s2pt_pgtable_destroy(struct s2pt_pgtable *pt)
{
	if (!pt || pt->destroyed)
		return;
	/* Tables are unreachable once the VM is gone: one VMID-wide invalidation covers all. */
	(void)s2pt__clear_range(pt, 0, 1ull << pt->cfg.ipa_bits);
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

int s2pt__check_range(const struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size)
{
	uint64_t gmask = (1ull << pt->cfg.granule_shift) - 1;

	if ((ipa | size) & gmask)
		return S2PT_EALIGN;
	/* ipa + size may reach 2^ipa_bits exactly (the kernel's 2021 off-by-one fix), never wrap. */
	if (ipa + size < ipa || ipa + size > (1ull << pt->cfg.ipa_bits))
		return S2PT_ERANGE;
	return 0;
}

int s2pt__check_prot(const struct s2pt_config *cfg, uint32_t prot)
{
	if (prot & ~S2PT_PROT_ALL)
		return S2PT_EINVAL;
	/* Without FEAT_XNX one XN bit governs EL1 and EL0 execute alike. */
	if (!(cfg->flags & S2PT_CONFIG_XNX) && !(prot & S2PT_PROT_PX) != !(prot & S2PT_PROT_UX))
		return S2PT_EINVAL;
	return 0;
}
