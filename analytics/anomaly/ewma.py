"""EWMA mean/variance z-score detector, batched over tags (SIMD across tags, prange over tag blocks)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from zhizao.analytics.anomaly.base import F64, Alarm, Detector, Scored, alarm_step, reference_alarm

# State rows: samples seen, mean, variance, then the alarm fields.
_N, _MEAN, _VAR, _ACT, _CON, _COFF = range(6)
TAG_BLOCK = 256  # tags per parallel task: a block's state rows stay in L1 while time advances


@njit(cache=True, error_model="numpy")
def _ewma_row(
    xr: np.ndarray, sr: np.ndarray, ar: np.ndarray, cnt: np.ndarray, mean: np.ndarray, var: np.ndarray,
    act: np.ndarray, con: np.ndarray, coff: np.ndarray, alpha: float, warmup: float, min_var: float,
    gate: float, on: float, off: float, min_on: int, min_off: int,
) -> None:
    # One time step for a block of tags. Loop from 0 over views and selects only: LLVM vectorises it.
    for j in range(xr.size):
        v = xr[j]
        c = cnt[j]
        m = mean[j]
        s2 = var[j]
        d = v - m
        z = abs(d) / math.sqrt(max(s2, min_var))
        ok = v == v
        watching = c >= warmup
        score = z if (ok & watching) else np.nan
        # Learn from a valid sample unless, after the warm-up, it is beyond the gate (a fault is not learnt).
        learn = ok & ~(watching & (z > gate))
        a = max(alpha, 1.0 / (c + 1.0))
        mean[j] = m + a * d if learn else m
        var[j] = (1.0 - a) * (s2 + a * d * d) if learn else s2
        cnt[j] = c + 1.0 if learn else c
        sr[j] = score
        act[j], con[j], coff[j] = alarm_step(score, on, off, min_on, min_off, act[j], con[j], coff[j])
        ar[j] = act[j] > 0.5


@njit(cache=True, parallel=True, error_model="numpy")
def ewma_kernel(
    st: np.ndarray, x: np.ndarray, alpha: float, warmup: float, min_var: float, gate: float,
    on: float, off: float, min_on: int, min_off: int, scores: np.ndarray, alarms: np.ndarray,
) -> None:
    """Score each sample against the EWMA mean/variance before it, then fold it in (NaN: skipped)."""
    n_t, n = x.shape
    n_blocks = (n + TAG_BLOCK - 1) // TAG_BLOCK
    for b in prange(n_blocks):
        lo = b * TAG_BLOCK
        hi = min(n, lo + TAG_BLOCK)
        cnt = st[_N, lo:hi]
        mean = st[_MEAN, lo:hi]
        var = st[_VAR, lo:hi]
        act = st[_ACT, lo:hi]
        con = st[_CON, lo:hi]
        coff = st[_COFF, lo:hi]
        for t in range(n_t):
            _ewma_row(x[t, lo:hi], scores[t, lo:hi], alarms[t, lo:hi], cnt, mean, var, act, con, coff,
                      alpha, warmup, min_var, gate, on, off, min_on, min_off)


@dataclass(frozen=True)
class EwmaZ(Detector):
    """|x - EWMA mean| / EWMA std, scored before the sample is folded in; no score during warm-up.

    The first samples use weight 1/n (an exact running mean) until 1/n drops below `alpha`. After the
    warm-up, a sample scoring above `gate` is not learnt: the detector keeps re-learning slowly (`alpha`)
    on normal data but does not absorb a fault (`gate=inf`, the default, learns every sample).
    """

    alpha: float = 0.01
    warmup: int = 100
    min_std: float = 1e-9
    gate: float = math.inf
    alarm: Alarm = field(default_factory=lambda: Alarm(on=4.0, off=2.0, min_on=1, min_off=5))
    name: str = "ewma_z"

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha: must be in (0, 1], got {self.alpha}")
        if self.warmup < 1:
            raise ValueError(f"warmup: must be >= 1, got {self.warmup}")
        if not self.min_std > 0.0:
            raise ValueError(f"min_std: must be > 0, got {self.min_std}")
        if not self.gate > 0.0:
            raise ValueError(f"gate: must be > 0, got {self.gate}")

    def state_shape(self, n_tags: int) -> tuple[int, int]:
        """Six rows (count, mean, variance, alarm x3) by tags."""
        return (6, n_tags)

    def _kernel(self, state: F64, x: F64, scores: F64, alarms: NDArray[np.bool_]) -> None:
        al = self.alarm
        ewma_kernel(state, x, self.alpha, float(self.warmup), self.min_std**2, self.gate,
                    al.on, al.off, al.min_on, al.min_off, scores, alarms)

    def _reference(self, state: F64, x: F64) -> Scored:
        scores = np.empty(x.shape)
        for t in range(x.shape[0]):
            v = x[t]
            cnt, mean, var = state[_N], state[_MEAN], state[_VAR]
            ok = ~np.isnan(v)
            z = np.abs(v - mean) / np.sqrt(np.maximum(var, self.min_std**2))
            watching = cnt >= self.warmup
            scores[t] = np.where(ok & watching, z, np.nan)
            learn = ok & ~(watching & (z > self.gate))
            a = np.maximum(self.alpha, 1.0 / (cnt + 1.0))
            d = np.where(learn, v - mean, 0.0)
            new_var = (1.0 - a) * (var + a * d * d)
            state[_MEAN] = np.where(learn, mean + a * d, mean)
            state[_VAR] = np.where(learn, new_var, var)
            state[_N] = np.where(learn, cnt + 1.0, cnt)
        alarms = reference_alarm(scores, self.alarm, state[_ACT], state[_CON], state[_COFF])
        return Scored(scores, alarms)
