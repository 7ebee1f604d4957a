/*
 * VMSAv8-64 descriptor bits (Arm ARM D8, "Stage 2 attribute fields" and the stage-1 ones):
 * named masks and static inline encode/decode helpers. Address and attribute layouts depend on
 * the tables (stage 1 or 2, 52-bit formats, FWB, FEAT_XNX), so the helpers take their struct
 * s2pt_config: one codec per format, one walker for all.
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
#define S2PT_PTE_SH (3ull << S2PT_PTE_SH_SHIFT) /* OA[51:50] with LPA2 */
#define S2PT_PTE_SH_INNER (3ull << S2PT_PTE_SH_SHIFT)
#define S2PT_PTE_AF (1ull << 10)
#define S2PT_PTE_XN0 (1ull << 53) /* XN[0]: FEAT_XNX only, RES0 otherwise */
#define S2PT_PTE_XN (1ull << 54)  /* XN[1] */
#define S2PT_PTE_XN_MASK (3ull << 53)
#define S2PT_PTE_SW_SHIFT 55
#define S2PT_PTE_SW (0xfull << S2PT_PTE_SW_SHIFT) /* reserved for software, ignored by HW */

/* Stage-1 leaf attributes (EL1&0): AttrIndx[2:0] in bits 4:2 (bit 5 is NS, 0 here), AP[2:1]
 * in bits 7:6, nG, PXN and UXN where stage 2 has XN[1:0]. */
#define S2PT_PTE_S1_ATTRINDX (7ull << 2)
#define S2PT_PTE_S1_AP_EL0 (1ull << 6) /* AP[1]: EL0 access */
#define S2PT_PTE_S1_AP_RO (1ull << 7)  /* AP[2]: read-only */
#define S2PT_PTE_NG (1ull << 11)
#define S2PT_PTE_PXN (1ull << 53)
#define S2PT_PTE_UXN (1ull << 54)

/* An invalid entry software annotated with an owner id (KVM_INVALID_PTE_OWNER_MASK): bits 9:2. */
#define S2PT_PTE_OWNER_SHIFT 2
#define S2PT_PTE_OWNER (0xffull << S2PT_PTE_OWNER_SHIFT)

/* Leaf attribute bits s2pt writes (besides the address); anything else is a stray bit. */
#define S2PT_PTE_LEAF_ATTRS                                                                 \
	(S2PT_PTE_MEMATTR | S2PT_PTE_S2AP_R | S2PT_PTE_S2AP_W | S2PT_PTE_SH | S2PT_PTE_AF | \
	 S2PT_PTE_XN_MASK | S2PT_PTE_SW)

/* The permission bits of a leaf. */
#define S2PT_PTE_PERM (S2PT_PTE_S2AP_R | S2PT_PTE_S2AP_W | S2PT_PTE_XN_MASK)

static inline int s2pt_is_stage1(const struct s2pt_config *cfg)
{
	return (cfg->flags & S2PT_CONFIG_STAGE1) != 0;
}

static inline int s2pt_pte_valid(uint64_t pte)
{
	return (int)(pte & S2PT_PTE_VALID);
}

/* A table descriptor: valid, type bit set, above the last level. */
static inline int s2pt_pte_is_table(uint64_t pte, int level)
{
	return level < 3 && (pte & S2PT_PTE_TYPE_MASK) == S2PT_PTE_TYPE_TABLE;
}

/* Every descriptor bit that holds part of an address in this VM's format. */
static inline uint64_t s2pt_addr_bits(const struct s2pt_config *cfg)
{
	return cfg->oa_mask | cfg->oa_hi_mask;
}

/* Output / next-table address of a descriptor: in-place bits plus the 52-bit format's top. */
static inline uint64_t s2pt_pte_addr(const struct s2pt_config *cfg, uint64_t pte)
{
	return (pte & cfg->oa_mask) | (pte & cfg->oa_hi_mask) << cfg->oa_hi_shift;
}

/* The descriptor bits for an address (granule-aligned, below 2^52). */
static inline uint64_t s2pt_addr_pte(const struct s2pt_config *cfg, uint64_t pa)
{
	return (pa & cfg->oa_mask) | (pa >> cfg->oa_hi_shift & cfg->oa_hi_mask);
}

static inline uint64_t s2pt_table_pte(const struct s2pt_config *cfg, uint64_t table_pa)
{
	return s2pt_addr_pte(cfg, table_pa) | S2PT_PTE_TYPE_TABLE;
}

/* XN[1:0] for PX (EL1) and UX (EL0) execute: 00 both, 01 EL0 only, 10 neither, 11 EL1 only. */
static inline uint64_t s2pt_xn_bits(uint32_t prot)
{
	uint64_t xn = 0;

	if (!(prot & S2PT_PROT_UX))
		xn |= S2PT_PTE_XN;
	if (!(prot & S2PT_PROT_PX) != !(prot & S2PT_PROT_UX))
		xn |= S2PT_PTE_XN0;
	return xn;
}

/* Stage 1: AP[2] = !W, AP[1] = USER, PXN = !PX, UXN = !UX. */
static inline uint64_t s2pt_s1_perm_bits(uint32_t prot)
{
	uint64_t bits = 0;

	if (!(prot & S2PT_PROT_W))
		bits |= S2PT_PTE_S1_AP_RO;
	if (prot & S2PT_PROT_USER)
		bits |= S2PT_PTE_S1_AP_EL0;
	if (!(prot & S2PT_PROT_PX))
		bits |= S2PT_PTE_PXN;
	if (!(prot & S2PT_PROT_UX))
		bits |= S2PT_PTE_UXN;
	return bits;
}

static inline uint64_t s2pt_perm_bits(uint32_t prot)
{
	uint64_t bits = s2pt_xn_bits(prot);

	if (prot & S2PT_PROT_R)
		bits |= S2PT_PTE_S2AP_R;
	if (prot & S2PT_PROT_W)
		bits |= S2PT_PTE_S2AP_W;
	return bits;
}

/* The permission bits of @prot in the format of @cfg. */
static inline uint64_t s2pt_fmt_perm_bits(const struct s2pt_config *cfg, uint32_t prot)
{
	return s2pt_is_stage1(cfg) ? s2pt_s1_perm_bits(prot) : s2pt_perm_bits(prot);
}

/*
 * Leaf attribute bits for a permission set, a MemAttr field value (already encoded for the
 * VM's FWB setting), access flag and software bits.
 */
static inline uint64_t s2pt_leaf_attrs(const struct s2pt_config *cfg, uint32_t prot,
				       uint32_t memattr_field, int af, uint32_t sw)
{
	uint64_t attrs = (uint64_t)memattr_field << S2PT_PTE_MEMATTR_SHIFT | cfg->leaf_sh |
			 s2pt_fmt_perm_bits(cfg, prot) | (uint64_t)(sw & 0xf) << S2PT_PTE_SW_SHIFT;

	if (af)
		attrs |= S2PT_PTE_AF;
	return attrs;
}

/* Every attribute bit a leaf of @cfg's format may carry: stage 1 adds nG. */
static inline uint64_t s2pt_leaf_attr_mask(const struct s2pt_config *cfg)
{
	return S2PT_PTE_LEAF_ATTRS | (s2pt_is_stage1(cfg) ? S2PT_PTE_NG : 0);
}

/* Page at level 3 (type 0b11), block above it (type 0b01). */
static inline uint64_t s2pt_leaf_pte(const struct s2pt_config *cfg, uint64_t pa, uint64_t attrs,
				     int level)
{
	return s2pt_addr_pte(cfg, pa) | attrs |
	       (level == 3 ? S2PT_PTE_TYPE_PAGE : S2PT_PTE_TYPE_BLOCK);
}

/* The leaf's attribute bits without its address (and type). */
static inline uint64_t s2pt_pte_attrs(const struct s2pt_config *cfg, uint64_t pte)
{
	return pte & s2pt_leaf_attr_mask(cfg) & ~cfg->oa_hi_mask;
}

/* The XN[1:0] bits hardware reads: without FEAT_XNX bit 53 is RES0 and only XN[1] counts. */
static inline uint64_t s2pt_xn_read_mask(const struct s2pt_config *cfg)
{
	return (cfg->flags & S2PT_CONFIG_XNX) ? S2PT_PTE_XN_MASK : S2PT_PTE_XN;
}

/* PX = !(XN[1] ^ XN[0]), UX = !XN[1]. */
static inline uint32_t s2pt_pte_prot(const struct s2pt_config *cfg, uint64_t pte)
{
	uint32_t prot = 0;

	if (s2pt_is_stage1(cfg)) {
		prot = S2PT_PROT_R;
		if (!(pte & S2PT_PTE_S1_AP_RO))
			prot |= S2PT_PROT_W;
		if (pte & S2PT_PTE_S1_AP_EL0)
			prot |= S2PT_PROT_USER;
		if (!(pte & S2PT_PTE_PXN))
			prot |= S2PT_PROT_PX;
		if (!(pte & S2PT_PTE_UXN))
			prot |= S2PT_PROT_UX;
		return prot;
	}
	pte &= ~S2PT_PTE_XN_MASK | s2pt_xn_read_mask(cfg);

	if (pte & S2PT_PTE_S2AP_R)
		prot |= S2PT_PROT_R;
	if (pte & S2PT_PTE_S2AP_W)
		prot |= S2PT_PROT_W;
	if (!(pte & S2PT_PTE_XN))
		prot |= S2PT_PROT_UX;
	if (!(pte & S2PT_PTE_XN) == !(pte & S2PT_PTE_XN0))
		prot |= S2PT_PROT_PX;
	return prot;
}

static inline uint32_t s2pt_pte_memattr_field(uint64_t pte)
{
	return (uint32_t)((pte & S2PT_PTE_MEMATTR) >> S2PT_PTE_MEMATTR_SHIFT);
}

static inline uint32_t s2pt_pte_sw(uint64_t pte)
{
	return (uint32_t)((pte & S2PT_PTE_SW) >> S2PT_PTE_SW_SHIFT);
}

/* Replace the permission bits of a stage-2 leaf, keeping everything else. */
static inline uint64_t s2pt_pte_set_prot(uint64_t pte, uint32_t prot)
{
	return (pte & ~S2PT_PTE_PERM) | s2pt_perm_bits(prot);
}

/* The same for a leaf of @cfg's format (stage 1's AP and PXN / UXN share those bits). */
static inline uint64_t s2pt_pte_with_prot(const struct s2pt_config *cfg, uint64_t pte,
					  uint32_t prot)
{
	return (pte & ~S2PT_PTE_PERM) | s2pt_fmt_perm_bits(cfg, prot);
}

/*
 * MemAttr field <-> S2PT_MEMATTR_* for the VM's FWB setting. Without FWB the name is the
 * field; with FWB: 0b00xx Device (same subtype), 0b0101 Normal NC, 0b0110 Normal forced
 * write-back, 0b0111 the stage-1 attributes; the other FWB values are reserved.
 * s2pt_memattr_field() returns -1 for a name the VM cannot express.
 */
static inline int s2pt_memattr_field(const struct s2pt_config *cfg, uint32_t memattr)
{
	/* Stage 1: the MAIR index, AttrIndx[2:0]. */
	if (s2pt_is_stage1(cfg))
		return memattr <= 7 ? (int)memattr : -1;
	if (cfg->flags & S2PT_CONFIG_FWB) {
		if (memattr <= S2PT_MEMATTR_DEVICE_GRE || memattr == S2PT_MEMATTR_NORMAL_NC)
			return (int)memattr;
		if (memattr == S2PT_MEMATTR_NORMAL)
			return 0x6;
		return memattr == S2PT_MEMATTR_STAGE1 ? 0x7 : -1;
	}
	/* Device: [3:2] = 0, any subtype. Normal: outer [3:2] and inner [1:0] each NC/WT/WB. */
	if (memattr > 0xf || ((memattr & 0xc) && !(memattr & 0x3)))
		return -1;
	return (int)memattr;
}

/* The S2PT_MEMATTR_* of a field, or -1 for a reserved encoding. */
static inline int s2pt_memattr_name(const struct s2pt_config *cfg, uint32_t field)
{
	/* Stage 1: AttrIndx; bit 5 (NS) is ignored for Non-secure accesses. */
	if (s2pt_is_stage1(cfg))
		return (int)(field & 7);
	if (cfg->flags & S2PT_CONFIG_FWB) {
		if (field <= 0x3 || field == 0x5)
			return (int)field;
		if (field == 0x6)
			return (int)S2PT_MEMATTR_NORMAL;
		return field == 0x7 ? (int)S2PT_MEMATTR_STAGE1 : -1;
	}
	return ((field & 0xc) && !(field & 0x3)) ? -1 : (int)field;
}

/* What a MemAttr field stands for: its S2PT_MEMATTR_* name, or S2PT_MEMATTR_RESERVED | field
 * for an encoding the VM's format reserves (only foreign images hold one). */
static inline uint32_t s2pt_memattr_decode(const struct s2pt_config *cfg, uint32_t field)
{
	int name = s2pt_memattr_name(cfg, field);

	return name < 0 ? S2PT_MEMATTR_RESERVED | field : (uint32_t)name;
}

static inline int s2pt_memattr_is_device(uint32_t memattr)
{
	return memattr <= S2PT_MEMATTR_DEVICE_GRE;
}

/* ESR fault status codes: kind in bits 5:2, level in 1:0. */
static inline uint32_t s2pt_fsc(uint32_t kind, int level)
{
	static const uint32_t base[] = {0, 0x04, 0x08, 0x0c, 0x00};

	/* FEAT_LPA2's level -1: only translation and address-size faults happen there (no leaf
	 * lives at level -1, so no access-flag or permission fault). */
	if (level < 0)
		return kind == S2PT_FAULT_TRANSLATION ? 0x2bu : 0x29u;
	return base[kind] | ((uint32_t)level & 3u);
}

#endif /* S2PT_DESC_H */
