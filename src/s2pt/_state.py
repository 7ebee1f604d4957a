"""``s2pt.save`` / ``s2pt.load``: VMs with their pools in one portable, versioned ``.npz``
file. The contents are the same plain states pickle uses (``PagePool._state`` and
``Stage2._state``), flattened to named arrays: ``pool<i>.<field>`` and ``vm<j>.<field>``,
``vm<j>.pool`` naming the pool, so VMs that share a pool share it again after a load.
No pickled objects are stored (``allow_pickle=False``): a file cannot run code.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from ._core import STATE_VERSION, PagePool, Stage2, _pool_from_state, _vm_from_state
from .errors import ArgumentTypeError, StateFormatError

_MAGIC = "s2pt-state"


def save(path: str | os.PathLike, *vms: Stage2) -> None:
    """Write ``vms`` (with their pools, memslots, dirty bitmaps, TLB logs and counters) to
    one ``.npz`` file at ``path``. Pools are stored once however many VMs share them."""
    for vm in vms:
        if not isinstance(vm, Stage2):
            raise ArgumentTypeError(f"save() takes Stage2 VMs, not {type(vm).__name__}")
    pools: list[PagePool] = []
    arrays = {"magic": np.array(_MAGIC), "version": np.array(STATE_VERSION)}
    for j, vm in enumerate(vms):
        for i, pool in enumerate(pools):
            if pool is vm.pool:
                break
        else:
            i = len(pools)
            pools.append(vm.pool)
            arrays.update(_flat(f"pool{i}", vm.pool._state()))
        arrays[f"vm{j}.pool"] = np.array(i)
        arrays.update(_flat(f"vm{j}", vm._state()))
    arrays["vms"] = np.array(len(vms))
    arrays["pools"] = np.array(len(pools))
    # Pool images are mostly zero: compression keeps files near the size of the tables.
    np.savez_compressed(path, **arrays)


def load(path: str | os.PathLike) -> list[Stage2]:
    """The VMs a :func:`save` file holds, in the order saved. A file that is not s2pt's or
    comes from a newer format version raises :class:`StateFormatError`; one whose tables do
    not pass the invariant check raises :class:`InvariantError`."""
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise StateFormatError(f"{os.fspath(path)!r} is not an s2pt state file: {e}") from None
    with data:
        if "magic" not in data.files or str(data["magic"]) != _MAGIC:
            raise StateFormatError(f"{os.fspath(path)!r} is not an s2pt state file")
        version = int(data["version"])
        if version > STATE_VERSION:
            raise StateFormatError(
                f"{os.fspath(path)!r} has format version {version}; this s2pt reads version "
                f"{STATE_VERSION} and older: upgrade s2pt to read it")
        pools = [_pool_from_state(_group(data, f"pool{i}")) for i in range(int(data["pools"]))]
        out = []
        for j in range(int(data["vms"])):
            state = _group(data, f"vm{j}")
            out.append(_vm_from_state(pools[state.pop("pool")], state))
        return out


def _flat(prefix: str, state: dict) -> dict:
    return {f"{prefix}.{k}": np.asarray(v) for k, v in state.items()}


def _group(data, prefix: str) -> dict:
    """The fields under ``prefix``; 0-d arrays back to Python ints, as the states hold them."""
    start = prefix + "."
    out = {}
    for name in data.files:
        if name.startswith(start):
            value = data[name]
            out[name[len(start):]] = int(value) if value.ndim == 0 else value
    if not out:
        raise StateFormatError(f"the file holds no {prefix}")
    return out


__all__: Iterable[str] = ("save", "load")
