# Declarations of the C core's public API (csrc/include/s2pt/s2pt.h), mirrored 1:1.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t


cdef extern from "s2pt/s2pt.h" nogil:
    enum:
        S2PT_OK
        S2PT_EINVAL
        S2PT_EALIGN
        S2PT_ERANGE
        S2PT_ENOMEM
        S2PT_ECONFIG
        S2PT_EFAULT
        S2PT_EINVARIANT
        S2PT_EDESTROYED
        S2PT_EBUSY
        S2PT_E__COUNT

    const char *s2pt_strerror(int err)
    int s2pt_debug_build()

    enum:
        S2PT_PROT_R
        S2PT_PROT_W
        S2PT_PROT_PX
        S2PT_PROT_UX
        S2PT_PROT_X
        S2PT_ACCESS_READ
        S2PT_ACCESS_WRITE
        S2PT_ACCESS_EXEC
        S2PT_ACCESS_EXEC_EL0
        S2PT_ACCESS_READ_EL0
        S2PT_ACCESS_WRITE_EL0
        S2PT_PROT_USER
        S2PT_CONFIG_STAGE1
        S2PT_CONFIG_TTBR1
        S2PT_TCR_EPD0
        S2PT_TCR_EPD1
        S2PT_MAP_NG
        S2PT_MAX_NESTED_STEPS
        S2PT_MEMATTR_STAGE1
        S2PT_MEMATTR_NORMAL
        S2PT_MEMATTR_RESERVED
        S2PT_FSC_NONE
        S2PT_FSC_S1PTW
        S2PT_MAX_LEVELS
        S2PT_MAX_WALK_STEPS
        S2PT_CONFIG_LPA2
        S2PT_CONFIG_FWB
        S2PT_CONFIG_XNX
        S2PT_CONFIG_NO_TLBIRANGE
        S2PT_CONFIG_KVM
        S2PT_MAP_NO_BLOCKS
        S2PT_MAP_NO_AF
        S2PT_MAP_SW_SHIFT
        S2PT_OWNER_MAX
        S2PT_TLBI_IPA
        S2PT_TLBI_RANGE
        S2PT_TLBI_VMID
        S2PT_TLBI_LEVEL_UNKNOWN
        S2PT_TLBI_UNMAP
        S2PT_TLBI_TABLE
        S2PT_TLBI_REPLACE
        S2PT_TLBI_SPLIT
        S2PT_TLBI_COALESCE
        S2PT_TLBI_PERM
        S2PT_TLBI_AF
        S2PT_TLBI_DESTROY
        S2PT_TLBI_OVERFLOW
        S2PT_TLBI_WRPROTECT
        S2PT_LEAF_WHOLE

    enum s2pt_fault_kind:
        S2PT_FAULT_NONE
        S2PT_FAULT_TRANSLATION
        S2PT_FAULT_ACCESS_FLAG
        S2PT_FAULT_PERMISSION
        S2PT_FAULT_ADDRESS_SIZE

    struct s2pt_fault:
        uint32_t kind
        int32_t level
        uint32_t fsc
        uint64_t ipa
        uint64_t desc

    struct s2pt_translation:
        uint64_t pa
        uint64_t size
        int32_t level
        uint32_t prot
        uint32_t memattr
        uint32_t af
        uint32_t sw
        uint64_t pte

    struct s2pt_config:
        uint32_t ipa_bits
        uint32_t pa_bits
        uint32_t granule_shift
        uint32_t stride
        uint32_t levels
        int32_t start_level
        uint32_t root_tables
        uint64_t root_entries
        int32_t min_block_level
        uint32_t t0sz
        uint32_t sl0
        uint32_t vmid
        uint32_t flags
        uint64_t vtcr
        uint64_t oa_mask
        uint64_t oa_hi_mask
        uint32_t oa_hi_shift
        uint64_t leaf_sh

    int s2pt_config_init(s2pt_config *cfg, uint32_t ipa_bits, uint32_t granule,
                         uint32_t pa_bits, uint32_t vmid, uint32_t flags)
    int s2pt_config_from_vtcr(s2pt_config *cfg, uint64_t vtcr, uint32_t vmid, uint32_t flags)
    uint32_t s2pt_level_shift(const s2pt_config *cfg, int level)
    int s2pt_s1_config_init(s2pt_config *cfg, uint32_t va_bits, uint32_t granule,
                            uint32_t ips_bits, uint32_t asid, uint32_t flags)

    struct s2pt_pool:
        uint8_t *mem
        uint64_t base_pa
        uint32_t granule_shift
        uint32_t capacity
        uint32_t used
        uint32_t hiwater
        uint32_t nfree
        uint64_t *hint
        uint32_t *refcount
        uint32_t *owner
        uint32_t *free_stack
        uint32_t next_owner
        uint32_t live_tables

    size_t s2pt_pool_meta_bytes(uint32_t pages)
    int s2pt_pool_check(const s2pt_pool *pool, char *msg, size_t msg_len)
    int s2pt_pool_init_foreign(s2pt_pool *pool, void *mem, uint32_t pages, void *meta,
                               uint64_t base_pa, uint32_t granule)
    int s2pt_pool_init(s2pt_pool *pool, void *mem, uint32_t pages, void *meta,
                       uint64_t base_pa, uint32_t granule)
    uint32_t s2pt_pool_free_pages(const s2pt_pool *pool)
    int s2pt_pool_refcount(const s2pt_pool *pool, uint64_t pa, uint32_t *count)
    void *s2pt_mem_alloc(size_t bytes)
    void s2pt_mem_free(void *mem, size_t bytes)

    struct s2pt_tlbi:
        uint64_t ipa
        uint64_t size
        int32_t kind
        int32_t level
        uint32_t reason
        uint32_t bbm

    struct s2pt_tlbi_log:
        s2pt_tlbi *events
        uint32_t capacity
        uint32_t count
        uint32_t overflowed

    struct s2pt_pgtable:
        s2pt_config cfg
        s2pt_pool *pool
        uint64_t *root
        uint64_t root_pa
        uint32_t root_index
        uint32_t owner
        uint32_t table_pages
        uint32_t allocs
        s2pt_tlbi_log *tlbi
        uint64_t frees
        int destroyed

    int s2pt_pgtable_init(s2pt_pgtable *pt, const s2pt_config *cfg, s2pt_pool *pool)
    int s2pt_pgtable_attach(s2pt_pgtable *pt, const s2pt_config *cfg, s2pt_pool *pool,
                            uint64_t root_pa, char *msg, size_t msg_len)
    int s2pt_pgtable_restore(s2pt_pgtable *pt, const s2pt_config *cfg, s2pt_pool *pool,
                             uint64_t root_pa, uint32_t owner, uint64_t frees, char *msg,
                             size_t msg_len)
    void s2pt_pgtable_destroy(s2pt_pgtable *pt)
    uint64_t s2pt_vttbr(const s2pt_pgtable *pt)

    int s2pt_map(s2pt_pgtable *pt, uint64_t ipa, uint64_t pa, uint64_t size,
                 uint32_t prot, uint32_t memattr, uint32_t flags)
    int s2pt_unmap(s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint64_t *unmapped)
    int s2pt_map_many(s2pt_pgtable *pt, const uint64_t *ipas, const uint64_t *pas,
                      const uint64_t *sizes, size_t size_stride, size_t n, uint32_t prot,
                      uint32_t memattr, uint32_t flags, size_t *done) nogil
    int s2pt_unmap_many(s2pt_pgtable *pt, const uint64_t *ipas, const uint64_t *sizes,
                        size_t size_stride, size_t n, uint64_t *unmapped, size_t *done) nogil
    int s2pt_protect(s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint32_t prot)
    int s2pt_set_af(s2pt_pgtable *pt, uint64_t ipa, uint64_t size, int af, uint64_t *young)
    int s2pt_get_leaf(s2pt_pgtable *pt, uint64_t ipa, uint64_t **ptep, int *level)
    int s2pt_wrprotect(s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint32_t flags,
                       uint64_t *changed)
    int s2pt_mkyoung(s2pt_pgtable *pt, uint64_t ipa, int *found)
    int s2pt_test_clear_young(s2pt_pgtable *pt, uint64_t ipa, uint64_t size, int mkold,
                              int *young)
    int s2pt_young_bitmap(s2pt_pgtable *pt, uint64_t ipa, uint64_t size, int clear,
                          uint64_t *bitmap)
    int s2pt_relax_perms(s2pt_pgtable *pt, uint64_t ipa, uint32_t prot, int *found)
    int s2pt_split(s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint64_t *tables)
    int s2pt_collapse(s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint64_t *blocks)
    int s2pt_set_owner(s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint32_t owner)
    int s2pt_owner(const s2pt_pgtable *pt, uint64_t ipa, uint32_t *owner)
    int s2pt_translate(const s2pt_pgtable *pt, uint64_t ipa, uint32_t access,
                       s2pt_translation *out, s2pt_fault *fault)
    int s2pt_lookup(const s2pt_pgtable *pt, uint64_t ipa, s2pt_translation *out,
                    s2pt_fault *fault)
    int s2pt_translate_image(const void *image, uint64_t image_pa, uint64_t image_bytes,
                             uint64_t vtcr, uint64_t vttbr, uint32_t flags, uint64_t ipa,
                             uint32_t access, s2pt_translation *out, s2pt_fault *fault)
    int64_t s2pt_translate_many(const s2pt_pgtable *pt, const uint64_t *ipas, size_t n,
                                uint32_t access, uint64_t *pa_out, uint8_t *fsc_out) nogil

    struct s2pt_walk_step:
        int32_t level
        uint32_t index
        uint64_t table_pa
        uint64_t desc_pa
        uint64_t desc

    int s2pt_walk_path(const s2pt_pgtable *pt, uint64_t ipa, s2pt_walk_step *steps,
                       uint32_t *nsteps)

    struct s2pt_nested_step:
        uint32_t stage
        int32_t level
        uint64_t ipa
        uint64_t desc_pa
        uint64_t desc

    struct s2pt_fault2:
        uint32_t stage
        uint32_t s1ptw
        uint32_t kind
        int32_t level
        uint32_t fsc
        uint64_t va
        uint64_t ipa
        uint64_t desc

    struct s2pt_translation2:
        uint64_t pa
        uint64_t ipa
        uint32_t prot
        uint32_t memattr
        s2pt_translation s1
        s2pt_translation s2

    struct s2pt_regime:
        const s2pt_pgtable *ttbr0
        const s2pt_pgtable *ttbr1
        uint64_t mair

    int s2pt_translate2(const s2pt_pgtable *s2, const s2pt_regime *r, uint64_t va,
                        uint32_t access, s2pt_translation2 *out, s2pt_fault2 *f,
                        s2pt_nested_step *steps, uint32_t *nsteps)
    int64_t s2pt_translate2_many(const s2pt_pgtable *s2, const s2pt_regime *r,
                                 const uint64_t *vas, size_t n, uint32_t access,
                                 uint64_t *pa_out, uint64_t *ipa_out, uint8_t *fsc_out,
                                 uint8_t *stage_out, uint8_t *reads_out) nogil
    uint32_t s2pt_s1_memattr(uint32_t attr)
    uint32_t s2pt_combine_memattr(const s2pt_config *s2_cfg, uint32_t s1_memattr,
                                  uint32_t s2_field)

    struct s2pt_leaf:
        uint64_t ipa
        uint64_t pa
        uint64_t size
        uint64_t pte
        int32_t level
        uint32_t prot
        uint32_t memattr
        uint32_t af
        uint32_t sw

    int s2pt_leaves(const s2pt_pgtable *pt, uint64_t ipa, uint64_t size, s2pt_leaf *out,
                    size_t cap, size_t *n, uint64_t *next_ipa)

    struct s2pt_stats_t "s2pt_stats":
        uint64_t table_pages
        uint64_t table_pages_by_level[4]
        uint64_t leaves_by_level[4]
        uint64_t mapped_bytes
        uint64_t annotated_bytes

    int s2pt_stats(const s2pt_pgtable *pt, s2pt_stats_t *out)
    int s2pt_check(const s2pt_pgtable *pt, char *msg, size_t msg_len)
    int s2pt_dump(const s2pt_pgtable *pt, char *buf, size_t len, size_t *needed)


# csrc/include/s2pt/mmu.h: KVM's MMU layer above the engine.
cdef extern from "s2pt/mmu.h" nogil:
    enum:
        S2PT_OUTCOME_HIT
        S2PT_OUTCOME__COUNT
        S2PT_MEMSLOT_READONLY
        S2PT_MEMSLOT_LOG_DIRTY
        S2PT_LOG_EAGER_SPLIT

    struct s2pt_memslot:
        uint64_t ipa
        uint64_t pa
        uint64_t size
        uint64_t backing
        uint32_t id
        uint32_t flags
        uint64_t *dirty
        uint64_t *dirty_sum
        uint64_t **dirty_ptep
        uint32_t ndirty
        uint64_t frees_at

    struct s2pt_mmu:
        s2pt_pgtable *pt
        s2pt_memslot *slots
        uint32_t nslots
        uint32_t cap
        uint32_t last
        uint64_t counts[8]

    void s2pt_mmu_init(s2pt_mmu *mmu, s2pt_pgtable *pt)
    void s2pt_mmu_release(s2pt_mmu *mmu)
    int s2pt_memslot_add(s2pt_mmu *mmu, uint64_t ipa, uint64_t pa, uint64_t size,
                         uint32_t flags, uint64_t backing, uint32_t *id)
    int s2pt_memslot_delete(s2pt_mmu *mmu, uint32_t id)
    int s2pt_memslot_restore(s2pt_mmu *mmu, uint64_t ipa, uint64_t pa, uint64_t size,
                             uint32_t flags, uint64_t backing, uint32_t id,
                             const uint64_t *dirty)
    const s2pt_memslot *s2pt_memslot_find(const s2pt_mmu *mmu, uint32_t id)
    int s2pt_set_log_dirty(s2pt_mmu *mmu, uint32_t id, int enable, uint32_t flags)
    int s2pt_get_dirty_log(s2pt_mmu *mmu, uint32_t id, uint64_t *bitmap, int clear)
    int s2pt_clear_dirty_log(s2pt_mmu *mmu, uint32_t id, uint64_t first_page,
                             const uint64_t *mask, size_t nwords)
    int s2pt_handle_fault(s2pt_mmu *mmu, uint64_t ipa, uint32_t access, uint32_t *outcome)
    int s2pt_access_many(s2pt_mmu *mmu, const uint64_t *ipas, size_t n, uint32_t access,
                         uint64_t *pa_out, uint8_t *outcome_out, size_t *done)
