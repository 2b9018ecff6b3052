"""Robust z-score over a sliding window: |x - median| / (IQR / 1.349); outliers barely move either.

How the kernel keeps the window's quartiles in O(log window) per sample (amortised over a batch): the
valid samples of a tag's batch are cut into chunks of `window` in arrival order. Each chunk is sorted once
(O(w log w) per w samples) into a doubly linked list, which is then emptied in reverse arrival order. The
window at any sample is what is left of the previous chunk's list (P) plus what has been re-linked of the
current chunk's list (C): re-linking a sample in arrival order undoes its removal ("dancing links", O(1)),
removing the oldest sample from P is O(1), and for each of the three quantiles a pair of pointers (one in
each list) marks the boundary after the k smallest values of P and C together, which an insert or a removal
moves by O(1) steps. This is the block scheme of J. Suomela, "Median filtering is equivalent to sorting"
(arXiv:1406.1717, 2014), for three quantiles and with the window carried in the state between batches. A
call also pays O(w) per tag to re-link the carried window and write it back, so calls with only a few
samples per tag cost O(w) per sample, as a sorted array does.

The ordering is total: value, then arrival (the older of two equal values is the smaller), so the state
and every score are functions of the window's contents alone and any split into batches gives the same
bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from zhizao.analytics.anomaly.base import F64, Alarm, Detector, Scored, alarm_step, reference_alarm

IQR_TO_STD = 1.3489795003921634  # IQR of a standard normal distribution
STEP_TO_STD = 1.0 / math.sqrt(12.0)  # standard deviation of rounding to a grid of step 1
QUANTILES = (0.25, 0.5, 0.75)


@njit(cache=True, inline="always")
def _less(val: np.ndarray, n: int, i: int, j: int) -> bool:
    # The total order on list nodes: (value, arrival). Ids >= n are list ends: even offset = head
    # (below everything), odd offset = tail (above everything).
    if i >= n:
        return (i - n) % 2 == 0
    if j >= n:
        return (j - n) % 2 == 1
    vi = val[i]
    vj = val[j]
    return vi < vj or (vi == vj and i < j)


@njit(cache=True, error_model="numpy")
def _scale(val: np.ndarray, lo: int, hi: int, med: float, iqr: float, v: float, rel: float,
           min_scale: float) -> float:
    # IQR / 1.349, floored by a fraction of the data's level and, where half the window sits on one value,
    # by the rounding noise of the window's step (the nearest other value to the median); see RobustZ.
    scale = iqr / IQR_TO_STD
    floor = rel * max(abs(med), abs(v))
    if iqr == 0.0:
        step = np.inf
        for i in range(lo, hi):
            d = abs(val[i] - med)
            if 0.0 < d < step:
                step = d
        if step < np.inf:
            floor = max(floor, step * STEP_TO_STD)
    return max(scale, floor, min_scale)


@njit(cache=True, error_model="numpy")
def _robust_tag(
    row: np.ndarray, xs: np.ndarray, w: int, ks: np.ndarray, fs: np.ndarray, rel: float, min_scale: float,
    val: np.ndarray, nxt: np.ndarray, prv: np.ndarray, sc: np.ndarray,
) -> None:
    """Score one tag's batch `xs` into `sc` (NaN = no score) and advance its state row (without the alarm)."""
    n_t = xs.shape[0]
    cnt = int(row[0])
    pos = int(row[1])
    start = pos if cnt == w else 0  # ring slot of the oldest sample
    n0 = cnt
    for i in range(n0):
        val[i] = row[2 + (start + i) % w]
    n = n0
    for t in range(n_t):
        v = xs[t]
        sc[t] = np.nan
        if v == v:
            val[n] = v
            n += 1
    if n == n0:
        return
    # The carried window as list 0, in the sorted order kept in the state.
    p_head = n
    prev = p_head
    for r in range(n0):
        i = (int(row[2 + w + r]) - start) % w
        nxt[prev] = i
        prv[i] = prev
        prev = i
    nxt[prev] = p_head + 1
    prv[p_head + 1] = prev
    p_del = 0  # the oldest sample still in P
    c_head = p_head
    size = n0
    a = np.zeros(3, np.int64)
    b = np.zeros(3, np.int64)
    ca = np.zeros(3, np.int64)
    cb = np.zeros(3, np.int64)
    valid = False
    q = np.zeros(3)
    t = 0
    c0 = n0
    chunk = 0
    while c0 < n:
        c1 = min(c0 + w, n)
        if chunk > 0:  # the previous chunk, now complete, becomes P (the one before it is empty)
            p_head = c_head
            p_del = c0 - w
        chunk += 1
        c_head = n + 2 * chunk
        order = np.argsort(val[c0:c1], kind="mergesort")  # stable: ties in arrival order
        prev = c_head
        for r in range(c1 - c0):
            i = c0 + order[r]
            nxt[prev] = i
            prv[i] = prev
            prev = i
        nxt[prev] = c_head + 1
        prv[c_head + 1] = prev
        for i in range(c1 - 1, c0 - 1, -1):
            nxt[prv[i]] = nxt[i]
            prv[nxt[i]] = prv[i]
        valid = False
        for e in range(c0, c1):
            while xs[t] != xs[t]:
                t += 1
            full = size == w
            if full:
                if not valid:  # boundaries from the ends of both lists: O(w), once per chunk
                    ai = nxt[p_head]
                    bi = nxt[c_head]
                    na = 0
                    nb = 0
                    for k in range(3):
                        while na + nb < ks[k]:
                            if _less(val, n, ai, bi):
                                ai = nxt[ai]
                                na += 1
                            else:
                                bi = nxt[bi]
                                nb += 1
                        a[k] = ai
                        b[k] = bi
                        ca[k] = na
                        cb[k] = nb
                    valid = True
                for k in range(3):
                    pa = prv[a[k]]
                    pb = prv[b[k]]
                    s_lo = val[pa] if _less(val, n, pb, pa) else val[pb]
                    s_hi = val[a[k]] if _less(val, n, a[k], b[k]) else val[b[k]]
                    q[k] = s_lo + fs[k] * (s_hi - s_lo)
                v = val[e]
                sc[t] = abs(v - q[1]) / _scale(val, e - w, e, q[1], q[2] - q[0], v, rel, min_scale)
            t += 1
            nxt[prv[e]] = e  # re-link e into C
            prv[nxt[e]] = e
            if not full:
                size += 1
                continue
            d = p_del  # remove the oldest from P
            p_del += 1
            nxt[prv[d]] = nxt[d]
            prv[nxt[d]] = prv[d]
            for k in range(3):
                ai = a[k]
                bi = b[k]
                na = ca[k]
                nb = cb[k]
                if _less(val, n, e, bi):
                    nb += 1
                if d == ai:
                    ai = nxt[d]
                elif _less(val, n, d, ai):
                    na -= 1
                kk = ks[k]
                while na + nb > kk:
                    if _less(val, n, prv[bi], prv[ai]):
                        ai = prv[ai]
                        na -= 1
                    else:
                        bi = prv[bi]
                        nb -= 1
                while na + nb < kk:
                    if _less(val, n, ai, bi):
                        ai = nxt[ai]
                        na += 1
                    else:
                        bi = nxt[bi]
                        nb += 1
                while True:
                    if _less(val, n, ai, prv[bi]):
                        bi = prv[bi]
                        nb -= 1
                        ai = nxt[ai]
                        na += 1
                    elif _less(val, n, bi, prv[ai]):
                        ai = prv[ai]
                        na -= 1
                        bi = nxt[bi]
                        nb += 1
                    else:
                        break
                a[k] = ai
                b[k] = bi
                ca[k] = na
                cb[k] = nb
        c0 = c1
    # Write back: the last `size` samples into the ring, and their sorted order (P and C merged) as slots.
    for i in range(n - size, n):
        row[2 + (start + i) % w] = val[i]
    row[0] = size
    row[1] = (start + n) % w
    ai = nxt[p_head]
    bi = nxt[c_head]
    for r in range(size):
        if _less(val, n, ai, bi):
            i = ai
            ai = nxt[ai]
        else:
            i = bi
            bi = nxt[bi]
        row[2 + w + r] = (start + i) % w


TAG_BLOCK = 16  # tags per parallel task: their batch is gathered into contiguous rows first


@njit(cache=True, parallel=True, error_model="numpy")
def robust_kernel(
    st: np.ndarray, x: np.ndarray, w: int, ks: np.ndarray, fs: np.ndarray, rel: float, min_scale: float,
    on: float, off: float, min_on: int, min_off: int, scores: np.ndarray, alarms: np.ndarray,
) -> None:
    """Per tag: the window's ring buffer and its sorted order in the state row; quartiles as described above."""
    n_t, n_tags = x.shape
    a0 = 2 + 2 * w
    n_blocks = (n_tags + TAG_BLOCK - 1) // TAG_BLOCK
    n_nodes = w + n_t + 2 * (n_t // w + 3)
    for blk in prange(n_blocks):
        lo = blk * TAG_BLOCK
        hi = min(n_tags, lo + TAG_BLOCK)
        xb = np.empty((hi - lo, n_t))
        sb = np.empty((hi - lo, n_t))
        ab = np.empty((hi - lo, n_t), np.bool_)
        for t in range(n_t):
            for j in range(lo, hi):
                xb[j - lo, t] = x[t, j]
        val = np.empty(w + n_t)
        nxt = np.empty(n_nodes, np.int64)
        prv = np.empty(n_nodes, np.int64)
        for j in range(lo, hi):
            row = st[j]
            _robust_tag(row, xb[j - lo], w, ks, fs, rel, min_scale, val, nxt, prv, sb[j - lo])
            act = row[a0]
            con = row[a0 + 1]
            coff = row[a0 + 2]
            srow = sb[j - lo]
            for t in range(n_t):
                act, con, coff = alarm_step(srow[t], on, off, min_on, min_off, act, con, coff)
                ab[j - lo, t] = act > 0.5
            row[a0] = act
            row[a0 + 1] = con
            row[a0 + 2] = coff
        for t in range(n_t):
            for j in range(lo, hi):
                scores[t, j] = sb[j - lo, t]
                alarms[t, j] = ab[j - lo, t]


@dataclass(frozen=True)
class RobustZ(Detector):
    """Median and interquartile range of the previous `window` valid samples; no score until the window is full.

    score = abs(x - median) / scale, scale = max(IQR / 1.349, floor), and the floor is relative to the data:
    `rel_floor` x max(abs(median), abs(x)) always (so no score exceeds about 2 / rel_floor, even on a flat
    window), and where the IQR is 0 (half the window or more on one value: flat or coarsely quantised data)
    also the rounding noise of the window's step, step / sqrt(12), the step being the distance from the
    median to the nearest other value in the window. `min_scale` is an absolute last resort (0 / 0).
    """

    window: int = 64
    rel_floor: float = 1e-5
    min_scale: float = 1e-300
    alarm: Alarm = field(default_factory=lambda: Alarm(on=5.0, off=2.0, min_on=1, min_off=5))
    name: str = "robust_z"

    def __post_init__(self) -> None:
        if self.window < 4:
            raise ValueError(f"window: must be >= 4, got {self.window}")
        if not 0.0 <= self.rel_floor < 1.0:
            raise ValueError(f"rel_floor: must be in [0, 1), got {self.rel_floor}")
        if not self.min_scale > 0.0:
            raise ValueError(f"min_scale: must be > 0, got {self.min_scale}")

    def state_shape(self, n_tags: int) -> tuple[int, int]:
        """Per tag: count, ring position, ring buffer (w), the window's ring slots in sorted order (w), alarm x3."""
        return (n_tags, 2 * self.window + 5)

    def _ranks(self) -> tuple[NDArray[np.int64], F64]:
        # For each quantile p: k = floor((w - 1) p) + 1 values lie below the pair it interpolates between.
        h = [(self.window - 1) * p for p in QUANTILES]
        return np.array([int(x) + 1 for x in h], np.int64), np.array([x - int(x) for x in h])

    def _kernel(self, state: F64, x: F64, scores: F64, alarms: NDArray[np.bool_]) -> None:
        al = self.alarm
        ks, fs = self._ranks()
        robust_kernel(state, x, self.window, ks, fs, self.rel_floor, self.min_scale, al.on, al.off, al.min_on,
                      al.min_off, scores, alarms)

    def reference_scale(self, window: F64, med: float, iqr: float, v: float) -> float:
        """The scale of the score (twin of the kernel's, in NumPy): see the class docstring."""
        floor = self.rel_floor * max(abs(med), abs(v))
        if iqr == 0.0:
            d = np.abs(window - med)
            d = d[d > 0.0]
            if d.size:
                floor = max(floor, float(d.min()) * STEP_TO_STD)
        return max(iqr / IQR_TO_STD, floor, self.min_scale)

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
                    win = np.array(hist)
                    q25, med, q75 = np.quantile(win, QUANTILES)
                    scores[t, j] = abs(v - med) / self.reference_scale(win, med, q75 - q25, v)
                    hist.pop(0)
                hist.append(v)
                ring[pos] = v
                pos = (pos + 1) % w
            cnt = len(hist)
            state[j, 0], state[j, 1] = cnt, pos
            # Sorted by value, ties in arrival order, as ring slots.
            state[j, 2 + w:2 + w + cnt] = (pos - cnt + np.argsort(np.array(hist), kind="stable")) % w
        alarms = reference_alarm(scores, self.alarm, state[:, 2 + 2 * w], state[:, 3 + 2 * w],
                                 state[:, 4 + 2 * w])
        return Scored(scores, alarms)
