"""Enums and result records of the public API (plain Python; the C core uses the same values)."""

from __future__ import annotations

import enum
from typing import NamedTuple

import numpy as np

__all__ = [
    "Prot",
    "Access",
    "GuestAccess",
    "MemAttr",
    "FaultKind",
    "FSC_NONE",
    "FSC_S1PTW",
    "WalkStep",
    "Mapping",
    "NestedStep",
    "Translation2",
    "FaultOutcome",
    "Memslot",
    "bitmap_pages",
]

#: ``fsc[i]`` value in :meth:`Stage2.translate_many` for an IPA that did not fault (not a valid
#: 6-bit fault status code).
FSC_NONE = 0xFF
# In translate2_many's fsc: a stage-2 fault on a stage-1 table read (ESR_EL2.ISS bit 7).
FSC_S1PTW = 0x80


class Prot(enum.IntFlag):
    """Stage-2 permissions. ``R``/``W`` are S2AP[0]/S2AP[1]; ``PX`` (EL1 execute) and ``UX``
    (EL0 execute) become XN[1:0] (descriptor bits 54:53): ``X`` (both) 0b00, ``UX`` only 0b01,
    neither 0b10, ``PX`` only 0b11.

    ``PX`` without ``UX`` (or the reverse) needs FEAT_XNX: a VM made with ``xnx=True``;
    without it they must go together (``X``), as one XN bit then governs both.

    Stage 1 (:class:`Stage1`) reads the same flags in its own format: ``R`` is required (a
    stage-1 leaf always grants EL1 read), ``W`` clears AP[2], ``USER`` sets AP[1] (EL0 may
    read, and write with ``W``), ``PX`` / ``UX`` clear PXN / UXN. A page EL0 may write is
    never executable at EL1 (the implicit PXN), whatever ``PX`` says.
    """

    NONE = 0
    R = 0x1
    W = 0x2
    PX = 0x4
    UX = 0x8
    X = PX | UX
    RW = R | W
    RX = R | X
    WX = W | X
    RWX = R | W | X
    USER = 0x10  #: stage 1 only: EL0 access (AP[1])


class Access(enum.IntEnum):
    """The kind of access a translation is checked for."""

    READ = 0
    WRITE = 1
    EXEC = 2  #: instruction fetch at EL1 (needs ``Prot.PX``)
    EXEC_EL0 = 3  #: instruction fetch at EL0 (needs ``Prot.UX``)


class GuestAccess(enum.IntEnum):
    """An access a guest makes at EL1 or EL0 with stage 1 on: :meth:`Stage1.translate` and
    :meth:`Stage2.translate2`. The first four equal :class:`Access`; EL0 data accesses need
    ``Prot.USER`` at stage 1, and stage 2 checks them as reads and writes (S2AP has no EL)."""

    READ = 0
    WRITE = 1
    EXEC = 2
    EXEC_EL0 = 3
    READ_EL0 = 4
    WRITE_EL0 = 5


class MemAttr(enum.IntEnum):
    """Stage-2 memory types, named by their MemAttr[3:0] encoding without FWB (HCR_EL2.FWB ==
    0; any other Normal outer/inner combination, e.g. ``0xD``, is accepted as a plain int).

    A VM made with ``fwb=True`` writes the FWB encoding of the same type: Device types as
    they are, ``NORMAL_NC`` 0b0101, ``NORMAL`` 0b0110 (forced write-back), and ``STAGE1``
    0b0111 (the stage-1 attributes decide; FWB only). Other cacheabilities (``NORMAL_WT``,
    mixed inner/outer) cannot be expressed with FWB.
    """

    DEVICE_nGnRnE = 0x0
    DEVICE_nGnRE = 0x1
    DEVICE_nGRE = 0x2
    DEVICE_GRE = 0x3
    NORMAL_NC = 0x5
    NORMAL_WT = 0xA
    NORMAL = 0xF
    STAGE1 = 0x10
    #: ``RESERVED | field``: a MemAttr encoding the VM's format reserves (foreign images only)
    RESERVED = 0x20

    @property
    def is_device(self) -> bool:
        """Device memory: MemAttr[3:2] == 0b00."""
        return self.value <= 0x3


class FaultKind(enum.IntEnum):
    """Stage-2 fault kinds; the ESR fault status code is ``(base << 2) | level``."""

    TRANSLATION = 1
    ACCESS_FLAG = 2
    PERMISSION = 3
    ADDRESS_SIZE = 4

    def fsc(self, level: int) -> int:
        """The ESR_ELx DFSC/IFSC for this kind at ``level`` (-1..3; level -1, FEAT_LPA2's,
        has translation 0b101011 and address size 0b101001)."""
        if level < 0:
            return 0b101011 if self is FaultKind.TRANSLATION else 0b101001
        base = {1: 0b000100, 2: 0b001000, 3: 0b001100, 4: 0b000000}[self.value]
        return base | (level & 3)


class WalkStep(NamedTuple):
    """One descriptor read by a walk."""

    level: int
    table_pa: int  #: PA of the table the descriptor is in (the root's base at the start level)
    index: int  #: index in that table (in the concatenated root at the start level)
    desc_pa: int  #: PA of the descriptor
    desc: int  #: raw descriptor value

    def __repr__(self) -> str:
        return (f"WalkStep(level={self.level}, table_pa={self.table_pa:#x}, index={self.index}, "
                f"desc_pa={self.desc_pa:#x}, desc={self.desc:#x})")


class Mapping(NamedTuple):
    """One valid leaf."""

    ipa: int
    pa: int
    size: int
    level: int
    prot: Prot
    memattr: MemAttr
    af: bool = True
    sw: int = 0  #: software bits 58:55

    def __repr__(self) -> str:
        return (f"Mapping(ipa={self.ipa:#x}, pa={self.pa:#x}, size={self.size:#x}, "
                f"level={self.level}, prot={self.prot!r}, memattr={self.memattr!r}, af={self.af}, "
                f"sw={self.sw})")


class NestedStep(NamedTuple):
    """One descriptor read of the two-dimensional walk, in the order hardware makes them."""

    stage: int  #: 1 or 2
    level: int  #: lookup level within that stage
    ipa: int  #: stage 2: the IPA this walk translates; stage 1: the descriptor's IPA
    desc_pa: int  #: PA of the descriptor read
    desc: int  #: its value

    def __repr__(self) -> str:
        return (f"NestedStep(stage={self.stage}, level={self.level}, ipa={self.ipa:#x}, "
                f"desc_pa={self.desc_pa:#x}, desc={self.desc:#x})")


class Translation2(NamedTuple):
    """A VA translated through both stages (:meth:`Stage2.translate2`).

    ``s1`` is the stage-1 leaf (its ``pa`` is the IPA, ``memattr`` the MAIR index), ``s2``
    the stage-2 leaf of the output. ``prot`` is what both stages grant, in stage-1 terms
    (``R``/``W`` at EL1, ``USER`` for EL0 data access, ``PX``/``UX`` for EL1/EL0 execute);
    ``memattr`` the combined memory type (MAIR attribute with stage 2's MemAttr, per FWB).
    ``steps`` are the reads made, up to 24 for 4 + 4 levels."""

    pa: int
    ipa: int
    s1: object
    s2: object
    prot: Prot
    memattr: int
    steps: tuple

    def __repr__(self) -> str:
        return (f"Translation2(pa={self.pa:#x}, ipa={self.ipa:#x}, prot={self.prot!r}, "
                f"memattr={self.memattr!r}, {len(self.steps)} steps)")


class FaultOutcome(enum.IntEnum):
    """What the stage-2 abort handler (:meth:`Stage2.fault`, :meth:`Stage2.access_many`) did
    for one guest access, as KVM's ``kvm_handle_guest_abort`` / ``user_mem_abort`` would.
    The values are the C core's ``S2PT_OUTCOME_*``."""

    HIT = 0  #: no stage-2 fault: the access translated, nothing changed
    #: translation fault resolved by mapping (or a permission fault whose mapping size
    #: differs from the faulting leaf's, e.g. a block over pages once logging stopped)
    MAPPED = 1
    #: write to a write-protected page of a dirty-logged slot: marked dirty and made writable
    #: at page granularity (relax_perms on a page; a block gets a page mapped into it)
    DIRTY = 2
    RELAXED = 3  #: permission fault resolved by relax_perms (same leaf size)
    YOUNG = 4  #: access-flag fault resolved by mkyoung
    #: exit to user space: no memslot at the IPA, or a write to a read-only slot
    MMIO = 5
    #: the entry is an owner annotation (set_owner): not the MMU's to map; nothing changed
    PERMISSION = 6
    #: KVM injects an abort into the guest: an instruction fetch outside every memslot
    #: (kvm_inject_pabt) or an IPA beyond the VM's IPA size (kvm_inject_size_fault)
    ABORT = 7


class Memslot(NamedTuple):
    """One memory slot (``KVM_SET_USER_MEMORY_REGION``): guest IPAs ``[ipa, ipa + size)``
    backed by host PAs ``[pa, pa + size)`` in pages of ``backing`` bytes."""

    id: int
    ipa: int
    pa: int
    size: int
    readonly: bool
    log_dirty: bool
    backing: int

    def __repr__(self) -> str:
        return (f"Memslot(id={self.id}, ipa={self.ipa:#x}, pa={self.pa:#x}, size={self.size:#x}, "
                f"readonly={self.readonly}, log_dirty={self.log_dirty}, backing={self.backing:#x})")


def bitmap_pages(bitmap) -> np.ndarray:
    """The page indices (ascending, uint64) whose bits are set in a KVM-layout bitmap: bit
    ``i % 64`` of uint64 word ``i // 64`` stands for page ``i``."""
    words = np.ascontiguousarray(bitmap, dtype="<u8")
    bits = np.unpackbits(words.view(np.uint8), bitorder="little")
    return np.flatnonzero(bits).astype(np.uint64)
