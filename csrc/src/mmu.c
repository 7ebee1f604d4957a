/*
 * KVM/arm64's stage-2 MMU policy (arch/arm64/kvm/mmu.c): memslots, the abort handler, dirty
 * logging. Only the engine's public operations touch the tables here, plus the level-3
 * entry pointers s2pt_get_leaf() hands out for re-protecting dirty pages.
 */
#include <stdlib.h>

#include "internal.h"
#include "s2pt/mmu.h"

void s2pt_mmu_init(struct s2pt_mmu *mmu, struct s2pt_pgtable *pt)
{
	memset(mmu, 0, sizeof(*mmu));
	mmu->pt = pt;
}

static void log_free(struct s2pt_memslot *s)
{
	free(s->dirty);
	free(s->dirty_sum);
	free(s->dirty_ptep);
	s->dirty = NULL;
	s->dirty_sum = NULL;
	s->dirty_ptep = NULL;
	s->ndirty = 0;
	s->flags &= ~S2PT_MEMSLOT_LOG_DIRTY;
}

void s2pt_mmu_release(struct s2pt_mmu *mmu)
{
	for (uint32_t i = 0; i < mmu->nslots; i++)
		log_free(&mmu->slots[i]);
	free(mmu->slots);
	mmu->slots = NULL;
	mmu->nslots = mmu->cap = 0;
}

static inline uint64_t slot_pages(const struct s2pt_mmu *mmu, const struct s2pt_memslot *s)
{
	return s->size >> mmu->pt->cfg.granule_shift;
}

static inline uint64_t slot_words(const struct s2pt_mmu *mmu, const struct s2pt_memslot *s)
{
	return (slot_pages(mmu, s) + 63) / 64;
}

static int slot_index(const struct s2pt_mmu *mmu, uint32_t id)
{
	for (uint32_t i = 0; i < mmu->nslots; i++)
		if (mmu->slots[i].id == id)
			return (int)i;
	return -1;
}

const struct s2pt_memslot *s2pt_memslot_find(const struct s2pt_mmu *mmu, uint32_t id)
{
	int i = slot_index(mmu, id);

	return i < 0 ? NULL : &mmu->slots[i];
}

/* The slot holding @ipa (gfn_to_memslot), or NULL. Faults cluster: try the last one first. */
static struct s2pt_memslot *slot_of(struct s2pt_mmu *mmu, uint64_t ipa)
{
	uint32_t lo = 0, hi = mmu->nslots;
	struct s2pt_memslot *s;

	if (mmu->last < mmu->nslots) {
		s = &mmu->slots[mmu->last];
		if (ipa - s->ipa < s->size)
			return s;
	}
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		s = &mmu->slots[mid];
		if (ipa < s->ipa)
			hi = mid;
		else if (ipa - s->ipa >= s->size)
			lo = mid + 1;
		else {
			mmu->last = mid;
			return s;
		}
	}
	return NULL;
}

/* A leaf size the VM's format can map: the granule or a block level's span. */
static int leaf_size(const struct s2pt_config *cfg, uint64_t size)
{
	for (int level = cfg->min_block_level; level <= 3; level++)
		if (size == 1ull << s2pt_level_shift(cfg, level))
			return 1;
	return 0;
}

/* KVM_SET_USER_MEMORY_REGION's checks for a new slot; *@pos: where it goes in the list. */
static int slot_check(struct s2pt_mmu *mmu, uint64_t ipa, uint64_t pa, uint64_t size,
		      uint32_t flags, uint64_t backing, uint32_t *pos)
{
	const struct s2pt_config *cfg = &mmu->pt->cfg;
	uint64_t gmask = (1ull << cfg->granule_shift) - 1;
	uint32_t p = 0;
	int ret;

	if (mmu->pt->destroyed)
		return S2PT_EDESTROYED;
	if ((ipa | pa | size) & gmask)
		return S2PT_EALIGN;
	if (size == 0 || (flags & ~(S2PT_MEMSLOT_READONLY | S2PT_MEMSLOT_LOG_DIRTY)))
		return S2PT_EINVAL;
	ret = s2pt__check_range(mmu->pt, ipa, size);
	if (ret)
		return ret;
	if (pa + size < pa || pa + size > (1ull << cfg->pa_bits))
		return S2PT_ERANGE;
	/* KVM refuses dirty logging of a read-only slot. */
	if (!leaf_size(cfg, backing) ||
	    (flags & (S2PT_MEMSLOT_READONLY | S2PT_MEMSLOT_LOG_DIRTY)) ==
		    (S2PT_MEMSLOT_READONLY | S2PT_MEMSLOT_LOG_DIRTY) ||
	    mmu->nslots >= S2PT_MEMSLOTS_MAX)
		return S2PT_EINVAL;
	for (; p < mmu->nslots && mmu->slots[p].ipa < ipa; p++)
		;
	/* KVM's -EEXIST: slots never overlap in IPA. */
	if ((p > 0 && mmu->slots[p - 1].ipa + mmu->slots[p - 1].size > ipa) ||
	    (p < mmu->nslots && mmu->slots[p].ipa < ipa + size))
		return S2PT_ERANGE;
	*pos = p;
	return 0;
}

/* Room for one more slot (the only allocation a slot change can fail on). */
static int slot_room(struct s2pt_mmu *mmu)
{
	if (mmu->nslots == mmu->cap) {
		uint32_t cap = mmu->cap ? mmu->cap * 2 : 8;
		struct s2pt_memslot *slots = realloc(mmu->slots, cap * sizeof(*slots));

		if (!slots)
			return S2PT_ENOMEM;
		mmu->slots = slots;
		mmu->cap = cap;
	}
	return 0;
}

static void slot_insert(struct s2pt_mmu *mmu, uint32_t pos, const struct s2pt_memslot *s)
{
	memmove(&mmu->slots[pos + 1], &mmu->slots[pos], (mmu->nslots - pos) * sizeof(*mmu->slots));
	mmu->slots[pos] = *s;
	mmu->nslots++;
	mmu->last = pos;
}

int s2pt_memslot_add(struct s2pt_mmu *mmu, uint64_t ipa, uint64_t pa, uint64_t size,
		     uint32_t flags, uint64_t backing, uint32_t *id)
{
	uint32_t pos, new_id = 0;
	int ret = slot_check(mmu, ipa, pa, size, flags, backing, &pos);

	/* Memslots are the guest's physical memory: stage-2 tables only. */
	if (!ret && s2pt_is_stage1(&mmu->pt->cfg))
		ret = S2PT_EINVAL;
	if (!ret)
		ret = slot_room(mmu);
	if (ret)
		return ret;
	while (slot_index(mmu, new_id) >= 0)
		new_id++;
	slot_insert(mmu, pos,
		    &(struct s2pt_memslot){.ipa = ipa, .pa = pa, .size = size, .backing = backing,
					   .id = new_id, .flags = flags & S2PT_MEMSLOT_READONLY});
	if (flags & S2PT_MEMSLOT_LOG_DIRTY) {
		/* kvm_mmu_slot_apply_flags(): what the range maps already is write-protected. */
		ret = s2pt_set_log_dirty(mmu, new_id, 1, 0);
		if (ret) {
			memmove(&mmu->slots[pos], &mmu->slots[pos + 1],
				(mmu->nslots - pos - 1) * sizeof(*mmu->slots));
			mmu->nslots--;
			return ret;
		}
	}
	*id = new_id;
	return 0;
}

int s2pt_memslot_restore(struct s2pt_mmu *mmu, uint64_t ipa, uint64_t pa, uint64_t size,
			 uint32_t flags, uint64_t backing, uint32_t id, const uint64_t *dirty)
{
	struct s2pt_memslot s = {.ipa = ipa, .pa = pa, .size = size, .backing = backing,
				 .id = id, .flags = flags};
	uint64_t words, pages;
	uint32_t pos;
	int ret = slot_check(mmu, ipa, pa, size, flags, backing, &pos);

	if (ret)
		return ret;
	if (id >= S2PT_MEMSLOTS_MAX || slot_index(mmu, id) >= 0 ||
	    !(flags & S2PT_MEMSLOT_LOG_DIRTY) != !dirty)
		return S2PT_EINVAL;
	pages = size >> mmu->pt->cfg.granule_shift;
	words = (pages + 63) / 64;
	/* No dirty bit beyond the slot's last page. */
	if (dirty && (pages & 63) && (dirty[words - 1] >> (pages & 63)))
		return S2PT_EINVAL;
	ret = slot_room(mmu);
	if (ret)
		return ret;
	if (dirty) {
		s.dirty = malloc(words * sizeof(*s.dirty));
		s.dirty_sum = calloc((words + 63) / 64, sizeof(*s.dirty_sum));
		/* Entry pointers are not part of a saved state: the harvest walks instead. */
		s.dirty_ptep = calloc(words, sizeof(*s.dirty_ptep));
		if (!s.dirty || !s.dirty_sum || !s.dirty_ptep) {
			log_free(&s);
			return S2PT_ENOMEM;
		}
		memcpy(s.dirty, dirty, words * sizeof(*s.dirty));
		for (uint64_t w = 0; w < words; w++) {
			if (s.dirty[w]) {
				s.dirty_sum[w >> 6] |= 1ull << (w & 63);
				s.ndirty++;
			}
		}
	}
	slot_insert(mmu, pos, &s);
	return 0;
}

int s2pt_memslot_delete(struct s2pt_mmu *mmu, uint32_t id)
{
	int i = slot_index(mmu, id);
	struct s2pt_memslot *s;
	int ret;

	if (mmu->pt->destroyed)
		return S2PT_EDESTROYED;
	if (i < 0)
		return S2PT_EINVAL;
	s = &mmu->slots[i];
	/* kvm_arch_flush_shadow_memslot(): the slot's range goes, with its emptied tables. */
	ret = s2pt_unmap(mmu->pt, s->ipa, s->size, NULL);
	if (ret)
		return ret;
	log_free(s);
	memmove(s, s + 1, (mmu->nslots - (uint32_t)i - 1) * sizeof(*s));
	mmu->nslots--;
	return 0;
}

/* KVM's flush after write-protecting (kvm_flush_remote_tlbs_memslot). */
static void flush_slot(struct s2pt_mmu *mmu, const struct s2pt_memslot *s)
{
	struct s2pt_pgtable *pt = mmu->pt;

	if (pt->cfg.flags & S2PT_CONFIG_NO_TLBIRANGE)
		s2pt__tlbi(pt, S2PT_TLBI_VMID, 0, 0, S2PT_TLBI_LEVEL_UNKNOWN, S2PT_TLBI_WRPROTECT);
	else
		s2pt__tlbi(pt, S2PT_TLBI_RANGE, s->ipa, s->size, S2PT_TLBI_LEVEL_UNKNOWN,
			   S2PT_TLBI_WRPROTECT);
}

int s2pt_set_log_dirty(struct s2pt_mmu *mmu, uint32_t id, int enable, uint32_t flags)
{
	int i = slot_index(mmu, id);
	struct s2pt_memslot *s;
	uint64_t words, changed = 0;
	int ret;

	if (mmu->pt->destroyed)
		return S2PT_EDESTROYED;
	if (i < 0 || (flags & ~S2PT_LOG_EAGER_SPLIT))
		return S2PT_EINVAL;
	s = &mmu->slots[i];
	if (!enable) {
		log_free(s);
		return 0;
	}
	if (s->flags & S2PT_MEMSLOT_READONLY)
		return S2PT_EINVAL;
	if (s->flags & S2PT_MEMSLOT_LOG_DIRTY)
		return 0;
	words = slot_words(mmu, s);
	/* Everything the fault path and the harvest use, allocated now. */
	s->dirty = calloc(words, sizeof(*s->dirty));
	s->dirty_sum = calloc((words + 63) / 64, sizeof(*s->dirty_sum));
	s->dirty_ptep = malloc(words * sizeof(*s->dirty_ptep));
	if (!s->dirty || !s->dirty_sum || !s->dirty_ptep) {
		log_free(s);
		return S2PT_ENOMEM;
	}
	if (flags & S2PT_LOG_EAGER_SPLIT) {
		uint64_t need = 0;

		/* Reserve first, so the split cannot fail once the slot is write-protected. */
		ret = s2pt_split_pages(mmu->pt, s->ipa, s->size, &need);
		if (!ret && need > s2pt_pool_free_pages(mmu->pt->pool))
			ret = S2PT_ENOMEM;
		if (ret) {
			log_free(s);
			return ret;
		}
	}
	/* kvm_mmu_wp_memory_region(): whole leaves, no split, so it cannot fail. Before the
	 * split: write-protecting a block costs one entry, its pages 512 (and they inherit it). */
	ret = s2pt_wrprotect(mmu->pt, s->ipa, s->size, S2PT_LEAF_WHOLE, &changed);
	S2PT_ASSERT(ret == 0);
	if (flags & S2PT_LOG_EAGER_SPLIT) {
		ret = s2pt_split(mmu->pt, s->ipa, s->size, NULL);
		S2PT_ASSERT(ret == 0);
	}
	if (changed)
		flush_slot(mmu, s);
	s->ndirty = 0;
	s->flags |= S2PT_MEMSLOT_LOG_DIRTY;
	return 0;
}

/*
 * mark_page_dirty(). A word entering the list records the level-3 entry of its first page,
 * so the harvest re-protects without a walk; only when the word's pages share one last-level
 * table (words are 64 pages from the slot's start, which need not be table aligned).
 */
static void mark_dirty(struct s2pt_mmu *mmu, struct s2pt_memslot *s, uint64_t ipa)
{
	struct s2pt_pgtable *pt = mmu->pt;
	uint32_t gshift = pt->cfg.granule_shift;
	uint64_t page = (ipa - s->ipa) >> gshift;
	uint64_t w = page >> 6, bit = 1ull << (page & 63);
	uint64_t *ptep = NULL;
	int level;

	if (s->dirty[w] & bit)
		return;
	if (!s->dirty[w]) {
		uint64_t first = s->ipa + ((w << 6) << gshift), last = first + (63ull << gshift);

		if (!((first ^ last) >> s2pt_level_shift(&pt->cfg, 2)) &&
		    !s2pt_get_leaf(pt, ipa, &ptep, &level) && level == 3)
			ptep -= page & 63;
		else
			ptep = NULL;
		if (!s->ndirty)
			s->frees_at = pt->frees;
		s->ndirty++;
		s->dirty_sum[w >> 6] |= 1ull << (w & 63);
		s->dirty_ptep[w] = ptep;
	}
	s->dirty[w] |= bit;
}

/*
 * kvm_mmu_write_protect_pt_masked(): write-protect the pages of word @k of the dirty list
 * from the lowest to the highest bit of @bits, by whole leaves. Returns 1 if any leaf changed.
 */
static int protect_word(struct s2pt_mmu *mmu, struct s2pt_memslot *s, uint64_t w,
			uint64_t *ptep, uint64_t bits)
{
	struct s2pt_pgtable *pt = mmu->pt;
	uint32_t lo = (uint32_t)__builtin_ctzll(bits), hi = 63u - (uint32_t)__builtin_clzll(bits);
	uint64_t changed = 0;

	if (ptep && s->frees_at == pt->frees) {
		/* No table was freed since the entry was recorded: it is still this page's. */
		return s2pt__scan_bit(ptep + lo, hi - lo + 1, 7, 1) != 0; /* bit 7: S2AP W */
	}
	(void)s2pt_wrprotect(pt, s->ipa + (((w << 6) + lo) << pt->cfg.granule_shift),
			     (uint64_t)(hi - lo + 1) << pt->cfg.granule_shift, S2PT_LEAF_WHOLE,
			     &changed);
	return changed != 0;
}

static int logging_slot(struct s2pt_mmu *mmu, uint32_t id, struct s2pt_memslot **out)
{
	int i = slot_index(mmu, id);

	if (mmu->pt->destroyed)
		return S2PT_EDESTROYED;
	if (i < 0 || !(mmu->slots[i].flags & S2PT_MEMSLOT_LOG_DIRTY))
		return S2PT_EINVAL;
	*out = &mmu->slots[i];
	return 0;
}

int s2pt_get_dirty_log(struct s2pt_mmu *mmu, uint32_t id, uint64_t *bitmap, int clear)
{
	struct s2pt_memslot *s;
	int ret = logging_slot(mmu, id, &s);

	if (ret)
		return ret;
	memset(bitmap, 0, slot_words(mmu, s) * sizeof(*bitmap));
	/* The summary gives the dirty words in IPA order; they are handled a batch at a time, the
	 * batch's entries fetched first so that their cache misses overlap (the dirty pages of a
	 * round are scattered over the tables: one miss each, otherwise paid one after another). */
	for (uint64_t k = 0; k < (slot_words(mmu, s) + 63) / 64 && s->ndirty; k++) {
		uint64_t batch[64];
		uint32_t nb = 0;

		for (uint64_t sum = s->dirty_sum[k]; sum; sum &= sum - 1) {
			uint64_t w = k * 64 + (uint64_t)__builtin_ctzll(sum);

			batch[nb++] = w;
			bitmap[w] = s->dirty[w];
			if (clear && s->dirty_ptep[w])
				__builtin_prefetch(s->dirty_ptep[w] + __builtin_ctzll(s->dirty[w]), 1);
		}
		if (!clear)
			continue;
		for (uint32_t b = 0; b < nb; b++) {
			uint64_t w = batch[b];

			protect_word(mmu, s, w, s->dirty_ptep[w], s->dirty[w]);
			s->dirty[w] = 0;
		}
		s->dirty_sum[k] = 0;
	}
	/* The re-protection is flushed once for the slot, as KVM does after the bitmap walk. */
	if (clear && s->ndirty) {
		s->ndirty = 0;
		flush_slot(mmu, s);
	}
	return 0;
}

int s2pt_clear_dirty_log(struct s2pt_mmu *mmu, uint32_t id, uint64_t first_page,
			 const uint64_t *mask, size_t nwords)
{
	struct s2pt_memslot *s;
	uint64_t pages, words, first_word;
	int ret = logging_slot(mmu, id, &s), cleared = 0;

	if (ret)
		return ret;
	if (first_page & 63)
		return S2PT_EINVAL;
	pages = slot_pages(mmu, s);
	words = slot_words(mmu, s);
	first_word = first_page >> 6;
	if (first_page >= pages)
		return S2PT_ERANGE;
	/* Every set bit must name a page of the slot; check all before changing anything. */
	for (size_t i = 0; i < nwords; i++) {
		uint64_t w = first_word + i;

		if (mask[i] && (w >= words || (w == words - 1 && (pages & 63) &&
					       (mask[i] >> (pages & 63)))))
			return S2PT_ERANGE;
	}
	for (size_t i = 0; i < nwords; i++) {
		uint64_t w = first_word + i, bits = mask[i] & (w < words ? s->dirty[w] : 0);

		if (!bits)
			continue;
		s->dirty[w] &= ~bits;
		cleared = 1;
		protect_word(mmu, s, w, s->dirty_ptep[w], bits);
		if (!s->dirty[w]) {
			s->dirty_sum[w >> 6] &= ~(1ull << (w & 63));
			s->ndirty--;
		}
	}
	if (!cleared)
		return 0;
	flush_slot(mmu, s);
	return 0;
}

/* The largest leaf size the slot allows at @ipa (user_mem_abort's vma_pagesize, after
 * fault_supports_stage2_huge_mapping() and force_pte). */
static uint64_t map_size(const struct s2pt_mmu *mmu, const struct s2pt_memslot *s, uint64_t ipa)
{
	const struct s2pt_config *cfg = &mmu->pt->cfg;

	if (s->flags & S2PT_MEMSLOT_LOG_DIRTY)
		return 1ull << cfg->granule_shift;
	for (int level = cfg->min_block_level; level < 3; level++) {
		uint64_t size = 1ull << s2pt_level_shift(cfg, level);
		uint64_t base = ipa & ~(size - 1);

		if (size <= s->backing && !((s->ipa - s->pa) & (size - 1)) && base >= s->ipa &&
		    base + size <= s->ipa + s->size)
			return size;
	}
	return 1ull << cfg->granule_shift;
}

static inline int is_exit(uint32_t outcome)
{
	return outcome >= S2PT_OUTCOME_MMIO;
}

/*
 * kvm_handle_guest_abort() for the fault @f of @ipa. @hit_pa: when the handler mapped a leaf
 * that surely grants the access (the slot's PA, its permissions, AF set), the PA the retry
 * would return, so that it need not walk again; else ~0.
 */
static int handle(struct s2pt_mmu *mmu, uint64_t ipa, uint32_t access,
		  const struct s2pt_fault *f, uint32_t *outcome, uint64_t *hit_pa)
{
	struct s2pt_pgtable *pt = mmu->pt;
	const struct s2pt_config *cfg = &pt->cfg;
	int fetch = access == S2PT_ACCESS_EXEC || access == S2PT_ACCESS_EXEC_EL0;
	int write = access == S2PT_ACCESS_WRITE;
	struct s2pt_memslot *s;
	uint64_t size, base;
	uint32_t prot;
	int logging, found, ret;

	*hit_pa = ~0ull;
	if (ipa >> cfg->ipa_bits) {
		*outcome = S2PT_OUTCOME_ABORT; /* kvm_inject_size_fault() */
		return 0;
	}
	if (f->kind == S2PT_FAULT_TRANSLATION && f->desc) {
		*outcome = S2PT_OUTCOME_PERMISSION; /* an owner annotation */
		return 0;
	}
	s = slot_of(mmu, ipa);
	/* No slot: the guest put its code somewhere it should not (an abort), or MMIO. */
	if (!s || (write && (s->flags & S2PT_MEMSLOT_READONLY))) {
		*outcome = (!s && fetch) ? S2PT_OUTCOME_ABORT : S2PT_OUTCOME_MMIO;
		return 0;
	}
	if (f->kind == S2PT_FAULT_ACCESS_FLAG) {
		ret = s2pt_mkyoung(pt, ipa, &found); /* handle_access_fault() */
		*outcome = S2PT_OUTCOME_YOUNG;
		return ret;
	}
	if (f->kind != S2PT_FAULT_TRANSLATION && f->kind != S2PT_FAULT_PERMISSION)
		return S2PT_EINVARIANT; /* s2pt never writes an address beyond the PA size */
	logging = (s->flags & S2PT_MEMSLOT_LOG_DIRTY) != 0;
	size = map_size(mmu, s, ipa);
	base = ipa & ~(size - 1);
	/* Writable only for a write while logging, so that the first write faults. */
	prot = S2PT_PROT_R;
	if (!(s->flags & S2PT_MEMSLOT_READONLY) && (!logging || write))
		prot |= S2PT_PROT_W;
	if (fetch)
		prot |= S2PT_PROT_X;
	if (f->kind == S2PT_FAULT_PERMISSION && size == s2pt__span(cfg, f->level)) {
		ret = s2pt_relax_perms(pt, ipa, prot, &found);
		*outcome = S2PT_OUTCOME_RELAXED;
		/* A fetch from a Device leaf a user mapped into the slot: KVM's -ENOEXEC. */
		if (ret == S2PT_EINVAL && fetch) {
			*outcome = S2PT_OUTCOME_ABORT;
			return 0;
		}
	} else {
		ret = s2pt_map_fault(pt, f, base, s->pa + (base - s->ipa), size, prot,
				     S2PT_MEMATTR_NORMAL, 0);
		*outcome = S2PT_OUTCOME_MAPPED;
		*hit_pa = s->pa + (ipa - s->ipa);
	}
	if (ret)
		return ret;
	if (logging && write) {
		mark_dirty(mmu, s, ipa);
		if (f->kind == S2PT_FAULT_PERMISSION)
			*outcome = S2PT_OUTCOME_DIRTY;
	}
	return 0;
}

int s2pt_handle_fault(struct s2pt_mmu *mmu, uint64_t ipa, uint32_t access,
		      uint32_t *outcome)
{
	struct s2pt_translation t;
	struct s2pt_fault f;
	uint64_t pa;
	int ret = s2pt_translate(mmu->pt, ipa, access, &t, &f);

	*outcome = S2PT_OUTCOME_HIT;
	if (ret == 0) {
		mmu->counts[S2PT_OUTCOME_HIT]++;
		return 0;
	}
	if (ret != S2PT_EFAULT)
		return ret;
	ret = handle(mmu, ipa, access, &f, outcome, &pa);
	if (!ret)
		mmu->counts[*outcome]++;
	return ret;
}

/* One access run to its end: translate, handle, retry. */
static int access_one(struct s2pt_mmu *mmu, uint64_t ipa, uint32_t access, uint64_t *pa,
		      uint8_t *outcome)
{
	struct s2pt_translation t;
	struct s2pt_fault f;
	uint32_t oc = S2PT_OUTCOME_HIT;
	uint64_t hit_pa;

	*pa = 0;
	for (int runs = 0;; runs++) {
		int ret = s2pt_translate(mmu->pt, ipa, access, &t, &f);

		if (ret == 0) {
			*pa = t.pa;
			break;
		}
		if (ret != S2PT_EFAULT)
			return ret;
		if (runs == 4)
			break; /* still faulting: left to the caller */
		ret = handle(mmu, ipa, access, &f, &oc, &hit_pa);
		if (ret)
			return ret;
		mmu->counts[oc]++;
		if (is_exit(oc))
			break;
		if (hit_pa != ~0ull) {
			/* The retry's answer is known; debug builds walk to make sure. */
			S2PT_ASSERT(s2pt_translate(mmu->pt, ipa, access, &t, &f) == 0 && t.pa == hit_pa);
			*pa = hit_pa;
			break;
		}
	}
	if (oc == S2PT_OUTCOME_HIT)
		mmu->counts[S2PT_OUTCOME_HIT]++;
	*outcome = (uint8_t)oc;
	return 0;
}

/* Accesses per s2pt_translate_many() chunk when nothing faults (4 batches of 16 lanes). */
#define ACCESS_CHUNK 64

int s2pt_access_many(struct s2pt_mmu *mmu, const uint64_t *ipas, size_t n, uint32_t access,
		     uint64_t *pa_out, uint8_t *outcome_out, size_t *done)
{
	uint8_t fsc[ACCESS_CHUNK];
	size_t i = 0, chunk = ACCESS_CHUNK;
	int ret = 0;

	*done = 0;
	if (mmu->pt->destroyed)
		return S2PT_EDESTROYED;
	if (access > S2PT_ACCESS_EXEC_EL0)
		return S2PT_EINVAL;
	while (i < n) {
		size_t k = n - i < chunk ? n - i : chunk, j;

		if (k == 1) {
			/* Faults are frequent: one access at a time, no batch to throw away. */
			ret = access_one(mmu, ipas[i], access, &pa_out[i], &outcome_out[i]);
			if (ret)
				break;
			i++;
			chunk = outcome_out[i - 1] == S2PT_OUTCOME_HIT ? 2 : 1;
			continue;
		}
		/* A handler run can change any later translation (kvm semantics drop the rest of a
		 * block), so the chunk's results stand only up to its first fault. */
		if (s2pt_translate_many(mmu->pt, &ipas[i], k, access, &pa_out[i], fsc) < 0)
			return S2PT_EINVARIANT;
		for (j = 0; j < k && fsc[j] == S2PT_FSC_NONE; j++)
			outcome_out[i + j] = S2PT_OUTCOME_HIT;
		mmu->counts[S2PT_OUTCOME_HIT] += j;
		i += j;
		if (j == k) {
			chunk = chunk * 2 > ACCESS_CHUNK ? ACCESS_CHUNK : chunk * 2;
			continue;
		}
		ret = access_one(mmu, ipas[i], access, &pa_out[i], &outcome_out[i]);
		if (ret)
			break;
		i++;
		/* Faults come in bursts (first touch): shrink the chunk while they do. */
		chunk = j * 2 > 1 ? j * 2 : 1;
		chunk = chunk > ACCESS_CHUNK ? ACCESS_CHUNK : chunk;
	}
	*done = i;
	return ret;
}
