"""Robust z-score over a sliding window: |x - median| / (IQR / 1.349); outliers barely move either.

Two kernels give the same results and keep the same state (ring buffer and the window's values sorted):

- "sorted" (windows below `RANKS_FROM_WINDOW`): each sample replaces the oldest value in the sorted copy:
  both ranks counted in one vectorised pass, then one memmove of the stretch between them, O(w) per sample
  but few instructions and no data-dependent jumps; it is the faster one at small windows.
- "ranks" (O(log w) per sample, amortised over a batch): a tag's valid samples are cut into chunks of `w`
  in arrival order; each chunk is sorted once (O(w log w) per w samples) and merged with the previous chunk
  (or the carried window) into ranks 0..2w-1, so the window is always a set of those ranks: a bit mask,
  with a Fenwick tree over the mask words' counts. A sample coming in or going out is one bit and one
  Fenwick update (O(log w)); each quartile's rank follows from the last one (the same bit or its neighbour,
  mostly in the same word), a Fenwick descent (O(log w)) only where it is not. Chunks are sorted by a
  sorting network into runs of 4, then branch-free merges. The chunk idea
  is from J. Suomela, "Median filtering is equivalent to sorting" (arXiv:1406.1717, 2014). A call also pays
  O(w log w) per tag to sort the carried window and O(w) to write it back, so calls with only a few samples
  per tag cost that per call.

Ties are ordered by arrival (the older of two equal values first), so state and scores are functions of the
window's contents alone and any split into batches gives the same bits.

Numba note: a helper inlined with `inline="always"` that takes an array adds atomic reference counting at
each call, so the per-sample helpers take scalars only and the array work is written out in the loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.cgutils import false_bit
from numba.extending import intrinsic
from numpy.typing import NDArray

from zhizao.analytics.anomaly.base import F64, Alarm, Detector, Scored, alarm_step, reference_alarm

IQR_TO_STD = 1.3489795003921634  # IQR of a standard normal distribution
STEP_TO_STD = 1.0 / math.sqrt(12.0)  # standard deviation of rounding to a grid of step 1
QUANTILES = (0.25, 0.5, 0.75)


@njit(cache=True, inline="always")
def _exchange(va: float, ia: int, vb: float, ib: int) -> tuple[float, int, float, int]:
    """The two (value, index) pairs in order (by value, then index): a comparator of a sorting network."""
    swap = (va > vb) | ((va == vb) & (ia > ib))
    return _pickf(swap, vb, va), _pick(swap, ib, ia), _pickf(swap, va, vb), _pick(swap, ia, ib)


@njit(cache=True, boundscheck=False)
def _sort_chunk(val: np.ndarray, c0: int, c1: int, ov: np.ndarray, oi: np.ndarray, tv: np.ndarray,
                ti: np.ndarray) -> None:
    """ov/oi[:c1 - c0] = the values val[c0:c1] sorted and their indices, ties in index order.

    Runs of 4 by a sorting network on (value, index) pairs, then bottom-up merges (tv/ti are the other
    buffer): O(m log m), no data-dependent jumps but the merges' ends. The runs go to whichever buffer makes
    the last merge land in ov/oi.
    """
    m = c1 - c0
    passes = 0
    width = 4
    while width < m:
        passes += 1
        width *= 2
    if passes % 2 == 0:
        sv, si, dv, di = ov, oi, tv, ti
    else:
        sv, si, dv, di = tv, ti, ov, oi
    full = m - m % 4
    for r in range(0, full, 4):
        i0 = c0 + r
        v0, n0 = val[i0], i0
        v1, n1 = val[i0 + 1], i0 + 1
        v2, n2 = val[i0 + 2], i0 + 2
        v3, n3 = val[i0 + 3], i0 + 3
        v0, n0, v1, n1 = _exchange(v0, n0, v1, n1)
        v2, n2, v3, n3 = _exchange(v2, n2, v3, n3)
        v0, n0, v2, n2 = _exchange(v0, n0, v2, n2)
        v1, n1, v3, n3 = _exchange(v1, n1, v3, n3)
        v1, n1, v2, n2 = _exchange(v1, n1, v2, n2)
        sv[r], sv[r + 1], sv[r + 2], sv[r + 3] = v0, v1, v2, v3
        si[r], si[r + 1], si[r + 2], si[r + 3] = n0, n1, n2, n3
    for r in range(full, m):  # the last run, below 4: insertion (stable)
        v = val[c0 + r]
        q = r
        while q > full and sv[q - 1] > v:
            sv[q] = sv[q - 1]
            si[q] = si[q - 1]
            q -= 1
        sv[q] = v
        si[q] = c0 + r
    width = 4
    while width < m:
        for l0 in range(0, m, 2 * width):
            # Merge sv[l0:l1] and sv[l1:r1] (with their indices) into dv/di, the left first on ties: written
            # out here, as numba's inlining of a function with array arguments adds reference counting.
            l1 = min(l0 + width, m)
            r1 = min(l0 + 2 * width, m)
            if r1 - l1 == width:
                # Two runs of one length n: n steps from the front (the smaller first, the left on ties) and n
                # from the back (the larger first, the right on ties) fill the output exactly, with no bounds
                # to check and two independent chains of loads (a "parity merge", as in quadsort).
                i = l0
                j = l1
                ib = l1 - 1
                jb = r1 - 1
                ob = r1 - 1
                for o in range(l0, l0 + width):
                    a = sv[i]
                    b = sv[j]
                    t = a <= b
                    k = _pick(t, i, j)
                    dv[o] = sv[k]
                    di[o] = si[k]
                    i += t
                    j += 1 - t
                    a = sv[ib]
                    b = sv[jb]
                    t = a > b
                    k = _pick(t, ib, jb)
                    dv[ob] = sv[k]
                    di[ob] = si[k]
                    ib -= t
                    jb -= 1 - t
                    ob -= 1
                continue
            i = l0
            j = l1
            o = l0
            if i < l1 and j < r1:
                a = sv[i]
                b = sv[j]
                while True:
                    # An unpredictable select: LLVM would turn a plain one into a jump (the comparisons are
                    # random), so the merge has no data-dependent jumps while both runs last.
                    t = a <= b
                    k = _pick(t, i, j)
                    dv[o] = sv[k]
                    di[o] = si[k]
                    i += t
                    j += 1 - t
                    o += 1
                    if i >= l1 or j >= r1:
                        break
                    a = sv[i]
                    b = sv[j]
            while i < l1:
                dv[o] = sv[i]
                di[o] = si[i]
                i += 1
                o += 1
            while j < r1:
                dv[o] = sv[j]
                di[o] = si[j]
                j += 1
                o += 1
        sv, si, dv, di = dv, di, sv, si
        width *= 2


@njit(cache=True, error_model="numpy", boundscheck=False)
def _step_floor(val: np.ndarray, lo: int, hi: int, med: float, floor: float) -> float:
    """The floor raised to the rounding noise of the window's step (the nearest other value to the median)."""
    step = np.inf
    for i in range(lo, hi):
        d = abs(val[i] - med)
        if 0.0 < d < step:
            step = d
    if step < np.inf:
        floor = max(floor, step * STEP_TO_STD)
    return floor


@njit(cache=True, error_model="numpy", inline="always")
def _scale(iqr: float, floor: float, min_scale: float) -> float:
    # IQR / 1.349, floored by a fraction of the data's level and, where half the window sits on one value,
    # by the rounding noise of the window's step (`_step_floor`, only then); see RobustZ. Scalars only: numba
    # adds reference counting (atomic) to every inlined call with an array argument.
    return max(iqr / IQR_TO_STD, floor, min_scale)


def _popcount_typing(typingctx: Any, x: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.ctpop(args[0])

    return types.int64(types.int64), codegen


def _trailing_zeros_typing(typingctx: Any, x: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.cttz(args[0], false_bit)

    return types.int64(types.int64), codegen


def _leading_zeros_typing(typingctx: Any, x: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.ctlz(args[0], false_bit)

    return types.int64(types.int64), codegen


def _shift_typing(typingctx: Any, arr: Any, dst: Any, src: Any, count: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        cgutils.raw_memmove(builder, builder.gep(data, [args[1]]), builder.gep(data, [args[2]]), args[3],  # type: ignore[no-untyped-call]
                            context.get_constant(types.intp, 8), align=8)
        return context.get_dummy_value()

    return types.void(arr, types.intp, types.intp, types.intp), codegen


def _select_typing(value_type: Any) -> Any:
    """The typing of `cond ? a : b` on `value_type`, marked unpredictable: a cmov, never a jump."""

    def typing(typingctx: Any, cond: Any, a: Any, b: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            sel = builder.select(args[0], args[1], args[2])
            sel.set_metadata("unpredictable", builder.module.add_metadata([]))
            return sel

        return value_type(types.boolean, value_type, value_type), codegen

    return typing


_pick: Any = intrinsic(_select_typing(types.int64))  # a if cond else b, marked unpredictable: a cmov, never a jump
_pickf: Any = intrinsic(_select_typing(types.float64))  # the same for float64
_shift: Any = intrinsic(_shift_typing)  # arr[dst:dst + count] = arr[src:src + count] (memmove, float64 arrays)
_popcount: Any = intrinsic(_popcount_typing)  # LLVM ctpop: set bits of an int64
_trailing_zeros: Any = intrinsic(_trailing_zeros_typing)  # LLVM cttz: index of the lowest set bit (64 for 0)
_leading_zeros: Any = intrinsic(_leading_zeros_typing)  # LLVM ctlz: 63 - index of the highest set bit (64 for 0)


BITS = 32  # window ranks per mask word (kept in int64, so shifts never touch the sign bit)
SHIFT = 5


@njit(cache=True, boundscheck=False)
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
def _after(word: int, c: int) -> int:
    """The rank of the set bit after rank c in c's word `word`, or -1 (scalars: see `_scale`)."""
    above = word >> ((c & (BITS - 1)) + 1)
    return c + 1 + _trailing_zeros(above) if above != 0 else -1


@njit(cache=True, inline="always")
def _follow(word: int, c: int, a: int, d: int) -> int:
    """The rank of the k-th set bit after rank `a` came in and rank `d` went out, c having been the k-th and
    `word` being c's word now: c, or the set bit before or after c in that word; -1 if it is in another word
    (then a select finds it, O(log w)). No data-dependent jumps."""
    b = c & (BITS - 1)
    below = word & ((1 << b) - 1)
    above = word >> (b + 1)
    pred = c - b + 63 - _leading_zeros(below)
    succ = c + 1 + _trailing_zeros(above)
    # Set bits below c: +1 if a is below, -1 if d was (c itself gone: as if it had moved up with a below).
    a_lo = a < c
    d_lo = (d < c) | ((d == c) & (not a_lo))
    up = a_lo > d_lo  # the k-th is now the set bit before c
    down = d_lo > a_lo  # ... after c
    lost = (up & (below == 0)) | (down & (above == 0))
    c = pred if up else (succ if down else c)
    return -1 if lost else c


@njit(cache=True, error_model="numpy", boundscheck=False)
def _robust_tag(
    row: np.ndarray, xs: np.ndarray, w: int, los: np.ndarray, fs: np.ndarray, rel: float, min_scale: float,
    val: np.ndarray, rank_of: np.ndarray, pv: np.ndarray, pi: np.ndarray, cv: np.ndarray, ci: np.ndarray,
    tv: np.ndarray, ti: np.ndarray, vr: np.ndarray, mask: np.ndarray, tree: np.ndarray, sc: np.ndarray,
) -> None:
    """Score one tag's batch `xs` into `sc` (NaN = no score) and advance its state row (without the alarm).

    Per chunk of `w` samples: sort it, merge it with the previous chunk (or the carried window) into ranks
    0..2w-1, and keep the window as a bit mask over those ranks with a Fenwick tree over the words' counts;
    a sample in or out is one bit and one Fenwick update; each quartile's rank follows from the last one
    (`_follow`), selected afresh once per chunk.
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
    k0, k1, k2 = los[0], los[1], los[2]
    f0, f1, f2 = fs[0], fs[1], fs[2]
    pn = n0
    _sort_chunk(val, 0, n0, pv, pi, tv, ti)  # the carried window, oldest first in val[:n0]
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
                pv[r] = cv[r]
                pi[r] = ci[r]
            pn = w
        first = False
        _sort_chunk(val, c0, c1, cv, ci, tv, ti)
        # Ranks over both chunks (ties: the older first), and the mask of those in the window (the older ones).
        for i in range(nw):
            mask[i] = 0
        i = 0
        j = 0
        r = 0
        while i < pn and j < cn:
            a = pv[i]
            b = cv[j]
            ia = pi[i]
            ib = ci[j]
            take = a <= b
            vr[r] = a if take else b
            rank_of[ia if take else ib] = r
            mask[r >> SHIFT] |= (1 if take else 0) << (r & (BITS - 1))
            i += 1 if take else 0
            j += 0 if take else 1
            r += 1
        while i < pn:
            vr[r] = pv[i]
            rank_of[pi[i]] = r
            mask[r >> SHIFT] |= 1 << (r & (BITS - 1))
            i += 1
            r += 1
        while j < cn:
            vr[r] = cv[j]
            rank_of[ci[j]] = r
            j += 1
            r += 1
        tree[0] = 0
        for i in range(nw):
            tree[i + 1] = _popcount(mask[i])
        for i in range(1, nw + 1):  # Fenwick from counts, O(nw)
            up = i + (i & -i)
            if up <= nw:
                tree[up] += tree[i]
        fresh = True  # the quartiles' ranks are selected at the chunk's first full window
        r0 = r1 = r2 = 0
        for e in range(c0, c1):
            while not np.isfinite(xs[t]):
                t += 1
            full = size == w
            if full:
                if fresh:
                    r0 = _select(mask, tree, nw, top, k0)
                    r1 = _select(mask, tree, nw, top, k1)
                    r2 = _select(mask, tree, nw, top, k2)
                    fresh = False
                s0 = _after(mask[r0 >> SHIFT], r0)
                s1 = _after(mask[r1 >> SHIFT], r1)
                s2 = _after(mask[r2 >> SHIFT], r2)
                if s0 < 0:
                    s0 = _select(mask, tree, nw, top, k0 + 1)
                if s1 < 0:
                    s1 = _select(mask, tree, nw, top, k1 + 1)
                if s2 < 0:
                    s2 = _select(mask, tree, nw, top, k2 + 1)
                q25 = vr[r0] + f0 * (vr[s0] - vr[r0])
                med = vr[r1] + f1 * (vr[s1] - vr[r1])
                q75 = vr[r2] + f2 * (vr[s2] - vr[r2])
                v = val[e]
                iqr = q75 - q25
                floor = rel * max(abs(med), abs(v))
                if iqr == 0.0:
                    floor = _step_floor(val, e - w, e, med, floor)
                sc[t] = abs(v - med) / _scale(iqr, floor, min_scale)
            t += 1
            ra = rank_of[e]
            mask[ra >> SHIFT] |= 1 << (ra & (BITS - 1))
            i = (ra >> SHIFT) + 1  # Fenwick update, written out (see `_scale`)
            while i <= nw:
                tree[i] += 1
                i += i & -i
            if full:
                rd = rank_of[p_del]
                mask[rd >> SHIFT] &= ~(1 << (rd & (BITS - 1)))
                i = (rd >> SHIFT) + 1
                while i <= nw:
                    tree[i] -= 1
                    i += i & -i
                p_del += 1
                r0 = _follow(mask[r0 >> SHIFT], r0, ra, rd)
                r1 = _follow(mask[r1 >> SHIFT], r1, ra, rd)
                r2 = _follow(mask[r2 >> SHIFT], r2, ra, rd)
                if r0 < 0:
                    r0 = _select(mask, tree, nw, top, k0)
                if r1 < 0:
                    r1 = _select(mask, tree, nw, top, k1)
                if r2 < 0:
                    r2 = _select(mask, tree, nw, top, k2)
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


COUNT_UP_TO_WINDOW = 320  # the sorted copy finds ranks by counting (vectorised) up to this window, then bisects


@njit(cache=True, error_model="numpy", boundscheck=False)
def _sorted_tag(
    row: np.ndarray, xs: np.ndarray, w: int, los: np.ndarray, fs: np.ndarray, rel: float, min_scale: float,
    sc: np.ndarray,
) -> None:
    """Score one tag's batch `xs` into `sc` against a sorted copy of the window (O(w) per sample, few steps).

    Each sample replaces the oldest value in the sorted copy: the ranks of both (counted in one vectorised
    pass over the copy, or bisected in large windows) give the stretch between them, which moves by one
    slot (a memmove) with no data-dependent jumps. Count and position stay in locals.
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
            iqr = q75 - q25
            floor = rel * max(abs(med), abs(v))
            if iqr == 0.0:
                floor = _step_floor(ring, 0, w, med, floor)
            sc[t] = abs(v - med) / _scale(iqr, floor, min_scale)
            old = ring[pos]
            # ro: the slot of old (the first of its value), below: values < v, upto: values <= v.
            ro = 0
            below = 0
            upto = 0
            if w <= COUNT_UP_TO_WINDOW:
                for k in range(w):
                    s = srt[k]
                    ro += int(s < old)
                    below += int(s < v)
                    upto += int(s <= v)
            else:
                ro = _bisect(srt, w, old, False)
                below = _bisect(srt, w, v, False)
                upto = _bisect(srt, w, v, True)
            up = v > old
            # v goes above old: the values between slide down one slot, v lands after the last below it;
            # else the values from v's place up to old slide up one slot (equal values stay below v; v equal
            # to old takes its slot).
            p = below - 1 if up else min(upto, ro)
            _shift(srt, ro if up else p + 1, ro + 1 if up else p, p - ro if up else ro - p)
            srt[p] = v
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


@njit(cache=True, boundscheck=False)
def _bisect(srt: np.ndarray, n: int, v: float, right: bool) -> int:
    """How many of srt[:n] (sorted) are below v (`right`: at most v)."""
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        s = srt[mid]
        go = (s <= v) if right else (s < v)
        lo = mid + 1 if go else lo
        hi = hi if go else mid
    return lo


RANKS_FROM_WINDOW = 320
"""Windows from this size use the chunk-rank kernel (O(log w)); smaller ones the sorted copy (O(w), faster
there). Measured on 250 tags x max(2000, 4 w) samples, one thread, 2 busy cores: sorted / ranks 11.5 / 9.7 M
samples/s at window 256, 6.6 / 9.4 at 384 (the copy's ranks bisected), 4.6 / 8.6 at 1024."""

TAG_BLOCK = 16  # tags per parallel task: their batch is gathered into contiguous rows first
TIME_BLOCK = 512
"""The sorted-copy kernel takes a block's batch this many samples at a time (gathered, scored, scattered back
while in cache; any split gives the same bits); the rank kernel takes it whole (a call sorts the window)."""


@njit(cache=True, parallel=True, error_model="numpy", boundscheck=False)
def robust_kernel(
    st: np.ndarray, x: np.ndarray, w: int, los: np.ndarray, fs: np.ndarray, rel: float, min_scale: float,
    on: float, off: float, min_on: int, min_off: int, ranks: bool, scores: np.ndarray, alarms: np.ndarray,
) -> None:
    """Per tag: the window's ring buffer and its values sorted in the state row; quartiles as described above."""
    n_t, n_tags = x.shape
    a0 = 2 + 2 * w
    n_blocks = (n_tags + TAG_BLOCK - 1) // TAG_BLOCK
    tb = n_t if ranks else min(n_t, TIME_BLOCK)
    for blk in prange(n_blocks):
        lo = blk * TAG_BLOCK
        hi = min(n_tags, lo + TAG_BLOCK)
        xb = np.empty((hi - lo, tb))
        sb = np.empty((hi - lo, tb))
        ab = np.empty((hi - lo, tb), np.bool_)
        m = w if ranks else 1  # the rank kernel's work arrays, per block
        val = np.empty(m + tb)
        rank_of = np.empty(m + tb, np.int64)
        pv = np.empty(m)
        pi = np.empty(m, np.int64)
        cv = np.empty(m)
        ci = np.empty(m, np.int64)
        tv = np.empty(m)
        ti = np.empty(m, np.int64)
        vr = np.empty(2 * m)
        nw = (2 * m + BITS - 1) // BITS
        mask = np.zeros(nw, np.int64)
        tree = np.zeros(nw + 1, np.int64)
        for t0 in range(0, n_t, tb):
            nt = min(n_t, t0 + tb) - t0
            for t in range(nt):
                for j in range(lo, hi):
                    xb[j - lo, t] = x[t0 + t, j]
            for j in range(lo, hi):
                row = st[j]
                if not ranks:
                    _sorted_tag(row, xb[j - lo, :nt], w, los, fs, rel, min_scale, sb[j - lo, :nt])
                else:
                    _robust_tag(row, xb[j - lo, :nt], w, los, fs, rel, min_scale, val, rank_of, pv, pi, cv, ci,
                                tv, ti, vr, mask, tree, sb[j - lo, :nt])
                act = row[a0]
                con = row[a0 + 1]
                coff = row[a0 + 2]
                for t in range(nt):
                    act, con, coff = alarm_step(sb[j - lo, t], on, off, min_on, min_off, act, con, coff)
                    ab[j - lo, t] = act > 0.5
                row[a0] = act
                row[a0 + 1] = con
                row[a0 + 2] = coff
            for t in range(nt):
                for j in range(lo, hi):
                    scores[t0 + t, j] = sb[j - lo, t]
                    alarms[t0 + t, j] = ab[j - lo, t]


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
