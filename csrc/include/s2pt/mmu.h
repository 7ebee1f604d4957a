/*
 * s2pt MMU layer: KVM/arm64's stage-2 MMU policy above the engine (arch/arm64/kvm/mmu.c):
 * memslots, the guest abort handler (kvm_handle_guest_abort / user_mem_abort), dirty logging
 * for live migration, access-flag aging. It uses only the engine's public operations
 * (s2pt_map, s2pt_unmap, s2pt_translate, s2pt_relax_perms, s2pt_mkyoung, s2pt_wrprotect,
 * s2pt_split, s2pt_get_leaf), so everything it does to the tables an embedder could do too.
 *
 * Memory: unlike the engine, this layer allocates (malloc) when slots are added and when
 * dirty logging is enabled; the fault path and the harvest never allocate.
 *
 * Concurrency (engine and MMU alike): no call takes a lock. Calls on different page tables
 * in different pools may run in parallel threads. Calls on the same page table, or on page
 * tables sharing a pool, must be serialised by the caller (the Python layer does it with one
 * lock per pool). Read-only calls (s2pt_translate*, s2pt_lookup, s2pt_leaves, s2pt_stats)
 * may run in parallel with each other but not with a change.
 */
#ifndef S2PT_MMU_H
#define S2PT_MMU_H

#include "s2pt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What the abort handler did for one access (Python: s2pt.FaultOutcome). */
enum s2pt_outcome {
	S2PT_OUTCOME_HIT = 0,        /* no stage-2 fault */
	S2PT_OUTCOME_MAPPED = 1,     /* resolved by s2pt_map() (translation fault, or a permission
				      * fault whose mapping size differs from the leaf's) */
	S2PT_OUTCOME_DIRTY = 2,      /* write to a write-protected page of a logged slot: marked
				      * dirty, made writable at page granularity */
	S2PT_OUTCOME_RELAXED = 3,    /* permission fault resolved by s2pt_relax_perms() */
	S2PT_OUTCOME_YOUNG = 4,      /* access-flag fault resolved by s2pt_mkyoung() */
	S2PT_OUTCOME_MMIO = 5,       /* exit to user space: no slot, or a write to a read-only one */
	S2PT_OUTCOME_PERMISSION = 6, /* an owner annotation: not the MMU's to map; no change */
	S2PT_OUTCOME_ABORT = 7,      /* KVM injects an abort: fetch outside every slot, or an IPA
				      * beyond the IPA size */
	S2PT_OUTCOME__COUNT = 8
};

/* struct s2pt_memslot flags */
#define S2PT_MEMSLOT_READONLY 0x1u  /* KVM_MEM_READONLY: writes exit as MMIO */
#define S2PT_MEMSLOT_LOG_DIRTY 0x2u /* KVM_MEM_LOG_DIRTY_PAGES */

/* Largest number of slots (KVM_USER_MEM_SLOTS on arm64). */
#define S2PT_MEMSLOTS_MAX 32764u

/**
 * struct s2pt_memslot - guest IPAs [ipa, ipa + size) backed by host PAs [pa, pa + size).
 * @backing:     host page size behind the slot (a leaf size of the VM): no leaf is larger.
 * @dirty:       while logging: the dirty bitmap, one bit per granule page (KVM's layout:
 *               bit i % 64 of word i / 64 is page i).
 * @dirty_sum:   one bit per word of @dirty, set while the word is non-zero (@ndirty of
 *               them): a harvest visits only dirty words, in IPA order, so it costs what
 *               the dirty pages cost plus a scan of 1/4096 of the slot's pages.
 * @dirty_ptep:  per word (meaningful while the word is non-zero), the level-3 entry of its
 *               first page, so re-protecting needs no walk; trusted only while the page
 *               table's @frees equals @frees_at (else, or NULL: the harvest walks instead).
 */
struct s2pt_memslot {
	uint64_t ipa;
	uint64_t pa;
	uint64_t size;
	uint64_t backing;
	uint32_t id;
	uint32_t flags;
	uint64_t *dirty;
	uint64_t *dirty_sum;
	uint64_t **dirty_ptep;
	uint32_t ndirty;
	uint64_t frees_at;
};

/**
 * struct s2pt_mmu - the memslots of one VM and its fault counters.
 * @slots:  @nslots slots, sorted by IPA, non-overlapping.
 * @last:   index of the slot the last fault resolved in (a lookup cache).
 * @counts: per enum s2pt_outcome: HIT counts accesses that needed no handler, the others
 *          count handler runs.
 */
struct s2pt_mmu {
	struct s2pt_pgtable *pt;
	struct s2pt_memslot *slots;
	uint32_t nslots;
	uint32_t cap;
	uint32_t last;
	uint64_t counts[S2PT_OUTCOME__COUNT];
};

/** s2pt_mmu_init() - an MMU with no slots over @pt (which must outlive it). */
void s2pt_mmu_init(struct s2pt_mmu *mmu, struct s2pt_pgtable *pt);

/** s2pt_mmu_release() - free the slots' memory; the tables are left as they are. */
void s2pt_mmu_release(struct s2pt_mmu *mmu);

/**
 * s2pt_memslot_add() - KVM_SET_USER_MEMORY_REGION for a new slot. Maps nothing: the tables
 * fill on guest faults.
 * @flags:   S2PT_MEMSLOT_*; READONLY with LOG_DIRTY is refused (as KVM does).
 * @backing: the granule or a block size of the VM (levels min_block_level..2).
 * @id:      the lowest free id.
 * Return: 0, S2PT_EALIGN (ipa, pa, size), S2PT_EINVAL (size 0, flags, backing, too many
 * slots), S2PT_ERANGE (outside the IPA or PA space, or overlapping a slot in IPA),
 * S2PT_ENOMEM (malloc), S2PT_EDESTROYED.
 */
int s2pt_memslot_add(struct s2pt_mmu *mmu, uint64_t ipa, uint64_t pa, uint64_t size,
		     uint32_t flags, uint64_t backing, uint32_t *id);

/**
 * s2pt_memslot_restore() - put back a slot as a saved state had it: its @id, @flags
 * (LOG_DIRTY included) and, while logging, its dirty bitmap @dirty (KVM's layout, one bit
 * per granule page; NULL when not logging). The tables are not touched (restore them
 * first); the same checks as s2pt_memslot_add(), and @id must be free.
 * Return: 0, the errors of s2pt_memslot_add(), S2PT_EINVAL (@id taken or too large, @dirty
 * missing, present without LOG_DIRTY, or with bits beyond the slot).
 */
int s2pt_memslot_restore(struct s2pt_mmu *mmu, uint64_t ipa, uint64_t pa, uint64_t size,
			 uint32_t flags, uint64_t backing, uint32_t id, const uint64_t *dirty);

/**
 * s2pt_memslot_delete() - remove a slot: s2pt_unmap() of its range (the VM's semantics),
 * which frees emptied tables; its dirty log goes with it. Atomic: if the unmap fails, the slot
 * stays. Return: 0, S2PT_EINVAL (no such id), S2PT_ENOMEM, S2PT_EDESTROYED.
 */
int s2pt_memslot_delete(struct s2pt_mmu *mmu, uint32_t id);

/** s2pt_memslot_find() - the slot with @id, or NULL. */
const struct s2pt_memslot *s2pt_memslot_find(const struct s2pt_mmu *mmu, uint32_t id);

/* s2pt_set_log_dirty() flags */
#define S2PT_LOG_EAGER_SPLIT 0x1u /* split the slot's blocks now (KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE) */

/**
 * s2pt_set_log_dirty() - KVM_MEM_LOG_DIRTY_PAGES on or off.
 * Enable (a no-op when already on): with S2PT_LOG_EAGER_SPLIT first s2pt_split() of the slot
 * (the only step that can fail; nothing changes then), then every leaf intersecting the slot
 * loses write permission, whole (KVM's stage2_wp_range), then one S2PT_TLBI_WRPROTECT event
 * over the slot (RANGE; VMID without FEAT_TLBIRANGE) if a leaf changed; the bitmap starts
 * clear. While logging, faults map pages only (force_pte) and writes mark pages dirty.
 * Disable: the bitmap is dropped; the tables are left as they are.
 * Return: 0, S2PT_EINVAL (id, flags, a read-only slot), S2PT_ENOMEM, S2PT_EDESTROYED.
 */
int s2pt_set_log_dirty(struct s2pt_mmu *mmu, uint32_t id, int enable, uint32_t flags);

/**
 * s2pt_get_dirty_log() - KVM_GET_DIRTY_LOG: copy the slot's bitmap to @bitmap
 * ((pages + 63) / 64 words, all written). @clear: the copied bits are cleared and, per word
 * with bits, the pages from its lowest to its highest set bit are write-protected by whole
 * leaves (kvm_mmu_write_protect_pt_masked); one S2PT_TLBI_WRPROTECT event over the slot if
 * any bit was set. Cost: a zero fill of @bitmap plus work per dirty word.
 * Return: 0, S2PT_EINVAL (id, slot not logging), S2PT_EDESTROYED.
 */
int s2pt_get_dirty_log(struct s2pt_mmu *mmu, uint32_t id, uint64_t *bitmap, int clear);

/**
 * s2pt_clear_dirty_log() - KVM_CLEAR_DIRTY_LOG: for @nwords mask words from page
 * @first_page (a multiple of 64), clear the dirty bits set in @mask and write-protect those
 * pages as s2pt_get_dirty_log() does; one S2PT_TLBI_WRPROTECT event if any bit was cleared.
 * Return: 0, S2PT_EINVAL (id, not logging, @first_page not a multiple of 64),
 * S2PT_ERANGE (@first_page or a set mask bit beyond the slot), S2PT_EDESTROYED.
 */
int s2pt_clear_dirty_log(struct s2pt_mmu *mmu, uint32_t id, uint64_t first_page,
			 const uint64_t *mask, size_t nwords);

/**
 * s2pt_handle_fault() - one guest access through the abort handler, in KVM's order: a hit changes
 * nothing; an IPA beyond the IPA size aborts; an owner annotation is refused; no slot: MMIO
 * (an instruction fetch aborts); a write to a read-only slot: MMIO; an access-flag fault is
 * fixed by s2pt_mkyoung(); otherwise the mapping size is the largest leaf size not above the
 * slot's backing whose aligned block lies in the slot and whose alignment the slot's IPA and
 * PA share (the granule while logging), the permissions R, W if the slot is writable and
 * (not logging or this is a write), X for a fetch; a translation fault maps that; a
 * permission fault relaxes the leaf if it has that size, else maps it. A write while logging
 * marks the page dirty (DIRTY for a permission fault).
 * @outcome: enum s2pt_outcome.
 * Return: 0, S2PT_EINVAL (access), S2PT_ENOMEM (the map found the pool short: nothing
 * changed), S2PT_EDESTROYED.
 */
int s2pt_handle_fault(struct s2pt_mmu *mmu, uint64_t ipa, uint32_t access,
		      uint32_t *outcome);

/**
 * s2pt_access_many() - @n guest accesses in order, as a guest runs them: each is translated;
 * on a fault the handler runs and the access is retried (up to 4 handler runs: an access-flag
 * fault may be followed by a permission fault); an exit (MMIO, PERMISSION, ABORT) ends it.
 * @pa_out:      the final PA, 0 for an access that exited or still faults.
 * @outcome_out: the last handler run's outcome, S2PT_OUTCOME_HIT if none ran.
 * @done:        accesses completed (on error: the index of the failing one; earlier ones
 *               stay applied).
 * Hits cost about what s2pt_translate_many() costs: accesses go through it in chunks that
 * shrink while faults are frequent.
 * Return: 0, S2PT_EINVAL, S2PT_ENOMEM, S2PT_EDESTROYED.
 */
int s2pt_access_many(struct s2pt_mmu *mmu, const uint64_t *ipas, size_t n, uint32_t access,
		     uint64_t *pa_out, uint8_t *outcome_out, size_t *done);

#ifdef __cplusplus
}
#endif
#endif /* S2PT_MMU_H */
