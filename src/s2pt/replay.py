"""Trace replay: guest workloads (memslot changes, guest accesses, dirty-log rounds, aging
scans, unmaps) recorded as a trace and run through the public :class:`s2pt.Stage2` API, or
through the reference model :class:`s2pt.model.ReferenceStage2` (same calls, same answers).

Two forms of one format, both versioned (:data:`FORMAT_VERSION`); a reader refuses a newer
version with :class:`TraceVersionError` and never guesses:

* **text**: a header line ``s2pt-trace 1 granule=4096 ipa_bits=40 pa_bits=48
  semantics=exact`` and then one operation a line (``#`` lines are comments, kept);
* **binary**: the magic ``S2PTTRC\\0``, the version, the header text, then fixed 40-byte
  little-endian records (:data:`OP_DTYPE`), the IPAs of access lists as one ``<u8`` array, and
  the comments' UTF-8 text. Accesses stay arrays from the file to ``access_many``.

Text -> binary -> text is exact for text in the canonical form :func:`format_text` writes
(and :class:`Trace` objects compare equal through either form). The grammar is in
``format_text``'s docstring and in the README ("Trace replay").

:func:`replay` builds the VM the trace names (or the granule / IPA size it is given), feeds
accesses to ``access_many`` in batches of up to :data:`CHUNK` (consecutive access operations
of one kind are coalesced; no per-access Python work) and returns a :class:`ReplaySummary`
of plain values, which pickles (for process pools and ``dask.distributed``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from ._core import Stage2, Stage2Config
from ._types import Access, FaultOutcome
from .errors import S2ptError

__all__ = [
    "FORMAT_VERSION",
    "TEXT_MAGIC",
    "BINARY_MAGIC",
    "OP_DTYPE",
    "CHUNK",
    "TraceError",
    "TraceVersionError",
    "ReplayError",
    "TraceHeader",
    "Trace",
    "TraceBuilder",
    "AddMemslot",
    "DeleteMemslot",
    "SetLogDirty",
    "AccessRun",
    "AccessList",
    "GetDirtyLog",
    "ClearDirtyLog",
    "Young",
    "TestClearYoung",
    "Unmap",
    "Split",
    "Collapse",
    "Comment",
    "parse_text",
    "format_text",
    "parse_binary",
    "format_binary",
    "read_trace",
    "write_trace",
    "default_trace",
    "hit_trace",
    "replay",
    "ReplaySummary",
    "bench_rows",
]

#: The trace format version this s2pt reads and writes (text and binary alike).
FORMAT_VERSION = 1
#: First word of a text trace's header line.
TEXT_MAGIC = "s2pt-trace"
#: First 8 bytes of a binary trace.
BINARY_MAGIC = b"S2PTTRC\x00"
#: Accesses per ``access_many`` call (and per progress-bar step).
CHUNK = 1 << 16

_U64 = 1 << 64
_U32 = 1 << 32


# ---- errors -------------------------------------------------------------------------------------


class TraceError(S2ptError, ValueError):
    """A malformed trace: ``line`` is the 1-based text line (None for binary traces or
    traces built in Python), ``op`` the 0-based operation index where known, ``source`` the
    file name (or ``"<text>"`` / ``"<binary>"``)."""

    def __init__(self, message: str, *, line: Optional[int] = None, op: Optional[int] = None,
                 source: Optional[str] = None):
        where = source or "<trace>"
        if line is not None:
            where += f":{line}"
        elif op is not None:
            where += f": op {op}"
        super().__init__(f"{where}: {message}")
        self.reason, self.line, self.op, self.source = message, line, op, source

    def __reduce__(self):
        return (_rebuild_error, (type(self), self.reason, self.line, self.op, self.source))


def _rebuild_error(cls, reason, line, op, source):
    return cls(reason, line=line, op=op, source=source)


class TraceVersionError(TraceError):
    """A trace written in a newer format version than this s2pt reads (or version 0)."""


class ReplayError(TraceError):
    """An operation the VM refused during :func:`replay` (a slot outside the IPA size of the
    configuration it was replayed on, an exhausted pool...); ``__cause__`` is the engine's
    exception."""


# ---- the trace ---------------------------------------------------------------------------------

#: Access kinds in the text form.
_ACCESS_NAMES = {"r": Access.READ, "w": Access.WRITE, "x": Access.EXEC, "ux": Access.EXEC_EL0}
_ACCESS_LETTERS = {int(v): k for k, v in _ACCESS_NAMES.items()}
#: Symbolic host backing sizes: the VM's granule, its level-2 block (PMD) and level-1 block (PUD).
_BACKINGS = ("page", "pmd", "pud")
_SEMANTICS = ("exact", "kvm")


@dataclass(frozen=True)
class TraceHeader:
    """The VM a trace was recorded on (``replay`` may override granule and IPA size)."""

    granule: int = 4096
    ipa_bits: int = 40
    pa_bits: int = 48
    semantics: str = "exact"
    name: str = ""

    def __post_init__(self):
        if self.granule not in (4096, 16384, 65536):
            raise TraceError(f"granule={self.granule}: must be 4096, 16384 or 65536")
        for key in ("ipa_bits", "pa_bits"):
            value = getattr(self, key)
            if type(value) is not int or not 1 <= value <= 64:
                raise TraceError(f"{key}={value!r}: must be an integer from 1 to 64")
        if self.semantics not in _SEMANTICS:
            raise TraceError(f"semantics={self.semantics!r}: must be 'exact' or 'kvm'")
        if any(c.isspace() or c == "=" for c in self.name) or not self.name.isprintable():
            raise TraceError(f"name={self.name!r}: no spaces, '=' or control characters")

    def text(self) -> str:
        """``granule=4096 ipa_bits=40 pa_bits=48 semantics=exact [name=...]``."""
        out = (f"granule={self.granule} ipa_bits={self.ipa_bits} pa_bits={self.pa_bits} "
               f"semantics={self.semantics}")
        return out + (f" name={self.name}" if self.name else "")

    @classmethod
    def from_text(cls, fields: Sequence[str]) -> "TraceHeader":
        values: Dict[str, object] = {}
        for item in fields:
            key, eq, value = item.partition("=")
            if not eq or key not in ("granule", "ipa_bits", "pa_bits", "semantics", "name"):
                raise TraceError(f"header field {item!r}: expected granule=, ipa_bits=, "
                                 f"pa_bits=, semantics= or name=")
            if key in values:
                raise TraceError(f"header field {key} given twice")
            values[key] = value if key in ("semantics", "name") else _number(value, key)
        return cls(**values)


def _check_u64(value, what: str) -> int:
    if type(value) is not int:
        try:
            value = int(value.__index__())
        except (AttributeError, TypeError):
            raise TraceError(f"{what}={value!r} must be an integer") from None
    if not 0 <= value < _U64:
        raise TraceError(f"{what}={value:#x} does not fit in 64 bits")
    return value


def _check_slot(slot) -> int:
    slot = _check_u64(slot, "slot")
    if slot >= _U32:
        raise TraceError(f"slot label {slot} must be below 2**32")
    return slot


@dataclass(frozen=True)
class AddMemslot:
    """``add_memslot SLOT IPA PA SIZE [backing=B] [readonly] [log_dirty]``: SLOT is the
    trace's label for the slot (the VM's own id may differ); B is ``page``, ``pmd``, ``pud``
    (the VM's granule, level-2 or level-1 block) or a size in bytes."""

    slot: int
    ipa: int
    pa: int
    size: int
    backing: Union[int, str] = "page"
    readonly: bool = False
    log_dirty: bool = False

    def __post_init__(self):
        _check_slot(self.slot)
        for key in ("ipa", "pa", "size"):
            _check_u64(getattr(self, key), key)
        if isinstance(self.backing, str):
            if self.backing not in _BACKINGS:
                raise TraceError(f"backing={self.backing!r}: page, pmd, pud or a size")
        elif _check_u64(self.backing, "backing") == 0:
            raise TraceError("backing must be a size > 0")


@dataclass(frozen=True)
class DeleteMemslot:
    """``delete_memslot SLOT``"""

    slot: int

    def __post_init__(self):
        _check_slot(self.slot)


@dataclass(frozen=True)
class SetLogDirty:
    """``set_log_dirty SLOT on [eager_split]`` / ``set_log_dirty SLOT off``"""

    slot: int
    enable: bool
    eager_split: bool = False

    def __post_init__(self):
        _check_slot(self.slot)
        if self.eager_split and not self.enable:
            raise TraceError("eager_split only goes with on")


def _check_access(kind) -> int:
    if type(kind) is not int and not isinstance(kind, Access):
        raise TraceError(f"access kind {kind!r} must be an Access")
    if int(kind) not in _ACCESS_LETTERS:
        raise TraceError(f"access kind {kind!r} must be an Access")
    return int(kind)


@dataclass(frozen=True)
class AccessRun:
    """``access K BASE +STRIDE xCOUNT``: COUNT guest accesses of kind K (``r``, ``w``, ``x``
    = EL1 fetch, ``ux`` = EL0 fetch) at BASE, BASE + STRIDE, ..."""

    kind: int
    base: int
    stride: int
    count: int

    def __post_init__(self):
        object.__setattr__(self, "kind", Access(_check_access(self.kind)))
        _check_u64(self.base, "base")
        _check_u64(self.stride, "stride")
        if _check_u64(self.count, "count") == 0:
            raise TraceError("an access run needs a count of at least 1")
        if self.base + self.stride * (self.count - 1) >= _U64:
            raise TraceError("the access run goes past 2**64")

    @property
    def accesses(self) -> int:
        return self.count

    def batches(self, chunk: int) -> Iterator[np.ndarray]:
        """The IPAs, ``chunk`` at a time (fresh arrays, uint64)."""
        stride, base = np.uint64(self.stride), self.base
        for start in range(0, self.count, chunk):
            n = min(chunk, self.count - start)
            ipas = np.arange(n, dtype=np.uint64)
            ipas *= stride
            ipas += np.uint64(base + start * self.stride)
            yield ipas


class AccessList:
    """``access K IPA [IPA ...]``: guest accesses of kind K at the IPAs given (stored as one
    read-only uint64 array)."""

    __slots__ = ("kind", "ipas")

    def __init__(self, kind, ipas):
        kind = Access(_check_access(kind))
        if isinstance(ipas, np.ndarray):
            if ipas.dtype.kind not in "ui" or ipas.ndim != 1:
                raise TraceError(f"access list IPAs must be a 1-D integer array, not "
                                 f"{ipas.dtype} with {ipas.ndim} dimension(s)")
            if ipas.dtype.kind == "i" and len(ipas) and ipas.min() < 0:
                raise TraceError("access list IPAs must not be negative")
            arr = np.array(ipas, dtype=np.uint64)
        else:
            values = [_check_u64(v, "ipa") for v in ipas]
            arr = np.array(values, dtype=np.uint64)
        if len(arr) == 0:
            raise TraceError("an access list needs at least one IPA")
        arr.flags.writeable = False
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "ipas", arr)

    def __setattr__(self, name, value):
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __reduce__(self):
        return (AccessList, (int(self.kind), self.ipas))

    def __eq__(self, other):
        if not isinstance(other, AccessList):
            return NotImplemented
        return self.kind == other.kind and np.array_equal(self.ipas, other.ipas)

    def __hash__(self):
        return hash((self.kind, self.ipas.tobytes()))

    def __repr__(self):
        head = ", ".join(hex(int(x)) for x in self.ipas[:4])
        more = f", ... ({len(self.ipas)} IPAs)" if len(self.ipas) > 4 else ""
        return f"AccessList(kind={self.kind!r}, ipas=[{head}{more}])"

    @property
    def accesses(self) -> int:
        return len(self.ipas)

    def batches(self, chunk: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self.ipas), chunk):
            yield self.ipas[start:start + chunk]


@dataclass(frozen=True)
class GetDirtyLog:
    """``get_dirty_log SLOT [noclear]``: KVM_GET_DIRTY_LOG; without ``noclear`` the returned
    pages are write-protected again (the next round sees them)."""

    slot: int
    clear: bool = True

    def __post_init__(self):
        _check_slot(self.slot)


@dataclass(frozen=True)
class ClearDirtyLog:
    """``clear_dirty_log SLOT FIRST_PAGE MASK [MASK ...]``: KVM_CLEAR_DIRTY_LOG (manual
    protect) of the bits of 64-page mask words from page FIRST_PAGE (a multiple of 64)."""

    slot: int
    first_page: int
    masks: Tuple[int, ...]

    def __post_init__(self):
        _check_slot(self.slot)
        _check_u64(self.first_page, "first_page")
        masks = tuple(_check_u64(m, "mask") for m in self.masks)
        if not masks:
            raise TraceError("clear_dirty_log needs at least one mask word")
        object.__setattr__(self, "masks", masks)


@dataclass(frozen=True)
class _Range:
    ipa: int
    size: int

    def __post_init__(self):
        _check_u64(self.ipa, "ipa")
        _check_u64(self.size, "size")


@dataclass(frozen=True)
class Young(_Range):
    """``young IPA SIZE [clear]``: an aging scan (the young pages are counted)."""

    clear: bool = False


@dataclass(frozen=True)
class TestClearYoung(_Range):
    """``test_clear_young IPA SIZE [keep]``: any young leaf in range? (``keep``: mkold=False)"""

    __test__ = False  # not a pytest class
    mkold: bool = True


@dataclass(frozen=True)
class Unmap(_Range):
    """``unmap IPA SIZE``"""


@dataclass(frozen=True)
class Split(_Range):
    """``split IPA SIZE``: eager split of the blocks in range to pages."""


@dataclass(frozen=True)
class Collapse(_Range):
    """``collapse IPA SIZE``: uniform page runs in range become blocks."""


@dataclass(frozen=True)
class Comment:
    """``# TEXT``: kept through both forms (one line, no newline)."""

    text: str

    def __post_init__(self):
        if not isinstance(self.text, str) or "\n" in self.text or "\r" in self.text:
            raise TraceError(f"a comment is one line of text, not {self.text!r}")


_ACCESS_OPS = (AccessRun, AccessList)
Op = Union[AddMemslot, DeleteMemslot, SetLogDirty, AccessRun, AccessList, GetDirtyLog,
           ClearDirtyLog, Young, TestClearYoung, Unmap, Split, Collapse, Comment]
_OP_TYPES = (AddMemslot, DeleteMemslot, SetLogDirty, AccessRun, AccessList, GetDirtyLog,
             ClearDirtyLog, Young, TestClearYoung, Unmap, Split, Collapse, Comment)
#: text name of each operation class
_NAMES = {AddMemslot: "add_memslot", DeleteMemslot: "delete_memslot",
          SetLogDirty: "set_log_dirty", AccessRun: "access", AccessList: "access",
          GetDirtyLog: "get_dirty_log", ClearDirtyLog: "clear_dirty_log", Young: "young",
          TestClearYoung: "test_clear_young", Unmap: "unmap", Split: "split",
          Collapse: "collapse", Comment: "#"}


class Trace:
    """A header and a list of operations. Compares equal by content (``lines``, the text
    line of each operation when parsed from text, is not part of it). Slot labels are checked
    on construction: an operation on a slot that is not live, or an add of a live label, is a
    :class:`TraceError` naming its line."""

    __slots__ = ("header", "ops", "lines", "source")

    def __init__(self, header: TraceHeader, ops: Iterable[Op], *,
                 lines: Optional[Sequence[int]] = None, source: Optional[str] = None):
        if not isinstance(header, TraceHeader):
            raise TraceError(f"header must be a TraceHeader, not {type(header).__name__}")
        self.header = header
        self.ops = list(ops)
        self.lines = list(lines) if lines is not None else None
        self.source = source
        if self.lines is not None and len(self.lines) != len(self.ops):
            raise TraceError("lines must give one line number per operation")
        self._validate()

    def _error(self, i: int, message: str, cls=TraceError) -> TraceError:
        line = self.lines[i] if self.lines is not None else None
        return cls(message, line=line, op=i, source=self.source)

    def _validate(self) -> None:
        live = set()
        for i, op in enumerate(self.ops):
            if not isinstance(op, _OP_TYPES):
                raise self._error(i, f"not a trace operation: {op!r}")
            slot = getattr(op, "slot", None)
            if isinstance(op, AddMemslot):
                if slot in live:
                    raise self._error(i, f"slot {slot} is already added")
                live.add(slot)
            elif slot is not None:
                if slot not in live:
                    raise self._error(i, f"no slot labelled {slot} (add_memslot it first)")
                if isinstance(op, DeleteMemslot):
                    live.discard(slot)

    @property
    def name(self) -> str:
        return self.header.name or (os.path.basename(self.source) if self.source else "trace")

    @property
    def accesses(self) -> int:
        """Guest accesses in the trace."""
        return sum(op.accesses for op in self.ops if isinstance(op, _ACCESS_OPS))

    def __len__(self) -> int:
        return len(self.ops)

    def __getitem__(self, index):
        """``trace[:k]``: a trace of the first k operations (same header)."""
        if isinstance(index, slice):
            lines = self.lines[index] if self.lines is not None else None
            return Trace(self.header, self.ops[index], lines=lines, source=self.source)
        return self.ops[index]

    def __eq__(self, other):
        if not isinstance(other, Trace):
            return NotImplemented
        return self.header == other.header and self.ops == other.ops

    def __repr__(self):
        return (f"Trace({self.name!r}, {len(self.ops)} ops, {self.accesses} accesses, "
                f"{self.header.text()})")

    def __reduce__(self):
        return (_rebuild_trace, (self.header, self.ops, self.lines, self.source))

    def to_text(self) -> str:
        return format_text(self)

    def to_bytes(self) -> bytes:
        return format_binary(self)


def _rebuild_trace(header, ops, lines, source):
    return Trace(header, ops, lines=lines, source=source)


class TraceBuilder:
    """Build a :class:`Trace` in Python, one method per operation::

        b = TraceBuilder(granule=4096, ipa_bits=40, name="mine")
        b.add_memslot(0, 0x4000_0000, 0x1_0000_0000, 1 << 30, backing="pmd")
        b.access_run("w", 0x4000_0000, 4096, 262144)
        trace = b.build()
    """

    def __init__(self, **header):
        self.header = TraceHeader(**header)
        self.ops: List[Op] = []

    def _add(self, op: Op) -> "TraceBuilder":
        self.ops.append(op)
        return self

    @staticmethod
    def _kind(kind) -> int:
        if isinstance(kind, str):
            if kind not in _ACCESS_NAMES:
                raise TraceError(f"access kind {kind!r}: r, w, x or ux")
            return _ACCESS_NAMES[kind]
        return kind

    def comment(self, text: str):
        return self._add(Comment(text))

    def add_memslot(self, slot, ipa, pa, size, *, backing="page", readonly=False,
                    log_dirty=False):
        return self._add(AddMemslot(slot, ipa, pa, size, backing, readonly, log_dirty))

    def delete_memslot(self, slot):
        return self._add(DeleteMemslot(slot))

    def set_log_dirty(self, slot, enable, *, eager_split=False):
        return self._add(SetLogDirty(slot, bool(enable), bool(eager_split)))

    def access(self, kind, ipas):
        return self._add(AccessList(self._kind(kind), ipas))

    def access_run(self, kind, base, stride, count):
        return self._add(AccessRun(self._kind(kind), base, stride, count))

    def get_dirty_log(self, slot, *, clear=True):
        return self._add(GetDirtyLog(slot, bool(clear)))

    def clear_dirty_log(self, slot, first_page, masks):
        masks = (masks,) if isinstance(masks, int) else tuple(int(m) for m in masks)
        return self._add(ClearDirtyLog(slot, first_page, masks))

    def young(self, ipa, size, *, clear=False):
        return self._add(Young(ipa, size, bool(clear)))

    def test_clear_young(self, ipa, size, *, mkold=True):
        return self._add(TestClearYoung(ipa, size, bool(mkold)))

    def unmap(self, ipa, size):
        return self._add(Unmap(ipa, size))

    def split(self, ipa, size):
        return self._add(Split(ipa, size))

    def collapse(self, ipa, size):
        return self._add(Collapse(ipa, size))

    def build(self) -> Trace:
        return Trace(self.header, self.ops)


# ---- the text form ----------------------------------------------------------------------------

_SUFFIX = {"K": 10, "M": 20, "G": 30, "T": 40}


def _number(token: str, what: str) -> int:
    """An unsigned integer: decimal, 0x / 0o / 0b, ``_`` separators, an optional binary
    suffix K / M / G / T (``2M`` = 2 MiB)."""
    shift = 0
    body = token
    if body[-1:].upper() in _SUFFIX and not body.lower().startswith("0x"):
        shift = _SUFFIX[body[-1].upper()]
        body = body[:-1]
    try:
        value = int(body, 0)
    except ValueError:
        raise TraceError(f"{what}: {token!r} is not a number") from None
    value <<= shift
    if not 0 <= value < _U64 or body.startswith(("-", "+")):
        raise TraceError(f"{what}: {token!r} is not an unsigned 64-bit number")
    return value


def _hex(value: int) -> str:
    """0x4000_0000: hex digits grouped by four."""
    return f"0x{value:_x}"


def _size(value: int) -> str:
    """1G, 2M, 64K, or plain decimal."""
    for suffix, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if value and value % (1 << shift) == 0:
            return f"{value >> shift}{suffix}"
    return str(value)


def _flags(tokens: Sequence[str], allowed: Sequence[str], what: str) -> Dict[str, bool]:
    seen: Dict[str, bool] = {}
    for tok in tokens:
        if tok not in allowed:
            raise TraceError(f"{what}: unexpected {tok!r} (allowed: {', '.join(allowed)})")
        if tok in seen:
            raise TraceError(f"{what}: {tok!r} given twice")
        seen[tok] = True
    return seen


def _nargs(args: Sequence[str], low: int, high: int, what: str, usage: str) -> None:
    if not low <= len(args) <= high:
        raise TraceError(f"{what}: expected '{usage}'")


def _parse_op(name: str, args: List[str]) -> Op:
    if name == "add_memslot":
        usage = "add_memslot SLOT IPA PA SIZE [backing=B] [readonly] [log_dirty]"
        _nargs(args, 4, 7, name, usage)
        backing: Union[int, str] = "page"
        rest = []
        for tok in args[4:]:
            if tok.startswith("backing="):
                value = tok[len("backing="):]
                backing = value if value in _BACKINGS else _number(value, "backing")
                if any(t.startswith("backing=") for t in rest):
                    raise TraceError(f"{name}: backing given twice")
                rest.append(tok)
            else:
                rest.append(tok)
        flags = _flags([t for t in rest if not t.startswith("backing=")],
                       ("readonly", "log_dirty"), name)
        return AddMemslot(_number(args[0], "slot"), _number(args[1], "ipa"),
                          _number(args[2], "pa"), _number(args[3], "size"), backing,
                          flags.get("readonly", False), flags.get("log_dirty", False))
    if name == "delete_memslot":
        _nargs(args, 1, 1, name, "delete_memslot SLOT")
        return DeleteMemslot(_number(args[0], "slot"))
    if name == "set_log_dirty":
        _nargs(args, 2, 3, name, "set_log_dirty SLOT on|off [eager_split]")
        if args[1] not in ("on", "off"):
            raise TraceError(f"{name}: {args[1]!r} must be on or off")
        flags = _flags(args[2:], ("eager_split",), name)
        return SetLogDirty(_number(args[0], "slot"), args[1] == "on",
                           flags.get("eager_split", False))
    if name == "access":
        if not args or args[0] not in _ACCESS_NAMES:
            raise TraceError("access: expected 'access r|w|x|ux IPA...' or "
                             "'access r|w|x|ux BASE +STRIDE xCOUNT'")
        kind = _ACCESS_NAMES[args[0]]
        ipas = args[1:]
        if len(ipas) == 3 and ipas[1].startswith("+") and ipas[2].startswith("x"):
            return AccessRun(kind, _number(ipas[0], "base"), _number(ipas[1][1:], "stride"),
                             _number(ipas[2][1:], "count"))
        if not ipas:
            raise TraceError("access: no IPA given")
        try:
            values = [int(t, 0) for t in ipas]
        except ValueError:
            values = [_number(t, "ipa") for t in ipas]
        if any(not 0 <= v < _U64 for v in values):
            bad = next(t for t, v in zip(ipas, values) if not 0 <= v < _U64)
            raise TraceError(f"access: {bad!r} is not an unsigned 64-bit number")
        return AccessList(kind, np.array(values, dtype=np.uint64))
    if name == "get_dirty_log":
        _nargs(args, 1, 2, name, "get_dirty_log SLOT [noclear]")
        flags = _flags(args[1:], ("noclear",), name)
        return GetDirtyLog(_number(args[0], "slot"), not flags.get("noclear", False))
    if name == "clear_dirty_log":
        if len(args) < 3:
            raise TraceError(f"{name}: expected 'clear_dirty_log SLOT FIRST_PAGE MASK...'")
        return ClearDirtyLog(_number(args[0], "slot"), _number(args[1], "first_page"),
                             tuple(_number(t, "mask") for t in args[2:]))
    ranged = {"young": (Young, "clear"), "test_clear_young": (TestClearYoung, "keep"),
              "unmap": (Unmap, None), "split": (Split, None), "collapse": (Collapse, None)}
    if name in ranged:
        cls, flag = ranged[name]
        usage = f"{name} IPA SIZE" + (f" [{flag}]" if flag else "")
        _nargs(args, 2, 3 if flag else 2, name, usage)
        ipa, size = _number(args[0], "ipa"), _number(args[1], "size")
        if not flag:
            return cls(ipa, size)
        flags = _flags(args[2:], (flag,), name)
        if cls is Young:
            return Young(ipa, size, flags.get("clear", False))
        return TestClearYoung(ipa, size, not flags.get("keep", False))
    raise TraceError(f"unknown operation {name!r}")


def _parse_header(line: str) -> TraceHeader:
    words = line.split()
    if not words or words[0] != TEXT_MAGIC:
        raise TraceError(f"not an s2pt trace: the first line must start with "
                         f"'{TEXT_MAGIC} {FORMAT_VERSION}'")
    if len(words) < 2:
        raise TraceError(f"the header has no format version ('{TEXT_MAGIC} {FORMAT_VERSION}')")
    try:
        version = int(words[1])
    except ValueError:
        raise TraceError(f"format version {words[1]!r} is not a number") from None
    _check_version(version)
    return TraceHeader.from_text(words[2:])


def _check_version(version: int) -> None:
    if version > FORMAT_VERSION:
        raise TraceVersionError(
            f"trace format version {version} is newer than this s2pt reads (version "
            f"{FORMAT_VERSION}); upgrade s2pt to replay it")
    if version < 1:
        raise TraceVersionError(f"trace format version {version} does not exist (1 is the "
                                f"first)")


def parse_text(text: str, *, source: Optional[str] = None) -> Trace:
    """A trace from its text form. Errors are :class:`TraceError` with the line number."""
    source = source or "<text>"
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise TraceError("empty trace (no header line)", line=1, source=source)
    try:
        header = _parse_header(lines[0].rstrip("\r"))
    except TraceError as exc:
        raise type(exc)(exc.reason, line=1, source=source) from None
    ops: List[Op] = []
    numbers: List[int] = []
    for n, raw in enumerate(lines[1:], start=2):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not stripped:
            continue
        try:
            if stripped.startswith("#"):
                text_ = line.lstrip()[1:]
                op: Op = Comment(text_[1:] if text_.startswith(" ") else text_)
            else:
                words = stripped.split()
                if "#" in stripped:
                    raise TraceError("a comment must be a line of its own (no '#' after an "
                                     "operation)")
                op = _parse_op(words[0], words[1:])
        except TraceError as exc:
            raise type(exc)(exc.reason, line=n, source=source) from None
        ops.append(op)
        numbers.append(n)
    return Trace(header, ops, lines=numbers, source=source)


def _format_op(op: Op) -> str:
    if isinstance(op, Comment):
        return f"# {op.text}" if op.text else "#"
    if isinstance(op, AccessRun):
        return (f"access {_ACCESS_LETTERS[int(op.kind)]} {_hex(op.base)} +{op.stride} "
                f"x{op.count}")
    if isinstance(op, AccessList):
        return f"access {_ACCESS_LETTERS[int(op.kind)]} " + " ".join(map(_hex, op.ipas.tolist()))
    if isinstance(op, AddMemslot):
        out = f"add_memslot {op.slot} {_hex(op.ipa)} {_hex(op.pa)} {_size(op.size)}"
        backing = op.backing if isinstance(op.backing, str) else _size(op.backing)
        out += f" backing={backing}"
        out += " readonly" if op.readonly else ""
        return out + (" log_dirty" if op.log_dirty else "")
    if isinstance(op, DeleteMemslot):
        return f"delete_memslot {op.slot}"
    if isinstance(op, SetLogDirty):
        if not op.enable:
            return f"set_log_dirty {op.slot} off"
        return f"set_log_dirty {op.slot} on" + (" eager_split" if op.eager_split else "")
    if isinstance(op, GetDirtyLog):
        return f"get_dirty_log {op.slot}" + ("" if op.clear else " noclear")
    if isinstance(op, ClearDirtyLog):
        return (f"clear_dirty_log {op.slot} {op.first_page} "
                + " ".join(_hex(m) for m in op.masks))
    name = _NAMES[type(op)]
    out = f"{name} {_hex(op.ipa)} {_size(op.size)}"
    if isinstance(op, Young) and op.clear:
        out += " clear"
    if isinstance(op, TestClearYoung) and not op.mkold:
        out += " keep"
    return out


def format_text(trace: Trace) -> str:
    """The canonical text form (``parse_text(format_text(t)) == t``; for canonical text,
    ``format_text(parse_text(s)) == s``)::

        s2pt-trace 1 granule=4096 ipa_bits=40 pa_bits=48 semantics=exact [name=NAME]
        # a comment: a line of its own, kept
        add_memslot SLOT IPA PA SIZE backing=page|pmd|pud|SIZE [readonly] [log_dirty]
        delete_memslot SLOT
        set_log_dirty SLOT on [eager_split] | set_log_dirty SLOT off
        access r|w|x|ux IPA [IPA ...]          # a list (x: EL1 fetch, ux: EL0 fetch)
        access r|w|x|ux BASE +STRIDE xCOUNT    # BASE, BASE+STRIDE, ... COUNT accesses
        get_dirty_log SLOT [noclear]
        clear_dirty_log SLOT FIRST_PAGE MASK [MASK ...]
        young IPA SIZE [clear]
        test_clear_young IPA SIZE [keep]
        unmap IPA SIZE | split IPA SIZE | collapse IPA SIZE

    Numbers are unsigned: decimal, ``0x`` hex, ``_`` separators, suffixes K/M/G/T (KiB...).
    The writer prints addresses in hex grouped by four digits and sizes with a suffix.
    """
    out = [f"{TEXT_MAGIC} {FORMAT_VERSION} {trace.header.text()}"]
    out.extend(_format_op(op) for op in trace.ops)
    return "\n".join(out) + "\n"


# ---- the binary form --------------------------------------------------------------------------

#: One operation of a binary trace (40 bytes, little-endian). ``op`` is the operation code
#: (:data:`_CODES`), ``kind`` the access kind or the backing class, ``flags`` its options;
#: ``a``..``d`` its numbers: see :func:`format_binary`.
OP_DTYPE = np.dtype([("op", "u1"), ("kind", "u1"), ("flags", "u2"), ("slot", "<u4"),
                     ("a", "<u8"), ("b", "<u8"), ("c", "<u8"), ("d", "<u8")])
assert OP_DTYPE.itemsize == 40

_CODES = {Comment: 0, AddMemslot: 1, DeleteMemslot: 2, SetLogDirty: 3, AccessRun: 4,
          AccessList: 5, GetDirtyLog: 6, ClearDirtyLog: 7, Young: 8, TestClearYoung: 9,
          Unmap: 10, Split: 11, Collapse: 12}
_CLASSES = {code: cls for cls, code in _CODES.items()}
_F_READONLY, _F_LOG_DIRTY, _F_ENABLE, _F_EAGER, _F_CLEAR = 1, 2, 1, 2, 1
#: flags each code may carry
_FLAG_MASK = {1: _F_READONLY | _F_LOG_DIRTY, 3: _F_ENABLE | _F_EAGER, 6: _F_CLEAR, 8: _F_CLEAR,
              9: _F_CLEAR}
_BACKING_KIND = {"page": 1, "pmd": 2, "pud": 3}
_BACKING_NAME = {v: k for k, v in _BACKING_KIND.items()}
#: magic, version, header bytes, ops, data words, text bytes
_PREFIX = struct.Struct("<8sIIQQQ")


def _pad8(n: int) -> int:
    return -n % 8


def format_binary(trace: Trace) -> bytes:
    """The compact binary form::

        offset  size        field
        0       8           magic b"S2PTTRC\\0"
        8       4           format version (u32)
        12      4           H: bytes of the header text ("granule=4096 ipa_bits=40 ...")
        16      8           N: operations (u64)
        24      8           D: data words (u64)
        32      8           T: comment text bytes (u64)
        40      H (+pad 8)  the header text, UTF-8, zero-padded to a multiple of 8
        ...     40 N        operations, OP_DTYPE records
        ...     8 D         data words (<u8): the IPAs of access lists, clear_dirty_log masks
        ...     T           comment text, UTF-8

    Records (``op`` code: fields): add_memslot 1: slot, a ipa, b pa, c size, kind the backing
    (0: d bytes, 1 page, 2 pmd, 3 pud), flags 1 readonly 2 log_dirty; delete_memslot 2: slot;
    set_log_dirty 3: slot, flags 1 on 2 eager_split; access run 4: kind, a base, b stride, c
    count; access list 5: kind, a offset in data, c count; get_dirty_log 6: slot, flags 1
    clear; clear_dirty_log 7: slot, a first_page, b offset in data, c count; young 8 /
    test_clear_young 9 (flags 1: clear / mkold) / unmap 10 / split 11 / collapse 12: a ipa,
    b size; comment 0: a offset in text, c bytes. Unused fields are zero.
    """
    header = trace.header.text().encode()
    recs = np.zeros(len(trace.ops), dtype=OP_DTYPE)
    data: List[np.ndarray] = []
    ndata = 0
    texts: List[bytes] = []
    ntext = 0
    for i, op in enumerate(trace.ops):
        r = recs[i]
        r["op"] = _CODES[type(op)]
        if isinstance(op, Comment):
            raw = op.text.encode()
            r["a"], r["c"] = ntext, len(raw)
            texts.append(raw)
            ntext += len(raw)
        elif isinstance(op, AddMemslot):
            r["slot"], r["a"], r["b"], r["c"] = op.slot, op.ipa, op.pa, op.size
            if isinstance(op.backing, str):
                r["kind"] = _BACKING_KIND[op.backing]
            else:
                r["d"] = op.backing
            r["flags"] = (_F_READONLY if op.readonly else 0) | \
                (_F_LOG_DIRTY if op.log_dirty else 0)
        elif isinstance(op, DeleteMemslot):
            r["slot"] = op.slot
        elif isinstance(op, SetLogDirty):
            r["slot"] = op.slot
            r["flags"] = (_F_ENABLE if op.enable else 0) | (_F_EAGER if op.eager_split else 0)
        elif isinstance(op, AccessRun):
            r["kind"], r["a"], r["b"], r["c"] = int(op.kind), op.base, op.stride, op.count
        elif isinstance(op, AccessList):
            r["kind"], r["a"], r["c"] = int(op.kind), ndata, len(op.ipas)
            data.append(op.ipas)
            ndata += len(op.ipas)
        elif isinstance(op, GetDirtyLog):
            r["slot"], r["flags"] = op.slot, _F_CLEAR if op.clear else 0
        elif isinstance(op, ClearDirtyLog):
            r["slot"], r["a"], r["b"], r["c"] = op.slot, op.first_page, ndata, len(op.masks)
            data.append(np.array(op.masks, dtype=np.uint64))
            ndata += len(op.masks)
        else:
            r["a"], r["b"] = op.ipa, op.size
            if isinstance(op, Young):
                r["flags"] = _F_CLEAR if op.clear else 0
            elif isinstance(op, TestClearYoung):
                r["flags"] = _F_CLEAR if op.mkold else 0
    words = np.concatenate(data).astype("<u8") if data else np.zeros(0, "<u8")
    parts = [_PREFIX.pack(BINARY_MAGIC, FORMAT_VERSION, len(header), len(recs), ndata, ntext),
             header, b"\0" * _pad8(len(header)), recs.tobytes(), words.tobytes(), *texts]
    return b"".join(parts)


def parse_binary(blob: bytes, *, source: Optional[str] = None) -> Trace:
    """A trace from its binary form (:func:`format_binary`); a newer version raises
    :class:`TraceVersionError`, anything malformed :class:`TraceError` with the op index."""
    source = source or "<binary>"
    view = memoryview(blob).cast("B")

    def fail(message, op=None, cls=TraceError):
        return cls(message, op=op, source=source)

    if len(view) < 12 or bytes(view[:8]) != BINARY_MAGIC:
        raise fail("not a binary s2pt trace (bad magic)")
    (version,) = struct.unpack_from("<I", view, 8)
    try:
        _check_version(version)
    except TraceVersionError as exc:
        raise fail(exc.reason, cls=TraceVersionError) from None
    if len(view) < _PREFIX.size:
        raise fail("truncated header")
    _, _, hlen, nops, ndata, ntext = _PREFIX.unpack_from(view, 0)
    pos = _PREFIX.size
    header_end = pos + hlen + _pad8(hlen)
    expected = header_end + nops * OP_DTYPE.itemsize + ndata * 8 + ntext
    if expected != len(view):
        raise fail(f"the file is {len(view)} bytes, its header says {expected}")
    try:
        header = TraceHeader.from_text(bytes(view[pos:pos + hlen]).decode().split())
    except UnicodeDecodeError:
        raise fail("the header text is not UTF-8") from None
    except TraceError as exc:
        raise fail(f"header: {exc.reason}") from None
    pos = header_end
    recs = np.frombuffer(view, dtype=OP_DTYPE, count=nops, offset=pos)
    pos += nops * OP_DTYPE.itemsize
    data = np.frombuffer(view, dtype="<u8", count=ndata, offset=pos).astype(np.uint64)
    pos += ndata * 8
    text = bytes(view[pos:pos + ntext])
    ops: List[Op] = []
    for i, r in enumerate(recs.tolist()):
        code, kind, flags, slot, a, b, c, d = r
        cls = _CLASSES.get(code)
        if cls is None:
            raise fail(f"unknown operation code {code}", i)
        if flags & ~_FLAG_MASK.get(code, 0):
            raise fail(f"{_NAMES[cls]}: unknown flags {flags:#x}", i)
        try:
            if cls is AddMemslot:
                if kind == 0:
                    backing: Union[int, str] = d
                elif kind in _BACKING_NAME and d == 0:
                    backing = _BACKING_NAME[kind]
                else:
                    raise TraceError(f"bad backing (kind {kind}, bytes {d})")
                op: Op = AddMemslot(slot, a, b, c, backing, bool(flags & _F_READONLY),
                                    bool(flags & _F_LOG_DIRTY))
            elif cls in (AccessRun, AccessList, ClearDirtyLog, Comment):
                if cls is AccessRun:
                    op = AccessRun(kind, a, b, c)
                else:
                    lo = b if cls is ClearDirtyLog else a
                    limit = ntext if cls is Comment else ndata
                    if lo + c > limit:
                        raise TraceError(f"offset {lo} + count {c} beyond the "
                                         f"{'text' if cls is Comment else 'data'} ({limit})")
                    if cls is AccessList:
                        op = AccessList(kind, data[a:a + c])
                    elif cls is ClearDirtyLog:
                        op = ClearDirtyLog(slot, a, tuple(data[b:b + c].tolist()))
                    else:
                        op = Comment(text[a:a + c].decode())
            elif cls is DeleteMemslot:
                op = DeleteMemslot(slot)
            elif cls is SetLogDirty:
                op = SetLogDirty(slot, bool(flags & _F_ENABLE), bool(flags & _F_EAGER))
            elif cls is GetDirtyLog:
                op = GetDirtyLog(slot, bool(flags & _F_CLEAR))
            elif cls is Young:
                op = Young(a, b, bool(flags & _F_CLEAR))
            elif cls is TestClearYoung:
                op = TestClearYoung(a, b, bool(flags & _F_CLEAR))
            else:
                op = cls(a, b)
        except UnicodeDecodeError:
            raise fail("comment text is not UTF-8", i) from None
        except TraceError as exc:
            raise fail(f"{_NAMES[cls]}: {exc.reason}", i) from None
        ops.append(op)
    return Trace(header, ops, source=source)


# ---- files ------------------------------------------------------------------------------------


def read_trace(path: Union[str, os.PathLike]) -> Trace:
    """A trace file in either form (told apart by its first bytes)."""
    with open(path, "rb") as f:
        blob = f.read()
    name = os.fspath(path)
    if blob[:8] == BINARY_MAGIC:
        return parse_binary(blob, source=name)
    try:
        text = blob.decode()
    except UnicodeDecodeError:
        raise TraceError("neither a text trace (not UTF-8) nor a binary one (no magic)",
                         source=name) from None
    return parse_text(text, source=name)


def write_trace(trace: Trace, path: Union[str, os.PathLike], format: str = "text") -> None:
    """Write ``trace`` to ``path`` as ``"text"`` or ``"binary"``."""
    if format == "text":
        data = format_text(trace).encode()
    elif format == "binary":
        data = format_binary(trace)
    else:
        raise ValueError(f"format must be 'text' or 'binary', not {format!r}")
    with open(path, "wb") as f:
        f.write(data)


# ---- the default trace ------------------------------------------------------------------------

MiB, GiB = 1 << 20, 1 << 30
#: Guest layout of the default trace (QEMU virt-like): every address and size is a multiple
#: of 64 KiB, and RAM's IPA and PA share 1 GiB alignment, so it replays on every granule.
FLASH, RAM, HOTPLUG, FB = 0x0000_0000, 0x4000_0000, 0x8000_0000, 0x1000_0000
RAM_SIZE, HOTPLUG_SIZE, FB_SIZE = 1 * GiB, 512 * 1024, 512 * 1024
UART, GIC, VIRTIO = 0x0900_0000, 0x0800_0000, 0x0a00_0000
#: Migration rounds of the default trace: pages the guest dirties in each (converging).
ROUNDS = (16384, 8192, 4096, 2048)


def _pages(rng, base: int, size: int, n: int, hot: Optional[np.ndarray] = None,
           hot_share: float = 0.0) -> np.ndarray:
    """n byte addresses in [base, base + size) (random pages, random 8-byte-aligned offsets);
    ``hot_share`` of them drawn from the ``hot`` addresses."""
    pages = rng.integers(0, size // 4096, size=n, dtype=np.uint64) * np.uint64(4096)
    ipas = np.uint64(base) + pages + rng.integers(0, 512, size=n, dtype=np.uint64) * np.uint64(8)
    if hot is not None and hot_share:
        k = int(n * hot_share)
        ipas[:k] = rng.choice(hot, size=k)
        rng.shuffle(ipas)
    return ipas


@functools.lru_cache(maxsize=2)
def default_trace() -> Trace:
    """The embedded default trace, made deterministically (seeded): a guest boot that faults
    in its RAM (flash, a 1 GiB THP-backed RAM slot, a 4 KiB-backed hot-plugged slot), memslot
    churn (a framebuffer BAR moved, an option ROM, a balloon, host THP split and collapse,
    MMIO holes, the hot-plugged slot unplugged), four
    live-migration rounds (logging on with eager split, guest writes, harvests, one with
    manual protect), aging scans, logging off and a collapse back to blocks.

    Sized so that the reference model replays it too (its every map costs time in
    proportion to the leaves it holds): first touches at 4 KiB happen while the tables are
    small, and nothing faults in a translation while the 1 GiB slot is split into pages. The
    same object each call (treat it as read-only)."""
    rng = np.random.default_rng(20261201)
    b = TraceBuilder(granule=4096, ipa_bits=40, pa_bits=48, semantics="exact", name="default")
    b.comment("guest boot: firmware from flash, MMIO probes, kernel load, RAM faulted in")
    b.add_memslot(0, FLASH, 0x10_0000_0000, 64 * MiB, backing="page", readonly=True)
    b.add_memslot(1, RAM, 0x1_0000_0000, RAM_SIZE, backing="pmd")
    b.access_run("x", FLASH, 4096, 64)  # firmware code: 256 KiB
    b.access_run("r", FLASH + 0x10_0000, 4096, 16)  # its data
    b.access_run("w", FLASH, 0, 4)  # NOR flash commands: writes to a read-only slot exit
    b.access_run("r", GIC, 0x1000, 16)  # MMIO probes: no slot, exits to user space
    b.access_run("w", UART, 0, 64)
    b.access_run("w", RAM + 0x20_0000, 4096, 8192)  # the kernel image (32 MiB) loaded
    b.access_run("x", RAM + 0x20_0000, 4096, 2048)  # and run: fetch permission relaxed
    b.access_run("w", RAM, 64 * 1024, RAM_SIZE // (64 * 1024))  # memory init, every 64 KiB
    b.add_memslot(2, HOTPLUG, 0x2_0000_0000, HOTPLUG_SIZE, backing="page")
    b.access_run("w", HOTPLUG, 4096, HOTPLUG_SIZE // 4096)  # hot-plugged, not THP: pages
    b.access("x", [VIRTIO + 0x10_0000])  # a stray branch into a hole: abort injected
    b.comment("guest running: random reads and writes over RAM")
    for _ in range(4):
        b.access("r", _pages(rng, RAM, RAM_SIZE, 4096))
        b.access("w", _pages(rng, RAM, RAM_SIZE, 1024))
    b.access_run("r", RAM, 64, 16384)  # a 1 MiB memcpy source, a cache line at a time

    b.comment("memslot churn: framebuffer BAR moved, option ROM, balloon, MMIO holes")
    for k in range(3):
        bar = FB + k * 0x100_0000
        b.add_memslot(3, bar, 0x3_0000_0000, FB_SIZE, backing="page")
        b.access_run("w", bar, 4096, FB_SIZE // 4096)
        b.access_run("w", VIRTIO + k * 0x200, 4, 16)  # virtio notify: MMIO exits
        b.delete_memslot(3)
    b.add_memslot(4, 0x0400_0000, 0x10_0400_0000, 256 * 1024, backing="page", readonly=True)
    b.access_run("r", 0x0400_0000, 4096, 64)
    b.delete_memslot(4)
    b.unmap(RAM + 0x1000_0000, 64 * MiB)  # the balloon inflates: the host drops 64 MiB
    b.access_run("r", RAM + 0x1000_0000, 64 * 1024, 1024)  # and deflates: faulted back
    b.split(RAM + 0x2000_0000, 16 * MiB)  # the host splits THPs (NUMA balancing)
    b.access_run("w", RAM + 0x2000_0000, 4096, 4096)
    b.collapse(RAM + 0x2000_0000, 16 * MiB)  # and khugepaged collapses them again
    b.test_clear_young(HOTPLUG, HOTPLUG_SIZE, mkold=False)
    b.delete_memslot(2)  # the hot-plugged memory is unplugged again

    b.comment("live migration: dirty logging with eager split, rounds of writes and harvests")
    b.set_log_dirty(1, True, eager_split=True)
    hot = _pages(rng, RAM, RAM_SIZE, 2048)
    for rnd, dirtied in enumerate(ROUNDS):
        b.comment(f"round {rnd + 1}: the guest dirties ~{dirtied} pages")
        b.access("w", _pages(rng, RAM, RAM_SIZE, dirtied, hot, 0.5))
        b.access("r", _pages(rng, RAM, RAM_SIZE, dirtied))
        if rnd == 2:  # manual protect: harvest without clearing, re-protect what was sent
            b.get_dirty_log(1, clear=False)  # (the first 32 MiB; the rest stays dirty)
            b.clear_dirty_log(1, 0, [(1 << 64) - 1] * (32 * MiB // 4096 // 64))
        else:
            b.get_dirty_log(1)
        if rnd == 1:
            b.comment("aging scan during migration (a quarter of RAM, as a scan walks it in "
                      "steps): access flags cleared, working set re-read")
            b.young(RAM, RAM_SIZE // 4, clear=True)
            b.access("r", hot)
    b.comment("migration cancelled: logging off, an aging pass, pages collapse to blocks")
    b.set_log_dirty(1, False)
    b.test_clear_young(RAM, RAM_SIZE)  # every leaf old: the page runs become uniform
    b.collapse(RAM, RAM_SIZE)  # pages back to blocks where a whole 2 MiB run is mapped
    b.access_run("w", RAM, 2 * MiB, 512)  # one write per 2 MiB: AF, then write permission
    b.comment("aging: the guest touches its hot set, a scan that clears, a second scan")
    b.access("r", hot)
    b.young(RAM + RAM_SIZE // 2, RAM_SIZE // 2, clear=True)
    b.test_clear_young(RAM, RAM_SIZE, mkold=False)
    return b.build()


def hit_trace(accesses: int = 1 << 24, *, name: str = "hits") -> Trace:
    """A trace of guest accesses that hit: a 1 GiB THP-backed RAM slot faulted in (512 first
    touches on 4K), then ``accesses`` reads and writes over it (cache-line, page and 2 MiB
    strides, and random addresses), all translating without a fault."""
    rng = np.random.default_rng(20261202)
    b = TraceBuilder(granule=4096, ipa_bits=40, pa_bits=48, name=name)
    b.add_memslot(0, RAM, 0x1_0000_0000, RAM_SIZE, backing="pmd")
    b.access_run("w", RAM, 2 * MiB, RAM_SIZE // (2 * MiB))  # fault RAM in (writable)
    random = _pages(rng, RAM, RAM_SIZE, min(accesses, 1 << 20))
    left, k = accesses, 0
    while left:
        n = min(left, 1 << 20)
        stride = (64, 4096 + 64, 2 * MiB + 4096, None)[k % 4]
        if stride is None:
            b.access("r", random[:n])
        else:  # runs over the whole slot, each at another offset in its first cache line
            per_run = (RAM_SIZE - 64) // stride + 1
            for i, start in enumerate(range(0, n, per_run)):
                b.access_run("w" if k % 2 else "r", RAM + (i * 8) % 64, stride,
                             min(per_run, n - start))
        left -= n
        k += 1
    return b.build()


# ---- replay -----------------------------------------------------------------------------------

#: TLB event reason names by value (TLBI_SPLIT -> "split").
_REASONS = {getattr(_core, f"TLBI_{name}"): name.lower()
            for name in ("UNMAP", "TABLE", "REPLACE", "SPLIT", "COALESCE", "PERM", "AF",
                         "DESTROY", "OVERFLOW", "WRPROTECT")}
#: Events a replay's log holds between drains, per access of a batch (an access can cause a
#: few events); a log that fills anyway shows as an "overflow" event in the summary.
TLBI_PER_ACCESS = 8


@dataclass
class ReplaySummary:
    """What a replay did, in plain values (pickles; compare two with :meth:`facts`)."""

    trace: str
    engine: str
    granule: int
    ipa_bits: int
    pa_bits: int
    semantics: str
    ops: int
    accesses: int
    #: handler runs per FaultOutcome name (``HIT``: accesses that needed none)
    faults: Dict[str, int]
    table_pages: int  #: at the end
    peak_table_pages: int  #: the most, after any operation or access batch
    leaves_by_level: Dict[int, int]
    mapped_bytes: int
    #: TLB events by reason name; None on the reference model (it has no TLB log)
    tlb_events: Optional[Dict[str, int]]
    dirty_pages: int  #: pages harvested by get_dirty_log, all rounds
    harvests: int
    young_pages: int  #: young pages the young() scans found
    young_ranges: int  #: test_clear_young calls that found a young leaf
    unmapped_bytes: int
    split_tables: int  #: table pages split() allocated
    collapsed_blocks: int  #: blocks collapse() made
    pa_sum: int  #: sum of the PAs access_many returned, mod 2**64 (a translation checksum)
    seconds: float
    ops_by_name: Dict[str, int] = field(default_factory=dict)

    @property
    def accesses_per_second(self) -> float:
        return self.accesses / self.seconds if self.seconds else float("inf")

    @property
    def config(self) -> str:
        return f"{self.granule // 1024}K/{self.ipa_bits}"

    def facts(self, *, tlb: bool = True) -> dict:
        """Everything but the wall time and the engine's name (and, with ``tlb=False``, the
        TLB events): equal for the engine and the reference model on the same trace."""
        out = dataclasses.asdict(self)
        del out["seconds"], out["engine"]
        if not tlb:
            del out["tlb_events"]
        return out

    def format(self) -> str:
        """A readable table."""
        def counts(d: Dict, prefix="") -> str:
            items = [(k, n) for k, n in d.items() if n]
            return " · ".join(f"{prefix}{k} {n:,}" for k, n in items) or "none"

        rate = self.accesses_per_second
        head = (f"{self.trace} on {self.engine}: {self.granule // 1024}K granule, "
                f"{self.ipa_bits}-bit IPA, {self.pa_bits}-bit PA, {self.semantics}")
        rows = [
            ("operations", f"{self.ops:,} ({counts(self.ops_by_name)})"),
            ("guest accesses", f"{self.accesses:,}"),
            ("faults by outcome", counts(self.faults)),
            ("table pages", f"{self.table_pages:,} at the end, {self.peak_table_pages:,} "
                            f"at the peak"),
            ("leaves at the end", f"{counts(self.leaves_by_level, 'L')}; "
                                  f"{_human(self.mapped_bytes)} mapped"),
            ("TLB events", "not modelled" if self.tlb_events is None else
             f"{sum(self.tlb_events.values()):,} ({counts(self.tlb_events)})"
             if any(self.tlb_events.values()) else "none"),
            ("dirty pages", f"{self.dirty_pages:,} harvested in {self.harvests} "
                            f"get_dirty_log calls"),
            ("aging", f"{self.young_pages:,} young pages seen; {self.young_ranges} "
                      f"test_clear_young hits"),
            ("unmap / split / collapse", f"{_human(self.unmapped_bytes)} unmapped; split "
                                         f"made {self.split_tables:,} table pages; "
                                         f"collapse made {self.collapsed_blocks:,} blocks"),
            ("PA checksum", f"{self.pa_sum:#018x}"),
            ("wall time", f"{self.seconds:.3f} s ({rate / 1e6:,.1f} M accesses/s over the "
                          f"whole replay)"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join([head] + [f"  {k:<{width}}  {v}" for k, v in rows])


def _human(n: int) -> str:
    for unit, name in ((1 << 40, "TiB"), (GiB, "GiB"), (MiB, "MiB"), (1 << 10, "KiB")):
        if n >= unit:
            value = n / unit
            return f"{value:.0f} {name}" if n % unit == 0 else f"{value:.2f} {name}"
    return f"{n} B"


def _popcount(words: np.ndarray) -> int:
    if hasattr(np, "bitwise_count"):
        return int(np.bitwise_count(words).sum())
    return int(np.unpackbits(np.ascontiguousarray(words).view(np.uint8)).sum())


def _engine(engine) -> Tuple[str, object]:
    """("s2pt" | "model", the class)."""
    from .model import ReferenceStage2

    if engine in ("s2pt", Stage2):
        return "s2pt", Stage2
    if engine in ("model", ReferenceStage2):
        return "model", ReferenceStage2
    if isinstance(engine, type) and issubclass(engine, Stage2):
        return "s2pt", engine
    if isinstance(engine, type) and issubclass(engine, ReferenceStage2):
        return "model", engine
    raise ValueError(f"engine must be 's2pt' or 'model', not {engine!r}")


def _backing(config: Stage2Config, backing: Union[int, str]) -> int:
    """The host page size a backing stands for on this VM: ``page``/``pmd``/``pud`` its
    granule / level-2 / level-1 block, a size the largest leaf size of the VM not above it
    (a host cannot back the guest with pages larger than that; at least the granule)."""
    bits = config.granule.bit_length() - 1 - 3  # IPA bits an entry's index takes

    def span(level: int) -> int:
        return 1 << (bits * (4 - level) + 3)

    sizes = [span(lv) for lv in range(max(config.min_block_level, config.start_level), 4)]
    if isinstance(backing, str):
        want = {"page": config.granule, "pmd": span(2), "pud": span(1)}[backing]
    else:
        want = backing
    fitting = [s for s in sizes if s <= want]
    return max(fitting) if fitting else config.granule


def _load(trace) -> Trace:
    if trace is None:
        return default_trace()
    if isinstance(trace, Trace):
        return trace
    if isinstance(trace, (str, os.PathLike)):
        return read_trace(trace)
    if isinstance(trace, (bytes, bytearray, memoryview)):
        blob = bytes(trace)
        if blob[:8] == BINARY_MAGIC:
            return parse_binary(blob)
        return parse_text(blob.decode())
    raise TypeError(f"trace must be a Trace, a path, bytes or None, not {type(trace).__name__}")


def replay(trace=None, *, granule: Optional[int] = None, ipa_bits: Optional[int] = None,
           engine="s2pt", progress: Optional[bool] = None, chunk: int = CHUNK,
           check: bool = False, save=None) -> ReplaySummary:
    """Replay ``trace`` (a :class:`Trace`, a file path in either form, its bytes, or None for
    :func:`default_trace`) on a fresh VM of its header's geometry, or of ``granule`` /
    ``ipa_bits`` if given, and return a :class:`ReplaySummary`.

    ``engine`` is ``"s2pt"`` (:class:`s2pt.Stage2`) or ``"model"`` (the reference model,
    ``s2pt.model.ReferenceStage2``: the same calls, in Python; no TLB log). ``progress``:
    None shows a tqdm bar on stderr once a replay has run a second, if stderr is a terminal;
    False never; True always. ``check`` runs the VM's ``check()`` at the end. An operation
    the VM refuses raises :class:`ReplayError` naming it (its cause is the engine's error).
    ``save``: a path where the VM at the end is written with :func:`s2pt.save` (s2pt only),
    for ``s2pt ptdump`` or a later :func:`s2pt.load`.
    """
    trace = _load(trace)
    name, cls = _engine(engine)
    h = trace.header
    granule = h.granule if granule is None else int(granule)
    ipa_bits = h.ipa_bits if ipa_bits is None else int(ipa_bits)
    chunk = int(chunk)
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    started = time.perf_counter()
    if name == "s2pt":
        vm = cls(ipa_bits=ipa_bits, granule=granule, pa_bits=h.pa_bits,
                 semantics=h.semantics,
                 tlbi_capacity=min(max(TLBI_PER_ACCESS * chunk, 1 << 16), 1 << 24))
    else:
        vm = cls(ipa_bits=ipa_bits, granule=granule, pa_bits=h.pa_bits, semantics=h.semantics)
    config = vm.config
    tlb: Optional[Dict[int, int]] = {} if name == "s2pt" else None
    totals = dict(accesses=0, dirty=0, harvests=0, young=0, young_ranges=0, unmapped=0,
                  split=0, collapsed=0)
    pa_sum = 0
    peak = vm.table_pages
    slots: Dict[int, int] = {}
    by_name: Dict[str, int] = {}
    bar = _progress_bar(progress, trace)

    def drain() -> None:
        nonlocal peak
        if tlb is not None:
            log = vm.tlbi_log()
            if len(log):
                for reason, n in enumerate(np.bincount(log["reason"]).tolist()):
                    if n:
                        tlb[reason] = tlb.get(reason, 0) + n
        pages = vm.table_pages
        if pages > peak:
            peak = pages

    pending: List[np.ndarray] = []
    pending_n = 0
    pending_kind = 0
    pending_op = 0

    def flush() -> None:
        nonlocal pending_n, pa_sum
        if not pending_n:
            return
        ipas = pending[0] if len(pending) == 1 else np.concatenate(pending)
        try:
            pa, _ = vm.access_many(ipas, pending_kind)
        except S2ptError as exc:
            raise trace._error(pending_op, f"access: {exc}", ReplayError) from exc
        pa_sum = (pa_sum + int(pa.sum(dtype=np.uint64))) % _U64  # the array sum wraps too
        totals["accesses"] += pending_n
        if bar is not None:
            bar.update(pending_n)
        pending.clear()
        pending_n = 0
        drain()

    try:
        for i, op in enumerate(trace.ops):
            opname = _NAMES[type(op)]
            if opname != "#":
                by_name[opname] = by_name.get(opname, 0) + 1
            if isinstance(op, _ACCESS_OPS):
                if op.kind != pending_kind:
                    flush()
                    pending_kind = int(op.kind)
                for ipas in op.batches(chunk):
                    if pending_n + len(ipas) > chunk:
                        flush()
                    if not pending_n:
                        pending_op = i
                    pending.append(ipas)
                    pending_n += len(ipas)
                continue
            if isinstance(op, Comment):
                continue
            flush()
            try:
                _apply(vm, config, op, slots, totals, h.granule)
            except S2ptError as exc:
                raise trace._error(i, f"{_format_op(op)[:80]}: {exc}", ReplayError) from exc
            drain()
        flush()
        if check:
            vm.check()
        if save is not None:
            if name != "s2pt":
                raise ValueError("save= needs the s2pt engine (the model does not travel)")
            from ._state import save as _save

            _save(save, vm)
        st = vm.stats()
        faults = {FaultOutcome(k).name: int(n) for k, n in vm.fault_counts().items()}
        seconds = time.perf_counter() - started
        tlb_events = None if tlb is None else {
            _REASONS.get(r, str(r)): n for r, n in sorted(tlb.items())}
    finally:
        if bar is not None:
            bar.close()
        vm.destroy()
    return ReplaySummary(
        trace=trace.name, engine=name, granule=granule, ipa_bits=ipa_bits, pa_bits=h.pa_bits,
        semantics=h.semantics, ops=sum(1 for op in trace.ops if not isinstance(op, Comment)),
        accesses=totals["accesses"], faults=faults, table_pages=int(st["table_pages"]),
        peak_table_pages=int(peak),
        leaves_by_level={int(k): int(v) for k, v in st["leaves_by_level"].items()},
        mapped_bytes=int(st["mapped_bytes"]), tlb_events=tlb_events,
        dirty_pages=totals["dirty"], harvests=totals["harvests"], young_pages=totals["young"],
        young_ranges=totals["young_ranges"], unmapped_bytes=totals["unmapped"],
        split_tables=totals["split"], collapsed_blocks=totals["collapsed"],
        pa_sum=int(pa_sum), seconds=seconds, ops_by_name=by_name)


def _masks_for(op: ClearDirtyLog, trace_granule: int, granule: int) -> Tuple[int, np.ndarray]:
    """The first page and mask words of a clear_dirty_log, whose pages are the trace
    header's granule, in pages of the VM's granule: a VM page is named if any trace page in
    it is (a larger granule), each trace page names all VM pages in it (a smaller one)."""
    words = np.array(op.masks, dtype=np.uint64)
    if granule == trace_granule:
        return op.first_page, words
    bits = np.unpackbits(words.view(np.uint8), bitorder="little")
    pages = np.flatnonzero(bits).astype(np.uint64) + np.uint64(op.first_page)
    if granule > trace_granule:
        pages = np.unique(pages // np.uint64(granule // trace_granule))
    else:
        r = trace_granule // granule
        pages = (pages[:, None] * np.uint64(r) + np.arange(r, dtype=np.uint64)).ravel()
    if not len(pages):
        return op.first_page * trace_granule // granule // 64 * 64, np.zeros(1, np.uint64)
    first = int(pages[0]) // 64 * 64
    out = np.zeros((int(pages[-1]) - first) // 64 + 1, dtype=np.uint64)
    rel = pages - np.uint64(first)
    np.bitwise_or.at(out, (rel >> np.uint64(6)).astype(np.intp),
                     np.left_shift(np.uint64(1), rel & np.uint64(63)))
    return first, out


def _apply(vm, config: Stage2Config, op: Op, slots: Dict[int, int], totals: dict,
           trace_granule: int) -> None:
    """One non-access operation on the VM."""
    if isinstance(op, AddMemslot):
        slots[op.slot] = vm.add_memslot(op.ipa, op.pa, op.size, readonly=op.readonly,
                                        log_dirty=op.log_dirty,
                                        backing=_backing(config, op.backing))
    elif isinstance(op, DeleteMemslot):
        vm.delete_memslot(slots.pop(op.slot))
    elif isinstance(op, SetLogDirty):
        vm.set_log_dirty(slots[op.slot], op.enable, eager_split=op.eager_split)
    elif isinstance(op, GetDirtyLog):
        totals["dirty"] += _popcount(vm.get_dirty_log(slots[op.slot], clear=op.clear))
        totals["harvests"] += 1
    elif isinstance(op, ClearDirtyLog):
        first, words = _masks_for(op, trace_granule, config.granule)
        vm.clear_dirty_log(slots[op.slot], first, words)
    elif isinstance(op, Young):
        totals["young"] += _popcount(vm.young(op.ipa, op.size, clear=op.clear))
    elif isinstance(op, TestClearYoung):
        totals["young_ranges"] += bool(vm.test_clear_young(op.ipa, op.size, mkold=op.mkold))
    elif isinstance(op, Unmap):
        totals["unmapped"] += vm.unmap(op.ipa, op.size)
    elif isinstance(op, Split):
        totals["split"] += vm.split(op.ipa, op.size)
    elif isinstance(op, Collapse):
        totals["collapsed"] += vm.collapse(op.ipa, op.size)
    else:  # pragma: no cover - Trace validates its operations
        raise TraceError(f"cannot replay {op!r}")


def _progress_bar(progress: Optional[bool], trace: Trace):
    """A tqdm bar over the trace's accesses, shown after a second (None: none)."""
    if progress is False:
        return None
    from tqdm import tqdm

    return tqdm(total=trace.accesses, unit="acc", unit_scale=True, delay=1.0,
                desc=f"replay {trace.name}", leave=False, dynamic_ncols=True,
                disable=None if progress is None else False)


# ---- the command line (s2pt replay) -----------------------------------------------------------


def _list(text: str) -> List[int]:
    """``4096,16384`` / ``4K,64K`` / ``40``: comma-separated unsigned numbers."""
    import argparse

    try:
        return [_number(item.strip(), "value") for item in text.split(",") if item.strip()]
    except TraceError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def add_parser(sub) -> None:
    """Add ``s2pt replay`` to the ``s2pt`` command's subparsers."""
    p = sub.add_parser(
        "replay", help="replay guest traces (memslots, accesses, dirty logging, aging)",
        description="Replay traces on fresh VMs and print a summary per run. With no TRACE, "
                    "the embedded default trace (a guest boot, memslot churn, four "
                    "live-migration rounds, aging). --granule and --ipa-bits lists form a "
                    "grid: every trace runs on every combination.")
    p.add_argument("traces", nargs="*", metavar="TRACE", help="trace files (text or binary)")
    p.add_argument("--granule", type=_list, action="append", metavar="LIST",
                   help="granules, e.g. 4K,16K,64K (repeatable; default: the trace's)")
    p.add_argument("--ipa-bits", type=_list, action="append", metavar="LIST",
                   help="IPA sizes, e.g. 36,40,48 (repeatable; default: the trace's)")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="runs in N parallel processes (default 1: in this one)")
    p.add_argument("--engine", choices=("s2pt", "model"), default="s2pt",
                   help="s2pt (default) or the reference model (slow, for cross-checks)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none when stderr is not a terminal)")
    p.add_argument("--check", action="store_true", help="check() every VM at the end")
    p.add_argument("--write", "--write-default", dest="write", metavar="FILE",
                   help="write the trace given (or the default one) to FILE and exit")
    p.add_argument("--format", choices=("text", "binary"), default="text",
                   help="the form --write writes (default text)")
    p.set_defaults(func=_cli)


def _flat(lists) -> List[Optional[int]]:
    if not lists:
        return [None]
    out: List[Optional[int]] = []
    for values in lists:
        out.extend(v for v in values if v not in out)
    return out


def _job(spec, granule, ipa_bits, engine, check) -> ReplaySummary:
    """One run in a worker process (spec: a path, or None for the default trace)."""
    return replay(spec, granule=granule, ipa_bits=ipa_bits, engine=engine, progress=False,
                  check=check)


def _cli(args) -> int:
    import sys

    err = sys.stderr
    try:
        traces = [read_trace(path) for path in args.traces]
    except (TraceError, OSError) as exc:
        print(f"s2pt replay: {exc}", file=err)
        return 2
    if args.write:
        if len(traces) > 1:
            print("s2pt replay: --write takes one trace (or none: the default)", file=err)
            return 2
        trace = traces[0] if traces else default_trace()
        write_trace(trace, args.write, args.format)
        print(f"wrote {trace.name} ({len(trace)} operations, {trace.accesses:,} accesses) to "
              f"{args.write} ({args.format})")
        return 0
    if args.jobs < 1:
        print("s2pt replay: --jobs must be at least 1", file=err)
        return 2
    specs = list(zip(args.traces, traces)) if traces else [(None, default_trace())]
    runs = [(path, trace, g, b) for path, trace in specs for g in _flat(args.granule)
            for b in _flat(args.ipa_bits)]
    results: List[object] = [None] * len(runs)
    progress = False if args.no_progress else None
    if args.jobs == 1 or len(runs) == 1:
        for i, (_, trace, g, b) in enumerate(runs):
            try:
                results[i] = replay(trace, granule=g, ipa_bits=b, engine=args.engine,
                                    progress=progress, check=args.check)
            except S2ptError as exc:
                results[i] = exc
    else:
        import concurrent.futures as cf

        from tqdm import tqdm

        with cf.ProcessPoolExecutor(max_workers=args.jobs) as pool, \
                tqdm(total=len(runs), unit="run", delay=1.0, leave=False,
                     disable=True if progress is False else None, desc="replay") as bar:
            futures = {pool.submit(_job, path, g, b, args.engine, args.check): i
                       for i, (path, _, g, b) in enumerate(runs)}
            for future in cf.as_completed(futures):
                try:
                    results[futures[future]] = future.result()
                except S2ptError as exc:
                    results[futures[future]] = exc
                bar.update(1)
    failed = 0
    for (path, trace, g, b), result in zip(runs, results):
        if isinstance(result, ReplaySummary):
            print(result.format())
        else:
            failed += 1
            config = f"{(g or trace.header.granule) // 1024}K/{b or trace.header.ipa_bits}"
            print(f"{trace.name} at {config}: failed: {result}")
        print()
    done = [r for r in results if isinstance(r, ReplaySummary)]
    if len(runs) > 1:
        print(_grid_table(done))
    return 1 if failed else 0


def _grid_table(results: Sequence[ReplaySummary]) -> str:
    """One line per run: the figures to compare across a grid."""
    head = (f"{'trace':<12} {'config':<7} {'engine':<6} {'accesses':>11} {'MAPPED':>7} "
            f"{'DIRTY':>7} {'YOUNG':>7} {'tables':>7} {'peak':>6} {'TLB events':>10} "
            f"{'dirty pages':>11} {'seconds':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        tlb = "-" if r.tlb_events is None else f"{sum(r.tlb_events.values()):,}"
        lines.append(f"{r.trace[:12]:<12} {r.config:<7} {r.engine:<6} {r.accesses:>11,} "
                     f"{r.faults.get('MAPPED', 0):>7,} {r.faults.get('DIRTY', 0):>7,} "
                     f"{r.faults.get('YOUNG', 0):>7,} {r.table_pages:>7,} "
                     f"{r.peak_table_pages:>6,} {tlb:>10} {r.dirty_pages:>11,} "
                     f"{r.seconds:>8.3f}")
    return "\n".join(lines)


# ---- benchmark rows ---------------------------------------------------------------------------


def bench_rows():
    """Rows in the style of :data:`s2pt.perf.ROWS` (``perf.Row``) that ``s2pt bench`` can
    add: replay of a hit-only trace (target: >= 10 M accesses/s, 100 ns per access) and of
    the default trace, per access. Each runs on the reference model too at its scale."""
    from . import perf

    return (
        perf.Row("replay_hits", "replay, hit-only trace (1 GiB slot, THP)", "access", None,
                 100, _replay_hits_case, ("4k40", "4k48"), model=True),
        perf.Row("replay_default", "replay the default trace, per access", "access", None,
                 None, _replay_default_case, ("4k40",), model=False),
    )


#: hit-only accesses per scale of the bench rows
_HIT_ACCESSES = {"full": 1 << 24, "cache": 1 << 20, "model": 1 << 10}


@functools.lru_cache(maxsize=4)
def _hit_trace_cached(n: int) -> Trace:
    return hit_trace(n)


def _replay_hits_case(engine, config: str, scale: str):
    from . import perf

    granule, ipa_bits = perf.CONFIGS[config]
    trace = _hit_trace_cached(_HIT_ACCESSES[scale])
    # The slot's backing is the VM's level-2 block (2 MiB for 4K, 32 MiB for 16K, 512 MiB
    # for 64K): one first touch maps each block; every other access hits.
    blocks = RAM_SIZE // Stage2Config(ipa_bits, granule).level_size(2)

    def check(summary: ReplaySummary) -> None:
        assert summary.accesses == trace.accesses
        assert summary.faults["MAPPED"] == blocks
        assert summary.faults["HIT"] == trace.accesses - blocks
        assert sum(summary.faults.values()) == trace.accesses
        assert summary.leaves_by_level.get(2) == blocks

    return perf.Case(lambda: replay(trace, granule=granule, ipa_bits=ipa_bits,
                                    engine=engine, progress=False),
                     trace.accesses, check)


def _replay_default_case(engine, config: str, scale: str):
    from . import perf

    granule, ipa_bits = perf.CONFIGS[config]
    trace = default_trace()

    blocks = RAM_SIZE // Stage2Config(ipa_bits, granule).level_size(2)

    def check(summary: ReplaySummary) -> None:
        assert summary.accesses == trace.accesses
        assert sum(summary.faults.values()) >= summary.accesses
        # RAM ends as blocks again (the collapse after migration), split once on the way
        assert summary.leaves_by_level[2] == blocks
        assert summary.tlb_events is None or summary.tlb_events["split"] >= blocks
        assert summary.dirty_pages >= summary.faults["DIRTY"] > 0

    return perf.Case(lambda: replay(trace, granule=granule, ipa_bits=ipa_bits,
                                    engine=engine, progress=False),
                     trace.accesses, check)
