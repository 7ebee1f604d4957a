/*
 * A small machine simulator on the s2pt C library: the host's DRAM is one array, the guest's
 * stage-2 tables live inside that array (the pool is a slice of it, at the slice's PA), and
 * every guest access is translated through the library before it reads or writes the array.
 *
 * The scenario (examples/README.md; examples/reference.py runs the same one through the
 * Python API, and examples/cython/ through Cython):
 *   host DRAM    32 MiB at PA 0x40000000; its last 1 MiB (256 pages) holds the stage-2 tables
 *   guest RAM    IPA 0x80000000, 16 MiB -> PA 0x40000000, RW   (2 MiB blocks)
 *   boot ROM     IPA 0x00000000, 256 KiB -> PA 0x41000000, R+X (4 KiB pages)
 *   lazy RAM     IPA 0x90000000, 2 MiB -> PA 0x41200000, RW, 4 KiB pages with the access flag
 *                clear: the first touch of each page is an access-flag fault that the
 *                simulator resolves with s2pt_mkyoung() and retries (as hardware AF
 *                management would)
 *   then a balloon page unmapped at IPA 0x80100000 (splits a block) and 64 KiB of "kernel
 *   text" at IPA 0x80400000 made read-only (splits another); IPA 0x09000000 (a device) and
 *   the 16 MiB above guest RAM stay unmapped.
 * Accesses come from a fixed xorshift64* stream. Reads and fetches load 8 bytes; writes store
 * ipa ^ (i * 0x9e3779b97f4a7c15). Each access is also walked by s2pt_translate_image() over the
 * raw DRAM array, as an emulator's own page-table walker would, and must agree.
 *
 * Usage: sim [ACCESSES]   (default 100000). Output: the first 32 accesses, then a summary.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <s2pt/s2pt.h>

#define MiB ((uint64_t)1 << 20)
#define HOST_PA UINT64_C(0x40000000)
#define HOST_BYTES (32 * MiB)
#define POOL_OFFSET (31 * MiB)
#define POOL_PAGES 256u
#define GRANULE 4096u

#define RAM_IPA UINT64_C(0x80000000)
#define RAM_SIZE (16 * MiB)
#define ROM_IPA UINT64_C(0)
#define ROM_PA (HOST_PA + 16 * MiB)
#define ROM_SIZE ((uint64_t)256 << 10)
#define LAZY_IPA UINT64_C(0x90000000)
#define LAZY_PA (HOST_PA + 18 * MiB)
#define LAZY_SIZE (2 * MiB)
#define BALLOON_IPA UINT64_C(0x80100000)
#define TEXT_IPA UINT64_C(0x80400000)
#define TEXT_SIZE ((uint64_t)64 << 10)
#define DEVICE_IPA UINT64_C(0x09000000)

#define SHOWN 32u
#define FNV_BASIS 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static const char *const access_name[] = {"read", "read", "write", "exec"};
static const uint32_t access_kind[] = {S2PT_ACCESS_READ, S2PT_ACCESS_READ, S2PT_ACCESS_WRITE,
				       S2PT_ACCESS_EXEC};
static const char *const fault_name[] = {"none", "translation", "access_flag", "permission",
					 "address_size"};

static uint64_t xorshift64s(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* The IPA of an access: the top 4 bits of r pick a region, the low 32 an 8-byte slot in it. */
static uint64_t pick_ipa(uint64_t r)
{
	uint64_t sel = r >> 60, off = r & 0xffffffffull;

	if (sel <= 8)
		return RAM_IPA + (off % RAM_SIZE & ~7ull);
	if (sel <= 10)
		return ROM_IPA + (off % ROM_SIZE & ~7ull);
	if (sel <= 12)
		return LAZY_IPA + (off % LAZY_SIZE & ~7ull);
	if (sel == 13)
		return TEXT_IPA + (off % TEXT_SIZE & ~7ull);
	if (sel == 14)
		return DEVICE_IPA + (off % GRANULE & ~7ull);
	return RAM_IPA + RAM_SIZE + (off % RAM_SIZE & ~7ull);
}

static int check(int rc, const char *what)
{
	if (rc < 0) {
		fprintf(stderr, "sim: %s: %s\n", what, s2pt_strerror(rc));
		exit(1);
	}
	return rc;
}

/* One translation result as text: "pa=... level=N size=..." or "fault=KIND level=N fsc=...". */
static void describe(char *buf, size_t len, int rc, const struct s2pt_translation *t,
		     const struct s2pt_fault *f)
{
	if (rc == 0)
		snprintf(buf, len, "pa=0x%010" PRIx64 " level=%d size=0x%" PRIx64, t->pa,
			 (int)t->level, t->size);
	else
		snprintf(buf, len, "fault=%s level=%d fsc=0x%02x", fault_name[f->kind],
			 (int)f->level, (unsigned)f->fsc);
}

int main(int argc, char **argv)
{
	unsigned long long n = argc > 1 ? strtoull(argv[1], NULL, 0) : 100000;
	/* calloc: the pool's slice must start zero-filled, and 8-byte aligned. */
	uint64_t *host = calloc(HOST_BYTES / 8, 8);
	void *meta = calloc(1, s2pt_pool_meta_bytes(POOL_PAGES));
	static struct s2pt_tlbi events[4096];
	struct s2pt_tlbi_log log = {events, 4096, 0, 0};
	struct s2pt_pool pool;
	struct s2pt_config cfg;
	struct s2pt_pgtable pt;
	struct s2pt_stats st;
	uint64_t unmapped, rng = 0x5eed, read_hash = FNV_BASIS, xlat_hash = FNV_BASIS;
	uint64_t host_hash = 0, vttbr;
	unsigned long long hits = 0, af_fixed = 0, perm = 0, xlat = 0, agree = 0;
	size_t k;

	if (!host || !meta) {
		fprintf(stderr, "sim: out of memory\n");
		return 1;
	}
	/* Firmware in the boot ROM, so fetches and reads there see data. */
	for (k = 0; k < ROM_SIZE / 8; k++)
		host[(ROM_PA - HOST_PA) / 8 + k] = k * 0x0101010101010101ull;

	check(s2pt_config_init(&cfg, 40, GRANULE, 40, 1, 0), "config");
	check(s2pt_pool_init(&pool, (uint8_t *)host + POOL_OFFSET, POOL_PAGES, meta,
			     HOST_PA + POOL_OFFSET, GRANULE), "pool");
	check(s2pt_pgtable_init(&pt, &cfg, &pool), "page table");
	pt.tlbi = &log;
	check(s2pt_map(&pt, RAM_IPA, HOST_PA, RAM_SIZE, S2PT_PROT_R | S2PT_PROT_W,
		       S2PT_MEMATTR_NORMAL, 0), "map RAM");
	check(s2pt_map(&pt, ROM_IPA, ROM_PA, ROM_SIZE, S2PT_PROT_R | S2PT_PROT_X,
		       S2PT_MEMATTR_NORMAL, 0), "map ROM");
	check(s2pt_map(&pt, LAZY_IPA, LAZY_PA, LAZY_SIZE, S2PT_PROT_R | S2PT_PROT_W,
		       S2PT_MEMATTR_NORMAL, S2PT_MAP_NO_BLOCKS | S2PT_MAP_NO_AF), "map lazy RAM");
	check(s2pt_unmap(&pt, BALLOON_IPA, GRANULE, &unmapped), "unmap balloon");
	check(s2pt_protect(&pt, TEXT_IPA, TEXT_SIZE, S2PT_PROT_R), "protect text");
	vttbr = s2pt_vttbr(&pt);

	printf("host DRAM 32 MiB at PA 0x%" PRIx64 ", stage-2 tables in its last 1 MiB "
	       "(%u pages at PA 0x%" PRIx64 ")\n", HOST_PA, POOL_PAGES, HOST_PA + POOL_OFFSET);
	printf("vtcr=0x%" PRIx64 " vttbr=0x%016" PRIx64 " levels=%u root_tables=%u\n", cfg.vtcr,
	       vttbr, cfg.levels, cfg.root_tables);

	for (unsigned long long i = 0; i < n; i++) {
		uint64_t r = xorshift64s(&rng), ipa = pick_ipa(r), token;
		unsigned a = (unsigned)(r >> 56) & 3;
		struct s2pt_translation t, ti;
		struct s2pt_fault f, fi;
		char line[160], more[80];
		int rc, rci;

		rc = s2pt_translate(&pt, ipa, access_kind[a], &t, &f);
		if (rc < 0 && rc != S2PT_EFAULT)
			check(rc, "translate");
		describe(line, sizeof(line), rc, &t, &f);
		if (rc == S2PT_EFAULT && f.kind == S2PT_FAULT_ACCESS_FLAG) {
			int found;

			check(s2pt_mkyoung(&pt, ipa, &found), "mkyoung");
			af_fixed++;
			rc = s2pt_translate(&pt, ipa, access_kind[a], &t, &f);
			if (rc < 0 && rc != S2PT_EFAULT)
				check(rc, "translate");
			describe(more, sizeof(more), rc, &t, &f);
			strncat(line, ", mkyoung -> ", sizeof(line) - strlen(line) - 1);
			strncat(line, more, sizeof(line) - strlen(line) - 1);
		}
		if (rc == 0) {
			uint64_t *word = &host[(t.pa - HOST_PA) / 8];

			hits++;
			if (access_kind[a] == S2PT_ACCESS_WRITE)
				*word = ipa ^ (i * 0x9e3779b97f4a7c15ull);
			else
				read_hash = (read_hash ^ *word) * FNV_PRIME;
			token = t.pa;
		} else {
			if (f.kind == S2PT_FAULT_PERMISSION)
				perm++;
			else
				xlat++;
			token = 0xffff000000000000ull | f.fsc;
		}
		xlat_hash = (xlat_hash ^ token) * FNV_PRIME;

		/* The same walk over the raw DRAM image, as an emulator's own walker does it. */
		rci = s2pt_translate_image(host, HOST_PA, HOST_BYTES, cfg.vtcr, vttbr, 0, ipa,
					   access_kind[a], &ti, &fi);
		if (rci == rc && (rc == 0 ? ti.pa == t.pa && ti.level == t.level
				  : fi.fsc == f.fsc))
			agree++;
		if (i < SHOWN)
			printf("%5llu %-5s ipa=0x%010" PRIx64 " -> %s\n", i, access_name[a], ipa,
			       line);
	}

	/* A digest of all of DRAM, tables included: word k weighted by 2k + 1. */
	for (k = 0; k < HOST_BYTES / 8; k++)
		host_hash += host[k] * (2 * (uint64_t)k + 1);
	check(s2pt_stats(&pt, &st), "stats");
	printf("accesses=%llu hits=%llu af_fixed=%llu permission=%llu translation=%llu\n", n, hits,
	       af_fixed, perm, xlat);
	printf("read_hash=0x%016" PRIx64 " translation_hash=0x%016" PRIx64 " host_hash=0x%016" PRIx64
	       "\n", read_hash, xlat_hash, host_hash);
	printf("image_walks_agree=%llu/%llu\n", agree, n);
	printf("table_pages=%" PRIu64 " mapped_bytes=0x%" PRIx64 " tlbi_events=%u\n", st.table_pages,
	       st.mapped_bytes, log.count);

	s2pt_pgtable_destroy(&pt);
	free(meta);
	free(host);
	return agree == n ? 0 : 1;
}
