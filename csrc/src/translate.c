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
 * A stage-1 walk nested in stage 2 (s2pt_translate2()): every descriptor address is an IPA
 * that stage 2 translates before the read. @s2f holds a stage-2 fault of such a read.
 */
struct nest {
	const struct s2pt_pgtable *s2;
	struct s2pt_nested_step *steps;
	uint32_t nsteps;
	int s2_faulted;
	struct s2pt_fault s2f;
	uint64_t desc_pa;
};

static int nest_read(struct nest *n, uint64_t desc_ipa);

/*
 * Walk @ipa to its leaf. Returns 0 with the leaf and its level, S2PT_EFAULT with a translation
 * or address-size fault, or S2PT_EINVARIANT (STEP_BROKEN). @steps, when not NULL, records
 * every descriptor read. @nest (NULL but in the nested walk, so the compiler drops the hook
 * from every other caller) translates each descriptor's address through stage 2 first.
 */
static inline int walk_one(const struct s2pt_pgtable *pt, uint64_t ipa, uint64_t *leaf,
			   int *leaf_level, struct s2pt_fault *f, struct s2pt_walk_step *steps,
			   uint32_t *nsteps, struct nest *nest)
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
		uint64_t pte, addr;
		uint32_t kind;

		if (nest) {
			int ret = nest_read(nest, table_pa + idx * 8);

			if (ret)
				return ret;
		}
		pte = table[idx];
		if (nest && nest->steps)
			nest->steps[nest->nsteps++] = (struct s2pt_nested_step){
				.stage = 1,
				.level = level,
				.ipa = table_pa + idx * 8,
				.desc_pa = nest->desc_pa,
				.desc = pte,
			};

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

/*
 * Stage 1, EL1&0 (PAN, WXN and hierarchical limits off): EL1 always reads, writes unless
 * AP[2]; EL0 needs AP[1]; EL1 executes unless PXN or the page is writable at EL0 (the implicit
 * PXN), EL0 unless UXN, whatever AP says (execute-only user pages are allowed).
 */
static inline int check_s1(uint64_t pte, uint32_t access)
{
	int el0 = (pte & S2PT_PTE_S1_AP_EL0) != 0, ro = (pte & S2PT_PTE_S1_AP_RO) != 0;
	int ok;

	if (!(pte & S2PT_PTE_AF))
		return S2PT_FAULT_ACCESS_FLAG;
	switch (access) {
	case S2PT_ACCESS_READ:
		ok = 1;
		break;
	case S2PT_ACCESS_WRITE:
		ok = !ro;
		break;
	case S2PT_ACCESS_EXEC:
		ok = !(pte & S2PT_PTE_PXN) && !(el0 && !ro);
		break;
	case S2PT_ACCESS_EXEC_EL0:
		ok = !(pte & S2PT_PTE_UXN);
		break;
	case S2PT_ACCESS_READ_EL0:
		ok = el0;
		break;
	default:
		ok = el0 && !ro;
		break;
	}
	return ok ? 0 : S2PT_FAULT_PERMISSION;
}

/* The largest access value the tables' stage accepts (EL0 data accesses: stage 1 only). */
static inline uint32_t access_max(const struct s2pt_config *cfg)
{
	return s2pt_is_stage1(cfg) ? S2PT_ACCESS_WRITE_EL0 : S2PT_ACCESS_EXEC_EL0;
}

/* Access flag before permission, as the architecture orders the leaf checks. EL0 data
 * accesses (from the nested walk) check stage 2 as EL1 ones: S2AP does not know the EL. */
static inline int check_access(const struct s2pt_config *cfg, uint64_t pte, uint32_t access)
{
	if (s2pt_is_stage1(cfg))
		return check_s1(pte, access);
	pte &= ~S2PT_PTE_XN_MASK | s2pt_xn_read_mask(cfg);
	if (!(pte & S2PT_PTE_AF))
		return S2PT_FAULT_ACCESS_FLAG;
	switch (access) {
	case S2PT_ACCESS_READ:
	case S2PT_ACCESS_READ_EL0:
		return (pte & S2PT_PTE_S2AP_R) ? 0 : S2PT_FAULT_PERMISSION;
	case S2PT_ACCESS_WRITE:
	case S2PT_ACCESS_WRITE_EL0:
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
	if (access > access_max(&pt->cfg))
		return S2PT_EINVAL;
	ret = walk_one(pt, ipa, &pte, &level, f, NULL, NULL, NULL);
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
	ret = walk_one(pt, ipa, &pte, &level, f, NULL, NULL, NULL);
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
static inline void access_bits(const struct s2pt_config *cfg, uint32_t access, uint64_t *mask,
			       uint64_t *want)
{
	static const uint64_t perm[] = {S2PT_PTE_S2AP_R, S2PT_PTE_S2AP_W, S2PT_PTE_XN_MASK,
					S2PT_PTE_XN};
	/* Stage 1 (AP[1] EL0, AP[2] read-only): EL1 execute goes fast only for a page EL0
	 * cannot touch (no implicit PXN to work out); the rest of it takes the slow path. */
	static const uint64_t s1_mask[] = {
		0, S2PT_PTE_S1_AP_RO, S2PT_PTE_PXN | S2PT_PTE_S1_AP_EL0, S2PT_PTE_UXN,
		S2PT_PTE_S1_AP_EL0, S2PT_PTE_S1_AP_EL0 | S2PT_PTE_S1_AP_RO};
	static const uint64_t s1_want[] = {0, 0, 0, 0, S2PT_PTE_S1_AP_EL0, S2PT_PTE_S1_AP_EL0};

	if (s2pt_is_stage1(cfg)) {
		*mask = S2PT_PTE_AF | s1_mask[access];
		*want = S2PT_PTE_AF | s1_want[access];
		return;
	}
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
	if (access > access_max(cfg))
		return S2PT_EINVAL;
	access_bits(cfg, access, &mask, &want);
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
	ret = walk_one(pt, ipa, &pte, &level, &f, steps, nsteps, NULL);
	return ret == S2PT_EINVARIANT ? ret : 0;
}

int s2pt_owner(const struct s2pt_pgtable *pt, uint64_t ipa, uint32_t *owner)
{
	struct s2pt_walk_step steps[S2PT_MAX_WALK_STEPS];
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

/* ---- the nested (two-dimensional) walk ------------------------------------------------- */

/*
 * The stage-2 walk of a stage-1 descriptor at @desc_ipa: its steps recorded, read permission
 * and the access flag checked as a table walk needs them. On a fault @n->s2f says it and the
 * stage-1 walk stops (S2PT_EFAULT).
 */
static int nest_read(struct nest *n, uint64_t desc_ipa)
{
	struct s2pt_walk_step s2steps[S2PT_MAX_WALK_STEPS];
	uint32_t ns = 0;
	uint64_t pte;
	int level, kind;
	int ret = walk_one(n->s2, desc_ipa, &pte, &level, &n->s2f, n->steps ? s2steps : NULL,
			   n->steps ? &ns : NULL, NULL);

	for (uint32_t i = 0; i < ns; i++)
		n->steps[n->nsteps++] = (struct s2pt_nested_step){
			.stage = 2,
			.level = s2steps[i].level,
			.ipa = desc_ipa,
			.desc_pa = s2steps[i].desc_pa,
			.desc = s2steps[i].desc,
		};
	if (ret == S2PT_EFAULT) {
		n->s2_faulted = 1;
		return ret;
	}
	if (ret)
		return ret;
	kind = check_access(&n->s2->cfg, pte, S2PT_ACCESS_READ);
	if (kind) {
		fault(&n->s2f, (uint32_t)kind, level, desc_ipa, pte);
		n->s2_faulted = 1;
		return S2PT_EFAULT;
	}
	{
		uint64_t span = s2pt__span(&n->s2->cfg, level);

		n->desc_pa = (s2pt_pte_addr(&n->s2->cfg, pte) & ~(span - 1)) | (desc_ipa & (span - 1));
	}
	return 0;
}

static int fault2(struct s2pt_fault2 *f, uint32_t stage, uint32_t s1ptw, uint64_t va,
		  const struct s2pt_fault *from)
{
	f->stage = stage;
	f->s1ptw = s1ptw;
	f->kind = from->kind;
	f->level = from->level;
	f->fsc = from->fsc;
	f->reserved = 0;
	f->va = va;
	f->ipa = stage == 2 ? from->ipa : 0;
	f->desc = from->desc;
	return S2PT_EFAULT;
}

uint32_t s2pt_s1_memattr(uint32_t attr)
{
	uint32_t outer = attr >> 4 & 0xf, inner = attr & 0xf, o, i;

	if (attr > 0xff)
		return S2PT_MEMATTR_RESERVED | (attr & 0xf);
	/* FEAT_MTE2's Tagged Normal (Linux's MT_NORMAL_TAGGED): write-back, outer and inner. */
	if (attr == 0xf0)
		return 0xf;
	if (outer == 0)
		return (inner & 3) ? S2PT_MEMATTR_RESERVED | inner : inner >> 2;
	/* 0b0100 NC; 0b00RW / 0b10RW write-through; 0b01RW / 0b11RW write-back (RW: hints). */
	o = outer == 4 ? 1u : (outer & 4) ? 3u : 2u;
	if (inner == 0)
		return S2PT_MEMATTR_RESERVED | inner;
	i = inner == 4 ? 1u : (inner & 4) ? 3u : 2u;
	return o << 2 | i;
}

/* Device types order by strength: nGnRnE (0) is the most restrictive. */
static uint32_t combine_plain(uint32_t a, uint32_t b)
{
	uint32_t oa = a >> 2, ia = a & 3, ob = b >> 2, ib = b & 3;

	if (s2pt_memattr_is_device(a) || s2pt_memattr_is_device(b)) {
		if (s2pt_memattr_is_device(a) && s2pt_memattr_is_device(b))
			return a < b ? a : b;
		return s2pt_memattr_is_device(a) ? a : b;
	}
	/* NC (1) < WT (2) < WB (3), outer and inner apart: the weaker wins. */
	return (oa < ob ? oa : ob) << 2 | (ia < ib ? ia : ib);
}

uint32_t s2pt_combine_memattr(const struct s2pt_config *s2_cfg, uint32_t s1_memattr,
			      uint32_t s2_field)
{
	if (s1_memattr & S2PT_MEMATTR_RESERVED)
		return s1_memattr;
	if (s2_cfg->flags & S2PT_CONFIG_FWB) {
		s2_field &= 0xf;
		if (s2_field <= S2PT_MEMATTR_DEVICE_GRE)
			return combine_plain(s1_memattr, s2_field);
		switch (s2_field) {
		case 0x5:
			return s2pt_memattr_is_device(s1_memattr) ? s1_memattr
								  : S2PT_MEMATTR_NORMAL_NC;
		case 0x6:
			return S2PT_MEMATTR_NORMAL;
		case 0x7:
			return s1_memattr;
		default:
			return S2PT_MEMATTR_RESERVED | s2_field;
		}
	}
	if (s2pt_memattr_name(s2_cfg, s2_field & 0xf) < 0)
		return S2PT_MEMATTR_RESERVED | (s2_field & 0xf);
	return combine_plain(s1_memattr, s2_field & 0xf);
}

/* What both stages grant, in stage-1 terms (see struct s2pt_translation2). */
static uint32_t combine_prot(uint32_t s1, uint32_t s2)
{
	uint32_t prot = s1 & S2PT_PROT_USER;

	if (s2 & S2PT_PROT_R)
		prot |= S2PT_PROT_R;
	if ((s1 & S2PT_PROT_W) && (s2 & S2PT_PROT_W))
		prot |= S2PT_PROT_W;
	/* The implicit PXN of a page EL0 may write. */
	if ((s1 & S2PT_PROT_PX) && !((s1 & S2PT_PROT_USER) && (s1 & S2PT_PROT_W)) &&
	    (s2 & S2PT_PROT_PX))
		prot |= S2PT_PROT_PX;
	if ((s1 & S2PT_PROT_UX) && (s2 & S2PT_PROT_UX))
		prot |= S2PT_PROT_UX;
	return prot;
}

/* Whether @r is a regime s2pt_translate2() takes (see struct s2pt_regime). */
static int regime_ok(const struct s2pt_regime *r)
{
	const struct s2pt_pgtable *t0 = r->ttbr0, *t1 = r->ttbr1;

	if (!t0 && !t1)
		return 0;
	if (t0 && (!s2pt_is_stage1(&t0->cfg) || (t0->cfg.flags & S2PT_CONFIG_TTBR1)))
		return 0;
	if (t1 && (!s2pt_is_stage1(&t1->cfg) || !(t1->cfg.flags & S2PT_CONFIG_TTBR1)))
		return 0;
	/* One TCR_EL1 (IPS, DS) and one ASID (A1 = 0) serve both halves. */
	return !t0 || !t1 ||
	       (t0->cfg.pa_bits == t1->cfg.pa_bits && t0->cfg.vmid == t1->cfg.vmid &&
		!((t0->cfg.flags ^ t1->cfg.flags) & S2PT_CONFIG_LPA2));
}

static int regime_destroyed(const struct s2pt_regime *r)
{
	return (r->ttbr0 && r->ttbr0->destroyed) || (r->ttbr1 && r->ttbr1->destroyed);
}

/*
 * The table of @va's half (VA[55]) and the input its walk indexes (@va's low VA-size bits),
 * or NULL: no table there (EPDx), or bits above the VA size other than VA[55] (no TBI).
 */
static inline const struct s2pt_pgtable *regime_table(const struct s2pt_regime *r,
						      uint64_t va, uint64_t *in)
{
	int upper = (va >> 55) & 1;
	const struct s2pt_pgtable *t = upper ? r->ttbr1 : r->ttbr0;
	uint64_t top;

	if (!t)
		return NULL;
	top = va >> t->cfg.ipa_bits;
	if (top != (upper ? ~0ull >> t->cfg.ipa_bits : 0))
		return NULL;
	*in = va & ((1ull << t->cfg.ipa_bits) - 1);
	return t;
}

int s2pt_translate2(const struct s2pt_pgtable *s2, const struct s2pt_regime *r, uint64_t va,
		    uint32_t access, struct s2pt_translation2 *out, struct s2pt_fault2 *f,
		    struct s2pt_nested_step *steps, uint32_t *nsteps)
{
	struct nest n = {.s2 = s2, .steps = steps};
	const struct s2pt_pgtable *s1;
	struct s2pt_fault f1;
	uint64_t pte, ipa, in = 0;
	int level, ret, kind;

	if (nsteps)
		*nsteps = 0;
	if (!regime_ok(r) || s2pt_is_stage1(&s2->cfg) || access > S2PT_ACCESS_WRITE_EL0 ||
	    (steps != NULL) != (nsteps != NULL))
		return S2PT_EINVAL;
	if (regime_destroyed(r) || s2->destroyed)
		return S2PT_EDESTROYED;
	s1 = regime_table(r, va, &in);
	if (!s1) {
		fault(&f1, S2PT_FAULT_TRANSLATION, 0, va, 0);
		return fault2(f, 1, 0, va, &f1);
	}
	ret = walk_one(s1, in, &pte, &level, &f1, NULL, NULL, &n);
	if (nsteps)
		*nsteps = n.nsteps;
	if (ret == S2PT_EFAULT)
		return n.s2_faulted ? fault2(f, 2, 1, va, &n.s2f) : fault2(f, 1, 0, va, &f1);
	if (ret)
		return ret;
	kind = check_access(&s1->cfg, pte, access);
	if (kind) {
		fault(&f1, (uint32_t)kind, level, va, pte);
		return fault2(f, 1, 0, va, &f1);
	}
	fill(s1, in, pte, level, &out->s1);
	ipa = out->s1.pa;
	/* The output IPA: a stage-2 walk of its own, checked for the access itself. */
	n.desc_pa = 0;
	{
		struct s2pt_walk_step s2steps[S2PT_MAX_WALK_STEPS];
		uint32_t ns = 0;
		struct s2pt_fault f2;
		uint64_t pte2;
		int level2;

		ret = walk_one(s2, ipa, &pte2, &level2, &f2, steps ? s2steps : NULL,
			       steps ? &ns : NULL, NULL);
		for (uint32_t i = 0; i < ns; i++)
			steps[n.nsteps++] = (struct s2pt_nested_step){
				.stage = 2,
				.level = s2steps[i].level,
				.ipa = ipa,
				.desc_pa = s2steps[i].desc_pa,
				.desc = s2steps[i].desc,
			};
		if (nsteps)
			*nsteps = n.nsteps;
		if (ret == S2PT_EFAULT)
			return fault2(f, 2, 0, va, &f2);
		if (ret)
			return ret;
		kind = check_access(&s2->cfg, pte2, access);
		if (kind) {
			fault(&f2, (uint32_t)kind, level2, ipa, pte2);
			return fault2(f, 2, 0, va, &f2);
		}
		fill(s2, ipa, pte2, level2, &out->s2);
	}
	out->pa = out->s2.pa;
	out->ipa = ipa;
	out->prot = combine_prot(out->s1.prot, out->s2.prot);
	out->memattr = s2pt_combine_memattr(
		&s2->cfg,
		s2pt_s1_memattr((uint32_t)(r->mair >> (8 * (out->s1.memattr & 7))) & 0xff),
		s2pt_pte_memattr_field(out->s2.pte));
	return 0;
}

/* ---- the nested walk over an array ------------------------------------------------------ */

/*
 * What a batch may remember while nothing changes the tables (the call holds both pools):
 * the stage-2 translation of each stage-1 table page it read through (a direct-mapped memo),
 * and, per level of each stage, the last table descriptor it followed. Both are exact: they
 * only skip re-reading descriptors whose values cannot have changed. The read counts
 * reported are those of the uncached walk, as hardware without walk caches makes them.
 */
#define S2PT_MEMO_WAYS 64

struct s2memo {
	uint64_t page;  /* stage-1 table IPA >> stage-2 granule shift, readable; ~0: empty */
	uint32_t reads; /* descriptors the stage-2 walk of it reads */
};

struct walk_prefix {
	uint64_t key;          /* input >> level shift of the descriptor followed; ~0: empty */
	const uint64_t *table; /* the next level's table */
	uint64_t table_addr;  /* its address (an IPA at stage 1) */
	uint32_t reads;        /* reads of this stage's uncached walk up to and including it */
};

/* Whether stage 2 lets a table walk read @ipa (0), through the memo; adds its reads. */
static inline int memo_s2(const struct s2pt_pgtable *s2, struct s2memo *memo, uint64_t ipa,
			  uint32_t *reads)
{
	const uint32_t gshift = s2->cfg.granule_shift;
	uint64_t page = ipa >> gshift, pte;
	struct s2memo *m = &memo[page & (S2PT_MEMO_WAYS - 1)];
	struct s2pt_fault f;
	int level;

	if (S2PT_LIKELY(m->page == page)) {
		*reads += m->reads;
		return 0;
	}
	if (walk_one(s2, ipa, &pte, &level, &f, NULL, NULL, NULL) ||
	    check_access(&s2->cfg, pte, S2PT_ACCESS_READ))
		return S2PT_EFAULT;
	/* One stage-2 leaf covers the whole granule page, so its answer holds for the page. */
	m->page = page;
	m->reads = (uint32_t)(level - s2->cfg.start_level + 1);
	*reads += m->reads;
	return 0;
}

/*
 * A VA on the common path, in a group of S2PT_BATCH_LANES that advance together so that
 * their likely cache misses overlap: the stage-1 leaf descriptor (a random page's entry in
 * a large table area) and the stage-2 leaf of the output. Each phase goes as far as the
 * next such read, prefetches it and moves to the next lane; upper levels, mostly cached
 * (and skipped through the prefix and memo), are read on the way. @slow: anything off the
 * path (a fault, a broken table), which s2pt_translate2() then decides.
 */
struct lane2 {
	const struct s2pt_pgtable *s1; /* the VA's half of the regime */
	uint64_t in;                   /* the input its walk indexes */
	const uint64_t *desc; /* the pending level-3 descriptor, or NULL: @pte is the leaf */
	uint64_t pte;
	uint64_t ipa;
	int level;
	uint32_t reads;
	int slow;
};

/*
 * From @table at @level down to @in's leaf descriptor: read above level 3, left pending
 * (prefetched) at level 3. The stage-1 walk passes @s2 and @memo, which check each read
 * through stage 2 (stage 2 passes NULLs: the compiler drops the hook). @prefix remembers
 * the tables followed, with the reads of the walk up to them (counted from @base, what
 * @l->reads held when this stage's walk began). 0, or 1 off the path.
 */
static inline int descend(const struct s2pt_pgtable *pt, const struct s2pt_pgtable *s2,
			  struct s2memo *memo, struct walk_prefix *prefix, uint64_t in,
			  const uint64_t *table, uint64_t table_pa, int level, uint32_t base,
			  struct lane2 *l)
{
	const struct s2pt_config *cfg = &pt->cfg;

	for (;;) {
		uint64_t idx = entry_index(cfg, in, level), addr, pte;
		uint32_t kind;

		if (s2 && memo_s2(s2, memo, table_pa + idx * 8, &l->reads))
			return 1;
		l->reads++;
		if (level == 3) {
			l->desc = &table[idx];
			__builtin_prefetch(l->desc);
			break;
		}
		pte = table[idx];
		switch (step(pt, pte, level, &addr, &kind)) {
		case STEP_TABLE:
			table = s2pt__table_ptr(pt->pool, addr);
			table_pa = addr;
			/* Indexed from level -1 (a five-level stage 1). */
			prefix[level + 1] = (struct walk_prefix){in >> s2pt_level_shift(cfg, level),
								 table, addr, l->reads - base};
			level++;
			continue;
		case STEP_LEAF:
			l->desc = NULL;
			l->pte = pte;
			break;
		default:
			return 1;
		}
		break;
	}
	l->level = level;
	return 0;
}

/* A stage's walk of @in from the deepest table @prefix remembers for it, else the root. */
static inline int walk_from(const struct s2pt_pgtable *pt, const struct s2pt_pgtable *s2,
			    struct s2memo *memo, struct walk_prefix *prefix, uint64_t in,
			    struct lane2 *l)
{
	const struct s2pt_config *cfg = &pt->cfg;
	uint32_t base = l->reads;

	for (int lv = 2; lv >= cfg->start_level; lv--) {
		const struct walk_prefix *p = &prefix[lv + 1];

		if (p->key == in >> s2pt_level_shift(cfg, lv)) {
			l->reads = base + p->reads;
			return descend(pt, s2, memo, prefix, in, p->table, p->table_addr, lv + 1,
				       base, l);
		}
	}
	return descend(pt, s2, memo, prefix, in, pt->root, pt->root_pa, cfg->start_level, base,
		       l);
}

/* Stage 1 down to the leaf descriptor of @va. */
static inline void s1_descend(const struct s2pt_pgtable *s2, const struct s2pt_regime *r,
			      struct s2memo *memo, struct walk_prefix (*prefix)[S2PT_MAX_WALK_STEPS],
			      uint64_t va, struct lane2 *l)
{
	l->slow = 1;
	l->reads = 0;
	l->s1 = regime_table(r, va, &l->in);
	if (S2PT_UNLIKELY(!l->s1))
		return;
	/* One prefix per half: their inputs index different tables. */
	l->slow = walk_from(l->s1, s2, memo, prefix[l->s1 == r->ttbr1], l->in, l);
}

/* The stage-1 leaf and its check, then stage 2 down to the output's leaf descriptor. */
static inline void s2_descend(const struct s2pt_pgtable *s2, struct walk_prefix *prefix,
			      uint32_t access, struct lane2 *l)
{
	uint64_t pte = l->desc ? *l->desc : l->pte, addr, span;
	uint32_t kind;

	l->slow = 1;
	if (step(l->s1, pte, l->level, &addr, &kind) != STEP_LEAF || check_s1(pte, access))
		return;
	span = s2pt__span(&l->s1->cfg, l->level);
	l->ipa = (addr & ~(span - 1)) | (l->in & (span - 1));
	if (S2PT_UNLIKELY(l->ipa >> s2->cfg.ipa_bits))
		return;
	l->slow = walk_from(s2, NULL, NULL, prefix, l->ipa, l);
}

/* The output's leaf and its check: the PA, or @slow. */
static inline uint64_t s2_finish(const struct s2pt_pgtable *s2, uint32_t access,
				 struct lane2 *l)
{
	uint64_t pte = l->desc ? *l->desc : l->pte, addr, span;
	uint32_t kind;

	if (step(s2, pte, l->level, &addr, &kind) != STEP_LEAF ||
	    check_access(&s2->cfg, pte, access)) {
		l->slow = 1;
		return 0;
	}
	span = s2pt__span(&s2->cfg, l->level);
	return (addr & ~(span - 1)) | (l->ipa & (span - 1));
}

int64_t s2pt_translate2_many(const struct s2pt_pgtable *s2, const struct s2pt_regime *r,
			     const uint64_t *vas, size_t n, uint32_t access, uint64_t *pa_out,
			     uint64_t *ipa_out, uint8_t *fsc_out, uint8_t *stage_out,
			     uint8_t *reads_out)
{
	struct s2memo memo[S2PT_MEMO_WAYS];
	struct walk_prefix prefix[2][S2PT_MAX_WALK_STEPS], prefix2[S2PT_MAX_WALK_STEPS];
	int64_t faults = 0;

	if (!regime_ok(r) || s2pt_is_stage1(&s2->cfg) || access > S2PT_ACCESS_WRITE_EL0 ||
	    (n && (!vas || !pa_out || !fsc_out || !stage_out)))
		return S2PT_EINVAL;
	if (regime_destroyed(r) || s2->destroyed)
		return S2PT_EDESTROYED;
	for (uint32_t i = 0; i < S2PT_MEMO_WAYS; i++)
		memo[i].page = ~0ull;
	for (uint32_t i = 0; i < S2PT_MAX_WALK_STEPS; i++)
		prefix[0][i].key = prefix[1][i].key = prefix2[i].key = ~0ull;
	for (size_t base = 0; base < n; base += S2PT_BATCH_LANES) {
		struct lane2 lane[S2PT_BATCH_LANES];
		uint32_t m = n - base < S2PT_BATCH_LANES ? (uint32_t)(n - base) : S2PT_BATCH_LANES;

		for (uint32_t g = 0; g < m; g++)
			s1_descend(s2, r, memo, prefix, vas[base + g], &lane[g]);
		for (uint32_t g = 0; g < m; g++)
			if (!lane[g].slow)
				s2_descend(s2, prefix2, access, &lane[g]);
		for (uint32_t g = 0; g < m; g++) {
			size_t i = base + g;
			struct s2pt_nested_step steps[S2PT_MAX_NESTED_STEPS];
			struct s2pt_translation2 t;
			struct s2pt_fault2 f;
			uint32_t reads;
			int ret;

			if (!lane[g].slow) {
				uint64_t pa = s2_finish(s2, access, &lane[g]);

				if (S2PT_LIKELY(!lane[g].slow)) {
					pa_out[i] = pa;
					if (ipa_out)
						ipa_out[i] = lane[g].ipa;
					fsc_out[i] = S2PT_FSC_NONE;
					stage_out[i] = 0;
					if (reads_out)
						reads_out[i] = (uint8_t)lane[g].reads;
					continue;
				}
			}
			/* The reference walk decides every other case, fault or not. */
			ret = s2pt_translate2(s2, r, vas[i], access, &t, &f, steps, &reads);
			if (ret && ret != S2PT_EFAULT)
				return ret;
			if (reads_out)
				reads_out[i] = (uint8_t)reads;
			if (!ret) {
				pa_out[i] = t.pa;
				if (ipa_out)
					ipa_out[i] = t.ipa;
				fsc_out[i] = S2PT_FSC_NONE;
				stage_out[i] = 0;
				continue;
			}
			pa_out[i] = 0;
			if (ipa_out)
				ipa_out[i] = f.stage == 2 ? f.ipa : 0;
			fsc_out[i] = (uint8_t)(f.fsc | (f.s1ptw ? S2PT_FSC_S1PTW : 0));
			stage_out[i] = (uint8_t)f.stage;
			faults++;
		}
	}
	return faults;
}
