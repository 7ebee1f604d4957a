/*
 * Single-address walks: translate, lookup, their batch form and the step recorder. One tight
 * loop, no callbacks; the checks are the architecture's, in its order.
 */
#include "internal.h"

static inline int fault(struct s2pt_fault *f, uint32_t kind, int level, uint64_t ipa,
			uint64_t desc)
{
	f->kind = kind;
	f->level = level;
	f->fsc = s2pt_fsc(kind, level);
	f->ipa = ipa;
	f->desc = desc;
	f->ptep = NULL;
	f->frees = 0;
	return S2PT_EFAULT;
}

enum step_result { STEP_TABLE, STEP_LEAF, STEP_FAULT, STEP_BROKEN };

/*
 * What the walk does with descriptor @pte read at @level: descend (its address in *@addr),
 * stop at a leaf, or fault (*@kind). STEP_BROKEN: a table address outside the pool (memory
 * changed behind the core's back). The one statement of the descriptor rules, shared by the
 * single walk and the interleaved batch walk.
 */
static inline enum step_result step(const struct s2pt_pgtable *pt, uint64_t pte, int level,
				    uint64_t *addr, uint32_t *kind)
{
	const struct s2pt_config *cfg = &pt->cfg;

	*addr = s2pt_pte_addr(cfg, pte);
	if (!(pte & S2PT_PTE_VALID))
		goto translation;
	if (level == 3 || !(pte & S2PT_PTE_TYPE)) {
		/* Level 3 needs 0b11 (0b01 is reserved); blocks only where the granule allows. */
		if (level == 3 ? !(pte & S2PT_PTE_TYPE) : level < cfg->min_block_level)
			goto translation;
		if (S2PT_UNLIKELY(*addr >> cfg->pa_bits)) {
			*kind = S2PT_FAULT_ADDRESS_SIZE;
			return STEP_FAULT;
		}
		return STEP_LEAF;
	}
	if (S2PT_UNLIKELY(*addr >> cfg->pa_bits)) {
		*kind = S2PT_FAULT_ADDRESS_SIZE;
		return STEP_FAULT;
	}
	if (S2PT_UNLIKELY(!s2pt__pa_in_pool(pt->pool, *addr)))
		return STEP_BROKEN;
	return STEP_TABLE;
translation:
	*kind = S2PT_FAULT_TRANSLATION;
	return STEP_FAULT;
}

/* Index of @ipa's entry in the table at @level (the whole concatenated root at the start). */
static inline uint64_t entry_index(const struct s2pt_config *cfg, uint64_t ipa, int level)
{
	uint64_t idx = ipa >> s2pt_level_shift(cfg, level);

	return level == cfg->start_level ? idx : idx & ((1ull << cfg->stride) - 1);
}

/*
 * Walk @ipa to its leaf. Returns 0 with the leaf and its level, S2PT_EFAULT with a translation
 * or address-size fault, or S2PT_EINVARIANT (STEP_BROKEN). @steps, when not NULL, records
 * every descriptor read.
 */
static inline int walk_one(const struct s2pt_pgtable *pt, uint64_t ipa, uint64_t *leaf,
			   int *leaf_level, struct s2pt_fault *f, struct s2pt_walk_step *steps,
			   uint32_t *nsteps)
{
	const struct s2pt_config *cfg = &pt->cfg;
	const uint64_t *table = pt->root;
	uint64_t table_pa = pt->root_pa;
	int level = cfg->start_level;

	if (nsteps)
		*nsteps = 0;
	/* Input address bits above the IPA size: translation fault, reported at level 0. */
	if (S2PT_UNLIKELY(ipa >> cfg->ipa_bits))
		return fault(f, S2PT_FAULT_TRANSLATION, 0, ipa, 0);
	for (;;) {
		uint64_t idx = entry_index(cfg, ipa, level);
		uint64_t pte = table[idx];
		uint64_t addr;
		uint32_t kind;

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
		switch (step(pt, pte, level, &addr, &kind)) {
		case STEP_TABLE:
			break;
		case STEP_LEAF:
			*leaf = pte;
			*leaf_level = level;
			return 0;
		case STEP_FAULT:
			fault(f, kind, level, ipa, pte);
			if (kind == S2PT_FAULT_TRANSLATION) {
				/* The walk only reads; the pointer is for s2pt_map_fault(). */
				f->ptep = (uint64_t *)(uintptr_t)&table[idx];
				f->frees = pt->frees;
			}
			return S2PT_EFAULT;
		default:
			return S2PT_EINVARIANT;
		}
		table = s2pt__table_ptr(pt->pool, addr);
		table_pa = addr;
		level++;
	}
}

static inline void fill(const struct s2pt_pgtable *pt, uint64_t ipa, uint64_t pte, int level,
			struct s2pt_translation *out)
{
	uint64_t span = s2pt__span(&pt->cfg, level);

	out->size = span;
	out->pa = (s2pt_pte_addr(&pt->cfg, pte) & ~(span - 1)) | (ipa & (span - 1));
	out->level = level;
	out->prot = s2pt_pte_prot(&pt->cfg, pte);
	out->memattr = s2pt_memattr_decode(&pt->cfg, s2pt_pte_memattr_field(pte));
	out->af = !!(pte & S2PT_PTE_AF);
	out->sw = s2pt_pte_sw(pte);
	out->pte = pte;
}

/* Access flag before permission, as the architecture orders the leaf checks. */
static inline int check_access(const struct s2pt_config *cfg, uint64_t pte, uint32_t access)
{
	pte &= ~S2PT_PTE_XN_MASK | s2pt_xn_read_mask(cfg);
	if (!(pte & S2PT_PTE_AF))
		return S2PT_FAULT_ACCESS_FLAG;
	switch (access) {
	case S2PT_ACCESS_READ:
		return (pte & S2PT_PTE_S2AP_R) ? 0 : S2PT_FAULT_PERMISSION;
	case S2PT_ACCESS_WRITE:
		return (pte & S2PT_PTE_S2AP_W) ? 0 : S2PT_FAULT_PERMISSION;
	case S2PT_ACCESS_EXEC:
		/* AArch64 EL2: stage-2 execute depends on XN only, not on read permission.
		 * EL1 may execute for XN[1:0] = 0b00 and 0b11 (FEAT_XNX). */
		return (!(pte & S2PT_PTE_XN) != !(pte & S2PT_PTE_XN0)) ? S2PT_FAULT_PERMISSION : 0;
	default:
		/* EL0 may execute for XN[1:0] = 0b00 and 0b01. */
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
	if (access > S2PT_ACCESS_EXEC_EL0)
		return S2PT_EINVAL;
	ret = walk_one(pt, ipa, &pte, &level, f, NULL, NULL);
	if (ret)
		return ret;
	kind = check_access(&pt->cfg, pte, access);
	if (kind)
		return fault(f, (uint32_t)kind, level, ipa, pte);
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

/* Walks a batch keeps in flight: enough to overlap the cache misses of random IPAs. */
#define S2PT_BATCH_LANES 16

/* The outcome of IPA @i: its PA, or its fault code. Returns 1 for a fault. */
static inline int64_t put(const struct s2pt_pgtable *pt, size_t i, uint64_t ipa, uint64_t pte,
			  int level, uint32_t access, uint64_t *pa_out, uint8_t *fsc_out)
{
	uint32_t kind = (uint32_t)check_access(&pt->cfg, pte, access);
	uint64_t span = s2pt__span(&pt->cfg, level);

	if (kind) {
		pa_out[i] = 0;
		fsc_out[i] = (uint8_t)s2pt_fsc(kind, level);
		return 1;
	}
	pa_out[i] = (s2pt_pte_addr(&pt->cfg, pte) & ~(span - 1)) | (ipa & (span - 1));
	fsc_out[i] = S2PT_FSC_NONE;
	return 0;
}

/*
 * Leaf bits that let an access through: (pte & mask) == want. Read and write need their S2AP
 * bit set; EL0 execute needs XN[1] clear; EL1 execute is let through here for XN[1:0] = 0b00
 * only, and its other allowed value (0b11, FEAT_XNX) takes the slow path.
 */
static inline void access_bits(uint32_t access, uint64_t *mask, uint64_t *want)
{
	static const uint64_t perm[] = {S2PT_PTE_S2AP_R, S2PT_PTE_S2AP_W, S2PT_PTE_XN_MASK,
					S2PT_PTE_XN};

	*mask = S2PT_PTE_AF | perm[access];
	*want = S2PT_PTE_AF | (access >= S2PT_ACCESS_EXEC ? 0 : perm[access]);
}

/*
 * The outcome of IPA @i from the descriptor the walk stopped at (@level): anything but a
 * readable page, i.e. blocks, faults, and broken tables, comes here.
 */
static inline int walk_end(const struct s2pt_pgtable *pt, size_t i, uint64_t ipa, uint64_t pte,
			   int level, uint32_t access, uint64_t *pa_out, uint8_t *fsc_out,
			   int64_t *faults)
{
	uint64_t addr;
	uint32_t kind;

	switch (step(pt, pte, level, &addr, &kind)) {
	case STEP_LEAF:
		*faults += put(pt, i, ipa, pte, level, access, pa_out, fsc_out);
		return 0;
	case STEP_FAULT:
		pa_out[i] = 0;
		fsc_out[i] = (uint8_t)s2pt_fsc(kind, level);
		++*faults;
		return 0;
	default: /* the callers took every table that points into the pool */
		return S2PT_EINVARIANT;
	}
}

/*
 * IPAs go in groups of S2PT_BATCH_LANES walks that advance level by level together: each
 * lane reads its descriptor and prefetches the next one, so by the time the group comes back
 * to a lane its line is (usually) in cache and random IPAs overlap their memory latencies.
 * The common steps are decided inline with branches that go the same way for every lane of
 * a level: a table descriptor into the pool above the last level, and at the last level a
 * page the access may use. Anything else (blocks, faults) goes through step().
 */
int64_t s2pt_translate_many(const struct s2pt_pgtable *pt, const uint64_t *ipas, size_t n,
			    uint32_t access, uint64_t *pa_out, uint8_t *fsc_out)
{
	const struct s2pt_config *cfg = &pt->cfg;
	const struct s2pt_pool *pool = pt->pool;
	/* A local copy: the loops store through pa_out, and a copy whose address never escapes
	 * keeps the descriptor format in registers instead of reloading it after every store. */
	const struct s2pt_config fmt = *cfg;
	/* Every pool page lies below 2^pa_bits (s2pt_pgtable_init), so "inside the pool" also
	 * rules out an address-size fault for a table address. */
	const uint64_t pool_bytes = s2pt__pool_end_pa(pool) - pool->base_pa;
	const uint64_t pa_limit = 1ull << cfg->pa_bits;
	const uint64_t entry_mask = (1ull << cfg->stride) - 1;
	const uint64_t page_mask = (1ull << cfg->granule_shift) - 1;
	const int start = cfg->start_level;
	const uint64_t *table[S2PT_BATCH_LANES];
	uint64_t mask, want;
	int64_t faults = 0;
	int ret;

	if (pt->destroyed)
		return S2PT_EDESTROYED;
	if (access > S2PT_ACCESS_EXEC_EL0)
		return S2PT_EINVAL;
	access_bits(access, &mask, &want);
	mask |= S2PT_PTE_TYPE_MASK;
	want |= S2PT_PTE_TYPE_PAGE;
	for (size_t base = 0; base < n; base += S2PT_BATCH_LANES) {
		const uint64_t *ipa = &ipas[base];
		uint32_t m = n - base < S2PT_BATCH_LANES ? (uint32_t)(n - base) : S2PT_BATCH_LANES;
		uint32_t pending = 0;
		uint32_t shift = s2pt_level_shift(cfg, start);
		int level;

		for (uint32_t g = 0; g < m; g++) {
			if (S2PT_UNLIKELY(ipa[g] >> cfg->ipa_bits)) {
				/* Beyond the IPA size: translation fault, reported at level 0. */
				table[g] = NULL;
				pa_out[base + g] = 0;
				fsc_out[base + g] = (uint8_t)s2pt_fsc(S2PT_FAULT_TRANSLATION, 0);
				faults++;
				continue;
			}
			table[g] = &pt->root[ipa[g] >> shift];
			pending++;
		}
		/* table[g] points at the lane's next descriptor; NULL once the lane is done. */
		for (level = start; level < 3 && pending; level++) {
			uint32_t next_shift = s2pt_level_shift(cfg, level + 1);

			for (uint32_t g = 0; g < m; g++) {
				uint64_t pte, addr;

				if (!table[g])
					continue;
				pte = *table[g];
				addr = s2pt_pte_addr(&fmt, pte) - pool->base_pa;
				if (S2PT_LIKELY((pte & S2PT_PTE_TYPE_MASK) == S2PT_PTE_TYPE_TABLE &&
						addr < pool_bytes)) {
					table[g] = (const uint64_t *)(pool->mem + addr) +
						   ((ipa[g] >> next_shift) & entry_mask);
					__builtin_prefetch(table[g]);
					continue;
				}
				ret = walk_end(pt, base + g, ipa[g], pte, level, access, pa_out,
					       fsc_out, &faults);
				if (ret)
					return ret;
				table[g] = NULL;
				pending--;
			}
		}
		if (!pending)
			continue;
		for (uint32_t g = 0; g < m; g++) {
			uint64_t pte, addr;

			if (!table[g])
				continue;
			pte = *table[g];
			addr = s2pt_pte_addr(&fmt, pte);
			if (S2PT_LIKELY((pte & mask) == want && addr < pa_limit)) {
				pa_out[base + g] = addr | (ipa[g] & page_mask);
				fsc_out[base + g] = S2PT_FSC_NONE;
				continue;
			}
			ret = walk_end(pt, base + g, ipa[g], pte, 3, access, pa_out, fsc_out,
				       &faults);
			if (ret)
				return ret;
		}
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

int s2pt_owner(const struct s2pt_pgtable *pt, uint64_t ipa, uint32_t *owner)
{
	struct s2pt_walk_step steps[S2PT_MAX_LEVELS];
	uint32_t n = 0;
	int ret = s2pt_walk_path(pt, ipa, steps, &n);
	uint64_t last = n ? steps[n - 1].desc : 0;

	*owner = 0;
	if (ret)
		return ret;
	if (!s2pt_pte_valid(last))
		*owner = (uint32_t)((last & S2PT_PTE_OWNER) >> S2PT_PTE_OWNER_SHIFT);
	return 0;
}

int s2pt_translate_image(const void *image, uint64_t image_pa, uint64_t image_bytes,
			 uint64_t vtcr, uint64_t vttbr, uint32_t flags, uint64_t ipa,
			 uint32_t access, struct s2pt_translation *out, struct s2pt_fault *f)
{
	struct s2pt_pool pool;
	struct s2pt_pgtable pt;
	uint64_t gmask, baddr, root_bytes;
	uint32_t vmid;
	int ret;

	if (!image || ((uintptr_t)image & 7) || (flags & ~(S2PT_CONFIG_FWB | S2PT_CONFIG_XNX)))
		return S2PT_EINVAL;
	/* Without VTCR_EL2.VS the VMID is 8 bits and VTTBR[63:56] are RES0. */
	vmid = (uint32_t)(vttbr >> 48) & ((vtcr & S2PT_VTCR_VS) ? 0xffffu : 0xffu);
	memset(&pt, 0, sizeof(pt));
	ret = s2pt_config_from_vtcr(&pt.cfg, vtcr, vmid, flags);
	if (ret)
		return ret;
	gmask = (1ull << pt.cfg.granule_shift) - 1;
	if ((image_pa | image_bytes) & gmask)
		return S2PT_EALIGN;
	if (!image_bytes || (image_bytes >> pt.cfg.granule_shift) > (1ull << 31) ||
	    image_pa + image_bytes < image_pa)
		return S2PT_ERANGE;
	/* BADDR: bits 47:1 (bit 0 is CnP); with a 52-bit output size bits 5:2 hold PA[51:48]. */
	baddr = vttbr & ((1ull << 48) - 2);
	if (pt.cfg.pa_bits == 52)
		baddr = (baddr & ~0x3full) | ((vttbr >> 2) & 0xfull) << 48;
	/* Aligned to the root's size (bits 5:0 are already clear with a 52-bit PA). */
	root_bytes = pt.cfg.root_entries * 8;
	if (baddr & (root_bytes - 1))
		return S2PT_EALIGN;
	if (baddr >> pt.cfg.pa_bits)
		return fault(f, S2PT_FAULT_ADDRESS_SIZE, 0, ipa, 0);
	if (baddr < image_pa || baddr + root_bytes > image_pa + image_bytes)
		return S2PT_ERANGE;
	/* A read-only view: the walk below never writes through pool or pt. */
	memset(&pool, 0, sizeof(pool));
	pool.mem = (uint8_t *)(uintptr_t)image;
	pool.base_pa = image_pa;
	pool.granule_shift = pt.cfg.granule_shift;
	pool.capacity = (uint32_t)(image_bytes >> pt.cfg.granule_shift);
	pt.pool = &pool;
	pt.root_pa = baddr;
	pt.root = (uint64_t *)(pool.mem + (baddr - image_pa));
	ret = s2pt_translate(&pt, ipa, access, out, f);
	/* A table address outside the image: hardware would read memory the caller did not give. */
	return ret == S2PT_EINVARIANT ? S2PT_ERANGE : ret;
}
