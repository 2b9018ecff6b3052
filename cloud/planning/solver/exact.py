"""Exact makespan for small simple problems by dynamic programming over subsets of lots.

Per line, Held-Karp gives the shortest completion of every subset of lots (best sequence); then the lines
share the lots: H_k(S) = min over T in S of max(H_{k-1}(S - T), F_k(T)). O(m 2^n n^2 + m 3^n): milliseconds
for the 640 small Vallada & Ruiz instances (n <= 12), where CP-SAT needs up to seconds to prove optimality.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from zhizao.cloud.planning.solver.engine import Inst

__all__ = ["DP_MAX_LOTS", "solve_makespan_dp"]

DP_MAX_LOTS = 14


@njit(cache=True)
def _line_subsets(S: Any, p: Any, avail: float, k: int, n: int) -> tuple[Any, Any, Any]:
    """best[T]: shortest completion of subset T on line k; last[T] its last lot; par[T, j] the lot before j."""
    full = 1 << n
    g = np.full((full, n), np.inf)
    par = np.full((full, n), -1, np.int8)
    for j in range(n):
        if np.isfinite(p[j, k]):
            g[1 << j, j] = S[k, n, j] + p[j, k]
    for T in range(1, full):
        for j in range(n):
            gj = g[T, j]
            if not np.isfinite(gj):
                continue
            for x in range(n):
                if (T >> x) & 1 or not np.isfinite(p[x, k]):
                    continue
                U = T | (1 << x)
                v = gj + S[k, j, x] + p[x, k]
                if v < g[U, x]:
                    g[U, x] = v
                    par[U, x] = j
    best = np.full(full, np.inf)
    last = np.full(full, -1, np.int64)
    best[0] = 0.0
    for T in range(1, full):
        for j in range(n):
            v = g[T, j] + avail
            if v < best[T]:
                best[T] = v
                last[T] = j
    return best, last, par


@njit(cache=True)
def _share(F: Any) -> tuple[float, Any]:
    """Min over partitions of the full set into m (possibly empty) subsets of the largest F[k, T_k]."""
    m, full = F.shape
    H = F[0].copy()
    choice = np.zeros((m, full), np.int64)
    for S in range(full):
        choice[0, S] = S
    for k in range(1, m):
        Hn = np.full(full, np.inf)
        for S in range(full):
            T = S
            while True:
                v = max(H[S ^ T], F[k, T])
                if v < Hn[S]:
                    Hn[S] = v
                    choice[k, S] = T
                if T == 0:
                    break
                T = (T - 1) & S
        H = Hn
    return H[full - 1], choice


def solve_makespan_dp(inst: Inst) -> tuple[list[list[int]], float]:
    """Optimal sequences and makespan of a simple makespan problem with at most DP_MAX_LOTS lots."""
    n, m = inst.p.shape
    if n > DP_MAX_LOTS:
        raise ValueError(f"lots: {n}, the dynamic programme takes at most {DP_MAX_LOTS}")
    full = 1 << n
    F = np.empty((m, full))
    lasts, pars = [], []
    for k in range(m):
        best, last, par = _line_subsets(inst.S, inst.p, float(inst.avail[k]), k, n)
        F[k] = best
        lasts.append(last)
        pars.append(par)
    value, choice = _share(F)
    sequences: list[list[int]] = [[] for _ in range(m)]
    S = full - 1
    for k in range(m - 1, -1, -1):
        T = int(choice[k, S])
        seq: list[int] = []
        if T:
            j = int(lasts[k][T])
            U = T
            while j >= 0:
                seq.append(j)
                prev = int(pars[k][U, j])
                U &= ~(1 << j)
                j = prev
        sequences[k] = seq[::-1]
        S &= ~T
    return sequences, float(value)
