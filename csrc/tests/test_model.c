/*
 * Randomised model test: map / unmap / protect sequences against a page-granular shadow of
 * what the architecture must translate. After every operation: every page of the window
 * translates (or faults) as the shadow says, every valid leaf that changed is covered by a
 * TLB-invalidation event, maps use the largest leaf each aligned chunk allows, counts and
 * s2pt_check() hold. Every few operations the operation is first retried with 0, 1, 2, ...
 * free pool pages (the rest taken by dummy page tables): each failure must be S2PT_ENOMEM
 * with nothing changed, and the first success must come at exactly the number of pages the
 * operation allocates.
 */
#include <stdlib.h>
#include <string.h>

#include "s2pt_testlib.h"

#define RW (S2PT_PROT_R | S2PT_PROT_W)

struct shadow_page {
	uint64_t pa;
	uint8_t valid, prot, memattr, af;
};

struct model {
	struct fx f;
	uint64_t g, big;     /* granule, largest block */
	uint64_t wstart, wend;
	uint64_t npages;
	struct shadow_page *sh, *before;
	uint64_t spans[4];   /* leaf sizes from the largest block down to the page */
	int nspans;
	uint64_t rng;
	struct s2pt_pgtable *dummies;
	uint32_t ndummies;
	struct s2pt_config dummy_cfg;
};

static uint64_t span_at(const struct s2pt_config *c, int level)
{
	return 1ull << a_shift(c->granule_shift, level);
}

static int model_init(struct model *m, uint32_t ipa, uint32_t granule, uint32_t pages,
		      uint64_t center, uint64_t seed)
{
	int r;

	memset(m, 0, sizeof(*m));
	r = fx_init(&m->f, ipa, granule, 48, pages, 0x100000000ull);
	if (r)
		return r;
	fx_log(&m->f, 256);
	m->g = granule;
	m->big = span_at(&m->f.cfg, m->f.cfg.min_block_level);
	for (int l = m->f.cfg.min_block_level; l <= 3; l++)
		m->spans[m->nspans++] = span_at(&m->f.cfg, l);
	m->wstart = center - m->big - m->big / 8;
	m->wend = center + m->big + m->big / 8;
	m->npages = (m->wend - m->wstart) / m->g;
	m->sh = calloc(m->npages, sizeof(*m->sh));
	m->before = calloc(m->npages, sizeof(*m->before));
	m->dummies = calloc(pages, sizeof(*m->dummies));
	m->rng = seed;
	r = s2pt_config_init(&m->dummy_cfg, 36, granule, 48, 2, 0);
	if (r)
		return r;
	return m->sh && m->before && m->dummies ? 0 : S2PT_ENOMEM;
}

static void model_fini(struct model *m)
{
	fx_fini(&m->f);
	free(m->sh);
	free(m->before);
	free(m->dummies);
}

static uint64_t rnd(struct model *m, uint64_t n)
{
	return rng_below(&m->rng, n);
}

/* A range inside the window: aligned to a random leaf size, sometimes nudged by pages. */
static void pick_range(struct model *m, uint64_t *ipa, uint64_t *size)
{
	uint64_t unit = m->spans[rnd(m, (uint64_t)m->nspans)];
	uint64_t first = (m->wstart + unit - 1) & ~(unit - 1);
	uint64_t slots = (m->wend - first) / unit;
	uint64_t a = first + rnd(m, slots) * unit;
	uint64_t s = (1 + rnd(m, 3)) * unit;

	if (rnd(m, 3) == 0)
		a += m->g * rnd(m, 3);
	if (rnd(m, 3) == 0)
		s += m->g * rnd(m, 3);
	if (rnd(m, 4) == 0 && s > m->g)
		s -= m->g;
	if (a >= m->wend)
		a = m->wend - m->g;
	if (a + s > m->wend)
		s = m->wend - a;
	*ipa = a;
	*size = s;
}

static int expected_leaf_level(const struct model *m, uint64_t page_ipa, uint64_t ipa,
			       uint64_t size, uint64_t pa, int blocks)
{
	const struct s2pt_config *c = &m->f.pt.cfg;

	if (!blocks)
		return 3;
	for (int l = c->min_block_level; l < 3; l++) {
		uint64_t sp = span_at(c, l);
		uint64_t chunk = page_ipa & ~(sp - 1);

		if (chunk >= ipa && chunk + sp <= ipa + size && !((pa - ipa) & (sp - 1)))
			return l;
	}
	return 3;
}

static void compare_all(struct model *m, const char *what, uint64_t opno)
{
	struct s2pt_leaf leaves[512];
	uint64_t cur = m->wstart, seen = 0, valid = 0, bad = 0;
	struct s2pt_stats st;

	for (uint64_t i = 0; i < m->npages; i++)
		valid += m->sh[i].valid;
	while (cur < m->wend) {
		size_t n = 0;
		uint64_t next = 0;
		int r = s2pt_leaves(&m->f.pt, cur, m->wend - cur, leaves, 512, &n, &next);

		CHECK_EQ(r, 0);
		if (r)
			return;
		for (size_t k = 0; k < n; k++) {
			const struct s2pt_leaf *l = &leaves[k];
			uint64_t lo = l->ipa > m->wstart ? l->ipa : m->wstart;
			uint64_t hi = l->ipa + l->size < m->wend ? l->ipa + l->size : m->wend;

			for (uint64_t p = lo; p < hi; p += m->g) {
				const struct shadow_page *s = &m->sh[(p - m->wstart) / m->g];

				seen++;
				if (!s->valid || s->pa != l->pa + (p - l->ipa) || s->prot != l->prot ||
				    s->memattr != l->memattr || s->af != l->af) {
					if (bad++ < 3)
						CHECK_MSG(0, "op %llu (%s): ipa %#llx: leaf pa %#llx prot %u attr %#x af %u, shadow valid %u pa %#llx prot %u attr %#x af %u",
							  (unsigned long long)opno, what, (unsigned long long)p,
							  (unsigned long long)(l->pa + (p - l->ipa)), l->prot,
							  l->memattr, l->af, s->valid, (unsigned long long)s->pa,
							  s->prot, s->memattr, s->af);
				}
			}
		}
		if (n < 512 || next >= m->wend)
			break;
		cur = next;
	}
	CHECK_MSG(seen == valid, "op %llu (%s): %llu pages mapped, shadow has %llu",
		  (unsigned long long)opno, what, (unsigned long long)seen, (unsigned long long)valid);
	REQUIRE_EQ(s2pt_stats(&m->f.pt, &st), 0);
	CHECK_EQ(st.mapped_bytes, valid * m->g);
	CHECK_EQ(st.table_pages, m->f.pt.table_pages);
	CHECK_INVARIANTS(&m->f.pt);
	CHECK_REFCOUNTS(&m->f.pt);
}

static void sample_translate(struct model *m, uint64_t opno)
{
	for (int i = 0; i < 32; i++) {
		uint64_t p = m->wstart + rnd(m, m->npages) * m->g;
		uint64_t off = rnd(m, m->g);
		const struct shadow_page *s = &m->sh[(p - m->wstart) / m->g];
		uint32_t acc = (uint32_t)rnd(m, 3);
		struct s2pt_translation t;
		struct s2pt_fault flt;
		int r = s2pt_translate(&m->f.pt, p + off, acc, &t, &flt);
		int allowed;

		if (!s->valid) {
			CHECK_MSG(r == S2PT_EFAULT && flt.kind == S2PT_FAULT_TRANSLATION,
				  "op %llu: ipa %#llx unmapped but translate = %d kind %u",
				  (unsigned long long)opno, (unsigned long long)(p + off), r,
				  r ? flt.kind : 0);
			continue;
		}
		if (!s->af) {
			CHECK_MSG(r == S2PT_EFAULT && flt.kind == S2PT_FAULT_ACCESS_FLAG,
				  "op %llu: ipa %#llx AF clear but translate = %d",
				  (unsigned long long)opno, (unsigned long long)(p + off), r);
			continue;
		}
		allowed = acc == S2PT_ACCESS_READ    ? (s->prot & S2PT_PROT_R) != 0
			  : acc == S2PT_ACCESS_WRITE ? (s->prot & S2PT_PROT_W) != 0
						     : (s->prot & S2PT_PROT_X) != 0;
		if (!allowed) {
			CHECK_MSG(r == S2PT_EFAULT && flt.kind == S2PT_FAULT_PERMISSION &&
					  (flt.fsc & 0x3c) == 0x0c && (int)(flt.fsc & 3) == flt.level,
				  "op %llu: ipa %#llx access %u prot %u: translate = %d",
				  (unsigned long long)opno, (unsigned long long)(p + off), acc, s->prot, r);
			continue;
		}
		CHECK_MSG(r == 0 && t.pa == s->pa + off,
			  "op %llu: ipa %#llx: translate = %d pa %#llx, want %#llx",
			  (unsigned long long)opno, (unsigned long long)(p + off), r,
			  (unsigned long long)(r ? 0 : t.pa), (unsigned long long)(s->pa + off));
	}
}

enum op_kind { OP_MAP, OP_UNMAP, OP_PROTECT };

struct op {
	enum op_kind kind;
	uint64_t ipa, size, pa;
	uint32_t prot, memattr, flags;
};

static int do_op(struct model *m, const struct op *o, uint64_t *unmapped)
{
	switch (o->kind) {
	case OP_MAP:
		return s2pt_map(&m->f.pt, o->ipa, o->pa, o->size, o->prot, o->memattr, o->flags);
	case OP_UNMAP:
		return s2pt_unmap(&m->f.pt, o->ipa, o->size, unmapped);
	default:
		return s2pt_protect(&m->f.pt, o->ipa, o->size, o->prot);
	}
}

static void fill_pool(struct model *m)
{
	while (s2pt_pool_free_pages(&m->f.pool) > 0) {
		int r = s2pt_pgtable_init(&m->dummies[m->ndummies], &m->dummy_cfg, &m->f.pool);

		if (r)
			break;
		m->ndummies++;
	}
}

static void drop_dummy(struct model *m)
{
	if (m->ndummies)
		s2pt_pgtable_destroy(&m->dummies[--m->ndummies]);
}

/* Run @o with 0, 1, 2, ... free pages. Returns the final result. */
static int do_op_exact_pool(struct model *m, const struct op *o, uint64_t *unmapped,
			    uint64_t opno)
{
	uint32_t k = 0;
	int r;

	fill_pool(m);
	for (;;) {
		struct snap s;

		CHECK_EQ(s2pt_pool_free_pages(&m->f.pool), k);
		snap_take(&s, &m->f);
		r = do_op(m, o, unmapped);
		if (r != S2PT_ENOMEM) {
			snap_free(&s);
			break;
		}
		{
			const char *d = snap_diff(&s, &m->f);

			CHECK_MSG(d == NULL, "op %llu: ENOMEM with %u free pages changed %s",
				  (unsigned long long)opno, k, d);
		}
		snap_free(&s);
		if (!m->ndummies)
			break;
		drop_dummy(m);
		k++;
	}
	if (r == 0)
		CHECK_MSG(m->f.pt.allocs == k,
			  "op %llu: failed with %u free pages but allocated %u", (unsigned long long)opno,
			  k ? k - 1 : 0, m->f.pt.allocs);
	while (m->ndummies)
		drop_dummy(m);
	return r;
}

static void random_op(struct model *m, struct op *o)
{
	static const uint32_t prots[] = {0, S2PT_PROT_R, S2PT_PROT_W, RW, S2PT_PROT_X,
					 S2PT_PROT_R | S2PT_PROT_X, S2PT_PROT_ALL};
	static const uint32_t attrs[] = {S2PT_MEMATTR_NORMAL, S2PT_MEMATTR_NORMAL,
					 S2PT_MEMATTR_NORMAL_NC, S2PT_MEMATTR_NORMAL_WT,
					 S2PT_MEMATTR_DEVICE_nGnRE, S2PT_MEMATTR_DEVICE_nGnRnE};
	uint64_t w = rnd(m, 10);

	memset(o, 0, sizeof(*o));
	o->kind = w < 5 ? OP_MAP : w < 8 ? OP_UNMAP : OP_PROTECT;
	pick_range(m, &o->ipa, &o->size);
	o->prot = prots[rnd(m, 7)];
	if (o->kind == OP_MAP) {
		uint64_t d = (1 + rnd(m, 64)) * m->big;

		switch (rnd(m, 4)) {
		case 0: d += m->spans[m->nspans > 1 ? 1 : 0]; break;
		case 1: d += m->g * (1 + rnd(m, 7)); break;
		default: break;
		}
		o->pa = o->ipa + d;
		o->memattr = attrs[rnd(m, 6)];
		if ((o->memattr & 0xc) == 0)
			o->prot &= ~S2PT_PROT_X;
		if (rnd(m, 5) == 0 && o->size <= 4 * m->spans[m->nspans > 1 ? 1 : 0])
			o->flags |= S2PT_MAP_NO_BLOCKS;
		if (rnd(m, 6) == 0)
			o->flags |= S2PT_MAP_NO_AF;
	}
}

static void run_model(uint32_t ipa, uint32_t granule, uint32_t pages, uint64_t center,
		      uint64_t seed, int nops)
{
	struct model m;
	int r = model_init(&m, ipa, granule, pages, center, seed);

	if (r) {
		CHECK_EQ(r, 0);
		model_fini(&m);
		return;
	}
	for (int n = 0; n < nops && minitest_failures() < 20; n++) {
		struct op o;
		uint64_t first, last, unmapped = 0, want_unmapped = 0;
		int expect = 0, device_x = 0;
		const char *name;

		random_op(&m, &o);
		name = o.kind == OP_MAP ? "map" : o.kind == OP_UNMAP ? "unmap" : "protect";
		first = (o.ipa - m.wstart) / m.g;
		last = (o.ipa + o.size - m.wstart) / m.g;
		memcpy(m.before + first, m.sh + first, (last - first) * sizeof(*m.sh));
		for (uint64_t p = first; p < last; p++) {
			want_unmapped += m.sh[p].valid ? m.g : 0;
			if (m.sh[p].valid && (m.sh[p].memattr & 0xc) == 0)
				device_x = 1;
		}
		if (o.kind == OP_PROTECT && (o.prot & S2PT_PROT_X) && device_x)
			expect = S2PT_EINVAL;
		m.f.log.count = 0;
		m.f.log.overflowed = 0;
		if (expect == 0 && n % 8 == 7) {
			r = do_op_exact_pool(&m, &o, &unmapped, (uint64_t)n);
		} else {
			struct snap s;

			if (expect)
				snap_take(&s, &m.f);
			r = do_op(&m, &o, &unmapped);
			if (expect) {
				CHECK_UNCHANGED(&s, &m.f);
				snap_free(&s);
			}
		}
		CHECK_MSG(r == expect,
			  "op %d %s ipa %#llx size %#llx pa %#llx prot %u attr %#x flags %#x: %d, want %d",
			  n, name, (unsigned long long)o.ipa, (unsigned long long)o.size,
			  (unsigned long long)o.pa, o.prot, o.memattr, o.flags, r, expect);
		if (r)
			continue;
		/* Update the shadow. */
		for (uint64_t p = first; p < last; p++) {
			struct shadow_page *s = &m.sh[p];

			if (o.kind == OP_MAP) {
				s->valid = 1;
				s->pa = o.pa + (p - first) * m.g;
				s->prot = (uint8_t)(o.prot & (S2PT_PROT_R | S2PT_PROT_W)) |
					  (o.prot & S2PT_PROT_X ? S2PT_PROT_X : 0);
				s->memattr = (uint8_t)o.memattr;
				s->af = !(o.flags & S2PT_MAP_NO_AF);
			} else if (o.kind == OP_UNMAP) {
				memset(s, 0, sizeof(*s));
			} else if (s->valid) {
				s->prot = (uint8_t)o.prot;
			}
		}
		if (o.kind == OP_UNMAP)
			CHECK_EQ(unmapped, want_unmapped);
		/* Every valid page whose translation changed is covered by an event. */
		for (uint64_t p = first; p < last; p++) {
			const struct shadow_page *b = &m.before[p], *a = &m.sh[p];
			uint64_t ipa_p = m.wstart + p * m.g;
			int covered = m.f.log.overflowed;

			if (!b->valid || memcmp(a, b, sizeof(*a)) == 0)
				continue;
			for (uint32_t e = 0; e < m.f.log.count && !covered; e++) {
				const struct s2pt_tlbi *ev = &m.f.events[e];

				covered = ev->kind == S2PT_TLBI_VMID ||
					  (ipa_p >= ev->ipa && ipa_p - ev->ipa < ev->size);
			}
			if (!covered) {
				CHECK_MSG(0, "op %d %s: changed page %#llx not invalidated", n, name,
					  (unsigned long long)ipa_p);
				break;
			}
		}
		/* Maps use the largest leaf each aligned chunk allows. */
		if (o.kind == OP_MAP) {
			uint64_t step = (last - first) / 64 + 1;

			for (uint64_t p = first; p < last; p += step) {
				uint64_t ipa_p = m.wstart + p * m.g;
				struct s2pt_translation t;
				struct s2pt_fault flt;
				int want = expected_leaf_level(&m, ipa_p, o.ipa, o.size, o.pa,
							       !(o.flags & S2PT_MAP_NO_BLOCKS));

				if (s2pt_lookup(&m.f.pt, ipa_p, &t, &flt) || t.level != want) {
					CHECK_MSG(0, "op %d map ipa %#llx size %#llx pa %#llx: page %#llx leaf level %d, want %d",
						  n, (unsigned long long)o.ipa, (unsigned long long)o.size,
						  (unsigned long long)o.pa, (unsigned long long)ipa_p,
						  t.level, want);
					break;
				}
			}
		}
		compare_all(&m, name, (uint64_t)n);
		sample_translate(&m, (uint64_t)n);
	}
	/* Tear everything down: back to the roots only. */
	{
		uint64_t un = 0, valid = 0;

		for (uint64_t i = 0; i < m.npages; i++)
			valid += m.sh[i].valid;
		CHECK_EQ(s2pt_unmap(&m.f.pt, m.wstart, m.wend - m.wstart, &un), 0);
		CHECK_EQ(un, valid * m.g);
		CHECK_EQ(m.f.pt.table_pages, m.f.cfg.root_tables);
		CHECK_EQ(m.f.pool.used, m.f.cfg.root_tables);
		CHECK_INVARIANTS(&m.f.pt);
	}
	model_fini(&m);
}

TEST(model_4k_ipa40)
{
	run_model(40, 4096, 2048, GiB(512), 0x9e3779b97f4a7c15ull, 250);
}

TEST(model_4k_ipa44_start_level0)
{
	run_model(44, 4096, 2048, GiB(512), 0x1234567ull, 100);
}

TEST(model_4k_ipa32_start_level2)
{
	run_model(32, 4096, 1024, GiB(1), 0xabcdefull, 300);
}

TEST(model_16k_ipa40)
{
	run_model(40, 16384, 512, GiB(64), 0x5555aaaaull, 250);
}

TEST(model_16k_ipa47_start_level1)
{
	run_model(47, 16384, 512, GiB(64), 0x77777ull, 200);
}

TEST(model_64k_ipa42)
{
	run_model(42, 65536, 256, GiB(2), 0x31415926ull, 250);
}
