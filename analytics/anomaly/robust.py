"""Robust z-score over a sliding window: |x - median| / (IQR / 1.349); outliers barely move either.

Two kernels give the same results and keep the same state (ring buffer and the window's values sorted):

- "sorted" (windows below `RANKS_FROM_WINDOW`): each sample replaces the oldest value in the sorted copy by
  a binary search and a slide, O(w) per sample but few instructions; it is the faster one at small windows.
- "ranks" (O(log w) per sample, amortised over a batch): a tag's valid samples are cut into chunks of `w`
  in arrival order; each chunk is sorted once (O(w log w) per w samples) and merged with the previous chunk
  (or the carried window) into ranks 0..2w-1, so the window is always a set of those ranks: a bit mask,
  with a Fenwick tree over the mask words' counts. A sample coming in or going out is one bit and one
  Fenwick update (O(log w)); a quantile is a Fenwick descent and a select within a word. The chunk idea
  is from J. Suomela, "Median filtering is equivalent to sorting" (arXiv:1406.1717, 2014). A call also pays
  O(w log w) per tag to sort the carried window and O(w) to write it back, so calls with only a few samples
  per tag cost that per call.

Ties are ordered by arrival (the older of two equal values first), so state and scores are functions of the
window's contents alone and any split into batches gives the same bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit, prange, types
from numba.core.cgutils import false_bit
from numba.extending import intrinsic
from numpy.typing import NDArray

from zhizao.analytics.anomaly.base import F64, Alarm, Detector, Scored, alarm_step, reference_alarm

IQR_TO_STD = 1.3489795003921634  # IQR of a standard normal distribution
STEP_TO_STD = 1.0 / math.sqrt(12.0)  # standard deviation of rounding to a grid of step 1
QUANTILES = (0.25, 0.5, 0.75)


@njit(cache=True)
def _sort_chunk(val: np.ndarray, c0: int, c1: int, out: np.ndarray, tmp: np.ndarray) -> None:
    """out[:c1 - c0] = the indices c0..c1-1 sorted by value, ties in index order (a stable merge sort).

    Insertion sort on runs of 8, then bottom-up merges: O(m log m); numba's own argsort is slower here.
    """
    m = c1 - c0
    for r0 in range(0, m, 8):
        r1 = min(r0 + 8, m)
        for r in range(r0, r1):
            i = c0 + r
            v = val[i]
            q = r
            while q > r0 and val[out[q - 1]] > v:
                out[q] = out[q - 1]
                q -= 1
            out[q] = i
    width = 8
    src = out
    dst = tmp
    swapped = False
    while width < m:
        for l0 in range(0, m, 2 * width):
            l1 = min(l0 + width, m)
            r1 = min(l0 + 2 * width, m)
            i = l0
            j = l1
            for o in range(l0, r1):
                if j >= r1 or (i < l1 and val[src[i]] <= val[src[j]]):
                    dst[o] = src[i]
                    i += 1
                else:
                    dst[o] = src[j]
                    j += 1
        src, dst = dst, src
        swapped = not swapped
        width *= 2
    if swapped:
        out[:m] = tmp[:m]


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


def _popcount_typing(typingctx: Any, x: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.ctpop(args[0])

    return types.int64(types.int64), codegen


def _trailing_zeros_typing(typingctx: Any, x: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.cttz(args[0], false_bit)

    return types.int64(types.int64), codegen


_popcount: Any = intrinsic(_popcount_typing)  # LLVM ctpop: set bits of an int64
_trailing_zeros: Any = intrinsic(_trailing_zeros_typing)  # LLVM cttz: index of the lowest set bit


BITS = 32  # window ranks per mask word (kept in int64, so shifts never touch the sign bit)
SHIFT = 5


@njit(cache=True, inline="always")
def _fenwick_add(tree: np.ndarray, nw: int, word: int, d: int) -> None:
    i = word + 1
    while i <= nw:
        tree[i] += d
        i += i & -i


@njit(cache=True, inline="always")
def _select(mask: np.ndarray, tree: np.ndarray, nw: int, top: int, k: int) -> int:
    """The rank of the k-th (0-based) set bit: a Fenwick descent over the words' counts, then within the word.

    Written without data-dependent branches (selects instead): the window's ranks are random.
    """
    pos = 0
    step = top
    while step > 0:
        nx = pos + step
        c = tree[min(nx, nw)]
        take = (nx <= nw) & (c <= k)
        pos = nx if take else pos
        k -= c if take else 0
        step >>= 1
    word = mask[pos]
    bit = 0
    width = BITS // 2
    while width > 0:
        c = _popcount((word >> bit) & ((1 << width) - 1))
        take = k >= c
        bit += width if take else 0
        k -= c if take else 0
        width >>= 1
    return pos * BITS + bit


@njit(cache=True, inline="always")
def _next_set(mask: np.ndarray, tree: np.ndarray, nw: int, top: int, r: int, k: int) -> int:
    """The rank of the set bit after rank r (the k-th set bit): usually in r's own word."""
    rest = mask[r >> SHIFT] >> ((r & (BITS - 1)) + 1)
    if rest != 0:
        return r + 1 + int(_trailing_zeros(rest))
    return _select(mask, tree, nw, top, k + 1)


@njit(cache=True, error_model="numpy")
def _robust_tag(
    row: np.ndarray, xs: np.ndarray, w: int, los: np.ndarray, fs: np.ndarray, rel: float, min_scale: float,
    val: np.ndarray, rank_of: np.ndarray, pord: np.ndarray, cord: np.ndarray, tmp: np.ndarray,
    vr: np.ndarray, rid: np.ndarray, mask: np.ndarray, tree: np.ndarray, sc: np.ndarray,
) -> None:
    """Score one tag's batch `xs` into `sc` (NaN = no score) and advance its state row (without the alarm).

    Per chunk of `w` samples: sort it, merge it with the previous chunk (or the carried window) into ranks
    0..2w-1, and keep the window as a bit mask over those ranks with a Fenwick tree over the words' counts;
    a sample in or out is one bit, a quantile one select.
    """
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
        if np.isfinite(v):
            val[n] = v
            n += 1
    if n == n0:
        return
    nw = (2 * w + BITS - 1) // BITS
    top = 1
    while top * 2 <= nw:
        top *= 2
    pn = n0
    _sort_chunk(val, 0, n0, pord, tmp)  # the carried window, oldest first in val[:n0]
    p_del = 0  # the oldest sample still in the window
    size = n0
    t = 0
    c0 = n0
    first = True
    while c0 < n:
        c1 = min(c0 + w, n)
        cn = c1 - c0
        if not first:  # the previous chunk, complete, is now the older part of the window
            for r in range(w):
                pord[r] = cord[r]
            pn = w
        first = False
        _sort_chunk(val, c0, c1, cord, tmp)
        # Ranks over both chunks (ties: the older first), and the mask of those in the window.
        for i in range(nw):
            mask[i] = 0
        i = 0
        j = 0
        for r in range(pn + cn):
            take_p = j >= cn or (i < pn and val[pord[i]] <= val[cord[j]])
            if take_p:
                node = pord[i]
                i += 1
                mask[r // BITS] |= 1 << (r % BITS)
            else:
                node = cord[j]
                j += 1
            rank_of[node] = r
            vr[r] = val[node]
            rid[r] = node
        tree[0] = 0
        for i in range(nw):
            tree[i + 1] = _popcount(mask[i])
        for i in range(1, nw + 1):  # Fenwick from counts, O(nw)
            up = i + (i & -i)
            if up <= nw:
                tree[up] += tree[i]
        for e in range(c0, c1):
            while not np.isfinite(xs[t]):
                t += 1
            full = size == w
            if full:
                r0 = _select(mask, tree, nw, top, los[0])
                r1 = _select(mask, tree, nw, top, los[1])
                r2 = _select(mask, tree, nw, top, los[2])
                q25 = vr[r0] + fs[0] * (vr[_next_set(mask, tree, nw, top, r0, los[0])] - vr[r0])
                med = vr[r1] + fs[1] * (vr[_next_set(mask, tree, nw, top, r1, los[1])] - vr[r1])
                q75 = vr[r2] + fs[2] * (vr[_next_set(mask, tree, nw, top, r2, los[2])] - vr[r2])
                v = val[e]
                sc[t] = abs(v - med) / _scale(val, e - w, e, med, q75 - q25, v, rel, min_scale)
            t += 1
            r = rank_of[e]
            mask[r >> SHIFT] |= 1 << (r & (BITS - 1))
            _fenwick_add(tree, nw, r >> SHIFT, 1)
            if full:
                r = rank_of[p_del]
                mask[r >> SHIFT] &= ~(1 << (r & (BITS - 1)))
                _fenwick_add(tree, nw, r >> SHIFT, -1)
                p_del += 1
            else:
                size += 1
        c0 = c1
    # Write back: the last `size` samples into the ring, and their values in sorted order.
    for i in range(n - size, n):
        row[2 + (start + i) % w] = val[i]
    row[0] = size
    row[1] = (start + n) % w
    k = 0
    for wi in range(nw):
        word = mask[wi]
        while word != 0:
            r = wi * BITS + _trailing_zeros(word)
            word &= word - 1
            row[2 + w + k] = vr[r]
            k += 1


@njit(cache=True, error_model="numpy")
def _sorted_tag(
    row: np.ndarray, xs: np.ndarray, w: int, los: np.ndarray, fs: np.ndarray, rel: float, min_scale: float,
    sc: np.ndarray,
) -> None:
    """Score one tag's batch `xs` into `sc` against a sorted copy of the window (O(w) per sample, few steps).

    Each sample replaces the oldest value in the sorted copy: found by a binary search, then v slides from
    there to its place (fewer moves than a delete plus an insert). Count and position stay in locals.
    """
    cnt = int(row[0])
    pos = int(row[1])
    ring = row[2:2 + w]
    srt = row[2 + w:2 + 2 * w]
    l0, l1, l2 = los[0], los[1], los[2]
    f0, f1, f2 = fs[0], fs[1], fs[2]
    for t in range(xs.shape[0]):
        v = xs[t]
        sc[t] = np.nan
        if not np.isfinite(v):
            continue
        if cnt == w:
            q25 = srt[l0] + f0 * (srt[l0 + 1] - srt[l0])
            med = srt[l1] + f1 * (srt[l1 + 1] - srt[l1])
            q75 = srt[l2] + f2 * (srt[l2 + 1] - srt[l2])
            sc[t] = abs(v - med) / _scale(ring, 0, w, med, q75 - q25, v, rel, min_scale)
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
            cnt += 1
        ring[pos] = v
        pos += 1
        if pos == w:
            pos = 0
    row[0] = cnt
    row[1] = pos


RANKS_FROM_WINDOW = 1024
"""Windows from this size use the chunk-rank kernel (O(log w)); smaller ones the sorted copy (O(w), faster
there). Measured on 8000 samples x 64 tags, 2 busy cores: sorted / ranks 26 / 14 M samples/s at window 64,
13 / 6 at 512, 4.5 / 5.1 at 1024, 3.5 / 11.6 at 4096."""

TAG_BLOCK = 16  # tags per parallel task: their batch is gathered into contiguous rows first


@njit(cache=True, parallel=True, error_model="numpy")
def robust_kernel(
    st: np.ndarray, x: np.ndarray, w: int, los: np.ndarray, fs: np.ndarray, rel: float, min_scale: float,
    on: float, off: float, min_on: int, min_off: int, ranks: bool, scores: np.ndarray, alarms: np.ndarray,
) -> None:
    """Per tag: the window's ring buffer and its values sorted in the state row; quartiles as described above."""
    n_t, n_tags = x.shape
    a0 = 2 + 2 * w
    n_blocks = (n_tags + TAG_BLOCK - 1) // TAG_BLOCK
    for blk in prange(n_blocks):
        lo = blk * TAG_BLOCK
        hi = min(n_tags, lo + TAG_BLOCK)
        xb = np.empty((hi - lo, n_t))
        sb = np.empty((hi - lo, n_t))
        ab = np.empty((hi - lo, n_t), np.bool_)
        for t in range(n_t):
            for j in range(lo, hi):
                xb[j - lo, t] = x[t, j]
        m = w if ranks else 1  # the rank kernel's work arrays, per block
        val = np.empty(m + n_t)
        rank_of = np.empty(m + n_t, np.int64)
        pord = np.empty(m, np.int64)
        cord = np.empty(m, np.int64)
        tmp = np.empty(m, np.int64)
        vr = np.empty(2 * m)
        rid = np.empty(2 * m, np.int64)
        nw = (2 * m + BITS - 1) // BITS
        mask = np.zeros(nw, np.int64)
        tree = np.zeros(nw + 1, np.int64)
        for j in range(lo, hi):
            row = st[j]
            if not ranks:
                _sorted_tag(row, xb[j - lo], w, los, fs, rel, min_scale, sb[j - lo])
            else:
                _robust_tag(row, xb[j - lo], w, los, fs, rel, min_scale, val, rank_of, pord, cord, tmp, vr, rid,
                            mask, tree, sb[j - lo])
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
    median to the nearest other value in the window (a scan of the window, only where the IQR is 0).
    `min_scale` is an absolute last resort (0 / 0).
    Non-finite samples (NaN, inf) are skipped. `method` picks the kernel: "sorted" (a sorted copy of the
    window, O(w) per sample), "ranks" (chunk ranks, O(log w) amortised, see the module docstring) or "auto"
    (ranks from `RANKS_FROM_WINDOW`); the state layout and the results are the same.
    """

    window: int = 64
    rel_floor: float = 1e-5
    min_scale: float = 1e-300
    method: str = "auto"
    alarm: Alarm = field(default_factory=lambda: Alarm(on=5.0, off=2.0, min_on=1, min_off=5))
    name: str = "robust_z"

    def __post_init__(self) -> None:
        if self.window < 4:
            raise ValueError(f"window: must be >= 4, got {self.window}")
        if not 0.0 <= self.rel_floor < 1.0:
            raise ValueError(f"rel_floor: must be in [0, 1), got {self.rel_floor}")
        if not self.min_scale > 0.0:
            raise ValueError(f"min_scale: must be > 0, got {self.min_scale}")
        if self.method not in ("auto", "sorted", "ranks"):
            raise ValueError(f"method: must be 'auto', 'sorted' or 'ranks', got {self.method!r}")

    @property
    def uses_ranks(self) -> bool:
        """Whether the chunk-rank kernel runs (`method`; "auto": from RANKS_FROM_WINDOW); same results either way."""
        return self.method == "ranks" or (self.method == "auto" and self.window >= RANKS_FROM_WINDOW)

    def state_shape(self, n_tags: int) -> tuple[int, int]:
        """Per tag: count, ring position, ring buffer (w), the window's values sorted (w), alarm x3."""
        return (n_tags, 2 * self.window + 5)

    def _ranks(self) -> tuple[NDArray[np.int64], F64]:
        # For each quantile p: the 0-based rank floor((w - 1) p) of the lower value it interpolates from.
        h = [(self.window - 1) * p for p in QUANTILES]
        return np.array([int(x) for x in h], np.int64), np.array([x - int(x) for x in h])

    def _kernel(self, state: F64, x: F64, scores: F64, alarms: NDArray[np.bool_]) -> None:
        al = self.alarm
        los, fs = self._ranks()
        robust_kernel(state, x, self.window, los, fs, self.rel_floor, self.min_scale, al.on, al.off, al.min_on,
                      al.min_off, self.uses_ranks, scores, alarms)

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
                if not math.isfinite(v):
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
            state[j, 2 + w:2 + w + cnt] = np.sort(np.array(hist))
        alarms = reference_alarm(scores, self.alarm, state[:, 2 + 2 * w], state[:, 3 + 2 * w],
                                 state[:, 4 + 2 * w])
        return Scored(scores, alarms)
