/* Per-VM geometry and VTCR_EL2, as KVM computes them (and as the architecture validates them). */
#include "internal.h"

/* VTCR_EL2.PS / ID_AA64MMFR0_EL1.PARange encodings (0b0111, 56 bits, is FEAT_D128 only). */
static const uint32_t ps_bits[] = {32, 36, 40, 42, 44, 48, 52};
#define PS_MAX_ENCODING 6u
#define PS_52 6u

#define CONFIG_FLAGS \
	(S2PT_CONFIG_LPA2 | S2PT_CONFIG_FWB | S2PT_CONFIG_XNX | S2PT_CONFIG_NO_TLBIRANGE | \
	 S2PT_CONFIG_KVM)

static int granule_shift_of(uint32_t granule)
{
	switch (granule) {
	case 4096:
		return 12;
	case 16384:
		return 14;
	case 65536:
		return 16;
	default:
		return -1;
	}
}

static int ps_encoding(uint32_t pa_bits)
{
	for (uint32_t i = 0; i <= PS_MAX_ENCODING; i++)
		if (ps_bits[i] == pa_bits)
			return (int)i;
	return -1;
}

/* TG0 encodes 4K as 0b00, 64K as 0b01 and 16K as 0b10. */
static uint32_t tg0_of(uint32_t granule_shift)
{
	return granule_shift == 12 ? 0u : granule_shift == 16 ? 1u : 2u;
}

/* TCR_EL1.TG1 encodes the granules in another order than TG0: 0b01 16K, 0b10 4K, 0b11 64K. */
static uint32_t tg1_of(uint32_t granule_shift)
{
	return granule_shift == 12 ? 2u : granule_shift == 14 ? 1u : 3u;
}

/* SL0 counts down from the granule's base level: 2 for 4K, 3 for 16K and 64K. */
static uint32_t sl0_base(uint32_t granule_shift)
{
	return granule_shift == 12 ? 2u : 3u;
}

/*
 * The largest IPA and the formats a granule / PA size / LPA2 combination allows: a 52-bit
 * address needs a descriptor that can hold it (64K: OA[51:48] in bits 15:12; 4K/16K: the
 * LPA2 format), and KVM never makes the IPA space larger than the PA space.
 */
static int sizes_valid(uint32_t granule_shift, uint32_t ipa_bits, uint32_t pa_bits,
		       uint32_t flags)
{
	int lpa2 = (flags & S2PT_CONFIG_LPA2) != 0;

	if ((flags & ~CONFIG_FLAGS) || (lpa2 && granule_shift == 16))
		return 0;
	if (pa_bits == 52 && granule_shift != 16 && !lpa2)
		return 0;
	return ipa_bits >= 32 && ipa_bits <= (pa_bits == 52 ? 52u : 48u) && ipa_bits <= pa_bits;
}

/*
 * The descriptor format's fields, shared by both stages: where blocks are allowed, where the
 * output address lives (52-bit formats) and the leaves' shareability.
 */
static void formats(struct s2pt_config *c)
{
	int lpa2 = (c->flags & S2PT_CONFIG_LPA2) != 0;

	/* 4K level-0 and 16K level-1 blocks exist only with LPA2, 64K level-1 blocks only with
	 * 52-bit PA (AArch64.BlockDescSupported). */
	if (c->granule_shift == 12)
		c->min_block_level = lpa2 ? 0 : 1;
	else if (c->granule_shift == 14)
		c->min_block_level = lpa2 ? 1 : 2;
	else
		c->min_block_level = c->pa_bits == 52 ? 1 : 2;
	if (c->min_block_level < c->start_level)
		c->min_block_level = c->start_level;
	c->oa_mask = ((1ull << 48) - 1) & ~((1ull << c->granule_shift) - 1);
	c->leaf_sh = S2PT_PTE_SH_INNER;
	if (lpa2) {
		/* DS = 1: OA[49:g] in place, OA[51:50] in bits 9:8, shareability from SH0. */
		c->oa_mask = ((1ull << 50) - 1) & ~((1ull << c->granule_shift) - 1);
		c->oa_hi_mask = 3ull << 8;
		c->oa_hi_shift = 50 - 8;
		c->leaf_sh = 0;
	} else if (c->granule_shift == 16 && c->pa_bits == 52) {
		/* 64K with a 52-bit output size (FEAT_LPA): OA[51:48] in bits 15:12 (RES0, and
		 * ignored by the walk, for smaller PA sizes). */
		c->oa_hi_mask = 0xfull << 12;
		c->oa_hi_shift = 48 - 12;
	}
}

/*
 * Fill the derived fields from ipa_bits, pa_bits, granule_shift, start_level and flags,
 * after checking the architectural rule that the start-level table resolves between 1 and
 * stride + 4 bits (at most 16 concatenated tables).
 */
static int finish(struct s2pt_config *c, uint64_t vtcr_extra)
{
	int lpa2 = (c->flags & S2PT_CONFIG_LPA2) != 0;
	uint32_t further = (uint32_t)(3 - c->start_level);
	uint32_t lo = further * c->stride + c->granule_shift + 1;
	uint32_t hi = further * c->stride + c->granule_shift + c->stride + 4;
	int ps = ps_encoding(c->pa_bits);

	if (c->ipa_bits < lo || c->ipa_bits > hi || ps < 0)
		return S2PT_ECONFIG;
	c->levels = (uint32_t)(4 - c->start_level);
	c->root_entries = 1ull << (c->ipa_bits - s2pt_level_shift(c, c->start_level));
	c->root_tables = c->root_entries > (1ull << c->stride)
				 ? (uint32_t)(c->root_entries >> c->stride)
				 : 1u;
	formats(c);
	c->t0sz = 64 - c->ipa_bits;
	c->sl0 = sl0_base(c->granule_shift) - (uint32_t)c->start_level;
	c->vtcr = (uint64_t)c->t0sz << S2PT_VTCR_T0SZ_SHIFT |
		  (uint64_t)c->sl0 << S2PT_VTCR_SL0_SHIFT |
		  (uint64_t)tg0_of(c->granule_shift) << S2PT_VTCR_TG0_SHIFT |
		  (uint64_t)ps << S2PT_VTCR_PS_SHIFT | S2PT_VTCR_RES1 | vtcr_extra;
	if (c->vmid > 255)
		c->vtcr |= S2PT_VTCR_VS;
	if (lpa2)
		c->vtcr |= S2PT_VTCR_DS;
	return 0;
}

int s2pt_config_init(struct s2pt_config *cfg, uint32_t ipa_bits, uint32_t granule,
		     uint32_t pa_bits, uint32_t vmid, uint32_t flags)
{
	struct s2pt_config c;
	int gshift = granule_shift_of(granule);
	uint32_t levels;
	int ret;

	memset(&c, 0, sizeof(c));
	if (gshift < 0 || vmid > 0xffff || ps_encoding(pa_bits) < 0)
		return S2PT_ECONFIG;
	/* KVM: 32 bits at least (ARM64_MIN_PARANGE_BITS), never more than the PA range. */
	if (!sizes_valid((uint32_t)gshift, ipa_bits, pa_bits, flags))
		return S2PT_ECONFIG;
	c.flags = flags;
	c.ipa_bits = ipa_bits;
	c.pa_bits = pa_bits;
	c.granule_shift = (uint32_t)gshift;
	c.stride = c.granule_shift - 3;
	c.vmid = vmid;
	/* Concatenation adds up to 4 bits at the start level; KVM keeps at least 2 levels. */
	levels = (ipa_bits - 8) / c.stride;
	if (levels < 2)
		levels = 2;
	c.start_level = 4 - (int)levels;
	/* IRGN0 = ORGN0 = write-back write-allocate, SH0 = inner shareable. */
	ret = finish(&c, 1ull << S2PT_VTCR_IRGN0_SHIFT | 1ull << S2PT_VTCR_ORGN0_SHIFT |
				 3ull << S2PT_VTCR_SH0_SHIFT);
	if (ret)
		return ret;
	*cfg = c;
	return 0;
}

int s2pt_config_from_vtcr(struct s2pt_config *cfg, uint64_t vtcr, uint32_t vmid,
			  uint32_t flags)
{
	const uint64_t known = 0x3full | 3ull << S2PT_VTCR_SL0_SHIFT | 3ull << S2PT_VTCR_IRGN0_SHIFT |
			       3ull << S2PT_VTCR_ORGN0_SHIFT | 3ull << S2PT_VTCR_SH0_SHIFT |
			       3ull << S2PT_VTCR_TG0_SHIFT | 7ull << S2PT_VTCR_PS_SHIFT |
			       S2PT_VTCR_VS | S2PT_VTCR_RES1 | S2PT_VTCR_DS;
	struct s2pt_config c;
	uint32_t tg0 = (uint32_t)(vtcr >> S2PT_VTCR_TG0_SHIFT) & 3u;
	uint32_t ps = (uint32_t)(vtcr >> S2PT_VTCR_PS_SHIFT) & 7u;
	uint32_t sl0 = (uint32_t)(vtcr >> S2PT_VTCR_SL0_SHIFT) & 3u;
	uint32_t sh0 = (uint32_t)(vtcr >> S2PT_VTCR_SH0_SHIFT) & 3u;
	uint32_t t0sz = (uint32_t)vtcr & 0x3fu;
	int start;

	memset(&c, 0, sizeof(c));
	/* HA/HD, SL2, secure-walk and later features are not modelled: refuse, don't ignore. */
	if ((vtcr & ~known) || tg0 == 3 || ps > PS_MAX_ENCODING || sh0 == 1 || vmid > 0xffff ||
	    (flags & ~(CONFIG_FLAGS & ~S2PT_CONFIG_LPA2)))
		return S2PT_ECONFIG;
	if (vmid > 255 && !(vtcr & S2PT_VTCR_VS))
		return S2PT_ECONFIG;
	c.granule_shift = tg0 == 0 ? 12u : tg0 == 1 ? 16u : 14u;
	c.stride = c.granule_shift - 3;
	c.pa_bits = ps_bits[ps];
	c.ipa_bits = 64 - t0sz;
	c.vmid = vmid;
	c.flags = flags | ((vtcr & S2PT_VTCR_DS) ? S2PT_CONFIG_LPA2 : 0);
	/* DS is RES0 for 64K; PS = 52 bits needs a format that can hold the address. */
	if (!sizes_valid(c.granule_shift, c.ipa_bits, c.pa_bits, c.flags))
		return S2PT_ECONFIG;
	/* 4K SL0 = 3 needs FEAT_TTST, 16K SL0 = 3 (level 0) needs DS, 64K SL0 = 3 is reserved. */
	if (sl0 == 3 && !(c.granule_shift == 14 && (c.flags & S2PT_CONFIG_LPA2)))
		return S2PT_ECONFIG;
	start = (int)sl0_base(c.granule_shift) - (int)sl0;
	/* SL0 = 2 (level 0 for 4K, level 1 for 16K/64K) needs PAMax >= 44 bits (42 for 16K). */
	if (sl0 == 2 && c.pa_bits < (c.granule_shift == 14 ? 42u : 44u))
		return S2PT_ECONFIG;
	c.start_level = start;
	if (finish(&c, vtcr & (3ull << S2PT_VTCR_IRGN0_SHIFT | 3ull << S2PT_VTCR_ORGN0_SHIFT |
			       3ull << S2PT_VTCR_SH0_SHIFT)))
		return S2PT_ECONFIG;
	/* The given register wins over the recomposition (VS may be set for a small VMID). */
	c.vtcr = vtcr | S2PT_VTCR_RES1;
	*cfg = c;
	return 0;
}

int s2pt_s1_config_init(struct s2pt_config *cfg, uint32_t va_bits, uint32_t granule,
			uint32_t ips_bits, uint32_t asid, uint32_t flags)
{
	struct s2pt_config c;
	int gshift = granule_shift_of(granule), ips = ps_encoding(ips_bits);
	int lpa2 = (flags & S2PT_CONFIG_LPA2) != 0;
	uint32_t max_va, levels;

	memset(&c, 0, sizeof(c));
	if (gshift < 0 || ips < 0 || asid > 0xffff ||
	    (flags & ~(S2PT_CONFIG_LPA2 | S2PT_CONFIG_TTBR1 | S2PT_CONFIG_NO_TLBIRANGE)) ||
	    (lpa2 && gshift == 16))
		return S2PT_ECONFIG;
	/* A 52-bit output needs a descriptor that holds it (64K FEAT_LPA, or LPA2). */
	if (ips_bits == 52 && gshift != 16 && !lpa2)
		return S2PT_ECONFIG;
	/* T0SZ 16..39 (25..48-bit VAs); 52 bits with 64K (FEAT_LVA) or LPA2, where 4K with more
	 * than 48 bits starts at level -1 (five levels). */
	max_va = (gshift == 16 || lpa2) ? 52u : 48u;
	if (va_bits < 25 || va_bits > max_va)
		return S2PT_ECONFIG;
	c.flags = flags | S2PT_CONFIG_STAGE1;
	c.ipa_bits = va_bits;
	c.pa_bits = ips_bits;
	c.granule_shift = (uint32_t)gshift;
	c.stride = c.granule_shift - 3;
	c.vmid = asid;
	/* No concatenation at stage 1: as many levels as the VA bits above the page need. */
	levels = (va_bits - c.granule_shift + c.stride - 1) / c.stride;
	c.start_level = 4 - (int)levels;
	c.levels = levels;
	c.root_tables = 1;
	c.root_entries = 1ull << (va_bits - s2pt_level_shift(&c, c.start_level));
	formats(&c);
	c.t0sz = 64 - va_bits;
	c.sl0 = 0;
	/* Walks cacheable write-back read/write-allocate, inner shareable; the other half off. */
	if (flags & S2PT_CONFIG_TTBR1)
		c.vtcr = (uint64_t)c.t0sz << S2PT_TCR_T1SZ_SHIFT | 1ull << S2PT_TCR_IRGN1_SHIFT |
			 1ull << S2PT_TCR_ORGN1_SHIFT | 3ull << S2PT_TCR_SH1_SHIFT |
			 (uint64_t)tg1_of(c.granule_shift) << S2PT_TCR_TG1_SHIFT | S2PT_TCR_EPD0;
	else
		c.vtcr = (uint64_t)c.t0sz << S2PT_TCR_T0SZ_SHIFT | 1ull << S2PT_TCR_IRGN0_SHIFT |
			 1ull << S2PT_TCR_ORGN0_SHIFT | 3ull << S2PT_TCR_SH0_SHIFT |
			 (uint64_t)tg0_of(c.granule_shift) << S2PT_TCR_TG0_SHIFT | S2PT_TCR_EPD1;
	c.vtcr |= (uint64_t)ips << S2PT_TCR_IPS_SHIFT;
	if (asid > 255)
		c.vtcr |= S2PT_TCR_AS;
	if (lpa2)
		c.vtcr |= S2PT_TCR_DS;
	*cfg = c;
	return 0;
}
