"""Robust z-score over a sliding window: |x - median| / (IQR / 1.349); outliers barely move either."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from zhizao.analytics.anomaly.base import F64, Alarm, Detector, Scored, alarm_step, reference_alarm

IQR_TO_STD = 1.3489795003921634  # IQR of a standard normal distribution


@njit(cache=True, error_model="numpy")
def _quantile(s: np.ndarray, n: int, p: float) -> float:
    # Linear interpolation between order statistics (NumPy's default method).
    h = (n - 1) * p
    lo = int(h)  # h >= 0: truncation is floor
    hi = min(lo + 1, n - 1)
    return float(s[lo] + (h - lo) * (s[hi] - s[lo]))


@njit(cache=True, error_model="numpy")
def _robust_step(row: np.ndarray, v: float, w: int, min_scale: float) -> float:
    # Score v against the tag's full window, then put it in: the ring buffer and the sorted copy.
    cnt = int(row[0])
    pos = int(row[1])
    ring = row[2:2 + w]
    srt = row[2 + w:2 + 2 * w]
    score = np.nan
    if cnt == w:
        med = _quantile(srt, w, 0.5)
        iqr = _quantile(srt, w, 0.75) - _quantile(srt, w, 0.25)
        score = abs(v - med) / max(iqr / IQR_TO_STD, min_scale)
        # Replace the oldest value in the sorted copy: find it, then slide v from there to its
        # place (fewer moves than a delete plus an insert).
        old = ring[pos]
        lo = 0
        hi = w
        while lo < hi:
            mid = (lo + hi) >> 1
            if srt[mid] < old:
                lo = mid + 1
            else:
                hi = mid
        q = lo
        if v > old:
            while q + 1 < w and srt[q + 1] < v:
                srt[q] = srt[q + 1]
                q += 1
        else:
            while q > 0 and srt[q - 1] > v:
                srt[q] = srt[q - 1]
                q -= 1
        srt[q] = v
    else:
        q = cnt
        while q > 0 and srt[q - 1] > v:
            srt[q] = srt[q - 1]
            q -= 1
        srt[q] = v
        row[0] = cnt + 1
    ring[pos] = v
    row[1] = (pos + 1) % w
    return score


TAG_BLOCK = 16  # tags per parallel task: their windows stay in L1 while time advances


@njit(cache=True, parallel=True, error_model="numpy")
def robust_kernel(
    st: np.ndarray, x: np.ndarray, w: int, min_scale: float,
    on: float, off: float, min_on: int, min_off: int, scores: np.ndarray, alarms: np.ndarray,
) -> None:
    """Per tag: a ring buffer of the last `w` samples and the same values kept sorted (O(w) per sample)."""
    n_t, n = x.shape
    a0 = 2 + 2 * w
    n_blocks = (n + TAG_BLOCK - 1) // TAG_BLOCK
    for b in prange(n_blocks):
        lo = b * TAG_BLOCK
        hi = min(n, lo + TAG_BLOCK)
        for t in range(n_t):
            for j in range(lo, hi):
                row = st[j]
                v = x[t, j]
                score = _robust_step(row, v, w, min_scale) if v == v else np.nan
                scores[t, j] = score
                act, con, coff = alarm_step(score, on, off, min_on, min_off, row[a0], row[a0 + 1], row[a0 + 2])
                row[a0] = act
                row[a0 + 1] = con
                row[a0 + 2] = coff
                alarms[t, j] = act > 0.5


@dataclass(frozen=True)
class RobustZ(Detector):
    """Median and interquartile range of the previous `window` valid samples; no score until the window is full."""

    window: int = 64
    min_scale: float = 1e-9
    alarm: Alarm = field(default_factory=lambda: Alarm(on=5.0, off=2.0, min_on=1, min_off=5))
    name: str = "robust_z"

    def __post_init__(self) -> None:
        if self.window < 4:
            raise ValueError(f"window: must be >= 4, got {self.window}")
        if not self.min_scale > 0.0:
            raise ValueError(f"min_scale: must be > 0, got {self.min_scale}")

    def state_shape(self, n_tags: int) -> tuple[int, int]:
        """Per tag: count, ring position, ring buffer, sorted window, alarm x3."""
        return (n_tags, 2 * self.window + 5)

    def _kernel(self, state: F64, x: F64, scores: F64, alarms: NDArray[np.bool_]) -> None:
        al = self.alarm
        robust_kernel(state, x, self.window, self.min_scale, al.on, al.off, al.min_on, al.min_off,
                      scores, alarms)

    def _reference(self, state: F64, x: F64) -> Scored:
        w = self.window
        scores = np.full(x.shape, np.nan)
        for j in range(x.shape[1]):
            cnt, pos = int(state[j, 0]), int(state[j, 1])
            ring = state[j, 2:2 + w]
            # The ring in arrival order: oldest first.
            hist = list(ring[:cnt]) if cnt < w else list(np.roll(ring, -pos))
            for t in range(x.shape[0]):
                v = x[t, j]
                if math.isnan(v):
                    continue
                if len(hist) == w:
                    q25, med, q75 = np.quantile(np.array(hist), [0.25, 0.5, 0.75])
                    scores[t, j] = abs(v - med) / max((q75 - q25) / IQR_TO_STD, self.min_scale)
                    hist.pop(0)
                hist.append(v)
                ring[pos] = v
                pos = (pos + 1) % w
            cnt = len(hist)
            state[j, 0], state[j, 1] = cnt, pos
            state[j, 2 + w:2 + w + cnt] = np.sort(np.array(hist))
        alarms = reference_alarm(scores, self.alarm, state[:, 2 + 2 * w], state[:, 3 + 2 * w],
                                 state[:, 4 + 2 * w])
        return Scored(scores, alarms)
