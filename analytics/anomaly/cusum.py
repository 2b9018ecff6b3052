"""Two-sided CUSUM on standardised values, baseline learnt during warm-up, batched over tags."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from zhizao.analytics.anomaly.base import F64, Alarm, Detector, Scored, alarm_step, reference_alarm

# State rows: warm-up count, baseline mean, Welford M2, S+, S-, then the alarm fields.
_N, _MEAN, _M2, _SP, _SN, _ACT, _CON, _COFF = range(8)
TAG_BLOCK = 256


@njit(cache=True, error_model="numpy")
def _cusum_row(
    xr: np.ndarray, sr: np.ndarray, ar: np.ndarray, cnt: np.ndarray, mean: np.ndarray, m2: np.ndarray,
    sp: np.ndarray, sn: np.ndarray, act: np.ndarray, con: np.ndarray, coff: np.ndarray,
    warmup: float, k: float, cap: float, min_std: float, on: float, off: float, min_on: int, min_off: int,
) -> None:
    # One time step for a block of tags; selects only, so that LLVM vectorises across tags.
    for j in range(xr.size):
        v = xr[j]
        c = cnt[j]
        m = mean[j]
        ok = v == v
        learning = c < warmup
        # Warm-up: Welford update of the baseline.
        c1 = c + 1.0
        d = v - m
        m_new = m + d / c1
        learn = ok & learning
        m2_old = m2[j]
        mean[j] = m_new if learn else m
        m2[j] = m2_old + d * (v - m_new) if learn else m2_old
        cnt[j] = c1 if learn else c
        # Monitoring: standardise against the frozen baseline.
        sd = max(math.sqrt(m2_old / max(c, 1.0)), min_std)
        z = (v - m) / sd
        p = min(max(sp[j] + z - k, 0.0), cap)
        q = min(max(sn[j] - z - k, 0.0), cap)
        watch = ok & ~learning
        sp[j] = p if watch else sp[j]
        sn[j] = q if watch else sn[j]
        score = max(p, q) if watch else np.nan
        sr[j] = score
        act[j], con[j], coff[j] = alarm_step(score, on, off, min_on, min_off, act[j], con[j], coff[j])
        ar[j] = act[j] > 0.5


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def cusum_kernel(
    st: np.ndarray, x: np.ndarray, warmup: float, k: float, cap: float, min_std: float,
    on: float, off: float, min_on: int, min_off: int, scores: np.ndarray, alarms: np.ndarray,
) -> None:
    """Learn mean/std over the first `warmup` samples, then S± = clip(S± ± z - k, 0, cap); score max(S+, S-)."""
    n_t, n = x.shape
    n_blocks = (n + TAG_BLOCK - 1) // TAG_BLOCK
    for b in prange(n_blocks):
        lo = b * TAG_BLOCK
        hi = min(n, lo + TAG_BLOCK)
        rows = [st[r, lo:hi] for r in range(8)]
        for t in range(n_t):
            _cusum_row(x[t, lo:hi], scores[t, lo:hi], alarms[t, lo:hi], rows[_N], rows[_MEAN], rows[_M2],
                       rows[_SP], rows[_SN], rows[_ACT], rows[_CON], rows[_COFF],
                       warmup, k, cap, min_std, on, off, min_on, min_off)


@dataclass(frozen=True)
class Cusum(Detector):
    """Two-sided CUSUM: reference value `k` (in baseline std units), sums capped at `cap` so they recover."""

    warmup: int = 200
    k: float = 0.5
    cap: float = 16.0
    min_std: float = 1e-9
    alarm: Alarm = field(default_factory=lambda: Alarm(on=8.0, off=2.0, min_on=1, min_off=5))
    name: str = "cusum"

    def __post_init__(self) -> None:
        if self.warmup < 2:
            raise ValueError(f"warmup: must be >= 2 (a std needs two samples), got {self.warmup}")
        if not self.k >= 0.0:
            raise ValueError(f"k: must be >= 0, got {self.k}")
        if not self.cap > 0.0:
            raise ValueError(f"cap: must be > 0, got {self.cap}")
        if not self.min_std > 0.0:
            raise ValueError(f"min_std: must be > 0, got {self.min_std}")

    def state_shape(self, n_tags: int) -> tuple[int, int]:
        """Eight rows (count, mean, M2, S+, S-, alarm x3) by tags."""
        return (8, n_tags)

    def _kernel(self, state: F64, x: F64, scores: F64, alarms: NDArray[np.bool_]) -> None:
        al = self.alarm
        cusum_kernel(state, x, float(self.warmup), self.k, self.cap, self.min_std,
                     al.on, al.off, al.min_on, al.min_off, scores, alarms)

    def _reference(self, state: F64, x: F64) -> Scored:
        scores = np.full(x.shape, np.nan)
        n_tags = x.shape[1]
        for j in range(n_tags):
            for t in range(x.shape[0]):
                v = x[t, j]
                if math.isnan(v):
                    continue
                c = state[_N, j]
                if c < self.warmup:
                    m_old = state[_MEAN, j]
                    state[_MEAN, j] = m_old + (v - m_old) / (c + 1.0)
                    state[_M2, j] += (v - m_old) * (v - state[_MEAN, j])
                    state[_N, j] = c + 1.0
                    continue
                sd = max(math.sqrt(state[_M2, j] / c), self.min_std)
                z = (v - state[_MEAN, j]) / sd
                state[_SP, j] = min(max(state[_SP, j] + z - self.k, 0.0), self.cap)
                state[_SN, j] = min(max(state[_SN, j] - z - self.k, 0.0), self.cap)
                scores[t, j] = max(state[_SP, j], state[_SN, j])
        alarms = reference_alarm(scores, self.alarm, state[_ACT], state[_CON], state[_COFF])
        return Scored(scores, alarms)
