/*
 * Shared helpers for the s2pt unit tests: fixtures (pool + page table), an independent
 * software walker that reads the raw pool memory, descriptor constants written out from the
 * architecture (not taken from desc.h), and whole-state snapshots for atomicity checks.
 *
 * Implementation in test_lib.c.
 */
#ifndef S2PT_TESTLIB_H
#define S2PT_TESTLIB_H

#include <stddef.h>
#include <stdint.h>

#include "minitest.h"
#include "s2pt/s2pt.h"

/* Stage-2 descriptor bits (Arm ARM, VMSAv8-64 stage 2 block/page/table descriptors). */
#define A_VALID 0x1ull
#define A_TYPE_TABLE 0x3ull /* bits[1:0] of a table (level < 3) or page (level 3) */
#define A_TYPE_BLOCK 0x1ull /* bits[1:0] of a block */
#define A_MEMATTR(x) ((uint64_t)(x) << 2) /* MemAttr[3:0], bits 5:2 */
#define A_S2AP_R (1ull << 6)
#define A_S2AP_W (1ull << 7)
#define A_SH_INNER (3ull << 8)
#define A_AF (1ull << 10)
#define A_XN (1ull << 54)

#define KiB(x) ((uint64_t)(x) << 10)
#define MiB(x) ((uint64_t)(x) << 20)
#define GiB(x) ((uint64_t)(x) << 30)

struct fx {
	struct s2pt_config cfg;
	struct s2pt_pool pool;
	struct s2pt_pgtable pt;
	struct s2pt_tlbi_log log;
	struct s2pt_tlbi events[256];
	void *mem;
	size_t mem_bytes;
	void *meta;
	int have_pool;
	int have_pt;
};

/* Pool only. Returns the s2pt_pool_init() code (memory is released by fx_fini). */
int fx_pool(struct fx *f, uint32_t granule, uint32_t pages, uint64_t base_pa);
/* Config (vmid 1) + pool + page table. Returns the first non-zero code. */
int fx_init(struct fx *f, uint32_t ipa_bits, uint32_t granule, uint32_t pa_bits, uint32_t pages,
	    uint64_t base_pa);
/* fx_init() with s2pt_config_init() flags. */
int fx_init_flags(struct fx *f, uint32_t ipa_bits, uint32_t granule, uint32_t pa_bits,
		  uint32_t pages, uint64_t base_pa, uint32_t flags);
/* Stage-1 tables (s2pt_s1_config_init()) in a pool of their own whose base is an IPA. */
int fx_init_s1(struct fx *f, uint32_t va_bits, uint32_t granule, uint32_t ips_bits,
	       uint32_t pages, uint64_t base_ipa, uint32_t asid, uint32_t flags);
/* Check one TLB event's kind, IPA, size and level hint. */
void check_tlbi(const struct s2pt_tlbi *e, int kind, uint64_t ipa, uint64_t size, int level);
/* Attach f->events as the TLBI log (capacity cap <= 256) and clear it. */
void fx_log(struct fx *f, uint32_t cap);
void fx_fini(struct fx *f);

/* Architectural level shift: log2 of the bytes one entry maps at @level. */
uint32_t a_shift(uint32_t granule_shift, int level);
/* Expected leaf descriptor, composed from the field layout. */
uint64_t a_leaf(uint64_t pa, int level, uint32_t prot, uint32_t memattr, int af);

/* Raw memory access by PA. */
uint64_t *pa_ptr(const struct s2pt_pool *pool, uint64_t pa);
uint64_t rd_desc(const struct s2pt_pool *pool, uint64_t table_pa, uint64_t index);
uint32_t nonzero_entries(const struct s2pt_pool *pool, uint64_t table_pa);
/* Count of the page at pa via s2pt_pool_refcount (0xffffffff on error). */
uint32_t rc_at(const struct s2pt_pool *pool, uint64_t pa);

/* An independent walk of @ipa over pool memory (architectural indexing). */
struct sw_step {
	int level;
	uint64_t table_pa;
	uint64_t index;
	uint64_t desc;
};
/* Returns the number of steps; *leaf_level = level of the valid leaf, or -1 if none. */
int sw_walk(const struct s2pt_pgtable *pt, uint64_t ipa, struct sw_step *steps, int *leaf_level);
/* Descriptor at @level on the walk of @ipa (0 if the walk stops before that level). */
uint64_t sw_desc(const struct s2pt_pgtable *pt, uint64_t ipa, int level);
/* Table PA that the walk of @ipa reads at @level (0 if not reached). */
uint64_t sw_table(const struct s2pt_pgtable *pt, uint64_t ipa, int level);

/*
 * Independent count check over every pool page owned by @pt: count == 1 + non-zero entries,
 * and the number of owned pages equals pt->table_pages. NULL if fine, else a description.
 */
const char *refcount_problem(const struct s2pt_pgtable *pt, char *buf, size_t len);

#define CHECK_REFCOUNTS(ptp)                                                     \
	do {                                                                     \
		char mt_b_[160];                                                 \
		const char *mt_p_ = refcount_problem(ptp, mt_b_, sizeof(mt_b_)); \
		CHECK_MSG(mt_p_ == NULL, "refcounts: %s", mt_p_);                \
	} while (0)

/* Whole-state snapshot: pool memory, metadata arrays, pool and page-table scalars, TLBI log. */
struct snap {
	uint8_t *mem;
	size_t mem_bytes;
	uint8_t *meta;
	size_t meta_bytes;
	struct s2pt_pool pool;
	uint32_t table_pages;
	uint64_t root_pa;
	int destroyed;
	uint32_t log_count, log_overflowed;
};
void snap_take(struct snap *s, const struct fx *f);
/* NULL if nothing changed, else what differs. */
const char *snap_diff(const struct snap *s, const struct fx *f);
void snap_free(struct snap *s);

#define CHECK_UNCHANGED(snapp, fxp)                                             \
	do {                                                                    \
		const char *mt_d_ = snap_diff(snapp, fxp);                      \
		CHECK_MSG(mt_d_ == NULL, "state changed on error: %s", mt_d_); \
	} while (0)

#define CHECK_INVARIANTS(ptp)                                                          \
	do {                                                                           \
		char mt_m_[256];                                                       \
		int mt_r_ = s2pt_check(ptp, mt_m_, sizeof(mt_m_));                     \
		CHECK_MSG(mt_r_ == 0, "s2pt_check() = %d: %s", mt_r_, mt_m_);          \
	} while (0)

/* Deterministic PRNG (xorshift64*). */
uint64_t rng_next(uint64_t *state);
uint64_t rng_below(uint64_t *state, uint64_t n);

#endif
