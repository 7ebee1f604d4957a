/*
 * Stage-2 VMSAv8-64 descriptor bits (Arm ARM D8, "Stage 2 attribute fields"): named masks and
 * static inline encode/decode helpers. 48-bit output addresses; the 52-bit formats (64K with
 * OA[51:48] in bits 15:12, LPA2 with OA[51:50] in bits 9:8) are not modelled yet.
 */
#ifndef S2PT_DESC_H
#define S2PT_DESC_H

#include <stdint.h>

#include "s2pt.h"

#define S2PT_PTE_VALID (1ull << 0)
#define S2PT_PTE_TYPE (1ull << 1) /* 1: table (levels < 3) or page (level 3); 0: block */
#define S2PT_PTE_TYPE_MASK 3ull
#define S2PT_PTE_TYPE_BLOCK 1ull
#define S2PT_PTE_TYPE_TABLE 3ull
#define S2PT_PTE_TYPE_PAGE 3ull

#define S2PT_PTE_MEMATTR_SHIFT 2
#define S2PT_PTE_MEMATTR (0xfull << S2PT_PTE_MEMATTR_SHIFT)
#define S2PT_PTE_S2AP_R (1ull << 6)
#define S2PT_PTE_S2AP_W (1ull << 7)
#define S2PT_PTE_SH_SHIFT 8
#define S2PT_PTE_SH (3ull << S2PT_PTE_SH_SHIFT)
#define S2PT_PTE_SH_INNER (3ull << S2PT_PTE_SH_SHIFT)
#define S2PT_PTE_AF (1ull << 10)
#define S2PT_PTE_XN (1ull << 54)
#define S2PT_PTE_XN_MASK (3ull << 53) /* XN[1:0]; XN[0] (bit 53) is FEAT_XNX only */

/* Output address / next-level table address: bits 47:granule_shift. */
static inline uint64_t s2pt_oa_mask(uint32_t granule_shift)
{
	return ((1ull << 48) - 1) & ~((1ull << granule_shift) - 1);
}

/* Leaf attribute bits s2pt writes; anything else set in a valid leaf is a stray bit. */
#define S2PT_PTE_LEAF_ATTRS                                                                 \
	(S2PT_PTE_MEMATTR | S2PT_PTE_S2AP_R | S2PT_PTE_S2AP_W | S2PT_PTE_SH | S2PT_PTE_AF | \
	 S2PT_PTE_XN)

static inline int s2pt_pte_valid(uint64_t pte)
{
	return (int)(pte & S2PT_PTE_VALID);
}

/* A table descriptor: valid, type bit set, above the last level. */
static inline int s2pt_pte_is_table(uint64_t pte, int level)
{
	return level < 3 && (pte & S2PT_PTE_TYPE_MASK) == S2PT_PTE_TYPE_TABLE;
}

static inline uint64_t s2pt_pte_addr(uint64_t pte, uint32_t granule_shift)
{
	return pte & s2pt_oa_mask(granule_shift);
}

static inline uint64_t s2pt_table_pte(uint64_t table_pa)
{
	return table_pa | S2PT_PTE_TYPE_TABLE;
}

/* Leaf attribute bits for a permission set, memory attribute and access flag. */
static inline uint64_t s2pt_leaf_attrs(uint32_t prot, uint32_t memattr, int af)
{
	uint64_t attrs = ((uint64_t)memattr << S2PT_PTE_MEMATTR_SHIFT) | S2PT_PTE_SH_INNER;

	if (prot & S2PT_PROT_R)
		attrs |= S2PT_PTE_S2AP_R;
	if (prot & S2PT_PROT_W)
		attrs |= S2PT_PTE_S2AP_W;
	if (!(prot & S2PT_PROT_X))
		attrs |= S2PT_PTE_XN;
	if (af)
		attrs |= S2PT_PTE_AF;
	return attrs;
}

/* Page at level 3 (type 0b11), block above it (type 0b01). */
static inline uint64_t s2pt_leaf_pte(uint64_t pa, uint64_t attrs, int level)
{
	return pa | attrs | (level == 3 ? S2PT_PTE_TYPE_PAGE : S2PT_PTE_TYPE_BLOCK);
}

static inline uint32_t s2pt_pte_prot(uint64_t pte)
{
	uint32_t prot = 0;

	if (pte & S2PT_PTE_S2AP_R)
		prot |= S2PT_PROT_R;
	if (pte & S2PT_PTE_S2AP_W)
		prot |= S2PT_PROT_W;
	if (!(pte & S2PT_PTE_XN))
		prot |= S2PT_PROT_X;
	return prot;
}

static inline uint32_t s2pt_pte_memattr(uint64_t pte)
{
	return (uint32_t)((pte & S2PT_PTE_MEMATTR) >> S2PT_PTE_MEMATTR_SHIFT);
}

/* Replace the permission bits of a leaf, keeping everything else. */
static inline uint64_t s2pt_pte_set_prot(uint64_t pte, uint32_t prot)
{
	uint64_t perm = S2PT_PTE_S2AP_R | S2PT_PTE_S2AP_W | S2PT_PTE_XN;

	return (pte & ~perm) | (s2pt_leaf_attrs(prot, 0, 0) & perm);
}

/* ESR fault status codes: kind in bits 5:2, level in 1:0. */
static inline uint32_t s2pt_fsc(uint32_t kind, int level)
{
	static const uint32_t base[] = {0, 0x04, 0x08, 0x0c, 0x00};

	return base[kind] | ((uint32_t)level & 3u);
}

#endif /* S2PT_DESC_H */
