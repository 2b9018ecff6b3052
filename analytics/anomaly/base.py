"""The verbs every detector shares (init_state, update, reference_update) and the alarm with hysteresis."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class Alarm:
    """Alarm decision with hysteresis: raise after `min_on` scores > `on`, clear after `min_off` scores < `off`.

    A NaN score (warm-up, missing sample) interrupts both runs and leaves the alarm as it is.
    """

    on: float
    off: float
    min_on: int = 1
    min_off: int = 1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.on) and math.isfinite(self.off)):
            raise ValueError(f"alarm: on={self.on} and off={self.off} must be finite")
        if self.off > self.on:
            raise ValueError(f"alarm.off: {self.off} must not exceed alarm.on {self.on}")
        if self.min_on < 1 or self.min_off < 1:
            raise ValueError(f"alarm.min_on/min_off: must be >= 1, got {self.min_on}/{self.min_off}")


class Scored(NamedTuple):
    """What `update` returns: anomaly scores (higher = more anomalous; NaN = no score) and alarm states."""

    scores: F64
    alarms: NDArray[np.bool_]


# The last three state fields of every detector: alarm active (0/1), length of the run above `on`,
# length of the run below `off`. Kept as float64 so that a detector's whole state is one array.
ALARM_FIELDS = 3


@njit(cache=True, error_model="numpy")
def alarm_step(
    score: float, on: float, off: float, min_on: int, min_off: int, active: float, c_on: float, c_off: float
) -> tuple[float, float, float]:
    """One hysteresis step; returns (active, c_on, c_off). Branch-light so that loops over tags vectorise."""
    above = score > on
    below = score < off
    c_on = c_on + 1.0 if above else 0.0
    c_off = c_off + 1.0 if below else 0.0
    stay_on = 0.0 if c_off >= min_off else 1.0
    turn_on = 1.0 if c_on >= min_on else 0.0
    active = stay_on if active > 0.5 else turn_on
    return active, c_on, c_off


def reference_alarm(
    scores: F64, alarm: Alarm, active: F64, c_on: F64, c_off: F64
) -> NDArray[np.bool_]:
    """Reference twin of the alarm over a (time x outputs) score array; updates the three state rows in place."""
    out = np.zeros(scores.shape, dtype=np.bool_)
    for t in range(scores.shape[0]):
        s = scores[t]
        above = s > alarm.on
        below = s < alarm.off
        c_on[:] = np.where(above, c_on + 1.0, 0.0)
        c_off[:] = np.where(below, c_off + 1.0, 0.0)
        active[:] = np.where(active > 0.5, np.where(c_off >= alarm.min_off, 0.0, 1.0),
                             np.where(c_on >= alarm.min_on, 1.0, 0.0))
        out[t] = active > 0.5
    return out


class Detector(ABC):
    """A streaming detector batched over many tags; its state is one float64 array the caller keeps.

    Verbs: `state = det.init_state(n_tags)`; `scored = det.update(state, x)` with `x` of shape
    (time, tags) updates `state` in place and returns scores and alarm decisions of shape
    (time, outputs); `det.reference_update` is the plain-NumPy twin with the same effect. Splitting a
    batch in two gives exactly the same result as one call, so state can be persisted between batches.
    """

    name: str = ""
    tags_per_output: int = 1
    reference_rtol: ClassVar[float] = 1e-9
    """How closely `update` must match `reference_update` (scores, relative): exact arithmetic twins agree to 1e-9."""

    def n_outputs(self, n_tags: int) -> int:
        """Outputs (scored series) for `n_tags` input tags."""
        return n_tags // self.tags_per_output

    @abstractmethod
    def state_shape(self, n_tags: int) -> tuple[int, int]:
        """Shape of the state array for `n_tags` tags."""

    def init_state(self, n_tags: int) -> F64:
        """A fresh state for `n_tags` tags: zeros of `state_shape` (every detector starts from nothing seen)."""
        self._check_tags(n_tags)
        return np.zeros(self.state_shape(n_tags), np.float64)

    @abstractmethod
    def _kernel(self, state: F64, x: F64, scores: F64, alarms: NDArray[np.bool_]) -> None:
        """Run the numba kernel on validated arrays."""

    @abstractmethod
    def _reference(self, state: F64, x: F64) -> Scored:
        """Run the reference twin on validated arrays."""

    def _check(self, state: Any, x: ArrayLike) -> F64:
        arr = np.asarray(x)
        if arr.ndim != 2:
            raise ValueError(f"x: expected a 2-D (time, tags) array, got shape {arr.shape}")
        arr = np.ascontiguousarray(arr, dtype=np.float64)
        if not isinstance(state, np.ndarray) or state.dtype != np.float64 or not state.flags.c_contiguous:
            raise ValueError("state: expected the C-contiguous float64 array from init_state")
        if arr.shape[1] % self.tags_per_output:
            raise ValueError(
                f"x: {arr.shape[1]} tags is not a multiple of the group size {self.tags_per_output}"
            )
        if state.shape != self.state_shape(arr.shape[1]):
            raise ValueError(
                f"state: shape {state.shape} does not fit {arr.shape[1]} tags "
                f"(expected {self.state_shape(arr.shape[1])})"
            )
        return arr

    def _check_tags(self, n_tags: int) -> None:
        if n_tags < 1 or n_tags % self.tags_per_output:
            raise ValueError(f"n_tags: {n_tags} must be a positive multiple of {self.tags_per_output}")

    def update(self, state: F64, x: ArrayLike, out: Scored | None = None) -> Scored:
        """Score a batch (time x tags) and advance `state` in place (numba kernel); `out` reuses buffers."""
        arr = self._check(state, x)
        shape = (arr.shape[0], self.n_outputs(arr.shape[1]))
        if out is None:
            scores = np.empty(shape, np.float64)
            alarms = np.empty(shape, np.bool_)
        else:
            scores, alarms = out
            for name, buf, dtype in (("scores", scores, np.float64), ("alarms", alarms, np.bool_)):
                if buf.shape != shape or buf.dtype != dtype or not buf.flags.c_contiguous:
                    raise ValueError(f"out.{name}: expected a C-contiguous {np.dtype(dtype).name} array "
                                     f"of shape {shape}, got {buf.dtype} {buf.shape}")
        if arr.shape[0]:
            self._kernel(state, arr, scores, alarms)
        return Scored(scores, alarms)

    def reference_update(self, state: F64, x: ArrayLike) -> Scored:
        """The plain NumPy/Python twin of `update` (same results, slowly)."""
        arr = self._check(state, x)
        return self._reference(state, arr)
