"""Value novelty: how far a sample lies from every value the tag has shown, as a share of the range shown.

Per tag the state keeps up to `capacity` prototype values, sorted. A sample is scored by the distance to the
nearest prototype (binary search, O(log capacity)) over the range the prototypes span, then learnt: inserted
as a prototype; when the set is full the two closest prototypes are merged into their midpoint, so the
prototypes stay spread over everything seen, dense where the data are. A value the tag has shown before scores
about 0; a new level, a spike or a value beyond the range seen scores high once and is then known: the
detector re-learns a new normal at once and reports the change a single time, the behaviour the leaders of the
NAB benchmark share (ARTime learns categories and flags a new one once). Scale-free: the score of a series in
other units or with an offset is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from zhizao.analytics.anomaly.base import F64, Alarm, Detector, Scored, alarm_step, reference_alarm

# Header of a tag's state row: samples seen, prototypes in use. Then the prototypes, then the alarm fields.
_N, _M = range(2)
_HEAD = 2
REL_FLOOR = 1e-3  # the range a score is relative to is at least this share of the values' magnitude


@njit(cache=True, error_model="numpy")
def _lower(s: np.ndarray, m: int, v: float) -> int:
    lo = 0
    hi = m
    while lo < hi:
        mid = (lo + hi) >> 1
        if s[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, error_model="numpy")
def _novelty_step(row: np.ndarray, v: float, cap: int, warmup: float, resolution: float) -> float:
    s = row[_HEAD:_HEAD + cap]
    m = int(row[_M])
    n = row[_N]
    row[_N] = n + 1.0
    if m == 0:
        s[0] = v
        row[_M] = 1.0
        return np.nan
    lo = _lower(s, m, v)
    d = np.inf
    if lo < m:
        d = min(d, s[lo] - v)
    if lo > 0:
        d = min(d, v - s[lo - 1])
    span = s[m - 1] - s[0]
    score = np.nan
    if n >= warmup:
        # The range is at least REL_FLOOR of the values' magnitude: a flat or quantised tag does not explode
        # (an all-zero history falls back to 1e-12).
        score = d / max(span, REL_FLOOR * max(abs(s[0]), abs(s[m - 1])), 1e-12)
    if d > 0.0 and d > resolution * span:
        if m == cap:
            best = 0
            gap = np.inf
            for i in range(m - 1):
                g = s[i + 1] - s[i]
                if g < gap:
                    gap = g
                    best = i
            s[best] = 0.5 * (s[best] + s[best + 1])
            for i in range(best + 1, m - 1):
                s[i] = s[i + 1]
            m -= 1
            lo = _lower(s, m, v)
        for i in range(m, lo, -1):
            s[i] = s[i - 1]
        s[lo] = v
        row[_M] = m + 1.0
    return score


@njit(cache=True, parallel=True, error_model="numpy")
def novelty_kernel(st: np.ndarray, x: np.ndarray, cap: int, warmup: float, resolution: float, on: float, off: float,
                   min_on: int, min_off: int, scores: np.ndarray, alarms: np.ndarray) -> None:
    """Per tag: score against the nearest prototype over the prototypes' range, then learn the sample."""
    n_t, n = x.shape
    a0 = _HEAD + cap
    for j in prange(n):
        row = st[j]
        for t in range(n_t):
            v = x[t, j]
            score = _novelty_step(row, v, cap, warmup, resolution) if v == v else np.nan
            scores[t, j] = score
            act, con, coff = alarm_step(score, on, off, min_on, min_off, row[a0], row[a0 + 1], row[a0 + 2])
            row[a0] = act
            row[a0 + 1] = con
            row[a0 + 2] = coff
            alarms[t, j] = act > 0.5


@dataclass(frozen=True)
class ValueNovelty(Detector):
    """Distance to the nearest of up to `capacity` prototype values over their range; no score in the warm-up.

    A sample within `resolution` x the range of a prototype is not learnt (it is known already): on steady
    data few samples are inserted, so a sample costs O(log capacity) (an insertion shifts the sorted set).
    The score is a share of the range seen: 0.25 (the default alarm) is a value a quarter of the range seen away
    from anything seen. NAB's optimizer puts its threshold near 0.015: events are cheap there, not for operators.
    """

    capacity: int = 256
    warmup: int = 100
    resolution: float = 0.004
    alarm: Alarm = field(default_factory=lambda: Alarm(on=0.25, off=0.05, min_on=1, min_off=5))
    name: str = "value_novelty"

    def __post_init__(self) -> None:
        if self.capacity < 2:
            raise ValueError(f"capacity: must be >= 2, got {self.capacity}")
        if self.warmup < 1:
            raise ValueError(f"warmup: must be >= 1, got {self.warmup}")
        if not 0.0 <= self.resolution < 1.0:
            raise ValueError(f"resolution: must be in [0, 1), got {self.resolution}")

    def state_shape(self, n_tags: int) -> tuple[int, int]:
        """Per tag: samples seen, prototypes in use, the prototypes, alarm x3."""
        return (n_tags, _HEAD + self.capacity + 3)

    def _kernel(self, state: F64, x: F64, scores: F64, alarms: NDArray[np.bool_]) -> None:
        al = self.alarm
        novelty_kernel(state, x, self.capacity, float(self.warmup), self.resolution, al.on, al.off, al.min_on, al.min_off,
                       scores, alarms)

    def _reference(self, state: F64, x: F64) -> Scored:
        cap = self.capacity
        scores = np.full(x.shape, np.nan)
        for j in range(x.shape[1]):
            row = state[j]
            protos = [float(v) for v in row[_HEAD:_HEAD + int(row[_M])]]
            n = int(row[_N])
            for t in range(x.shape[0]):
                v = float(x[t, j])
                if np.isnan(v):
                    continue
                n += 1
                if not protos:
                    protos.append(v)
                    continue
                arr = np.array(protos)
                d = float(np.min(np.abs(arr - v)))
                if n - 1 >= self.warmup:
                    span = protos[-1] - protos[0]
                    scores[t, j] = d / max(span, REL_FLOOR * max(abs(protos[0]), abs(protos[-1])), 1e-12)
                if d > 0.0 and d > self.resolution * (protos[-1] - protos[0]):
                    if len(protos) == cap:
                        gaps = np.diff(np.array(protos))
                        best = int(np.argmin(gaps))  # the first of equal gaps, as the kernel
                        protos[best:best + 2] = [0.5 * (protos[best] + protos[best + 1])]
                    protos.insert(int(np.searchsorted(np.array(protos), v, side="left")), v)
            row[_N], row[_M] = n, len(protos)
            row[_HEAD:_HEAD + len(protos)] = protos
        a0 = _HEAD + cap
        alarms = reference_alarm(scores, self.alarm, state[:, a0], state[:, a0 + 1], state[:, a0 + 2])
        return Scored(scores, alarms)
