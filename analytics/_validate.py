"""Thin input checks shared by the kernel wrappers: they raise ValueError naming the array and the fault."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def as_array(name: str, value: Any, dtype: type[np.generic], ndim: int = 1) -> NDArray[Any]:
    """Return `value` as a C-contiguous array of `dtype` with `ndim` dimensions, or raise ValueError."""
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    if arr.dtype != dtype:
        if np.issubdtype(dtype, np.integer) and arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name}: expected integers ({np.dtype(dtype).name}), got dtype {arr.dtype}")
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr)


def check_offsets(name: str, offsets: NDArray[np.int64], n_items: int, n_groups: int | None = None) -> int:
    """Check CSR-style segment offsets (start at 0, non-decreasing, end at n_items); return the group count."""
    if offsets.size == 0:
        raise ValueError(f"{name}: offsets need at least one entry (0), got an empty array")
    if offsets[0] != 0:
        raise ValueError(f"{name}: offsets must start at 0, got {int(offsets[0])}")
    if offsets[-1] != n_items:
        raise ValueError(f"{name}: last offset {int(offsets[-1])} != number of items {n_items}")
    bad = np.flatnonzero(np.diff(offsets) < 0)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name}: offsets decrease at index {i + 1} ({int(offsets[i])} -> {int(offsets[i + 1])})")
    groups = offsets.size - 1
    if n_groups is not None and groups != n_groups:
        raise ValueError(f"{name}: describes {groups} machines, expected {n_groups}")
    return groups


def check_same_length(**arrays: NDArray[Any]) -> None:
    """Raise ValueError when the named arrays differ in length."""
    lengths = {name: arr.shape[0] for name, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"inconsistent lengths: {detail}")


def check_sorted(name: str, times: NDArray[np.int64], offsets: NDArray[np.int64], strict: bool = False) -> None:
    """Raise ValueError when `times` is not sorted within every segment given by `offsets`."""
    if times.size < 2:
        return
    step = np.diff(times)
    bad = step <= 0 if strict else step < 0
    # A decrease across a segment border is allowed: it starts the next machine.
    starts = offsets[1:-1]
    starts = starts[(starts > 0) & (starts < times.size)]
    bad[starts - 1] = False
    idx = np.flatnonzero(bad)
    if idx.size:
        i = int(idx[0])
        machine = int(np.searchsorted(offsets, i + 1, side="right") - 1)
        order = "strictly increasing" if strict else "sorted"
        raise ValueError(
            f"{name}: not {order} for machine {machine} at index {i + 1} ({int(times[i])} then {int(times[i + 1])})"
        )
