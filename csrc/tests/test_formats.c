/*
 * Per-VM descriptor formats and the features around them, checked bit by bit against the
 * Arm ARM stage-2 layout (VMSAv8-64): 52-bit output (LPA2 and 64K), FEAT_XNX, FWB MemAttr,
 * software bits, owner annotations and TLB event reasons. Expected values are composed here.
 */
#include <string.h>

#include "s2pt_testlib.h"

#define RW (S2PT_PROT_R | S2PT_PROT_W)
#define NORMAL S2PT_MEMATTR_NORMAL
#define BITS(h, l) ((~0ull >> (63 - (h))) & ~((1ull << (l)) - 1))
#define FSC_TRANS(l) (0x04u | (l))
#define FSC_PERM(l) (0x0Cu | (l))

/* VTCR_EL2: T0SZ 5:0, SL0 7:6, IRGN0 = ORGN0 = WBWA, SH0 = inner, TG0 15:14, PS 18:16, RES1 31, DS 32. */
static uint64_t a_vtcr(uint32_t ipa, uint64_t sl0, uint64_t tg0, uint64_t ps, int ds)
{
	return (64 - ipa) | sl0 << 6 | 1ull << 8 | 1ull << 10 | 3ull << 12 | tg0 << 14 | ps << 16 |
	       1ull << 31 | (uint64_t)(ds != 0) << 32;
}

/* Address fields: LPA2 holds OA[49:g] in place and OA[51:50] in bits 9:8; 64K/52 holds
 * OA[47:16] in place and OA[51:48] in bits 15:12. */
static uint64_t a_addr_lpa2(uint64_t pa, uint32_t g)
{
	return (pa & BITS(49, g)) | ((pa >> 50) & 3) << 8;
}

static uint64_t a_addr_64k(uint64_t pa, uint32_t g)
{
	(void)g;
	return (pa & BITS(47, 16)) | ((pa >> 48) & 0xf) << 12;
}

static void check_cfg(const struct s2pt_config *c, uint32_t levels, int start, uint32_t roots,
		      uint64_t entries, int min_block, uint64_t vtcr)
{
	CHECK_EQ(c->levels, levels);
	CHECK_EQ(c->start_level, start);
	CHECK_EQ(c->root_tables, roots);
	CHECK_EQ(c->root_entries, entries);
	CHECK_EQ(c->min_block_level, min_block);
	CHECK_EQ(c->vtcr, vtcr);
}

static void check_roundtrip(const struct s2pt_config *c, uint32_t flags)
{
	struct s2pt_config d;

	REQUIRE_EQ(s2pt_config_from_vtcr(&d, c->vtcr, c->vmid, flags), 0);
	check_cfg(&d, c->levels, c->start_level, c->root_tables, c->root_entries,
		  c->min_block_level, c->vtcr);
	CHECK_EQ(d.ipa_bits, c->ipa_bits);
	CHECK_EQ(d.pa_bits, c->pa_bits);
	CHECK_EQ(d.oa_mask, c->oa_mask);
	CHECK_EQ(d.oa_hi_mask, c->oa_hi_mask);
	CHECK_EQ(d.leaf_sh, c->leaf_sh);
	CHECK_EQ(d.flags & S2PT_CONFIG_LPA2, c->flags & S2PT_CONFIG_LPA2);
}

TEST(fmt_config_52bit)
{
	struct s2pt_config c, keep;

	/* 4K LPA2 52/52: 4 levels from 0, 2^(52-39) root entries = 16 tables; SL0 0b10 = level 0. */
	REQUIRE_EQ(s2pt_config_init(&c, 52, 4096, 52, 1, S2PT_CONFIG_LPA2), 0);
	check_cfg(&c, 4, 0, 16, 8192, 0, a_vtcr(52, 2, 0, 6, 1));
	CHECK_EQ(c.vtcr >> 32 & 1, 1);
	CHECK_EQ(c.vtcr >> 16 & 7, 6);
	CHECK_EQ(c.oa_mask, BITS(49, 12));
	CHECK_EQ(c.oa_hi_mask, 3ull << 8);
	CHECK_EQ(c.oa_hi_shift, 42);
	CHECK_EQ(c.leaf_sh, 0); /* bits 9:8 are OA[51:50]; VTCR_EL2.SH0 gives shareability */
	check_roundtrip(&c, 0);
	/* 4K LPA2, 49-bit IPA: still level 0 (never -1), 2 concatenated tables. */
	REQUIRE_EQ(s2pt_config_init(&c, 49, 4096, 52, 1, S2PT_CONFIG_LPA2), 0);
	check_cfg(&c, 4, 0, 2, 1024, 0, a_vtcr(49, 2, 0, 6, 1));

	/* 16K LPA2 52: level 0 resolves 52 - 47 = 5 bits (32 entries); SL0 0b11 = level 0 (DS only). */
	REQUIRE_EQ(s2pt_config_init(&c, 52, 16384, 52, 1, S2PT_CONFIG_LPA2), 0);
	check_cfg(&c, 4, 0, 1, 32, 1, a_vtcr(52, 3, 2, 6, 1));
	CHECK_EQ(c.oa_mask, BITS(49, 14));
	check_roundtrip(&c, S2PT_CONFIG_FWB);

	/* 64K, 52-bit PA (no LPA2): 3 levels from 1 (2^10 entries); SL0 0b10 = level 1; blocks at 1. */
	REQUIRE_EQ(s2pt_config_init(&c, 52, 65536, 52, 1, 0), 0);
	check_cfg(&c, 3, 1, 1, 1024, 1, a_vtcr(52, 2, 1, 6, 0));
	CHECK_EQ(c.oa_mask, BITS(47, 16));
	CHECK_EQ(c.oa_hi_mask, 0xfull << 12);
	CHECK_EQ(c.oa_hi_shift, 36);
	CHECK_EQ(c.leaf_sh, 3ull << 8);
	check_roundtrip(&c, 0);

	/* Rejected, and @cfg untouched: LPA2 is 4K/16K only; a 52-bit PA needs LPA2 or 64K. */
	memset(&c, 0xab, sizeof(c));
	keep = c;
	CHECK_EQ(s2pt_config_init(&c, 48, 65536, 52, 1, S2PT_CONFIG_LPA2), S2PT_ECONFIG);
	CHECK_EQ(s2pt_config_init(&c, 48, 4096, 52, 1, 0), S2PT_ECONFIG);
	CHECK_EQ(s2pt_config_init(&c, 52, 65536, 48, 1, 0), S2PT_ECONFIG); /* IPA > PA */
	CHECK(memcmp(&c, &keep, sizeof(c)) == 0);
	/* VTCR: DS with 64K; PS = 52 bits with 4K and no DS; 16K SL0 = 3 without DS. */
	CHECK_EQ(s2pt_config_from_vtcr(&c, a_vtcr(48, 2, 1, 6, 1), 1, 0), S2PT_ECONFIG);
	CHECK_EQ(s2pt_config_from_vtcr(&c, a_vtcr(48, 2, 0, 6, 0), 1, 0), S2PT_ECONFIG);
	CHECK_EQ(s2pt_config_from_vtcr(&c, a_vtcr(48, 3, 2, 5, 0), 1, 0), S2PT_ECONFIG);
}

/* Walk @ipa: every table descriptor holds the next table's PA in the VM's address format. */
static void check_tables(struct fx *f, uint64_t ipa, uint64_t (*addr)(uint64_t, uint32_t),
			 uint32_t want_steps, uint64_t pa_hi)
{
	struct s2pt_walk_step st[S2PT_MAX_LEVELS];
	uint32_t n = 0;

	REQUIRE_EQ(s2pt_walk_path(&f->pt, ipa, st, &n), 0);
	REQUIRE_EQ(n, want_steps);
	CHECK_EQ(st[0].table_pa, f->pt.root_pa);
	for (uint32_t i = 0; i < n; i++) {
		CHECK_EQ(st[i].desc, *pa_ptr(&f->pool, st[i].desc_pa));
		CHECK_EQ(st[i].table_pa >> 48, pa_hi);
		if (i + 1 < n)
			CHECK_EQ(st[i].desc, addr(st[i + 1].table_pa, f->cfg.granule_shift) | 3);
	}
}

static void check_xlate(struct fx *f, uint64_t ipa, uint64_t pa, int level, uint64_t size)
{
	struct s2pt_translation t;
	struct s2pt_fault flt;

	REQUIRE_EQ(s2pt_translate(&f->pt, ipa, S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.pa, pa);
	CHECK_EQ(t.level, level);
	CHECK_EQ(t.size, size);
}

/*
 * Map one block of the start level's span at @ipa -> @pa: it must be root entry @index with
 * descriptor @desc_no_type | block type, translate anywhere inside, keep every invariant.
 */
static void check_root_block(struct fx *f, uint64_t ipa, uint64_t pa, int level, uint64_t index,
			     uint64_t desc_no_type)
{
	uint64_t span = 1ull << a_shift(f->cfg.granule_shift, level), off = span / 3 & ~7ull;

	REQUIRE_EQ(s2pt_map(&f->pt, ipa, pa, span, RW, NORMAL, 0), 0);
	CHECK_EQ(rd_desc(&f->pool, f->pt.root_pa, index), desc_no_type | A_TYPE_BLOCK);
	check_xlate(f, ipa + off, pa + off, level, span);
	CHECK_INVARIANTS(&f->pt);
	CHECK_REFCOUNTS(&f->pt);
}

TEST(fmt_lpa2_high_pa)
{
	struct fx f;
	const uint64_t base = 0xF000000000000ull, pa = 0x9555544443000ull; /* PA[51:48] 0b1001 */
	const uint64_t blk_ipa = 3ull << 39, blk_pa = 0xA000000000000ull;
	/* Leaf attributes for RW Normal WB, AF: no SH bits with LPA2. */
	const uint64_t attrs = A_MEMATTR(0xF) | A_S2AP_R | A_S2AP_W | A_AF | A_XN;

	REQUIRE_EQ(fx_init_flags(&f, 52, 4096, 52, 32, base, S2PT_CONFIG_LPA2), 0);
	/* VTTBR_EL2: BADDR[47:x] in place, root PA[51:48] in bits 5:2, VMID in 63:48. */
	CHECK_EQ(f.pt.root_pa >> 48, 0xF);
	CHECK_EQ(s2pt_vttbr(&f.pt), (f.pt.root_pa & BITS(47, 0)) | 0xFull << 2 | 1ull << 48);

	REQUIRE_EQ(s2pt_map(&f.pt, 0x1000, pa, KiB(4), RW, NORMAL, 0), 0);
	check_tables(&f, 0x1000, a_addr_lpa2, 4, 0xF);
	{
		struct s2pt_walk_step st[S2PT_MAX_LEVELS];
		uint32_t n = 0;

		REQUIRE_EQ(s2pt_walk_path(&f.pt, 0x1000, st, &n), 0);
		REQUIRE_EQ(n, 4);
		CHECK_EQ(st[3].desc, (pa & BITS(49, 12)) | 2ull << 8 | attrs | A_TYPE_TABLE);
		CHECK_EQ(st[3].desc & BITS(9, 8), 2ull << 8); /* OA[51:50] = 0b10 */
	}
	check_xlate(&f, 0x1abc, pa + 0xabc, 3, KiB(4));

	/* A 512 GiB aligned range: one level-0 block (4K LPA2 allows blocks at level 0). */
	check_root_block(&f, blk_ipa, blk_pa, 0, 3, a_addr_lpa2(blk_pa, 12) | attrs);
	fx_fini(&f);

	/* A pool above 2^48 cannot serve a 48-bit VM (table addresses are output addresses). */
	REQUIRE_EQ(fx_init_flags(&f, 40, 4096, 48, 32, base, 0), S2PT_ECONFIG);
	fx_fini(&f);
}

TEST(fmt_64k_52bit_high_pa)
{
	struct fx f;
	const uint64_t base = 0xABCD000000000ull, pa = 0x5123456780000ull;
	const uint64_t blk_ipa = 5ull << 42, blk_pa = 0x7000000000000ull;
	const uint64_t attrs = A_MEMATTR(0xF) | A_S2AP_R | A_S2AP_W | A_SH_INNER | A_AF | A_XN;

	REQUIRE_EQ(fx_init_flags(&f, 52, 65536, 52, 8, base, 0), 0);
	CHECK_EQ(f.pt.root_pa >> 48, 0xA);
	CHECK_EQ(s2pt_vttbr(&f.pt), (f.pt.root_pa & BITS(47, 0)) | 0xAull << 2 | 1ull << 48);

	REQUIRE_EQ(s2pt_map(&f.pt, KiB(64), pa, KiB(64), RW, NORMAL, 0), 0);
	check_tables(&f, KiB(64), a_addr_64k, 3, 0xA);
	{
		struct s2pt_walk_step st[S2PT_MAX_LEVELS];
		uint32_t n = 0;

		REQUIRE_EQ(s2pt_walk_path(&f.pt, KiB(64), st, &n), 0);
		REQUIRE_EQ(n, 3);
		/* OA[51:48] = 0x5 in bits 15:12; SH stays in 9:8. */
		CHECK_EQ(st[2].desc, (pa & BITS(47, 16)) | 0x5ull << 12 | attrs | A_TYPE_TABLE);
	}
	check_xlate(&f, KiB(64) + 0x1234, pa + 0x1234, 3, KiB(64));

	/* A 4 TiB aligned range: a level-1 block (64K with a 52-bit PA). */
	check_root_block(&f, blk_ipa, blk_pa, 1, 5, a_addr_64k(blk_pa, 16) | attrs);
	fx_fini(&f);
}

TEST(fmt_xnx)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	struct snap s;
	const uint64_t px = GiB(2), ux = GiB(2) + KiB(4);
	uint64_t ipas[2] = {px, ux}, pas[2];
	uint8_t fsc[2];

	REQUIRE_EQ(fx_init_flags(&f, 40, 4096, 48, 32, 0x40000000ull, S2PT_CONFIG_XNX), 0);
	/* XN[1:0] (54:53): 00 EL1+EL0, 01 EL0 only, 10 none, 11 EL1 only. */
	REQUIRE_EQ(s2pt_map(&f.pt, px, GiB(4), KiB(4), S2PT_PROT_PX, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, ux, GiB(5), KiB(4), S2PT_PROT_R | S2PT_PROT_UX, NORMAL, 0), 0);
	CHECK_EQ(sw_desc(&f.pt, px, 3), GiB(4) | A_TYPE_TABLE | A_MEMATTR(0xF) | A_SH_INNER | A_AF |
						3ull << 53);
	CHECK_EQ(sw_desc(&f.pt, ux, 3) >> 53 & 3, 1);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2) + KiB(8), GiB(6), KiB(4), S2PT_PROT_R, NORMAL, 0), 0);
	CHECK_EQ(sw_desc(&f.pt, GiB(2) + KiB(8), 3) >> 53 & 3, 2);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2) + KiB(12), GiB(7), KiB(4), S2PT_PROT_X, NORMAL, 0), 0);
	CHECK_EQ(sw_desc(&f.pt, GiB(2) + KiB(12), 3) >> 53 & 3, 0);

	/* EL1 fetch needs PX (not R), EL0 fetch needs UX; otherwise permission fault at the leaf. */
	REQUIRE_EQ(s2pt_translate(&f.pt, px, S2PT_ACCESS_EXEC, &t, &flt), 0);
	CHECK_EQ(t.prot, S2PT_PROT_PX);
	CHECK_EQ(s2pt_translate(&f.pt, px, S2PT_ACCESS_EXEC_EL0, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.kind, S2PT_FAULT_PERMISSION);
	CHECK_EQ(flt.fsc, FSC_PERM(3));
	CHECK_EQ(s2pt_translate(&f.pt, px, S2PT_ACCESS_READ, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.fsc, FSC_PERM(3));
	REQUIRE_EQ(s2pt_translate(&f.pt, ux, S2PT_ACCESS_EXEC_EL0, &t, &flt), 0);
	CHECK_EQ(t.prot, S2PT_PROT_R | S2PT_PROT_UX);
	CHECK_EQ(s2pt_translate(&f.pt, ux, S2PT_ACCESS_EXEC, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.fsc, FSC_PERM(3));

	CHECK_EQ(s2pt_translate_many(&f.pt, ipas, 2, S2PT_ACCESS_EXEC, pas, fsc), 1);
	CHECK_EQ(pas[0], GiB(4));
	CHECK_EQ(fsc[0], S2PT_FSC_NONE);
	CHECK_EQ(pas[1], 0);
	CHECK_EQ(fsc[1], FSC_PERM(3));
	CHECK_EQ(s2pt_translate_many(&f.pt, ipas, 2, S2PT_ACCESS_EXEC_EL0, pas, fsc), 1);
	CHECK_EQ(fsc[0], FSC_PERM(3));
	CHECK_EQ(pas[1], GiB(5));
	CHECK_EQ(fsc[1], S2PT_FSC_NONE);
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);

	/* Without FEAT_XNX, PX and UX go together: PX or UX alone is refused, nothing changes. */
	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, px, GiB(4), KiB(4), RW, NORMAL, 0), 0);
	fx_log(&f, 16);
	snap_take(&s, &f);
	CHECK_EQ(s2pt_map(&f.pt, px, GiB(5), KiB(4), S2PT_PROT_R | S2PT_PROT_PX, NORMAL, 0),
		 S2PT_EINVAL);
	CHECK_EQ(s2pt_map(&f.pt, ux, GiB(5), KiB(4), S2PT_PROT_UX, NORMAL, 0), S2PT_EINVAL);
	CHECK_UNCHANGED(&s, &f);
	snap_free(&s);
	fx_fini(&f);
}

TEST(fmt_fwb_memattr)
{
	/* HCR_EL2.FWB = 1: MemAttr[3:0] 0b00xx Device, 0b0101 NC, 0b0110 WB, 0b0111 stage 1. */
	static const uint32_t name[] = {NORMAL, S2PT_MEMATTR_NORMAL_NC, S2PT_MEMATTR_STAGE1,
					S2PT_MEMATTR_DEVICE_nGnRnE, S2PT_MEMATTR_DEVICE_nGnRE,
					S2PT_MEMATTR_DEVICE_GRE};
	static const uint64_t field[] = {0x6, 0x5, 0x7, 0x0, 0x1, 0x3};
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	struct snap s;

	REQUIRE_EQ(fx_init_flags(&f, 40, 4096, 48, 32, 0x40000000ull, S2PT_CONFIG_FWB), 0);
	for (uint64_t i = 0; i < 6; i++) {
		uint64_t ipa = GiB(2) + KiB(4) * i;

		REQUIRE_EQ(s2pt_map(&f.pt, ipa, GiB(4) + KiB(4) * i, KiB(4), RW, name[i], 0), 0);
		CHECK_EQ(sw_desc(&f.pt, ipa, 3), (GiB(4) + KiB(4) * i) | A_TYPE_TABLE |
							 A_MEMATTR(field[i]) | A_S2AP_R | A_S2AP_W |
							 A_SH_INNER | A_AF | A_XN);
		REQUIRE_EQ(s2pt_translate(&f.pt, ipa, S2PT_ACCESS_READ, &t, &flt), 0);
		CHECK_EQ(t.memattr, name[i]);
	}
	/* Normal write-through cannot be expressed with FWB. */
	snap_take(&s, &f);
	CHECK_EQ(s2pt_map(&f.pt, GiB(3), GiB(4), KiB(4), RW, S2PT_MEMATTR_NORMAL_WT, 0), S2PT_EINVAL);
	CHECK_UNCHANGED(&s, &f);
	snap_free(&s);
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);

	/* STAGE1 exists only with FWB. */
	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	CHECK_EQ(s2pt_map(&f.pt, GiB(2), GiB(4), KiB(4), RW, S2PT_MEMATTR_STAGE1, 0), S2PT_EINVAL);
	CHECK_EQ(f.pt.table_pages, f.cfg.root_tables);
	fx_fini(&f);
}

TEST(fmt_software_bits)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	const uint64_t leaf = a_leaf(GiB(4), 3, RW, NORMAL, 1);
	uint64_t table;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(4), KiB(4), RW, NORMAL, S2PT_MAP_SW(0xA)), 0);
	CHECK_EQ(sw_desc(&f.pt, GiB(2), 3), leaf | 0xAull << 55); /* bits 58:55, ignored by HW */
	table = sw_table(&f.pt, GiB(2), 3);
	fx_log(&f, 16);
	/* Only the software bits differ: rewritten in place, nothing cached went stale. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(4), KiB(4), RW, NORMAL, S2PT_MAP_SW(0x5)), 0);
	CHECK_EQ(sw_desc(&f.pt, GiB(2), 3), leaf | 0x5ull << 55);
	CHECK_EQ(sw_table(&f.pt, GiB(2), 3), table);
	CHECK_EQ(f.log.count, 0);
	REQUIRE_EQ(s2pt_translate(&f.pt, GiB(2), S2PT_ACCESS_READ, &t, &flt), 0);
	CHECK_EQ(t.sw, 0x5);
	/* A different output is a replacement: break-before-make, REPLACE. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(5), KiB(4), RW, NORMAL, S2PT_MAP_SW(0x5)), 0);
	REQUIRE_EQ(f.log.count, 1);
	CHECK_EQ(f.events[0].kind, S2PT_TLBI_IPA);
	CHECK_EQ(f.events[0].ipa, GiB(2));
	CHECK_EQ(f.events[0].size, KiB(4));
	CHECK_EQ(f.events[0].level, 3);
	CHECK_EQ(f.events[0].reason, S2PT_TLBI_REPLACE);
	CHECK_EQ(f.events[0].bbm, 1);
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);
}

TEST(fmt_owner_annotations)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;
	struct s2pt_stats st;
	struct snap s;
	const uint64_t ipa = GiB(2) + KiB(8);
	uint64_t l3, unmapped = 99;
	uint32_t owner = 0;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_set_owner(&f.pt, ipa, KiB(4), 0xA5), 0);
	/* An invalid descriptor (bit 0 clear) with the id in bits 9:2. */
	CHECK_EQ(sw_desc(&f.pt, ipa, 3), 0xA5ull << 2);
	l3 = sw_table(&f.pt, ipa, 3);
	CHECK_EQ(rc_at(&f.pool, l3), 2); /* 1 + the annotation */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(4), KiB(4), RW, NORMAL, 0), 0);
	CHECK_EQ(rc_at(&f.pool, l3), 3);
	CHECK_EQ(s2pt_owner(&f.pt, ipa, &owner), 0);
	CHECK_EQ(owner, 0xA5);
	CHECK_EQ(s2pt_owner(&f.pt, GiB(2), &owner), 0); /* valid leaf */
	CHECK_EQ(owner, 0);
	CHECK_EQ(s2pt_owner(&f.pt, ipa + KiB(4), &owner), 0); /* empty */
	CHECK_EQ(owner, 0);
	CHECK_EQ(s2pt_translate(&f.pt, ipa, S2PT_ACCESS_READ, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.fsc, FSC_TRANS(3));
	REQUIRE_EQ(s2pt_stats(&f.pt, &st), 0);
	CHECK_EQ(st.annotated_bytes, KiB(4));
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);

	/* A whole aligned 2 MiB: pages only, as KVM's set_owner (force_pte): a full level-3
	 * table of annotations (count 1 + 512) under a new level-2 table, no block entry. */
	REQUIRE_EQ(s2pt_set_owner(&f.pt, GiB(5), MiB(2), 255), 0);
	CHECK_EQ(sw_desc(&f.pt, GiB(5) + MiB(1), 3), 0xFFull << 2);
	CHECK_EQ(rc_at(&f.pool, sw_table(&f.pt, GiB(5), 3)), 513);
	CHECK_EQ(s2pt_translate(&f.pt, GiB(5) + MiB(1), S2PT_ACCESS_READ, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.fsc, FSC_TRANS(3));
	CHECK_EQ(f.pt.table_pages, 6);
	CHECK_REFCOUNTS(&f.pt);

	/* Bad ids: 0 means "no owner", 256 does not fit in 8 bits. */
	fx_log(&f, 16);
	snap_take(&s, &f);
	CHECK_EQ(s2pt_set_owner(&f.pt, GiB(3), KiB(4), 0), S2PT_EINVAL);
	CHECK_EQ(s2pt_set_owner(&f.pt, GiB(3), KiB(4), 256), S2PT_EINVAL);
	CHECK_UNCHANGED(&s, &f);
	snap_free(&s);

	/* Unmap clears annotations without events (never valid), and frees emptied tables. */
	REQUIRE_EQ(s2pt_unmap(&f.pt, ipa, KiB(4), &unmapped), 0);
	CHECK_EQ(unmapped, 0);
	CHECK_EQ(*pa_ptr(&f.pool, l3 + 8 * 2), 0);
	CHECK_EQ(rc_at(&f.pool, l3), 2);
	CHECK_EQ(f.log.count, 0);
	REQUIRE_EQ(s2pt_unmap(&f.pt, GiB(5), MiB(2), NULL), 0);
	CHECK_EQ(rd_desc(&f.pool, f.pt.root_pa, 5), 0);
	CHECK_EQ(f.log.count, 2); /* the freed level-3 and level-2 tables (they were reachable) */
	CHECK_EQ(f.events[0].reason, S2PT_TLBI_TABLE);
	CHECK_EQ(f.events[1].reason, S2PT_TLBI_TABLE);
	REQUIRE_EQ(s2pt_unmap(&f.pt, GiB(2), KiB(4), NULL), 0);
	CHECK_EQ(f.pt.table_pages, f.cfg.root_tables);
	CHECK_EQ(rc_at(&f.pool, l3), 0);
	CHECK_INVARIANTS(&f.pt);
	CHECK_REFCOUNTS(&f.pt);
	fx_fini(&f);
}

/* An event without a level hint (range, VMID, freed table), with its reason and BBM mark. */
static void check_ev(const struct s2pt_tlbi *e, int kind, uint64_t ipa, uint64_t size,
		     uint32_t reason, uint32_t bbm)
{
	check_tlbi(e, kind, ipa, size, S2PT_TLBI_LEVEL_UNKNOWN);
	CHECK_EQ(e->reason, reason);
	CHECK_EQ(e->bbm, bbm);
}

TEST(fmt_tlbi_reasons)
{
	struct fx f;

	/* FWB + FEAT_TLBIRANGE: leaf invalidations deferred to one RANGE over the call's range. */
	REQUIRE_EQ(fx_init_flags(&f, 40, 4096, 48, 32, 0x40000000ull, S2PT_CONFIG_FWB), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(4), KiB(16), RW, NORMAL, 0), 0);
	fx_log(&f, 16);
	REQUIRE_EQ(s2pt_unmap(&f.pt, GiB(2) + KiB(4), KiB(8), NULL), 0);
	REQUIRE_EQ(f.log.count, 1);
	check_ev(&f.events[0], S2PT_TLBI_RANGE, GiB(2) + KiB(4), KiB(8), S2PT_TLBI_UNMAP, 0);
	/* Emptying the tables: each freed table as it goes (IPA, level unknown), then the RANGE. */
	fx_log(&f, 16);
	REQUIRE_EQ(s2pt_unmap(&f.pt, GiB(2), KiB(16), NULL), 0);
	REQUIRE_EQ(f.log.count, 3);
	check_ev(&f.events[0], S2PT_TLBI_IPA, GiB(2), MiB(2), S2PT_TLBI_TABLE, 0);
	CHECK_EQ(f.events[0].level, S2PT_TLBI_LEVEL_UNKNOWN);
	check_ev(&f.events[1], S2PT_TLBI_IPA, GiB(2), GiB(1), S2PT_TLBI_TABLE, 0);
	CHECK_EQ(f.events[1].level, S2PT_TLBI_LEVEL_UNKNOWN);
	check_ev(&f.events[2], S2PT_TLBI_RANGE, GiB(2), KiB(16), S2PT_TLBI_UNMAP, 0);
	CHECK_EQ(f.pt.table_pages, f.cfg.root_tables);
	fx_fini(&f);

	/* Without FEAT_TLBIRANGE a block over a table invalidates the whole VMID (BBM). */
	REQUIRE_EQ(fx_init_flags(&f, 40, 4096, 48, 32, 0x40000000ull, S2PT_CONFIG_NO_TLBIRANGE), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2) + MiB(2), GiB(4), KiB(8), RW, NORMAL, 0), 0);
	fx_log(&f, 16);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2) + MiB(2), GiB(4), MiB(2), RW, NORMAL, 0), 0);
	REQUIRE_EQ(f.log.count, 1);
	check_ev(&f.events[0], S2PT_TLBI_VMID, 0, 0, S2PT_TLBI_COALESCE, 1);
	CHECK_EQ(sw_desc(&f.pt, GiB(2) + MiB(2), 2), a_leaf(GiB(4), 2, RW, NORMAL, 1));
	CHECK_INVARIANTS(&f.pt);
	fx_fini(&f);

	/* With it: a RANGE over the block's span. */
	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2) + MiB(2), GiB(4), KiB(8), RW, NORMAL, 0), 0);
	fx_log(&f, 16);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2) + MiB(2), GiB(4), MiB(2), RW, NORMAL, 0), 0);
	REQUIRE_EQ(f.log.count, 1);
	check_ev(&f.events[0], S2PT_TLBI_RANGE, GiB(2) + MiB(2), MiB(2), S2PT_TLBI_COALESCE, 1);
	fx_fini(&f);
}
