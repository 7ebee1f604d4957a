/*
 * Stage-1 tables on the one engine: geometry and TCR_EL1 from the architecture's formulas,
 * leaf bits composed field by field (AttrIndx, AP[2:1], SH, AF, nG, PXN, UXN), the EL1&0
 * permission rules (implicit PXN, execute-only EL0 pages), and what the stage-1 format
 * refuses.
 */
#include <string.h>

#include "s2pt_testlib.h"
#include <s2pt/mmu.h>

#define B_ATTRINDX(x) ((uint64_t)(x) << 2)
#define B_AP_EL0 (1ull << 6)
#define B_AP_RO (1ull << 7)
#define B_NG (1ull << 11)
#define B_PXN (1ull << 53)
#define B_UXN (1ull << 54)

#define R S2PT_PROT_R
#define W S2PT_PROT_W
#define PX S2PT_PROT_PX
#define UX S2PT_PROT_UX
#define USER S2PT_PROT_USER

TEST(stage1_geometry_follows_the_va_size)
{
	static const struct {
		uint32_t va_bits, granule, ips_bits, flags;
		uint32_t levels;
		int start;
		uint64_t root_entries;
	} cases[] = {
		/* levels = ceil((va - g) / (g - 3)); the root resolves what is left over. */
		{48, 4096, 48, 0, 4, 0, 512},
		{39, 4096, 40, 0, 3, 1, 512},
		{42, 4096, 40, 0, 4, 0, 8},
		{25, 4096, 32, 0, 2, 2, 16}, /* 25 - 21 = 4 bits left for level 2 */
		{48, 16384, 48, 0, 4, 0, 2},
		{47, 16384, 48, 0, 3, 1, 2048},
		{52, 16384, 52, S2PT_CONFIG_LPA2, 4, 0, 32},
		{48, 65536, 48, 0, 3, 1, 64},
		{42, 65536, 48, 0, 2, 2, 8192}, /* a full 64K table */
		{52, 65536, 52, 0, 3, 1, 1024},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct s2pt_config c;

		REQUIRE_EQ(s2pt_s1_config_init(&c, cases[i].va_bits, cases[i].granule,
					       cases[i].ips_bits, 7, cases[i].flags),
			   0);
		CHECK_EQ(c.levels, cases[i].levels);
		CHECK_EQ(c.start_level, cases[i].start);
		CHECK_EQ(c.root_tables, 1u);
		CHECK_EQ(c.root_entries, cases[i].root_entries);
		CHECK(c.flags & S2PT_CONFIG_STAGE1);
		CHECK_EQ(c.t0sz, 64 - cases[i].va_bits);
		CHECK_EQ(c.vmid, 7u);
	}
}

TEST(stage1_tcr_fields)
{
	struct s2pt_config c;

	/* 64K, 48-bit VA, 40-bit IPS, 16-bit ASID. */
	REQUIRE_EQ(s2pt_s1_config_init(&c, 48, 65536, 40, 300, 0), 0);
	CHECK_EQ(c.vtcr & 0x3f, 16ull);                 /* T0SZ */
	CHECK_EQ((c.vtcr >> 8) & 3, 1ull);              /* IRGN0 WBWA */
	CHECK_EQ((c.vtcr >> 10) & 3, 1ull);             /* ORGN0 WBWA */
	CHECK_EQ((c.vtcr >> 12) & 3, 3ull);             /* SH0 inner */
	CHECK_EQ((c.vtcr >> 14) & 3, 1ull);             /* TG0 64K = 0b01 */
	CHECK_EQ((c.vtcr >> 23) & 1, 1ull);             /* EPD1: no TTBR1 walks */
	CHECK_EQ((c.vtcr >> 32) & 7, 2ull);             /* IPS 40 bits = 0b010 */
	CHECK_EQ((c.vtcr >> 36) & 1, 1ull);             /* AS: 16-bit ASID */
	CHECK_EQ((c.vtcr >> 59) & 1, 0ull);             /* DS */
	CHECK_EQ((c.vtcr >> 16) & 0x3f, 0ull);          /* T1SZ untouched */
	REQUIRE_EQ(s2pt_s1_config_init(&c, 39, 16384, 52, 1, S2PT_CONFIG_LPA2), 0);
	CHECK_EQ((c.vtcr >> 14) & 3, 2ull);             /* TG0 16K = 0b10 */
	CHECK_EQ((c.vtcr >> 32) & 7, 6ull);             /* IPS 52 bits */
	CHECK_EQ((c.vtcr >> 36) & 1, 0ull);             /* 8-bit ASID */
	CHECK_EQ((c.vtcr >> 59) & 1, 1ull);             /* DS */
	REQUIRE_EQ(s2pt_s1_config_init(&c, 48, 4096, 48, 1, 0), 0);
	CHECK_EQ((c.vtcr >> 14) & 3, 0ull);             /* TG0 4K = 0b00 */
}

TEST(stage1_config_refuses_what_it_cannot_build)
{
	struct s2pt_config c;

	memset(&c, 0xa5, sizeof(c));
	CHECK_EQ(s2pt_s1_config_init(&c, 24, 4096, 48, 1, 0), S2PT_ECONFIG);  /* T0SZ 40 */
	CHECK_EQ(s2pt_s1_config_init(&c, 49, 4096, 48, 1, 0), S2PT_ECONFIG);  /* no LVA */
	CHECK_EQ(s2pt_s1_config_init(&c, 53, 4096, 52, 1, S2PT_CONFIG_LPA2), S2PT_ECONFIG);
	CHECK_EQ(s2pt_s1_config_init(&c, 48, 4096, 52, 1, 0), S2PT_ECONFIG);  /* 52 needs DS */
	CHECK_EQ(s2pt_s1_config_init(&c, 48, 65536, 48, 1, S2PT_CONFIG_LPA2), S2PT_ECONFIG);
	CHECK_EQ(s2pt_s1_config_init(&c, 48, 8192, 48, 1, 0), S2PT_ECONFIG);
	CHECK_EQ(s2pt_s1_config_init(&c, 48, 4096, 46, 1, 0), S2PT_ECONFIG);  /* no IPS code */
	CHECK_EQ(s2pt_s1_config_init(&c, 48, 4096, 48, 65536, 0), S2PT_ECONFIG);
	CHECK_EQ(s2pt_s1_config_init(&c, 48, 4096, 48, 1, S2PT_CONFIG_FWB), S2PT_ECONFIG);
	CHECK_EQ(s2pt_s1_config_init(&c, 48, 4096, 48, 1, S2PT_CONFIG_KVM), S2PT_ECONFIG);
	/* Untouched on error. */
	CHECK_EQ(c.ipa_bits, 0xa5a5a5a5u);
}

/* The stage-1 leaf composed from the Arm ARM's field layout. */
static uint64_t s1_leaf(uint64_t ipa, int level, uint32_t prot, uint32_t attr, int ng)
{
	uint64_t d = ipa | (level == 3 ? 3ull : 1ull) | B_ATTRINDX(attr) | A_SH_INNER | A_AF;

	if (!(prot & W))
		d |= B_AP_RO;
	if (prot & USER)
		d |= B_AP_EL0;
	if (!(prot & PX))
		d |= B_PXN;
	if (!(prot & UX))
		d |= B_UXN;
	if (ng)
		d |= B_NG;
	return d;
}

TEST(stage1_leaf_descriptor_bits)
{
	struct fx f;
	const uint64_t va = 0x7f0012345000ull, ipa = 0x80123000ull;

	REQUIRE_EQ(fx_init_s1(&f, 48, 4096, 40, 16, 0x40000000ull, 5, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, va, ipa, 4096, R | USER | UX, 3, S2PT_MAP_NG), 0);
	CHECK_EQ(sw_desc(&f.pt, va, 3), s1_leaf(ipa, 3, R | USER | UX, 3, 1));
	CHECK_EQ(sw_desc(&f.pt, va, 3),
		 ipa | 3 | (3ull << 2) | (1ull << 6) | (1ull << 7) | (3ull << 8) | (1ull << 10) |
			 (1ull << 11) | (1ull << 53));
	/* A 2 MiB block at level 2: type 0b01, EL1 read-write-execute, global. */
	REQUIRE_EQ(s2pt_map(&f.pt, 0x200000ull, 0x600000ull, MiB(2), R | W | PX, 0, 0), 0);
	CHECK_EQ(sw_desc(&f.pt, 0x200000ull, 2), s1_leaf(0x600000ull, 2, R | W | PX, 0, 0));
	/* Table descriptors carry no hierarchical limits (APTable, XNTable, PXNTable, NSTable). */
	CHECK_EQ(sw_desc(&f.pt, va, 0) >> 59, 0ull);
	CHECK_EQ(sw_desc(&f.pt, va, 0) & 3, 3ull);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	/* TTBR0_EL1: BADDR | ASID << 48. */
	CHECK_EQ(s2pt_vttbr(&f.pt), f.pt.root_pa | (5ull << 48));
	fx_fini(&f);
}

TEST(stage1_translate_decodes_the_leaf)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;

	REQUIRE_EQ(fx_init_s1(&f, 39, 4096, 40, 16, 0x40000000ull, 1, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 0x1000, 0x9000, 4096, R | W | USER, 6, S2PT_MAP_NG), 0);
	REQUIRE_EQ(s2pt_translate(&f.pt, 0x1234, S2PT_ACCESS_READ_EL0, &t, &flt), 0);
	CHECK_EQ(t.pa, 0x9234ull);
	CHECK_EQ(t.level, 3);
	CHECK_EQ(t.size, 4096ull);
	CHECK_EQ(t.prot, R | W | USER);
	CHECK_EQ(t.memattr, 6u);
	CHECK(t.pte & B_NG);
	/* Above the VA size: translation fault, level 0. */
	CHECK_EQ(s2pt_translate(&f.pt, 1ull << 39, S2PT_ACCESS_READ, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.kind, S2PT_FAULT_TRANSLATION);
	CHECK_EQ(flt.level, 0);
	/* An unmapped VA stops where the walk found nothing (level 1 root, start level 1). */
	CHECK_EQ(s2pt_translate(&f.pt, 1ull << 31, S2PT_ACCESS_READ, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.fsc, 0x05u);
	/* AF clear: access flag fault before any permission check. */
	REQUIRE_EQ(s2pt_map(&f.pt, 0x2000, 0xa000, 4096, R, 0, S2PT_MAP_NO_AF), 0);
	CHECK_EQ(s2pt_translate(&f.pt, 0x2000, S2PT_ACCESS_WRITE_EL0, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.fsc, 0x0bu);
	fx_fini(&f);
}

/* EL1&0 stage-1 permissions per AP[2:1], PXN and UXN (PAN and WXN off). */
TEST(stage1_permissions_el1_and_el0)
{
	static const struct {
		uint32_t prot;
		/* allowed: READ, WRITE, EXEC, EXEC_EL0, READ_EL0, WRITE_EL0 */
		int ok[6];
	} cases[] = {
		{R, {1, 0, 0, 0, 0, 0}},
		{R | W, {1, 1, 0, 0, 0, 0}},
		{R | W | PX, {1, 1, 1, 0, 0, 0}},
		{R | PX | UX, {1, 0, 1, 1, 0, 0}},
		/* EL0 executes an execute-only page (AP[1] = 0, UXN = 0). */
		{R | UX, {1, 0, 0, 1, 0, 0}},
		{R | USER, {1, 0, 0, 0, 1, 0}},
		{R | USER | PX, {1, 0, 1, 0, 1, 0}},
		{R | W | USER, {1, 1, 0, 0, 1, 1}},
		/* Writable at EL0: never executable at EL1, PXN or not. */
		{R | W | USER | PX | UX, {1, 1, 0, 1, 1, 1}},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fx f;

		REQUIRE_EQ(fx_init_s1(&f, 48, 4096, 48, 16, 0x40000000ull, 1, 0), 0);
		REQUIRE_EQ(s2pt_map(&f.pt, 0x5000, 0x7000, 4096, cases[i].prot, 0, 0), 0);
		for (uint32_t a = 0; a < 6; a++) {
			struct s2pt_translation t;
			struct s2pt_fault flt;
			int ret = s2pt_translate(&f.pt, 0x5008, a, &t, &flt);

			CHECK_MSG(ret == (cases[i].ok[a] ? 0 : S2PT_EFAULT),
				  "prot %#x access %u: %d", cases[i].prot, a, ret);
			if (ret)
				CHECK_EQ(flt.fsc, 0x0fu); /* permission, level 3 */
		}
		/* The batch walk agrees with the single one. */
		for (uint32_t a = 0; a < 6; a++) {
			uint64_t va = 0x5010, pa;
			uint8_t fsc;

			CHECK_EQ(s2pt_translate_many(&f.pt, &va, 1, a, &pa, &fsc),
				 cases[i].ok[a] ? 0 : 1);
			CHECK_EQ(fsc, cases[i].ok[a] ? S2PT_FSC_NONE : 0x0f);
		}
		fx_fini(&f);
	}
}

TEST(stage1_protect_rewrites_ap_and_xn)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;

	REQUIRE_EQ(fx_init_s1(&f, 48, 4096, 48, 16, 0x40000000ull, 1, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 0, 0x100000, KiB(64), R | W, 2, S2PT_MAP_NG), 0);
	fx_log(&f, 64);
	REQUIRE_EQ(s2pt_protect(&f.pt, KiB(8), KiB(8), R | USER | UX), 0);
	CHECK_EQ(sw_desc(&f.pt, KiB(8), 3), s1_leaf(0x102000, 3, R | USER | UX, 2, 1));
	CHECK_EQ(sw_desc(&f.pt, KiB(12), 3), s1_leaf(0x103000, 3, R | USER | UX, 2, 1));
	CHECK_EQ(sw_desc(&f.pt, KiB(16), 3), s1_leaf(0x104000, 3, R | W, 2, 1));
	CHECK_EQ(f.log.count, 2u); /* one PERM event per changed leaf */
	CHECK_EQ(s2pt_translate(&f.pt, KiB(8), S2PT_ACCESS_WRITE, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(s2pt_translate(&f.pt, KiB(8), S2PT_ACCESS_EXEC_EL0, &t, &flt), 0);
	CHECK_INVARIANTS(&f.pt);
	/* Unmap frees every table again: only the root is left. */
	REQUIRE_EQ(s2pt_unmap(&f.pt, 0, KiB(64), NULL), 0);
	CHECK_EQ(f.pt.table_pages, 1u);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

TEST(stage1_refuses_stage2_only_arguments)
{
	struct fx s1, s2;
	struct snap before;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	uint64_t changed;
	int found;

	REQUIRE_EQ(fx_init_s1(&s1, 48, 4096, 48, 16, 0x40000000ull, 1, 0), 0);
	REQUIRE_EQ(fx_init(&s2, 40, 4096, 48, 16, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&s1.pt, 0, 0x10000, 4096, R | W, 0, 0), 0);
	snap_take(&before, &s1);
	CHECK_EQ(s2pt_map(&s1.pt, 4096, 0x10000, 4096, W, 0, 0), S2PT_EINVAL); /* no R */
	CHECK_EQ(s2pt_map(&s1.pt, 4096, 0x10000, 4096, R, 8, 0), S2PT_EINVAL); /* AttrIndx */
	CHECK_EQ(s2pt_map(&s1.pt, 4096, 0x10000, 4096, R | 0x20, 0, 0), S2PT_EINVAL);
	CHECK_EQ(s2pt_protect(&s1.pt, 0, 4096, PX), S2PT_EINVAL);
	CHECK_EQ(s2pt_wrprotect(&s1.pt, 0, 4096, 0, &changed), S2PT_EINVAL);
	CHECK_EQ(s2pt_relax_perms(&s1.pt, 0, R | W, &found), S2PT_EINVAL);
	CHECK_EQ(s2pt_translate(&s1.pt, 0, 6, &t, &flt), S2PT_EINVAL);
	CHECK_UNCHANGED(&before, &s1);
	snap_free(&before);
	/* Stage 2 has no USER, no nG and no EL0 data accesses. */
	CHECK_EQ(s2pt_map(&s2.pt, 0, 0x10000, 4096, R | USER, S2PT_MEMATTR_NORMAL, 0),
		 S2PT_EINVAL);
	CHECK_EQ(s2pt_map(&s2.pt, 0, 0x10000, 4096, R, S2PT_MEMATTR_NORMAL, S2PT_MAP_NG),
		 S2PT_EINVAL);
	CHECK_EQ(s2pt_translate(&s2.pt, 0, S2PT_ACCESS_READ_EL0, &t, &flt), S2PT_EINVAL);
	CHECK_EQ(s2pt_translate(&s2.pt, 0, S2PT_ACCESS_WRITE_EL0, &t, &flt), S2PT_EINVAL);
	{
		/* Memslots are guest physical memory: the MMU layer takes stage-2 tables only. */
		struct s2pt_mmu mmu;
		uint32_t id;

		s2pt_mmu_init(&mmu, &s1.pt);
		CHECK_EQ(s2pt_memslot_add(&mmu, 0, 0, MiB(2), 0, 4096, &id), S2PT_EINVAL);
		CHECK_EQ(mmu.nslots, 0u);
		s2pt_mmu_release(&mmu);
	}
	fx_fini(&s1);
	fx_fini(&s2);
}
