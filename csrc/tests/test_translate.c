/*
 * s2pt_translate(), s2pt_lookup(), s2pt_translate_many(), s2pt_walk_path(), s2pt_leaves():
 * fault kinds, levels and ESR fault status codes as the architecture reports them.
 */
#include <string.h>

#include "s2pt_testlib.h"

#define RW (S2PT_PROT_R | S2PT_PROT_W)
#define NORMAL S2PT_MEMATTR_NORMAL

/* ESR DFSC/IFSC: 0b0000LL address size, 0b0001LL translation, 0b0010LL AF, 0b0011LL perm. */
#define FSC_ASIZE(l) (0x00u | (l))
#define FSC_TRANS(l) (0x04u | (l))
#define FSC_AF(l) (0x08u | (l))
#define FSC_PERM(l) (0x0Cu | (l))

static void expect_fault(struct fx *f, uint64_t ipa, uint32_t access, uint32_t kind, int level,
			 uint32_t fsc, int line)
{
	struct s2pt_translation t;
	struct s2pt_fault flt;
	int r;

	memset(&flt, 0xee, sizeof(flt));
	r = s2pt_translate(&f->pt, ipa, access, &t, &flt);
	CHECK_MSG(r == S2PT_EFAULT, "line %d: translate(%#llx, %u) = %d, want EFAULT", line,
		  (unsigned long long)ipa, access, r);
	if (r != S2PT_EFAULT)
		return;
	CHECK_MSG(flt.kind == kind && flt.level == level && flt.fsc == fsc && flt.ipa == ipa,
		  "line %d: ipa %#llx access %u: fault kind %u level %d fsc %#x ipa %#llx, want kind %u level %d fsc %#x",
		  line, (unsigned long long)ipa, access, flt.kind, flt.level, flt.fsc,
		  (unsigned long long)flt.ipa, kind, level, fsc);
}

#define EXPECT_FAULT(f, ipa, acc, kind, level, fsc) expect_fault(f, ipa, acc, kind, level, fsc, __LINE__)

static void expect_ok(struct fx *f, uint64_t ipa, uint32_t access, uint64_t pa, int level, int line)
{
	struct s2pt_translation t;
	struct s2pt_fault flt;
	int r = s2pt_translate(&f->pt, ipa, access, &t, &flt);

	CHECK_MSG(r == 0 && t.pa == pa && t.level == level,
		  "line %d: translate(%#llx, %u) = %d pa %#llx level %d, want pa %#llx level %d", line,
		  (unsigned long long)ipa, access, r, (unsigned long long)(r ? 0 : t.pa),
		  r ? -9 : t.level, (unsigned long long)pa, level);
}

#define EXPECT_OK(f, ipa, acc, pa, level) expect_ok(f, ipa, acc, pa, level, __LINE__)

TEST(translate_translation_faults_by_level)
{
	struct fx f;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	EXPECT_FAULT(&f, 0, S2PT_ACCESS_READ, S2PT_FAULT_TRANSLATION, 1, 0x05);
	EXPECT_FAULT(&f, (1ull << 40) - 1, S2PT_ACCESS_WRITE, S2PT_FAULT_TRANSLATION, 1, 0x05);
	/* Input address above the IPA size: translation fault at level 0. */
	EXPECT_FAULT(&f, 1ull << 40, S2PT_ACCESS_READ, S2PT_FAULT_TRANSLATION, 0, 0x04);
	EXPECT_FAULT(&f, ~0ull, S2PT_ACCESS_EXEC, S2PT_FAULT_TRANSLATION, 0, 0x04);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(4), KiB(4), RW, NORMAL, 0), 0);
	EXPECT_FAULT(&f, GiB(2) + KiB(4), S2PT_ACCESS_READ, S2PT_FAULT_TRANSLATION, 3, 0x07);
	EXPECT_FAULT(&f, GiB(2) + MiB(2), S2PT_ACCESS_READ, S2PT_FAULT_TRANSLATION, 2, 0x06);
	EXPECT_FAULT(&f, GiB(3), S2PT_ACCESS_READ, S2PT_FAULT_TRANSLATION, 1, 0x05);
	EXPECT_FAULT(&f, GiB(2) - 1, S2PT_ACCESS_READ, S2PT_FAULT_TRANSLATION, 1, 0x05);
	EXPECT_OK(&f, GiB(2) + 0xfff, S2PT_ACCESS_READ, GiB(4) + 0xfff, 3);
	fx_fini(&f);

	/* Start level 0 (4K/44) and start level 2 (4K/32, 64K/42). */
	REQUIRE_EQ(fx_init(&f, 44, 4096, 48, 32, 0x40000000ull), 0);
	EXPECT_FAULT(&f, GiB(3), S2PT_ACCESS_READ, S2PT_FAULT_TRANSLATION, 0, FSC_TRANS(0));
	EXPECT_FAULT(&f, 1ull << 44, S2PT_ACCESS_READ, S2PT_FAULT_TRANSLATION, 0, FSC_TRANS(0));
	fx_fini(&f);
	REQUIRE_EQ(fx_init(&f, 32, 4096, 48, 32, 0x40000000ull), 0);
	EXPECT_FAULT(&f, GiB(3), S2PT_ACCESS_READ, S2PT_FAULT_TRANSLATION, 2, FSC_TRANS(2));
	EXPECT_FAULT(&f, GiB(4), S2PT_ACCESS_READ, S2PT_FAULT_TRANSLATION, 0, FSC_TRANS(0));
	fx_fini(&f);
	REQUIRE_EQ(fx_init(&f, 42, 65536, 48, 8, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(4), KiB(64), RW, NORMAL, 0), 0);
	EXPECT_FAULT(&f, GiB(2) + KiB(64), S2PT_ACCESS_READ, S2PT_FAULT_TRANSLATION, 3, FSC_TRANS(3));
	EXPECT_FAULT(&f, GiB(3), S2PT_ACCESS_READ, S2PT_FAULT_TRANSLATION, 2, FSC_TRANS(2));
	EXPECT_OK(&f, GiB(2) + 0xabcd, S2PT_ACCESS_READ, GiB(4) + 0xabcd, 3);
	fx_fini(&f);
}

TEST(translate_access_flag_faults)
{
	struct fx f;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), GiB(2), GiB(1), RW, NORMAL, S2PT_MAP_NO_AF), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(3), GiB(2) + MiB(2), MiB(2), RW, NORMAL, S2PT_MAP_NO_AF), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(4), GiB(2), KiB(4), RW, NORMAL, S2PT_MAP_NO_AF), 0);
	/* No permissions at all and no AF: the access flag fault comes first. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(4) + KiB(4), GiB(2), KiB(4), 0, NORMAL, S2PT_MAP_NO_AF), 0);
	EXPECT_FAULT(&f, GiB(1) + 5, S2PT_ACCESS_READ, S2PT_FAULT_ACCESS_FLAG, 1, 0x09);
	EXPECT_FAULT(&f, GiB(3) + 5, S2PT_ACCESS_WRITE, S2PT_FAULT_ACCESS_FLAG, 2, 0x0A);
	EXPECT_FAULT(&f, GiB(4) + 5, S2PT_ACCESS_READ, S2PT_FAULT_ACCESS_FLAG, 3, 0x0B);
	EXPECT_FAULT(&f, GiB(4) + KiB(4), S2PT_ACCESS_READ, S2PT_FAULT_ACCESS_FLAG, 3, 0x0B);
	EXPECT_FAULT(&f, GiB(4) + KiB(4), S2PT_ACCESS_WRITE, S2PT_FAULT_ACCESS_FLAG, 3, 0x0B);
	EXPECT_FAULT(&f, GiB(4) + KiB(4), S2PT_ACCESS_EXEC, S2PT_FAULT_ACCESS_FLAG, 3, 0x0B);
	/* A translation fault still wins over everything. */
	EXPECT_FAULT(&f, GiB(4) + KiB(8), S2PT_ACCESS_READ, S2PT_FAULT_TRANSLATION, 3, 0x07);
	fx_fini(&f);
}

TEST(translate_permission_faults)
{
	struct fx f;
	const uint64_t p = GiB(4);

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 0x0000, p, KiB(4), S2PT_PROT_R, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 0x1000, p, KiB(4), S2PT_PROT_W, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 0x2000, p, KiB(4), S2PT_PROT_X, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 0x3000, p, KiB(4), 0, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 0x4000, p, KiB(4), S2PT_PROT_ALL, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 0x5000, p, KiB(4), RW, S2PT_MEMATTR_DEVICE_nGnRE, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, MiB(4), p, MiB(2), S2PT_PROT_R, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), p, GiB(1), S2PT_PROT_W, NORMAL, 0), 0);

	EXPECT_OK(&f, 0x0008, S2PT_ACCESS_READ, p + 8, 3);
	EXPECT_FAULT(&f, 0x0008, S2PT_ACCESS_WRITE, S2PT_FAULT_PERMISSION, 3, 0x0F);
	EXPECT_FAULT(&f, 0x0008, S2PT_ACCESS_EXEC, S2PT_FAULT_PERMISSION, 3, 0x0F);
	EXPECT_FAULT(&f, 0x1008, S2PT_ACCESS_READ, S2PT_FAULT_PERMISSION, 3, 0x0F);
	EXPECT_OK(&f, 0x1008, S2PT_ACCESS_WRITE, p + 8, 3);
	EXPECT_FAULT(&f, 0x1008, S2PT_ACCESS_EXEC, S2PT_FAULT_PERMISSION, 3, 0x0F);
	/* Execute needs only XN clear, not read permission. */
	EXPECT_OK(&f, 0x2008, S2PT_ACCESS_EXEC, p + 8, 3);
	EXPECT_FAULT(&f, 0x2008, S2PT_ACCESS_READ, S2PT_FAULT_PERMISSION, 3, 0x0F);
	EXPECT_FAULT(&f, 0x2008, S2PT_ACCESS_WRITE, S2PT_FAULT_PERMISSION, 3, 0x0F);
	EXPECT_FAULT(&f, 0x3008, S2PT_ACCESS_READ, S2PT_FAULT_PERMISSION, 3, 0x0F);
	EXPECT_FAULT(&f, 0x3008, S2PT_ACCESS_WRITE, S2PT_FAULT_PERMISSION, 3, 0x0F);
	EXPECT_FAULT(&f, 0x3008, S2PT_ACCESS_EXEC, S2PT_FAULT_PERMISSION, 3, 0x0F);
	EXPECT_OK(&f, 0x4008, S2PT_ACCESS_READ, p + 8, 3);
	EXPECT_OK(&f, 0x4008, S2PT_ACCESS_WRITE, p + 8, 3);
	EXPECT_OK(&f, 0x4008, S2PT_ACCESS_EXEC, p + 8, 3);
	EXPECT_FAULT(&f, 0x5008, S2PT_ACCESS_EXEC, S2PT_FAULT_PERMISSION, 3, 0x0F);
	EXPECT_OK(&f, 0x5008, S2PT_ACCESS_WRITE, p + 8, 3);
	/* At block levels the fault is reported at the leaf level. */
	EXPECT_FAULT(&f, MiB(5), S2PT_ACCESS_WRITE, S2PT_FAULT_PERMISSION, 2, 0x0E);
	EXPECT_OK(&f, MiB(5), S2PT_ACCESS_READ, p + MiB(1), 2);
	EXPECT_FAULT(&f, GiB(1) + 3, S2PT_ACCESS_READ, S2PT_FAULT_PERMISSION, 1, 0x0D);
	EXPECT_FAULT(&f, GiB(1) + 3, S2PT_ACCESS_EXEC, S2PT_FAULT_PERMISSION, 1, 0x0D);
	EXPECT_OK(&f, GiB(1) + 3, S2PT_ACCESS_WRITE, p + 3, 1);
	{
		struct s2pt_translation t;
		struct s2pt_fault flt;

		CHECK_EQ(s2pt_translate(&f.pt, 0, 4, &t, &flt), S2PT_EINVAL);
		CHECK_EQ(s2pt_translate(&f.pt, 0, 0xffffffffu, &t, &flt), S2PT_EINVAL);
	}
	fx_fini(&f);
}

TEST(translate_result_fields_and_lookup)
{
	struct fx f;
	struct s2pt_translation t;
	struct s2pt_fault flt;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, MiB(8), GiB(6) + MiB(2), MiB(2), S2PT_PROT_R | S2PT_PROT_X,
			    S2PT_MEMATTR_NORMAL_WT, 0),
		   0);
	REQUIRE_EQ(s2pt_translate(&f.pt, MiB(9) + 0x123, S2PT_ACCESS_EXEC, &t, &flt), 0);
	CHECK_EQ(t.pa, GiB(6) + MiB(3) + 0x123);
	CHECK_EQ(t.size, MiB(2));
	CHECK_EQ(t.level, 2);
	CHECK_EQ(t.prot, S2PT_PROT_R | S2PT_PROT_X);
	CHECK_EQ(t.memattr, 0xA);
	CHECK_EQ(t.af, 1);
	CHECK_EQ(t.pte, (GiB(6) + MiB(2)) | 1 | 0xA << 2 | 1 << 6 | 3 << 8 | 1 << 10);

	/* lookup ignores AF and permissions. */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(7), KiB(4), 0, S2PT_MEMATTR_DEVICE_nGnRnE, S2PT_MAP_NO_AF), 0);
	REQUIRE_EQ(s2pt_lookup(&f.pt, GiB(2) + 0x10, &t, &flt), 0);
	CHECK_EQ(t.pa, GiB(7) + 0x10);
	CHECK_EQ(t.size, KiB(4));
	CHECK_EQ(t.level, 3);
	CHECK_EQ(t.prot, 0);
	CHECK_EQ(t.memattr, 0);
	CHECK_EQ(t.af, 0);
	CHECK_EQ(s2pt_lookup(&f.pt, GiB(2) + KiB(4), &t, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.kind, S2PT_FAULT_TRANSLATION);
	CHECK_EQ(flt.level, 3);
	CHECK_EQ(flt.fsc, 0x07);
	CHECK_EQ(s2pt_lookup(&f.pt, 1ull << 40, &t, &flt), S2PT_EFAULT);
	CHECK_EQ(flt.level, 0);
	fx_fini(&f);
}

TEST(translate_malformed_descriptors)
{
	struct fx f;
	uint64_t *p, save;

	/* PA size 40: a leaf whose output address has bit 41 set is an address size fault. */
	REQUIRE_EQ(fx_init(&f, 40, 4096, 40, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), GiB(2), KiB(4), RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(3), GiB(2), GiB(1), RW, NORMAL, 0), 0);
	p = pa_ptr(&f.pool, sw_table(&f.pt, GiB(1), 3));
	save = p[0];
	p[0] |= 1ull << 41;
	EXPECT_FAULT(&f, GiB(1), S2PT_ACCESS_READ, S2PT_FAULT_ADDRESS_SIZE, 3, FSC_ASIZE(3));
	/* Level 3 with bits[1:0] = 0b01 is reserved: translation fault. */
	p[0] = save & ~2ull;
	EXPECT_FAULT(&f, GiB(1), S2PT_ACCESS_READ, S2PT_FAULT_TRANSLATION, 3, FSC_TRANS(3));
	p[0] = save;
	EXPECT_OK(&f, GiB(1), S2PT_ACCESS_READ, GiB(2), 3);
	/* A table descriptor whose next-table address exceeds the PA size: address size
	 * fault at the level of that descriptor. */
	p = pa_ptr(&f.pool, f.pt.root_pa);
	save = p[1];
	p[1] |= 1ull << 41;
	EXPECT_FAULT(&f, GiB(1), S2PT_ACCESS_READ, S2PT_FAULT_ADDRESS_SIZE, 1, FSC_ASIZE(1));
	p[1] = save;
	/* Address size fault on a block. */
	p = pa_ptr(&f.pool, f.pt.root_pa);
	save = p[3];
	p[3] |= 1ull << 40;
	EXPECT_FAULT(&f, GiB(3), S2PT_ACCESS_READ, S2PT_FAULT_ADDRESS_SIZE, 1, FSC_ASIZE(1));
	p[3] = save;
	fx_fini(&f);

	/* 16K: no level-1 blocks without 52-bit support; a block there is a translation fault. */
	REQUIRE_EQ(fx_init(&f, 47, 16384, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(64), GiB(64), GiB(64), RW, NORMAL, 0), 0);
	p = pa_ptr(&f.pool, f.pt.root_pa);
	save = p[1];
	CHECK_EQ(save & 3, 3);
	{
		uint64_t blk = a_leaf(GiB(64), 1, RW, NORMAL, 1);
		uint64_t keep = p[2];

		p[2] = blk; /* entry 2 was empty: 64 GiB block at level 1 */
		EXPECT_FAULT(&f, GiB(128), S2PT_ACCESS_READ, S2PT_FAULT_TRANSLATION, 1, FSC_TRANS(1));
		p[2] = keep;
	}
	EXPECT_OK(&f, GiB(64) + 5, S2PT_ACCESS_READ, GiB(64) + 5, 2);
	fx_fini(&f);
}

TEST(translate_many_matches_translate)
{
	struct fx f;
	uint64_t ipas[600], pa[600];
	uint8_t fsc[600];
	uint64_t rng = 12345;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 64, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), GiB(8), GiB(1), RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2), GiB(9), MiB(6), S2PT_PROT_R, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2) + MiB(6), GiB(9), KiB(64), S2PT_PROT_X, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(2) + MiB(7), GiB(9), KiB(64), RW, NORMAL, S2PT_MAP_NO_AF), 0);
	for (unsigned i = 0; i < 600; i++) {
		uint64_t r = rng_next(&rng);

		switch (i % 6) {
		case 0: ipas[i] = GiB(1) + (r % GiB(1)); break;
		case 1: ipas[i] = GiB(2) + (r % MiB(8)); break;
		case 2: ipas[i] = r % (1ull << 40); break;
		case 3: ipas[i] = (1ull << 40) + (r % GiB(1)); break;
		case 4: ipas[i] = r; break;
		default: ipas[i] = GiB(2) + MiB(6) + (r % MiB(2)); break;
		}
	}
	for (uint32_t acc = 0; acc <= 2; acc++) {
		int64_t faults = 0;
		int64_t n = s2pt_translate_many(&f.pt, ipas, 600, acc, pa, fsc);

		for (unsigned i = 0; i < 600; i++) {
			struct s2pt_translation t;
			struct s2pt_fault flt;
			int r = s2pt_translate(&f.pt, ipas[i], acc, &t, &flt);

			if (r == 0) {
				CHECK_MSG(fsc[i] == S2PT_FSC_NONE && pa[i] == t.pa,
					  "ipa %#llx acc %u: many pa %#llx fsc %#x, single pa %#llx",
					  (unsigned long long)ipas[i], acc, (unsigned long long)pa[i],
					  fsc[i], (unsigned long long)t.pa);
			} else {
				faults++;
				CHECK_EQ(r, S2PT_EFAULT);
				CHECK_MSG(fsc[i] == flt.fsc && pa[i] == 0,
					  "ipa %#llx acc %u: many fsc %#x pa %#llx, single fsc %#x",
					  (unsigned long long)ipas[i], acc, fsc[i],
					  (unsigned long long)pa[i], flt.fsc);
			}
		}
		CHECK_EQ(n, faults);
		CHECK(faults > 0 && faults < 600);
	}
	CHECK_EQ(s2pt_translate_many(&f.pt, ipas, 0, 0, pa, fsc), 0);
	CHECK_EQ(s2pt_translate_many(&f.pt, ipas, 600, 4, pa, fsc), S2PT_EINVAL);
	fx_fini(&f);
}

static void check_steps_against_memory(struct fx *f, uint64_t ipa, uint32_t want_steps)
{
	struct s2pt_walk_step st[S2PT_MAX_LEVELS];
	struct sw_step sw[4];
	uint32_t n = 99;
	int leaf;
	int m;

	memset(st, 0, sizeof(st));
	REQUIRE_EQ(s2pt_walk_path(&f->pt, ipa, st, &n), 0);
	m = sw_walk(&f->pt, ipa, sw, &leaf);
	CHECK_EQ(n, want_steps);
	CHECK_EQ(n, (uint32_t)m);
	for (uint32_t i = 0; i < n && i < (uint32_t)m; i++) {
		CHECK_EQ(st[i].level, f->cfg.start_level + (int)i);
		CHECK_EQ(st[i].level, sw[i].level);
		CHECK_EQ(st[i].index, sw[i].index);
		CHECK_EQ(st[i].table_pa, sw[i].table_pa);
		CHECK_EQ(st[i].desc_pa, st[i].table_pa + 8ull * st[i].index);
		CHECK_EQ(st[i].desc, *pa_ptr(&f->pool, st[i].desc_pa));
		CHECK_EQ(st[i].desc, sw[i].desc);
		if (i > 0)
			CHECK_EQ(st[i].table_pa, st[i - 1].desc & ~0xfffull & ((1ull << 48) - 1));
	}
}

TEST(walk_path_steps)
{
	struct fx f;
	struct s2pt_walk_step st[S2PT_MAX_LEVELS];
	uint32_t n;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 64, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 0x8040203000ull, GiB(1), KiB(4), RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1), GiB(1), GiB(1), RW, NORMAL, 0), 0);
	check_steps_against_memory(&f, 0x8040203000ull + 0x18, 3);
	REQUIRE_EQ(s2pt_walk_path(&f.pt, 0x8040203000ull, st, &n), 0);
	REQUIRE_EQ(n, 3);
	CHECK_EQ(st[0].level, 1);
	CHECK_EQ(st[0].index, 513);
	CHECK_EQ(st[0].table_pa, f.pt.root_pa);
	CHECK_EQ(st[0].desc_pa, f.pt.root_pa + 8 * 513);
	CHECK_EQ(st[1].level, 2);
	CHECK_EQ(st[1].index, 1);
	CHECK_EQ(st[2].level, 3);
	CHECK_EQ(st[2].index, 3);
	CHECK_EQ(st[2].desc, a_leaf(GiB(1), 3, RW, NORMAL, 1));
	/* A block: one step. A hole: the walk stops at the invalid entry. */
	check_steps_against_memory(&f, GiB(1) + 77, 1);
	check_steps_against_memory(&f, GiB(3), 1);
	check_steps_against_memory(&f, 0x8040203000ull + KiB(4), 3);
	check_steps_against_memory(&f, 0x8040203000ull + MiB(2), 2);
	REQUIRE_EQ(s2pt_walk_path(&f.pt, 0x8040204000ull, st, &n), 0);
	CHECK_EQ(st[2].desc, 0);
	/* Outside the IPA space: no descriptor is read. */
	n = 7;
	CHECK_EQ(s2pt_walk_path(&f.pt, 1ull << 40, st, &n), 0);
	CHECK_EQ(n, 0);
	fx_fini(&f);

	/* 16K with a 16-page root: the root index spans all concatenated pages. */
	REQUIRE_EQ(fx_init(&f, 40, 16384, 48, 32, 0x40000000ull), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, (1ull << 40) - KiB(16), GiB(1), KiB(16), RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_walk_path(&f.pt, (1ull << 40) - 1, st, &n), 0);
	REQUIRE_EQ(n, 2);
	CHECK_EQ(st[0].index, 32767);
	CHECK_EQ(st[0].desc_pa, f.pt.root_pa + 8 * 32767);
	CHECK_EQ(st[1].index, 2047);
	CHECK_EQ(st[1].desc_pa, st[1].table_pa + 8 * 2047);
	fx_fini(&f);
}

TEST(leaves_listing)
{
	struct fx f;
	struct s2pt_leaf l[8];
	size_t n;
	uint64_t next;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 48, 64, 0x40000000ull), 0);
	/* page, 2M block, 1G block, 2M block, page (IPA order) */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(1) - MiB(2) - KiB(4), GiB(5) - MiB(2) - KiB(4),
			    GiB(1) + MiB(4) + KiB(8), RW, NORMAL, 0),
		   0);
	REQUIRE_EQ(s2pt_leaves(&f.pt, 0, 1ull << 40, l, 8, &n, &next), 0);
	REQUIRE_EQ(n, 5);
	CHECK_EQ(next, 1ull << 40);
	CHECK_EQ(l[0].ipa, GiB(1) - MiB(2) - KiB(4));
	CHECK_EQ(l[0].size, KiB(4));
	CHECK_EQ(l[0].level, 3);
	CHECK_EQ(l[0].pa, GiB(5) - MiB(2) - KiB(4));
	CHECK_EQ(l[1].ipa, GiB(1) - MiB(2));
	CHECK_EQ(l[1].level, 2);
	CHECK_EQ(l[2].ipa, GiB(1));
	CHECK_EQ(l[2].level, 1);
	CHECK_EQ(l[2].size, GiB(1));
	CHECK_EQ(l[2].pa, GiB(5));
	CHECK_EQ(l[2].pte, a_leaf(GiB(5), 1, RW, NORMAL, 1));
	CHECK_EQ(l[3].ipa, GiB(2));
	CHECK_EQ(l[4].ipa, GiB(2) + MiB(2));
	CHECK_EQ(l[4].prot, RW);
	CHECK_EQ(l[4].memattr, NORMAL);
	CHECK_EQ(l[4].af, 1);
	/* Cut at 2 and resume. */
	REQUIRE_EQ(s2pt_leaves(&f.pt, 0, 1ull << 40, l, 2, &n, &next), 0);
	CHECK_EQ(n, 2);
	CHECK_EQ(next, GiB(1));
	REQUIRE_EQ(s2pt_leaves(&f.pt, next, (1ull << 40) - next, l, 8, &n, &next), 0);
	CHECK_EQ(n, 3);
	CHECK_EQ(l[0].ipa, GiB(1));
	/* A range that starts inside a block lists the block. */
	REQUIRE_EQ(s2pt_leaves(&f.pt, GiB(1) + MiB(2), KiB(4), l, 8, &n, &next), 0);
	CHECK_EQ(n, 1);
	CHECK_EQ(l[0].ipa, GiB(1));
	CHECK_EQ(s2pt_leaves(&f.pt, 0, (1ull << 40) + KiB(4), l, 8, &n, &next), S2PT_ERANGE);
	CHECK_EQ(s2pt_leaves(&f.pt, 1, KiB(4), l, 8, &n, &next), S2PT_EALIGN);
	fx_fini(&f);
}
