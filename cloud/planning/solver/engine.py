"""The numba kernels of the solver: evaluation of line sequences and the iterated greedy with local search.

A solution is `seq[k, :ln[k]]`, the lot indices on line k in order (the first `fix[k]` are fixed). Each
line's figures are kept in `lc[k] = (f0, f1, f2)`:

- tardiness objective: (weighted tardiness, changeover time, transport cost), all added over the lines and
  compared lexicographically;
- makespan objective: (completion of the line's last lot, changeover time, transport cost); the plan's
  figure is the largest f0, and a move between two lines is taken when it lowers the larger of their two
  completions (or keeps it and lowers their sum), as in Vallada & Ruiz (2011).

Setups are `S[k, i, j]` with an extra row and column `n`: row n is the changeover from the line's current
state (the initial setup), column n the end of the sequence (0). Where the problem has no unavailable
intervals and no release time after a line's available-from time ("simple"), a sequence's figures change
by O(1) under an insertion or removal; otherwise every candidate is evaluated in full (pauses and resumes in
unavailable intervals, processing not before release).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from numba import njit

EPS = 1e-7


class Inst(NamedTuple):
    """The problem as arrays (see `arrays.compile_problem`)."""

    p: Any  # (n, m) float64, inf where the line cannot make the lot
    allowed: Any  # (n, m) bool
    S: Any  # (m, n + 1, n + 1) float64
    rel: Any  # (n,)
    due: Any  # (n,)
    w: Any  # (n,)
    tr: Any  # (n, m) transport time
    tc: Any  # (n, m) transport cost
    avail: Any  # (m,)
    us: Any  # unavailable interval starts, all lines one after another
    ue: Any  # ... and ends
    uoff: Any  # (m + 1,) line k's intervals are us[uoff[k]:uoff[k + 1]]
    fix: Any  # (m,) int64: fixed prefix length per line
    movable: Any  # (n,) bool: not in a fixed prefix
    makespan: bool
    simple: bool


# ---- evaluation ---------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def advance(t: float, work: float, us: Any, ue: Any, hi: int, i: int) -> tuple[float, int]:
    """Finish `work` seconds started at `t`, pausing in the intervals us[i:hi]/ue[i:hi]; (end, next interval)."""
    while i < hi and ue[i] <= t:
        i += 1
    while True:
        if i < hi and us[i] <= t:
            t = ue[i]
            i += 1
            continue
        if i >= hi or t + work <= us[i]:
            return t + work, i
        work -= us[i] - t
        t = ue[i]
        i += 1


@njit(cache=True)
def eval_line(ins: Inst, k: int, buf: Any, L: int) -> tuple[float, float, float]:
    """The figures (f0, f1, f2) of the sequence buf[:L] on line k."""
    n = ins.p.shape[0]
    t = ins.avail[k]
    ptr = ins.uoff[k]
    hi = ins.uoff[k + 1]
    prev = n
    wt = 0.0
    chg = 0.0
    cost = 0.0
    for q in range(L):
        j = buf[q]
        s = ins.S[k, prev, j]
        t, ptr = advance(t, s, ins.us, ins.ue, hi, ptr)
        if ins.rel[j] > t:
            t = ins.rel[j]
        t, ptr = advance(t, ins.p[j, k], ins.us, ins.ue, hi, ptr)
        late = t + ins.tr[j, k] - ins.due[j]
        if late > 0.0:
            wt += ins.w[j] * late
        chg += s
        cost += ins.tc[j, k]
        prev = j
    if ins.makespan:
        return (t if L > 0 else 0.0), chg, cost
    return wt, chg, cost


@njit(cache=True, inline="always")
def _elem(seq: Any, k: int, r: int, q: int) -> Any:
    """Element q of line k's sequence after removing position r (r < 0: nothing removed)."""
    if r >= 0 and q >= r:
        return seq[k, q + 1]
    return seq[k, q]


@njit(cache=True)
def prefix_line(ins: Inst, k: int, seq: Any, ln: Any, P: Any) -> None:
    """P[k, e] = (time, f0, changeover, cost, interval pointer) after the first e lots of line k."""
    n = ins.p.shape[0]
    t = ins.avail[k]
    ptr = ins.uoff[k]
    hi = ins.uoff[k + 1]
    prev = n
    wt = 0.0
    chg = 0.0
    cost = 0.0
    P[k, 0, 0] = t
    P[k, 0, 1] = 0.0
    P[k, 0, 2] = 0.0
    P[k, 0, 3] = 0.0
    P[k, 0, 4] = ptr
    for e in range(ln[k]):
        j = seq[k, e]
        s = ins.S[k, prev, j]
        t, ptr = advance(t, s, ins.us, ins.ue, hi, ptr)
        if ins.rel[j] > t:
            t = ins.rel[j]
        t, ptr = advance(t, ins.p[j, k], ins.us, ins.ue, hi, ptr)
        late = t + ins.tr[j, k] - ins.due[j]
        if late > 0.0:
            wt += ins.w[j] * late
        chg += s
        cost += ins.tc[j, k]
        prev = j
        P[k, e + 1, 0] = t
        P[k, e + 1, 1] = wt
        P[k, e + 1, 2] = chg
        P[k, e + 1, 3] = cost
        P[k, e + 1, 4] = ptr


@njit(cache=True)
def refresh_prefix(ins: Inst, seq: Any, ln: Any, P: Any) -> None:
    if not ins.simple:
        for k in range(seq.shape[0]):
            prefix_line(ins, k, seq, ln, P)


@njit(cache=True)
def eval_edit(ins: Inst, seq: Any, ln: Any, P: Any, k: int, r: int, q: int, x: int,
              limit: float) -> tuple[float, float, float]:
    """Line k's figures after the edit of `edit_cost`, evaluated from the first changed position on (the
    prefix before it is read from P). Tardiness: stops with inf once the weighted tardiness passes `limit`."""
    n = ins.p.shape[0]
    L = ln[k]
    L2 = L - 1 if r >= 0 else L
    Lnew = L2 + 1 if q >= 0 else L2
    start = L
    if r >= 0:
        start = r
    if 0 <= q < start:
        start = q
    if start > Lnew:
        start = Lnew
    t = P[k, start, 0]
    wt = P[k, start, 1]
    chg = P[k, start, 2]
    cost = P[k, start, 3]
    ptr = int(P[k, start, 4])
    prev = seq[k, start - 1] if start > 0 else n
    hi = ins.uoff[k + 1]
    for e in range(start, Lnew):
        o = -1  # the position of this lot in the line's current sequence (-1: the inserted lot)
        if q >= 0 and e == q:
            j = x
        else:
            u = e if (q < 0 or e < q) else e - 1
            o = u + 1 if (r >= 0 and u >= r) else u
            j = seq[k, o]
        s = ins.S[k, prev, j]
        t, ptr = advance(t, s, ins.us, ins.ue, hi, ptr)
        if ins.rel[j] > t:
            t = ins.rel[j]
        t, ptr = advance(t, ins.p[j, k], ins.us, ins.ue, hi, ptr)
        late = t + ins.tr[j, k] - ins.due[j]
        if late > 0.0:
            wt += ins.w[j] * late
            if wt > limit and not ins.makespan:
                return np.inf, np.inf, np.inf
        chg += s
        cost += ins.tc[j, k]
        prev = j
        if o >= 0 and (q < 0 or e > q) and (r < 0 or o > r) and e < Lnew - 1:
            # Past the edit the rest is the current sequence from o + 1 on, after the same lot: it depends
            # only on this time, and a lot's completion does not come earlier when it starts later.
            told = P[k, o + 1, 0]
            if t == told:  # the rest runs exactly as it does now
                wt += P[k, L, 1] - P[k, o + 1, 1]
                chg += P[k, L, 2] - P[k, o + 1, 2]
                cost += P[k, L, 3] - P[k, o + 1, 3]
                if ins.makespan:
                    return P[k, L, 0], chg, cost
                return wt, chg, cost
            if t > told and not ins.makespan and wt + (P[k, L, 1] - P[k, o + 1, 1]) > limit:
                return np.inf, np.inf, np.inf  # at least the current rest's tardiness still comes
    if ins.makespan:
        return (t if Lnew > 0 else 0.0), chg, cost
    return wt, chg, cost


@njit(cache=True)
def edit_cost(ins: Inst, seq: Any, ln: Any, lc: Any, buf: Any, k: int, r: int, q: int,
              x: int, limit: float) -> tuple[float, float, float]:
    """Line k's figures after removing position r (r < 0: none) and then inserting lot x at position q of
    the remaining sequence (q < 0: none). `buf` holds the prefixes (`prefix_line`) on the general path;
    `limit`: candidates whose weighted tardiness passes it may be cut short (returned as inf)."""
    n = ins.p.shape[0]
    L = ln[k]
    if ins.simple:
        f0 = lc[k, 0] if L > 0 else ins.avail[k]
        f1 = lc[k, 1]
        f2 = lc[k, 2]
        L2 = L
        if r >= 0:
            j = seq[k, r]
            prev = seq[k, r - 1] if r > 0 else n
            nxt = seq[k, r + 1] if r < L - 1 else n
            d = ins.S[k, prev, nxt] - ins.S[k, prev, j] - ins.S[k, j, nxt]
            f0 += d - ins.p[j, k]
            f1 += d
            f2 -= ins.tc[j, k]
            L2 = L - 1
        if q >= 0:
            prev = _elem(seq, k, r, q - 1) if q > 0 else n
            nxt = _elem(seq, k, r, q) if q < L2 else n
            d = ins.S[k, prev, x] + ins.S[k, x, nxt] - ins.S[k, prev, nxt]
            f0 += d + ins.p[x, k]
            f1 += d
            f2 += ins.tc[x, k]
        if L2 == 0 and q < 0:
            f0 = 0.0
        return f0, f1, f2
    return eval_edit(ins, seq, ln, buf, k, r, q, x, limit)


@njit(cache=True)
def apply_edit(ins: Inst, seq: Any, ln: Any, lc: Any, where: Any, buf: Any, k: int, r: int, q: int,
               x: int) -> None:
    """Perform the edit of `edit_cost` on line k and update its figures (and prefixes)."""
    f0, f1, f2 = edit_cost(ins, seq, ln, lc, buf, k, r, q, x, np.inf)
    L = ln[k]
    if r >= 0:
        where[seq[k, r]] = -1
        for e in range(r, L - 1):
            seq[k, e] = seq[k, e + 1]
        L -= 1
    if q >= 0:
        for e in range(L, q, -1):
            seq[k, e] = seq[k, e - 1]
        seq[k, q] = x
        where[x] = k
        L += 1
    ln[k] = L
    lc[k, 0] = f0
    lc[k, 1] = f1
    lc[k, 2] = f2
    if not ins.simple:
        prefix_line(ins, k, seq, ln, buf)


@njit(cache=True)
def refresh(ins: Inst, seq: Any, ln: Any, lc: Any) -> None:
    for k in range(seq.shape[0]):
        v = eval_line(ins, k, seq[k], ln[k])
        lc[k, 0] = v[0]
        lc[k, 1] = v[1]
        lc[k, 2] = v[2]


# ---- comparisons --------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def lex_less(a0: float, a1: float, a2: float, b0: float, b1: float, b2: float) -> bool:
    if a0 < b0 - EPS * (1.0 + abs(b0)):
        return True
    if a0 > b0 + EPS * (1.0 + abs(b0)):
        return False
    if a1 < b1 - EPS * (1.0 + abs(b1)):
        return True
    if a1 > b1 + EPS * (1.0 + abs(b1)):
        return False
    return a2 < b2 - EPS * (1.0 + abs(b2))


@njit(cache=True)
def _lim(v: float) -> float:
    """A pruning limit just above v (so that ties on the first figure are still compared on the others)."""
    return v + EPS * (1.0 + abs(v)) + 1e-9


@njit(cache=True)
def total(ins: Inst, lc: Any) -> tuple[float, float, float]:
    """The plan's figures: (weighted tardiness, changeover, cost) or (makespan, sum of completions, changeover)."""
    if ins.makespan:
        mx = 0.0
        sm = 0.0
        ch = 0.0
        for k in range(lc.shape[0]):
            mx = max(mx, lc[k, 0])
            sm += lc[k, 0]
            ch += lc[k, 1]
        return mx, sm, ch
    a = 0.0
    b = 0.0
    c = 0.0
    for k in range(lc.shape[0]):
        a += lc[k, 0]
        b += lc[k, 1]
        c += lc[k, 2]
    return a, b, c


@njit(cache=True, inline="always")
def pair_better(ins: Inst, lc: Any, a: int, b: int, na: Any, nb: Any, oa: Any, ob: Any) -> bool:
    """Is the change of lines a and b from (oa, ob) to (na, nb) an improvement? Makespan: of (makespan, sum of
    the lines' completions) lexicographically, so that moves which free capacity below the makespan count."""
    if ins.makespan:
        dsum = na[0] + nb[0] - oa[0] - ob[0]
        new = max(na[0], nb[0])
        old = max(oa[0], ob[0])
        if dsum >= -EPS and new >= old - EPS:
            return False
        rest = 0.0
        for k in range(lc.shape[0]):
            if k != a and k != b and lc[k, 0] > rest:
                rest = lc[k, 0]
        gnew = max(new, rest)
        gold = max(old, rest)
        if gnew < gold - EPS:
            return True
        if gnew > gold + EPS:
            return False
        return bool(dsum < -EPS)
    return lex_less(na[0] + nb[0], na[1] + nb[1], na[2] + nb[2], oa[0] + ob[0], oa[1] + ob[1], oa[2] + ob[2])


@njit(cache=True, inline="always")
def single_better(ins: Inst, na: Any, oa: Any) -> bool:
    return lex_less(na[0], na[1], na[2], oa[0], oa[1], oa[2])


# ---- construction and local search --------------------------------------------------------------------------
@njit(cache=True)
def best_insert(ins: Inst, seq: Any, ln: Any, lc: Any, where: Any, buf: Any, x: int) -> None:
    """Insert lot x where it costs least (makespan: lowest resulting makespan, then lowest line completion)."""
    m = seq.shape[0]
    top1 = -1.0
    top2 = -1.0
    arg = -1
    if ins.makespan:
        for k in range(m):
            v = lc[k, 0]
            if v > top1:
                top2 = top1
                top1 = v
                arg = k
            elif v > top2:
                top2 = v
    bk = -1
    bq = -1
    b0 = np.inf
    b1 = np.inf
    b2 = np.inf
    for k in range(m):
        if not ins.allowed[x, k]:
            continue
        for q in range(ins.fix[k], ln[k] + 1):
            limit = _lim(b0 + lc[k, 0]) if (bk >= 0 and not ins.makespan) else np.inf
            f0, f1, f2 = edit_cost(ins, seq, ln, lc, buf, k, -1, q, x, limit)
            if ins.makespan:
                other = top2 if k == arg else top1
                s0 = max(f0, other)
                s1 = f0
                s2 = f1
            else:
                s0 = f0 - lc[k, 0]
                s1 = f1 - lc[k, 1]
                s2 = f2 - lc[k, 2]
            if bk < 0 or lex_less(s0, s1, s2, b0, b1, b2):
                bk = k
                bq = q
                b0 = s0
                b1 = s1
                b2 = s2
    apply_edit(ins, seq, ln, lc, where, buf, bk, -1, bq, x)


@njit(cache=True)
def _mk_better(na: float, nb: float, oa: float, ob: float, rest: float) -> bool:
    """(makespan, sum of the two completions) lexicographically lower after the change of two lines."""
    dsum = na + nb - oa - ob
    new = max(na, nb, rest)
    old = max(oa, ob, rest)
    if new < old - EPS:
        return True
    if new > old + EPS:
        return False
    return dsum < -EPS


@njit(cache=True)
def local_search_simple(ins: Inst, seq: Any, ln: Any, lc: Any, where: Any, buf: Any, max_sweeps: int,
                        budget: Any) -> None:
    """`local_search` for simple makespan problems, with the O(1) move figures written out in the loops (a
    call with array arguments per candidate would cost more than the candidate)."""
    S = ins.S
    p = ins.p
    allowed = ins.allowed
    fix = ins.fix
    avail = ins.avail
    n = p.shape[0]
    m = seq.shape[0]
    for _sweep in range(max_sweeps):
        improved = False
        for a in range(m):
            i = fix[a]
            while i < ln[a]:
                budget[0] -= n + m
                if budget[0] <= 0:
                    return
                L = ln[a]
                j = seq[a, i]
                ca = lc[a, 0]
                prev = seq[a, i - 1] if i > 0 else n
                nxt = seq[a, i + 1] if i < L - 1 else n
                ra = ca + S[a, prev, nxt] - S[a, prev, j] - S[a, j, nxt] - p[j, a]
                if L == 1:
                    ra = 0.0
                moved = False
                for q in range(fix[a], L):
                    if q == i:
                        continue
                    pv = (seq[a, q - 1] if q - 1 < i else seq[a, q]) if q > 0 else n
                    nx = (seq[a, q] if q < i else seq[a, q + 1]) if q < L - 1 else n
                    new = ra + S[a, pv, j] + S[a, j, nx] - S[a, pv, nx] + p[j, a]
                    if new < ca - EPS:
                        apply_edit(ins, seq, ln, lc, where, buf, a, i, q, j)
                        moved = True
                        break
                if not moved:
                    for b in range(m):
                        if b == a or not allowed[j, b]:
                            continue
                        rest = 0.0
                        for k in range(m):
                            if k != a and k != b and lc[k, 0] > rest:
                                rest = lc[k, 0]
                        cb = lc[b, 0]
                        Lb = ln[b]
                        base = (cb if Lb > 0 else avail[b]) + p[j, b]
                        for q in range(fix[b], Lb + 1):
                            pv = seq[b, q - 1] if q > 0 else n
                            nx = seq[b, q] if q < Lb else n
                            nb = base + S[b, pv, j] + S[b, j, nx] - S[b, pv, nx]
                            if _mk_better(ra, nb, ca, cb, rest):
                                apply_edit(ins, seq, ln, lc, where, buf, a, i, -1, -1)
                                apply_edit(ins, seq, ln, lc, where, buf, b, -1, q, j)
                                moved = True
                                break
                        if moved:
                            break
                if moved:
                    improved = True
                else:
                    i += 1
        for a in range(m):
            for b in range(a + 1, m):
                rest = 0.0
                for k in range(m):
                    if k != a and k != b and lc[k, 0] > rest:
                        rest = lc[k, 0]
                i = fix[a]
                while i < ln[a]:
                    budget[0] -= ln[b]
                    if budget[0] <= 0:
                        return
                    x = seq[a, i]
                    swapped = False
                    if allowed[x, b]:
                        La = ln[a]
                        Lb = ln[b]
                        ca = lc[a, 0]
                        cb = lc[b, 0]
                        pa = seq[a, i - 1] if i > 0 else n
                        xa = seq[a, i + 1] if i < La - 1 else n
                        out_a = ca - S[a, pa, x] - S[a, x, xa] - p[x, a]
                        for q in range(fix[b], Lb):
                            y = seq[b, q]
                            if not allowed[y, a]:
                                continue
                            na = out_a + S[a, pa, y] + S[a, y, xa] + p[y, a]
                            pb = seq[b, q - 1] if q > 0 else n
                            xb = seq[b, q + 1] if q < Lb - 1 else n
                            nb = cb - S[b, pb, y] - S[b, y, xb] - p[y, b] + S[b, pb, x] + S[b, x, xb] + p[x, b]
                            if _mk_better(na, nb, ca, cb, rest):
                                apply_edit(ins, seq, ln, lc, where, buf, a, i, i, y)
                                apply_edit(ins, seq, ln, lc, where, buf, b, q, q, x)
                                where[y] = a
                                swapped = True
                                improved = True
                                rest = 0.0
                                for k in range(m):
                                    if k != a and k != b and lc[k, 0] > rest:
                                        rest = lc[k, 0]
                                break
                    if not swapped:
                        i += 1
        if not improved:
            break


@njit(cache=True)
def local_search(ins: Inst, seq: Any, ln: Any, lc: Any, where: Any, buf: Any, max_sweeps: int, dirty: Any,
                 budget: Any, window: int = 1 << 30) -> None:
    """First-improvement descent on moves of one lot (within its line or to another) and swaps of two lots
    on different lines, until no move improves (or `max_sweeps` sweeps). General path: only moves that
    touch a line changed since it was last searched (`dirty`, updated in place) are evaluated, and a lot
    moves within its line by at most `window` positions."""
    if ins.simple:
        local_search_simple(ins, seq, ln, lc, where, buf, max_sweeps, budget)
        return
    m = seq.shape[0]
    oa = np.empty(3)
    ob = np.empty(3)
    na = np.empty(3)
    nb = np.empty(3)
    changed = np.zeros(m, np.bool_)
    for _sweep in range(max_sweeps):
        improved = False
        changed[:] = False
        for a in range(m):
            i = ins.fix[a]
            while i < ln[a]:
                budget[0] -= ins.p.shape[0] + m
                if budget[0] <= 0:
                    return
                j = seq[a, i]
                moved = False
                oa[:] = lc[a]
                ra = edit_cost(ins, seq, ln, lc, buf, a, i, -1, -1, np.inf)
                # within the line
                for q in range(max(ins.fix[a], i - window), min(ln[a], i + window + 1) if dirty[a] else 0):
                    if q == i:
                        continue
                    v = edit_cost(ins, seq, ln, lc, buf, a, i, q, j, _lim(oa[0]))
                    na[0] = v[0]
                    na[1] = v[1]
                    na[2] = v[2]
                    if single_better(ins, na, oa):
                        apply_edit(ins, seq, ln, lc, where, buf, a, i, q, j)
                        changed[a] = True
                        moved = True
                        break
                if not moved:
                    na[0] = ra[0]
                    na[1] = ra[1]
                    na[2] = ra[2]
                    for b in range(m):
                        if b == a or not ins.allowed[j, b] or not (dirty[a] or dirty[b]):
                            continue
                        ob[:] = lc[b]
                        for q in range(ins.fix[b], ln[b] + 1):
                            v = edit_cost(ins, seq, ln, lc, buf, b, -1, q, j, _lim(oa[0] + ob[0] - na[0]))
                            nb[0] = v[0]
                            nb[1] = v[1]
                            nb[2] = v[2]
                            if pair_better(ins, lc, a, b, na, nb, oa, ob):
                                apply_edit(ins, seq, ln, lc, where, buf, a, i, -1, -1)
                                apply_edit(ins, seq, ln, lc, where, buf, b, -1, q, j)
                                changed[a] = changed[b] = dirty[a] = dirty[b] = True
                                moved = True
                                break
                        if moved:
                            break
                if moved:
                    improved = True
                else:
                    i += 1
        # swaps between lines
        for a in range(m):
            for b in range(a + 1, m):
                if not (dirty[a] or dirty[b]):
                    continue
                i = ins.fix[a]
                while i < ln[a]:
                    budget[0] -= ln[b]
                    if budget[0] <= 0:
                        return
                    x = seq[a, i]
                    swapped = False
                    if ins.allowed[x, b]:
                        for q in range(ins.fix[b], ln[b]):
                            y = seq[b, q]
                            if not ins.allowed[y, a]:
                                continue
                            oa[:] = lc[a]
                            ob[:] = lc[b]
                            v = edit_cost(ins, seq, ln, lc, buf, a, i, i, y, _lim(oa[0] + ob[0]))
                            na[0] = v[0]
                            na[1] = v[1]
                            na[2] = v[2]
                            u = edit_cost(ins, seq, ln, lc, buf, b, q, q, x, _lim(oa[0] + ob[0] - na[0]))
                            nb[0] = u[0]
                            nb[1] = u[1]
                            nb[2] = u[2]
                            if pair_better(ins, lc, a, b, na, nb, oa, ob):
                                apply_edit(ins, seq, ln, lc, where, buf, a, i, i, y)
                                apply_edit(ins, seq, ln, lc, where, buf, b, q, q, x)
                                where[y] = a
                                changed[a] = changed[b] = True
                                swapped = True
                                improved = True
                                break
                    if not swapped:
                        i += 1
        dirty[:] = changed
        if not improved:
            break


@njit(cache=True)
def seed_rng(seed: int) -> None:
    np.random.seed(seed)


@njit(cache=True)
def _pick_late(ins: Inst, seq: Any, ln: Any, P: Any, out: Any, d: int) -> int:
    """A late lot chosen at random and up to d - 1 other lots: among the 12 ahead of it on its line (what delays
    it) or about as far down another line that could make it (what could make room there), into out; how
    many (0 when no lot is late). P: the lines' prefixes. Only positions after the fixed prefixes are drawn:
    for the repair's instance (`search._sub_inst`) those are the movable lots."""
    m = seq.shape[0]
    late = 0
    for k in range(m):
        for e in range(ins.fix[k], ln[k]):
            if P[k, e + 1, 1] > P[k, e, 1]:
                late += 1
    if late == 0:
        return 0
    pick = np.random.randint(0, late)
    for k in range(m):
        for e in range(ins.fix[k], ln[k]):
            if P[k, e + 1, 1] > P[k, e, 1]:
                if pick == 0:
                    j = seq[k, e]
                    out[0] = j
                    got = 1
                    lo = max(ins.fix[k], e - 12)
                    span = e - lo
                    for _try in range(3 * d):
                        if got >= d:
                            break
                        b = np.random.randint(0, m)
                        if b != k and ins.allowed[j, b] and ln[b] > ins.fix[b] and np.random.random() < 0.5:
                            # a lot of another line that could make it, about as far down that line
                            c = ins.fix[b] + (e * (ln[b] - ins.fix[b])) // max(ln[k], 1)
                            c = min(max(c + np.random.randint(-6, 7), ins.fix[b]), ln[b] - 1)
                            x = seq[b, c]
                        elif span > 0:
                            x = seq[k, lo + np.random.randint(0, span)]
                        else:
                            continue
                        dup = False
                        for u in range(got):
                            if out[u] == x:
                                dup = True
                        if not dup:
                            out[got] = x
                            got += 1
                    return got
                pick -= 1
    return 0


@njit(cache=True)
def iterate(ins: Inst, cur_seq: Any, cur_ln: Any, cur_lc: Any, best_seq: Any, best_ln: Any, best_lc: Any,
            iters: int, d_min: int, d_max: int, temperature: float, sweeps: int, budget: Any,
            focused: bool = False, window: int = 1 << 30) -> int:
    """Up to `iters` iterations of the iterated greedy, stopping once `budget[0]` (candidate moves to look at,
    counted down in place) is spent: remove d random movable lots (`focused`, tardiness: half of the time a
    late lot and lots around it, `_pick_late`), reinsert each at its best place, local search (moves within a
    line up to `window` positions), accept when not worse (or with probability exp(-delta / temperature)).
    Updates the current and best solutions in place; returns how many iterations it ran."""
    n = ins.p.shape[0]
    m = cur_seq.shape[0]
    buf = np.zeros((cur_seq.shape[0], n + 2, 5))
    seq = cur_seq.copy()
    ln = cur_ln.copy()
    lc = cur_lc.copy()
    where = np.full(n, -1, np.int64)
    movable = np.empty(n, np.int64)
    nm = 0
    for j in range(n):
        if ins.movable[j]:
            movable[nm] = j
            nm += 1
    if nm == 0:
        return 0
    removed = np.empty(n, np.int64)
    dirty = np.zeros(m, np.bool_)
    done = 0
    for _it in range(iters):
        if budget[0] <= 0:
            break
        done += 1
        seq[:] = cur_seq
        ln[:] = cur_ln
        lc[:] = cur_lc
        for k in range(m):
            for e in range(ln[k]):
                where[seq[k, e]] = k
        refresh_prefix(ins, seq, ln, buf)
        d = np.random.randint(d_min, d_max + 1)
        if d > nm:
            d = nm
        got = 0
        if focused and not ins.makespan and np.random.random() < 0.5:
            got = _pick_late(ins, seq, ln, buf, removed, d)
        # d distinct lots (partial Fisher-Yates over the movable ones)
        t = 0
        while got < d and t < nm:
            s = np.random.randint(t, nm)
            movable[t], movable[s] = movable[s], movable[t]
            x = movable[t]
            t += 1
            dup = False
            for u in range(got):
                if removed[u] == x:
                    dup = True
            if not dup:
                removed[got] = x
                got += 1
        d = got
        dirty[:] = False
        for t in range(d):
            x = removed[t]
            k = where[x]
            dirty[k] = True
            for e in range(ln[k]):
                if seq[k, e] == x:
                    apply_edit(ins, seq, ln, lc, where, buf, k, e, -1, -1)
                    break
        for t in range(d):
            best_insert(ins, seq, ln, lc, where, buf, removed[t])
            dirty[where[removed[t]]] = True
        local_search(ins, seq, ln, lc, where, buf, sweeps, dirty, budget, window)
        new = total(ins, lc)
        cur = total(ins, cur_lc)
        accept = not lex_less(cur[0], cur[1], cur[2], new[0], new[1], new[2])
        if not accept and temperature > 0.0:
            delta = new[0] - cur[0]
            if delta <= 0.0 or np.random.random() < math.exp(-delta / temperature):
                accept = True
        if accept:
            cur_seq[:] = seq
            cur_ln[:] = ln
            cur_lc[:] = lc
            b = total(ins, best_lc)
            if lex_less(new[0], new[1], new[2], b[0], b[1], b[2]):
                best_seq[:] = seq
                best_ln[:] = ln
                best_lc[:] = lc
    return done


@njit(cache=True)
def construct(ins: Inst, seq: Any, ln: Any, lc: Any, order: Any, sweeps: int, budget: int) -> None:
    """Insert the lots of `order` (not yet placed) one by one at their best place, then local search."""
    n = ins.p.shape[0]
    buf = np.zeros((seq.shape[0], n + 2, 5))
    where = np.full(n, -1, np.int64)
    for k in range(seq.shape[0]):
        for e in range(ln[k]):
            where[seq[k, e]] = k
    refresh_prefix(ins, seq, ln, buf)
    for t in range(order.shape[0]):
        best_insert(ins, seq, ln, lc, where, buf, order[t])
    local_search(ins, seq, ln, lc, where, buf, sweeps, np.ones(seq.shape[0], np.bool_), np.array([budget], np.int64))


@njit(cache=True)
def improve(ins: Inst, seq: Any, ln: Any, lc: Any, sweeps: int, budget: Any) -> None:
    """Local search on the whole solution until no move improves or `budget[0]` is spent."""
    n = ins.p.shape[0]
    buf = np.zeros((seq.shape[0], n + 2, 5))
    where = np.full(n, -1, np.int64)
    for k in range(seq.shape[0]):
        for e in range(ln[k]):
            where[seq[k, e]] = k
    refresh_prefix(ins, seq, ln, buf)
    local_search(ins, seq, ln, lc, where, buf, sweeps, np.ones(seq.shape[0], np.bool_), budget)
