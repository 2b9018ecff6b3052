"""What comes after a detector's raw score: a calibrated anomaly likelihood in [0, 1] and events.

Both are streaming post-processors over a detector's score output (time, outputs) with the detectors' verbs:
`state = p.init_state(n_outputs)`, `p.update(state, scores)` (numba kernel; state advances in place),
`p.reference_update(state, scores)` (the plain NumPy/Python twin, same results), and the same batch-split
rule: scoring in one call equals scoring in consecutive batches with the state carried. Their state is one
float64 array per batch of outputs that the caller keeps next to the detector's.

- `AnomalyLikelihood`: how unusual the recent scores are against the long-run distribution of the same
  output's scores (as HTM's anomaly likelihood): z = (short mean - long mean) / long std of the scores, and
  the result is `log(Q(z) + 1e-10) / log(1e-10)` clipped to [0, 1], where Q is the normal tail. So 0.5 means
  a tail probability of 1e-5 (z ~ 4.3) and 1.0 a tail of 1e-10 or less; comparable across tags and detectors.
- `EventDetector`: turns a score (raw or likelihood) into events with onset, peak and end, and a threshold-free
  `strength` output that is the value wherever it sets a new peak and 0 while a higher value was seen within
  the last `refractory` samples (repeats of one anomaly are not reported again: what NAB's leaders do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

from zhizao.analytics.anomaly.base import F64

_LOG_FLOOR = math.log(1e-10)
_SQRT2 = math.sqrt(2.0)

# Likelihood state rows: scores seen, long-run mean and variance, short mean.
_N, _M, _V, _S = range(4)


@njit(cache=True, error_model="numpy")
def likelihood_kernel(st: np.ndarray, x: np.ndarray, short: float, alpha: float, learn: float,
                      out: np.ndarray) -> None:
    """Per output: score the short mean of the scores against their long-run EWMA mean/variance, then fold in."""
    for j in range(x.shape[1]):
        for t in range(x.shape[0]):
            r = x[t, j]
            if r != r:
                out[t, j] = np.nan
                continue
            c = st[_N, j]
            a_s = max(1.0 / short, 1.0 / (c + 1.0))
            sm = st[_S, j] + a_s * (r - st[_S, j])
            st[_S, j] = sm
            m = st[_M, j]
            v = st[_V, j]
            res = np.nan
            if c >= learn:
                floor = max(1e-6 * abs(m), 1e-12)
                z = (sm - m) / math.sqrt(max(v, floor * floor))
                q = 0.5 * math.erfc(z / _SQRT2)
                res = min(max(math.log(q + 1e-10) / _LOG_FLOOR, 0.0), 1.0)
            out[t, j] = res
            a = max(alpha, 1.0 / (c + 1.0))
            d = r - m
            st[_M, j] = m + a * d
            st[_V, j] = (1.0 - a) * (v + a * d * d)
            st[_N, j] = c + 1.0


@dataclass(frozen=True)
class AnomalyLikelihood:
    """Recent scores (EWMA over ~`short` samples) against their long-run distribution (EWMA, weight `alpha`).

    The long-run mean and variance are exact running moments until 1/n drops below `alpha`; there is no
    output for the first `learn` scores of an output (NaN), and NaN scores are skipped.
    """

    short: int = 1
    alpha: float = 1e-3
    learn: int = 100

    def __post_init__(self) -> None:
        if self.short < 1:
            raise ValueError(f"short: must be >= 1, got {self.short}")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha: must be in (0, 1], got {self.alpha}")
        if self.learn < 2:
            raise ValueError(f"learn: must be >= 2 (a variance needs two scores), got {self.learn}")

    def init_state(self, n_outputs: int) -> F64:
        """A fresh state: four rows (count, long mean, long variance, short mean) by outputs."""
        if n_outputs < 1:
            raise ValueError(f"n_outputs: must be >= 1, got {n_outputs}")
        return np.zeros((4, n_outputs))

    def _check(self, state: F64, scores: ArrayLike) -> F64:
        x = np.ascontiguousarray(scores, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"scores: expected a 2-D (time, outputs) array, got shape {x.shape}")
        if not isinstance(state, np.ndarray) or state.dtype != np.float64 or state.shape != (4, x.shape[1]):
            raise ValueError(f"state: expected the float64 array of shape (4, {x.shape[1]}) from init_state")
        return x

    def update(self, state: F64, scores: ArrayLike) -> F64:
        """The likelihood of each score in [0, 1] (NaN: no score, or still learning); `state` advances."""
        x = self._check(state, scores)
        out = np.empty(x.shape)
        likelihood_kernel(state, x, float(self.short), self.alpha, float(self.learn), out)
        return out

    def reference_update(self, state: F64, scores: ArrayLike) -> F64:
        """The plain NumPy twin of `update`."""
        x = self._check(state, scores)
        out = np.full(x.shape, np.nan)
        for t in range(x.shape[0]):
            r = x[t]
            ok = ~np.isnan(r)
            c = state[_N].copy()
            a_s = np.maximum(1.0 / self.short, 1.0 / (c + 1.0))
            sm = np.where(ok, state[_S] + a_s * (r - state[_S]), state[_S])
            m, v = state[_M].copy(), state[_V].copy()
            floor = np.maximum(1e-6 * np.abs(m), 1e-12)
            with np.errstate(divide="ignore", invalid="ignore"):
                z = (sm - m) / np.sqrt(np.maximum(v, floor * floor))
            q = np.array([0.5 * math.erfc(zz / _SQRT2) if zz == zz else np.nan for zz in z])
            lik = np.clip(np.log(q + 1e-10) / _LOG_FLOOR, 0.0, 1.0)
            out[t] = np.where(ok & (c >= self.learn), lik, np.nan)
            a = np.maximum(self.alpha, 1.0 / (c + 1.0))
            d = np.where(ok, r - m, 0.0)
            state[_S] = sm
            state[_M] = np.where(ok, m + a * d, m)
            state[_V] = np.where(ok, (1.0 - a) * (v + a * d * d), v)
            state[_N] = np.where(ok, c + 1.0, c)
        return out


# Event state rows: samples seen (every row, NaN included: the index of the next sample), event active,
# onset index, peak index, peak value, quiet run (valid samples below `off` while active), held value,
# samples since the held value was set.
_I, _ACT, _ON, _PK, _PV, _QUIET, _HOLD, _AGE = range(8)


class Events(NamedTuple):
    """What `EventDetector.update` returns.

    `strength` (time, outputs): the value where it sets a new peak within the refractory period, else 0
    (NaN where the value is NaN); `active` (time, outputs): inside an event. The closed events of the batch,
    in order of their end: `output`, `onset`, `peak`, `end` (sample indices counted from the state's first
    sample, so the caller maps them to timestamps) and `peak_value`.
    """

    strength: F64
    active: NDArray[np.bool_]
    output: NDArray[np.int64]
    onset: NDArray[np.int64]
    peak: NDArray[np.int64]
    end: NDArray[np.int64]
    peak_value: F64


@njit(cache=True, error_model="numpy")
def event_kernel(st: np.ndarray, x: np.ndarray, level: float, off: float, refractory: float,
                 strength: np.ndarray, active: np.ndarray, ev: np.ndarray) -> int:
    """Per output: events above `level` that end after `refractory` valid samples below `off`; returns the count."""
    n_ev = 0
    for j in range(x.shape[1]):
        for t in range(x.shape[0]):
            v = x[t, j]
            i = st[_I, j]
            st[_I, j] = i + 1.0
            if v != v:
                strength[t, j] = np.nan
                active[t, j] = st[_ACT, j] > 0.5
                continue
            age = st[_AGE, j] + 1.0
            if age > refractory:
                st[_HOLD, j] = 0.0
            if v > st[_HOLD, j]:
                strength[t, j] = v
                st[_HOLD, j] = v
                age = 0.0
            else:
                strength[t, j] = 0.0
            st[_AGE, j] = age
            if st[_ACT, j] > 0.5:
                if v > st[_PV, j]:
                    st[_PV, j] = v
                    st[_PK, j] = i
                st[_QUIET, j] = st[_QUIET, j] + 1.0 if v < off else 0.0
                if st[_QUIET, j] >= refractory:
                    ev[n_ev, 0] = j
                    ev[n_ev, 1] = st[_ON, j]
                    ev[n_ev, 2] = st[_PK, j]
                    ev[n_ev, 3] = i - st[_QUIET, j] + 1.0
                    ev[n_ev, 4] = st[_PV, j]
                    n_ev += 1
                    st[_ACT, j] = 0.0
                    st[_QUIET, j] = 0.0
            elif v > level:
                st[_ACT, j] = 1.0
                st[_ON, j] = i
                st[_PK, j] = i
                st[_PV, j] = v
                st[_QUIET, j] = 0.0
            active[t, j] = st[_ACT, j] > 0.5
    return n_ev


@dataclass(frozen=True)
class EventDetector:
    """Events on a score: onset at the first value > `level`; the event ends once `refractory` valid values
    in a row are < `off` (its end is the first of them); the peak is its highest value.

    With the likelihood as input, `level=0.5` is a tail probability of 1e-5. `refractory` also sets how long a
    peak holds down the `strength` output.
    """

    level: float = 0.5
    off: float = 0.3
    refractory: int = 60

    def __post_init__(self) -> None:
        if not (math.isfinite(self.level) and math.isfinite(self.off)) or self.off > self.level:
            raise ValueError(f"off: {self.off} must be finite and not exceed level {self.level}")
        if self.refractory < 1:
            raise ValueError(f"refractory: must be >= 1, got {self.refractory}")

    def init_state(self, n_outputs: int) -> F64:
        """A fresh state: eight rows by outputs."""
        if n_outputs < 1:
            raise ValueError(f"n_outputs: must be >= 1, got {n_outputs}")
        return np.zeros((8, n_outputs))

    def _check(self, state: F64, scores: ArrayLike) -> F64:
        x = np.ascontiguousarray(scores, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"scores: expected a 2-D (time, outputs) array, got shape {x.shape}")
        if not isinstance(state, np.ndarray) or state.dtype != np.float64 or state.shape != (8, x.shape[1]):
            raise ValueError(f"state: expected the float64 array of shape (8, {x.shape[1]}) from init_state")
        return x

    @staticmethod
    def _events(strength: F64, active: NDArray[np.bool_], ev: F64) -> Events:
        order = np.lexsort((ev[:, 0], ev[:, 3]))
        ev = ev[order]
        return Events(strength, active, ev[:, 0].astype(np.int64), ev[:, 1].astype(np.int64),
                      ev[:, 2].astype(np.int64), ev[:, 3].astype(np.int64), ev[:, 4].copy())

    def update(self, state: F64, scores: ArrayLike) -> Events:
        """Strength, active flags and the events closed in this batch; `state` advances in place."""
        x = self._check(state, scores)
        strength = np.empty(x.shape)
        active = np.empty(x.shape, np.bool_)
        ev = np.empty((x.size // 2 + x.shape[1], 5))
        n = event_kernel(state, x, self.level, self.off, float(self.refractory), strength, active, ev)
        return self._events(strength, active, ev[:n])

    def reference_update(self, state: F64, scores: ArrayLike) -> Events:
        """The plain Python twin of `update`."""
        x = self._check(state, scores)
        strength = np.zeros(x.shape)
        active = np.zeros(x.shape, np.bool_)
        ev: list[list[float]] = []
        for j in range(x.shape[1]):
            s = state[:, j]
            for t in range(x.shape[0]):
                v = float(x[t, j])
                i = s[_I]
                s[_I] = i + 1
                if math.isnan(v):
                    strength[t, j] = np.nan
                    active[t, j] = s[_ACT] > 0.5
                    continue
                s[_AGE] += 1
                if s[_AGE] > self.refractory:
                    s[_HOLD] = 0.0
                if v > s[_HOLD]:
                    strength[t, j], s[_HOLD], s[_AGE] = v, v, 0.0
                if s[_ACT] > 0.5:
                    if v > s[_PV]:
                        s[_PV], s[_PK] = v, i
                    s[_QUIET] = s[_QUIET] + 1 if v < self.off else 0.0
                    if s[_QUIET] >= self.refractory:
                        ev.append([j, s[_ON], s[_PK], i - s[_QUIET] + 1, s[_PV]])
                        s[_ACT], s[_QUIET] = 0.0, 0.0
                elif v > self.level:
                    s[_ACT], s[_ON], s[_PK], s[_PV], s[_QUIET] = 1.0, i, i, v, 0.0
                active[t, j] = s[_ACT] > 0.5
        return self._events(strength, active, np.array(ev, np.float64).reshape(-1, 5))
