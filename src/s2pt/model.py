"""A pure-Python reference model of :class:`s2pt.Stage2`, for differential testing.

The model is written to be obviously right rather than fast. Its whole state is one dict of
leaves::

    {(level, ipa): _Leaf(pa, prot, memattr, af, sw)}

where ``ipa`` is the (span-aligned) first IPA the leaf maps. There are no descriptors, no
reference counts and no pool pages. The table pages are *derived* from the leaves: the root
pages (``root_tables`` of them, always present) plus, for every leaf at a level ``L`` below the
start level, each ancestor table on its path, one per level ``l`` in ``start_level+1 .. L``,
identified by ``(l, ipa aligned to the span of a level l-1 entry)``. That is KVM's rule that a
table page exists exactly while it holds a non-zero entry (``kvm_page_empty``), so the table
count needs no bookkeeping.

Every change is computed as a new leaf dict, its tables derived, and only then committed; so a
failed call (bad argument or pool exhaustion) changes nothing, as the contract demands. The
pages a change needs are the table positions of the new state that the old state did not have
(pages the same change frees are not credited: the engine reserves before it frees). A
:class:`ReferencePool` does the page accounting, for one model or several sharing a pool
(``pool_pages=None``: unlimited). Everything else the model keeps (the sorted leaf list, the
Mapping records) is a cache of the leaf dict, rebuilt after each change.

Semantics mirrored (see ``shared/spec/stage2.md``):

* ``map``: each aligned chunk of the range gets the largest leaf whose level allows blocks
  (``Stage2Config.min_block_level``; never a block above it), whose IPA is aligned and whose
  output address is aligned (``(pa - ipa) % span == 0``); ``blocks=False`` gives pages only.
  Leaves inside the range are replaced; a leaf crossing an end of the range is split so the
  part outside stays mapped (as the largest aligned pieces, all at deeper levels) -- unless
  blocks are enabled and that leaf already translates its part of the range exactly as asked
  (same output address, permissions, memory attribute, access flag and software bits), in
  which case it is left alone.
* ``unmap`` removes exactly the range (crossing leaves split); returns the bytes that were mapped.
* ``protect`` sets the permissions of the leaves in the range; a crossing leaf whose permissions
  change is split; holes stay holes. Execute permission is refused on Device leaves.
* ``set_access_flag`` changes whole leaves in place (never splits), returns how many had AF=1.
* ``translate``: translation fault at the level the walk stopped (level 0 for an IPA beyond
  ``ipa_bits``), then access flag, then permission (read needs R, write needs W, EL1 execute
  needs PX, EL0 execute UX), each with the ESR fault status code.
* Per-VM formats: ``lpa2`` / 52-bit PA address layouts, FWB MemAttr encodings, FEAT_XNX (PX
  and UX apart); the model encodes descriptors itself (``_pte``) from the architecture's
  field layout, independently of the C core's encoders.

Argument conversion and the order of the checks follow the engine exactly, so that the same bad
call raises the same exception class from both.

Stage 1 and the two-dimensional walk (see the section at the end of this file):

* :class:`ReferenceStage1` is the twin of :class:`s2pt.Stage1`: the stage-2 model's leaf dict,
  exact-range map / unmap / protect and derived table pages (inherited, not copied) with the
  stage-1 geometry (one root, no concatenation, levels from the VA size), permission format
  (R always; W clear = AP[2] read-only; USER = AP[1]; PXN / UXN), MAIR indices for memory
  types, nG, and GuestAccess kinds (EL0 data accesses; the implicit PXN of EL0-writable pages).
  ``ttbr=1`` gives TTBR1 tables: the upper VA range [2**64 - 2**va_bits, 2**64), whole VAs in
  and out of every method (the leaves are kept at the VA's low va_bits bits, what the walk
  indexes), a lower VA a RangeError. ``tcr`` is the table's half of TCR_EL1.
* :class:`ReferenceRegime` is the twin of :class:`s2pt.Regime`: a TTBR0 and a TTBR1
  ReferenceStage1 (either None: EPDx), one MAIR, the combined TCR_EL1 and ``registers()``.
* :meth:`ReferenceStage2.translate2` / :meth:`ReferenceStage2.translate2_many` are the twins of
  the engine's nested walk, through a ReferenceRegime or a lone ReferenceStage1 (its half of a
  regime; the other half has no tables): VA[55] picks the half, a VA whose bits [63:va_bits]
  are not all VA[55] (no TBI), or one in a half without tables, is a stage-1 level-0
  translation fault without a read. Their only input from outside the models
  is where each table page is (``s1_tables(va)`` / ``s2_tables(ipa)``: level -> table address,
  an allocation choice); every read in hardware order, which stage faults (S1PTW, which needs
  stage-2 read permission and AF), the FSC, PA / IPA, the combined permissions and the combined
  memory type (MAIR attribute with stage 2's MemAttr, with and without FWB) come from the models.
"""

from __future__ import annotations

import bisect
import operator
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Set, Tuple

import numpy as np

from ._core import Stage2Config
from ._core import Translation  # the engine's record type: results compare field by field
from ._types import (FSC_NONE, FSC_S1PTW, FaultKind, FaultOutcome, Mapping, Memslot, MemAttr,
                     NestedStep, Prot, Translation2)
from .errors import (
    AlignmentError,
    ArgumentTypeError,
    ArrayError,
    ConfigError,
    DestroyedError,
    InvalidArgumentError,
    InvariantError,
    PoolExhaustedError,
    RangeError,
    Stage1Fault,
    Stage2Fault,
)

__all__ = ["ReferenceStage2", "ReferenceStage1", "ReferenceRegime", "ReferencePool"]

_U64_LIMIT = 1 << 64
_U32_LIMIT = 1 << 32

# Stage-2 descriptor fields (Arm ARM D8, VMSAv8-64 stage 2), used only to build Translation.pte.
_DESC_VALID = 1 << 0
_DESC_TYPE = 1 << 1  # level 3: must be 1 (page); levels 0-2: 0 = block, 1 = table
_DESC_MEMATTR_SHIFT = 2
_DESC_S2AP_R = 1 << 6
_DESC_S2AP_W = 1 << 7
_DESC_SH_INNER = 0b11 << 8
_DESC_AF = 1 << 10
_DESC_XN0 = 1 << 53  # XN[0], FEAT_XNX
_DESC_XN = 1 << 54  # XN[1]
_DESC_SW_SHIFT = 55  # bits 58:55, reserved for software

# ESR_ELx DFSC/IFSC: 0b0000LL address size, 0b0001LL translation, 0b0010LL access flag,
# 0b0011LL permission.
_FSC_BASE = {
    FaultKind.ADDRESS_SIZE: 0b000000,
    FaultKind.TRANSLATION: 0b000100,
    FaultKind.ACCESS_FLAG: 0b001000,
    FaultKind.PERMISSION: 0b001100,
}


def _fsc(kind: int, level: int) -> int:
    """The fault status code of ``kind`` at ``level``: base | level, and at FEAT_LPA2's level
    -1 translation 0b101011, address size 0b101001."""
    if level < 0:
        return 0b101011 if kind == FaultKind.TRANSLATION else 0b101001
    return _FSC_BASE[kind] | level

_READ, _WRITE, _EXEC, _EXEC_EL0 = 0, 1, 2, 3
# Prot bits as plain ints (enum arithmetic is slow and the model does a lot of it).
_R, _W, _PX, _UX = int(Prot.R), int(Prot.W), int(Prot.PX), int(Prot.UX)
_X = _PX | _UX
_NEEDS = {_READ: _R, _WRITE: _W, _EXEC: _PX, _EXEC_EL0: _UX}  # what each access kind needs
_STAGE1 = int(MemAttr.STAGE1)
# MemAttr names -> the FWB field (HCR_EL2.FWB = 1); absent names cannot be expressed.
_FWB_FIELD = {0x0: 0x0, 0x1: 0x1, 0x2: 0x2, 0x3: 0x3, 0x5: 0x5, 0xF: 0x6, _STAGE1: 0x7}


class _Leaf(NamedTuple):
    pa: int  # output address of the leaf's first byte (aligned to its span)
    prot: int  # Prot bits: R, W, PX, UX
    memattr: int  # a MemAttr name (the non-FWB encoding, or STAGE1)
    af: bool
    sw: int = 0  # software bits 58:55
    owner: int = 0  # non-zero: an invalid entry annotated with this owner id (pa etc. unused)


# ---- argument conversion (what the Cython layer does) ----------------------------------------


def _int(value, name: str) -> int:
    """A Python int; floats and strings are refused (never truncated)."""
    if type(value) is int:
        return value
    try:
        return operator.index(value)
    except TypeError:
        raise ArgumentTypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


def _u64(value, name: str) -> int:
    value = _int(value, name)
    if not 0 <= value < _U64_LIMIT:
        raise RangeError(f"{name}={value!r} does not fit in 64 bits (0 .. 2**64-1)")
    return value


def _u32(value, name: str) -> int:
    value = _int(value, name)
    if not 0 <= value < _U32_LIMIT:
        raise InvalidArgumentError(f"{name}={value!r} is out of range")
    return value


def _ipa_list(ipas) -> List[int]:
    """The IPAs of a translate_many argument: a C-contiguous 1-D uint64 array or a sequence of
    integers in 0 .. 2**64-1."""
    if isinstance(ipas, np.ndarray):
        if ipas.dtype != np.uint64:
            raise ArrayError(f"ipas must have dtype uint64, got {ipas.dtype}")
        if ipas.ndim != 1:
            raise ArrayError(f"ipas must be 1-D, got {ipas.ndim} dimensions")
        if not ipas.flags.c_contiguous:
            raise ArrayError("ipas must be C-contiguous")
        return [int(x) for x in ipas.tolist()]
    try:
        values = [operator.index(x) for x in ipas]
    except TypeError as exc:
        raise ArrayError(f"ipas must be a 1-D sequence of integers: {exc}") from None
    if any(not 0 <= v < _U64_LIMIT for v in values):
        raise ArrayError("ipas must be integers in 0 .. 2**64-1")
    return values


def _prot_valid(prot: int, xnx: bool) -> bool:
    """R, W, PX, UX only; without FEAT_XNX, PX and UX must be given together."""
    if prot & ~(_R | _W | _X):
        return False
    return xnx or bool(prot & _PX) == bool(prot & _UX)


def _memattr_valid(memattr: int, fwb: bool) -> bool:
    """Without FWB: Device (MemAttr[3:2] == 0, any subtype), or Normal with outer and inner
    each NC/WT/WB. With FWB: Device, Normal NC, Normal (forced WB) or STAGE1."""
    if fwb:
        return memattr in _FWB_FIELD
    if memattr > 0xF:
        return False
    if memattr & 0xC == 0:
        return True
    return memattr & 0x3 != 0


def _is_device(memattr: int) -> bool:
    return memattr <= 0x3


def _memattr_obj(memattr: int):
    """A MemAttr member where one is defined, else the plain int (as the engine returns)."""
    try:
        return MemAttr(memattr)
    except ValueError:
        return memattr


_PROT_OBJ = tuple(Prot(i) for i in range(16))
_MEMATTR_OBJ = tuple(_memattr_obj(i) for i in range(_STAGE1 + 1))


# ---- pool accounting --------------------------------------------------------------------------


class _Slot(NamedTuple):
    ipa: int
    pa: int
    size: int
    readonly: bool
    backing: int
    dirty: Optional[Set[int]]  # page indices written while logging; None: not logging


class ReferencePool:
    """Page accounting of a (possibly shared) pool: ``capacity`` pages (None: unlimited), of
    which every live model attached to it uses its ``table_pages``."""

    def __init__(self, capacity: Optional[int] = None):
        if capacity is not None:
            capacity = _int(capacity, "capacity")
            if capacity <= 0:
                raise InvalidArgumentError("capacity must be positive")
        self.capacity = capacity
        self._members: List[ReferenceStage2] = []

    @property
    def used(self) -> int:
        return sum(m.table_pages for m in self._members if not m.destroyed)

    @property
    def free(self) -> Optional[int]:
        return None if self.capacity is None else self.capacity - self.used


# ---- the model --------------------------------------------------------------------------------


def _level_spans(stride: int) -> Dict[int, int]:
    """Bytes an entry maps, by level: -1 (a five-level stage 1, 4K with LPA2) to 3."""
    return {level: 1 << (stride * (4 - level) + 3) for level in range(-1, 4)}


class ReferenceStage2:
    """The semantics of :class:`s2pt.Stage2`, from a dict of leaves (slow, simple)."""

    def __init__(self, ipa_bits=40, granule=4096, pa_bits=48, vmid=1, pool_pages=None, *,
                 pool: Optional[ReferencePool] = None, lpa2=False, fwb=False, xnx=False,
                 tlbi_range=True, semantics="exact"):
        if semantics not in ("exact", "kvm"):
            raise ConfigError(f"semantics must be 'exact' or 'kvm', not {semantics!r}")
        self.config = Stage2Config(ipa_bits=ipa_bits, granule=granule, pa_bits=pa_bits,
                                   vmid=vmid, lpa2=lpa2, fwb=fwb, xnx=xnx,
                                   tlbi_range=tlbi_range, semantics=semantics)
        self._kvm = semantics == "kvm"
        self._slots: Dict[int, _Slot] = {}
        self._counts = [0] * len(FaultOutcome)
        cfg = self.config
        self._lpa2, self._fwb, self._xnx = cfg.lpa2, cfg.fwb, cfg.xnx
        if pool is not None and pool_pages is not None:
            raise InvalidArgumentError("give pool_pages or pool, not both")
        if pool is None:
            pool = ReferencePool(pool_pages)
        self._granule = cfg.granule
        self._stride = cfg.granule.bit_length() - 1 - 3
        self._start = cfg.start_level
        self._min_block = cfg.min_block_level
        self._levels = range(cfg.start_level, 4)
        self._spans = _level_spans(self._stride)
        self._top = 1 << cfg.ipa_bits
        self._pa_top = 1 << cfg.pa_bits
        self._leaves: Dict[Tuple[int, int], _Leaf] = {}
        self._tables: Set[Tuple[int, int]] = set()  # non-root table positions (derived)
        self._order: Optional[list] = None  # cache: [(ipa, level, leaf)] sorted by ipa
        self._bases: List[int] = []  # cache: the ipas of _order
        self._objs: List[Mapping] = []  # cache: _order as Mapping records
        self._checked: Optional[list] = None  # the _order check() last passed
        self._destroyed = False
        if pool.free is not None and pool.free < cfg.root_tables:
            raise PoolExhaustedError(f"{cfg.root_tables} root page(s) from a pool with "
                                     f"{pool.free} free")
        self.pool = pool
        pool._members.append(self)

    # -- geometry ----------------------------------------------------------------------------
    def span(self, level: int) -> int:
        """Bytes one entry maps at ``level``."""
        return self._spans[level]

    @property
    def ipa_bits(self) -> int:
        return self.config.ipa_bits

    @property
    def pa_bits(self) -> int:
        return self.config.pa_bits

    @property
    def granule(self) -> int:
        return self._granule

    @property
    def vmid(self) -> int:
        return self.config.vmid

    @property
    def levels(self) -> int:
        return self.config.levels

    @property
    def start_level(self) -> int:
        return self._start

    @property
    def root_tables(self) -> int:
        return self.config.root_tables

    @property
    def vtcr(self) -> int:
        return self.config.vtcr

    @property
    def destroyed(self) -> bool:
        return self._destroyed

    @property
    def semantics(self) -> str:
        return "kvm" if self._kvm else "exact"

    @property
    def table_pages(self) -> int:
        """Table pages, roots included."""
        self._live()
        return self.config.root_tables + len(self._tables)

    # -- helpers -------------------------------------------------------------------------------
    def _live(self) -> None:
        if self._destroyed:
            raise DestroyedError("this ReferenceStage2 was destroyed")

    def _check_range(self, ipa: int, size: int) -> None:
        """Alignment first, then the IPA space (ipa + size may equal 2**ipa_bits)."""
        if (ipa | size) % self._granule:
            raise AlignmentError(f"ipa={ipa:#x}, size={size:#x} must be granule multiples")
        if ipa + size > self._top:  # also covers every 64-bit wrap-around
            raise RangeError(f"[{ipa:#x}, +{size:#x}) is outside the IPA space")

    def _end(self, level: int, base: int) -> int:
        return base + self._spans[level]

    def _decompose(self, a: int, b: int, allowed: Callable[[int], bool]) -> List[Tuple[int, int]]:
        """[a, b) as the largest aligned entries, left to right: (level, ipa) pairs.

        ``allowed(level)`` says whether a leaf may sit at a level; level 3 always may.
        """
        out = []
        x = a
        while x < b:
            for level in self._levels:
                size = self._spans[level]
                if x % size == 0 and x + size <= b and (level == 3 or allowed(level)):
                    out.append((level, x))
                    x += size
                    break
        return out

    def _pieces(self, level: int, base: int, leaf: _Leaf, a: int, b: int,
                prot: Optional[int] = None) -> Dict[Tuple[int, int], _Leaf]:
        """The part [a, b) of a leaf once split (recursively, only as far as needed): the
        largest aligned pieces, all deeper than the leaf, with the leaf's output addresses and
        attributes (``prot`` replaces the permissions if given)."""
        a = max(a, base)
        b = min(b, self._end(level, base))
        new_prot = leaf.prot if prot is None else prot
        return {
            (lv, x): _Leaf(leaf.pa + (x - base), new_prot, leaf.memattr, leaf.af, leaf.sw)
            for lv, x in self._decompose(a, b, lambda lv: lv > level)
        }

    def _derive_tables(self, leaves) -> Set[Tuple[int, int]]:
        """Non-root table positions: every ancestor table of every leaf. The level-lv table
        on the path of an IPA is the one the level lv-1 entry covering it points to."""
        masks = {level: ~(span - 1) for level, span in self._spans.items()}
        return {(lv, ipa & masks[lv - 1])
                for level, ipa in leaves for lv in range(self._start + 1, level + 1)}

    def _commit(self, leaves: Dict[Tuple[int, int], _Leaf]) -> None:
        """Install a new state, unless the pool cannot supply the table pages it adds."""
        tables = self._derive_tables(leaves)
        need = len(tables - self._tables)
        free = self.pool.free
        if free is not None and need > free:
            raise PoolExhaustedError(f"the pool has {free} free page(s), {need} needed")
        self._leaves = leaves
        self._tables = tables
        self._order = None

    def _sorted(self):
        """[(ipa, level, leaf)] of every leaf, in IPA order (cached until the next change)."""
        if self._order is None:
            self._order = sorted((base, level, leaf)
                                 for (level, base), leaf in self._leaves.items())
            self._bases = [base for base, _, _ in self._order]
            self._objs = [None if leaf.owner else self._mapping(base, level, leaf)
                          for base, level, leaf in self._order]
        return self._order

    def _mapping(self, base: int, level: int, leaf: _Leaf) -> Mapping:
        """The Mapping record of a valid leaf (ReferenceStage1 reports its own format)."""
        return Mapping(base, leaf.pa, self._spans[level], level, _PROT_OBJ[leaf.prot],
                       _MEMATTR_OBJ[leaf.memattr], leaf.af, leaf.sw)

    def _prot_ok(self, prot: int) -> bool:
        """Whether ``prot`` is a permission set this table format can express."""
        return _prot_valid(prot, self._xnx)

    def _memattr_ok(self, memattr: int) -> bool:
        return _memattr_valid(memattr, self._fwb)

    def _exec_refused(self, memattr: int) -> bool:
        """Whether execute permission is refused on a leaf of this memory attribute."""
        return _is_device(memattr)

    def _slice(self, ipa: int, end: int) -> slice:
        """Where the leaves that overlap [ipa, end) are in _sorted()."""
        order = self._sorted()
        # The leaves starting before end; as leaves do not overlap, of those starting at or
        # before ipa only the last can reach into the range.
        lo = max(0, bisect.bisect_right(self._bases, ipa) - 1)
        if lo < len(order) and order[lo][0] + self._spans[order[lo][1]] <= ipa:
            lo += 1
        return slice(lo, max(lo, bisect.bisect_left(self._bases, end)))

    def _intersecting(self, ipa: int, end: int) -> List[Tuple[int, int, _Leaf]]:
        """(base, level, leaf) of every leaf that overlaps [ipa, end), in IPA order."""
        return self._sorted()[self._slice(ipa, end)]

    # -- changes -------------------------------------------------------------------------------
    def map(self, ipa, pa, size, prot=Prot.RW, memattr=MemAttr.NORMAL, *, blocks=True, af=True,
            sw=0):
        ipa = _u64(ipa, "ipa")
        pa = _u64(pa, "pa")
        size = _u64(size, "size")
        blocks = bool(blocks)
        af = bool(af)
        sw = _u32(sw, "sw")
        if sw > 15:
            raise InvalidArgumentError(f"sw={sw} must be 0..15")
        prot = _u32(prot, "prot")
        memattr = _u32(memattr, "memattr")
        self._live()
        if not _prot_valid(prot, self._xnx) or not _memattr_valid(memattr, self._fwb):
            raise InvalidArgumentError(f"prot={prot:#x}, memattr={memattr:#x}")
        if prot & _X and _is_device(memattr):
            raise InvalidArgumentError("execute permission on Device memory")
        if pa % self._granule:
            raise AlignmentError(f"pa={pa:#x} must be a granule multiple")
        self._check_range(ipa, size)
        if pa + size > self._pa_top:
            raise RangeError(f"[{pa:#x}, +{size:#x}) is outside the PA space")
        if size == 0:
            return
        self._place(ipa, ipa + size, _Leaf(pa, prot, memattr, af, sw), blocks)

    def set_owner(self, ipa, size, owner) -> None:
        ipa = _u64(ipa, "ipa")
        size = _u64(size, "size")
        owner = _u32(owner, "owner")
        self._live()
        if not 1 <= owner <= 255:
            raise InvalidArgumentError(f"owner={owner} must be 1..255")
        self._check_range(ipa, size)
        if size:  # pages only, as KVM's set_owner (force_pte)
            self._place(ipa, ipa + size, _Leaf(ipa, 0, 0, False, 0, owner), False)

    def _place(self, ipa: int, end: int, new: _Leaf, blocks: bool) -> None:
        """Put ``new`` over [ipa, end) (its ``pa`` is the output address of ``ipa``): the
        largest aligned entries, leaves in the range replaced, crossing ones split, unless
        (with blocks) a crossing one is already what is asked for its part."""
        pa = new.pa

        def already(base: int, leaf: _Leaf) -> bool:
            return not leaf.owner and leaf == new._replace(pa=pa + (base - ipa))

        leaves = dict(self._leaves)  # leaves outside the range stay as they are
        kept_whole = []  # spans of leaves that already translate their part of the range
        for base, level, leaf in self._intersecting(ipa, end):
            lend = self._end(level, base)
            if ipa <= base and lend <= end:
                del leaves[(level, base)]  # inside the range: replaced
            elif self._kvm:  # KVM: the block goes, only the new mapping is put in its table
                del leaves[(level, base)]
            elif blocks and already(base, leaf):
                kept_whole.append((base, lend))  # kept whole
            else:  # crosses an end of the range: keep the part outside
                del leaves[(level, base)]
                leaves.update(self._pieces(level, base, leaf, base, ipa))
                leaves.update(self._pieces(level, base, leaf, end, lend))

        def leaf_allowed(level: int) -> bool:
            return blocks and level >= self._min_block and (pa - ipa) % self._spans[level] == 0

        for level, x in self._decompose(ipa, end, leaf_allowed):
            if any(lo <= x < hi for lo, hi in kept_whole):
                continue
            leaf = new._replace(pa=0 if new.owner else pa + (x - ipa))
            old = self._leaves.get((level, x))
            # KVM leaves a same-level leaf that differs only in permissions alone (-EAGAIN).
            if self._kvm and old is not None and not old.owner and not leaf.owner and \
                    old._replace(prot=leaf.prot) == leaf:
                leaf = old
            leaves[(level, x)] = leaf
        self._commit(leaves)

    def unmap(self, ipa, size) -> int:
        ipa = _u64(ipa, "ipa")
        size = _u64(size, "size")
        self._live()
        self._check_range(ipa, size)
        if size == 0:
            return 0
        end = ipa + size
        leaves = dict(self._leaves)
        unmapped = 0
        for base, level, leaf in self._intersecting(ipa, end):
            lend = self._end(level, base)
            del leaves[(level, base)]
            if self._kvm:  # KVM removes every leaf the range touches, whole
                unmapped += 0 if leaf.owner else lend - base
                continue
            if not leaf.owner:  # annotations go too, but were never mapped
                unmapped += min(lend, end) - max(base, ipa)
            leaves.update(self._pieces(level, base, leaf, base, ipa))
            leaves.update(self._pieces(level, base, leaf, end, lend))
        self._commit(leaves)
        return unmapped

    def protect(self, ipa, size, prot) -> None:
        ipa = _u64(ipa, "ipa")
        size = _u64(size, "size")
        prot = _u32(prot, "prot")
        self._live()
        if not self._prot_ok(prot):
            raise InvalidArgumentError(f"prot={prot:#x}")
        self._check_range(ipa, size)
        if size == 0:
            return
        end = ipa + size
        hit = [x for x in self._intersecting(ipa, end) if not x[2].owner]  # annotations stay
        if prot & _X and any(self._exec_refused(leaf.memattr) for _, _, leaf in hit):
            raise InvalidArgumentError("execute permission on Device memory")
        leaves = dict(self._leaves)
        for base, level, leaf in hit:
            if leaf.prot == prot:
                continue  # already so: left whole, even if it crosses an end of the range
            lend = self._end(level, base)
            if (ipa <= base and lend <= end) or self._kvm:  # KVM: whole leaves
                leaves[(level, base)] = leaf._replace(prot=prot)  # inside: changed in place
                continue
            del leaves[(level, base)]  # crosses an end of the range: split
            leaves.update(self._pieces(level, base, leaf, base, ipa))
            leaves.update(self._pieces(level, base, leaf, ipa, end, prot))
            leaves.update(self._pieces(level, base, leaf, end, lend))
        self._commit(leaves)

    def set_access_flag(self, ipa, size, af=True) -> int:
        ipa = _u64(ipa, "ipa")
        size = _u64(size, "size")
        af = bool(af)
        self._live()
        self._check_range(ipa, size)
        if size == 0:
            return 0
        young = 0
        for base, level, leaf in self._intersecting(ipa, ipa + size):
            if leaf.owner:
                continue
            young += leaf.af
            self._leaves[(level, base)] = leaf._replace(af=af)
        self._order = None
        return young

    # -- queries -------------------------------------------------------------------------------
    def _walk(self, ipa: int):
        """((level, base, leaf), None) for the leaf translating ipa, or (None, fault level)."""
        if ipa >> self.config.ipa_bits:
            return None, 0  # input address beyond the IPA size: level 0
        for level in self._levels:
            base = ipa & ~(self._spans[level] - 1)
            leaf = self._leaves.get((level, base))
            if leaf is not None:
                return (level, base, leaf), None
            if level == 3 or (level + 1, base) not in self._tables:
                return None, level  # an invalid entry at this level
        raise AssertionError("unreachable")

    def _pte(self, level: int, leaf: _Leaf) -> int:
        """The leaf descriptor, from the Arm ARM's stage-2 field layout."""
        pa = leaf.pa
        if self._lpa2:  # OA[49:g] in place, OA[51:50] in bits 9:8; no SH field
            pte = (pa & ((1 << 50) - 1)) | ((pa >> 50) & 3) << 8
        elif self._granule == 1 << 16:  # 64K: OA[47:16] in place, OA[51:48] in bits 15:12
            # (zero unless the PA size is 52 bits)
            pte = (pa & ((1 << 48) - 1)) | ((pa >> 48) & 0xF) << 12 | _DESC_SH_INNER
        else:
            pte = pa | _DESC_SH_INNER
        field = _FWB_FIELD[leaf.memattr] if self._fwb else leaf.memattr
        pte |= _DESC_VALID | field << _DESC_MEMATTR_SHIFT | leaf.sw << _DESC_SW_SHIFT
        if level == 3:
            pte |= _DESC_TYPE
        if leaf.prot & _R:
            pte |= _DESC_S2AP_R
        if leaf.prot & _W:
            pte |= _DESC_S2AP_W
        # XN[1:0]: 00 PX and UX, 01 UX only, 10 neither, 11 PX only.
        if not leaf.prot & _UX:
            pte |= _DESC_XN
        if bool(leaf.prot & _PX) != bool(leaf.prot & _UX):
            pte |= _DESC_XN0
        if leaf.af:
            pte |= _DESC_AF
        return pte

    def _translation(self, ipa: int, level: int, base: int, leaf: _Leaf) -> Translation:
        return Translation(leaf.pa + (ipa - base), level, self._spans[level],
                           _PROT_OBJ[leaf.prot], _MEMATTR_OBJ[leaf.memattr], leaf.af,
                           self._pte(level, leaf), leaf.sw)

    def _translate(self, ipa: int, access: int):
        """A Translation, or (kind, level) of the fault."""
        found, fault_level = self._walk(ipa)
        if found is None:
            return FaultKind.TRANSLATION, fault_level
        level, base, leaf = found
        if leaf.owner:  # an invalid entry, whatever software keeps in it
            return FaultKind.TRANSLATION, level
        if not leaf.af:
            return FaultKind.ACCESS_FLAG, level
        need = _NEEDS[access]
        if leaf.prot & need != need:
            return FaultKind.PERMISSION, level
        return self._translation(ipa, level, base, leaf)

    def translate(self, ipa, access=0) -> Translation:
        ipa = _u64(ipa, "ipa")
        access = _u32(access, "access")
        self._live()
        if access > _EXEC_EL0:
            raise InvalidArgumentError(f"access={access!r} must be an Access")
        result = self._translate(ipa, access)
        if isinstance(result, Translation):
            return result
        kind, level = result
        raise Stage2Fault(kind, level, _fsc(kind, level), ipa)

    def lookup(self, ipa) -> Optional[Translation]:
        ipa = _u64(ipa, "ipa")
        self._live()
        found, _ = self._walk(ipa)
        if found is None or found[2].owner:
            return None
        level, base, leaf = found
        return self._translation(ipa, level, base, leaf)

    def owner(self, ipa) -> int:
        ipa = _u64(ipa, "ipa")
        self._live()
        found, _ = self._walk(ipa)
        return 0 if found is None else found[2].owner

    def translate_many(self, ipas, access=0):
        values = _ipa_list(ipas)
        access = _u32(access, "access")
        self._live()
        if access > _EXEC_EL0:
            raise InvalidArgumentError(f"access={access!r} must be an Access")
        pa = np.zeros(len(values), dtype=np.uint64)
        fsc = np.full(len(values), FSC_NONE, dtype=np.uint8)
        for i, ipa in enumerate(values):
            result = self._translate(ipa, access)
            if isinstance(result, Translation):
                pa[i] = result.pa
            else:
                kind, level = result
                fsc[i] = _fsc(kind, level)
        return pa, fsc

    def diff(self, other) -> list:
        """As Stage2.diff: this VM's leaves ``other`` lacks exactly, then ``other``'s this VM
        lacks, each in IPA order (``other`` may be a model or an engine VM)."""
        mine, theirs = list(self.mappings()), list(other.mappings())
        a, b = set(mine), set(theirs)
        return [m for m in mine if m not in b] + [m for m in theirs if m not in a]

    def mappings(self, ipa=0, size=None) -> Iterator[Mapping]:
        """The valid leaves intersecting [ipa, ipa + size), whole, in IPA order (argument errors
        raise at the call, not on iteration)."""
        start = _u64(ipa, "ipa")
        self._live()
        if size is None:
            n = self._top - start if start < self._top else 0
        else:
            n = _u64(size, "size")
        self._check_range(start, n)
        if n == 0:
            return iter([])
        where = self._slice(start, start + n)
        return iter([obj for obj in self._objs[where] if obj is not None])

    def stats(self) -> dict:
        self._live()
        tables = {level: 0 for level in self._levels}
        tables[self._start] = self.config.root_tables
        for level, _ in self._tables:
            tables[level] += 1
        leaves = {level: 0 for level in self._levels}
        mapped = annotated = 0
        for (level, _), leaf in self._leaves.items():
            if leaf.owner:
                annotated += self._spans[level]
            else:
                leaves[level] += 1
                mapped += self._spans[level]
        return {
            "table_pages": self.table_pages,
            "table_pages_by_level": tables,
            "leaves_by_level": leaves,
            "mapped_bytes": mapped,
            "annotated_bytes": annotated,
            "pool_used": self.pool.used,
            "pool_free": self.pool.free,
        }

    def check(self) -> None:
        """The model's own invariants (raises InvariantError)."""
        self._live()
        if self._checked is not None and self._checked is self._order:
            return  # nothing changed since the last check
        prev_end = 0
        ok_levels = {lv for lv in self._levels if lv == 3 or lv >= self._min_block}
        attrs = set()
        for base, level, leaf in self._sorted():
            size = self._spans[level]
            pa = leaf.pa
            what = (
                "a level where no leaf may be" if level not in ok_levels else
                "not aligned to its span" if (base | pa) & (size - 1) else
                "overlaps the previous leaf" if base < prev_end else
                "beyond the IPA space" if base + size > self._top else
                "beyond the PA space" if pa + size > self._pa_top else
                None
            )
            if what:
                raise InvariantError(f"leaf at level {level}, IPA {base:#x}, PA {pa:#x}: {what}")
            prev_end = base + size
            if leaf.owner:
                if not 1 <= leaf.owner <= 255 or level != 3:
                    raise InvariantError(f"annotation at {base:#x}, level {level}, owner "
                                         f"{leaf.owner}")
                continue
            attrs.add((leaf.prot, leaf.memattr))
        for prot, memattr in attrs:
            if not self._prot_ok(prot) or not self._memattr_ok(memattr) or \
                    (prot & _X and self._exec_refused(memattr)):
                raise InvariantError(f"a leaf with prot {prot:#x}, memattr {memattr:#x}")
        self._checked = self._order

    # -- KVM's leaf operations -------------------------------------------------------------------
    def _wp_leaves(self, leaves, ipa: int, end: int, whole: bool) -> int:
        """Clear W of the valid leaves of ``leaves`` (a dict changed in place) intersecting
        [ipa, end): whole leaves, or exactly the range (a crossing writable leaf split)."""
        changed = 0
        for base, level, leaf in self._intersecting_in(leaves, ipa, end):
            leaf = leaves[(level, base)]  # the cached list may predate an in-place change
            if leaf.owner or not leaf.prot & _W:
                continue
            lend = self._end(level, base)
            if whole or (ipa <= base and lend <= end):
                leaves[(level, base)] = leaf._replace(prot=leaf.prot & ~_W)
                changed += lend - base
                continue
            del leaves[(level, base)]
            leaves.update(self._pieces(level, base, leaf, base, ipa))
            leaves.update(self._pieces(level, base, leaf, ipa, end, leaf.prot & ~_W))
            leaves.update(self._pieces(level, base, leaf, end, lend))
            changed += min(lend, end) - max(base, ipa)
        return changed

    def _intersecting_in(self, leaves, ipa: int, end: int):
        """(base, level, leaf) of the leaves of a dict that overlap [ipa, end), IPA order."""
        if leaves is self._leaves:
            return list(self._intersecting(ipa, end))
        return sorted((base, level, leaf) for (level, base), leaf in leaves.items()
                      if base < end and base + self._spans[level] > ipa)

    def _range_args(self, ipa, size):
        ipa = _u64(ipa, "ipa")
        size = _u64(size, "size")
        self._live()
        self._check_range(ipa, size)
        return ipa, size

    def wrprotect(self, ipa, size, *, whole=None) -> int:
        ipa, size = self._range_args(ipa, size)
        if size == 0:
            return 0
        leaves = dict(self._leaves)
        changed = self._wp_leaves(leaves, ipa, ipa + size, self._kvm if whole is None else whole)
        self._commit(leaves)
        return changed

    def mkyoung(self, ipa) -> bool:
        ipa = _u64(ipa, "ipa")
        self._live()
        found, _ = self._walk(ipa)
        if found is None or found[2].owner:
            return False
        level, base, leaf = found
        self._leaves[(level, base)] = leaf._replace(af=True)
        self._order = None
        return True

    def _young(self, ipa: int, size: int, clear: bool, bitmap=None) -> bool:
        young = False
        if size == 0:
            return young
        g = self._granule
        for base, level, leaf in self._intersecting(ipa, ipa + size):
            if leaf.owner or not leaf.af:
                continue
            young = True
            if bitmap is not None:
                lo = max(base, ipa)
                hi = min(base + self._spans[level], ipa + size)
                for page in range((lo - ipa) // g, (hi - ipa) // g):
                    bitmap[page >> 6] |= np.uint64(1 << (page & 63))
            if clear:
                self._leaves[(level, base)] = leaf._replace(af=False)
                self._order = None
        return young

    def test_clear_young(self, ipa, size, *, mkold=True) -> bool:
        ipa, size = self._range_args(ipa, size)
        return self._young(ipa, size, bool(mkold))

    def young(self, ipa, size, *, clear=False) -> np.ndarray:
        ipa, size = self._range_args(ipa, size)
        bitmap = np.zeros((size // self._granule + 63) // 64, dtype=np.uint64)
        self._young(ipa, size, bool(clear), bitmap)
        return bitmap

    def relax_perms(self, ipa, prot) -> bool:
        ipa = _u64(ipa, "ipa")
        prot = _u32(prot, "prot")
        self._live()
        if not _prot_valid(prot, self._xnx):
            raise InvalidArgumentError(f"prot={prot:#x}")
        found, _ = self._walk(ipa)
        if found is None or found[2].owner:
            return False
        level, base, leaf = found
        now = leaf.prot | prot
        if not _prot_valid(now, self._xnx) or (prot & _X and _is_device(leaf.memattr)):
            raise InvalidArgumentError(f"prot={prot:#x} on a leaf with {leaf.prot:#x}")
        self._leaves[(level, base)] = leaf._replace(prot=now)
        self._order = None
        return True

    def _split_leaves(self, leaves, ipa: int, end: int) -> None:
        """Every valid block of ``leaves`` (changed in place) intersecting [ipa, end) to
        pages: exactly its part in the range (the rest as the largest deeper pieces), or the
        whole block with KVM's semantics."""
        for base, level, leaf in self._intersecting_in(leaves, ipa, end):
            if leaf.owner or level == 3:
                continue
            lend = self._end(level, base)
            a, b = (base, lend) if self._kvm else (max(base, ipa), min(lend, end))
            del leaves[(level, base)]
            leaves.update(self._pieces(level, base, leaf, base, a))
            leaves.update({(3, x): leaf._replace(pa=leaf.pa + (x - base))
                           for x in range(a, b, self._granule)})
            leaves.update(self._pieces(level, base, leaf, b, lend))

    def split(self, ipa, size) -> int:
        ipa, size = self._range_args(ipa, size)
        if size == 0:
            return 0
        leaves = dict(self._leaves)
        self._split_leaves(leaves, ipa, ipa + size)
        before = set(self._tables)
        self._commit(leaves)
        return len(self._tables - before)

    def collapse(self, ipa, size) -> int:
        ipa, size = self._range_args(ipa, size)
        end = ipa + size
        leaves = dict(self._leaves)
        made = 0
        n = 1 << self._stride
        # Bottom-up: blocks made at a level can make a block one level up.
        for level in range(2, max(self._min_block, self._start) - 1, -1):
            span, step = self._spans[level], self._spans[level + 1]
            first = -(-ipa // span) * span
            bases = {b for (lv, b), _ in leaves.items() if lv == level + 1}
            for base in sorted({b & ~(span - 1) for b in bases}):
                if base < first or base + span > end:
                    continue
                head = leaves.get((level + 1, base))
                if head is None or head.owner or head.pa % span:
                    continue
                kids = [leaves.get((level + 1, base + i * step)) for i in range(n)]
                if any(k is None or k != head._replace(pa=head.pa + i * step)
                       for i, k in enumerate(kids)):
                    continue
                for i in range(n):
                    del leaves[(level + 1, base + i * step)]
                leaves[(level, base)] = head
                made += 1
        self._commit(leaves)
        return made

    # -- memslots and the abort handler ------------------------------------------------------------
    def _leaf_sizes(self):
        return [self._spans[lv] for lv in range(self._min_block, 4)]

    def add_memslot(self, ipa, pa, size, *, readonly=False, log_dirty=False,
                    backing=None) -> int:
        ipa = _u64(ipa, "ipa")
        pa = _u64(pa, "pa")
        size = _u64(size, "size")
        backing = self._granule if backing is None else _u64(backing, "backing")
        readonly, log_dirty = bool(readonly), bool(log_dirty)
        self._live()
        if (ipa | pa | size) % self._granule:
            raise AlignmentError("memslot ipa, pa and size must be granule multiples")
        if size == 0:
            raise InvalidArgumentError("memslot size must be > 0")
        if ipa + size > self._top or pa + size > self._pa_top:
            raise RangeError("memslot outside the IPA or PA space")
        if backing not in self._leaf_sizes() or (readonly and log_dirty) or \
                len(self._slots) >= 32764:
            raise InvalidArgumentError("memslot backing, readonly with log_dirty, or too many")
        if any(s.ipa < ipa + size and ipa < s.ipa + s.size for s in self._slots.values()):
            raise RangeError("memslot overlaps another")
        slot = 0
        while slot in self._slots:
            slot += 1
        self._slots[slot] = _Slot(ipa, pa, size, readonly, backing, None)
        if log_dirty:  # kvm_mmu_slot_apply_flags(): write-protect what the range maps
            self.set_log_dirty(slot, True)
        return slot

    def _slot(self, slot) -> Tuple[int, _Slot]:
        self._live()
        slot = _u32(slot, "slot")
        if slot not in self._slots:
            raise InvalidArgumentError(f"no memslot with id {slot}")
        return slot, self._slots[slot]

    def delete_memslot(self, slot) -> None:
        slot, s = self._slot(slot)
        self.unmap(s.ipa, s.size)
        del self._slots[slot]

    def memslots(self) -> List[Memslot]:
        self._live()
        return [Memslot(i, s.ipa, s.pa, s.size, s.readonly, s.dirty is not None, s.backing)
                for i, s in sorted(self._slots.items(), key=lambda kv: kv[1].ipa)]

    def set_log_dirty(self, slot, enable, *, eager_split=False) -> None:
        slot, s = self._slot(slot)
        if not enable:
            self._slots[slot] = s._replace(dirty=None)
            return
        if s.readonly:
            raise InvalidArgumentError(f"memslot {slot} is read-only")
        if s.dirty is not None:
            return
        leaves = dict(self._leaves)
        # KVM write-protects (whole leaves) and then splits; the pages are reserved first.
        self._wp_leaves(leaves, s.ipa, s.ipa + s.size, True)
        if eager_split:
            self._split_leaves(leaves, s.ipa, s.ipa + s.size)
        self._commit(leaves)
        self._slots[slot] = s._replace(dirty=set())

    def _logging(self, slot) -> Tuple[int, _Slot]:
        slot, s = self._slot(slot)
        if s.dirty is None:
            raise InvalidArgumentError(f"memslot {slot} does not log dirty pages")
        return slot, s

    def _bitmap(self, s: _Slot) -> np.ndarray:
        bitmap = np.zeros((s.size // self._granule + 63) // 64, dtype=np.uint64)
        for page in s.dirty:
            bitmap[page >> 6] |= np.uint64(1 << (page & 63))
        return bitmap

    def _reprotect(self, s: _Slot, words: Dict[int, int]) -> None:
        """kvm_mmu_write_protect_pt_masked(): per word, whole leaves from its lowest to its
        highest set page."""
        g = self._granule
        for w, bits in sorted(words.items()):
            lo, hi = (bits & -bits).bit_length() - 1, bits.bit_length() - 1
            self._wp_leaves(self._leaves, s.ipa + (w * 64 + lo) * g,
                            s.ipa + (w * 64 + hi + 1) * g, True)
        self._order = None
        for w, bits in words.items():
            for b in range(64):
                if bits >> b & 1:
                    s.dirty.discard(w * 64 + b)

    def get_dirty_log(self, slot, *, clear=True) -> np.ndarray:
        slot, s = self._logging(slot)
        bitmap = self._bitmap(s)
        if clear:
            words: Dict[int, int] = {}
            for page in s.dirty:
                words[page >> 6] = words.get(page >> 6, 0) | 1 << (page & 63)
            self._reprotect(s, words)
        return bitmap

    def clear_dirty_log(self, slot, first_page, mask) -> None:
        slot, s = self._logging(slot)
        first = _u64(first_page, "first_page")
        if isinstance(mask, (np.ndarray, list, tuple)):
            masks = _ipa_list(mask)
        else:
            masks = [_u64(mask, "mask")]
        if first & 63:
            raise InvalidArgumentError(f"first_page={first} must be a multiple of 64")
        pages = s.size // self._granule
        if first >= pages:
            raise RangeError("first_page beyond the slot")
        for i, m in enumerate(masks):
            if m and (first + i * 64 + m.bit_length() - 1) >= pages:
                raise RangeError("a mask bit beyond the slot")
        words = {}
        for i, m in enumerate(masks):
            w = first // 64 + i
            dirty = sum(1 << b for b in range(64) if w * 64 + b in s.dirty)
            if m & dirty:
                words[w] = m & dirty
        self._reprotect(s, words)

    def _slot_at(self, ipa: int) -> Optional[_Slot]:
        for s in self._slots.values():
            if s.ipa <= ipa < s.ipa + s.size:
                return s
        return None

    def _map_size(self, s: _Slot, ipa: int) -> int:
        if s.dirty is not None:
            return self._granule  # force_pte while logging
        for level in range(self._min_block, 3):
            size = self._spans[level]
            base = ipa & ~(size - 1)
            if size <= s.backing and (s.ipa - s.pa) % size == 0 and base >= s.ipa and \
                    base + size <= s.ipa + s.size:
                return size
        return self._granule

    def _handle(self, ipa: int, access: int, kind, level: int) -> FaultOutcome:
        """kvm_handle_guest_abort() / user_mem_abort() for a fault of ``ipa``."""
        if ipa >> self.config.ipa_bits:
            return FaultOutcome.ABORT
        found, _ = self._walk(ipa)
        if kind == FaultKind.TRANSLATION and found is not None and found[2].owner:
            return FaultOutcome.PERMISSION
        s = self._slot_at(ipa)
        fetch, write = access in (_EXEC, _EXEC_EL0), access == _WRITE
        if s is None or (write and s.readonly):
            return FaultOutcome.ABORT if s is None and fetch else FaultOutcome.MMIO
        if kind == FaultKind.ACCESS_FLAG:
            self.mkyoung(ipa)
            return FaultOutcome.YOUNG
        logging = s.dirty is not None
        size = self._map_size(s, ipa)
        base = ipa & ~(size - 1)
        prot = _R | (_W if not s.readonly and (not logging or write) else 0)
        prot |= _X if fetch else 0
        if kind == FaultKind.PERMISSION and size == self._spans[level]:
            try:
                self.relax_perms(ipa, prot)
            except InvalidArgumentError:
                if fetch:  # a Device leaf: KVM's -ENOEXEC
                    return FaultOutcome.ABORT
                raise
            outcome = FaultOutcome.RELAXED
        else:
            self.map(base, s.pa + (base - s.ipa), size, prot)
            outcome = FaultOutcome.MAPPED
        if logging and write:
            s.dirty.add((ipa - s.ipa) // self._granule)
            if kind == FaultKind.PERMISSION:
                outcome = FaultOutcome.DIRTY
        return outcome

    def fault(self, ipa, access) -> FaultOutcome:
        ipa = _u64(ipa, "ipa")
        access = _u32(access, "access")
        self._live()
        if access > _EXEC_EL0:
            raise InvalidArgumentError(f"access={access!r} must be an Access")
        result = self._translate(ipa, access)
        if isinstance(result, Translation):
            self._counts[FaultOutcome.HIT] += 1
            return FaultOutcome.HIT
        outcome = self._handle(ipa, access, *result)
        self._counts[outcome] += 1
        return outcome

    def access_many(self, ipas, access=0):
        values = _ipa_list(ipas)
        access = _u32(access, "access")
        self._live()
        if access > _EXEC_EL0:
            raise InvalidArgumentError(f"access={access!r} must be an Access")
        pa = np.zeros(len(values), dtype=np.uint64)
        outcome = np.zeros(len(values), dtype=np.uint8)
        exits = (FaultOutcome.MMIO, FaultOutcome.PERMISSION, FaultOutcome.ABORT)
        for i, ipa in enumerate(values):
            oc = FaultOutcome.HIT
            for runs in range(5):
                result = self._translate(ipa, access)
                if isinstance(result, Translation):
                    pa[i] = result.pa
                    break
                if runs == 4:
                    break
                try:
                    oc = self._handle(ipa, access, *result)
                except PoolExhaustedError as exc:
                    exc.index = i
                    raise
                self._counts[oc] += 1
                if oc in exits:
                    break
            if oc == FaultOutcome.HIT:
                self._counts[FaultOutcome.HIT] += 1
            outcome[i] = oc
        return pa, outcome

    def fault_counts(self, clear=False) -> dict:
        self._live()
        counts = {o: self._counts[o] for o in FaultOutcome}
        if clear:
            self._counts = [0] * len(FaultOutcome)
        return counts

    # -- the two-dimensional walk ------------------------------------------------------------------
    def _entries(self, level: int) -> int:
        """Entries of a table at ``level`` (at the start level: all the concatenated roots)."""
        if level > self._start:
            return 1 << self._stride
        return self._top >> (self._spans[level].bit_length() - 1)

    def _index(self, level: int, addr: int) -> int:
        """The index of ``addr`` in its table at ``level`` (in the concatenated root)."""
        return (addr >> (self._spans[level].bit_length() - 1)) % self._entries(level)

    def _walk_steps(self, stage: int, addr: int, tables) -> list:
        """The descriptor reads of a one-stage walk of ``addr``: one per level from the start
        level to the one where the walk stops (a leaf, or an invalid entry); none for an
        address beyond the input size. ``tables`` (level -> the address of the table the walk
        reads at that level, an allocation choice the model does not make) gives the
        descriptors' addresses and the table descriptors' values; None: both left None."""
        found, fault_level = self._walk(addr)
        if addr >> self.config.ipa_bits:
            return []
        last = found[0] if found is not None else fault_level
        steps = []
        for level in range(self._start, last + 1):
            desc_pa = desc = None
            if tables is not None:
                desc_pa = tables[level] + 8 * self._index(level, addr)
                if level < last:
                    desc = _oa_bits(tables[level + 1], self._granule, self._lpa2) | \
                        _DESC_VALID | _DESC_TYPE
                elif found is not None and not found[2].owner:
                    desc = self._pte(level, found[2])
                else:
                    desc = 0
            steps.append([stage, level, addr, desc_pa, desc])
        return steps

    def _nested(self, va: int, regime: "ReferenceRegime", access: int, s1_tables, s2_tables):
        """(Translation2 or the fault it raises, the reads made) of the nested walk. VA[55]
        picks the half; a half without tables, or a VA whose bits [63:va_bits] are not all
        VA[55] (no TBI), faults at level 0 without a read. ``s1_tables`` takes the whole VA;
        the walk of a TTBR1 table indexes the VA's low va_bits bits."""
        steps: list = []

        def s2_walk(ipa: int, s2_access: int, s1ptw: bool):
            tables = None if s2_tables is None else s2_tables(ipa)
            steps.extend(self._walk_steps(2, ipa, tables))
            result = self._translate(ipa, s2_access)
            if isinstance(result, Translation):
                return result
            kind, level = result
            raise Stage2Fault(kind, level, _fsc(kind, level), ipa, va=va, s1ptw=s1ptw)

        def s1_fault(kind, level):
            return Stage1Fault(kind, level, _fsc(kind, level), va)

        try:
            s1 = regime._half(va)
            if s1 is None or not s1.va_start <= va < s1.va_start + s1._top:
                raise s1_fault(FaultKind.TRANSLATION, 0)
            tables = s1_tables(va)
            off = va - s1.va_start  # what the walk indexes
            found = None
            for level in s1._levels:
                desc_ipa = tables[level] + 8 * s1._index(level, off)
                # The descriptor's IPA through stage 2: a read, needing R and the AF.
                t = s2_walk(desc_ipa, _READ, True)
                base = off & ~(s1._spans[level] - 1)
                leaf = s1._leaves.get((level, base))
                is_table = leaf is None and level < 3 and (level + 1, base) in s1._tables
                if leaf is not None:
                    desc = s1._pte(level, leaf)
                elif is_table:
                    desc = _oa_bits(tables[level + 1], s1._granule, s1._lpa2) | \
                        _DESC_VALID | _DESC_TYPE
                else:
                    desc = 0
                steps.append([1, level, desc_ipa, t.pa, desc])
                if leaf is not None:
                    found = (level, base, leaf)
                    break
                if not is_table:
                    raise s1_fault(FaultKind.TRANSLATION, level)
            level, base, leaf = found
            if not leaf.af:
                raise s1_fault(FaultKind.ACCESS_FLAG, level)
            if not _s1_allows(leaf.prot, access):
                raise s1_fault(FaultKind.PERMISSION, level)
            st1 = s1._translation(off, level, base, leaf)
            st2 = s2_walk(st1.pa, _S2_ACCESS[access], False)
        except (Stage1Fault, Stage2Fault) as fault:
            return fault, steps
        p1, p2 = leaf.prot, int(st2.prot)
        prot = (_R if p2 & _R else 0) | (_W if p1 & p2 & _W else 0) | (p1 & _USER)
        if _s1_allows(p1, _EXEC) and p2 & _PX:
            prot |= _PX
        if p1 & p2 & _UX:
            prot |= _UX
        memattr = _combine_memattr(_mair_memattr(regime.mair >> 8 * leaf.memattr & 0xFF),
                                   int(st2.memattr), self._fwb)
        return Translation2(st2.pa, st1.pa, st1, st2, Prot(prot), _memattr_obj(memattr),
                            tuple(NestedStep(*step) for step in steps)), steps

    def _nested_args(self, s1, access):
        """(access, the regime): ``s1`` a ReferenceRegime, or a lone ReferenceStage1 (the
        regime of its half alone)."""
        access = _u32(access, "access")
        regime = _regime(s1)
        for t in (regime.ttbr0, regime.ttbr1):
            if t is not None:
                t._live()
        self._live()
        if access > _WRITE_EL0:
            raise InvalidArgumentError(f"access={access!r} must be a GuestAccess")
        return access, regime

    def translate2(self, va, s1, access=0, *, s1_tables, s2_tables=None):
        """As :meth:`s2pt.Stage2.translate2`, through the stage-1 model ``s1`` (a
        :class:`ReferenceStage1`: its half of a regime alone; or a :class:`ReferenceRegime`).

        Where the tables are is the one thing the model does not decide:
        ``s1_tables(va)`` gives {level: IPA of the stage-1 table the walk of ``va`` reads at
        that level} (e.g. from ``Stage1.walk(va)``'s ``table_pa``), ``s2_tables(ipa)`` the
        same for stage 2 in PAs (``Stage2.walk(ipa)``). Everything else -- which levels are
        walked, which stage faults and how, every descriptor address through stage 2, the
        leaf descriptors, the PA, the combined permissions and memory type -- comes from the
        two models. Without ``s2_tables`` the stage-2 steps' ``desc_pa`` and ``desc`` are
        None (the stage-1 steps' still come from the model's stage 2)."""
        va = _u64(va, "va")
        access, regime = self._nested_args(s1, access)
        result, _ = self._nested(va, regime, access, s1_tables, s2_tables)
        if isinstance(result, Exception):
            raise result
        return result

    def translate2_many(self, vas, s1, access=0, *, s1_tables, s2_tables=None, ipa=None):
        """As :meth:`s2pt.Stage2.translate2_many`: ``(pa, fsc, stage, reads)`` arrays (and
        ``ipa`` filled in when given), from :meth:`translate2`'s model."""
        values = _ipa_list(vas)
        access, regime = self._nested_args(s1, access)
        n = len(values)
        pa = np.zeros(n, dtype=np.uint64)
        fsc = np.full(n, FSC_NONE, dtype=np.uint8)
        stage = np.zeros(n, dtype=np.uint8)
        reads = np.zeros(n, dtype=np.uint8)
        for i, va in enumerate(values):
            result, steps = self._nested(va, regime, access, s1_tables, s2_tables)
            reads[i] = len(steps)
            if isinstance(result, Stage2Fault):
                fsc[i] = result.fsc | (FSC_S1PTW if result.s1ptw else 0)
                stage[i] = 2
                out = result.ipa
            elif isinstance(result, Stage1Fault):
                fsc[i] = result.fsc
                stage[i] = 1
                out = 0
            else:
                pa[i] = result.pa
                out = result.ipa
            if ipa is not None:
                ipa[i] = out
        return pa, fsc, stage, reads

    # -- lifetime ------------------------------------------------------------------------------
    def destroy(self) -> None:
        if not self._destroyed:
            self._leaves = {}
            self._tables = set()
            self._destroyed = True

    def __enter__(self) -> "ReferenceStage2":
        self._live()
        return self

    def __exit__(self, *exc) -> bool:
        self.destroy()
        return False

    def __repr__(self) -> str:
        state = "destroyed" if self._destroyed else f"{self.table_pages} table pages"
        return (f"ReferenceStage2(ipa_bits={self.ipa_bits}, granule={self.granule}, "
                f"pa_bits={self.pa_bits}, vmid={self.vmid}, {state})")


# ---- stage 1 and the two-dimensional walk ------------------------------------------------------
#
# ReferenceStage1 is the stage-2 model with a stage-1 flavour: the same leaf dict, the same
# exact-range map / unmap / protect (largest leaf, splitting, identical remaps kept whole), the
# same table pages derived from the leaves (KVM's kvm_page_empty rule) -- inherited, not copied.
# What differs is stated here: the geometry (no concatenated roots; the level formula over the
# VA size), the permission format (EL1 read always; AP[2] read-only, AP[1] EL0 access, PXN,
# UXN), the descriptor layout and the access kinds (GuestAccess: EL0 data accesses).
#
# Stage-1 leaves keep the stage-2 _Leaf record: ``pa`` is the output IPA, ``prot`` the Prot bits
# R, W, PX, UX and USER, ``memattr`` the MAIR index (AttrIndx) and ``sw`` the nG bit (a map that
# differs only in nG is not an identical remap; the engine reports sw=0 for stage-1 leaves).

_USER = int(Prot.USER)
_S1_PROT_BITS = _R | _W | _X | _USER
_READ_EL0, _WRITE_EL0 = 4, 5
_TCR_EPD0, _TCR_EPD1 = 1 << 7, 1 << 23  # TCR_EL1: no TTBR0 / TTBR1 walks
# Stage-1 leaf descriptor fields (Arm ARM D8, VMSAv8-64 stage 1, EL1&0).
_S1_ATTRINDX_SHIFT = 2
_S1_AP_EL0 = 1 << 6  # AP[1]: EL0 access
_S1_AP_RO = 1 << 7  # AP[2]: read-only
_S1_NG = 1 << 11
_S1_PXN = 1 << 53
_S1_UXN = 1 << 54
# Stage 2 checks an EL0 data access as the read or write it is (S2AP has no EL0 bit).
_S2_ACCESS = {0: _READ, 1: _WRITE, 2: _EXEC, 3: _EXEC_EL0, _READ_EL0: _READ, _WRITE_EL0: _WRITE}


def _oa_bits(addr: int, granule: int, lpa2: bool) -> int:
    """An output (or next-table) address in a descriptor: in place below bit 48 (50 with LPA2);
    LPA2 puts OA[51:50] in bits 9:8, the 64K granule OA[51:48] in bits 15:12."""
    if lpa2:
        return (addr & ((1 << 50) - 1)) | ((addr >> 50) & 3) << 8
    if granule == 1 << 16:
        return (addr & ((1 << 48) - 1)) | ((addr >> 48) & 0xF) << 12
    return addr


def _s1_allows(prot: int, access: int) -> bool:
    """The EL1&0 stage-1 permission rules (PAN and WXN off): EL1 may always read and may write
    unless read-only; EL0 needs AP[1] (USER) for data, and W too for writes; EL1 may execute
    with PX unless EL0 may write the page (the implicit PXN); EL0 execution needs UX only."""
    if access == _READ:
        return True
    if access == _WRITE:
        return bool(prot & _W)
    if access == _EXEC:
        return bool(prot & _PX) and not (prot & _USER and prot & _W)
    if access == _EXEC_EL0:
        return bool(prot & _UX)
    if access == _READ_EL0:
        return bool(prot & _USER)
    return bool(prot & _USER and prot & _W)  # WRITE_EL0


def _mair_memattr(byte: int) -> int:
    """A MAIR_EL1 attribute as a MemAttr name: Device 0b0000dd00 is ``dd``; Normal
    (outer << 4 | inner) is ``outer' << 2 | inner'`` with each half 0b01 NC, 0b10 write-through
    or 0b11 write-back (transient or not)."""
    hi, lo = byte >> 4, byte & 0xF
    if byte == 0xF0:  # FEAT_MTE2 Tagged Normal: write-back, outer and inner
        return 0b1111
    if hi == 0:
        if lo & 3:
            raise InvalidArgumentError(f"MAIR attribute {byte:#04x} is UNPREDICTABLE")
        return lo >> 2

    def half(n: int) -> int:
        if n == 0b0100:
            return 0b01
        if n & 0b1000:
            return 0b10 if not n & 0b0100 else 0b11
        if n & 0b0011 == 0:
            raise InvalidArgumentError(f"MAIR attribute {byte:#04x} is UNPREDICTABLE")
        return 0b10 if not n & 0b0100 else 0b11  # transient write-through / write-back

    if lo == 0:
        raise InvalidArgumentError(f"MAIR attribute {byte:#04x} is UNPREDICTABLE")
    return half(hi) << 2 | half(lo)


def _combine_memattr(s1: int, s2: int, fwb: bool) -> int:
    """The memory type of a nested translation (both MemAttr names; ``s2`` may be STAGE1 with
    FWB). Without FWB: Device at either stage is Device, the more restrictive one (the smaller
    dd); Normal takes the weaker cacheability of each of outer and inner. With FWB: stage 2's
    Device types combine the same way; NORMAL forces write-back; NORMAL_NC is NC unless stage 1
    says Device; STAGE1 leaves stage 1's type."""
    if fwb:
        if s2 == _STAGE1:
            return s1
        if s2 == int(MemAttr.NORMAL):
            return s2
        if s2 == int(MemAttr.NORMAL_NC):
            return s1 if _is_device(s1) else s2
    if _is_device(s1) or _is_device(s2):
        return min(x for x in (s1, s2) if _is_device(x))
    return min(s1 >> 2, s2 >> 2) << 2 | min(s1 & 3, s2 & 3)


class _Stage1Geometry(NamedTuple):
    """What the inherited stage-2 logic reads from ``config``, for stage-1 tables."""

    ipa_bits: int  # the input size: the VA size
    pa_bits: int  # the output size: the IPS
    granule: int
    levels: int
    start_level: int
    min_block_level: int
    root_entries: int
    lpa2: bool
    root_tables: int = 1  # stage 1 never concatenates
    fwb: bool = False
    xnx: bool = True  # PXN and UXN are separate bits at stage 1
    vmid: int = 0
    vtcr: int = 0


class _Stage2Only:
    """A stage-2 operation the stage-1 engine does not have: hidden on ReferenceStage1 (an
    AttributeError, so that ``hasattr`` is False as for :class:`s2pt.Stage1`)."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, objtype=None):
        raise AttributeError(f"'ReferenceStage1' object has no attribute '{self.name}' "
                             f"(a stage-2 operation)")


class ReferenceStage1(ReferenceStage2):
    """The semantics of :class:`s2pt.Stage1` (VA -> IPA), from a dict of leaves.

    Geometry from the architecture's level formula: ``levels = ceil((va_bits - g) / (g - 3))``
    for a ``2**g`` granule, one root table of ``2**(va_bits - shift(start_level))`` entries.
    Blocks from level 1 with 4K (level 0 with LPA2) and from level 2 with 16K and 64K (level 1
    with LPA2 at 16K, or a 52-bit IPS at 64K). ``pool`` / ``pool_pages`` account for the table
    pages as in :class:`ReferenceStage2`; ``root_ipa`` (optional) is where the root page is, for
    ``ttbr``; the model never needs to know where any table is. ``ttbr=1``: TTBR1 tables
    (the high VAs; see the module docstring)."""

    def __init__(self, va_bits=48, granule=4096, ips_bits=48, asid=0, pool_pages=None, *,
                 pool: Optional[ReferencePool] = None, lpa2=False, mair=0x00_44_04_FF,
                 root_ipa=None, ttbr=0):
        if type(ttbr) is not int or ttbr not in (0, 1):
            raise InvalidArgumentError(f"ttbr={ttbr!r} must be 0 (TTBR0_EL1) or 1 (TTBR1_EL1)")
        va_bits, granule = _u32(va_bits, "va_bits"), _u32(granule, "granule")
        ips_bits, asid = _u32(ips_bits, "ips_bits"), _u32(asid, "asid")
        self.mair = _u64(mair, "mair")
        lpa2 = bool(lpa2)
        if granule not in (1 << 12, 1 << 14, 1 << 16) or asid >= 1 << 16 or \
                (lpa2 and granule == 1 << 16):
            raise ConfigError(f"granule={granule}, asid={asid}, lpa2={lpa2}")
        wide = lpa2 or granule == 1 << 16  # 52-bit VAs and IPS: FEAT_LPA2 or 64K (FEAT_LVA/LPA)
        if not 25 <= va_bits <= (52 if wide else 48) or \
                ips_bits not in (32, 36, 40, 42, 44, 48) + ((52,) if wide else ()):
            raise ConfigError(f"va_bits={va_bits}, ips_bits={ips_bits}")
        g = granule.bit_length() - 1
        stride = g - 3
        levels = -(-(va_bits - g) // stride)
        start = 4 - levels
        if granule == 1 << 12:
            min_block = 0 if lpa2 else 1
        else:
            min_block = 1 if (lpa2 or ips_bits == 52) else 2
        root_entries = 1 << (va_bits - (g + stride * (3 - start)))
        self.config = _Stage1Geometry(va_bits, ips_bits, granule, levels, start, min_block,
                                      root_entries, lpa2)
        self.asid = asid
        self.root_ipa = root_ipa
        self._ttbr1 = ttbr
        self._va_start = _U64_LIMIT - (1 << va_bits) if ttbr else 0
        self._kvm = False
        self._slots = {}
        self._counts = [0] * len(FaultOutcome)
        self._lpa2, self._fwb, self._xnx = lpa2, False, True
        if pool is not None and pool_pages is not None:
            raise InvalidArgumentError("give pool_pages or pool, not both")
        if pool is None:
            pool = ReferencePool(pool_pages)
        self._granule = granule
        self._stride = stride
        self._start = start
        self._min_block = min_block
        self._levels = range(start, 4)
        self._spans = _level_spans(stride)
        self._top = 1 << va_bits
        self._pa_top = 1 << ips_bits
        self._leaves = {}
        self._tables = set()
        self._order = None
        self._bases = []
        self._objs = []
        self._checked = None
        self._destroyed = False
        if pool.free is not None and pool.free < 1:
            raise PoolExhaustedError(f"a root page from a pool with {pool.free} free")
        self.pool = pool
        pool._members.append(self)

    # Stage-2 operations (KVM's leaf operations, memslots, the abort handler, owner annotations,
    # the nested walk itself) have no stage-1 counterpart in the engine.
    for _name in ("access_many", "add_memslot", "clear_dirty_log", "collapse", "delete_memslot",
                  "fault", "fault_counts", "get_dirty_log", "memslots", "mkyoung", "owner",
                  "relax_perms", "set_access_flag", "set_log_dirty", "set_owner", "split",
                  "test_clear_young", "translate2", "translate2_many", "translate_many",
                  "wrprotect", "young", "semantics", "vmid", "vtcr"):
        locals()[_name] = _Stage2Only()
        locals()[_name].__set_name__(None, _name)
    del _name

    # -- geometry ----------------------------------------------------------------------------
    @property
    def ttbr_index(self) -> int:
        return self._ttbr1  # 0: TTBR0_EL1, the low VAs; 1: TTBR1_EL1, the high VAs

    @property
    def va_start(self) -> int:
        """The lowest VA translated: 0, or 2**64 - 2**va_bits for TTBR1 tables."""
        return self._va_start

    def _in(self, va) -> int:
        """The offset the inherited logic works on: the VA itself for TTBR0 tables, its low
        va_bits bits for TTBR1 tables (a VA below the TTBR1 range is a RangeError)."""
        va = _u64(va, "va")
        if va < self._va_start:
            raise RangeError(f"va={va:#x} is below the TTBR1 range, which starts at "
                             f"{self._va_start:#x}")
        return va - self._va_start

    @property
    def va_bits(self) -> int:
        return self.config.ipa_bits

    @property
    def ips_bits(self) -> int:
        return self.config.pa_bits

    @property
    def root_entries(self) -> int:
        return self.config.root_entries

    @property
    def min_block_level(self) -> int:
        return self._min_block

    @property
    def lpa2(self) -> bool:
        return self._lpa2

    @property
    def t0sz(self) -> int:
        return 64 - self.va_bits

    @property
    def ttbr(self) -> Optional[int]:
        return None if self.root_ipa is None else self.root_ipa | self.asid << 48

    @property
    def tcr(self) -> int:
        """TCR_EL1 for these tables alone, from the Arm ARM's field layout: TTBR0 tables
        T0SZ 5:0, IRGN0 9:8 and ORGN0 11:10 write-back (0b01), SH0 13:12 inner shareable,
        TG0 15:14 (0b00 4K, 0b10 16K, 0b01 64K), EPD1 bit 23 (no TTBR1 walks); TTBR1 tables
        T1SZ 21:16, IRGN1 25:24, ORGN1 27:26, SH1 29:28, TG1 31:30 (0b10 4K, 0b01 16K,
        0b11 64K), EPD0 bit 7. Both: IPS 34:32, AS bit 36 (16-bit ASIDs), DS bit 59 (LPA2)."""
        tsz = 64 - self.va_bits
        if self._ttbr1:
            tg = {1 << 12: 0b10, 1 << 14: 0b01, 1 << 16: 0b11}[self._granule]
            half = tsz << 16 | 0b01 << 24 | 0b01 << 26 | 0b11 << 28 | tg << 30 | _TCR_EPD0
        else:
            tg = {1 << 12: 0b00, 1 << 14: 0b10, 1 << 16: 0b01}[self._granule]
            half = tsz | 0b01 << 8 | 0b01 << 10 | 0b11 << 12 | tg << 14 | _TCR_EPD1
        ips = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5, 52: 6}[self.ips_bits]
        return half | ips << 32 | (1 << 36 if self.asid > 255 else 0) | \
            (1 << 59 if self._lpa2 else 0)

    # -- the stage-1 format ----------------------------------------------------------------------
    def _prot_ok(self, prot: int) -> bool:
        return bool(prot & _R) and not prot & ~_S1_PROT_BITS

    def _memattr_ok(self, memattr: int) -> bool:
        return 0 <= memattr <= 7

    def _exec_refused(self, memattr: int) -> bool:
        return False  # AttrIndx only names a MAIR entry: no Device check at map time

    def _mapping(self, base: int, level: int, leaf: _Leaf) -> Mapping:
        return Mapping(base + self._va_start, leaf.pa, self._spans[level], level,
                       Prot(leaf.prot), leaf.memattr,
                       leaf.af, 0)

    def _pte(self, level: int, leaf: _Leaf) -> int:
        """The leaf descriptor, from the Arm ARM's stage-1 field layout."""
        pte = _oa_bits(leaf.pa, self._granule, self._lpa2) | _DESC_VALID
        if not self._lpa2:
            pte |= _DESC_SH_INNER
        pte |= leaf.memattr << _S1_ATTRINDX_SHIFT
        if level == 3:
            pte |= _DESC_TYPE
        if leaf.prot & _USER:
            pte |= _S1_AP_EL0
        if not leaf.prot & _W:
            pte |= _S1_AP_RO
        if leaf.af:
            pte |= _DESC_AF
        if leaf.sw:
            pte |= _S1_NG
        if not leaf.prot & _PX:
            pte |= _S1_PXN
        if not leaf.prot & _UX:
            pte |= _S1_UXN
        return pte

    def _translation(self, va: int, level: int, base: int, leaf: _Leaf) -> Translation:
        return Translation(leaf.pa + (va - base), level, self._spans[level], Prot(leaf.prot),
                           leaf.memattr, leaf.af, self._pte(level, leaf), 0)

    def _translate(self, va: int, access: int):
        found, fault_level = self._walk(va)
        if found is None:
            return FaultKind.TRANSLATION, fault_level
        level, base, leaf = found
        if not leaf.af:
            return FaultKind.ACCESS_FLAG, level
        if not _s1_allows(leaf.prot, access):
            return FaultKind.PERMISSION, level
        return self._translation(va, level, base, leaf)

    # -- the engine's Stage1 API ----------------------------------------------------------------
    def map(self, va, ipa, size, prot=Prot.RW, attr=0, *, blocks=True, user=False,
            global_=True, af=True):
        va = self._in(va)
        ipa = _u64(ipa, "ipa")
        size = _u64(size, "size")
        prot = _u32(prot, "prot")
        attr = _u32(attr, "attr")
        blocks, user, global_, af = bool(blocks), bool(user), bool(global_), bool(af)
        self._live()
        if not self._prot_ok(prot) or not self._memattr_ok(attr):
            raise InvalidArgumentError(f"prot={prot:#x}, attr={attr}")
        if (va | ipa | size) % self._granule:
            raise AlignmentError(f"va={va:#x}, size={size:#x}, ipa={ipa:#x}")
        if va + size > self._top or ipa + size > self._pa_top:
            raise RangeError(f"[{va:#x}, +{size:#x}) -> {ipa:#x} is outside the VA or IPA space")
        if size == 0:
            return
        prot |= _USER if user else 0
        self._place(va, va + size, _Leaf(ipa, prot, attr, af, 0 if global_ else 1), blocks)

    def unmap(self, va, size) -> int:
        return super().unmap(self._in(va), size)

    def protect(self, va, size, prot, *, user=False):
        va = self._in(va)
        size = _u64(size, "size")
        prot = _u32(prot, "prot")
        if not self._prot_ok(prot):
            self._live()
            raise InvalidArgumentError(f"prot={prot:#x}")
        return super().protect(va, size, prot | (_USER if user else 0))

    def translate(self, va, access=0) -> Translation:
        va = self._in(va)
        access = _u32(access, "access")
        self._live()
        if access > _WRITE_EL0:
            raise InvalidArgumentError(f"access={access!r} must be a GuestAccess")
        result = self._translate(va, access)
        if isinstance(result, Translation):
            return result
        kind, level = result
        raise Stage1Fault(kind, level, _fsc(kind, level), va + self._va_start)

    def lookup(self, va) -> Optional[Translation]:
        return super().lookup(self._in(va))

    def mappings(self, va=None, size=None) -> List[Mapping]:
        """The leaves intersecting [va, va + size) (whole VAs; ``va=None``: va_start)."""
        return list(super().mappings(self._in(self._va_start if va is None else va), size))

    def __repr__(self) -> str:
        state = "destroyed" if self._destroyed else f"{self.table_pages} table pages"
        half = ", ttbr=1" if self._ttbr1 else ""
        return (f"ReferenceStage1(va_bits={self.va_bits}, granule={self.granule}, "
                f"ips_bits={self.ips_bits}, asid={self.asid}{half}, {state})")


class ReferenceRegime:
    """The twin of :class:`s2pt.Regime`: TTBR0 tables (VA[55] = 0) and TTBR1 tables
    (VA[55] = 1), either None (EPDx = 1), one MAIR_EL1 (``mair=None``: the tables', which must
    agree). Both tables must share the IPS, the LPA2 setting and the ASID (one TCR_EL1)."""

    def __init__(self, ttbr0=None, ttbr1=None, *, mair=None):
        for name, t, half in (("ttbr0", ttbr0, 0), ("ttbr1", ttbr1, 1)):
            if t is None:
                continue
            if not isinstance(t, ReferenceStage1):
                raise ArgumentTypeError(f"{name} must be a ReferenceStage1 or None, "
                                        f"not {type(t).__name__}")
            if t.ttbr_index != half:
                raise InvalidArgumentError(f"{name} must be tables made with ttbr={half}")
        if ttbr0 is None and ttbr1 is None:
            raise InvalidArgumentError("a regime needs TTBR0 or TTBR1 tables")
        if ttbr0 is not None and ttbr1 is not None:
            mine = (ttbr0.ips_bits, ttbr0.lpa2, ttbr0.asid)
            theirs = (ttbr1.ips_bits, ttbr1.lpa2, ttbr1.asid)
            if mine != theirs:
                raise InvalidArgumentError(f"ttbr0 and ttbr1 must share (ips_bits, lpa2, asid): "
                                           f"{mine} != {theirs}")
        if mair is None:
            mairs = {t.mair for t in (ttbr0, ttbr1) if t is not None}
            if len(mairs) != 1:
                raise InvalidArgumentError("the tables' MAIR values differ: pass mair=")
            mair = mairs.pop()
        self.mair = _u64(mair, "mair")
        self.ttbr0, self.ttbr1 = ttbr0, ttbr1

    @property
    def tcr(self) -> int:
        """TCR_EL1 for both halves: each table's own fields, EPDx set for a missing half; A1
        (bit 22, the ASID from TTBR1_EL1) only for a TTBR1-only regime."""
        if self.ttbr1 is None:
            return self.ttbr0.tcr
        if self.ttbr0 is None:
            return self.ttbr1.tcr | 1 << 22
        return (self.ttbr0.tcr & ~_TCR_EPD1) | (self.ttbr1.tcr & ~_TCR_EPD0)

    def registers(self) -> dict:
        """TCR_EL1, TTBR0_EL1, TTBR1_EL1 (0 for a missing half) and MAIR_EL1."""
        return {"TCR_EL1": self.tcr,
                "TTBR0_EL1": 0 if self.ttbr0 is None else self.ttbr0.ttbr,
                "TTBR1_EL1": 0 if self.ttbr1 is None else self.ttbr1.ttbr,
                "MAIR_EL1": self.mair}

    def _half(self, va: int) -> Optional[ReferenceStage1]:
        """The tables VA[55] selects (None: EPDx, that half has no tables)."""
        return self.ttbr1 if va >> 55 & 1 else self.ttbr0

    def __repr__(self) -> str:
        return f"ReferenceRegime(ttbr0={self.ttbr0!r}, ttbr1={self.ttbr1!r}, mair={self.mair:#x})"


def _regime(s1) -> ReferenceRegime:
    """A ReferenceRegime, or a lone ReferenceStage1 as the half of one (the other half None)."""
    if isinstance(s1, ReferenceRegime):
        return s1
    if isinstance(s1, ReferenceStage1):
        r = ReferenceRegime.__new__(ReferenceRegime)
        r.ttbr0, r.ttbr1 = (None, s1) if s1.ttbr_index else (s1, None)
        r.mair = s1.mair
        return r
    raise TypeError(f"s1 must be a ReferenceStage1 or a ReferenceRegime, "
                    f"not {type(s1).__name__}")

