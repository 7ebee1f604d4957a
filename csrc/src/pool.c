/* The pool: one contiguous buffer of table pages, free pages kept zero and reused LIFO. */
#define _DEFAULT_SOURCE
#include <sys/mman.h>

#include "internal.h"

size_t s2pt_pool_meta_bytes(uint32_t pages)
{
	return (size_t)pages * (sizeof(uint64_t) + 3 * sizeof(uint32_t));
}

int s2pt_pool_init(struct s2pt_pool *pool, void *mem, uint32_t pages, void *meta,
		   uint64_t base_pa, uint32_t granule)
{
	uint32_t shift;

	if (!pool || !mem || !meta || pages == 0 || pages > (1u << 31))
		return S2PT_EINVAL;
	if (granule == 4096)
		shift = 12;
	else if (granule == 16384)
		shift = 14;
	else if (granule == 65536)
		shift = 16;
	else
		return S2PT_EINVAL;
	if (base_pa & (granule - 1))
		return S2PT_EALIGN;
	if (base_pa >= (1ull << 52) || ((1ull << 52) - base_pa) >> shift < pages)
		return S2PT_ERANGE;
	memset(pool, 0, sizeof(*pool));
	pool->mem = mem;
	pool->base_pa = base_pa;
	pool->granule_shift = shift;
	pool->capacity = pages;
	pool->hint = meta;
	pool->refcount = (uint32_t *)(pool->hint + pages);
	pool->owner = pool->refcount + pages;
	pool->free_stack = pool->owner + pages;
	pool->next_owner = 1;
	return 0;
}

int s2pt_pool_refcount(const struct s2pt_pool *pool, uint64_t pa, uint32_t *count)
{
	if (!s2pt__pa_in_pool(pool, pa))
		return S2PT_ERANGE;
	if ((pa - pool->base_pa) & (s2pt__granule(pool) - 1))
		return S2PT_EALIGN;
	*count = pool->refcount[(pa - pool->base_pa) >> pool->granule_shift];
	return 0;
}

static void take(struct s2pt_pool *pool, uint32_t owner, uint32_t index)
{
	S2PT_ASSERT(pool->refcount[index] == 0 && pool->owner[index] == 0);
	pool->refcount[index] = 1;
	pool->hint[index] = 0;
	pool->owner[index] = owner;
	pool->used++;
}

int s2pt__page_alloc(struct s2pt_pool *pool, uint32_t owner, uint32_t *index)
{
	/* Reuse freed pages first: they are warm, and untouched pages stay uncommitted. */
	if (pool->nfree)
		*index = pool->free_stack[--pool->nfree];
	else if (pool->hiwater < pool->capacity)
		*index = pool->hiwater++;
	else
		return S2PT_ENOMEM;
	take(pool, owner, *index);
	return 0;
}

void s2pt__page_free(struct s2pt_pool *pool, uint32_t index)
{
	S2PT_ASSERT(pool->refcount[index] == 1 && pool->owner[index] != 0);
	pool->refcount[index] = 0;
	pool->owner[index] = 0;
	pool->used--;
	pool->free_stack[pool->nfree++] = index;
}

/* Remove one index from the free stack (order of the rest does not matter). */
static void unfree(struct s2pt_pool *pool, uint32_t index)
{
	for (uint32_t i = 0; i < pool->nfree; i++) {
		if (pool->free_stack[i] == index) {
			pool->free_stack[i] = pool->free_stack[--pool->nfree];
			return;
		}
	}
	S2PT_ASSERT(0);
}

int s2pt__pages_alloc_aligned(struct s2pt_pool *pool, uint32_t owner, uint32_t n,
			      uint32_t *index)
{
	/* VTTBR_EL2.BADDR must be aligned to the size of the concatenated root. */
	uint64_t align = (uint64_t)n << pool->granule_shift;
	uint64_t first_pa = (pool->base_pa + align - 1) & ~(align - 1);
	uint64_t first = (first_pa - pool->base_pa) >> pool->granule_shift;
	uint64_t step = n;
	uint64_t i;

	if (s2pt_pool_free_pages(pool) < n)
		return S2PT_ENOMEM;
	/* Candidates are the aligned runs; prefer the lowest one that is entirely free. */
	for (i = first; i + n <= pool->capacity; i += step) {
		uint32_t k;

		for (k = 0; k < n; k++)
			if (i + k < pool->hiwater && pool->refcount[i + k])
				break;
		if (k < n)
			continue;
		for (k = 0; k < n; k++) {
			uint32_t idx = (uint32_t)(i + k);

			if (idx < pool->hiwater)
				unfree(pool, idx);
		}
		/* Pages skipped between the old high-water mark and the run become free pages. */
		while (pool->hiwater < i + n) {
			uint32_t idx = pool->hiwater++;

			if (idx < i)
				pool->free_stack[pool->nfree++] = idx;
		}
		for (k = 0; k < n; k++)
			take(pool, owner, (uint32_t)(i + k));
		*index = (uint32_t)i;
		return 0;
	}
	return S2PT_ENOMEM;
}

void *s2pt_mem_alloc(size_t bytes)
{
	void *mem;

	if (bytes == 0)
		return NULL;
	/* Private anonymous memory is zero-filled and committed on first touch; NORESERVE keeps a
	 * large capacity from counting against overcommit until it is used. */
	mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		   -1, 0);
	if (mem == MAP_FAILED)
		return NULL;
#ifdef MADV_HUGEPAGE
	/* Fewer TLB misses on large pools; ignored where transparent huge pages are off. Not for
	 * the first 2 MiB: a small VM touches only a few pages there, and a huge-page fault
	 * would zero 2 MiB (~100 us) for each of them. */
	if (bytes > (4u << 20))
		(void)madvise((uint8_t *)mem + (2u << 20), bytes - (2u << 20), MADV_HUGEPAGE);
#endif
	return mem;
}

void s2pt_mem_free(void *mem, size_t bytes)
{
	if (mem)
		munmap(mem, bytes);
}
