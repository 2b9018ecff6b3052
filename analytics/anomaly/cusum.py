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
_HALF_SQRT_PI = math.sqrt(math.pi) / 2.0


@njit(cache=True, error_model="numpy")
def _cusum_row(
    xr: np.ndarray, sr: np.ndarray, ar: np.ndarray, cnt: np.ndarray, mean: np.ndarray, m2: np.ndarray,
    sp: np.ndarray, sn: np.ndarray, act: np.ndarray, con: np.ndarray, coff: np.ndarray,
    warmup: float, k: float, cap: float, min_std: float, on: float, off: float, min_on: int, min_off: int,
    up: float, down: float, floor: float, margin: float,
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
        cnt[j] = c1 if learn else c
        if floor > 0.0:
            # The spread from the mean absolute successive difference (the M2 row sums them, the S- row holds the
            # previous value while learning): a trend, a tool change or a speed step inside the warm-up barely
            # moves it. For normal noise E|x_t - x_t-1| = 2 sd / sqrt(pi).
            m2[j] = (m2_old + abs(v - sn[j]) if c >= 1.0 else m2_old) if learn else m2_old
            sn[j] = (v if c1 < warmup else 0.0) if learn else sn[j]
            sd = max(m2_old / max(c - 1.0, 1.0) * _HALF_SQRT_PI, min_std)
        else:
            m2[j] = m2_old + d * (v - m_new) if learn else m2_old
            sd = max(math.sqrt(m2_old / max(c, 1.0)), min_std)
        # Monitoring: standardise against the frozen baseline.
        z = (v - m) / sd
        p = min(max(sp[j] + z - k, 0.0), cap) * up
        q = min(max(sn[j] - z - k, 0.0), cap) * down
        watch = ok & ~learning
        sp[j] = p if watch else sp[j]
        score = max(p, q) if watch else np.nan
        if floor > 0.0:
            # Rises only, with a floor: the S- row holds the smoothed level (z units); held `margin` below the
            # baseline, the baseline moves down to it (a fresh tool after a change).
            lv = sn[j] + floor * (z - sn[j])
            rebase = watch & (lv < -margin)
            mean[j] = m + lv * sd if rebase else mean[j]
            sn[j] = (0.0 if rebase else lv) if watch else sn[j]
        else:
            sn[j] = q if watch else sn[j]
        sr[j] = score
        act[j], con[j], coff[j] = alarm_step(score, on, off, min_on, min_off, act[j], con[j], coff[j])
        ar[j] = act[j] > 0.5


@njit(cache=True, parallel=True, nogil=True, error_model="numpy")
def cusum_kernel(
    st: np.ndarray, x: np.ndarray, warmup: float, k: float, cap: float, min_std: float,
    on: float, off: float, min_on: int, min_off: int, scores: np.ndarray, alarms: np.ndarray,
    up: float, down: float, floor: float, margin: float,
) -> None:
    """Learn mean/std over the first `warmup` samples, then S± = clip(S± ± z - k, 0, cap); score max(S+, S-)
    (`up`/`down` 0: that side's sum stays 0)."""
    n_t, n = x.shape
    n_blocks = (n + TAG_BLOCK - 1) // TAG_BLOCK
    for b in prange(n_blocks):
        lo = b * TAG_BLOCK
        hi = min(n, lo + TAG_BLOCK)
        rows = [st[r, lo:hi] for r in range(8)]
        for t in range(n_t):
            _cusum_row(x[t, lo:hi], scores[t, lo:hi], alarms[t, lo:hi], rows[_N], rows[_MEAN], rows[_M2],
                       rows[_SP], rows[_SN], rows[_ACT], rows[_CON], rows[_COFF],
                       warmup, k, cap, min_std, on, off, min_on, min_off, up, down, floor, margin)


@dataclass(frozen=True)
class Cusum(Detector):
    """Two-sided CUSUM: reference value `k` (in baseline std units), sums capped at `cap` so they recover.

    `side`: 0 both (default), +1 rises only, -1 falls only. A one-sided CUSUM suits wear: a worn tool only ever
    raises its load, and a fresh one below a baseline learnt on a part-worn one is no fault.

    `floor` (with `side` 1; 0: off): the weight of a smoothed level (EWMA of z, in the S- row); when it stays
    `floor_margin` baseline std below the baseline, the baseline mean moves down to it. The baseline std is then
    learnt from the mean absolute successive difference (a wear trend or a tool change inside the warm-up does
    not inflate it; the M2 row holds their sum). The reference is then
    the lowest level seen, the fresh tool after each change, whatever the wear when the baseline was learnt
    (a baseline learnt on a part-worn tool put the alarm late or never; where the warm-up fell varied with the
    seed)."""

    warmup: int = 200
    k: float = 0.5
    cap: float = 16.0
    min_std: float = 1e-9
    side: float = 0.0
    floor: float = 0.0
    floor_margin: float = 1.0
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
        if self.side not in (-1, 0, 1):
            raise ValueError(f"side: must be 0 (both), 1 (rises only) or -1 (falls only), got {self.side}")
        if not 0.0 <= self.floor <= 1.0:
            raise ValueError(f"floor: must be in [0, 1], got {self.floor}")
        if self.floor > 0.0 and self.side != 1:
            raise ValueError(f"floor: {self.floor} needs side 1 (rises only), got side {self.side}")
        if not self.floor_margin > 0.0:
            raise ValueError(f"floor_margin: must be > 0, got {self.floor_margin}")

    def state_shape(self, n_tags: int) -> tuple[int, int]:
        """Eight rows (count, mean, M2, S+, S-, alarm x3) by tags."""
        return (8, n_tags)

    def _kernel(self, state: F64, x: F64, scores: F64, alarms: NDArray[np.bool_]) -> None:
        al = self.alarm
        cusum_kernel(state, x, float(self.warmup), self.k, self.cap, self.min_std,
                     al.on, al.off, al.min_on, al.min_off, scores, alarms,
                     float(self.side >= 0), float(self.side <= 0), self.floor, self.floor_margin)

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
                    if self.floor > 0.0:
                        if c >= 1.0:
                            state[_M2, j] += abs(v - state[_SN, j])
                        state[_SN, j] = v if c + 1.0 < self.warmup else 0.0
                    else:
                        state[_M2, j] += (v - m_old) * (v - state[_MEAN, j])
                    state[_N, j] = c + 1.0
                    continue
                if self.floor > 0.0:
                    sd = max(state[_M2, j] / max(c - 1.0, 1.0) * _HALF_SQRT_PI, self.min_std)
                else:
                    sd = max(math.sqrt(state[_M2, j] / c), self.min_std)
                z = (v - state[_MEAN, j]) / sd
                if self.side >= 0:
                    state[_SP, j] = min(max(state[_SP, j] + z - self.k, 0.0), self.cap)
                if self.floor > 0.0:
                    scores[t, j] = state[_SP, j]
                    level = state[_SN, j] + self.floor * (z - state[_SN, j])
                    if level < -self.floor_margin:
                        state[_MEAN, j] += level * sd
                        level = 0.0
                    state[_SN, j] = level
                    continue
                if self.side <= 0:
                    state[_SN, j] = min(max(state[_SN, j] - z - self.k, 0.0), self.cap)
                scores[t, j] = max(state[_SP, j], state[_SN, j])
        alarms = reference_alarm(scores, self.alarm, state[_ACT], state[_CON], state[_COFF])
        return Scored(scores, alarms)
