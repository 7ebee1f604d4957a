# The Cython layer: converts arguments, calls the C core, turns its codes into exceptions.
# No page-table logic lives here.
cimport cython
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.long cimport PyLong_Check

cdef extern from "Python.h":
    # Declared without Cython's exception check: the caller tests for -1 itself and raises
    # its own error class.
    unsigned long long PyLong_AsUnsignedLongLong(object value) noexcept
    unsigned long PyLong_AsUnsignedLong(object value) noexcept
from cpython.pythread cimport (
    WAIT_LOCK,
    PyThread_acquire_lock,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_release_lock,
)
from cpython.buffer cimport PyBUF_WRITABLE, PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from s2pt._cs2pt cimport *

from operator import index as _index

import numpy as np

from ._types import (
    FSC_NONE,
    Access,
    FaultKind,
    FaultOutcome,
    GuestAccess,
    Mapping,
    MemAttr,
    Memslot,
    NestedStep,
    Prot,
    Translation2,
    WalkStep,
)
from .errors import (
    AlignmentError,
    ArgumentTypeError,
    ArrayError,
    ConfigError,
    DestroyedError,
    InvalidArgumentError,
    InvariantError,
    RangeError,
    S2ptError,
    Stage1Fault,
    Stage2Fault,
    StateFormatError,
    error_class,
)

#: Default base PA of a pool (1 GiB: clear of the low device window, aligned for any root).
DEFAULT_POOL_BASE_PA = 0x4000_0000
#: Default pool size of a VM that gets its own pool; reserved, committed only as it is used.
DEFAULT_POOL_BYTES = 1 << 30
#: MAIR_EL1 of a Stage1 made without one: Attr0 Normal write-back (0xFF), Attr1 Device-nGnRE
#: (0x04), Attr2 Normal non-cacheable (0x44), Attr3 Device-nGnRnE (0x00). (Linux orders its
#: indexes otherwise; pass its MAIR value to follow it.)
DEFAULT_MAIR = 0x00_44_04_FF
#: Default IPA and size of the guest RAM a Stage1 made without a pool keeps its tables in.
DEFAULT_S1_POOL_IPA = 0x4000_0000
DEFAULT_S1_POOL_BYTES = 16 << 20
# map / unmap of at least this many pages run without the GIL (below it, letting the GIL go
# and taking it back would cost more than the call).
cdef enum:
    _NOGIL_PAGES = 64

TLBI_IPA = S2PT_TLBI_IPA
TLBI_RANGE = S2PT_TLBI_RANGE
TLBI_VMID = S2PT_TLBI_VMID
TLBI_LEVEL_UNKNOWN = S2PT_TLBI_LEVEL_UNKNOWN
#: Why an event was recorded (``reason`` field of :meth:`Stage2.tlbi_log`).
TLBI_UNMAP = S2PT_TLBI_UNMAP
TLBI_TABLE = S2PT_TLBI_TABLE
TLBI_REPLACE = S2PT_TLBI_REPLACE
TLBI_SPLIT = S2PT_TLBI_SPLIT
TLBI_COALESCE = S2PT_TLBI_COALESCE
TLBI_PERM = S2PT_TLBI_PERM
TLBI_AF = S2PT_TLBI_AF
TLBI_DESTROY = S2PT_TLBI_DESTROY
TLBI_OVERFLOW = S2PT_TLBI_OVERFLOW
TLBI_WRPROTECT = S2PT_TLBI_WRPROTECT
#: The C core's struct s2pt_tlbi, field for field (the log is copied out in one piece).
TLBI_DTYPE = np.dtype([("ipa", np.uint64), ("size", np.uint64), ("kind", np.int32),
                       ("level", np.int32), ("reason", np.uint32), ("bbm", np.uint32)])
if TLBI_DTYPE.itemsize != sizeof(s2pt_tlbi):
    raise ImportError("TLBI_DTYPE does not match struct s2pt_tlbi of the C core")

# Decoding tables, so a result costs an index instead of an enum lookup.
_PROT = tuple(Prot(i) for i in range(32))
_OUTCOME = tuple(FaultOutcome)
_MEMATTR = tuple(MemAttr(i) if i in MemAttr._value2member_map_ else i
                 for i in range(S2PT_MEMATTR_RESERVED + 16))
_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF

cdef extern from *:
    int __builtin_ctzll(unsigned long long x) nogil

cdef extern from *:
    """
    /* An exact, non-negative int of at most two 30-bit digits (every IPA and PA below 2^60)
     * read straight from its digits: PyLong_AsUnsignedLong's generic loop, overflow checks
     * and call cost more than the rest of a per-call map's Python side. 0 when the value
     * needs the general conversion (the caller then takes it). */
    static inline int s2pt_small_u64(PyObject *v, unsigned long long *out)
    {
    #if PY_VERSION_HEX < 0x030C0000 && PYLONG_BITS_IN_DIGIT == 30 && !defined(Py_LIMITED_API)
        if (PyLong_CheckExact(v)) {
            const digit *d = ((PyLongObject *)v)->ob_digit;

            switch (Py_SIZE(v)) {
            case 0: *out = 0; return 1;
            case 1: *out = d[0]; return 1;
            case 2: *out = (unsigned long long)d[0] | (unsigned long long)d[1] << 30; return 1;
            }
        }
    #elif PY_VERSION_HEX >= 0x030C0000 && !defined(Py_LIMITED_API)
        /* 3.12+: compact ints hold one digit; larger values take the general path. */
        if (PyLong_CheckExact(v) && PyUnstable_Long_IsCompact((PyLongObject *)v)) {
            Py_ssize_t c = PyUnstable_Long_CompactValue((PyLongObject *)v);

            if (c >= 0) { *out = (unsigned long long)c; return 1; }
        }
    #endif
        return 0;
    }
    """
    bint s2pt_small_u64(object v, unsigned long long *out) noexcept

# Leaf sizes are powers of two: one shared int object each instead of a new one per result.
cdef tuple _POW2 = tuple(1 << i for i in range(64))
cdef tuple _PROTS = _PROT
# Stage-1 records hold AttrIndx, a plain MAIR index: the indexes after _MEMATTR's give it
# as an int (not as the stage-2 MemAttr of the same number).
cdef tuple _MEMATTRS = _MEMATTR + tuple(range(8))
cdef uint64_t _TCR_A1 = 1 << 22         # TCR_EL1.A1: the ASID comes from TTBR1_EL1
cdef uint32_t _ATTRINDX_BASE = len(_MEMATTR)
_TRANSLATION_FIELDS = ("pa", "level", "size", "prot", "memattr", "af", "pte", "sw")


@cython.freelist(16)
@cython.final
cdef class Translation:
    """A successful stage-2 translation: a read-only record of the leaf that translated.

    It behaves as the named tuple ``(pa, level, size, prot, memattr, af, pte, sw)``: unpacking,
    indexing, ``len``, ``_fields``, ``_asdict()``, ``_replace()``, hashing, and comparison
    with another ``Translation`` or a plain tuple of the same values all work; only
    ``isinstance(t, tuple)`` is false. It holds the C values and builds an attribute's object
    when it is read, from a free list: a per-call ``translate()`` costs no result tuple and
    no ints it does not use.
    """

    _fields = _TRANSLATION_FIELDS
    __match_args__ = _TRANSLATION_FIELDS

    def __init__(self, pa, level, size, prot, memattr, af=True, pte=0, sw=0):
        cdef uint64_t p = _u64(prot, "prot"), m = _u64(memattr, "memattr")
        if p >= <uint64_t>len(_PROTS):
            raise InvalidArgumentError(f"prot={prot!r} is not a Prot value")
        if m >= <uint64_t>len(_MEMATTR):
            raise InvalidArgumentError(f"memattr={memattr!r} is not a MemAttr value")
        cdef uint64_t n = _u64(size, "size")
        if n < 4096 or n & (n - 1):
            raise InvalidArgumentError(f"size={size!r} is not a leaf size (a power of two >= 4096)")
        self.pa = _u64(pa, "pa")
        self.level = <int>_u32(level, "level")
        if self.level > 3:
            raise InvalidArgumentError(f"level={level!r} is not a leaf level (0..3)")
        self._size = n
        self._prot = <uint32_t>p
        self._memattr = <uint32_t>m
        self.af = bool(af)
        self.pte = _u64(pte, "pte")
        self.sw = _u32(sw, "sw")
        if self.sw > 15:
            raise InvalidArgumentError(f"sw={sw!r} does not fit the 4 software bits")

    @property
    def size(self):
        """Bytes mapped by the leaf (page or block size)."""
        return _POW2[__builtin_ctzll(self._size)]

    @property
    def prot(self):
        """Permissions decoded from the leaf (a Prot)."""
        return _PROTS[self._prot]

    @property
    def memattr(self):
        """The memory type the leaf's MemAttr field stands for (per FWB)."""
        return _MEMATTRS[self._memattr]

    cdef tuple _tuple(self):
        return (self.pa, self.level, self.size, _PROTS[self._prot], _MEMATTRS[self._memattr],
                self.af, self.pte, self.sw)

    def __len__(self):
        return 8

    def __iter__(self):
        return iter(self._tuple())

    def __getitem__(self, index):
        return self._tuple()[index]

    def __hash__(self):
        return hash(self._tuple())

    def __eq__(self, other):
        cdef Translation o
        if type(other) is Translation:
            o = <Translation>other
            return (self.pa == o.pa and self.level == o.level and self._size == o._size
                    and self._prot == o._prot
                    and _MEMATTRS[self._memattr] == _MEMATTRS[o._memattr]
                    and self.af == o.af and self.pte == o.pte and self.sw == o.sw)
        if isinstance(other, tuple):
            return self._tuple() == other
        return NotImplemented

    def __lt__(self, other):
        return self._tuple() < _as_tuple(other)

    def __le__(self, other):
        return self._tuple() <= _as_tuple(other)

    def __gt__(self, other):
        return self._tuple() > _as_tuple(other)

    def __ge__(self, other):
        return self._tuple() >= _as_tuple(other)

    def _asdict(self):
        """The fields as a dict, as a named tuple's ``_asdict()``."""
        return dict(zip(_TRANSLATION_FIELDS, self._tuple()))

    def _replace(self, **changes):
        """A copy with the named fields changed, as a named tuple's ``_replace()``."""
        fields = self._asdict()
        for name in changes:
            if name not in fields:
                raise ValueError(f"Got unexpected field names: {[name]!r}")
        fields.update(changes)
        return Translation(**fields)

    def __reduce__(self):
        if self._memattr >= _ATTRINDX_BASE:   # a stage-1 leaf: memattr is AttrIndx
            return (_s1_translation, self._tuple())
        return (Translation, self._tuple())

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __repr__(self):
        return (f"Translation(pa={self.pa:#x}, level={self.level}, size={self._size:#x}, "
                f"prot={self.prot!r}, memattr={self.memattr!r}, af={self.af}, "
                f"pte={self.pte:#x}, sw={self.sw})")


cdef tuple _as_tuple(object other):
    if type(other) is Translation:
        return (<Translation>other)._tuple()
    if isinstance(other, tuple):
        return other
    raise TypeError(f"a Translation compares with a Translation or a tuple, not "
                    f"{type(other).__name__}")


cdef Translation _translation(const s2pt_translation *t):
    """The Translation of @t: one object from the free list, C fields copied."""
    cdef Translation r = Translation.__new__(Translation)
    r.pa = t.pa
    r.level = t.level
    r._size = t.size
    r._prot = t.prot
    r._memattr = t.memattr
    r.af = t.af != 0
    r.pte = t.pte
    r.sw = t.sw
    return r


def _s1_translation(*fields):
    """A stage-1 Translation from its fields (unpickling): memattr stays AttrIndx."""
    cdef Translation r = Translation(*fields)
    r._memattr = _ATTRINDX_BASE + (r._memattr & 7)
    return r


cdef Translation _translation_s1(const s2pt_translation *t):
    """A stage-1 leaf's Translation: ``memattr`` is its AttrIndx (an int, not a MemAttr)."""
    cdef Translation r = _translation(t)
    r._memattr = _ATTRINDX_BASE + (t.memattr & 7)
    return r


# ---- errors -------------------------------------------------------------------------------

cdef int _raise(int rc, str detail=None) except -1:
    cls = error_class(rc)
    msg = s2pt_strerror(rc).decode()
    raise cls(f"{msg}: {detail}" if detail else msg)


cdef object _int(object value, str name):
    """``value`` as a Python int; floats and strings are refused, never truncated."""
    try:
        return _index(value)
    except TypeError:
        raise ArgumentTypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


cdef int _int_error(object value, str name, object exc_type, str limits) except -1:
    """Turn the OverflowError of a failed conversion into ``exc_type``."""
    PyErr_Clear()
    raise exc_type(f"{name}={value!r} {limits}")


# The hot paths (map, unmap, translate per call) take ints, IntFlag and bools straight to C
# with no try block; anything else goes through operator.index so that 4096.5 is an error.
cdef inline uint64_t _u64(object value, str name) except? 0xFFFFFFFFFFFFFFFF:
    """A Python int as uint64: negative or too large is a RangeError, not an OverflowError."""
    cdef unsigned long long v
    if s2pt_small_u64(value, &v):
        return v
    if not PyLong_Check(value):
        value = _int(value, name)
    # unsigned long is 64 bits on LP64 and its conversion skips the byte-array path that
    # PyLong_AsUnsignedLongLong takes for every value above 2**30.
    v = PyLong_AsUnsignedLong(value) if sizeof(unsigned long) == 8 else PyLong_AsUnsignedLongLong(value)
    if v == <unsigned long long>-1 and PyErr_Occurred():
        _int_error(value, name, RangeError, "does not fit in 64 bits (0 .. 2**64-1)")
    return v


cdef uint32_t _flags(object fwb, object xnx, object tlbi_range, object semantics) except? 0xFFFFFFFF:
    """S2PT_CONFIG_* bits for the per-VM architecture options and the semantics mode."""
    if semantics not in ("exact", "kvm"):
        raise ConfigError(f"semantics must be 'exact' or 'kvm', not {semantics!r}")
    return ((S2PT_CONFIG_FWB if fwb else 0) | (S2PT_CONFIG_XNX if xnx else 0) |
            (0 if tlbi_range else S2PT_CONFIG_NO_TLBIRANGE) |
            (S2PT_CONFIG_KVM if semantics == "kvm" else 0))


cdef inline uint32_t _u32(object value, str name) except? 0xFFFFFFFF:
    cdef unsigned long long small
    cdef unsigned long v
    if s2pt_small_u64(value, &small) and small <= 0xFFFFFFFF:
        return <uint32_t>small
    if not PyLong_Check(value):
        value = _int(value, name)
    v = PyLong_AsUnsignedLong(value)
    if (v == <unsigned long>-1 and PyErr_Occurred()) or v > 0xFFFFFFFF:
        _int_error(value, name, InvalidArgumentError, "is out of range")
    return <uint32_t>v


# The defaults of map(), as objects: a call that passes them (the common one) skips their
# conversion. Identity is only a shortcut; any equal value takes the general path.
cdef object _RW = Prot.RW
cdef object _NORMAL = MemAttr.NORMAL
cdef object _SW0 = 0


cdef object _READ = Access.READ


cdef inline uint32_t _access_arg(object access) except? 0xFFFFFFFF:
    return S2PT_ACCESS_READ if access is _READ else _u32(access, "access")


cdef inline uint32_t _prot_arg(object prot) except? 0xFFFFFFFF:
    return S2PT_PROT_R | S2PT_PROT_W if prot is _RW else _u32(prot, "prot")


cdef inline uint32_t _memattr_arg(object memattr) except? 0xFFFFFFFF:
    return S2PT_MEMATTR_NORMAL if memattr is _NORMAL else _u32(memattr, "memattr")


cdef uint32_t _map_flags(object blocks, object af, object sw) except? 0xFFFFFFFF:
    """S2PT_MAP_* bits; ``sw`` is the 4-bit software field of the new leaves."""
    cdef uint32_t bits
    if blocks is True and af is True and sw is _SW0:
        return 0
    bits = _u32(sw, "sw")
    if bits > 15:
        raise InvalidArgumentError(f"sw={sw!r} must be 0..15 (descriptor bits 58:55)")
    return ((0 if blocks else S2PT_MAP_NO_BLOCKS) | (0 if af else S2PT_MAP_NO_AF) |
            (bits << S2PT_MAP_SW_SHIFT))


cdef const uint64_t[::1] _u64_array(object ipas, str name="ipas") except *:
    """A C-contiguous 1-D uint64 view, refusing silent conversions that could change values."""
    if isinstance(ipas, np.ndarray):
        if ipas.dtype != np.uint64:
            raise ArrayError(f"{name} must have dtype uint64, got {ipas.dtype}")
        if ipas.ndim != 1:
            raise ArrayError(f"{name} must be 1-D, got {ipas.ndim} dimensions")
        if not ipas.flags.c_contiguous:
            raise ArrayError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
        return ipas
    # A sequence: every element must be an integer in 0 .. 2**64-1. np.asarray(dtype=uint64)
    # alone would truncate 4096.5 and parse "4096", so the elements are checked first.
    try:
        values = [_index(x) for x in ipas]
    except TypeError as exc:
        raise ArrayError(f"{name} must be a 1-D sequence of integers in 0 .. 2**64-1: {exc}") from None
    try:
        arr = np.array(values, dtype=np.uint64)
    except OverflowError:
        raise ArrayError(f"{name} must be integers in 0 .. 2**64-1") from None
    return arr


cdef const uint64_t[::1] _size_arg(object sizes, Py_ssize_t n, size_t *stride) except *:
    """The sizes of a batch: one int for every element (stride 0) or an array of n."""
    if isinstance(sizes, (int, np.integer)):
        stride[0] = 0
        return np.array([_u64(sizes, "sizes")], dtype=np.uint64)
    arr = _u64_array(sizes, "sizes")
    if arr.shape[0] != n:
        raise ArrayError(f"sizes has {arr.shape[0]} elements, ipas {n}")
    stride[0] = 1
    return arr


cdef tuple _out_arrays(object out, Py_ssize_t n):
    """Check caller-provided (pa, fsc) output arrays."""
    try:
        pa, fsc = out
    except (TypeError, ValueError):
        raise ArrayError("out must be a (pa, fsc) pair of arrays") from None
    for arr, name, dtype in ((pa, "pa", np.uint64), (fsc, "fsc", np.uint8)):
        if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != 1:
            raise ArrayError(f"out {name} must be a 1-D numpy {np.dtype(dtype)} array")
        if not arr.flags.c_contiguous or not arr.flags.writeable:
            raise ArrayError(f"out {name} must be C-contiguous and writeable")
        if arr.shape[0] != n:
            raise ArrayError(f"out {name} has {arr.shape[0]} elements, ipas {n}")
    return pa, fsc


# ---- zero-copy views ----------------------------------------------------------------------

cdef class _View:
    """Exports a region of C memory through the buffer protocol, keeping its owner alive."""
    cdef object owner
    cdef char *data
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t itemsize
    cdef bytes fmt

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("s2pt memory views are read-only: change tables through the API")
        buffer.buf = self.data
        buffer.obj = self
        buffer.len = self.shape[0] * self.itemsize
        buffer.readonly = 1
        buffer.itemsize = self.itemsize
        buffer.format = NULL
        if flags & PyBUF_FORMAT:
            buffer.format = self.fmt
        buffer.ndim = 1
        buffer.shape = self.shape
        buffer.strides = &self.itemsize
        buffer.suboffsets = NULL
        buffer.internal = NULL

    def __releasebuffer__(self, Py_buffer *buffer):
        pass


cdef object _view(object owner, void *data, Py_ssize_t n, Py_ssize_t itemsize, bytes fmt,
                  object dtype):
    cdef _View v = _View.__new__(_View)
    v.owner = owner
    v.data = <char *>data
    v.shape[0] = n
    v.itemsize = itemsize
    v.fmt = fmt
    return np.frombuffer(v, dtype=dtype)


# ---- geometry -----------------------------------------------------------------------------

cdef class Stage2Config:
    """Geometry and control-register values of one VM, computed exactly as KVM does.

    ``levels = max(2, (ipa_bits - 8) // (log2(granule) - 3))``, ``start_level = 4 - levels``;
    the start level concatenates up to 16 tables (``root_tables``). Invalid combinations raise
    :class:`ConfigError`. Build one from a register value with :meth:`from_vtcr`.
    """

    def __init__(self, ipa_bits=40, granule=4096, pa_bits=48, vmid=1, lpa2=False, *,
                 fwb=False, xnx=False, tlbi_range=True, semantics="exact"):
        cdef int rc
        cdef uint32_t flags = (_flags(fwb, xnx, tlbi_range, semantics) |
                               (S2PT_CONFIG_LPA2 if lpa2 else 0))
        rc = s2pt_config_init(&self.cfg, _u32(ipa_bits, "ipa_bits"), _u32(granule, "granule"),
                              _u32(pa_bits, "pa_bits"), _u32(vmid, "vmid"), flags)
        if rc:
            raise ConfigError(
                f"invalid stage-2 configuration ipa_bits={ipa_bits}, granule={granule}, "
                f"pa_bits={pa_bits}, vmid={vmid}, lpa2={bool(lpa2)}: need granule "
                f"4096/16384/65536, pa_bits in (32, 36, 40, 42, 44, 48, 52), 32 <= ipa_bits "
                f"<= 48 (<= 52 with lpa2 or 64K and pa_bits=52), ipa_bits <= pa_bits, "
                f"pa_bits=52 only with 64K or lpa2, lpa2 only with 4K/16K, vmid 0..65535")

    @classmethod
    def from_vtcr(cls, vtcr, vmid=1, *, fwb=False, xnx=False, tlbi_range=True,
                  semantics="exact"):
        """Decode and validate a VTCR_EL2 value (the level count comes from SL0; DS selects
        the LPA2 format). ``fwb``, ``xnx`` and ``tlbi_range`` are not VTCR fields.

        Refused: T0SZ outside 32..48-bit IPAs (52 with DS, or 64K with a 52-bit PS), a
        T0SZ/SL0 pair whose start table would resolve fewer than 1 or more than stride + 4
        bits, reserved TG0/PS/SH0/SL0 encodings, PS = 52 bits for 4K/16K without DS, DS with
        64K, a VMID above 255 without VS, and features s2pt does not model (HA, HD, SL2, ...).
        """
        cdef Stage2Config self = cls.__new__(cls)
        cdef uint64_t value = _u64(vtcr, "vtcr")
        if s2pt_config_from_vtcr(&self.cfg, value, _u32(vmid, "vmid"),
                                 _flags(fwb, xnx, tlbi_range, semantics)):
            raise ConfigError(f"VTCR_EL2 value {value:#x} (vmid {vmid}) is not a valid "
                              f"stage-2 configuration for s2pt")
        return self

    @property
    def ipa_bits(self): return self.cfg.ipa_bits
    @property
    def pa_bits(self): return self.cfg.pa_bits
    @property
    def granule(self): return 1 << self.cfg.granule_shift
    @property
    def vmid(self): return self.cfg.vmid
    @property
    def semantics(self):
        """``"exact"`` (s2pt's exact-range operations) or ``"kvm"`` (KVM's pgtable.c)."""
        return "kvm" if self.cfg.flags & S2PT_CONFIG_KVM else "exact"
    @property
    def lpa2(self):
        """FEAT_LPA2 descriptors (VTCR_EL2.DS = 1): OA[51:50] in bits 9:8."""
        return bool(self.cfg.flags & S2PT_CONFIG_LPA2)
    @property
    def fwb(self):
        """HCR_EL2.FWB = 1: MemAttr fields use the FWB encodings."""
        return bool(self.cfg.flags & S2PT_CONFIG_FWB)
    @property
    def xnx(self):
        """FEAT_XNX: EL1 and EL0 execute (Prot.PX, Prot.UX) may differ."""
        return bool(self.cfg.flags & S2PT_CONFIG_XNX)
    @property
    def tlbi_range(self):
        """FEAT_TLBIRANGE: coalescing logs a RANGE event (else VMID); with FWB unmap logs one
        RANGE event per call, as KVM defers it."""
        return not (self.cfg.flags & S2PT_CONFIG_NO_TLBIRANGE)
    @property
    def oa_bits_mask(self):
        """Descriptor bits that hold an output or table address in this format."""
        return self.cfg.oa_mask | self.cfg.oa_hi_mask
    @property
    def levels(self): return self.cfg.levels
    @property
    def start_level(self): return self.cfg.start_level
    @property
    def root_tables(self): return self.cfg.root_tables
    @property
    def root_entries(self): return self.cfg.root_entries
    @property
    def root_size(self):
        """Bytes of the concatenated root (whole pages)."""
        return self.cfg.root_tables << self.cfg.granule_shift
    @property
    def root_align(self):
        """Alignment VTTBR_EL2.BADDR needs: the root's own size."""
        return self.cfg.root_tables << self.cfg.granule_shift
    @property
    def min_block_level(self): return self.cfg.min_block_level
    @property
    def t0sz(self): return self.cfg.t0sz
    @property
    def sl0(self): return self.cfg.sl0
    @property
    def vtcr(self): return self.cfg.vtcr

    def level_size(self, int level):
        """Bytes one entry maps at ``level`` (start_level..3)."""
        if level < self.cfg.start_level or level > 3:
            raise InvalidArgumentError(f"level {level} is not in {self.cfg.start_level}..3")
        return (<uint64_t>1) << s2pt_level_shift(&self.cfg, level)

    def __reduce__(self):
        return (_config_from_state, (self.cfg.vtcr, self.cfg.vmid, self.cfg.flags))

    def _key(self):
        return (self.cfg.ipa_bits, self.cfg.pa_bits, self.cfg.granule_shift,
                self.cfg.start_level, self.cfg.vmid, self.cfg.vtcr, self.cfg.flags)

    def __eq__(self, other):
        if not isinstance(other, Stage2Config):
            return NotImplemented
        return self._key() == (<Stage2Config>other)._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        extra = "".join(f", {name}=True" for name in ("lpa2", "fwb", "xnx")
                        if getattr(self, name))
        if not self.tlbi_range:
            extra += ", tlbi_range=False"
        if self.cfg.flags & S2PT_CONFIG_KVM:
            extra += ", semantics='kvm'"
        return (f"Stage2Config(ipa_bits={self.ipa_bits}, granule={self.granule}, "
                f"pa_bits={self.pa_bits}, vmid={self.vmid}{extra}, levels={self.levels}, "
                f"start_level={self.start_level}, root_tables={self.root_tables}, "
                f"vtcr={self.vtcr:#x})")


def debug_build():
    """True when the C core in this extension was built with S2PT_DEBUG=1 (its invariant
    asserts trap), False for a release build."""
    return bool(s2pt_debug_build())


# ---- walking any memory image ---------------------------------------------------------------

def translate_image(image, image_pa, vtcr, vttbr, ipa, access=Access.READ, *, fwb=False,
                    xnx=False):
    """The stage-2 walk hardware does over any memory image, with the rules of
    :meth:`Stage2.translate`: for emulators, and for fuzzing descriptors s2pt would never
    write (a copy of ``pool.words`` with bits changed).

    ``image`` is a C-contiguous uint64 array (for example ``pool.words.copy()``) holding the
    tables, its first word at PA ``image_pa``; ``vtcr`` and ``vttbr`` are the registers
    (``fwb``/``xnx`` are not in VTCR). Returns a :class:`Translation` or raises
    :class:`Stage2Fault`, including address-size faults: an output or table address at or
    above the PA size faults at the descriptor's level, a VTTBR base above it at level 0.
    Raises RangeError when the walk needs a table outside the image, ConfigError for a bad
    VTCR, AlignmentError for a misaligned BADDR or image.
    """
    cdef const uint64_t[::1] words = _u64_array(image, "image")
    cdef uint64_t base = _u64(image_pa, "image_pa"), v = _u64(vtcr, "vtcr")
    cdef uint64_t t = _u64(vttbr, "vttbr"), i = _u64(ipa, "ipa")
    cdef uint32_t acc = _access_arg(access)
    cdef s2pt_translation out
    cdef s2pt_fault f
    cdef int rc
    if words.shape[0] == 0:
        raise RangeError("image is empty")
    rc = s2pt_translate_image(&words[0], base, <uint64_t>words.shape[0] * 8, v, t,
                              _flags(fwb, xnx, True, "exact"), i, acc, &out, &f)
    if rc == 0:
        return _translation(&out)
    if rc == S2PT_EFAULT:
        raise Stage2Fault(f.kind, f.level, f.fsc, f.ipa)
    if rc == S2PT_EINVAL:
        raise InvalidArgumentError(f"access={access!r} must be an Access")
    if rc == S2PT_ECONFIG:
        raise ConfigError(f"VTCR_EL2 value {v:#x} is not a valid stage-2 configuration")
    _raise(rc, f"image at PA {base:#x}, {words.shape[0] * 8:#x} bytes; VTTBR_EL2 {t:#x}")


# ---- pool ---------------------------------------------------------------------------------

# ---- memory for pools and TLB logs ---------------------------------------------------------
# Fuzzers and sweeps create and drop VMs by the thousand; an mmap and munmap pair per buffer
# (and the page faults of touching it again) would cost more than the VM's whole work. A
# dropped pool's memory is all zero again (the core clears tables before it frees them, and
# metadata of free pages is zero), so it is kept and handed out again as it is. Only buffers
# with little committed memory are kept, and few: the cache never holds much RSS.
cdef enum:
    _CACHE_SLOTS = 16
    _CACHE_COMMITTED_MAX = 4 << 20

cdef struct _Buffer:
    void *mem
    size_t bytes
    int zero  # all zero (pool memory and metadata), else scratch (TLB logs)

cdef _Buffer _cache[_CACHE_SLOTS]
cdef int _ncache = 0


cdef void *_mem_get(size_t bytes, int zero) noexcept:
    """Lazily committed memory, zero-filled if @zero (GIL held: the cache needs no other
    lock)."""
    global _ncache
    cdef int i
    cdef void *mem
    for i in range(_ncache - 1, -1, -1):
        if _cache[i].bytes == bytes and _cache[i].zero == zero:
            mem = _cache[i].mem
            _ncache -= 1
            _cache[i] = _cache[_ncache]
            return mem
    return s2pt_mem_alloc(bytes)


cdef void _mem_put(void *mem, size_t bytes, int zero, size_t committed) noexcept:
    """Give back memory from _mem_get(), all zero again if @zero (@committed: how much of
    it was ever touched, at most)."""
    global _ncache
    if mem == NULL:
        return
    if committed <= _CACHE_COMMITTED_MAX and _ncache < _CACHE_SLOTS:
        _cache[_ncache].mem = mem
        _cache[_ncache].bytes = bytes
        _cache[_ncache].zero = zero
        _ncache += 1
    else:
        s2pt_mem_free(mem, bytes)


cdef class PagePool:
    """One contiguous buffer of ``granule``-sized table pages; page ``i`` has PA
    ``base_pa + i * granule``.

    Memory is reserved up front and committed as pages are first used, so a large capacity
    costs nothing until it is needed. Freed pages are reused. Several VMs may share a pool.
    Counts are in pages.
    """

    def __cinit__(self):
        self.mem = NULL
        self.meta = NULL
        self.busy = 0
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError("cannot allocate the pool's lock")

    def __init__(self, pages, granule=4096, base_pa=None):
        cdef uint64_t npages = _u64(pages, "pages")
        cdef uint64_t gran = _u64(granule, "granule")
        cdef uint64_t base = DEFAULT_POOL_BASE_PA if base_pa is None else _u64(base_pa, "base_pa")
        cdef int rc
        if self.mem != NULL:
            raise InvalidArgumentError("PagePool is already initialised")
        if gran not in (4096, 16384, 65536):
            raise InvalidArgumentError(f"granule must be 4096, 16384 or 65536, not {granule}")
        if npages == 0 or npages > (<uint64_t>1 << 31):
            raise InvalidArgumentError(f"pages must be 1 .. 2**31, not {pages}")
        self.mem_bytes = npages * gran
        self.meta_bytes = s2pt_pool_meta_bytes(<uint32_t>npages)
        self.mem = _mem_get(self.mem_bytes, 1)
        self.meta = _mem_get(self.meta_bytes, 1)
        if self.mem == NULL or self.meta == NULL:
            self._release()
            raise MemoryError(f"cannot reserve {self.mem_bytes} bytes for {npages} pages")
        rc = s2pt_pool_init(&self.pool, self.mem, <uint32_t>npages, self.meta, base,
                            <uint32_t>gran)
        if rc:
            self._release()
            _raise(rc, f"base_pa={base:#x} must be aligned to the granule and the pool must "
                       f"end at or below 2**52")

    @classmethod
    def from_buffer(cls, buf, base_pa, granule=4096):
        """A pool over memory you own: any writable, C-contiguous buffer (a numpy array, an
        ``mmap``, a ``bytearray``) of whole granule pages, 8-byte aligned, whose first byte
        has PA ``base_pa``. It stays alive (and cannot be resized) while the pool lives. Tables
        are written straight into it, so your array sees every descriptor.

        What the buffer already holds is respected: pages that are not all zero are reserved
        (never handed out, never written) until :meth:`Stage2.attach` adopts the tables among
        them; zero pages are free, lowest first. The pool owns the whole buffer: give it a
        region for tables, not memory your guest uses."""
        cdef PagePool self = cls.__new__(cls)
        cdef uint64_t gran = _u64(granule, "granule")
        cdef uint64_t base = _u64(base_pa, "base_pa")
        cdef unsigned char[::1] raw
        cdef size_t pages
        cdef int rc
        if gran not in (4096, 16384, 65536):
            raise InvalidArgumentError(f"granule must be 4096, 16384 or 65536, not {granule}")
        try:
            view = memoryview(buf)
        except TypeError:
            raise ArgumentTypeError(f"buf must support the buffer protocol, not "
                                    f"{type(buf).__name__}") from None
        if view.readonly:
            raise ArrayError("buf must be writable")
        if not view.c_contiguous:
            raise ArrayError("buf must be C-contiguous")
        if view.nbytes == 0 or view.nbytes % gran:
            raise ArrayError(f"buf holds {view.nbytes} bytes: not a whole number of "
                             f"{gran}-byte pages")
        pages = view.nbytes // gran
        if pages > (<uint64_t>1 << 31):
            raise InvalidArgumentError(f"buf holds {pages} pages, more than 2**31")
        raw = view.cast("B")
        if (<size_t>&raw[0]) & 7:
            raise ArrayError("buf must be 8-byte aligned")
        self.meta_bytes = s2pt_pool_meta_bytes(<uint32_t>pages)
        self.meta = _mem_get(self.meta_bytes, 1)
        if self.meta == NULL:
            raise MemoryError(f"cannot reserve {self.meta_bytes} bytes of pool metadata")
        self.mem = &raw[0]
        self.mem_bytes = view.nbytes
        self.buffer = view
        rc = s2pt_pool_init_foreign(&self.pool, self.mem, <uint32_t>pages, self.meta, base,
                                    <uint32_t>gran)
        if rc:
            self._release()
            _raise(rc, f"base_pa={base:#x} must be aligned to the granule and the pool must "
                       f"end at or below 2**52")
        return self

    cdef _release(self):
        # Every VM of the pool is gone (each holds a reference), so with no page in use the
        # memory is zero again; touched: the pages below the high-water mark and their
        # metadata.
        cdef uint32_t hiwater = self.pool.hiwater
        if self.buffer is not None:
            # The caller's memory: only the metadata is ours.
            s2pt_mem_free(self.meta, self.meta_bytes)
            self.mem = NULL
            self.meta = NULL
            self.buffer.release()
            self.buffer = None
            return
        if self.mem != NULL and self.meta != NULL and self.pool.used == 0:
            # Counts and owners of free pages are zero; hints and the free stack are not.
            memset(self.pool.hint, 0, hiwater * sizeof(uint64_t))
            memset(self.pool.free_stack, 0, hiwater * sizeof(uint32_t))
            _mem_put(self.mem, self.mem_bytes, 1, <size_t>hiwater << self.pool.granule_shift)
            _mem_put(self.meta, self.meta_bytes, 1, s2pt_pool_meta_bytes(hiwater) + 4 * 4096)
        else:
            s2pt_mem_free(self.mem, self.mem_bytes)
            s2pt_mem_free(self.meta, self.meta_bytes)
        self.mem = NULL
        self.meta = NULL

    cdef _discard(self):
        """Release memory that may hold anything (a refused restore): never reused."""
        if self.buffer is not None:
            self._release()
            return
        s2pt_mem_free(self.mem, self.mem_bytes)
        s2pt_mem_free(self.meta, self.meta_bytes)
        self.mem = NULL
        self.meta = NULL

    def __dealloc__(self):
        # VMs keep their pool alive, so no page table can outlive this memory.
        self._release()
        if self.lock != NULL:
            PyThread_free_lock(self.lock)

    cdef int _wait(self) except -1:
        """Wait, without the GIL, until no thread runs a GIL-free call on this pool. ``busy``
        changes only with the GIL held, so once it reads 0 here nobody is inside one, and
        nobody can enter one before this thread lets the GIL go again."""
        while self.busy:
            with nogil:
                PyThread_acquire_lock(self.lock, WAIT_LOCK)
                PyThread_release_lock(self.lock)
        return 0

    cdef int _ready(self) except -1:
        if self.mem == NULL:
            raise InvalidArgumentError("PagePool was not initialised")
        return 0

    @property
    def capacity(self): return self.pool.capacity
    @property
    def used(self): return self.pool.used
    @property
    def free(self): return self.pool.capacity - self.pool.used
    @property
    def base_pa(self): return self.pool.base_pa
    @property
    def end_pa(self):
        """First PA after the pool."""
        return self.pool.base_pa + (<uint64_t>self.pool.capacity << self.pool.granule_shift)
    @property
    def granule(self): return 1 << self.pool.granule_shift

    @property
    def words(self):
        """Read-only, zero-copy numpy uint64 view of the whole buffer: the raw memory image
        (word ``i`` is at PA ``base_pa + 8 * i``)."""
        self._ready()
        return _view(self, self.mem, self.mem_bytes // 8, 8, b"Q", np.uint64)

    @property
    def refcounts(self):
        """Read-only, zero-copy numpy uint32 view of the per-page reference counts
        (0 = free, otherwise 1 + non-zero entries)."""
        self._ready()
        return _view(self, self.pool.refcount, self.pool.capacity, 4, b"I", np.uint32)

    def __reduce__(self):
        # Pickle memoises the pool, so VMs sharing it share it again after a round trip.
        return (_pool_from_state, (self._state(),))

    def _state(self):
        """The pool as plain values and numpy arrays (what pickle and s2pt.save store): the
        memory and metadata of the pages below the high-water mark, the free stack, the
        counters. Everything above the mark is zero and never touched."""
        cdef uint32_t h = self.pool.hiwater
        self._ready()
        self._wait()
        return {
            "version": STATE_VERSION, "granule": 1 << self.pool.granule_shift,
            "capacity": self.pool.capacity, "base_pa": self.pool.base_pa,
            "used": self.pool.used, "next_owner": self.pool.next_owner,
            "live_tables": self.pool.live_tables,
            "words": _view(self, self.mem, (<size_t>h << self.pool.granule_shift) // 8, 8, b"Q",
                           np.uint64).copy(),
            "hint": _view(self, self.pool.hint, h, 8, b"Q", np.uint64).copy(),
            "refcount": _view(self, self.pool.refcount, h, 4, b"I", np.uint32).copy(),
            "owner": _view(self, self.pool.owner, h, 4, b"I", np.uint32).copy(),
            "free_stack": _view(self, self.pool.free_stack, self.pool.nfree, 4, b"I",
                                np.uint32).copy(),
        }

    def refcount(self, pa):
        """Reference count of the page at ``pa`` (0 if free)."""
        cdef uint32_t count = 0
        cdef uint64_t addr = _u64(pa, "pa")
        self._ready()
        rc = s2pt_pool_refcount(&self.pool, addr, &count)
        if rc:
            _raise(rc, f"pa={addr:#x} is not the start of a page of this pool "
                       f"[{self.base_pa:#x}, {self.end_pa:#x})")
        return count

    def page_words(self, pa):
        """Read-only numpy view of the descriptors of the page at ``pa``."""
        cdef uint64_t addr = _u64(pa, "pa")
        self.refcount(addr)
        start = (addr - self.pool.base_pa) // 8
        return self.words[start:start + (self.granule // 8)]

    def read(self, pa):
        """The 64-bit word at ``pa`` (8-byte aligned, inside the pool)."""
        cdef uint64_t addr = _u64(pa, "pa")
        self._ready()
        if addr & 7:
            raise AlignmentError(f"pa={addr:#x} is not 8-byte aligned")
        if addr < self.pool.base_pa or addr >= self.end_pa:
            raise RangeError(f"pa={addr:#x} is outside the pool")
        return (<uint64_t *>self.mem)[(addr - self.pool.base_pa) // 8]

    def __repr__(self):
        return (f"PagePool(capacity={self.capacity}, used={self.used}, granule={self.granule}, "
                f"base_pa={self.base_pa:#x})")


# ---- the VM's tables ----------------------------------------------------------------------

# What a Stage2 and a Stage1 do alike with their tables (one C core, one marshalling).

cdef inline int _map_call(s2pt_pgtable *pt, PagePool pool, uint64_t addr, uint64_t out,
                          uint64_t size, uint32_t prot, uint32_t attr, uint32_t flags):
    """s2pt_map(); ranges of _NOGIL_PAGES pages or more without the GIL, under the pool's
    lock (small ones cost less than the hand-over)."""
    cdef int rc
    if size >> pt.cfg.granule_shift < _NOGIL_PAGES:
        return s2pt_map(pt, addr, out, size, prot, attr, flags)
    pool.busy += 1
    with nogil:
        PyThread_acquire_lock(pool.lock, WAIT_LOCK)
        rc = s2pt_map(pt, addr, out, size, prot, attr, flags)
        PyThread_release_lock(pool.lock)
    pool.busy -= 1
    return rc


cdef inline int _unmap_call(s2pt_pgtable *pt, PagePool pool, uint64_t addr, uint64_t size,
                            uint64_t *unmapped):
    """s2pt_unmap(), GIL-free as _map_call()."""
    cdef int rc
    if size >> pt.cfg.granule_shift < _NOGIL_PAGES:
        return s2pt_unmap(pt, addr, size, unmapped)
    pool.busy += 1
    with nogil:
        PyThread_acquire_lock(pool.lock, WAIT_LOCK)
        rc = s2pt_unmap(pt, addr, size, unmapped)
        PyThread_release_lock(pool.lock)
    pool.busy -= 1
    return rc


cdef list _walk_list(const s2pt_pgtable *pt, uint64_t address):
    cdef s2pt_walk_step steps[S2PT_MAX_WALK_STEPS]
    cdef uint32_t n = 0, k
    cdef int rc = s2pt_walk_path(pt, address, steps, &n)
    if rc:
        _raise(rc)
    return [WalkStep(steps[k].level, steps[k].table_pa, steps[k].index, steps[k].desc_pa,
                     steps[k].desc) for k in range(n)]


cdef int _check_tables(const s2pt_pgtable *pt) except -1:
    cdef char msg[256]
    cdef int rc = s2pt_check(pt, msg, sizeof(msg))
    if rc == S2PT_EINVARIANT:
        raise InvariantError(msg.decode())
    if rc:
        _raise(rc)
    return 0


cdef object _tlbi_events(s2pt_tlbi_log *log, bint clear):
    """The log's events as a TLBI_DTYPE array (a copy); ``clear`` empties the log."""
    cdef uint8_t[::1] raw
    out = np.empty(log.count, dtype=TLBI_DTYPE)
    if log.count:
        raw = out.view(np.uint8)
        memcpy(&raw[0], log.events, log.count * sizeof(s2pt_tlbi))
    if clear:
        log.count = 0
        log.overflowed = 0
    return out


# Never clear `pool` before __dealloc__ returns the VM's pages to it (GC of a reference cycle).
@cython.no_gc_clear
cdef class Stage2:
    """One VM's stage-2 translation tables (IPA -> PA), in a :class:`PagePool`.

    ``pool=None`` gives the VM a pool of its own (``DEFAULT_POOL_BYTES`` reserved at
    ``DEFAULT_POOL_BASE_PA``, committed as used). Every call validates its arguments and, on
    any error, leaves tables, counts and pool exactly as they were.
    """

    def __cinit__(self):
        self.events = NULL
        memset(&self.pt, 0, sizeof(self.pt))
        memset(&self.mmu, 0, sizeof(self.mmu))
        self.pt.destroyed = 1

    def __init__(self, ipa_bits=40, granule=4096, pa_bits=48, vmid=1, lpa2=False, pool=None,
                 *, fwb=False, xnx=False, tlbi_range=True, tlbi_capacity=4096,
                 semantics="exact"):
        self._setup(Stage2Config(ipa_bits, granule, pa_bits, vmid, lpa2, fwb=fwb, xnx=xnx,
                                 tlbi_range=tlbi_range, semantics=semantics), pool,
                    tlbi_capacity)

    @classmethod
    def from_config(cls, Stage2Config config not None, pool=None, *, tlbi_capacity=4096):
        """A VM with the geometry of ``config`` (for example one from ``from_vtcr``)."""
        cdef Stage2 self = cls.__new__(cls)
        self._setup(config, pool, tlbi_capacity)
        return self

    @classmethod
    def attach(cls, PagePool pool not None, vtcr, vttbr, *, fwb=False, xnx=False,
               tlbi_range=True, semantics="exact", tlbi_capacity=4096):
        """Adopt a stage-2 tree already in ``pool``'s memory (usually a
        :meth:`PagePool.from_buffer` pool over tables something else wrote), as hardware
        would find it from VTCR_EL2 and VTTBR_EL2 (BADDR, and PA[51:48] in bits 5:2 with a
        52-bit PA; the VMID from bits 63:48). Every descriptor is checked first; a tree s2pt
        could not have built raises :class:`InvariantError` naming the first bad descriptor
        (its PA, level and IPA) and changes nothing. The adopted VM's counts are rebuilt
        (1 + non-zero entries per table page) and every operation works on it."""
        cdef Stage2 self = cls.__new__(cls)
        cdef uint64_t t = _u64(vttbr, "vttbr"), baddr
        cdef uint32_t vmid, cap = _u32(tlbi_capacity, "tlbi_capacity")
        cdef Stage2Config config
        cdef char msg[320]
        cdef int rc
        pool._ready()
        vmid = <uint32_t>(t >> 48)
        if not (_u64(vtcr, "vtcr") >> 19) & 1:  # VTCR_EL2.VS clear: an 8-bit VMID
            vmid &= 0xFF
        config = Stage2Config.from_vtcr(vtcr, vmid, fwb=fwb, xnx=xnx, tlbi_range=tlbi_range,
                                        semantics=semantics)
        baddr = t & ((<uint64_t>1 << 48) - 2)
        if config.cfg.pa_bits == 52:
            baddr = (baddr & ~<uint64_t>0x3F) | ((t >> 2) & 0xF) << 48
        pool._wait()
        if cap:
            self.events = <s2pt_tlbi *>_mem_get(cap * sizeof(s2pt_tlbi), 0)
            if self.events == NULL:
                raise MemoryError()
        self.log.events = self.events
        self.log.capacity = cap
        rc = s2pt_pgtable_attach(&self.pt, &config.cfg, &pool.pool, baddr, msg, sizeof(msg))
        if rc:
            self.pt.destroyed = 1
            if rc == S2PT_EINVARIANT:
                raise InvariantError(f"cannot attach the tree at {baddr:#x}: {msg.decode()}")
            if rc == S2PT_ECONFIG:
                raise ConfigError(f"pool (granule {pool.granule}, PAs up to {pool.end_pa:#x}) "
                                  f"does not suit this VM (granule {config.granule}, "
                                  f"{config.pa_bits}-bit PA)")
            _raise(rc, f"root {baddr:#x} ({config.root_tables} page(s)) in the pool "
                       f"[{pool.base_pa:#x}, {pool.end_pa:#x})")
        self.pt.tlbi = &self.log
        s2pt_mmu_init(&self.mmu, &self.pt)
        self.pool = pool
        self.config = config
        return self

    cdef _setup(self, Stage2Config config, object pool, object tlbi_capacity):
        cdef PagePool p
        cdef uint32_t cap = _u32(tlbi_capacity, "tlbi_capacity")
        cdef uint64_t pages, limit
        cdef int rc
        if not self.pt.destroyed:
            raise InvalidArgumentError("Stage2 is already initialised")
        if pool is None:
            granule = 1 << config.cfg.granule_shift
            limit = ((<uint64_t>1) << config.cfg.pa_bits) - DEFAULT_POOL_BASE_PA
            pages = min(DEFAULT_POOL_BYTES, limit) // granule
            p = PagePool(pages, granule, DEFAULT_POOL_BASE_PA)
        elif isinstance(pool, PagePool):
            p = pool
            p._ready()
        else:
            raise InvalidArgumentError(f"pool must be a PagePool or None, not {type(pool)}")
        if cap:
            self.events = <s2pt_tlbi *>_mem_get(cap * sizeof(s2pt_tlbi), 0)
            if self.events == NULL:
                raise MemoryError()
        rc = s2pt_pgtable_init(&self.pt, &config.cfg, &p.pool)
        if rc:
            _mem_put(self.events, cap * sizeof(s2pt_tlbi), 0, 0)
            self.events = NULL
            if rc == S2PT_ECONFIG:
                raise ConfigError(
                    f"pool (granule {p.granule}, PAs up to {p.end_pa:#x}) does not suit this VM "
                    f"(granule {config.granule}, {config.pa_bits}-bit PA)")
            _raise(rc, f"{config.root_tables} aligned root page(s) from a pool with "
                       f"{p.free} free")
        self.log.events = self.events
        self.log.capacity = cap
        self.log.count = 0
        self.log.overflowed = 0
        self.pt.tlbi = &self.log
        s2pt_mmu_init(&self.mmu, &self.pt)
        self.pool = p
        self.config = config

    def __dealloc__(self):
        if not self.pt.destroyed:
            s2pt_pgtable_destroy(&self.pt)
        s2pt_mmu_release(&self.mmu)
        _mem_put(self.events, self.log.capacity * sizeof(s2pt_tlbi), 0, 0)

    cdef inline int _sync(self) except -1:
        """Wait while another thread runs a GIL-free call on this VM's pool."""
        if self.pool is not None and self.pool.busy:
            self.pool._wait()
        return 0

    cdef int _live(self) except -1:
        if self.pt.destroyed:
            raise DestroyedError("this Stage2 was destroyed")
        return 0

    # -- geometry ---------------------------------------------------------------------------
    @property
    def ipa_bits(self): return self.pt.cfg.ipa_bits
    @property
    def pa_bits(self): return self.pt.cfg.pa_bits
    @property
    def granule(self): return 1 << self.pt.cfg.granule_shift
    @property
    def vmid(self): return self.pt.cfg.vmid
    @property
    def levels(self): return self.pt.cfg.levels
    @property
    def start_level(self): return self.pt.cfg.start_level
    @property
    def root_tables(self): return self.pt.cfg.root_tables
    @property
    def vtcr(self): return self.pt.cfg.vtcr
    @property
    def lpa2(self): return bool(self.pt.cfg.flags & S2PT_CONFIG_LPA2)
    @property
    def fwb(self): return bool(self.pt.cfg.flags & S2PT_CONFIG_FWB)
    @property
    def xnx(self): return bool(self.pt.cfg.flags & S2PT_CONFIG_XNX)
    @property
    def tlbi_range(self): return not (self.pt.cfg.flags & S2PT_CONFIG_NO_TLBIRANGE)
    @property
    def root_pa(self):
        """PA of the (concatenated) root, aligned to its size."""
        self._live()
        return self.pt.root_pa
    @property
    def vttbr(self):
        """VTTBR_EL2: root PA | VMID << 48; with a 52-bit PA size root PA[51:48] go in
        bits 5:2."""
        self._live()
        return s2pt_vttbr(&self.pt)
    @property
    def table_pages(self):
        """Table pages this VM holds, roots included."""
        self._live()
        return self.pt.table_pages
    @property
    def destroyed(self): return bool(self.pt.destroyed)

    # -- changes ----------------------------------------------------------------------------
    def map(self, ipa, pa, size, prot=Prot.RW, memattr=MemAttr.NORMAL, *, blocks=True, af=True,
            sw=0):
        """Map ``[ipa, ipa + size)`` to ``[pa, pa + size)``.

        Each aligned chunk gets the largest leaf its IPA and PA alignment allow (blocks at
        levels 1-2 for 4K, level 2 for 16K/64K; also level 0 for 4K and level 1 for 16K with
        LPA2, level 1 for 64K with a 52-bit PA), or pages only with ``blocks=False`` (which
        also splits blocks already in the range). An existing mapping is replaced
        (break-before-make); a block covered in part is split so the rest stays mapped; a
        table whose whole span becomes a block is freed with its subtree. A leaf that already
        translates the range exactly as asked is left alone (no split, no event). ``af=False``
        leaves the access flag clear (the first access then takes an access-flag fault).
        ``sw`` (0..15) goes in the leaves' software bits 58:55; a leaf that differs only there
        is rewritten in place with no TLB event.

        Raises InvalidArgumentError (prot, memattr, sw, execute on Device), AlignmentError,
        RangeError, PoolExhaustedError, DestroyedError; on error nothing changes.
        """
        self._sync()
        cdef uint64_t i = _u64(ipa, "ipa"), p = _u64(pa, "pa"), n = _u64(size, "size")
        cdef uint32_t flags = _map_flags(blocks, af, sw)
        cdef uint32_t prot_c = _prot_arg(prot), memattr_c = _memattr_arg(memattr)
        cdef int rc = _map_call(&self.pt, self.pool, i, p, n, prot_c, memattr_c, flags)
        if rc:
            self._fail(rc, i, n, p, prot, memattr)

    def unmap(self, ipa, size):
        """Unmap exactly ``[ipa, ipa + size)``; returns the bytes that were mapped and now are
        not. A block covered in part is split so the rest stays mapped (this can need pages);
        every table left empty is freed at once, upward."""
        self._sync()
        cdef uint64_t i = _u64(ipa, "ipa"), n = _u64(size, "size"), unmapped = 0
        cdef int rc = _unmap_call(&self.pt, self.pool, i, n, &unmapped)
        if rc:
            self._fail(rc, i, n)
        return unmapped

    def map_many(self, ipas, pas, sizes, prot=Prot.RW, memattr=MemAttr.NORMAL, *,
                 blocks=True, af=True, sw=0):
        """:meth:`map` for every element, in order, in one C loop.

        ``ipas`` and ``pas`` are 1-D uint64 arrays (or sequences of ints) of one length;
        ``sizes`` is such an array too, or one int for every element. ``prot``, ``memattr``,
        ``blocks``, ``af`` and ``sw`` apply to all elements.

        Every element's arguments are checked before anything changes: a bad element raises
        (AlignmentError, RangeError, ...) with nothing changed. Pool exhaustion is found per
        element, against the tables as the earlier elements left them: those stay applied,
        the failing element changes nothing, and the PoolExhaustedError's ``index`` is its
        position (every exception raised here for an element has ``index``).
        """
        cdef const uint64_t[::1] ipa_v = _u64_array(ipas, "ipas")
        cdef const uint64_t[::1] pa_v = _u64_array(pas, "pas")
        cdef Py_ssize_t n = ipa_v.shape[0]
        cdef size_t stride, done = 0
        cdef const uint64_t[::1] size_v = _size_arg(sizes, n, &stride)
        cdef uint32_t flags = _map_flags(blocks, af, sw)
        cdef uint32_t prot_c = _prot_arg(prot), memattr_c = _memattr_arg(memattr)
        cdef PagePool pool
        cdef int rc
        if pa_v.shape[0] != n:
            raise ArrayError(f"ipas and pas differ in length ({n} and {pa_v.shape[0]})")
        if n == 0:
            self._live()
            return
        self._sync()
        pool = self.pool
        pool.busy += 1
        with nogil:
            PyThread_acquire_lock(pool.lock, WAIT_LOCK)
            rc = s2pt_map_many(&self.pt, &ipa_v[0], &pa_v[0], &size_v[0], stride, <size_t>n,
                               prot_c, memattr_c, flags, &done)
            PyThread_release_lock(pool.lock)
        pool.busy -= 1
        if rc:
            self._fail_at(rc, done, ipa_v[done], size_v[done * stride], pa_v[done], prot,
                          memattr)

    def unmap_many(self, ipas, sizes):
        """:meth:`unmap` for every element, in order, in one C loop; returns the total bytes
        unmapped. ``sizes`` is a uint64 array or one int for all. Errors as for
        :meth:`map_many`: a bad element changes nothing; on pool exhaustion (splitting a
        block) the earlier elements stay applied and the exception's ``index`` says where."""
        cdef const uint64_t[::1] ipa_v = _u64_array(ipas, "ipas")
        cdef Py_ssize_t n = ipa_v.shape[0]
        cdef size_t stride, done = 0
        cdef const uint64_t[::1] size_v = _size_arg(sizes, n, &stride)
        cdef uint64_t unmapped = 0
        cdef PagePool pool
        cdef int rc
        if n == 0:
            self._live()
            return 0
        self._sync()
        pool = self.pool
        pool.busy += 1
        with nogil:
            PyThread_acquire_lock(pool.lock, WAIT_LOCK)
            rc = s2pt_unmap_many(&self.pt, &ipa_v[0], &size_v[0], stride, <size_t>n, &unmapped,
                                 &done)
            PyThread_release_lock(pool.lock)
        pool.busy -= 1
        if rc:
            self._fail_at(rc, done, ipa_v[done], size_v[done * stride])
        return unmapped

    cdef int _fail_at(self, int rc, size_t index, uint64_t ipa, uint64_t size, object pa=None,
                      object prot=None, object memattr=None) except -1:
        try:
            self._fail(rc, ipa, size, pa, prot, memattr)
        except S2ptError as exc:
            exc.index = index
            exc.args = (f"element {index}: {exc.args[0]}",) + exc.args[1:]
            raise

    def protect(self, ipa, size, prot):
        """Set the permissions of every mapped leaf in ``[ipa, ipa + size)``; holes stay
        holes, a block covered in part whose permissions change is split first."""
        self._sync()
        cdef uint64_t i = _u64(ipa, "ipa"), n = _u64(size, "size")
        cdef int rc = s2pt_protect(&self.pt, i, n, _u32(prot, "prot"))
        if rc:
            self._fail(rc, i, n, None, prot)

    def set_access_flag(self, ipa, size, af=True):
        """Set (or with ``af=False`` clear) the access flag of every valid leaf that intersects
        ``[ipa, ipa + size)``, in place: whole leaves, never a split (KVM's mkyoung and
        test_clear_young). Returns how many of those leaves had the flag set before. Clearing
        it logs an IPA invalidation per leaf that had it; setting it logs none (an entry with
        AF clear is never held in a TLB)."""
        self._sync()
        cdef uint64_t i = _u64(ipa, "ipa"), n = _u64(size, "size"), young = 0
        cdef int rc = s2pt_set_af(&self.pt, i, n, 1 if af else 0, &young)
        if rc:
            self._fail(rc, i, n)
        return young

    def set_owner(self, ipa, size, owner):
        """Annotate ``[ipa, ipa + size)`` as owned by ``owner`` (1..255): each entry becomes
        an invalid descriptor holding the id in bits 9:2 (KVM's set_owner), so the range
        faults (translation, at the annotation's level) and :meth:`owner` reports the id.
        Annotations count in their table's reference count. One entry per page, as KVM's
        set_owner (force_pte): mappings in the range are removed (a TLB event per valid
        leaf, a SPLIT for a block covered in part or whole, whose rest stays mapped).
        :meth:`unmap` clears annotations; :meth:`map` replaces them."""
        self._sync()
        cdef uint64_t i = _u64(ipa, "ipa"), n = _u64(size, "size")
        cdef int rc = s2pt_set_owner(&self.pt, i, n, _u32(owner, "owner"))
        if rc == S2PT_EINVAL:
            raise InvalidArgumentError(f"owner={owner!r} must be 1..{S2PT_OWNER_MAX}")
        if rc:
            self._fail(rc, i, n)

    def owner(self, ipa):
        """The owner id annotating ``ipa``'s entry, or 0 (mapped, empty, or outside the IPA
        space)."""
        self._sync()
        cdef uint32_t who = 0
        cdef int rc = s2pt_owner(&self.pt, _u64(ipa, "ipa"), &who)
        if rc:
            _raise(rc)
        return who

    # -- GIL-free calls -------------------------------------------------------------------
    cdef inline PyThread_type_lock _go(self) except NULL:
        """Enter a GIL-free call: this VM must be live; the pool is marked busy (so calls that
        keep the GIL wait) and its lock is returned, to be taken once the GIL is let go."""
        self._live()
        self._sync()
        self.pool.busy += 1
        return self.pool.lock

    cdef inline void _back(self) noexcept:
        self.pool.busy -= 1

    # -- KVM's leaf operations --------------------------------------------------------------
    @property
    def semantics(self):
        """``"exact"`` or ``"kvm"``: how map / unmap / protect / wrprotect / split treat a leaf
        the range covers in part (README "Two semantics")."""
        return "kvm" if self.pt.cfg.flags & S2PT_CONFIG_KVM else "exact"

    def wrprotect(self, ipa, size):
        """Clear the write permission of every valid leaf in ``[ipa, ipa + size)``
        (kvm_pgtable_stage2_wrprotect); returns the bytes that were writable and now are not.
        Exact semantics split a writable block covered in part (so this can need pages);
        ``semantics="kvm"`` changes whole leaves. No TLB event for the change itself: like
        KVM, the caller flushes (the memslot layer records a TLBI_WRPROTECT range)."""
        cdef uint64_t i = _u64(ipa, "ipa"), n = _u64(size, "size"), changed = 0
        cdef uint32_t flags = S2PT_LEAF_WHOLE if self.pt.cfg.flags & S2PT_CONFIG_KVM else 0
        cdef PyThread_type_lock lock = self._go()
        cdef int rc
        with nogil:
            PyThread_acquire_lock(lock, WAIT_LOCK)
            rc = s2pt_wrprotect(&self.pt, i, n, flags, &changed)
            PyThread_release_lock(lock)
        self._back()
        if rc:
            self._fail(rc, i, n)
        return changed

    def mkyoung(self, ipa):
        """Set the access flag of the leaf translating ``ipa`` (any byte address), in place,
        with no TLB event; False for a hole (kvm_pgtable_stage2_mkyoung)."""
        self._sync()
        cdef int found = 0
        cdef int rc = s2pt_mkyoung(&self.pt, _u64(ipa, "ipa"), &found)
        if rc:
            _raise(rc)
        return bool(found)

    def test_clear_young(self, ipa, size, *, mkold=True):
        """Whether any valid leaf intersecting ``[ipa, ipa + size)`` has its access flag set;
        ``mkold`` clears it on each (whole leaves). No TLB events, as in KVM
        (kvm_pgtable_stage2_test_clear_young)."""
        cdef uint64_t i = _u64(ipa, "ipa"), n = _u64(size, "size")
        cdef int old = 1 if mkold else 0, young = 0, rc
        cdef PyThread_type_lock lock = self._go()
        with nogil:
            PyThread_acquire_lock(lock, WAIT_LOCK)
            rc = s2pt_test_clear_young(&self.pt, i, n, old, &young)
            PyThread_release_lock(lock)
        self._back()
        if rc:
            self._fail(rc, i, n)
        return bool(young)

    def young(self, ipa, size, *, clear=False):
        """Bitmap (uint64 words, KVM's dirty-bitmap layout) of the granule pages of
        ``[ipa, ipa + size)`` that lie in a leaf whose access flag is set; ``clear`` clears
        those flags (whole leaves, no TLB events). ``s2pt.bitmap_pages`` lists the pages."""
        cdef uint64_t i = _u64(ipa, "ipa"), n = _u64(size, "size")
        cdef int c = 1 if clear else 0, rc
        cdef uint64_t[::1] words
        cdef PyThread_type_lock lock
        self._live()
        # The range is checked before the bitmap is allocated (a huge size is a RangeError).
        if (i | n) & ((1 << self.pt.cfg.granule_shift) - 1):
            self._fail(S2PT_EALIGN, i, n)
        if i + n < i or i + n > (<uint64_t>1) << self.pt.cfg.ipa_bits:
            self._fail(S2PT_ERANGE, i, n)
        out = np.empty(max(1, ((n >> self.pt.cfg.granule_shift) + 63) // 64), dtype=np.uint64)
        words = out
        lock = self._go()
        with nogil:
            PyThread_acquire_lock(lock, WAIT_LOCK)
            rc = s2pt_young_bitmap(&self.pt, i, n, c, &words[0])
            PyThread_release_lock(lock)
        self._back()
        if rc:
            self._fail(rc, i, n)
        return out[:((n >> self.pt.cfg.granule_shift) + 63) // 64]

    def relax_perms(self, ipa, prot):
        """Add ``prot`` to the permissions of the leaf translating ``ipa`` (never removes
        any); False for a hole (kvm_pgtable_stage2_relax_perms). Records one TLBI_PERM IPA
        event at the leaf's level whenever a leaf was found, as KVM flushes the local TLB."""
        self._sync()
        cdef int found = 0
        cdef int rc = s2pt_relax_perms(&self.pt, _u64(ipa, "ipa"), _u32(prot, "prot"), &found)
        if rc == S2PT_EINVAL:
            raise InvalidArgumentError(
                f"prot={prot!r}: a Prot whose union with the leaf's permissions this VM can "
                f"express (PX and UX together unless xnx=True), no execute on Device memory")
        if rc:
            _raise(rc)
        return bool(found)

    def split(self, ipa, size):
        """Eager split (kvm_pgtable_stage2_split): every valid block in ``[ipa, ipa + size)``
        becomes last-level pages with the same outputs and attributes; returns the table
        pages allocated. A block covered in part: only its part in the range is split to
        pages (``semantics="kvm"``: the whole block). One TLBI_SPLIT event per block."""
        cdef uint64_t i = _u64(ipa, "ipa"), n = _u64(size, "size"), tables = 0
        cdef PyThread_type_lock lock = self._go()
        cdef int rc
        with nogil:
            PyThread_acquire_lock(lock, WAIT_LOCK)
            rc = s2pt_split(&self.pt, i, n, &tables)
            PyThread_release_lock(lock)
        self._back()
        if rc:
            self._fail(rc, i, n)
        return tables

    def collapse(self, ipa, size):
        """The reverse of split: every aligned block span inside ``[ipa, ipa + size)`` whose
        leaves are one contiguous output run with identical attributes becomes one block, its
        tables freed (bottom-up, so pages can become a 1 GiB block in one call); returns the
        blocks made. Translations do not change. One TLBI_COALESCE event per block."""
        cdef uint64_t i = _u64(ipa, "ipa"), n = _u64(size, "size"), blocks = 0
        cdef PyThread_type_lock lock = self._go()
        cdef int rc
        with nogil:
            PyThread_acquire_lock(lock, WAIT_LOCK)
            rc = s2pt_collapse(&self.pt, i, n, &blocks)
            PyThread_release_lock(lock)
        self._back()
        if rc:
            self._fail(rc, i, n)
        return blocks

    # -- memslots and guest faults (the MMU layer, csrc/src/mmu.c) --------------------------
    def add_memslot(self, ipa, pa, size, *, readonly=False, log_dirty=False, backing=None):
        """Add a memory slot (KVM_SET_USER_MEMORY_REGION): guest IPAs ``[ipa, ipa + size)``
        backed by host PAs ``[pa, pa + size)`` in host pages of ``backing`` bytes (the
        granule by default; a block size of the VM for THP / hugetlb backing). Maps nothing:
        guest faults fill the tables. Returns the slot's id (the lowest free one).

        Raises AlignmentError, RangeError (outside the IPA / PA space, or overlapping a slot),
        InvalidArgumentError (size 0, backing not a leaf size of this VM, readonly with
        log_dirty, too many slots)."""
        self._sync()
        cdef uint64_t i = _u64(ipa, "ipa"), p = _u64(pa, "pa"), n = _u64(size, "size")
        cdef uint64_t b = (1 << self.pt.cfg.granule_shift) if backing is None else _u64(backing, "backing")
        cdef uint32_t flags = ((S2PT_MEMSLOT_READONLY if readonly else 0) |
                               (S2PT_MEMSLOT_LOG_DIRTY if log_dirty else 0))
        cdef uint32_t slot = 0
        cdef int rc = s2pt_memslot_add(&self.mmu, i, p, n, flags, b, &slot)
        if rc == S2PT_EINVAL:
            sizes = [self.config.level_size(lv) for lv in range(self.pt.cfg.min_block_level, 4)]
            raise InvalidArgumentError(
                f"memslot size={n:#x}, backing={b:#x}, readonly={bool(readonly)}, "
                f"log_dirty={bool(log_dirty)}: size must be > 0, backing one of "
                f"{[hex(x) for x in sizes]}, a read-only slot cannot log dirty pages, and at "
                f"most 32764 slots")
        if rc == S2PT_ERANGE:
            raise RangeError(
                f"memslot [{i:#x}, +{n:#x}) -> [{p:#x}, +{n:#x}) must lie within the "
                f"{self.pt.cfg.ipa_bits}-bit IPA and {self.pt.cfg.pa_bits}-bit PA spaces and "
                f"not overlap another slot")
        if rc:
            self._fail(rc, i, n, p)
        return slot

    cdef const s2pt_memslot *_slot(self, object slot) except NULL:
        cdef const s2pt_memslot *s
        self._live()
        s = s2pt_memslot_find(&self.mmu, _u32(slot, "slot"))
        if s == NULL:
            raise InvalidArgumentError(f"no memslot with id {slot!r}")
        return s

    def delete_memslot(self, slot):
        """Remove a slot: its range is unmapped (emptied tables freed) and its dirty log goes.
        On error (PoolExhaustedError splitting a block of your own that crosses the slot's
        edge, exact semantics) nothing changes."""
        self._sync()
        cdef const s2pt_memslot *s = self._slot(slot)
        cdef uint64_t i = s.ipa, n = s.size
        cdef int rc = s2pt_memslot_delete(&self.mmu, s.id)
        if rc:
            self._fail(rc, i, n)

    def memslots(self):
        """The slots, as :class:`Memslot` records in IPA order."""
        cdef uint32_t k
        self._live()
        return [Memslot(self.mmu.slots[k].id, self.mmu.slots[k].ipa, self.mmu.slots[k].pa,
                        self.mmu.slots[k].size,
                        bool(self.mmu.slots[k].flags & S2PT_MEMSLOT_READONLY),
                        bool(self.mmu.slots[k].flags & S2PT_MEMSLOT_LOG_DIRTY),
                        self.mmu.slots[k].backing)
                for k in range(self.mmu.nslots)]

    def set_log_dirty(self, slot, enable, *, eager_split=False):
        """Dirty logging on or off (KVM_MEM_LOG_DIRTY_PAGES). On: the slot's leaves lose write
        permission (whole leaves, then one TLBI_WRPROTECT event over the slot), faults map
        pages only and writes mark pages dirty; ``eager_split`` first splits the slot's blocks
        to pages (KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE; PoolExhaustedError changes nothing). Off:
        the bitmap is dropped, the tables stay as they are. Logging a read-only slot is an
        InvalidArgumentError."""
        cdef const s2pt_memslot *s = self._slot(slot)
        cdef uint32_t id_ = s.id, flags = S2PT_LOG_EAGER_SPLIT if eager_split else 0
        cdef uint64_t i = s.ipa, n = s.size
        cdef int on = 1 if enable else 0, rc
        cdef PyThread_type_lock lock = self._go()
        with nogil:
            PyThread_acquire_lock(lock, WAIT_LOCK)
            rc = s2pt_set_log_dirty(&self.mmu, id_, on, flags)
            PyThread_release_lock(lock)
        self._back()
        if rc == S2PT_EINVAL:
            raise InvalidArgumentError(f"memslot {slot} is read-only: it cannot log dirty pages")
        if rc:
            self._fail(rc, i, n)

    cdef const s2pt_memslot *_logging(self, object slot) except NULL:
        cdef const s2pt_memslot *s = self._slot(slot)
        if not s.flags & S2PT_MEMSLOT_LOG_DIRTY:
            raise InvalidArgumentError(f"memslot {slot} does not log dirty pages")
        return s

    def get_dirty_log(self, slot, *, clear=True):
        """The slot's dirty bitmap (KVM_GET_DIRTY_LOG; uint64 words, bit ``i % 64`` of word
        ``i // 64`` is page ``i``). ``clear`` clears it and write-protects the returned pages
        again (per word, from its lowest to its highest set page, whole leaves; one
        TLBI_WRPROTECT event over the slot), as KVM_CLEAR_DIRTY_LOG does. The cost follows the
        dirty pages, plus a zero fill of the returned bitmap."""
        cdef const s2pt_memslot *s = self._logging(slot)
        cdef uint32_t id_ = s.id
        cdef int c = 1 if clear else 0, rc
        cdef uint64_t[::1] words
        cdef PyThread_type_lock lock
        out = np.empty(((s.size >> self.pt.cfg.granule_shift) + 63) // 64, dtype=np.uint64)
        words = out
        lock = self._go()
        with nogil:
            PyThread_acquire_lock(lock, WAIT_LOCK)
            rc = s2pt_get_dirty_log(&self.mmu, id_, &words[0], c)
            PyThread_release_lock(lock)
        self._back()
        if rc:
            _raise(rc)
        return out

    def clear_dirty_log(self, slot, first_page, mask):
        """KVM_CLEAR_DIRTY_LOG: clear the dirty bits set in ``mask`` (an int for 64 pages, or
        a uint64 array, one word per 64 pages) from page ``first_page`` (a multiple of 64) of
        the slot, and write-protect those pages again (one TLBI_WRPROTECT event)."""
        cdef const s2pt_memslot *s = self._logging(slot)
        cdef uint32_t id_ = s.id
        cdef uint64_t first = _u64(first_page, "first_page"), one
        cdef const uint64_t[::1] words
        cdef int rc
        if isinstance(mask, (np.ndarray, list, tuple)):
            words = _u64_array(mask, "mask")
        else:
            one = _u64(mask, "mask")
            words = np.array([one], dtype=np.uint64)
        if first & 63:
            raise InvalidArgumentError(f"first_page={first} must be a multiple of 64")
        lock = self._go()
        with nogil:
            PyThread_acquire_lock(lock, WAIT_LOCK)
            rc = s2pt_clear_dirty_log(&self.mmu, id_, first,
                                      &words[0] if words.shape[0] else NULL,
                                      <size_t>words.shape[0])
            PyThread_release_lock(lock)
        self._back()
        if rc == S2PT_ERANGE:
            raise RangeError(f"first_page={first} and the mask's set bits must name pages of "
                             f"memslot {slot} ({s.size >> self.pt.cfg.granule_shift} pages)")
        if rc:
            _raise(rc)

    def fault(self, ipa, access):
        """Run KVM's stage-2 abort handler for one guest access (kvm_handle_guest_abort /
        user_mem_abort) and return the :class:`FaultOutcome` (``HIT`` if the access does
        not fault). Raises PoolExhaustedError (nothing changed) if a mapping needs pages the
        pool does not have."""
        self._sync()
        cdef uint32_t outcome = 0
        cdef uint64_t i = _u64(ipa, "ipa")
        cdef int rc = s2pt_handle_fault(&self.mmu, i, _access_arg(access), &outcome)
        if rc == 0:
            return _OUTCOME[outcome]
        if rc == S2PT_EINVAL:
            raise InvalidArgumentError(f"access={access!r} must be an Access")
        self._fail(rc, i & ~((1 << self.pt.cfg.granule_shift) - 1), 1 << self.pt.cfg.granule_shift)

    def access_many(self, ipas, access=Access.READ):
        """Run guest accesses in order, in C: each is translated; on a stage-2 fault the abort
        handler runs (as :meth:`fault`) and the access is retried, up to 4 handler runs (an
        access-flag fault can be followed by a permission fault); MMIO, PERMISSION and ABORT
        end it. Returns ``(pa, outcome)``: uint64 PAs (0 where the access exited) and uint8
        :class:`FaultOutcome` codes of the last handler run (HIT where none ran). A
        PoolExhaustedError carries ``index``; the accesses before it stay applied."""
        cdef const uint64_t[::1] src = _u64_array(ipas)
        cdef uint32_t acc = _access_arg(access)
        cdef Py_ssize_t n = src.shape[0]
        cdef uint64_t[::1] pa_v
        cdef uint8_t[::1] oc_v
        cdef size_t done = 0
        cdef PyThread_type_lock lock
        cdef int rc = 0
        self._live()
        if acc > S2PT_ACCESS_EXEC_EL0:
            raise InvalidArgumentError(f"access={access!r} must be an Access")
        pa, outcome = np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.uint8)
        if n == 0:
            return pa, outcome
        pa_v, oc_v = pa, outcome
        lock = self._go()
        with nogil:
            PyThread_acquire_lock(lock, WAIT_LOCK)
            rc = s2pt_access_many(&self.mmu, &src[0], <size_t>n, acc, &pa_v[0], &oc_v[0],
                                  &done)
            PyThread_release_lock(lock)
        self._back()
        if rc:
            self._fail_at(rc, done, src[done] & ~((1 << self.pt.cfg.granule_shift) - 1),
                          1 << self.pt.cfg.granule_shift)
        return pa, outcome

    def fault_counts(self, clear=False):
        """Handler runs per :class:`FaultOutcome` since the VM was made (or last cleared);
        ``HIT`` counts the accesses that needed no handler."""
        cdef int k
        self._live()
        counts = {_OUTCOME[k]: self.mmu.counts[k] for k in range(S2PT_OUTCOME__COUNT)}
        if clear:
            memset(self.mmu.counts, 0, sizeof(self.mmu.counts))
        return counts

    cdef int _fail(self, int rc, uint64_t ipa, uint64_t size, object pa=None, object prot=None,
                   object memattr=None) except -1:
        gran = 1 << self.pt.cfg.granule_shift
        if rc == S2PT_EALIGN:
            what = f"ipa={ipa:#x}, size={size:#x}" + ("" if pa is None else f", pa={pa:#x}")
            detail = f"{what} must be multiples of the {gran}-byte granule"
        elif rc == S2PT_ERANGE:
            detail = (f"[{ipa:#x}, {ipa:#x}+{size:#x}) must lie within the "
                      f"{self.pt.cfg.ipa_bits}-bit IPA space")
            if pa is not None:
                detail += f" and [{pa:#x}, +{size:#x}) within the {self.pt.cfg.pa_bits}-bit PA space"
        elif rc == S2PT_EINVAL:
            fwb = "with" if self.pt.cfg.flags & S2PT_CONFIG_FWB else "without"
            detail = (f"prot={prot!r}, memattr={memattr!r}: prot is a Prot (PX and UX "
                      f"together unless the VM has xnx=True), memattr a MemAttr this VM "
                      f"({fwb} FWB) can express, no execute on Device memory")
        elif rc == S2PT_ENOMEM:
            detail = f"the pool has {self.pool.free} free page(s), not enough for this change"
        else:
            detail = None
        return _raise(rc, detail)

    # -- queries ----------------------------------------------------------------------------
    def translate(self, ipa, access=Access.READ):
        """The architectural stage-2 translation of ``ipa`` for ``access``.

        Returns a :class:`Translation`; raises :class:`Stage2Fault` with the kind, level and
        ESR fault status code hardware would report: translation (at the level the walk
        stopped; level 0 above the IPA size), then access flag, then permission (leaf level).
        """
        self._sync()
        cdef s2pt_translation t
        cdef s2pt_fault f
        cdef uint64_t i = _u64(ipa, "ipa")
        cdef int rc = s2pt_translate(&self.pt, i, _access_arg(access), &t, &f)
        if rc == 0:
            return _translation(&t)
        if rc == S2PT_EFAULT:
            raise Stage2Fault(f.kind, f.level, f.fsc, f.ipa)
        if rc == S2PT_EINVAL:
            raise InvalidArgumentError(f"access={access!r} must be an Access")
        _raise(rc)

    def translate2(self, va, s1, access=Access.READ):
        """The translation of guest virtual address ``va`` through ``s1`` (the guest's
        stage-1 tables, whose pages this VM maps: a :class:`Stage1`, or a :class:`Regime`
        whose TTBR0 / TTBR1 tables VA[55] picks) and then this VM, as an EL1&0 access with
        both stages on. Every descriptor read is in hardware order in the result's
        ``steps``: for each stage-1 level the stage-2 walk of the descriptor's IPA, then the
        descriptor; then the stage-2 walk of the output IPA (24 reads for 4 + 4 levels).

        Returns a :class:`Translation2`. Raises :class:`Stage1Fault` for a stage-1 fault (a VA
        outside its half's range, or in a half without tables, faults at level 0) and
        :class:`Stage2Fault` (``va`` set; ``s1ptw`` True with the descriptor's IPA when the
        fault hit a stage-1 table read, which needs stage-2 read permission and AF).
        ``access`` is a :class:`GuestAccess` (EL0 data accesses included)."""
        cdef s2pt_regime r
        cdef s2pt_translation2 t
        cdef s2pt_fault2 f
        cdef s2pt_nested_step steps[S2PT_MAX_NESTED_STEPS]
        cdef uint32_t n = 0, k
        cdef uint64_t v = _u64(va, "va")
        cdef uint32_t acc = _access_arg(access)
        cdef int rc
        if acc > S2PT_ACCESS_WRITE_EL0:
            raise InvalidArgumentError(f"access={access!r} must be a GuestAccess")
        self._sync()
        self._live()
        tables = _regime_of(s1, &r)
        rc = s2pt_translate2(&self.pt, &r, v, acc, &t, &f, steps, &n)
        if rc == S2PT_EINVAL:
            raise InvalidArgumentError(f"{s1!r} is not a regime of stage-1 tables")
        if rc == S2PT_EFAULT:
            if f.stage == 1:
                raise Stage1Fault(f.kind, f.level, f.fsc, f.va)
            raise Stage2Fault(f.kind, f.level, f.fsc, f.ipa, va=f.va, s1ptw=f.s1ptw != 0)
        if rc:
            _raise(rc)
        return Translation2(t.pa, t.ipa, _translation_s1(&t.s1), _translation(&t.s2),
                            _PROT[t.prot], _MEMATTR[t.memattr] if t.memattr < 16 else t.memattr,
                            tuple([NestedStep(steps[k].stage, steps[k].level, steps[k].ipa,
                                              steps[k].desc_pa, steps[k].desc)
                                   for k in range(n)]))

    def translate2_many(self, vas, s1, access=Access.READ, *, ipa=None):
        """:meth:`translate2` for every VA of a 1-D uint64 array, in one C loop without the
        GIL, holding the pools of this VM and of ``s1`` (a :class:`Stage1` or a
        :class:`Regime`), so that no other thread changes the tables meanwhile.

        Returns ``(pa, fsc, stage, accesses)``: uint64 PAs (0 where it faulted); uint8 fault
        status codes (``FSC_NONE`` where translated; a stage-2 fault on a stage-1 table read
        has ``FSC_S1PTW`` set, as ESR_EL2.ISS bit 7); uint8 faulting stage (0 where
        translated, else 1 or 2); uint8 descriptor reads of each walk, the faulting one
        included (``len(translate2(va).steps)``: 24 for a 4 + 4 level page walk), as a
        walk without caches makes them. ``ipa``, a caller-owned uint64 array of the same
        length, receives the IPAs: the output IPA, or the IPA a stage-2 fault names (the
        descriptor's with S1PTW), 0 after a stage-1 fault.
        """
        cdef const uint64_t[::1] src = _u64_array(vas)
        cdef uint32_t acc = _access_arg(access)
        cdef Py_ssize_t n = src.shape[0]
        cdef uint64_t[::1] pa_v, ipa_v
        cdef uint8_t[::1] fsc_v, stage_v, reads_v
        cdef uint64_t *ipa_p = NULL
        cdef s2pt_regime r
        cdef PyThread_type_lock locks[3]
        cdef int nlocks = 0, j
        cdef int64_t rc
        tables = _regime_of(s1, &r)
        self._live()
        if acc > S2PT_ACCESS_WRITE_EL0:
            raise InvalidArgumentError(f"access={access!r} must be a GuestAccess")
        pa = np.empty(n, dtype=np.uint64)
        fsc, stage, reads = (np.empty(n, dtype=np.uint8), np.empty(n, dtype=np.uint8),
                             np.empty(n, dtype=np.uint8))
        pa_v, fsc_v, stage_v, reads_v = pa, fsc, stage, reads
        if ipa is not None:
            if (not isinstance(ipa, np.ndarray) or ipa.dtype != np.uint64 or ipa.ndim != 1
                    or ipa.shape[0] != n or not ipa.flags.c_contiguous or not ipa.flags.writeable):
                raise ArgumentTypeError(
                    f"ipa must be a writable C-contiguous 1-D uint64 array of length {n}")
            ipa_v = ipa
            if n:
                ipa_p = &ipa_v[0]
        if not n:
            return pa, fsc, stage, reads
        self._sync()
        # Every pool involved is held for the call, each once, in one order (by address)
        # so that threads passing them in other orders cannot deadlock.
        pools = sorted({id(p): p for p in [self.pool] + [t.pool for t in tables]}.values(),
                       key=id)
        for pool in pools:
            (<PagePool>pool).busy += 1
            locks[nlocks] = (<PagePool>pool).lock
            nlocks += 1
        with nogil:
            for j in range(nlocks):
                PyThread_acquire_lock(locks[j], WAIT_LOCK)
            rc = s2pt_translate2_many(&self.pt, &r, &src[0], n, acc, &pa_v[0], ipa_p,
                                      &fsc_v[0], &stage_v[0], &reads_v[0])
            for j in range(nlocks - 1, -1, -1):
                PyThread_release_lock(locks[j])
        for pool in pools:
            (<PagePool>pool).busy -= 1
        if rc < 0:
            _raise(<int>rc)
        return pa, fsc, stage, reads

    def lookup(self, ipa):
        """The leaf translating ``ipa`` (no access-flag or permission check), or None."""
        self._sync()
        cdef s2pt_translation t
        cdef s2pt_fault f
        cdef int rc = s2pt_lookup(&self.pt, _u64(ipa, "ipa"), &t, &f)
        if rc == 0:
            return _translation(&t)
        if rc == S2PT_EFAULT:
            return None
        _raise(rc)

    def translate_many(self, ipas, access=Access.READ, *, out=None):
        """Translate every IPA of a 1-D uint64 array in one C loop.

        Returns ``(pa, fsc)``: uint64 output addresses (0 where it faulted) and uint8 fault
        status codes (``FSC_NONE`` where it did not). A numpy input must already be a
        C-contiguous uint64 array (no silent casts); sequences of ints are converted.
        ``out=(pa, fsc)`` fills caller-owned arrays (C-contiguous uint64 and uint8 of the same
        length) instead of allocating, for callers that translate batch after batch.
        """
        cdef const uint64_t[::1] src = _u64_array(ipas)
        cdef uint32_t acc = _access_arg(access)
        cdef Py_ssize_t n = src.shape[0]
        cdef uint64_t[::1] pa_v
        cdef uint8_t[::1] fsc_v
        cdef PagePool pool
        cdef int64_t rc
        self._live()
        if out is None:
            pa, fsc = np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.uint8)
        else:
            pa, fsc = _out_arrays(out, n)
        pa_v, fsc_v = pa, fsc
        if acc > S2PT_ACCESS_EXEC_EL0:
            raise InvalidArgumentError(f"access={access!r} must be an Access")
        if n:
            self._sync()
            pool = self.pool
            pool.busy += 1
            with nogil:
                PyThread_acquire_lock(pool.lock, WAIT_LOCK)
                rc = s2pt_translate_many(&self.pt, &src[0], n, acc, &pa_v[0], &fsc_v[0])
                PyThread_release_lock(pool.lock)
            pool.busy -= 1
            if rc < 0:
                _raise(<int>rc)
        return pa, fsc

    def walk(self, ipa):
        """Every descriptor the walk of ``ipa`` reads, root first, as :class:`WalkStep`."""
        self._sync()
        return _walk_list(&self.pt, _u64(ipa, "ipa"))

    def mappings(self, ipa=0, size=None):
        """Iterate over the valid leaves intersecting ``[ipa, ipa + size)`` in IPA order, one
        :class:`Mapping` per leaf (whole leaves, even where they extend past the range).
        ``size=None`` means up to the top of the IPA space."""
        self._sync()
        cdef uint64_t start = _u64(ipa, "ipa"), n
        cdef uint64_t top = (<uint64_t>1) << self.pt.cfg.ipa_bits
        self._live()
        if size is None:
            n = top - start if start < top else 0
        else:
            n = _u64(size, "size")
        cdef uint64_t end = start + n
        # The first chunk is read now, so bad arguments raise here rather than on iteration.
        chunk, next_ipa = self._leaf_chunk(start, end)
        return self._iter_mappings(chunk, next_ipa, end)

    def _iter_mappings(self, list chunk, uint64_t start, uint64_t end):
        yield from chunk
        while start < end:
            chunk, start = self._leaf_chunk(start, end)
            yield from chunk

    cdef tuple _leaf_chunk(self, uint64_t start, uint64_t end):
        cdef s2pt_leaf out[256]
        cdef size_t n = 0, k
        cdef uint64_t next_ipa = end
        cdef int rc = s2pt_leaves(&self.pt, start, end - start, out, 256, &n, &next_ipa)
        if rc:
            self._fail(rc, start, end - start)
        chunk = [Mapping(out[k].ipa, out[k].pa, out[k].size, out[k].level, _PROT[out[k].prot],
                         _MEMATTR[out[k].memattr], bool(out[k].af), out[k].sw)
                 for k in range(n)]
        return chunk, next_ipa

    def stats(self):
        """Shape of the tables: ``table_pages`` (roots included), ``table_pages_by_level``,
        ``leaves_by_level`` (valid leaves), ``mapped_bytes`` and ``annotated_bytes`` (owner
        annotations)."""
        self._sync()
        cdef s2pt_stats_t st
        cdef int rc = s2pt_stats(&self.pt, &st)
        cdef int level
        if rc:
            _raise(rc)
        levels = range(self.pt.cfg.start_level, 4)
        return {
            "table_pages": st.table_pages,
            "table_pages_by_level": {level: st.table_pages_by_level[level] for level in levels},
            "leaves_by_level": {level: st.leaves_by_level[level] for level in levels},
            "mapped_bytes": st.mapped_bytes,
            "annotated_bytes": st.annotated_bytes,
            "pool_used": self.pool.pool.used,
            "pool_free": self.pool.pool.capacity - self.pool.pool.used,
        }

    def check(self):
        """Verify every invariant (counts, reachability, ownership, descriptor sanity, the
        pool's free list); raises :class:`InvariantError` describing the first violation."""
        self._sync()
        _check_tables(&self.pt)

    def dump(self):
        """The tables as text in KVM's stage-2 ptdump format (the per-VM debugfs file
        ``stage2_page_tables``): a ``---[ Guest IPA ]---`` line, then one line per run of
        adjacent entries of one level with the same attribute bits: ``start-end``, size,
        level, and the F / R / W / XN (px ux) / AF / BLK columns. Formatting is in C
        (``s2pt_dump``)."""
        self._sync()
        cdef char small[4096]
        cdef char *buf = NULL
        cdef size_t needed = 0
        cdef int rc = s2pt_dump(&self.pt, small, sizeof(small), &needed)
        if rc:
            _raise(rc)
        if needed < sizeof(small):
            return small[:needed].decode("ascii")
        # Too big for the stack buffer: the GIL is held throughout, so the tables cannot
        # change before the second walk.
        buf = <char *>malloc(needed + 1)
        if buf == NULL:
            raise MemoryError()
        try:
            rc = s2pt_dump(&self.pt, buf, needed + 1, &needed)
            if rc:
                _raise(rc)
            return buf[:needed].decode("ascii")
        finally:
            free(buf)

    def tlbi_log(self, clear=True):
        """TLB invalidations the changes so far require, in order, as a numpy structured array
        of TLBI_DTYPE: ``kind`` (TLBI_IPA / TLBI_RANGE / TLBI_VMID), ``level`` (leaf level
        hint or TLBI_LEVEL_UNKNOWN), ``ipa``, ``size``, ``reason`` (TLBI_UNMAP, TLBI_TABLE,
        TLBI_REPLACE, TLBI_SPLIT, TLBI_COALESCE, TLBI_PERM, TLBI_AF, TLBI_DESTROY,
        TLBI_OVERFLOW) and ``bbm`` (1: the entry was invalid while this invalidation ran and
        the new entry was written after it). When more happened than the log holds, it holds
        one TLBI_VMID event instead. ``clear`` empties the log. Which operation logs what is
        in README.md ("TLB events") and in s2pt.h."""
        self._sync()
        return _tlbi_events(&self.log, clear)

    def __reduce__(self):
        return (_vm_from_state, (self.pool, self._state()))

    def _state(self):
        """The VM as plain values and numpy arrays (its pool travels separately): geometry,
        root, owner id, TLB log, memslots with their dirty bitmaps, fault counters."""
        cdef uint32_t k
        cdef const s2pt_memslot *s
        cdef uint64_t words
        self._sync()
        slots = np.zeros((self.mmu.nslots, 6), dtype=np.uint64)
        dirty = []
        for k in range(self.mmu.nslots):
            s = &self.mmu.slots[k]
            slots[k] = (s.ipa, s.pa, s.size, s.backing, s.id, s.flags)
            if s.flags & S2PT_MEMSLOT_LOG_DIRTY:
                words = ((s.size >> self.pt.cfg.granule_shift) + 63) // 64
                dirty.append(_view(self, s.dirty, words, 8, b"Q", np.uint64).copy())
        return {
            "version": STATE_VERSION, "vtcr": self.config.cfg.vtcr, "vmid": self.config.cfg.vmid,
            "flags": self.config.cfg.flags, "destroyed": int(self.pt.destroyed),
            "root_pa": self.pt.root_pa, "owner": self.pt.owner, "frees": self.pt.frees,
            "tlbi_capacity": self.log.capacity, "tlbi_overflowed": self.log.overflowed,
            "tlbi": self.tlbi_log(clear=False),
            "slots": slots,
            "dirty": np.concatenate(dirty) if dirty else np.zeros(0, dtype=np.uint64),
            "counts": np.array([self.mmu.counts[k] for k in range(S2PT_OUTCOME__COUNT)],
                               dtype=np.uint64),
        }

    def diff(self, other):
        """The leaves (valid mappings) that differ between this VM's IPA space and
        ``other``'s: those of this VM that ``other`` does not have exactly (IPA, size, level,
        PA, permissions, attributes, AF, software bits), then those of ``other`` this VM does
        not have, each group in IPA order. Empty when both translate every IPA alike with the
        same leaves. ``other`` may be any VM with ``mappings()`` (the reference model too)."""
        if not callable(getattr(other, "mappings", None)):
            raise ArgumentTypeError(f"diff() takes a VM, not {type(other).__name__}")
        mine, theirs = list(self.mappings()), list(other.mappings())
        a, b = set(mine), set(theirs)
        return [m for m in mine if m not in b] + [m for m in theirs if m not in a]

    def destroy(self):
        """Free every table page (roots included) back to the pool. Further use of this VM
        raises DestroyedError; destroying twice is harmless."""
        self._sync()
        if not self.pt.destroyed:
            s2pt_pgtable_destroy(&self.pt)

    def __enter__(self):
        self._live()
        return self

    def __exit__(self, *exc):
        self.destroy()
        return False

    def __repr__(self):
        state = "destroyed" if self.pt.destroyed else f"{self.pt.table_pages} table pages"
        return (f"Stage2(ipa_bits={self.ipa_bits}, granule={self.granule}, "
                f"pa_bits={self.pa_bits}, vmid={self.vmid}, {state})")


# As Stage2: `pool` must outlive __dealloc__, which returns the tables' pages to it.
@cython.no_gc_clear
cdef class Stage1:
    """A guest's stage-1 translation tables (EL1&0 regime, TTBR0_EL1: VA -> IPA) on the same C
    core as :class:`Stage2` (one walker, pool and reference counts; the stage-1 descriptor
    format). The tables live in guest RAM: ``pool`` is a :class:`PagePool` whose base address
    is an IPA, and descriptors hold IPAs. Map that range in the VM (:meth:`Stage2.map`) before
    walking through both stages with :meth:`Stage2.translate2`.

    ``pool=None`` makes a pool of ``DEFAULT_S1_POOL_BYTES`` at IPA ``DEFAULT_S1_POOL_IPA``.
    ``ttbr=1`` makes the tables of the upper VA range (TTBR1_EL1: VAs from ``2**64 -
    2**va_bits`` up, which every call takes and reports whole); :class:`Regime` pairs the two
    halves for the nested walk.
    ``mair`` is MAIR_EL1 (for the combined memory type of the nested walk; ``attr`` of
    :meth:`map` indexes it). Every call validates its arguments and, on any error, changes
    nothing; :meth:`tlbi_log` gives the TLB invalidations the changes require.
    """

    def __cinit__(self):
        memset(&self.pt, 0, sizeof(self.pt))
        self.pt.destroyed = 1

    def __init__(self, va_bits=48, granule=4096, ips_bits=48, asid=0, pool=None, *,
                 lpa2=False, mair=DEFAULT_MAIR, ttbr=0, tlbi_capacity=4096):
        cdef s2pt_config cfg
        cdef PagePool p
        cdef uint32_t flags = S2PT_CONFIG_LPA2 if lpa2 else 0
        cdef uint32_t cap = _u32(tlbi_capacity, "tlbi_capacity")
        cdef int rc
        if not self.pt.destroyed:
            raise InvalidArgumentError("Stage1 is already initialised")
        self.mair_value = _u64(mair, "mair")
        if ttbr not in (0, 1) or isinstance(ttbr, bool):
            raise InvalidArgumentError(f"ttbr={ttbr!r} must be 0 (TTBR0_EL1) or 1 (TTBR1_EL1)")
        if ttbr:
            flags |= S2PT_CONFIG_TTBR1
        rc = s2pt_s1_config_init(&cfg, _u32(va_bits, "va_bits"), _u32(granule, "granule"),
                                 _u32(ips_bits, "ips_bits"), _u32(asid, "asid"), flags)
        if rc:
            raise ConfigError(
                f"va_bits={va_bits}, granule={granule}, ips_bits={ips_bits}, asid={asid}, "
                f"lpa2={lpa2}: stage 1 takes 25..48-bit VAs (52 with 64K or lpa2), "
                f"an IPS of 32/36/40/42/44/48 bits (52 with 64K or lpa2) and a 16-bit ASID")
        if pool is None:
            p = PagePool(DEFAULT_S1_POOL_BYTES // granule, granule, DEFAULT_S1_POOL_IPA)
        elif isinstance(pool, PagePool):
            p = pool
            p._ready()
        else:
            raise InvalidArgumentError(f"pool must be a PagePool or None, not {type(pool)}")
        p._wait()
        if cap:
            self.events = <s2pt_tlbi *>_mem_get(cap * sizeof(s2pt_tlbi), 0)
            if self.events == NULL:
                raise MemoryError()
        self.log.events = self.events
        self.log.capacity = cap
        rc = s2pt_pgtable_init(&self.pt, &cfg, &p.pool)
        if rc:
            if rc == S2PT_ECONFIG:
                raise ConfigError(
                    f"pool (granule {p.granule}, IPAs up to {p.end_pa:#x}) does not suit these "
                    f"tables (granule {granule}, {ips_bits}-bit IPS)")
            _raise(rc, f"a root page from a pool with {p.free} free")
        self.pt.tlbi = &self.log
        self.pool = p
        self.va_base = (<uint64_t>0 - ((<uint64_t>1) << cfg.ipa_bits)) if ttbr else 0

    def __dealloc__(self):
        if not self.pt.destroyed:
            s2pt_pgtable_destroy(&self.pt)
        _mem_put(self.events, self.log.capacity * sizeof(s2pt_tlbi), 0, 0)

    cdef uint64_t _in(self, object va) except? 0:
        """The input the C core takes for ``va``: the VA itself, or for TTBR1 tables its low
        VA-size bits (what the walk indexes); an upper-half VA below the range is refused."""
        cdef uint64_t v = _u64(va, "va")
        if self.va_base == 0:
            return v
        if v < self.va_base:
            raise RangeError(f"address out of range: va={v:#x} is below the TTBR1 range, which "
                             f"starts at {self.va_base:#x} ({self.pt.cfg.ipa_bits}-bit VAs)")
        return v - self.va_base

    cdef inline int _sync(self) except -1:
        if self.pool is not None and self.pool.busy:
            self.pool._wait()
        return 0

    cdef int _live(self) except -1:
        if self.pt.destroyed:
            raise DestroyedError("this Stage1 was destroyed")
        return 0

    # -- geometry and registers -----------------------------------------------------------
    @property
    def va_bits(self): return self.pt.cfg.ipa_bits
    @property
    def ttbr_index(self):
        """0 for TTBR0_EL1 tables (the low VAs), 1 for TTBR1_EL1 (the high VAs)."""
        return 1 if self.pt.cfg.flags & S2PT_CONFIG_TTBR1 else 0
    @property
    def va_start(self):
        """The lowest VA these tables translate: 0, or ``2**64 - 2**va_bits`` for TTBR1."""
        return self.va_base
    @property
    def ips_bits(self): return self.pt.cfg.pa_bits
    @property
    def granule(self): return 1 << self.pt.cfg.granule_shift
    @property
    def asid(self): return self.pt.cfg.vmid
    @property
    def lpa2(self): return bool(self.pt.cfg.flags & S2PT_CONFIG_LPA2)
    @property
    def levels(self): return self.pt.cfg.levels
    @property
    def start_level(self): return self.pt.cfg.start_level
    @property
    def root_entries(self): return self.pt.cfg.root_entries
    @property
    def min_block_level(self): return self.pt.cfg.min_block_level
    @property
    def t0sz(self): return self.pt.cfg.t0sz
    @property
    def tcr(self):
        """TCR_EL1 for these tables alone: T0SZ, IRGN0/ORGN0 write-back, SH0 inner shareable,
        TG0 and EPD1 (no TTBR1 walks), or for TTBR1 tables T1SZ ... TG1 and EPD0; IPS, AS for
        a 16-bit ASID, DS with LPA2. :attr:`Regime.tcr` combines two halves."""
        return self.pt.cfg.vtcr
    @property
    def ttbr(self):
        """TTBR0_EL1 (TTBR1_EL1 for ``ttbr=1``): the root's IPA (BADDR), the ASID in 63:48."""
        self._live()
        return s2pt_vttbr(&self.pt)
    @property
    def mair(self): return self.mair_value
    @property
    def root_ipa(self):
        self._live()
        return self.pt.root_pa
    @property
    def table_pages(self): return self.pt.table_pages
    @property
    def destroyed(self): return bool(self.pt.destroyed)

    # -- changes ----------------------------------------------------------------------------
    def map(self, va, ipa, size, prot=Prot.RW, attr=0, *, blocks=True, user=False,
            global_=True, af=True):
        """Map ``[va, va + size)`` to the IPAs ``[ipa, ipa + size)`` with the same exact-range
        semantics as :meth:`Stage2.map` (largest leaves alignment allows unless
        ``blocks=False``, partial blocks split, break-before-make). ``prot`` needs ``R``;
        ``user=True`` adds ``Prot.USER`` (EL0 access); ``attr`` is the MAIR index (0..7,
        AttrIndx); ``global_=False`` sets nG (the leaf belongs to this ASID)."""
        self._sync()
        cdef uint64_t v = self._in(va), i = _u64(ipa, "ipa"), n = _u64(size, "size")
        cdef uint32_t p = _prot_arg(prot), a = _u32(attr, "attr")
        cdef uint32_t flags = _map_flags(blocks, af, _SW0)
        cdef int rc
        if user:
            p |= S2PT_PROT_USER
        if not global_:
            flags |= S2PT_MAP_NG
        rc = _map_call(&self.pt, self.pool, v, i, n, p, a, flags)
        if rc:
            self._fail(rc, v, n, i, prot, attr)

    def unmap(self, va, size):
        """Unmap exactly ``[va, va + size)``; returns the bytes that were mapped. Emptied
        tables are freed at once, upward."""
        self._sync()
        cdef uint64_t v = self._in(va), n = _u64(size, "size"), unmapped = 0
        cdef int rc = _unmap_call(&self.pt, self.pool, v, n, &unmapped)
        if rc:
            self._fail(rc, v, n)
        return unmapped

    def protect(self, va, size, prot, *, user=False):
        """Set the permissions of every mapped leaf in ``[va, va + size)`` (``user=True`` adds
        ``Prot.USER``); holes stay holes, a block covered in part is split first."""
        self._sync()
        cdef uint64_t v = self._in(va), n = _u64(size, "size")
        cdef uint32_t p = _u32(prot, "prot")
        cdef int rc
        if user:
            p |= S2PT_PROT_USER
        rc = s2pt_protect(&self.pt, v, n, p)
        if rc:
            self._fail(rc, v, n, None, prot)

    cdef int _fail(self, int rc, uint64_t va, uint64_t size, object ipa=None, object prot=None,
                   object attr=None) except -1:
        gran = 1 << self.pt.cfg.granule_shift
        va += self.va_base                  # the VA the caller gave (TTBR1: the whole VA)
        if rc == S2PT_EALIGN:
            what = f"va={va:#x}, size={size:#x}" + ("" if ipa is None else f", ipa={ipa:#x}")
            detail = f"{what} must be multiples of the {gran}-byte granule"
        elif rc == S2PT_ERANGE:
            space = (f"TTBR1 range [{self.va_base:#x}, 2**64)" if self.va_base else
                     f"{self.pt.cfg.ipa_bits}-bit VA space")
            detail = f"[{va:#x}, {va:#x}+{size:#x}) must lie within the {space}"
            if ipa is not None:
                detail += (f" and [{ipa:#x}, +{size:#x}) within the {self.pt.cfg.pa_bits}-bit "
                           f"IPA space")
        elif rc == S2PT_EINVAL:
            detail = (f"prot={prot!r}, attr={attr!r}: prot is a Prot with R (USER, W, PX, UX "
                      f"optional), attr a MAIR index 0..7")
        elif rc == S2PT_ENOMEM:
            detail = f"the pool has {self.pool.free} free page(s), not enough for this change"
        else:
            detail = None
        return _raise(rc, detail)

    # -- queries ----------------------------------------------------------------------------
    def translate(self, va, access=Access.READ):
        """The stage-1 translation of ``va`` (to an IPA: the result's ``pa``) for ``access``
        (a :class:`GuestAccess`), with the EL1&0 permission rules: EL0 data access needs
        ``USER``, EL1 never executes what EL0 may write, EL0 may execute a page it cannot read.
        Raises :class:`Stage1Fault`."""
        self._sync()
        cdef s2pt_translation t
        cdef s2pt_fault f
        cdef uint64_t v = self._in(va)
        cdef int rc = s2pt_translate(&self.pt, v, _access_arg(access), &t, &f)
        if rc == 0:
            return _translation_s1(&t)
        if rc == S2PT_EFAULT:
            raise Stage1Fault(f.kind, f.level, f.fsc, v + self.va_base)
        if rc == S2PT_EINVAL:
            raise InvalidArgumentError(f"access={access!r} must be a GuestAccess")
        _raise(rc)

    def lookup(self, va):
        """The leaf translating ``va`` (no access-flag or permission check), or None."""
        self._sync()
        cdef s2pt_translation t
        cdef s2pt_fault f
        cdef int rc = s2pt_lookup(&self.pt, self._in(va), &t, &f)
        if rc == 0:
            return _translation_s1(&t)
        if rc == S2PT_EFAULT:
            return None
        _raise(rc)

    def walk(self, va):
        """Every descriptor the stage-1 walk of ``va`` reads, root first (``table_pa`` and
        ``desc_pa`` are IPAs here), as :class:`WalkStep`."""
        self._sync()
        return _walk_list(&self.pt, self._in(va))

    def mappings(self, va=None, size=None):
        """The valid leaves intersecting ``[va, va + size)`` in VA order, as :class:`Mapping`
        (``ipa`` is the VA, ``pa`` the IPA, ``memattr`` the MAIR index), whole leaves.
        ``va=None`` is :attr:`va_start`; ``size=None`` runs to the top of the range."""
        self._sync()
        cdef uint64_t start = self._in(self.va_base if va is None else va), end, next_va
        cdef uint64_t top = (<uint64_t>1) << self.pt.cfg.ipa_bits
        cdef s2pt_leaf out[256]
        cdef size_t got = 0, k
        cdef int rc
        self._live()
        end = (top if start < top else start) if size is None else start + _u64(size, "size")
        result = []
        while True:
            rc = s2pt_leaves(&self.pt, start, end - start, out, 256, &got, &next_va)
            if rc:
                self._fail(rc, start, end - start)
            result.extend([Mapping(out[k].ipa + self.va_base, out[k].pa, out[k].size,
                                   out[k].level, _PROT[out[k].prot], out[k].memattr,
                                   bool(out[k].af), out[k].sw) for k in range(got)])
            if next_va >= end:
                return result
            start = next_va

    def tlbi_log(self, clear=True):
        """The TLB invalidations the changes so far require, as :meth:`Stage2.tlbi_log` gives
        them (same rules: the Arm ARM's break-before-make holds at both stages), with VAs in
        the ``ipa`` field (whole VAs for TTBR1 tables). At stage 1 an IPA event is TLBI VAE1IS
        (VALE1IS with a level hint; VAAE1IS / VAALE1IS for a global leaf: every ASID), a range
        event TLBI RVAE1IS, and a VMID event everything of the ASID (ASIDE1IS; VMALLE1IS when
        global leaves went)."""
        self._sync()
        out = _tlbi_events(&self.log, clear)
        if self.va_base:
            out["ipa"][out["kind"] != TLBI_VMID] += np.uint64(self.va_base)
        return out

    def check(self):
        """Verify every invariant of the tables and the pool; raises :class:`InvariantError`."""
        self._sync()
        _check_tables(&self.pt)

    def destroy(self):
        """Free every table page back to the pool; further use raises DestroyedError."""
        self._sync()
        if not self.pt.destroyed:
            s2pt_pgtable_destroy(&self.pt)

    # -- state that travels (pickle, copy.deepcopy), with its pool as Stage2's does ---------
    def __reduce__(self):
        return (_s1_from_state, (self.pool, self._state()))

    def _state(self):
        """The tables as plain values (their pool travels separately): geometry, MAIR, root,
        owner id, TLB log."""
        self._sync()
        return {
            "version": STATE_VERSION, "va_bits": self.pt.cfg.ipa_bits,
            "granule": 1 << self.pt.cfg.granule_shift, "ips_bits": self.pt.cfg.pa_bits,
            "asid": self.pt.cfg.vmid, "lpa2": self.lpa2, "ttbr": self.ttbr_index,
            "mair": self.mair_value, "destroyed": int(self.pt.destroyed),
            "root_pa": self.pt.root_pa, "owner": self.pt.owner, "frees": self.pt.frees,
            "tlbi_capacity": self.log.capacity, "tlbi_overflowed": self.log.overflowed,
            "tlbi": _tlbi_events(&self.log, False),
        }

    def __repr__(self):
        state = "destroyed" if self.pt.destroyed else f"{self.pt.table_pages} table pages"
        half = ", ttbr=1" if self.va_base else ""
        return (f"Stage1(va_bits={self.va_bits}, granule={self.granule}, "
                f"ips_bits={self.ips_bits}, asid={self.asid}{half}, {state})")


def _s1_from_state(PagePool pool not None, dict state):
    """Stage-1 tables from Stage1._state() over their restored pool (the tree is checked)."""
    cdef Stage1 s1 = Stage1.__new__(Stage1)
    cdef s2pt_config cfg
    cdef const unsigned char[::1] raw
    cdef char msg[256]
    cdef uint32_t cap, flags
    cdef int rc
    _check_version(state, "Stage1")
    try:
        flags = (S2PT_CONFIG_LPA2 if state["lpa2"] else 0) | (
            S2PT_CONFIG_TTBR1 if state["ttbr"] else 0)
        rc = s2pt_s1_config_init(&cfg, _u32(state["va_bits"], "va_bits"),
                                 _u32(state["granule"], "granule"),
                                 _u32(state["ips_bits"], "ips_bits"), _u32(state["asid"], "asid"),
                                 flags)
        cap = _u32(state["tlbi_capacity"], "tlbi_capacity")
        events = np.ascontiguousarray(state["tlbi"], dtype=TLBI_DTYPE)
        destroyed, mair = bool(state["destroyed"]), _u64(state["mair"], "mair")
        root_pa, owner, frees = state["root_pa"], state["owner"], state["frees"]
        overflowed = bool(state["tlbi_overflowed"])
    except KeyError as e:
        raise InvariantError(f"Stage1 state lacks {e}") from None
    if rc:
        raise InvariantError("Stage1 state: geometry s2pt does not build")
    if events.shape[0] > cap:
        raise InvariantError("Stage1 state: the TLB log does not fit")
    pool._ready()
    if cap:
        s1.events = <s2pt_tlbi *>_mem_get(cap * sizeof(s2pt_tlbi), 0)
        if s1.events == NULL:
            raise MemoryError()
    s1.log.events = s1.events
    s1.log.capacity = cap
    if not destroyed:
        rc = s2pt_pgtable_restore(&s1.pt, &cfg, &pool.pool, _u64(root_pa, "root_pa"),
                                  _u32(owner, "owner"), _u64(frees, "frees"), msg, sizeof(msg))
        if rc:
            _raise(rc, msg.decode() or f"root {root_pa:#x}, owner {owner}")
    s1.pt.tlbi = &s1.log
    s1.pool = pool
    s1.mair_value = mair
    s1.va_base = (<uint64_t>0 - ((<uint64_t>1) << cfg.ipa_bits)) if state["ttbr"] else 0
    if events.shape[0]:
        raw = events.view(np.uint8)
        memcpy(s1.events, &raw[0], raw.shape[0])
    s1.log.count = events.shape[0]
    s1.log.overflowed = overflowed
    return s1


cdef class Regime:
    """A guest's EL1&0 stage-1 translation regime: ``ttbr0``, the :class:`Stage1` tables of
    the low VAs (VA[55] = 0), and ``ttbr1``, those of the high VAs (``Stage1(ttbr=1)``);
    either may be None (EPD0 / EPD1 = 1: its VAs fault at level 0). Pass it wherever
    :meth:`Stage2.translate2` and :meth:`Stage2.translate2_many` take a :class:`Stage1`.
    Both tables must share the IPS, LPA2 setting and ASID (one TCR_EL1; TCR_EL1.A1 = 0).
    ``mair`` defaults to the tables' (which must then agree)."""

    def __init__(self, ttbr0=None, ttbr1=None, *, mair=None):
        if self.ttbr0 is not None or self.ttbr1 is not None:
            raise InvalidArgumentError("Regime is already initialised")
        for name, t, half in (("ttbr0", ttbr0, 0), ("ttbr1", ttbr1, 1)):
            if t is None:
                continue
            if not isinstance(t, Stage1):
                raise ArgumentTypeError(f"{name} must be a Stage1 or None, not {type(t)}")
            if (<Stage1>t).ttbr_index != half:
                raise InvalidArgumentError(f"{name} must be Stage1 tables made with ttbr={half}")
        if ttbr0 is None and ttbr1 is None:
            raise InvalidArgumentError("a Regime needs TTBR0 or TTBR1 tables")
        if ttbr0 is not None and ttbr1 is not None:
            mine = ((<Stage1>ttbr0).ips_bits, (<Stage1>ttbr0).lpa2, (<Stage1>ttbr0).asid)
            theirs = ((<Stage1>ttbr1).ips_bits, (<Stage1>ttbr1).lpa2, (<Stage1>ttbr1).asid)
            if mine != theirs:
                raise InvalidArgumentError(
                    f"ttbr0 and ttbr1 must share (ips_bits, lpa2, asid): {mine} != {theirs}")
        if mair is None:
            mairs = {(<Stage1>t).mair_value for t in (ttbr0, ttbr1) if t is not None}
            if len(mairs) != 1:
                raise InvalidArgumentError("the tables' MAIR values differ: pass mair=")
            self.mair_value = mairs.pop()
        else:
            self.mair_value = _u64(mair, "mair")
        self.ttbr0, self.ttbr1 = ttbr0, ttbr1

    @property
    def mair(self):
        """MAIR_EL1."""
        return self.mair_value

    @property
    def tcr(self):
        """TCR_EL1 for both halves: each table's own fields, EPDx for a missing half. A1 = 0
        (the ASID is TTBR0_EL1's) but for a TTBR1-only regime, where A1 = 1 takes it from
        TTBR1_EL1."""
        if self.ttbr1 is None:
            return self.ttbr0.tcr
        if self.ttbr0 is None:
            return self.ttbr1.tcr | _TCR_A1     # the ASID is TTBR1_EL1's (no TTBR0 here)
        return (self.ttbr0.tcr & ~S2PT_TCR_EPD1) | (self.ttbr1.tcr & ~S2PT_TCR_EPD0)

    def registers(self):
        """The system registers a CPU model loads for this regime: a dict of TCR_EL1,
        TTBR0_EL1, TTBR1_EL1 (0 for a missing half) and MAIR_EL1."""
        return {"TCR_EL1": self.tcr,
                "TTBR0_EL1": 0 if self.ttbr0 is None else self.ttbr0.ttbr,
                "TTBR1_EL1": 0 if self.ttbr1 is None else self.ttbr1.ttbr,
                "MAIR_EL1": self.mair_value}

    def __reduce__(self):
        return (_regime_from_state, (self.ttbr0, self.ttbr1, self.mair_value))

    def __repr__(self):
        return f"Regime(ttbr0={self.ttbr0!r}, ttbr1={self.ttbr1!r}, mair={self.mair_value:#x})"


def _regime_from_state(ttbr0, ttbr1, mair):
    return Regime(ttbr0, ttbr1, mair=mair)


cdef tuple _regime_of(object s1, s2pt_regime *r):
    """Fill ``r`` from a Stage1 (its half of a regime) or a Regime; returns the Stage1s it
    holds, each synchronised with other threads and alive."""
    cdef Stage1 t
    if isinstance(s1, Stage1):
        t = <Stage1>s1
        tables = (t,)
        r.ttbr0 = NULL if t.va_base else &t.pt
        r.ttbr1 = &t.pt if t.va_base else NULL
        r.mair = t.mair_value
    elif isinstance(s1, Regime):
        if (<Regime>s1).ttbr0 is None and (<Regime>s1).ttbr1 is None:
            raise InvalidArgumentError("this Regime was never initialised")
        tables = tuple(x for x in ((<Regime>s1).ttbr0, (<Regime>s1).ttbr1) if x is not None)
        r.ttbr0 = NULL if (<Regime>s1).ttbr0 is None else &(<Stage1>(<Regime>s1).ttbr0).pt
        r.ttbr1 = NULL if (<Regime>s1).ttbr1 is None else &(<Stage1>(<Regime>s1).ttbr1).pt
        r.mair = (<Regime>s1).mair_value
    else:
        raise TypeError(f"s1 must be a Stage1 or a Regime, not {type(s1).__name__}")
    for t in tables:
        t._sync()
        t._live()
    return tables


cdef class _Floor:
    """The interpreter's floor for a per-call benchmark: a Cython method taking three
    integers (converted to uint64, as map converts ipa, pa and size) that does nothing."""

    def call(self, uint64_t a, uint64_t b, uint64_t c):
        pass


cdef class _PointerChase:
    """The baseline of a walk's memory reads: one load per entry of ``offsets`` (word
    indexes into ``memory``), each address depending on the value the previous load
    returned (``memory`` is all zeros, so the dependency costs one add). Both are checked
    once here, so the loop needs no bounds."""

    cdef const uint64_t[::1] memory
    cdef const uint64_t[::1] offsets

    def __init__(self, memory, offsets):
        cdef const uint64_t[::1] m = _u64_array(memory)
        cdef const uint64_t[::1] o = _u64_array(offsets)
        if m.shape[0] == 0 or np.any(np.asarray(memory)):
            raise InvalidArgumentError("memory must be a non-empty array of zeros")
        if o.shape[0] and int(np.max(offsets)) >= m.shape[0]:
            raise InvalidArgumentError("offsets must index memory")
        self.memory, self.offsets = m, o

    def run(self):
        """Every load, in order, without the GIL; returns the last value (0) so that the
        loads cannot be dropped."""
        cdef uint64_t value = 0
        cdef Py_ssize_t k
        with nogil:
            for k in range(self.offsets.shape[0]):
                value = self.memory[self.offsets[k] + value]
        return value



# ---- state that travels: pickle, copy.deepcopy, s2pt.save / s2pt.load ---------------------

#: Version of the state pickle and s2pt.save write; a newer one is refused, never guessed at.
STATE_VERSION = 1


def _check_version(dict state, str what):
    version = state.get("version")
    if not isinstance(version, int) or version < 1:
        raise StateFormatError(f"{what} state has no valid format version: {version!r}")
    if version > STATE_VERSION:
        raise StateFormatError(f"{what} state has format version {version}; this s2pt "
                             f"{__import__('s2pt').__version__} reads version "
                             f"{STATE_VERSION} and older: upgrade s2pt to read it")


cdef void _fill(void *dst, object array, size_t n, object dtype, str name) except *:
    cdef const unsigned char[::1] raw
    a = np.ascontiguousarray(array, dtype=dtype)
    if a.ndim != 1 or <size_t>a.shape[0] != n:
        raise InvariantError(f"pool state: {name} holds {a.size} items, expected {n}")
    if n:
        raw = a.view(np.uint8)
        memcpy(dst, &raw[0], raw.shape[0])


def _config_from_state(vtcr, vmid, flags):
    cdef Stage2Config config = Stage2Config.__new__(Stage2Config)
    cdef uint32_t f = _u32(flags, "flags")
    cdef uint32_t lpa2 = f & S2PT_CONFIG_LPA2
    if s2pt_config_from_vtcr(&config.cfg, _u64(vtcr, "vtcr"), _u32(vmid, "vmid"), f & ~lpa2):
        raise InvariantError(f"saved VTCR_EL2 {vtcr:#x} (vmid {vmid}, flags {f:#x}) is not a "
                             f"valid stage-2 configuration")
    if (config.cfg.flags & S2PT_CONFIG_LPA2) != lpa2:
        raise InvariantError(f"saved flags {f:#x} disagree with VTCR_EL2 {vtcr:#x} (DS)")
    return config


def _pool_from_state(dict state):
    """A pool from PagePool._state(): memory and metadata restored verbatim, then checked
    (s2pt_pool_check) before anything can use it."""
    cdef PagePool pool
    cdef uint32_t h, nfree
    cdef char msg[256]
    cdef int rc
    _check_version(state, "pool")
    try:
        refcount = np.asarray(state["refcount"])
        free_stack = np.asarray(state["free_stack"])
        pool = PagePool(state["capacity"], state["granule"], state["base_pa"])
        h, nfree = refcount.shape[0], free_stack.shape[0]
        if h > pool.pool.capacity or nfree > h:
            raise InvariantError(f"pool state: high-water mark {h} / {nfree} free pages for "
                                 f"a pool of {pool.pool.capacity}")
        _fill(pool.mem, state["words"], (<size_t>h << pool.pool.granule_shift) // 8, np.uint64,
              "words")
        _fill(pool.pool.hint, state["hint"], h, np.uint64, "hint")
        _fill(pool.pool.refcount, refcount, h, np.uint32, "refcount")
        _fill(pool.pool.owner, state["owner"], h, np.uint32, "owner")
        _fill(pool.pool.free_stack, free_stack, nfree, np.uint32, "free_stack")
        pool.pool.hiwater = h
        pool.pool.nfree = nfree
        pool.pool.used = _u32(state["used"], "used")
        pool.pool.next_owner = _u32(state["next_owner"], "next_owner")
        pool.pool.live_tables = _u32(state["live_tables"], "live_tables")
        rc = s2pt_pool_check(&pool.pool, msg, sizeof(msg))
        if rc:
            _raise(rc, msg.decode())
    except KeyError as e:
        pool._discard()
        raise InvariantError(f"pool state lacks {e}") from None
    except BaseException:
        pool._discard()  # its memory holds what the state held: never reused
        raise
    return pool


def _vm_from_state(PagePool pool not None, dict state):
    """A VM from Stage2._state() over its restored pool: the tree is checked
    (s2pt_pgtable_restore), then memslots and logs are put back."""
    cdef Stage2 vm = Stage2.__new__(Stage2)
    cdef Stage2Config config
    cdef char msg[256]
    cdef uint32_t cap, k
    cdef const uint64_t[::1] dirty
    cdef const unsigned char[::1] raw
    cdef uint64_t[:, ::1] slots
    cdef int rc
    _check_version(state, "Stage2")
    try:
        config = _config_from_state(state["vtcr"], state["vmid"], state["flags"])
        cap = _u32(state["tlbi_capacity"], "tlbi_capacity")
        events = np.ascontiguousarray(state["tlbi"], dtype=TLBI_DTYPE)
        slots = np.ascontiguousarray(state["slots"], dtype=np.uint64).reshape(-1, 6)
        dirty = np.ascontiguousarray(state["dirty"], dtype=np.uint64)
        counts = np.asarray(state["counts"], dtype=np.uint64)
        destroyed = bool(state["destroyed"])
        root_pa, owner, frees = state["root_pa"], state["owner"], state["frees"]
        overflowed = bool(state["tlbi_overflowed"])
    except KeyError as e:
        raise InvariantError(f"Stage2 state lacks {e}") from None
    if events.shape[0] > cap or counts.shape[0] != S2PT_OUTCOME__COUNT:
        raise InvariantError("Stage2 state: TLB log or counters do not fit")
    pool._ready()
    if cap:
        vm.events = <s2pt_tlbi *>_mem_get(cap * sizeof(s2pt_tlbi), 0)
        if vm.events == NULL:
            raise MemoryError()
    vm.log.events = vm.events
    vm.log.capacity = cap
    if not destroyed:
        rc = s2pt_pgtable_restore(&vm.pt, &config.cfg, &pool.pool, _u64(root_pa, "root_pa"),
                                  _u32(owner, "owner"), _u64(frees, "frees"), msg, sizeof(msg))
        if rc:
            _raise(rc, msg.decode() or f"root {root_pa:#x}, owner {owner}")
    vm.pt.tlbi = &vm.log
    s2pt_mmu_init(&vm.mmu, &vm.pt)
    vm.pool = pool
    vm.config = config
    if events.shape[0]:
        raw = events.view(np.uint8)
        memcpy(vm.events, &raw[0], raw.shape[0])
    vm.log.count = events.shape[0]
    vm.log.overflowed = overflowed
    try:
        _restore_slots(vm, slots, dirty)
    except BaseException:
        # The pool keeps the pages as its state has them: only this VM object goes.
        s2pt_mmu_release(&vm.mmu)
        vm.pt.destroyed = 1
        raise
    for k in range(S2PT_OUTCOME__COUNT):
        vm.mmu.counts[k] = counts[k]
    return vm


cdef _restore_slots(Stage2 vm, uint64_t[:, ::1] slots, const uint64_t[::1] dirty):
    cdef uint64_t off = 0, words
    cdef uint32_t k
    cdef int rc
    for k in range(slots.shape[0]):
        words = ((slots[k, 2] >> vm.pt.cfg.granule_shift) + 63) // 64
        logging = slots[k, 5] & S2PT_MEMSLOT_LOG_DIRTY
        if logging and off + words > <uint64_t>dirty.shape[0]:
            raise InvariantError(f"Stage2 state: dirty bitmaps end before slot {slots[k, 4]}")
        rc = s2pt_memslot_restore(&vm.mmu, slots[k, 0], slots[k, 1], slots[k, 2],
                                  <uint32_t>slots[k, 5], slots[k, 3], <uint32_t>slots[k, 4],
                                  &dirty[off] if logging else NULL)
        if rc:
            _raise(rc, f"memslot {list(slots[k])} of the saved state")
        if logging:
            off += words
    if off != <uint64_t>dirty.shape[0]:
        raise InvariantError("Stage2 state: dirty bitmaps longer than the logged slots")
