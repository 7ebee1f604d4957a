/* Helpers shared by the unit tests (see s2pt_testlib.h). No tests here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s2pt_testlib.h"

int fx_pool(struct fx *f, uint32_t granule, uint32_t pages, uint64_t base_pa)
{
	int ret;

	memset(f, 0, sizeof(*f));
	f->mem_bytes = (size_t)pages * granule;
	f->mem = s2pt_mem_alloc(f->mem_bytes);
	f->meta = calloc(1, s2pt_pool_meta_bytes(pages) + 4);
	if (!f->mem || !f->meta)
		return S2PT_ENOMEM;
	ret = s2pt_pool_init(&f->pool, f->mem, pages, f->meta, base_pa, granule);
	f->have_pool = ret == 0;
	return ret;
}

int fx_init(struct fx *f, uint32_t ipa_bits, uint32_t granule, uint32_t pa_bits, uint32_t pages,
	    uint64_t base_pa)
{
	return fx_init_flags(f, ipa_bits, granule, pa_bits, pages, base_pa, 0);
}

/* A pool of @pages at @base and tables of @cfg in it (@ret: the config's result). */
static int fx_tables(struct fx *f, int ret, const struct s2pt_config *cfg, uint32_t granule,
		     uint32_t pages, uint64_t base)
{
	if (ret) {
		memset(f, 0, sizeof(*f));
		return ret;
	}
	ret = fx_pool(f, granule, pages, base);
	if (ret)
		return ret;
	f->cfg = *cfg;
	ret = s2pt_pgtable_init(&f->pt, &f->cfg, &f->pool);
	f->have_pt = ret == 0;
	return ret;
}

int fx_init_flags(struct fx *f, uint32_t ipa_bits, uint32_t granule, uint32_t pa_bits,
		  uint32_t pages, uint64_t base_pa, uint32_t flags)
{
	struct s2pt_config cfg;
	int ret = s2pt_config_init(&cfg, ipa_bits, granule, pa_bits, 1, flags);

	return fx_tables(f, ret, &cfg, granule, pages, base_pa);
}

int fx_init_s1(struct fx *f, uint32_t va_bits, uint32_t granule, uint32_t ips_bits,
	       uint32_t pages, uint64_t base_ipa, uint32_t asid, uint32_t flags)
{
	struct s2pt_config cfg;
	int ret = s2pt_s1_config_init(&cfg, va_bits, granule, ips_bits, asid, flags);

	return fx_tables(f, ret, &cfg, granule, pages, base_ipa);
}

void fx_log(struct fx *f, uint32_t cap)
{
	if (cap > sizeof(f->events) / sizeof(f->events[0]))
		cap = sizeof(f->events) / sizeof(f->events[0]);
	memset(f->events, 0, sizeof(f->events));
	f->log.events = f->events;
	f->log.capacity = cap;
	f->log.count = 0;
	f->log.overflowed = 0;
	f->pt.tlbi = &f->log;
}

void fx_fini(struct fx *f)
{
	if (f->have_pt && !f->pt.destroyed)
		s2pt_pgtable_destroy(&f->pt);
	s2pt_mem_free(f->mem, f->mem_bytes);
	free(f->meta);
	f->mem = NULL;
	f->meta = NULL;
	f->have_pt = f->have_pool = 0;
}

uint32_t a_shift(uint32_t granule_shift, int level)
{
	return (granule_shift - 3) * (uint32_t)(4 - level) + 3;
}

uint64_t a_leaf(uint64_t pa, int level, uint32_t prot, uint32_t memattr, int af)
{
	uint64_t d = pa | (level == 3 ? A_TYPE_TABLE : A_TYPE_BLOCK) | A_MEMATTR(memattr) | A_SH_INNER;

	if (prot & S2PT_PROT_R)
		d |= A_S2AP_R;
	if (prot & S2PT_PROT_W)
		d |= A_S2AP_W;
	if (!(prot & S2PT_PROT_X))
		d |= A_XN;
	if (af)
		d |= A_AF;
	return d;
}

uint64_t *pa_ptr(const struct s2pt_pool *pool, uint64_t pa)
{
	return (uint64_t *)(pool->mem + (pa - pool->base_pa));
}

uint64_t rd_desc(const struct s2pt_pool *pool, uint64_t table_pa, uint64_t index)
{
	return pa_ptr(pool, table_pa)[index];
}

uint32_t nonzero_entries(const struct s2pt_pool *pool, uint64_t table_pa)
{
	uint64_t words = (1ull << pool->granule_shift) / 8;
	const uint64_t *t = pa_ptr(pool, table_pa);
	uint32_t n = 0;

	for (uint64_t i = 0; i < words; i++)
		n += t[i] != 0;
	return n;
}

uint32_t rc_at(const struct s2pt_pool *pool, uint64_t pa)
{
	uint32_t c = 0;

	if (s2pt_pool_refcount(pool, pa, &c))
		return 0xffffffffu;
	return c;
}

int sw_walk(const struct s2pt_pgtable *pt, uint64_t ipa, struct sw_step *steps, int *leaf_level)
{
	const struct s2pt_config *c = &pt->cfg;
	const struct s2pt_pool *pool = pt->pool;
	uint32_t g = c->granule_shift;
	uint64_t addr_mask = ((1ull << 48) - 1) & ~((1ull << g) - 1);
	uint64_t table_pa = pt->root_pa;
	int n = 0;

	*leaf_level = -1;
	if (ipa >> c->ipa_bits)
		return 0;
	for (int level = c->start_level; level <= 3; level++) {
		uint64_t idx = ipa >> a_shift(g, level);
		uint64_t d;

		if (level != c->start_level)
			idx &= (1ull << (g - 3)) - 1;
		d = rd_desc(pool, table_pa, idx);
		steps[n++] = (struct sw_step){level, table_pa, idx, d};
		if (!(d & A_VALID))
			return n;
		if (level == 3 || (d & 3) == A_TYPE_BLOCK) {
			*leaf_level = level;
			return n;
		}
		table_pa = d & addr_mask;
		if (table_pa < pool->base_pa ||
		    table_pa >= pool->base_pa + ((uint64_t)pool->capacity << g))
			return n; /* outside the pool: stop (the test will notice) */
	}
	return n;
}

uint64_t sw_desc(const struct s2pt_pgtable *pt, uint64_t ipa, int level)
{
	struct sw_step st[4];
	int leaf;
	int n = sw_walk(pt, ipa, st, &leaf);

	for (int i = 0; i < n; i++)
		if (st[i].level == level)
			return st[i].desc;
	return 0;
}

uint64_t sw_table(const struct s2pt_pgtable *pt, uint64_t ipa, int level)
{
	struct sw_step st[4];
	int leaf;
	int n = sw_walk(pt, ipa, st, &leaf);

	for (int i = 0; i < n; i++)
		if (st[i].level == level)
			return st[i].table_pa;
	return 0;
}

const char *refcount_problem(const struct s2pt_pgtable *pt, char *buf, size_t len)
{
	const struct s2pt_pool *pool = pt->pool;
	uint32_t owned = 0;

	for (uint32_t i = 0; i < pool->capacity; i++) {
		uint64_t pa = pool->base_pa + ((uint64_t)i << pool->granule_shift);
		uint32_t want;

		if (pool->owner[i] != pt->owner)
			continue;
		owned++;
		want = 1 + nonzero_entries(pool, pa);
		if (pool->refcount[i] != want) {
			snprintf(buf, len, "page %#llx: count %u, 1 + entries = %u",
				 (unsigned long long)pa, pool->refcount[i], want);
			return buf;
		}
	}
	if (owned != pt->table_pages) {
		snprintf(buf, len, "%u pages owned, table_pages %u", owned, pt->table_pages);
		return buf;
	}
	return NULL;
}

void snap_take(struct snap *s, const struct fx *f)
{
	memset(s, 0, sizeof(*s));
	s->mem_bytes = (size_t)f->pool.capacity << f->pool.granule_shift;
	s->meta_bytes = s2pt_pool_meta_bytes(f->pool.capacity);
	s->mem = malloc(s->mem_bytes);
	s->meta = malloc(s->meta_bytes);
	if (s->mem)
		memcpy(s->mem, f->pool.mem, s->mem_bytes);
	if (s->meta)
		memcpy(s->meta, f->pool.hint, s->meta_bytes);
	s->pool = f->pool;
	s->table_pages = f->pt.table_pages;
	s->root_pa = f->pt.root_pa;
	s->destroyed = f->pt.destroyed;
	s->log_count = f->log.count;
	s->log_overflowed = f->log.overflowed;
}

const char *snap_diff(const struct snap *s, const struct fx *f)
{
	const struct s2pt_pool *p = &f->pool;

	if (!s->mem || !s->meta)
		return "snapshot allocation failed";
	if (memcmp(s->mem, p->mem, s->mem_bytes))
		return "pool memory";
	if (memcmp(s->meta, p->hint, s->meta_bytes))
		return "hint/refcount/owner/free-stack arrays";
	if (s->pool.used != p->used || s->pool.hiwater != p->hiwater || s->pool.nfree != p->nfree ||
	    s->pool.next_owner != p->next_owner || s->pool.live_tables != p->live_tables ||
	    s->pool.capacity != p->capacity)
		return "pool counters";
	if (s->table_pages != f->pt.table_pages || s->root_pa != f->pt.root_pa ||
	    s->destroyed != f->pt.destroyed)
		return "page-table fields";
	if (s->log_count != f->log.count || s->log_overflowed != f->log.overflowed)
		return "TLBI log";
	return NULL;
}

void snap_free(struct snap *s)
{
	free(s->mem);
	free(s->meta);
	s->mem = s->meta = NULL;
}

uint64_t rng_next(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1Dull;
}

uint64_t rng_below(uint64_t *state, uint64_t n)
{
	return n ? rng_next(state) % n : 0;
}

void check_tlbi(const struct s2pt_tlbi *e, int kind, uint64_t ipa, uint64_t size, int level)
{
	CHECK_EQ(e->kind, kind);
	CHECK_EQ(e->ipa, ipa);
	CHECK_EQ(e->size, size);
	CHECK_EQ(e->level, level);
}
