"""s2pt: ARM64 stage-2 (IPA -> PA) page tables with real descriptor bits, from a C core.

>>> import s2pt
>>> pt = s2pt.Stage2(ipa_bits=40, granule=4096)
>>> pt.map(0x8000_0000, 0x4_0000_0000, 2 << 20)
>>> hex(pt.translate(0x8000_1234).pa)
'0x400001234'
"""

from ._core import (
    DEFAULT_POOL_BASE_PA,
    DEFAULT_POOL_BYTES,
    TLBI_DTYPE,
    TLBI_IPA,
    TLBI_LEVEL_UNKNOWN,
    TLBI_RANGE,
    TLBI_VMID,
    TLBI_UNMAP,
    TLBI_TABLE,
    TLBI_REPLACE,
    TLBI_SPLIT,
    TLBI_COALESCE,
    TLBI_PERM,
    TLBI_AF,
    TLBI_DESTROY,
    TLBI_OVERFLOW,
    PagePool,
    Stage2,
    Stage2Config,
    translate_image,
)
from ._types import FSC_NONE, Access, FaultKind, Mapping, MemAttr, Prot, Translation, WalkStep
from ._version import __version__
from .errors import (
    AlignmentError,
    ArgumentTypeError,
    ArrayError,
    ConfigError,
    DestroyedError,
    InvalidArgumentError,
    InvariantError,
    PoolBusyError,
    PoolExhaustedError,
    RangeError,
    S2ptError,
    Stage2Fault,
    UnknownS2ptError,
)

__all__ = [
    "Stage2",
    "Stage2Config",
    "PagePool",
    "translate_image",
    "Prot",
    "Access",
    "MemAttr",
    "FaultKind",
    "Translation",
    "WalkStep",
    "Mapping",
    "FSC_NONE",
    "TLBI_DTYPE",
    "TLBI_IPA",
    "TLBI_RANGE",
    "TLBI_VMID",
    "TLBI_UNMAP",
    "TLBI_TABLE",
    "TLBI_REPLACE",
    "TLBI_SPLIT",
    "TLBI_COALESCE",
    "TLBI_PERM",
    "TLBI_AF",
    "TLBI_DESTROY",
    "TLBI_OVERFLOW",
    "TLBI_LEVEL_UNKNOWN",
    "DEFAULT_POOL_BASE_PA",
    "DEFAULT_POOL_BYTES",
    "S2ptError",
    "InvalidArgumentError",
    "ArgumentTypeError",
    "ArrayError",
    "AlignmentError",
    "RangeError",
    "PoolExhaustedError",
    "ConfigError",
    "Stage2Fault",
    "InvariantError",
    "DestroyedError",
    "PoolBusyError",
    "UnknownS2ptError",
    "__version__",
]
