"""Exception classes: one per C error code, each also a subclass of the matching builtin."""

from __future__ import annotations

from ._types import FaultKind

__all__ = [
    "S2ptError",
    "InvalidArgumentError",
    "ArgumentTypeError",
    "ArrayError",
    "AlignmentError",
    "RangeError",
    "PoolExhaustedError",
    "ConfigError",
    "Stage2Fault",
    "Stage1Fault",
    "InvariantError",
    "DestroyedError",
    "PoolBusyError",
    "UnknownS2ptError",
    "error_class",
]


class S2ptError(Exception):
    """Base of every s2pt error. ``code`` is the C core's S2PT_E* value (negative)."""

    code = 0


class InvalidArgumentError(S2ptError, ValueError):
    """A bad argument value: permissions, memory attribute, access kind, dtype or shape."""

    code = -1


class ArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument of the wrong Python type: a float or string where an integer is needed.

    Never converted silently: ``map(4096.5, ...)`` must not map IPA 0x1000.
    """


class ArrayError(ArgumentTypeError):
    """A batch argument of the wrong dtype, shape or memory layout (no silent conversion)."""


class AlignmentError(S2ptError, ValueError):
    """An IPA, PA or size that is not aligned to the granule."""

    code = -2


class RangeError(S2ptError, ValueError):
    """An IPA or PA outside the VM's sizes, or a range that wraps around 2**64."""

    code = -3


class PoolExhaustedError(S2ptError, MemoryError):
    """The pool cannot supply every table page the operation needs; nothing was changed."""

    code = -4


class ConfigError(S2ptError, ValueError):
    """A geometry or VTCR_EL2 value the architecture or KVM does not allow."""

    code = -5


class Stage2Fault(S2ptError):
    """A stage-2 fault, as hardware would report it.

    ``kind`` is a :class:`FaultKind`, ``level`` the lookup level, ``fsc`` the ESR fault status
    code and ``ipa`` the faulting IPA (HPFAR_EL2). From the nested walk
    (:meth:`Stage2.translate2`) ``va`` is the guest's VA (FAR) and ``s1ptw`` says the fault
    hit a stage-1 table read (ESR_EL2.ISS.S1PTW; ``ipa`` is then that descriptor's IPA);
    otherwise ``va`` is None and ``s1ptw`` False.
    """

    code = -6
    stage = 2

    def __init__(self, kind: int, level: int, fsc: int, ipa: int, message: str | None = None,
                 *, va: int | None = None, s1ptw: bool = False):
        self.kind = FaultKind(kind)
        self.level = level
        self.fsc = fsc
        self.ipa = ipa
        self.va = va
        self.s1ptw = bool(s1ptw)
        if message is None:
            where = "" if va is None else f" (VA {va:#x}{', stage-1 table walk' if s1ptw else ''})"
            message = (
                f"stage-2 {self.kind.name.lower().replace('_', ' ')} fault at level {level}"
                f" (FSC {fsc:#04x}) for IPA {ipa:#x}{where}"
            )
        super().__init__(message)

    def __reduce__(self):
        return (_rebuild_fault, (type(self), (int(self.kind), self.level, self.fsc, self.ipa,
                                              str(self)),
                                 {"va": self.va, "s1ptw": self.s1ptw}))


class Stage1Fault(S2ptError):
    """A stage-1 fault (reported to EL1: ESR_EL1 and FAR_EL1): ``kind``, ``level`` and
    ``fsc`` of the stage-1 walk and the faulting ``va``. ``stage`` is 1, ``s1ptw`` False and
    ``ipa`` None, so handlers can read both fault classes alike. Raised by
    :meth:`Stage1.translate` and :meth:`Stage2.translate2`; the C core's code is
    S2PT_EFAULT, as for :class:`Stage2Fault` (which ``error_class`` returns for it)."""

    code = -6
    stage = 1
    s1ptw = False
    ipa = None

    def __init__(self, kind: int, level: int, fsc: int, va: int, message: str | None = None):
        self.kind = FaultKind(kind)
        self.level = level
        self.fsc = fsc
        self.va = va
        if message is None:
            message = (
                f"stage-1 {self.kind.name.lower().replace('_', ' ')} fault at level {level}"
                f" (FSC {fsc:#04x}) for VA {va:#x}"
            )
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (int(self.kind), self.level, self.fsc, self.va, str(self)))


def _rebuild_fault(cls, args, kwargs):
    return cls(*args, **kwargs)


class InvariantError(S2ptError, AssertionError):
    """``check()`` found a broken invariant (a bug in s2pt, or memory changed behind its back)."""

    code = -7


class DestroyedError(S2ptError, ValueError):
    """The VM was destroyed (like I/O on a closed file, this is a ValueError)."""

    code = -8


class PoolBusyError(S2ptError, RuntimeError):
    """The pool still holds pages of live page tables."""

    code = -9


class StateFormatError(S2ptError, ValueError):
    """A saved state (a pickle, an ``s2pt.save`` file) that this s2pt cannot read: not
    s2pt's, or from a newer format version (refused, never guessed at). Python-level: no C
    error code maps here."""


class UnknownS2ptError(S2ptError):
    """An error code no class is mapped to (a bug: every code has a class)."""


_BY_CODE = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        AlignmentError,
        RangeError,
        PoolExhaustedError,
        ConfigError,
        Stage2Fault,
        InvariantError,
        DestroyedError,
        PoolBusyError,
    )
}


def error_class(code: int) -> type[S2ptError]:
    """The exception class for a C error code (``UnknownS2ptError`` if none)."""
    return _BY_CODE.get(code, UnknownS2ptError)
