/*
 * s2pt: ARM64 stage-2 (IPA -> PA) translation tables in user space.
 *
 * The C core owns all page-table logic; it has no Python dependency and no global state.
 * Build: compile every csrc/src/ .c file with -Icsrc/include (C11). Every fallible function returns 0
 * or a negative S2PT_E* code; results go out through pointer parameters.
 *
 * Model: a struct s2pt_pool is one contiguous buffer of granule-sized table pages at a base
 * PA. A struct s2pt_pgtable is one VM's stage-2 tables inside a pool. Descriptors hold PAs,
 * never pointers, so the buffer is a raw memory image an emulator can walk given the VM's
 * VTTBR_EL2 and VTCR_EL2.
 *
 * Reference counts follow KVM: a table page has count 1 + (number of non-zero entries);
 * a non-root table whose count drops back to 1 is freed at once and its parent entry
 * cleared, recursively upward. Root pages are freed only by s2pt_pgtable_destroy().
 *
 * Failure is atomic: every mutating call validates its arguments and counts the table pages
 * it will allocate before it writes anything; on error nothing has changed.
 *
 * Ownership. The caller owns all memory. s2pt never keeps a pointer it was not given.
 *  - Every struct (s2pt_config, s2pt_pool, s2pt_pgtable, s2pt_tlbi_log, s2pt_mmu, the result
 *    structs) is caller storage: stack, static, heap or embedded in the simulator's own types.
 *    A pool's buffer (@mem) and its metadata (@meta) are caller memory too, and so are a TLB
 *    log's @events and every output array and text buffer.
 *  - Lifetimes: a pool's buffer, its metadata and the struct s2pt_pool must stay where they are
 *    while any page table uses the pool. Page tables hold pointers into all three. A page table
 *    must outlive its MMU (struct s2pt_mmu holds a pointer to it) and its TLB log. Never copy a
 *    live struct s2pt_pgtable or struct s2pt_pool by value: the copy would claim the same pages.
 *    Pointers into the tables that s2pt hands out (s2pt_get_leaf(), struct s2pt_fault @ptep)
 *    stay valid while the page table's @frees does not change.
 *  - Tearing down: s2pt_pgtable_destroy() gives a VM's pages back to its pool, zeroed. The pool
 *    has no destructor: free its buffer and metadata once no page table uses it (@live_tables
 *    is 0). Memory from s2pt_mem_alloc() goes back through s2pt_mem_free().
 *  - Writes: s2pt writes only the pool pages it allocated, plus the caller's output
 *    parameters. Outside s2pt, a pool's pages may be read at any time (an emulator walking
 *    them). They must not be written, except through s2pt_pgtable_attach() /
 *    s2pt_pool_init_foreign(), which adopt what is already there. s2pt_translate_image() only
 *    reads its image.
 *
 * Allocation. The engine calls no allocator on any map, unmap, protect, leaf-operation,
 * translate, walk, stats or dump path. The only exceptions:
 *  - s2pt_mem_alloc() (an anonymous mmap), on request;
 *  - s2pt_check(), s2pt_pool_check() and s2pt_pgtable_attach() take one byte per pool page
 *    (calloc) of scratch and free it before they return; they fail with S2PT_ENOMEM if it
 *    cannot be had;
 *  - the MMU layer (mmu.h) uses malloc / realloc for its slot array (s2pt_memslot_add(),
 *    s2pt_memslot_restore()) and for dirty bitmaps when logging is enabled
 *    (s2pt_set_log_dirty()). That memory is freed by s2pt_memslot_delete(), by disabling
 *    logging and by s2pt_mmu_release(). The abort handler, s2pt_access_many() and the dirty-log
 *    harvests never allocate.
 *
 * Threading. No call takes a lock, and there is no global state. s2pt_strerror() returns
 * static strings.
 *  - Calls on page tables in different pools may run in parallel threads.
 *  - A call that changes a page table must not overlap any other call on any page table of
 *    the same pool, because page allocation is per pool. The calls that change a page table:
 *    map, unmap, protect, set_af, set_owner, the leaf operations (mkyoung, wrprotect,
 *    test_clear_young with mkold, young_bitmap with clear, relax_perms, split, collapse), the
 *    MMU's abort handler and dirty-log calls, init, attach, restore and destroy.
 *  - Read-only calls (s2pt_translate*, s2pt_lookup, s2pt_walk_path, s2pt_leaves, s2pt_stats,
 *    s2pt_dump, s2pt_check, s2pt_owner) may overlap each other, but not a change. The nested
 *    walks (s2pt_translate2*) read both tables: no change may run in either one's pool.
 *  - The Python package serialises with one lock per pool and releases the GIL in its bulk
 *    calls. The copy of the core that s2pt.get_library_dir() ships is separate: the pools a
 *    program makes with it are its own to serialise.
 *
 * ABI. The soname is libs2pt.so.MAJOR, where MAJOR is the package's major version. The promise
 * for one soname, from the release that introduced it:
 *  - The ABI is everything in these headers: function signatures and their documented
 *    behaviour, error codes, flag and enum values, constants, and the layout (size, field
 *    order and types) of every struct. Callers allocate the structs themselves, and the
 *    static inline functions (s2pt_vttbr(), s2pt_pool_free_pages(), s2pt_level_shift(),
 *    desc.h) compile their fields into the caller.
 *  - An incompatible change to any of these means a new MAJOR, and so a new soname, also
 *    while MAJOR is 0. Within one MAJOR, functions, constants and flags (bits that used to be
 *    refused with S2PT_EINVAL) are only ever added. A program built against an older MINOR
 *    runs with a newer one.
 *  - Exported: the s2pt_* functions declared here, nothing else. Internal helpers are
 *    s2pt__* (two underscores) and are local to the shared library. The static archive
 *    contains them but they are not API.
 *  - Read-only for callers: fields marked opaque (s2pt_fault @ptep, @frees) and the pool's
 *    and page table's bookkeeping (@hint, @refcount, @owner, @free_stack, @used, @allocs, ...).
 *    Read them, never write them.
 */
#ifndef S2PT_S2PT_H
#define S2PT_S2PT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------
 * Error codes. One code, one Python exception class; S2PT_E__COUNT is a sentinel.
 */
enum s2pt_error {
	S2PT_OK = 0,
	S2PT_EINVAL = -1,     /* bad argument value: prot, memattr, flags, access, NULL */
	S2PT_EALIGN = -2,     /* ipa, pa or size not aligned to the granule */
	S2PT_ERANGE = -3,     /* IPA or PA outside the configured size, or 64-bit wrap */
	S2PT_ENOMEM = -4,     /* the pool cannot supply every page the operation needs */
	S2PT_ECONFIG = -5,    /* geometry or VTCR the architecture or KVM does not allow */
	S2PT_EFAULT = -6,     /* translation faulted; details in struct s2pt_fault */
	S2PT_EINVARIANT = -7, /* s2pt_check() found a broken invariant */
	S2PT_EDESTROYED = -8, /* the page table was destroyed */
	S2PT_EBUSY = -9,      /* the pool still holds pages of live page tables */
	S2PT_E__COUNT = -10
};

/** s2pt_strerror() - a static, human-readable description of an S2PT_E* code. */
const char *s2pt_strerror(int err);

/**
 * s2pt_debug_build() - 1 when this copy of the core was built with S2PT_DEBUG (its invariant
 * asserts trap), 0 for a release build. A program can check which core it really linked.
 */
int s2pt_debug_build(void);

/* ---------------------------------------------------------------------------------------
 * Permissions, access types, memory attributes, faults.
 */

/*
 * Stage-2 permissions, kept apart from descriptor bits. R and W become S2AP[0] and S2AP[1].
 * PX/UX are EL1/EL0 execute; X = PX|UX. They become XN[1:0] (bits 54:53): XN[1] = !UX,
 * XN[0] = PX ^ UX, so X is 0b00 and no execute 0b10 with or without FEAT_XNX. PX without UX
 * (0b11) and UX without PX (0b01) need FEAT_XNX (S2PT_CONFIG_XNX); without it bit 53 is RES0
 * and bit 54 alone governs both.
 */
#define S2PT_PROT_R 0x1u
#define S2PT_PROT_W 0x2u
#define S2PT_PROT_PX 0x4u
#define S2PT_PROT_UX 0x8u
#define S2PT_PROT_X (S2PT_PROT_PX | S2PT_PROT_UX)
#define S2PT_PROT_ALL (S2PT_PROT_R | S2PT_PROT_W | S2PT_PROT_X)
/*
 * Stage 1 only (S2PT_CONFIG_STAGE1): EL0 may access the page too, AP[1]. A stage-1 leaf always
 * grants EL1 read, so R is required; W clears AP[2] (read-only); with USER, R and W apply at
 * EL0 as well. PX / UX clear PXN / UXN (bits 53 / 54). A page writable at EL0 is never
 * executable at EL1 (the architecture's implicit PXN); PX is then recorded but not granted.
 */
#define S2PT_PROT_USER 0x10u

enum s2pt_access {
	S2PT_ACCESS_READ = 0,
	S2PT_ACCESS_WRITE = 1,
	S2PT_ACCESS_EXEC = 2,     /* instruction fetch at EL1 (needs PX) */
	S2PT_ACCESS_EXEC_EL0 = 3, /* instruction fetch at EL0 (needs UX) */
	/* Stage 1 and the nested walk only: data accesses from EL0 (need PROT_USER at stage 1;
	 * stage 2 checks them as READ / WRITE). Stage-2 calls refuse them with S2PT_EINVAL. */
	S2PT_ACCESS_READ_EL0 = 4,
	S2PT_ACCESS_WRITE_EL0 = 5,
};

/*
 * Memory attributes are named by their stage-2 MemAttr[3:0] encoding without FWB: [3:2] == 0
 * is Device (subtype in [1:0]); otherwise Normal with outer cacheability [3:2] and inner [1:0]
 * (01 NC, 10 WT, 11 WB). A VM with S2PT_CONFIG_FWB (HCR_EL2.FWB = 1) writes the FWB encoding
 * of the same type instead: Device 0b00xx as is, NORMAL_NC 0b0101, NORMAL (forced write-back)
 * 0b0110, and S2PT_MEMATTR_STAGE1 0b0111 (the stage-1 attributes decide); other Normal
 * cacheabilities cannot be expressed with FWB, and STAGE1 only with it.
 */
#define S2PT_MEMATTR_DEVICE_nGnRnE 0x0u
#define S2PT_MEMATTR_DEVICE_nGnRE 0x1u
#define S2PT_MEMATTR_DEVICE_nGRE 0x2u
#define S2PT_MEMATTR_DEVICE_GRE 0x3u
#define S2PT_MEMATTR_NORMAL_NC 0x5u
#define S2PT_MEMATTR_NORMAL_WT 0xAu
#define S2PT_MEMATTR_NORMAL 0xFu
#define S2PT_MEMATTR_STAGE1 0x10u /* FWB only: MemAttr 0b0111, use the stage-1 attributes */
/* Reported (| the raw field) for an encoding the VM's format reserves; s2pt never writes one. */
#define S2PT_MEMATTR_RESERVED 0x20u

enum s2pt_fault_kind {
	S2PT_FAULT_NONE = 0,
	S2PT_FAULT_TRANSLATION = 1,
	S2PT_FAULT_ACCESS_FLAG = 2,
	S2PT_FAULT_PERMISSION = 3,
	S2PT_FAULT_ADDRESS_SIZE = 4,
};

/* Value of an FSC slot that did not fault; not a valid 6-bit ESR fault status code. */
#define S2PT_FSC_NONE 0xFFu

/**
 * struct s2pt_fault - a stage-2 fault as hardware reports it.
 * @kind:  enum s2pt_fault_kind.
 * @level: lookup level the fault is reported at (-1 only in a five-level stage 1).
 * @fsc:   ESR_ELx DFSC/IFSC: 0b0000LL address size, 0b0001LL translation,
 *         0b0010LL access flag, 0b0011LL permission (LL = level); at level -1 (FEAT_LPA2)
 *         0b101001 address size, 0b101011 translation.
 * @ipa:   the faulting IPA.
 * @desc:  the descriptor the walk stopped at (0 for none: an IPA beyond the IPA size or a
 *         root address beyond the PA size); an invalid one may hold an owner annotation.
 * @ptep:  for a translation fault of s2pt_translate()/s2pt_lookup(), the entry @desc was read
 *         from (else NULL), and @frees the page table's @frees then: s2pt_map_fault() writes
 *         that entry without walking again while both still hold. Opaque to callers.
 */
struct s2pt_fault {
	uint32_t kind;
	int32_t level;
	uint32_t fsc;
	uint64_t ipa;
	uint64_t desc;
	uint64_t *ptep;
	uint64_t frees;
};

/**
 * struct s2pt_translation - the result of a successful walk.
 * @pa:      output address of the IPA (leaf base + offset).
 * @size:    bytes mapped by the leaf (page or block size).
 * @level:   level of the leaf descriptor.
 * @prot:    S2PT_PROT_* bits decoded from the leaf.
 * @memattr: S2PT_MEMATTR_* the leaf's MemAttr field stands for (decoded per FWB).
 * @af:      the leaf's access flag.
 * @sw:      software bits 58:55 of the leaf (ignored by hardware).
 * @pte:     the raw leaf descriptor.
 */
struct s2pt_translation {
	uint64_t pa;
	uint64_t size;
	int32_t level;
	uint32_t prot;
	uint32_t memattr;
	uint32_t af;
	uint32_t sw;
	uint64_t pte;
};

/* ---------------------------------------------------------------------------------------
 * Geometry (per VM, computed at run time).
 */
#define S2PT_MAX_LEVELS 4
/* Descriptors one walk reads: a 4K stage 1 with LPA2 and a 49..52-bit VA starts at level -1. */
#define S2PT_MAX_WALK_STEPS 5
#define S2PT_MAX_ROOT_TABLES 16

/**
 * struct s2pt_config - the geometry and control-register values of one VM.
 * @ipa_bits:      input (IPA) size, 64 - T0SZ.
 * @pa_bits:       output (PA) size, from VTCR_EL2.PS.
 * @granule_shift: 12, 14 or 16.
 * @stride:        index bits per full table, granule_shift - 3.
 * @levels:        lookup levels, start_level..3.
 * @start_level:   first lookup level.
 * @root_tables:   concatenated tables at the start level (1..16).
 * @root_entries:  descriptors in the (concatenated) root: 2^(ipa_bits - shift(start_level)).
 * @min_block_level: shallowest level at which a block descriptor is allowed (level 0 for
 *                 4K and level 1 for 16K only with LPA2, level 1 for 64K only with 52-bit PA).
 * @t0sz, @sl0:    the VTCR_EL2 fields.
 * @vmid:          VMID (0..65535; > 255 needs VTCR_EL2.VS).
 * @flags:         S2PT_CONFIG_*.
 * @vtcr:          the full VTCR_EL2 value.
 * @oa_mask:       descriptor bits that hold an output / table address in place: 47:g, or
 *                 49:g with LPA2.
 * @oa_hi_mask:    descriptor bits that hold OA[51:48] (bits 15:12, 64K with 52-bit PA) or
 *                 OA[51:50] (bits 9:8, LPA2); 0 for 48-bit formats.
 * @oa_hi_shift:   how far those bits move up to their OA position (36 or 42).
 * @leaf_sh:       the SH[1:0] bits leaves carry: inner shareable, or none with LPA2, where
 *                 bits 9:8 are address bits and VTCR_EL2.SH0 gives the shareability.
 */
struct s2pt_config {
	uint32_t ipa_bits;
	uint32_t pa_bits;
	uint32_t granule_shift;
	uint32_t stride;
	uint32_t levels;
	int32_t start_level;
	uint32_t root_tables;
	uint64_t root_entries;
	int32_t min_block_level;
	uint32_t t0sz;
	uint32_t sl0;
	uint32_t vmid;
	uint32_t flags;
	uint64_t vtcr;
	uint64_t oa_mask;
	uint64_t oa_hi_mask;
	uint32_t oa_hi_shift;
	uint64_t leaf_sh;
};

/* s2pt_config_init() / s2pt_config_from_vtcr() flags */
#define S2PT_CONFIG_LPA2 0x1u /* FEAT_LPA2: VTCR_EL2.DS = 1 descriptors (4K and 16K) */
#define S2PT_CONFIG_FWB 0x2u  /* HCR_EL2.FWB = 1: FWB MemAttr encodings */
#define S2PT_CONFIG_XNX 0x4u  /* FEAT_XNX: separate EL1 / EL0 execute (PX without UX, ...) */
#define S2PT_CONFIG_NO_TLBIRANGE 0x8u /* the CPU lacks FEAT_TLBIRANGE (see the TLB events) */
/*
 * Software policy, not architecture: map, unmap, protect, wrprotect and split behave as KVM's
 * pgtable.c does (whole-leaf unmap, a block replaced by a table holding only the new mapping,
 * a permission-only remap left unchanged for relax_perms, the deferred range flush always
 * issued) instead of s2pt's exact-range semantics. See README "Two semantics".
 */
#define S2PT_CONFIG_KVM 0x10u
/*
 * Stage-1 tables of the EL1&0 regime (TTBR0_EL1), made by s2pt_s1_config_init(): the same
 * engine (walker, pool, counts, map / unmap / protect / translate / walk) with the stage-1
 * descriptor codec. The input address is a VA and the output an IPA; the pool's base
 * address is an IPA (its pages are guest RAM that stage 2 maps). The stage-2 leaf
 * operations and the MMU layer refuse stage-1 tables.
 */
#define S2PT_CONFIG_STAGE1 0x20u
/*
 * Stage-1 tables of the upper VA range (TTBR1_EL1: VAs from 2^64 - 2^va_bits up), made by
 * s2pt_s1_config_init(). The engine's calls on such tables take the VA's low va_bits bits
 * (what the walk indexes: VA - (2^64 - 2^va_bits)); the nested walk (struct s2pt_regime)
 * takes whole VAs and picks the table by VA[55], as hardware does.
 */
#define S2PT_CONFIG_TTBR1 0x40u

/* VTCR_EL2 fields */
#define S2PT_VTCR_T0SZ_SHIFT 0
#define S2PT_VTCR_SL0_SHIFT 6
#define S2PT_VTCR_IRGN0_SHIFT 8
#define S2PT_VTCR_ORGN0_SHIFT 10
#define S2PT_VTCR_SH0_SHIFT 12
#define S2PT_VTCR_TG0_SHIFT 14
#define S2PT_VTCR_PS_SHIFT 16
#define S2PT_VTCR_VS (1ull << 19)
#define S2PT_VTCR_HA (1ull << 21)
#define S2PT_VTCR_HD (1ull << 22)
#define S2PT_VTCR_RES1 (1ull << 31)
#define S2PT_VTCR_DS (1ull << 32)
#define S2PT_VTCR_SL2 (1ull << 33)

/**
 * s2pt_config_init() - compute a VM's geometry exactly as KVM does.
 * @cfg:      filled on success, untouched on error.
 * @ipa_bits: 32..48; up to 52 with LPA2 (4K/16K) or with 64K and a 52-bit PA size.
 * @granule:  4096, 16384 or 65536.
 * @pa_bits:  32, 36, 40, 42, 44, 48, or 52 (64K, or 4K/16K with LPA2: the only formats
 *            that can hold a 52-bit address).
 * @vmid:     0..65535.
 * @flags:    S2PT_CONFIG_* (LPA2 only for 4K and 16K).
 *
 * levels = max(2, (ipa_bits - 8) / stride); start = 4 - levels; the start level concatenates
 * up to 16 tables (so 4K with LPA2 and a 49..52-bit IPA starts at level 0 with 2..16 tables,
 * as KVM does, never at level -1). KVM never creates an IPA space larger than the PA space,
 * so ipa_bits > pa_bits is rejected too. VTCR_EL2 gets T0SZ, SL0, IRGN0 = ORGN0 = WBWA,
 * SH0 = inner shareable, TG0, PS, VS when vmid > 255, DS with LPA2, and RES1 bit 31.
 *
 * Return: 0, or S2PT_ECONFIG.
 */
int s2pt_config_init(struct s2pt_config *cfg, uint32_t ipa_bits, uint32_t granule,
		     uint32_t pa_bits, uint32_t vmid, uint32_t flags);

/**
 * s2pt_config_from_vtcr() - decode and validate a VTCR_EL2 value.
 * @cfg:  filled on success.
 * @vtcr: the register value. The level count comes from SL0, not from the IPA size, so a
 *        VTCR that starts deeper or shallower than KVM's choice is honoured if the
 *        architecture allows it: the start-level table must resolve between 1 and
 *        stride + 4 bits (AArch64.S2InconsistentSL), SL0 must be defined for the granule and
 *        the PA size (16K SL0 = 3, level 0, only with DS), TG0 and PS must be defined
 *        encodings, SH0 must not be 0b01, and T0SZ must give an IPA size of 32..48 bits
 *        (up to 52 with DS, or with 64K and PS = 52 bits). DS (4K/16K only) selects the LPA2
 *        format; PS = 52 bits needs DS or 64K. As in s2pt_config_init(), an IPA size larger
 *        than the PA size that PS selects is rejected (KVM never builds one; the PS value is
 *        taken as the VM's PA size). HA, HD, SL2 and bits above 33 are features s2pt does not
 *        model and are rejected.
 * @vmid: 0..65535; a VMID above 255 needs VS set.
 * @flags: S2PT_CONFIG_FWB, _XNX, _NO_TLBIRANGE and _KVM (not VTCR fields); LPA2 comes from DS.
 *
 * Return: 0, or S2PT_ECONFIG.
 */
int s2pt_config_from_vtcr(struct s2pt_config *cfg, uint64_t vtcr, uint32_t vmid,
			  uint32_t flags);

/* TCR_EL1 fields. A table's TCR value holds its own half (TTBR0: T0SZ, IRGN0, ORGN0, SH0,
 * TG0; TTBR1: T1SZ, ..., TG1), the common IPS, AS and DS, and the other half's EPD bit. */
#define S2PT_TCR_T0SZ_SHIFT 0
#define S2PT_TCR_EPD0 (1ull << 7)
#define S2PT_TCR_IRGN0_SHIFT 8
#define S2PT_TCR_ORGN0_SHIFT 10
#define S2PT_TCR_SH0_SHIFT 12
#define S2PT_TCR_TG0_SHIFT 14
#define S2PT_TCR_T1SZ_SHIFT 16
#define S2PT_TCR_EPD1 (1ull << 23)
#define S2PT_TCR_IRGN1_SHIFT 24
#define S2PT_TCR_ORGN1_SHIFT 26
#define S2PT_TCR_SH1_SHIFT 28
#define S2PT_TCR_TG1_SHIFT 30
#define S2PT_TCR_IPS_SHIFT 32
#define S2PT_TCR_AS (1ull << 36)
#define S2PT_TCR_DS (1ull << 59)

/**
 * s2pt_s1_config_init() - the geometry of stage-1 EL1&0 tables reached from TTBR0_EL1 (or
 * TTBR1_EL1 with S2PT_CONFIG_TTBR1).
 * @cfg:      filled on success (flags gain S2PT_CONFIG_STAGE1), untouched on error. The
 *            fields keep their stage-2 names: @ipa_bits is the VA size (64 - T0SZ), @pa_bits
 *            the output (IPA) size TCR_EL1.IPS gives, @vmid the ASID, @vtcr the TCR_EL1
 *            value, @sl0 0 (stage 1 has none), @root_tables 1 (no concatenation).
 * @va_bits:  25..48 (T0SZ 16..39); up to 52 with 64K (FEAT_LVA) or LPA2. 4K with LPA2 and
 *            a 49..52-bit VA walks five levels from level -1 (a 2..16-entry root).
 * @granule:  4096, 16384 or 65536 (TG0).
 * @ips_bits: 32, 36, 40, 42, 44, 48, or 52 (64K, or 4K/16K with LPA2).
 * @asid:     0..65535 (> 255 sets TCR_EL1.AS).
 * @flags:    S2PT_CONFIG_LPA2 (TCR_EL1.DS), S2PT_CONFIG_TTBR1 and S2PT_CONFIG_NO_TLBIRANGE.
 *
 * levels = ceil((va_bits - granule_shift) / stride), start = 4 - levels, one root table of
 * 2^(va_bits - shift(start)) entries. Blocks are allowed where stage 2 allows them. TCR_EL1
 * gets T0SZ, IRGN0 = ORGN0 = WBWA, SH0 inner shareable, TG0, EPD1 (no TTBR1 walks), IPS, AS
 * for a 16-bit ASID and DS with LPA2; with S2PT_CONFIG_TTBR1 the same in T1SZ, IRGN1, ORGN1,
 * SH1, TG1 (whose encodings differ from TG0's) and EPD0 instead. Table descriptors are written with APTable, XNTable and
 * PXNTable 0 (no hierarchical limits); the walk reads leaves only for permissions.
 *
 * Return: 0, or S2PT_ECONFIG.
 */
int s2pt_s1_config_init(struct s2pt_config *cfg, uint32_t va_bits, uint32_t granule,
			uint32_t ips_bits, uint32_t asid, uint32_t flags);

/** s2pt_level_shift() - log2 of the bytes one entry maps at @level. */
static inline uint32_t s2pt_level_shift(const struct s2pt_config *cfg, int level)
{
	return cfg->stride * (uint32_t)(4 - level) + 3;
}

/* ---------------------------------------------------------------------------------------
 * The pool: one contiguous buffer of table pages, addressed by PA.
 */

/**
 * struct s2pt_pool - table pages for one or more VMs.
 * @mem:        the buffer; page i is at mem + i * granule and has PA base_pa + i * granule.
 * @base_pa:    PA of page 0, granule-aligned.
 * @granule_shift: page size of every page in the pool.
 * @capacity:   number of pages.
 * @used:       pages currently allocated (tables and roots of every VM).
 * @hiwater:    pages at or above this index have never been allocated (still zero and,
 *              with lazily committed memory, not yet backed).
 * @nfree:      entries in @free_stack.
 * @hint:       per page, an occupancy hint: bit b stands for the b-th 64th of the page's
 *              entries, and a clear bit means those entries are all zero (a set bit may be
 *              stale). Unmap reads only the parts of a sparse table that can hold entries.
 * @refcount:   per page; 0 = free, otherwise 1 + non-zero entries.
 * @owner:      per page; id of the page table that owns it, 0 = free.
 * @free_stack: indices of freed pages below @hiwater, reused last-in first-out.
 * @next_owner: next page-table id to hand out.
 * @live_tables: page tables that still hold pages of this pool.
 *
 * Invariant: a free page is all zero (tables are cleared before they are freed), so
 * allocation never has to clear memory.
 */
struct s2pt_pool {
	uint8_t *mem;
	uint64_t base_pa;
	uint32_t granule_shift;
	uint32_t capacity;
	uint32_t used;
	uint32_t hiwater;
	uint32_t nfree;
	uint64_t *hint;
	uint32_t *refcount;
	uint32_t *owner;
	uint32_t *free_stack;
	uint32_t next_owner;
	uint32_t live_tables;
};

/**
 * s2pt_pool_meta_bytes() - bytes of metadata s2pt_pool_init() needs for @pages pages
 * (occupancy hints, refcounts, owners and the free stack: 20 bytes per page).
 */
size_t s2pt_pool_meta_bytes(uint32_t pages);

/**
 * s2pt_pool_init() - set up a pool over caller-provided memory.
 * @pool:    the pool.
 * @mem:     @pages * granule bytes, zero-filled, aligned to 8 bytes.
 * @pages:   capacity, 1..2^31.
 * @meta:    s2pt_pool_meta_bytes(@pages) bytes, zero-filled, aligned to 8 bytes.
 * @base_pa: PA of page 0: granule-aligned, and the whole pool must lie below 2^52.
 * @granule: 4096, 16384 or 65536.
 *
 * Zero-filled memory that is committed lazily (an anonymous mmap, see s2pt_mem_alloc())
 * makes a large capacity cost nothing until pages are used.
 *
 * Return: 0, S2PT_EINVAL (NULL or bad granule/pages), S2PT_EALIGN or S2PT_ERANGE (base_pa).
 */
int s2pt_pool_init(struct s2pt_pool *pool, void *mem, uint32_t pages, void *meta,
		   uint64_t base_pa, uint32_t granule);

/**
 * s2pt_pool_check() - the pool's bookkeeping is sound: free-stack entries below the
 * high-water mark, distinct, with zero count, owner and memory; every page below it either
 * free or allocated (count >= 1, an owner id handed out); used and free counts agree.
 * Return: 0, S2PT_EINVARIANT (reason in @msg), S2PT_EINVAL, S2PT_ENOMEM.
 */
int s2pt_pool_check(const struct s2pt_pool *pool, char *msg, size_t msg_len);

/** s2pt_pool_free_pages() - pages that can still be allocated. */
static inline uint32_t s2pt_pool_free_pages(const struct s2pt_pool *pool)
{
	return pool->capacity - pool->used;
}

/**
 * s2pt_pool_refcount() - reference count of the page at @pa (0 if free).
 * Return: 0, or S2PT_ERANGE / S2PT_EALIGN if @pa is not the start of a pool page.
 */
int s2pt_pool_refcount(const struct s2pt_pool *pool, uint64_t pa, uint32_t *count);

/**
 * s2pt_mem_alloc() - reserve @bytes of zero-filled, lazily committed memory (anonymous
 * private mmap without swap reservation, transparent huge pages advised beyond the first 2 MiB
 * where available, so a small pool's first pages cost 4 KiB faults).
 * Return: the memory, or NULL.
 */
void *s2pt_mem_alloc(size_t bytes);
/** s2pt_mem_free() - release memory from s2pt_mem_alloc(). */
void s2pt_mem_free(void *mem, size_t bytes);

/* ---------------------------------------------------------------------------------------
 * TLB-invalidation events: what KVM invalidates for each change of an entry that hardware may
 * have cached, in the order of the changes. A simulator replays them against its TLB model.
 *
 * Per operation (one event per entry, in IPA order, unless said otherwise):
 *   map over a valid leaf with another output, attributes or permissions: IPA + the old
 *       leaf's level, REPLACE, issued between break (entry invalid) and make (new leaf).
 *   map or unmap splitting a valid block into a table: IPA + the block's level, SPLIT
 *       (break-before-make as for REPLACE). The new table holds the rest of the block, as
 *       after KVM's eager split, so the entries of it that the same call then changes or
 *       removes get their own REPLACE / SPLIT / UNMAP events.
 *   map of a block over a table: RANGE of the block's span, COALESCE (break-before-make; a
 *       VMID event instead when the CPU lacks FEAT_TLBIRANGE, S2PT_CONFIG_NO_TLBIRANGE).
 *   unmap of a valid leaf: IPA + leaf level, UNMAP; of a table it empties: IPA with
 *       S2PT_TLBI_LEVEL_UNKNOWN and the table's span, TABLE. With FWB and FEAT_TLBIRANGE
 *       KVM defers the leaf invalidations to one RANGE event over the whole range of the
 *       call, UNMAP, after the walk (s2pt issues it when the call removed a valid leaf; KVM
 *       also when there was none); tables are still invalidated as they go.
 *   protect changing a valid leaf's permissions: IPA + leaf level, PERM (in place, no BBM:
 *       permission changes do not need it).
 *   clearing AF of a leaf that had it: IPA + leaf level, AF (in place). Setting AF, software
 *       bit changes, invalid entries and identical remaps: none.
 *   destroy: VMID, DESTROY.
 */
enum s2pt_tlbi_kind {
	S2PT_TLBI_IPA = 1,   /* one IPA; level = leaf level hint or S2PT_TLBI_LEVEL_UNKNOWN */
	S2PT_TLBI_RANGE = 2, /* [ipa, ipa + size) */
	S2PT_TLBI_VMID = 3,  /* everything of the VMID */
};
#define S2PT_TLBI_LEVEL_UNKNOWN (-128)

/* Why an event was recorded (which change made the cached entry stale). */
enum s2pt_tlbi_reason {
	S2PT_TLBI_UNMAP = 1,    /* a valid leaf was removed */
	S2PT_TLBI_TABLE = 2,    /* a table entry was removed and its table freed */
	S2PT_TLBI_REPLACE = 3,  /* break-before-make of a leaf replaced by another leaf */
	S2PT_TLBI_SPLIT = 4,    /* break-before-make of a block replaced by a table */
	S2PT_TLBI_COALESCE = 5, /* break-before-make of a table replaced by a block */
	S2PT_TLBI_PERM = 6,     /* permissions of a valid leaf changed in place */
	S2PT_TLBI_AF = 7,       /* access flag of a valid leaf cleared in place */
	S2PT_TLBI_DESTROY = 8,  /* the VM's tables are gone */
	S2PT_TLBI_OVERFLOW = 9, /* the log was full: this one event stands for all of them */
	S2PT_TLBI_WRPROTECT = 10, /* write permission removed for dirty logging (the caller's
				   * flush after write-protecting a memslot or dirty pages) */
};

/**
 * struct s2pt_tlbi - one invalidation event (32 bytes, no padding holes).
 * @ipa:    first IPA covered (0 for VMID).
 * @size:   bytes covered: the leaf size for IPA events with a level hint, the table's span
 *          for a freed table, the range for RANGE events, 0 for VMID.
 * @kind:   enum s2pt_tlbi_kind.
 * @level:  leaf level hint, or S2PT_TLBI_LEVEL_UNKNOWN.
 * @reason: enum s2pt_tlbi_reason.
 * @bbm:    1 when the entry was invalid at the time of the invalidation and a new valid
 *          entry was written only after it (break-before-make), else 0.
 */
struct s2pt_tlbi {
	uint64_t ipa;
	uint64_t size;
	int32_t kind;
	int32_t level;
	uint32_t reason;
	uint32_t bbm;
};

/**
 * struct s2pt_tlbi_log - a caller-provided, bounded event log.
 * @events:   storage for @capacity events.
 * @capacity: slots; 0 disables logging.
 * @count:    events recorded.
 * @overflowed: set when an event did not fit; the log then holds one VMID event, which
 *            invalidates at least everything that was dropped (what a hypervisor does when a
 *            range is too large to invalidate entry by entry).
 */
struct s2pt_tlbi_log {
	struct s2pt_tlbi *events;
	uint32_t capacity;
	uint32_t count;
	uint32_t overflowed;
};

/* ---------------------------------------------------------------------------------------
 * A VM's stage-2 page table.
 */

/**
 * struct s2pt_pgtable - one VM's tables inside a pool.
 * @cfg:         geometry.
 * @pool:        where its pages live.
 * @root:        the (concatenated) root tables, root_entries descriptors.
 * @root_pa:     PA of @root, aligned to the root's size.
 * @root_index:  pool index of the first root page.
 * @owner:       the id its pages carry in pool->owner.
 * @table_pages: pages it holds, roots included.
 * @allocs:      pages allocated by the current operation (checked against the reservation).
 * @tlbi:        optional event log (NULL: no events recorded).
 * @frees:       table pages freed so far. A pointer to an entry (s2pt_get_leaf()) stays
 *               valid, and keeps naming the same IPA, for as long as this does not change.
 * @destroyed:   set by s2pt_pgtable_destroy().
 */
struct s2pt_pgtable {
	struct s2pt_config cfg;
	struct s2pt_pool *pool;
	uint64_t *root;
	uint64_t root_pa;
	uint32_t root_index;
	uint32_t owner;
	uint32_t table_pages;
	uint32_t allocs;
	struct s2pt_tlbi_log *tlbi;
	uint64_t frees;
	int destroyed;
};

/**
 * s2pt_pgtable_init() - allocate a VM's root tables from @pool.
 * @pt:   the page table (not yet initialised).
 * @cfg:  geometry; its granule must be the pool's, and every pool page must have a PA
 *        below 2^pa_bits (table addresses are output addresses of the walk).
 * @pool: the pool; it must outlive @pt.
 *
 * The root_tables pages are contiguous and aligned to their combined size, as VTTBR_EL2
 * requires.
 *
 * Return: 0, S2PT_ECONFIG (granule or PA size mismatch), S2PT_ENOMEM.
 */
int s2pt_pgtable_init(struct s2pt_pgtable *pt, const struct s2pt_config *cfg,
		      struct s2pt_pool *pool);

/**
 * s2pt_pgtable_restore() - take up a page table whose pages are already in @pool, as a saved
 * pool image left them (s2pt's own pickle/save: a pool's memory and metadata restored
 * verbatim, then its page tables): the tree at @root_pa whose pages carry @owner, with
 * @frees its saved s2pt_pgtable.frees. Nothing in the pool changes (its live_tables already
 * counts the table). The tree and the pool are checked first (s2pt_check()).
 * Return: 0, S2PT_EINVAL, S2PT_ECONFIG (granule or PA size), S2PT_ERANGE (@root_pa not a
 * pool page below the high-water mark), S2PT_EINVARIANT (reason in @msg), S2PT_ENOMEM.
 */
int s2pt_pgtable_restore(struct s2pt_pgtable *pt, const struct s2pt_config *cfg,
			 struct s2pt_pool *pool, uint64_t root_pa, uint32_t owner, uint64_t frees,
			 char *msg, size_t msg_len);

/* Pool pages s2pt found holding data (s2pt_pool_init_foreign()) carry this owner id. */
#define S2PT_OWNER_RESERVED 0xFFFFFFFFu

/**
 * s2pt_pool_init_foreign() - s2pt_pool_init() over memory that already holds data (a
 * simulator's guest RAM, an image written elsewhere): every page that is not all zero is
 * reserved (count 1, owner S2PT_OWNER_RESERVED: s2pt never hands it out or writes it), every
 * zero page is free, lowest first. s2pt_pgtable_attach() then adopts the tables among them.
 * The whole buffer belongs to the pool from now on: s2pt writes new tables into its zero
 * pages. Costs one read of the buffer.
 */
int s2pt_pool_init_foreign(struct s2pt_pool *pool, void *mem, uint32_t pages, void *meta,
			   uint64_t base_pa, uint32_t granule);

/**
 * s2pt_pgtable_attach() - adopt the stage-2 tree at @root_pa (VTTBR_EL2.BADDR) that lies in
 * @pool's memory but not in its books. Every descriptor is checked first, by the rules of
 * s2pt_check() (table descriptors pointing at pool pages, none reached twice, no block where
 * the granule allows none, no reserved 0b01 at level 3, no stray or RES0 bits, output
 * addresses within the PA size and aligned, valid MemAttr for FWB or not, invalid entries only
 * as level-3 owner annotations, no empty non-root table), and every page it reaches must be
 * free or reserved. On success the pages become a new page table's (a fresh owner id):
 * counts rebuilt as 1 + non-zero entries, occupancy hints exact, so every operation works on
 * it. On failure nothing changes and @msg names the first bad descriptor.
 * Return: 0, S2PT_EINVAL, S2PT_ECONFIG (granule, PA size), S2PT_EALIGN (@root_pa not aligned
 * to the root's size), S2PT_ERANGE (root outside the pool), S2PT_EINVARIANT, S2PT_ENOMEM.
 */
int s2pt_pgtable_attach(struct s2pt_pgtable *pt, const struct s2pt_config *cfg,
			struct s2pt_pool *pool, uint64_t root_pa, char *msg, size_t msg_len);

/**
 * s2pt_pgtable_destroy() - free every page of @pt (roots included) back to its pool and
 * record one VMID invalidation. Later calls on @pt return S2PT_EDESTROYED.
 */
void s2pt_pgtable_destroy(struct s2pt_pgtable *pt);

/*
 * s2pt_vttbr() - VTTBR_EL2: BADDR | VMID << 48. With a 52-bit output size BADDR[5:2] hold
 * root PA[51:48] (the root is page-aligned, so bits 5:2 are otherwise zero); for smaller PA
 * sizes the pool lies below 2^48 and those bits are zero anyway.
 */
/* For stage-1 tables the same value is TTBR0_EL1: BADDR | ASID << 48. */
static inline uint64_t s2pt_vttbr(const struct s2pt_pgtable *pt)
{
	uint64_t low = pt->root_pa & ((1ull << 48) - 1);

	return low | (pt->root_pa >> 48) << 2 | ((uint64_t)pt->cfg.vmid << 48);
}

/* s2pt_map() flags */
#define S2PT_MAP_NO_BLOCKS 0x1u /* page-level leaves only (blocks already there are split) */
#define S2PT_MAP_NO_AF 0x2u     /* leave the access flag clear */
#define S2PT_MAP_NG 0x4u        /* stage 1 only: not global (nG, bit 11), tagged by the ASID */
/* Software bits 58:55 of the new leaves (0..15), carried in flags bits 11:8. */
#define S2PT_MAP_SW_SHIFT 8
#define S2PT_MAP_SW(sw) (((uint32_t)(sw) & 0xfu) << S2PT_MAP_SW_SHIFT)
#define S2PT_MAP_SW_MASK (0xfu << S2PT_MAP_SW_SHIFT)

/**
 * s2pt_map() - map [ipa, ipa + size) to [pa, pa + size).
 * @prot:    S2PT_PROT_* (PX and UX together unless the VM has S2PT_CONFIG_XNX).
 * @memattr: S2PT_MEMATTR_*: without FWB one of the 13 defined MemAttr encodings; with FWB
 *           a Device type, NORMAL_NC, NORMAL or STAGE1. Execute permission is refused on
 *           Device memory (KVM refuses it too).
 * @flags:   S2PT_MAP_*, with S2PT_MAP_SW(sw) for the software bits.
 *
 * Each aligned chunk gets the largest leaf its IPA and PA alignment allow. An existing
 * mapping is replaced (break-before-make: the old leaf is invalidated first). A block that
 * the range covers only in part is split into a table that keeps the rest of its mappings;
 * a table whose whole span becomes one block is freed with its subtree. A leaf that already
 * translates the range exactly as asked (same output, permissions, attributes, AF and
 * software bits) is left alone: no write, no split, no event; one that differs only in its
 * software bits is rewritten in place without an event (hardware ignores them). Leaves are
 * inner shareable.
 *
 * ipa, pa and size must be granule-aligned; size == 0 is a no-op; ipa + size may equal
 * 2^ipa_bits; pa + size must not exceed 2^pa_bits.
 *
 * Return: 0, S2PT_EINVAL, S2PT_EALIGN, S2PT_ERANGE, S2PT_ENOMEM, S2PT_EDESTROYED.
 */
int s2pt_map(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t pa, uint64_t size,
	     uint32_t prot, uint32_t memattr, uint32_t flags);

/**
 * s2pt_map_many() - s2pt_map() of n elements in order, in one call.
 * @ipas, @pas: n addresses each.
 * @sizes:  element i's size is sizes[i * size_stride] (size_stride 0: one size for all).
 * @done:   set to the number of elements applied (on error: the index of the element that
 *          failed).
 *
 * Every element's arguments are checked before anything changes: a bad element returns its
 * error with nothing changed. Pool exhaustion is found per element, as the tables stand after
 * the elements before it: those stay applied, the failing element changes nothing.
 *
 * Return: as s2pt_map().
 */
/**
 * s2pt_map_fault() - s2pt_map() of a leaf that resolves translation fault @f, which
 * s2pt_translate() or s2pt_lookup() of an IPA inside [@ipa, @ipa + @size) reported on @pt.
 * Same arguments, checks, result and TLB events as s2pt_map(); when the tables have lost no
 * page since (@pt->frees) and the faulting entry is still empty at the level of a @size leaf,
 * the entry is written in place, saving the second walk (a fault handler's common case).
 * @f may be stale or NULL: then this is s2pt_map().
 */
int s2pt_map_fault(struct s2pt_pgtable *pt, const struct s2pt_fault *f, uint64_t ipa,
		   uint64_t pa, uint64_t size, uint32_t prot, uint32_t memattr, uint32_t flags);

int s2pt_map_many(struct s2pt_pgtable *pt, const uint64_t *ipas, const uint64_t *pas,
		  const uint64_t *sizes, size_t size_stride, size_t n, uint32_t prot,
		  uint32_t memattr, uint32_t flags, size_t *done);

/**
 * s2pt_unmap() - unmap exactly [ipa, ipa + size).
 * @unmapped: bytes that were mapped by valid leaves in the range and now are not (NULL ok).
 *
 * A block covered in part is split so the rest stays mapped (this can allocate, hence
 * S2PT_ENOMEM). Every table whose count returns to 1 is freed, upward, in the same call.
 *
 * Return: 0, S2PT_EALIGN, S2PT_ERANGE, S2PT_ENOMEM, S2PT_EDESTROYED.
 */
int s2pt_unmap(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint64_t *unmapped);

/**
 * s2pt_unmap_many() - s2pt_unmap() of n elements in order, in one call.
 * @sizes, @size_stride, @done: as for s2pt_map_many(), with the same error rules.
 * @unmapped: total bytes unmapped by the elements applied.
 *
 * Return: as s2pt_unmap().
 */
int s2pt_unmap_many(struct s2pt_pgtable *pt, const uint64_t *ipas, const uint64_t *sizes,
		    size_t size_stride, size_t n, uint64_t *unmapped, size_t *done);

/**
 * s2pt_protect() - set the permissions of every valid leaf in [ipa, ipa + size) to @prot.
 * Holes stay holes; a block covered in part and whose permissions change is split first.
 * Memory attributes, AF and output addresses are kept.
 *
 * Return: 0, S2PT_EINVAL, S2PT_EALIGN, S2PT_ERANGE, S2PT_ENOMEM, S2PT_EDESTROYED.
 */
int s2pt_protect(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint32_t prot);

/* Largest owner id an annotation holds (8 bits, descriptor bits 9:2). */
#define S2PT_OWNER_MAX 255u

/**
 * s2pt_set_owner() - annotate [ipa, ipa + size) as owned by @owner (1..255): every entry of
 * the range becomes an invalid descriptor holding the id in bits 9:2 (KVM's set_owner and
 * KVM_INVALID_PTE_OWNER_MASK). Hardware ignores invalid entries, so the range translates to
 * a translation fault at the annotation's level; software finds the owner with s2pt_owner().
 * Annotations are non-zero, so they count in their table's reference count and keep it alive.
 *
 * Like s2pt_map() with pages only (KVM annotates with force_pte): one last-level entry per
 * page; mappings in the range are removed (a valid leaf is invalidated: UNMAP events); a
 * valid block covered in part is split so the rest stays mapped. s2pt_unmap() clears
 * annotations (no events: they were never valid); map over one replaces it; protect and
 * set_af leave them alone.
 *
 * Return: 0, S2PT_EINVAL (owner), S2PT_EALIGN, S2PT_ERANGE, S2PT_ENOMEM, S2PT_EDESTROYED.
 */
int s2pt_set_owner(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint32_t owner);

/**
 * s2pt_owner() - the owner id annotating the entry the walk of @ipa stops at, or 0 (a valid
 * leaf, an empty entry, or @ipa outside the IPA space).
 * Return: 0, S2PT_EDESTROYED, S2PT_EINVARIANT (a table outside the pool).
 */
int s2pt_owner(const struct s2pt_pgtable *pt, uint64_t ipa, uint32_t *owner);

/**
 * s2pt_set_af() - set (@af != 0) or clear the access flag of every valid leaf that intersects
 * [ipa, ipa + size), in place: whole leaves, no split (KVM's mkyoung / test_clear_young).
 * @young: leaves that had AF set before the call (NULL ok).
 *
 * Clearing AF of a leaf that had it records an IPA invalidation (a TLB may hold the entry);
 * setting it records none (an entry with AF = 0 is never cached).
 *
 * Return: 0, S2PT_EALIGN, S2PT_ERANGE, S2PT_EDESTROYED.
 */
int s2pt_set_af(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, int af, uint64_t *young);

/* ---------------------------------------------------------------------------------------
 * KVM's leaf operations (kvm_pgtable_stage2_*), on the same walker. Range arguments follow
 * s2pt_unmap() (granule-aligned, inside the IPA space; size 0 is a no-op). Single-address ones
 * take any byte address; one at or above 2^ipa_bits is a hole.
 */

/* s2pt_wrprotect() flags */
#define S2PT_LEAF_WHOLE 0x1u /* whole leaves that intersect the range, never a split (KVM) */

/**
 * s2pt_get_leaf() - the entry the walk of @ipa stops at (kvm_pgtable_get_leaf()).
 * @ptep:  the entry (a valid leaf, an annotation or zero), inside the pool.
 * @level: its level.
 * The pointer stays valid, and keeps naming @ipa's entry, while pt->frees does not change.
 * Return: 0, S2PT_ERANGE (@ipa >= 2^ipa_bits), S2PT_EDESTROYED.
 */
int s2pt_get_leaf(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t **ptep, int *level);

/**
 * s2pt_wrprotect() - clear write permission of every valid leaf in [ipa, ipa + size)
 * (kvm_pgtable_stage2_wrprotect()).
 * @flags:   S2PT_LEAF_WHOLE: whole leaves that intersect the range (KVM's behaviour; also
 *           what S2PT_CONFIG_KVM VMs should pass); otherwise exactly the range: a writable
 *           block covered in part is split first (SPLIT events), so this can need pages.
 * @changed: bytes that were writable and now are not (whole leaves with S2PT_LEAF_WHOLE,
 *           the part inside the range otherwise). NULL ok.
 * No TLB event for the permission change itself: like KVM, the caller flushes (the MMU layer
 * records one S2PT_TLBI_WRPROTECT range event per slot).
 * Return: 0, S2PT_EINVAL (@flags), S2PT_EALIGN, S2PT_ERANGE, S2PT_ENOMEM, S2PT_EDESTROYED.
 */
int s2pt_wrprotect(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint32_t flags,
		   uint64_t *changed);

/**
 * s2pt_mkyoung() - set the access flag of the valid leaf translating @ipa, in place, with no
 * invalidation (an entry with AF = 0 is never cached). @found: 1 if there was one.
 * Return: 0, S2PT_EDESTROYED.
 */
int s2pt_mkyoung(struct s2pt_pgtable *pt, uint64_t ipa, int *found);

/**
 * s2pt_test_clear_young() - whether any valid leaf intersecting [ipa, ipa + size) has its
 * access flag set (@young); with @mkold the flag is cleared on each (whole leaves). No TLB
 * events (KVM issues none: a stale young entry only delays the next access-flag fault).
 * Return: 0, S2PT_EALIGN, S2PT_ERANGE, S2PT_EDESTROYED.
 */
int s2pt_test_clear_young(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, int mkold,
			  int *young);

/**
 * s2pt_young_bitmap() - one bit per granule page of [ipa, ipa + size): set when the page lies
 * in a valid leaf whose access flag is set. @bitmap: (size / granule + 63) / 64 words, cleared
 * first; bit i % 64 of word i / 64 is page i (KVM's dirty-bitmap layout). @clear: clear the
 * flag of those leaves (whole leaves), without TLB events.
 * Return: 0, S2PT_EINVAL (NULL bitmap with size > 0), S2PT_EALIGN, S2PT_ERANGE,
 * S2PT_EDESTROYED.
 */
int s2pt_young_bitmap(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, int clear,
		      uint64_t *bitmap);

/**
 * s2pt_relax_perms() - add @prot to the permissions of the valid leaf translating @ipa, never
 * removing any (kvm_pgtable_stage2_relax_perms()); @found: 1 if there was one. One IPA event,
 * S2PT_TLBI_PERM, is recorded for every call within the IPA size: at the leaf's level when
 * one was found, even if nothing changed, and for the granule page with no level hint when
 * none was (KVM flushes on success and on -EAGAIN alike: the fault may have come from a
 * stale TLB entry).
 * Return: 0, S2PT_EINVAL (@prot, or a result PX != UX without FEAT_XNX, or execute on a
 * Device leaf), S2PT_EDESTROYED.
 */
int s2pt_relax_perms(struct s2pt_pgtable *pt, uint64_t ipa, uint32_t prot, int *found);

/**
 * s2pt_split() - eager split (kvm_pgtable_stage2_split()): every valid block in
 * [ipa, ipa + size) becomes last-level pages with the same output addresses and attributes.
 * A block covered in part: exactly its part inside the range is split down to pages, the rest
 * stays as the largest next-level pieces; with S2PT_CONFIG_KVM the whole block is split, as
 * KVM does. One SPLIT event (break-before-make) per block descriptor replaced. Every page is
 * reserved first.
 * @tables: table pages allocated (= block descriptors replaced by tables). NULL ok.
 * Return: 0, S2PT_EALIGN, S2PT_ERANGE, S2PT_ENOMEM, S2PT_EDESTROYED.
 */
int s2pt_split(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint64_t *tables);

/**
 * s2pt_split_pages() - the table pages s2pt_split() of the range would allocate now (what a
 * caller sizes its reserve by, as KVM's kvm_mmu_split_nr_page_tables()).
 * Return: 0, S2PT_EALIGN, S2PT_ERANGE, S2PT_EDESTROYED.
 */
int s2pt_split_pages(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint64_t *pages);

/**
 * s2pt_collapse() - the reverse: bottom-up, every table entry at a block level whose span lies
 * inside [ipa, ipa + size) and whose table holds valid leaves with identical attributes
 * (permissions, memory type, shareability, AF, software bits) over one contiguous output run
 * aligned to the span becomes one block, and its subtree is freed. Translations do not change.
 * One COALESCE event per block made (RANGE of its span; VMID without FEAT_TLBIRANGE), as a
 * map of a block over a table. Needs no pages.
 * @blocks: blocks made (a block made of blocks made in the same call counts them all). NULL ok.
 * Return: 0, S2PT_EALIGN, S2PT_ERANGE, S2PT_EDESTROYED.
 */
int s2pt_collapse(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, uint64_t *blocks);

/**
 * s2pt_translate() - the architectural stage-2 walk of one IPA for one access.
 * @out:   the translation on success.
 * @fault: the fault on S2PT_EFAULT (translation at the level the walk stopped, or level 0
 *         for an IPA at or above 2^ipa_bits; address size at the level whose descriptor
 *         holds an address at or above 2^pa_bits; access flag and permission at the leaf
 *         level). Checks follow the architecture's order: translation / address size,
 *         access flag, permission. Execute needs only PX (EL1) or UX (EL0), not read
 *         permission (AArch64 EL2 does not tie execute to read).
 *
 * Return: 0, S2PT_EFAULT, S2PT_EINVAL (bad access), S2PT_EDESTROYED.
 */
int s2pt_translate(const struct s2pt_pgtable *pt, uint64_t ipa, uint32_t access,
		   struct s2pt_translation *out, struct s2pt_fault *fault);

/**
 * s2pt_lookup() - the leaf for @ipa without access-flag or permission checks.
 * Return: 0 (found), S2PT_EFAULT (@fault says where the walk stopped), S2PT_EDESTROYED.
 */
int s2pt_lookup(const struct s2pt_pgtable *pt, uint64_t ipa, struct s2pt_translation *out,
		struct s2pt_fault *fault);

/**
 * s2pt_translate_image() - the stage-2 walk hardware does over any memory image: tables that
 * s2pt did not write (a copy of a pool with descriptors changed, an emulator's RAM), read
 * with the same rules as s2pt_translate(). Meant for emulators and fuzzers; the image is
 * only read.
 * @image, @image_pa, @image_bytes: the memory holding the tables: @image_bytes bytes at PA
 *          @image_pa (both granule multiples).
 * @vtcr:   VTCR_EL2, validated as by s2pt_config_from_vtcr() (@flags: FWB / XNX decoding).
 * @vttbr:  VTTBR_EL2: BADDR (bits 47:1; with a 52-bit PA size bits 5:2 are PA[51:48]),
 *          VMID in 63:48 (8 bits without VTCR_EL2.VS). BADDR must be aligned to the root
 *          table's size (at least 64 bytes with a 52-bit PA).
 *
 * A root or next-level table address at or above 2^pa_bits is an address-size fault: at
 * level 0 for VTTBR's (as QEMU reports it, citing the pseudocode), at the descriptor's level
 * for a table descriptor's; an output address beyond it likewise at the leaf's level.
 *
 * Return: 0, S2PT_EFAULT (@fault filled), S2PT_ECONFIG (@vtcr), S2PT_EALIGN (BADDR or the
 * image's PA / size not aligned), S2PT_EINVAL (NULL image, bad access or @flags),
 * S2PT_ERANGE (the walk needs a table that lies outside the image).
 */
int s2pt_translate_image(const void *image, uint64_t image_pa, uint64_t image_bytes,
			 uint64_t vtcr, uint64_t vttbr, uint32_t flags, uint64_t ipa,
			 uint32_t access, struct s2pt_translation *out, struct s2pt_fault *fault);

/**
 * s2pt_translate_many() - s2pt_translate() over an array, in one C loop.
 * @pa_out:  output address per IPA (0 where it faulted).
 * @fsc_out: S2PT_FSC_NONE on success, else the fault status code.
 * Return: number of faulting IPAs (>= 0), S2PT_EINVAL, S2PT_EDESTROYED.
 */
int64_t s2pt_translate_many(const struct s2pt_pgtable *pt, const uint64_t *ipas, size_t n,
			    uint32_t access, uint64_t *pa_out, uint8_t *fsc_out);

/**
 * struct s2pt_walk_step - one descriptor read by the walk of an IPA.
 */
struct s2pt_walk_step {
	int32_t level;
	uint32_t index;    /* index within the table (within the concatenated root at the start) */
	uint64_t table_pa; /* PA of the table the descriptor lives in */
	uint64_t desc_pa;  /* PA of the descriptor */
	uint64_t desc;     /* its raw value */
};

/**
 * s2pt_walk_path() - record each descriptor the walk of @ipa reads, root first.
 * @steps: room for S2PT_MAX_WALK_STEPS steps (S2PT_MAX_LEVELS for stage-2 tables and
 *         stage-1 tables of at most four levels). @nsteps: how many were read (0 if @ipa is
 *         outside the IPA space).
 * Return: 0, S2PT_EDESTROYED.
 */
int s2pt_walk_path(const struct s2pt_pgtable *pt, uint64_t ipa, struct s2pt_walk_step *steps,
		   uint32_t *nsteps);

/* ---------------------------------------------------------------------------------------
 * The two-dimensional walk: VA -> IPA through stage-1 tables whose descriptors live in guest
 * RAM, every one of those reads itself an IPA translated by stage 2, then IPA -> PA.
 */

/* Descriptor reads of one nested walk at most: (4 + 1) * 5 for five stage-1 levels (each
 * stage-1 read after the stage-2 walk of its IPA) plus the stage-2 walk of the output: 29
 * (24 for the usual 4 + 4). */
#define S2PT_MAX_NESTED_STEPS 29

/**
 * struct s2pt_nested_step - one descriptor read, in the order hardware makes them.
 * @stage:   1 or 2.
 * @level:   lookup level within that stage.
 * @ipa:     stage 2: the IPA this walk translates (a stage-1 descriptor's, or the output
 *           IPA); stage 1: the IPA of the descriptor read.
 * @desc_pa: PA of the descriptor read.
 * @desc:    its value.
 */
struct s2pt_nested_step {
	uint32_t stage;
	int32_t level;
	uint64_t ipa;
	uint64_t desc_pa;
	uint64_t desc;
};

/**
 * struct s2pt_fault2 - a fault of the nested walk, as ESR_EL2 / HPFAR_EL2 / FAR would say.
 * @stage:  1 (reported to EL1) or 2 (to EL2).
 * @s1ptw:  1 for a stage-2 fault on a stage-1 table read (ESR_EL2.ISS.S1PTW).
 * @kind, @level, @fsc: enum s2pt_fault_kind, lookup level of the faulting stage, FSC.
 * @va:     the faulting VA (FAR).
 * @ipa:    stage 2: the IPA that faulted (HPFAR_EL2: a table read's IPA for S1PTW, else the
 *          output IPA); stage 1: 0.
 * @desc:   the descriptor the faulting walk stopped at (0 for none).
 */
struct s2pt_fault2 {
	uint32_t stage;
	uint32_t s1ptw;
	uint32_t kind;
	int32_t level;
	uint32_t fsc;
	uint32_t reserved;
	uint64_t va;
	uint64_t ipa;
	uint64_t desc;
};

/**
 * struct s2pt_translation2 - a nested walk that reached its PA.
 * @pa, @ipa: the output PA and the intermediate IPA.
 * @s1, @s2:  the stage-1 leaf (its @pa is the IPA, @prot holds S2PT_PROT_USER, @memattr is
 *            AttrIndx) and the stage-2 leaf of the output.
 * @prot:     what both stages grant, in stage-1 terms: R = EL1 read (stage 2 R), W = EL1 write
 *            (both W), USER = EL0 may read or write as R and W say, PX = EL1 execute (PXN
 *            clear, not EL0-writable, stage-2 PX), UX = EL0 execute (UXN clear, stage-2 UX).
 *            Access flags are not part of it.
 * @memattr:  the combined memory type as an S2PT_MEMATTR_* name (Device subtype, or Normal
 *            with outer / inner NC, WT, WB): stage 1's MAIR attribute and stage 2's MemAttr
 *            combined by the Arm ARM rules, with or without FWB (the stage-2 table's flag).
 *            A reserved MAIR encoding gives S2PT_MEMATTR_RESERVED | its low bits.
 */
struct s2pt_translation2 {
	uint64_t pa;
	uint64_t ipa;
	uint32_t prot;
	uint32_t memattr;
	struct s2pt_translation s1;
	struct s2pt_translation s2;
};

/**
 * struct s2pt_regime - a guest's EL1&0 stage-1 translation regime.
 * @ttbr0: the tables of VAs with VA[55] = 0 (TTBR0_EL1), or NULL (EPD0 = 1: those VAs fault).
 * @ttbr1: the tables of VAs with VA[55] = 1 (S2PT_CONFIG_TTBR1), or NULL (EPD1 = 1).
 * @mair:  MAIR_EL1, for the combined memory type.
 * At least one table; each must be stage 1 of its own half, neither destroyed, and two must
 * share the IPS, the LPA2 setting and the ASID (one TCR_EL1; A1 = 0 takes TTBR0_EL1's ASID).
 */
struct s2pt_regime {
	const struct s2pt_pgtable *ttbr0;
	const struct s2pt_pgtable *ttbr1;
	uint64_t mair;
};

/**
 * s2pt_translate2() - the stage-1 and stage-2 translation of @va for @access, as an EL1&0
 * access with both stages on (SCTLR_EL1.M = 1, HCR_EL2.VM = 1) performs it.
 * @s2:     stage-2 tables (the VM).
 * @r:      the guest's stage-1 regime: VA[55] picks @r->ttbr0 or @r->ttbr1 (stage-1 tables,
 *          S2PT_CONFIG_STAGE1, whose pool base is an IPA). The walk finds each stage-1
 *          descriptor at its IPA in that table's pool after stage 2 has translated the IPA
 *          (with stage-2 read permission and AF checked, as a table walk needs). The pool
 *          stands for the guest RAM that stage 2 maps there; the PA stage 2 gives is reported.
 * @access: any enum s2pt_access (EL0 data accesses need USER at stage 1).
 * @out:    the result on success. @f: the fault on S2PT_EFAULT.
 * @steps:  NULL, or room for S2PT_MAX_NESTED_STEPS reads; @nsteps (NULL with @steps) gets how
 *          many were made, the faulting one included.
 *
 * Order: for each stage-1 level, the stage-2 walk of the descriptor's IPA (a fault there is
 * a stage-2 fault with S1PTW), then the stage-1 descriptor; then the stage-1 leaf's access
 * flag and permission; then the stage-2 walk of the output IPA, its access flag and
 * permission (stage-2 execute rights follow the access's EL). An output IPA beyond the
 * stage-2 input size is a stage-2 translation fault at level 0, as is a table IPA beyond it.
 * A VA whose bits above the table's VA size are not all VA[55] (no TBI), or whose half has
 * no table (EPDx = 1), is a stage-1 translation fault at level 0 with no read made.
 *
 * Return: 0, S2PT_EFAULT, S2PT_EINVAL (a bad regime: see struct s2pt_regime; @s2 stage 1,
 * bad @access),
 * S2PT_EDESTROYED, S2PT_EINVARIANT (a stage-1 table IPA outside @s1's pool).
 */
int s2pt_translate2(const struct s2pt_pgtable *s2, const struct s2pt_regime *r, uint64_t va,
		    uint32_t access, struct s2pt_translation2 *out, struct s2pt_fault2 *f,
		    struct s2pt_nested_step *steps, uint32_t *nsteps);

/* In s2pt_translate2_many()'s @fsc_out: a stage-2 fault on a stage-1 table read, where
 * ESR_EL2.ISS[7] (S1PTW) has it; bits 5:0 hold the FSC. */
#define S2PT_FSC_S1PTW 0x80u

/**
 * s2pt_translate2_many() - s2pt_translate2() over an array of VAs, in one C loop (no GIL in
 * the Python binding; neither table may change during the call).
 * @pa_out:    PA per VA (0 where it faulted).
 * @ipa_out:   NULL, or the IPA per VA: the output IPA, the faulting IPA of a stage-2 fault
 *             (a table descriptor's IPA with S1PTW), 0 for a stage-1 fault.
 * @fsc_out:   S2PT_FSC_NONE, else the FSC | S2PT_FSC_S1PTW when it applies.
 * @stage_out: 0 where translated, else the faulting stage (1 or 2).
 * @reads_out: NULL, or the descriptor reads the walk made, the faulting one included (the
 *             count of s2pt_translate2()'s steps: 24 for a 4 + 4 level page walk). They are
 *             the reads of a walk without caches, whatever the batch remembers in between.
 * Return: number of faulting VAs (>= 0), S2PT_EINVAL, S2PT_EDESTROYED, S2PT_EINVARIANT.
 */
int64_t s2pt_translate2_many(const struct s2pt_pgtable *s2, const struct s2pt_regime *r,
			     const uint64_t *vas, size_t n, uint32_t access, uint64_t *pa_out,
			     uint64_t *ipa_out, uint8_t *fsc_out, uint8_t *stage_out,
			     uint8_t *reads_out);

/**
 * s2pt_s1_memattr() - the memory type MAIR attribute @attr (one byte) stands for, as an
 * S2PT_MEMATTR_* name: 0b0000dd00 Device (dd the subtype); otherwise Normal with outer
 * [7:4] and inner [3:0] each NC (0b0100), WT (0b00RW with RW != 0, 0b10RW) or WB (0b01RW
 * with RW != 0, 0b11RW); allocation and transient hints dropped; 0xf0 (FEAT_MTE2 Tagged
 * Normal) is Normal write-back. Anything else (0b0000ddxx with xx != 0, another inner 0b0000
 * under a Normal outer) is S2PT_MEMATTR_RESERVED | @attr & 0xf.
 */
uint32_t s2pt_s1_memattr(uint32_t attr);

/**
 * s2pt_combine_memattr() - the memory type of an access both stages map: stage 1's
 * @s1_memattr (from s2pt_s1_memattr()) and stage 2's MemAttr @s2_field for @s2_cfg's FWB
 * setting. Without FWB: a Device at either stage wins (both: the more restrictive subtype);
 * two Normals take the weaker cacheability of each, outer and inner (NC < WT < WB). With
 * FWB: Device 0b00xx as without; 0b0101 Normal NC unless stage 1 is Device; 0b0110 Normal
 * write-back whatever stage 1 says; 0b0111 stage 1's type. Reserved inputs give reserved.
 */
uint32_t s2pt_combine_memattr(const struct s2pt_config *s2_cfg, uint32_t s1_memattr,
			      uint32_t s2_field);

/** struct s2pt_leaf - a valid leaf as listed by s2pt_leaves(). */
struct s2pt_leaf {
	uint64_t ipa;
	uint64_t pa;
	uint64_t size;
	uint64_t pte;
	int32_t level;
	uint32_t prot;
	uint32_t memattr;
	uint32_t af;
	uint32_t sw;
};

/**
 * s2pt_leaves() - list the valid leaves that intersect [ipa, ipa + size), in IPA order.
 * @out, @cap:  room for @cap leaves; @n gets how many were written.
 * @next_ipa:   where to resume when the list was cut at @cap, or ipa + size when done.
 * Return: 0, S2PT_EALIGN, S2PT_ERANGE, S2PT_EDESTROYED.
 */
int s2pt_leaves(const struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size, struct s2pt_leaf *out,
		size_t cap, size_t *n, uint64_t *next_ipa);

/**
 * struct s2pt_stats - the shape of a page table.
 * @table_pages:          pages held, roots included.
 * @table_pages_by_level: pages per level, indexed by level (roots at the start level; a
 *                        five-level stage 1's level -1 root counts at level 0).
 * @leaves_by_level:      valid leaves per level.
 * @mapped_bytes:         bytes mapped by valid leaves.
 * @annotated_bytes:      bytes covered by owner annotations (s2pt_set_owner()).
 */
struct s2pt_stats {
	uint64_t table_pages;
	uint64_t table_pages_by_level[S2PT_MAX_LEVELS];
	uint64_t leaves_by_level[S2PT_MAX_LEVELS];
	uint64_t mapped_bytes;
	uint64_t annotated_bytes;
};

/** s2pt_stats() - walk the whole table and count. Return: 0, S2PT_EDESTROYED. */
int s2pt_stats(const struct s2pt_pgtable *pt, struct s2pt_stats *out);

/**
 * s2pt_dump() - the tables as text in the format of KVM's per-VM debugfs file
 * "stage2_page_tables" (current mainline; csrc/src/ptdump.c lists the format's rules).
 * A "---[ Guest IPA ]---" line, then one line per run of adjacent non-table entries (valid
 * leaves and empty or annotated entries) of one level with the same valid, type, S2AP, AF
 * and XN bits, over [0, 2^ipa_bits): start-end, size (K/M/G/...), level, and for entries
 * with any of those bits set the columns F, R, W, XN pair (px/PXN ux/UXN), AF, BLK.
 * Output addresses and memory attributes are not shown (KVM's format has no column for them).
 * @buf, @len: the text and a NUL go here, like snprintf(): at most @len - 1 bytes of text
 *             and a NUL when @len > 0; @buf may be NULL when @len is 0 (a size query).
 * @needed:    the length of the whole text, NUL not counted. The text in @buf is complete
 *             iff *needed < @len; otherwise call again with *needed + 1 bytes.
 * Read-only like s2pt_stats(): one walk per call (the common walker), nothing allocated.
 * Return: 0 (also when @buf was too small), S2PT_EINVAL (@needed NULL, or @buf NULL with
 * @len > 0), S2PT_EDESTROYED.
 */
int s2pt_dump(const struct s2pt_pgtable *pt, char *buf, size_t len, size_t *needed);

/**
 * s2pt_check() - verify every invariant of @pt and of its pages in the pool: counts equal
 * 1 + non-zero entries, no non-root table is empty, every table page is reachable exactly
 * once and owned by @pt, no page of @pt is unreachable, descriptors are well formed (types
 * allowed at their level, addresses aligned and inside the PA size, no stray bits), the
 * free stack holds distinct, free, zero pages, and every non-zero entry lies in a part of
 * its page that the occupancy hint marks.
 * @msg, @msg_len: a description of the first violation (may be NULL / 0).
 * Return: 0, S2PT_EINVARIANT, S2PT_EDESTROYED, S2PT_ENOMEM (its scratch: a byte per page).
 */
int s2pt_check(const struct s2pt_pgtable *pt, char *msg, size_t msg_len);

/* ---------------------------------------------------------------------------------------
 * The generic range walker that map, unmap, protect, stats, leaves and destroy share.
 */
enum s2pt_walk_flags {
	S2PT_WALK_LEAF = 1u << 0,       /* visit leaf and invalid entries */
	S2PT_WALK_TABLE_PRE = 1u << 1,  /* visit table entries before their children */
	S2PT_WALK_TABLE_POST = 1u << 2, /* visit table entries after their children */
	/*
	 * With S2PT_WALK_LEAF: consecutive non-table entries of one table whose spans lie wholly
	 * inside the range come as one S2PT_WALK_LEAF_RUN visit of @nr entries (ptep[0..nr-1],
	 * @addr the first one's IPA, all in one table page), so a range operation can fill or
	 * clear a table at a time. Entries the range covers in part still come one by one as
	 * S2PT_WALK_LEAF. A run visit may turn entries into tables: it then returns 1 and the
	 * walker descends into them in order.
	 */
	S2PT_WALK_LEAF_RUN = 1u << 3,
};

/**
 * struct s2pt_walk_ctx - what a visit sees.
 * @pt:    the page table.
 * @ptep:  the entry; a LEAF or TABLE_PRE callback may rewrite it and the walker re-reads it,
 *         so installing a table makes the walk descend, and installing a leaf over a table
 *         makes it skip the subtree.
 * @old:   the entry's value when the visit started (0 in S2PT_WALK_LEAF_RUN visits, which
 *         read ptep[0..nr-1] themselves).
 * @start, @end: the walked range.
 * @addr:  first IPA of the entry's span (aligned down to the span).
 * @level: the entry's level.
 * @nr:    number of entries the visit covers: 1, or more for S2PT_WALK_LEAF_RUN.
 * @arg:   the walker's argument.
 */
struct s2pt_walk_ctx {
	struct s2pt_pgtable *pt;
	uint64_t *ptep;
	uint64_t old;
	uint64_t start;
	uint64_t end;
	uint64_t addr;
	int level;
	uint32_t nr;
	void *arg;
};

/*
 * A visit returns 0 to go on, or a negative code that stops the walk and is returned
 * (S2PT_WALK_LEAF_RUN visits: 1 when they installed tables the walk must descend into).
 */
typedef int (*s2pt_walk_fn)(const struct s2pt_walk_ctx *ctx, uint32_t visit);

struct s2pt_walker {
	s2pt_walk_fn cb;
	void *arg;
	uint32_t flags;
};

/**
 * s2pt_walk() - depth-first walk of [ipa, ipa + size) in IPA order.
 * The range must already be validated (aligned, inside the IPA space); the walker does not
 * allocate. Return: 0, or the first negative value a visit returned.
 */
int s2pt_walk(struct s2pt_pgtable *pt, uint64_t ipa, uint64_t size,
	      const struct s2pt_walker *walker);

#ifdef __cplusplus
}
#endif
#endif /* S2PT_S2PT_H */
