"""Type stubs for s2pt._core, the Cython layer over the C core (re-exported by ``s2pt``)."""

from typing import Any, Iterator, Literal

import numpy as np
import numpy.typing as npt

from ._types import (
    Access,
    FaultOutcome,
    GuestAccess,
    Mapping,
    MemAttr,
    Memslot,
    Prot,
    Translation2,
    WalkStep,
)

class Translation:
    """A successful stage-2 translation; behaves as the named tuple
    ``(pa, level, size, prot, memattr, af, pte, sw)`` (not a ``tuple`` subclass)."""

    _fields: tuple[str, ...]
    __match_args__: tuple[str, ...]
    def __init__(self, pa: int, level: int, size: int, prot: Prot | int, memattr: MemAttr | int,
                 af: bool = True, pte: int = 0, sw: int = 0) -> None: ...
    @property
    def pa(self) -> int: ...
    @property
    def level(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def prot(self) -> Prot: ...
    @property
    def memattr(self) -> MemAttr: ...
    @property
    def af(self) -> bool: ...
    @property
    def pte(self) -> int: ...
    @property
    def sw(self) -> int: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __getitem__(self, index: int | slice) -> Any: ...
    def __hash__(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def __lt__(self, other: Translation | tuple) -> bool: ...
    def __le__(self, other: Translation | tuple) -> bool: ...
    def __gt__(self, other: Translation | tuple) -> bool: ...
    def __ge__(self, other: Translation | tuple) -> bool: ...
    def _asdict(self) -> dict[str, Any]: ...
    def _replace(self, **changes: Any) -> Translation: ...

#: ``semantics=`` of Stage2 / Stage2Config: s2pt's exact ranges, or KVM's whole leaves.
_Semantics = Literal["exact", "kvm"]

FSC_NONE: int
FSC_S1PTW: int
DEFAULT_POOL_BASE_PA: int
DEFAULT_POOL_BYTES: int
TLBI_IPA: int
TLBI_RANGE: int
TLBI_VMID: int
TLBI_LEVEL_UNKNOWN: int
TLBI_UNMAP: int
TLBI_TABLE: int
TLBI_REPLACE: int
TLBI_SPLIT: int
TLBI_COALESCE: int
TLBI_PERM: int
TLBI_AF: int
TLBI_DESTROY: int
TLBI_OVERFLOW: int
#: reason of the flush after write-protecting a memslot for dirty logging (one RANGE event
#: over the slot, or VMID without tlbi_range)
TLBI_WRPROTECT: int
#: ipa u64, size u64, kind i32, level i32, reason u32, bbm u32 (struct s2pt_tlbi)
TLBI_DTYPE: np.dtype

def debug_build() -> bool:
    """True when the C core was built with S2PT_DEBUG=1 (asserts on)."""

def translate_image(
    image: npt.ArrayLike,
    image_pa: int,
    vtcr: int,
    vttbr: int,
    ipa: int,
    access: Access | int = ...,
    *,
    fwb: bool = False,
    xnx: bool = False,
) -> Translation: ...

class Stage2Config:
    """Geometry and control-register values of one VM, computed as KVM does."""

    def __init__(
        self,
        ipa_bits: int = 40,
        granule: int = 4096,
        pa_bits: int = 48,
        vmid: int = 1,
        lpa2: bool = False,
        *,
        fwb: bool = False,
        xnx: bool = False,
        tlbi_range: bool = True,
        semantics: _Semantics = "exact",
    ) -> None: ...
    @classmethod
    def from_vtcr(
        cls, vtcr: int, vmid: int = 1, *, fwb: bool = False, xnx: bool = False,
        tlbi_range: bool = True, semantics: _Semantics = "exact",
    ) -> Stage2Config: ...
    @property
    def ipa_bits(self) -> int: ...
    @property
    def pa_bits(self) -> int: ...
    @property
    def granule(self) -> int: ...
    @property
    def vmid(self) -> int: ...
    @property
    def semantics(self) -> _Semantics:
        """``"exact"`` (s2pt's exact-range operations) or ``"kvm"`` (KVM's pgtable.c)."""
    @property
    def lpa2(self) -> bool: ...
    @property
    def fwb(self) -> bool: ...
    @property
    def xnx(self) -> bool: ...
    @property
    def tlbi_range(self) -> bool: ...
    @property
    def oa_bits_mask(self) -> int: ...
    @property
    def levels(self) -> int: ...
    @property
    def start_level(self) -> int: ...
    @property
    def root_tables(self) -> int: ...
    @property
    def root_entries(self) -> int: ...
    @property
    def root_size(self) -> int: ...
    @property
    def root_align(self) -> int: ...
    @property
    def min_block_level(self) -> int: ...
    @property
    def t0sz(self) -> int: ...
    @property
    def sl0(self) -> int: ...
    @property
    def vtcr(self) -> int: ...
    def level_size(self, level: int) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class PagePool:
    def __reduce__(self) -> tuple: ...
    @classmethod
    def from_buffer(cls, buf: object, base_pa: int, granule: int = 4096) -> PagePool:
        """A pool over your writable buffer; non-zero pages are reserved until attached."""
    """One contiguous, lazily committed buffer of table pages at a base PA."""

    def __init__(self, pages: int, granule: int = 4096, base_pa: int | None = None) -> None: ...
    @property
    def capacity(self) -> int: ...
    @property
    def used(self) -> int: ...
    @property
    def free(self) -> int: ...
    @property
    def base_pa(self) -> int: ...
    @property
    def end_pa(self) -> int: ...
    @property
    def granule(self) -> int: ...
    @property
    def words(self) -> npt.NDArray[np.uint64]: ...
    @property
    def refcounts(self) -> npt.NDArray[np.uint32]: ...
    def refcount(self, pa: int) -> int: ...
    def page_words(self, pa: int) -> npt.NDArray[np.uint64]: ...
    def read(self, pa: int) -> int: ...

class Stage2:
    @classmethod
    def attach(cls, pool: PagePool, vtcr: int, vttbr: int, *, fwb: bool = False,
               xnx: bool = False, tlbi_range: bool = True,
               semantics: Literal["exact", "kvm"] = "exact",
               tlbi_capacity: int = 4096) -> Stage2:
        """Adopt the tree VTTBR_EL2 points at in ``pool``'s memory, every descriptor checked."""
    """One VM's stage-2 translation tables."""

    def __init__(
        self,
        ipa_bits: int = 40,
        granule: int = 4096,
        pa_bits: int = 48,
        vmid: int = 1,
        lpa2: bool = False,
        pool: PagePool | None = None,
        *,
        fwb: bool = False,
        xnx: bool = False,
        tlbi_range: bool = True,
        tlbi_capacity: int = 4096,
        semantics: _Semantics = "exact",
    ) -> None: ...
    @classmethod
    def from_config(
        cls, config: Stage2Config, pool: PagePool | None = None, *, tlbi_capacity: int = 4096
    ) -> Stage2: ...
    @property
    def config(self) -> Stage2Config: ...
    @property
    def pool(self) -> PagePool: ...
    @property
    def ipa_bits(self) -> int: ...
    @property
    def pa_bits(self) -> int: ...
    @property
    def granule(self) -> int: ...
    @property
    def vmid(self) -> int: ...
    @property
    def levels(self) -> int: ...
    @property
    def start_level(self) -> int: ...
    @property
    def root_tables(self) -> int: ...
    @property
    def root_pa(self) -> int: ...
    @property
    def vtcr(self) -> int: ...
    @property
    def lpa2(self) -> bool: ...
    @property
    def fwb(self) -> bool: ...
    @property
    def xnx(self) -> bool: ...
    @property
    def tlbi_range(self) -> bool: ...
    @property
    def vttbr(self) -> int: ...
    @property
    def table_pages(self) -> int: ...
    @property
    def destroyed(self) -> bool: ...
    @property
    def semantics(self) -> _Semantics:
        """``"exact"`` or ``"kvm"``: how map / unmap / protect / wrprotect / split treat a
        leaf the range covers in part."""
    def map(
        self,
        ipa: int,
        pa: int,
        size: int,
        prot: Prot | int = ...,
        memattr: MemAttr | int = ...,
        *,
        blocks: bool = True,
        af: bool = True,
        sw: int = 0,
    ) -> None: ...
    def map_many(
        self,
        ipas: npt.ArrayLike,
        pas: npt.ArrayLike,
        sizes: npt.ArrayLike | int,
        prot: Prot | int = ...,
        memattr: MemAttr | int = ...,
        *,
        blocks: bool = True,
        af: bool = True,
        sw: int = 0,
    ) -> None: ...
    def unmap(self, ipa: int, size: int) -> int: ...
    def unmap_many(self, ipas: npt.ArrayLike, sizes: npt.ArrayLike | int) -> int: ...
    def protect(self, ipa: int, size: int, prot: Prot | int) -> None: ...
    def set_access_flag(self, ipa: int, size: int, af: bool = True) -> int: ...
    def set_owner(self, ipa: int, size: int, owner: int) -> None: ...
    def owner(self, ipa: int) -> int: ...
    # -- KVM's leaf operations (kvm_pgtable_stage2_*) --
    def wrprotect(self, ipa: int, size: int) -> int:
        """Clear write permission of every valid leaf in the range; returns the bytes that
        were writable and now are not. Exact semantics split a writable block covered in part
        (can need pages); ``"kvm"`` changes whole leaves. No TLB event for the clear itself."""
    def mkyoung(self, ipa: int) -> bool:
        """Set the access flag of the leaf translating ``ipa`` (any byte address), no TLB
        event; False for a hole, an annotation or an IPA beyond the IPA size."""
    def test_clear_young(self, ipa: int, size: int, *, mkold: bool = True) -> bool:
        """Whether any valid leaf intersecting the range has AF set; ``mkold`` clears it on
        each (whole leaves). No TLB events."""
    def young(self, ipa: int, size: int, *, clear: bool = False) -> npt.NDArray[np.uint64]:
        """Bitmap (KVM layout, ``ceil(pages / 64)`` uint64 words) of the granule pages of the
        range that lie in a leaf with AF set; ``clear`` clears those flags (whole leaves)."""
    def relax_perms(self, ipa: int, prot: Prot | int) -> bool:
        """Add ``prot`` to the leaf translating ``ipa`` (never removes); one TLBI_PERM IPA
        event when a leaf was found; False for a hole."""
    def split(self, ipa: int, size: int) -> int:
        """Every valid block in the range becomes last-level pages (exact: only the part in the
        range; ``"kvm"``: whole blocks); returns the table pages allocated. One TLBI_SPLIT per
        block."""
    def collapse(self, ipa: int, size: int) -> int:
        """Every aligned block span inside the range whose leaves are one contiguous run with
        identical attributes becomes one block (bottom-up); returns the blocks made. One
        TLBI_COALESCE per block."""
    # -- memslots and the guest abort handler (KVM's arch/arm64/kvm/mmu.c) --
    def add_memslot(
        self,
        ipa: int,
        pa: int,
        size: int,
        *,
        readonly: bool = False,
        log_dirty: bool = False,
        backing: int | None = None,
    ) -> int:
        """KVM_SET_USER_MEMORY_REGION: guest IPAs ``[ipa, ipa + size)`` backed by host PAs
        ``[pa, pa + size)`` in host pages of ``backing`` bytes (default: the granule; a block
        size of the VM for huge pages). Maps nothing. Returns the lowest free slot id."""
    def delete_memslot(self, slot: int) -> None:
        """Unmap the slot's range and drop the slot and its dirty log (nothing changes on
        error)."""
    def memslots(self) -> list[Memslot]:
        """The slots in IPA order."""
    def set_log_dirty(self, slot: int, enable: bool, *, eager_split: bool = False) -> None:
        """KVM_MEM_LOG_DIRTY_PAGES on (write-protect the slot's leaves, one TLBI_WRPROTECT
        event; ``eager_split`` first splits its blocks to pages) or off (bitmap dropped)."""
    def get_dirty_log(self, slot: int, *, clear: bool = True) -> npt.NDArray[np.uint64]:
        """KVM_GET_DIRTY_LOG: the slot's dirty bitmap (bit ``i % 64`` of word ``i // 64`` is
        page ``i``); ``clear`` clears it and write-protects those pages again (one
        TLBI_WRPROTECT event if any bit was set)."""
    def clear_dirty_log(
        self, slot: int, first_page: int, mask: int | npt.ArrayLike
    ) -> None:
        """KVM_CLEAR_DIRTY_LOG: clear the bits of ``mask`` (one int word, or uint64 words)
        from page ``first_page`` (a multiple of 64) and write-protect those pages again."""
    def fault(self, ipa: int, access: Access | int) -> FaultOutcome:
        """KVM's stage-2 abort handler for one guest access (``HIT`` if it does not fault)."""
    def access_many(
        self, ipas: npt.ArrayLike, access: Access | int = ...
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint8]]:
        """Guest accesses in order, in C: translate, run the handler on a fault and retry (up
        to 4 runs). Returns ``(pa, outcome)``: PAs (0 where the access exited) and
        FaultOutcome codes of the last handler run (HIT where none ran)."""
    def fault_counts(self, clear: bool = False) -> dict[FaultOutcome, int]:
        """Handler runs per FaultOutcome (``HIT``: accesses that needed none); ``clear``
        resets them."""
    def translate(self, ipa: int, access: Access | int = ...) -> Translation: ...
    def translate2(
        self, va: int, s1: Stage1 | Regime, access: GuestAccess | Access | int = ...
    ) -> Translation2:
        """VA -> IPA -> PA through ``s1`` and this VM, every descriptor read in hardware order
        (``steps``); raises Stage1Fault or Stage2Fault (``va``, ``s1ptw``)."""
    def translate2_many(
        self,
        vas: npt.ArrayLike,
        s1: Stage1 | Regime,
        access: GuestAccess | Access | int = ...,
        *,
        ipa: npt.NDArray[np.uint64] | None = ...,
    ) -> tuple[
        npt.NDArray[np.uint64], npt.NDArray[np.uint8], npt.NDArray[np.uint8],
        npt.NDArray[np.uint8]
    ]:
        """``(pa, fsc, stage, accesses)`` per VA in one C loop without the GIL; ``fsc`` has
        FSC_S1PTW for a stage-2 fault on a stage-1 table read; ``ipa`` receives the IPAs."""
    def lookup(self, ipa: int) -> Translation | None: ...
    def translate_many(
        self,
        ipas: npt.ArrayLike,
        access: Access | int = ...,
        *,
        out: tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint8]] | None = None,
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint8]]: ...
    def walk(self, ipa: int) -> list[WalkStep]: ...
    def mappings(self, ipa: int = 0, size: int | None = None) -> Iterator[Mapping]: ...
    def stats(self) -> dict: ...
    def check(self) -> None: ...
    def dump(self) -> str: ...
    def diff(self, other: Stage2 | object) -> list[Mapping]:
        """Leaves of this VM that ``other`` lacks exactly, then those of ``other`` this VM
        lacks, each in IPA order."""
    def __reduce__(self) -> tuple: ...
    def tlbi_log(self, clear: bool = True) -> npt.NDArray: ...
    def destroy(self) -> None: ...
    def __enter__(self) -> Stage2: ...
    def __exit__(self, *exc: object) -> Literal[False]: ...

#: MAIR_EL1 of a Stage1 made without one (Attr0 Normal WB, 1 Device-nGnRE, 2 Normal NC,
#: 3 Device-nGnRnE).
DEFAULT_MAIR: int
DEFAULT_S1_POOL_IPA: int
DEFAULT_S1_POOL_BYTES: int

class Stage1:
    """A guest's stage-1 tables (EL1&0, TTBR0_EL1, or TTBR1_EL1 with ``ttbr=1``: VA -> IPA)
    on the same C core, in a pool whose base address is an IPA (guest RAM that the VM
    maps)."""

    def __init__(
        self,
        va_bits: int = 48,
        granule: int = 4096,
        ips_bits: int = 48,
        asid: int = 0,
        pool: PagePool | None = None,
        *,
        lpa2: bool = False,
        mair: int = ...,
        ttbr: Literal[0, 1] = 0,
        tlbi_capacity: int = 4096,
    ) -> None: ...
    @property
    def pool(self) -> PagePool: ...
    @property
    def va_bits(self) -> int: ...
    @property
    def ttbr_index(self) -> int:
        """0: TTBR0_EL1 tables (low VAs); 1: TTBR1_EL1 tables (high VAs)."""
    @property
    def va_start(self) -> int:
        """The lowest VA translated: 0, or 2**64 - 2**va_bits for TTBR1 tables."""
    @property
    def ips_bits(self) -> int: ...
    @property
    def granule(self) -> int: ...
    @property
    def asid(self) -> int: ...
    @property
    def lpa2(self) -> bool: ...
    @property
    def levels(self) -> int: ...
    @property
    def start_level(self) -> int: ...
    @property
    def root_entries(self) -> int: ...
    @property
    def min_block_level(self) -> int: ...
    @property
    def t0sz(self) -> int: ...
    @property
    def tcr(self) -> int:
        """TCR_EL1 of this half (T0SZ ... TG0 and EPD1, or T1SZ ... TG1 and EPD0; IPS, AS,
        DS)."""
    @property
    def ttbr(self) -> int:
        """TTBR0_EL1 (TTBR1_EL1 for ``ttbr=1``): root IPA | ASID << 48."""
    @property
    def mair(self) -> int: ...
    @property
    def root_ipa(self) -> int: ...
    @property
    def table_pages(self) -> int: ...
    @property
    def destroyed(self) -> bool: ...
    def map(
        self,
        va: int,
        ipa: int,
        size: int,
        prot: Prot | int = ...,
        attr: int = 0,
        *,
        blocks: bool = True,
        user: bool = False,
        global_: bool = True,
        af: bool = True,
    ) -> None:
        """Map ``[va, va + size)`` to ``[ipa, ipa + size)``; ``attr`` is the MAIR index,
        ``user`` sets AP[1], ``global_=False`` sets nG."""
    def unmap(self, va: int, size: int) -> int: ...
    def protect(self, va: int, size: int, prot: Prot | int, *, user: bool = False) -> None: ...
    def translate(self, va: int, access: GuestAccess | Access | int = ...) -> Translation:
        """Stage 1 alone (the result's ``pa`` is the IPA); raises Stage1Fault."""
    def lookup(self, va: int) -> Translation | None: ...
    def walk(self, va: int) -> list[WalkStep]: ...
    def mappings(self, va: int | None = None, size: int | None = None) -> list[Mapping]: ...
    def tlbi_log(self, clear: bool = True) -> npt.NDArray[Any]:
        """TLB invalidations as Stage2.tlbi_log gives them, VAs in the ``ipa`` field."""
    def check(self) -> None: ...
    def __reduce__(self) -> tuple[Any, ...]: ...
    def destroy(self) -> None: ...

class Regime:
    """A guest's EL1&0 stage-1 regime: TTBR0 tables (VA[55] = 0) and TTBR1 tables
    (VA[55] = 1), either None (EPDx = 1), one MAIR_EL1."""

    def __init__(
        self, ttbr0: Stage1 | None = None, ttbr1: Stage1 | None = None, *, mair: int | None = None
    ) -> None: ...
    @property
    def ttbr0(self) -> Stage1 | None: ...
    @property
    def ttbr1(self) -> Stage1 | None: ...
    @property
    def mair(self) -> int: ...
    @property
    def tcr(self) -> int:
        """TCR_EL1 for both halves."""
    def registers(self) -> dict[str, int]:
        """TCR_EL1, TTBR0_EL1, TTBR1_EL1 and MAIR_EL1."""

#: Format version of pickled states and s2pt.save files (newer ones are refused).
STATE_VERSION: int

class _PointerChase:
    def __init__(self, memory: npt.NDArray[np.uint64], offsets: npt.NDArray[np.uint64]) -> None: ...
    def run(self) -> int: ...

class _Floor:
    """The per-call benchmark floor: a method with three integer arguments doing nothing."""
    def call(self, a: int, b: int, c: int) -> None: ...
