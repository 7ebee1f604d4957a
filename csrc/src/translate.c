/*
 * Single-address walks: translate, lookup, their batch form and the step recorder. One tight
 * loop, no callbacks; the checks are the architecture's, in its order.
 */
#include "internal.h"

static inline int fault(struct s2pt_fault *f, uint32_t kind, int level, uint64_t ipa)
{
	f->kind = kind;
	f->level = level;
	f->fsc = s2pt_fsc(kind, level);
	f->ipa = ipa;
	return S2PT_EFAULT;
}

/*
 * Walk @ipa to its leaf. Returns 0 with the leaf and its level, S2PT_EFAULT with a translation
 * or address-size fault, or S2PT_EINVARIANT if a table address leaves the pool (memory
 * changed behind the core's back). @steps, when not NULL, records every descriptor read.
 */
static inline int walk_one(const struct s2pt_pgtable *pt, uint64_t ipa, uint64_t *leaf,
			   int *leaf_level, struct s2pt_fault *f, struct s2pt_walk_step *steps,
			   uint32_t *nsteps)
{
	const struct s2pt_config *cfg = &pt->cfg;
	const struct s2pt_pool *pool = pt->pool;
	uint64_t oa_mask = s2pt_oa_mask(cfg->granule_shift);
	uint64_t pa_limit_mask = ~((1ull << cfg->pa_bits) - 1);
	const uint64_t *table = pt->root;
	uint64_t table_pa = pt->root_pa;
	int level = cfg->start_level;
	uint64_t idx;

	if (nsteps)
		*nsteps = 0;
	/* Input address bits above the IPA size: translation fault, reported at level 0. */
	if (S2PT_UNLIKELY(ipa >> cfg->ipa_bits))
		return fault(f, S2PT_FAULT_TRANSLATION, 0, ipa);
	idx = ipa >> s2pt_level_shift(cfg, level);
	for (;;) {
		uint64_t pte = table[idx];
		uint64_t addr;

		if (steps) {
			steps[*nsteps] = (struct s2pt_walk_step){
				.level = level,
				.index = (uint32_t)idx,
				.table_pa = table_pa,
				.desc_pa = table_pa + idx * 8,
				.desc = pte,
			};
			(*nsteps)++;
		}
		if (!(pte & S2PT_PTE_VALID))
			return fault(f, S2PT_FAULT_TRANSLATION, level, ipa);
		addr = pte & oa_mask;
		if (level == 3 || !(pte & S2PT_PTE_TYPE)) {
			/* Level 3 needs 0b11 (0b01 is reserved); blocks only where the granule allows. */
			if (level == 3 ? !(pte & S2PT_PTE_TYPE) : level < cfg->min_block_level)
				return fault(f, S2PT_FAULT_TRANSLATION, level, ipa);
			if (S2PT_UNLIKELY(addr & pa_limit_mask))
				return fault(f, S2PT_FAULT_ADDRESS_SIZE, level, ipa);
			*leaf = pte;
			*leaf_level = level;
			return 0;
		}
		if (S2PT_UNLIKELY(addr & pa_limit_mask))
			return fault(f, S2PT_FAULT_ADDRESS_SIZE, level, ipa);
		if (S2PT_UNLIKELY(!s2pt__pa_in_pool(pool, addr)))
			return S2PT_EINVARIANT;
		table = s2pt__table_ptr(pool, addr);
		table_pa = addr;
		level++;
		idx = (ipa >> s2pt_level_shift(cfg, level)) & ((1ull << cfg->stride) - 1);
	}
}

static inline void fill(const struct s2pt_pgtable *pt, uint64_t ipa, uint64_t pte, int level,
			struct s2pt_translation *out)
{
	uint64_t span = s2pt__span(&pt->cfg, level);

	out->size = span;
	out->pa = (s2pt_pte_addr(pte, pt->cfg.granule_shift) & ~(span - 1)) | (ipa & (span - 1));
	out->level = level;
	out->prot = s2pt_pte_prot(pte);
	out->memattr = s2pt_pte_memattr(pte);
	out->af = !!(pte & S2PT_PTE_AF);
	out->pte = pte;
}

/* Access flag before permission, as the architecture orders the leaf checks. */
static inline int check_access(uint64_t pte, uint32_t access)
{
	if (!(pte & S2PT_PTE_AF))
		return S2PT_FAULT_ACCESS_FLAG;
	switch (access) {
	case S2PT_ACCESS_READ:
		return (pte & S2PT_PTE_S2AP_R) ? 0 : S2PT_FAULT_PERMISSION;
	case S2PT_ACCESS_WRITE:
		return (pte & S2PT_PTE_S2AP_W) ? 0 : S2PT_FAULT_PERMISSION;
	default:
		/* AArch64 EL2: stage-2 execute depends on XN only, not on read permission. */
		return (pte & S2PT_PTE_XN) ? S2PT_FAULT_PERMISSION : 0;
	}
}

int s2pt_translate(const struct s2pt_pgtable *pt, uint64_t ipa, uint32_t access,
		   struct s2pt_translation *out, struct s2pt_fault *f)
{
	uint64_t pte;
	int level, ret, kind;

	if (pt->destroyed)
		return S2PT_EDESTROYED;
	if (access > S2PT_ACCESS_EXEC)
		return S2PT_EINVAL;
	ret = walk_one(pt, ipa, &pte, &level, f, NULL, NULL);
	if (ret)
		return ret;
	kind = check_access(pte, access);
	if (kind)
		return fault(f, (uint32_t)kind, level, ipa);
	fill(pt, ipa, pte, level, out);
	return 0;
}

int s2pt_lookup(const struct s2pt_pgtable *pt, uint64_t ipa, struct s2pt_translation *out,
		struct s2pt_fault *f)
{
	uint64_t pte;
	int level, ret;

	if (pt->destroyed)
		return S2PT_EDESTROYED;
	ret = walk_one(pt, ipa, &pte, &level, f, NULL, NULL);
	if (ret)
		return ret;
	fill(pt, ipa, pte, level, out);
	return 0;
}

int64_t s2pt_translate_many(const struct s2pt_pgtable *pt, const uint64_t *ipas, size_t n,
			    uint32_t access, uint64_t *pa_out, uint8_t *fsc_out)
{
	int64_t faults = 0;

	if (pt->destroyed)
		return S2PT_EDESTROYED;
	if (access > S2PT_ACCESS_EXEC)
		return S2PT_EINVAL;
	for (size_t i = 0; i < n; i++) {
		struct s2pt_fault f;
		uint64_t pte, ipa = ipas[i];
		int level, kind;
		int ret = walk_one(pt, ipa, &pte, &level, &f, NULL, NULL);

		if (ret == 0) {
			kind = check_access(pte, access);
			if (!kind) {
				uint64_t span = s2pt__span(&pt->cfg, level);

				pa_out[i] = (s2pt_pte_addr(pte, pt->cfg.granule_shift) & ~(span - 1)) |
					    (ipa & (span - 1));
				fsc_out[i] = S2PT_FSC_NONE;
				continue;
			}
			f.fsc = s2pt_fsc((uint32_t)kind, level);
		} else if (ret != S2PT_EFAULT) {
			return ret;
		}
		pa_out[i] = 0;
		fsc_out[i] = (uint8_t)f.fsc;
		faults++;
	}
	return faults;
}

int s2pt_walk_path(const struct s2pt_pgtable *pt, uint64_t ipa, struct s2pt_walk_step *steps,
		   uint32_t *nsteps)
{
	struct s2pt_fault f;
	uint64_t pte;
	int level, ret;

	if (pt->destroyed)
		return S2PT_EDESTROYED;
	ret = walk_one(pt, ipa, &pte, &level, &f, steps, nsteps);
	return ret == S2PT_EINVARIANT ? ret : 0;
}
