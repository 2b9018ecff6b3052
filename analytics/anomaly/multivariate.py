"""Multivariate detector per machine: Mahalanobis T² against an exponentially weighted mean and covariance."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from zhizao.analytics.anomaly.base import F64, Alarm, Detector, Scored, alarm_step, reference_alarm


@njit(cache=True, error_model="numpy")
def _mahalanobis(cov: np.ndarray, d: np.ndarray, ridge: float, lmat: np.ndarray, y: np.ndarray) -> float:
    # d' (C + ridge I)^-1 d through a Cholesky factor: ||L^-1 d||².
    p = d.size
    for i in range(p):
        for j in range(i + 1):
            s = cov[i * p + j] + (ridge if i == j else 0.0)
            for q in range(j):
                s -= lmat[i, q] * lmat[j, q]
            if i == j:
                if s <= 0.0:
                    return np.nan
                lmat[i, i] = math.sqrt(s)
            else:
                lmat[i, j] = s / lmat[j, j]
    acc = 0.0
    for i in range(p):
        s = d[i]
        for q in range(i):
            s -= lmat[i, q] * y[q]
        y[i] = s / lmat[i, i]
        acc += y[i] * y[i]
    return acc


@njit(cache=True, parallel=True, error_model="numpy")
def mahalanobis_kernel(
    st: np.ndarray, x: np.ndarray, p: int, alpha: float, warmup: float, ridge: float,
    on: float, off: float, min_on: int, min_off: int, scores: np.ndarray, alarms: np.ndarray,
) -> None:
    """Per machine (p consecutive tags): score T² before folding the sample into mean and covariance."""
    n_t = x.shape[0]
    n_g = st.shape[0]
    for g in prange(n_g):
        row = st[g]
        mean = row[1:1 + p]
        cov = row[1 + p:1 + p + p * p]
        a0 = 1 + p + p * p
        d = np.empty(p)
        y = np.empty(p)
        lmat = np.zeros((p, p))
        for t in range(n_t):
            ok = True
            for i in range(p):
                v = x[t, g * p + i]
                if v != v:
                    ok = False
                d[i] = v - mean[i]
            score = np.nan
            if ok:
                c = row[0]
                if c >= warmup:
                    # The ridge is relative to the mean variance: the condition number stays below ~1/ridge.
                    tr = 0.0
                    for i in range(p):
                        tr += cov[i * p + i]
                    if tr > 0.0:
                        score = _mahalanobis(cov, d, ridge * tr / p, lmat, y)
                a = max(alpha, 1.0 / (c + 1.0))
                for i in range(p):
                    mean[i] += a * d[i]
                for i in range(p):
                    for j in range(p):
                        cov[i * p + j] = (1.0 - a) * (cov[i * p + j] + a * d[i] * d[j])
                row[0] = c + 1.0
            scores[t, g] = score
            act, con, coff = alarm_step(score, on, off, min_on, min_off, row[a0], row[a0 + 1], row[a0 + 2])
            row[a0] = act
            row[a0 + 1] = con
            row[a0 + 2] = coff
            alarms[t, g] = act > 0.5


@dataclass(frozen=True)
class MahalanobisT2(Detector):
    """T² = d'(C + r·I)⁻¹d per machine of `dims` consecutive tags, r = ridge x mean variance.

    A NaN in any of the machine's tags skips the sample; no score while the covariance is all zero.
    """

    dims: int = 3
    alpha: float = 0.005
    warmup: int = 200
    ridge: float = 1e-6
    alarm: Alarm = field(default_factory=lambda: Alarm(on=12.0, off=6.0, min_on=2, min_off=5))
    name: str = "mahalanobis_t2"
    # T² solves a linear system (Cholesky in the kernel, LU in the twin): agreement depends on conditioning.
    reference_rtol: ClassVar[float] = 1e-6

    def __post_init__(self) -> None:
        if self.dims < 1:
            raise ValueError(f"dims: must be >= 1, got {self.dims}")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha: must be in (0, 1], got {self.alpha}")
        if self.warmup < 2:
            raise ValueError(f"warmup: must be >= 2, got {self.warmup}")
        if not self.ridge > 0.0:
            raise ValueError(f"ridge: must be > 0, got {self.ridge}")

    @property
    def tags_per_output(self) -> int:  # type: ignore[override]
        """Tags per machine."""
        return self.dims

    def state_shape(self, n_tags: int) -> tuple[int, int]:
        """Per machine: count, mean (dims), covariance (dims²), alarm x3."""
        p = self.dims
        return (n_tags // p, 1 + p + p * p + 3)

    def _kernel(self, state: F64, x: F64, scores: F64, alarms: NDArray[np.bool_]) -> None:
        al = self.alarm
        mahalanobis_kernel(state, x, self.dims, self.alpha, float(self.warmup), self.ridge,
                           al.on, al.off, al.min_on, al.min_off, scores, alarms)

    def _reference(self, state: F64, x: F64) -> Scored:
        p = self.dims
        n_g = state.shape[0]
        scores = np.full((x.shape[0], n_g), np.nan)
        eye = np.eye(p)
        for g in range(n_g):
            mean = state[g, 1:1 + p]
            cov = state[g, 1 + p:1 + p + p * p].reshape(p, p)
            for t in range(x.shape[0]):
                v = x[t, g * p:(g + 1) * p]
                if np.isnan(v).any():
                    continue
                d = v - mean
                c = state[g, 0]
                tr = float(np.trace(cov))
                if c >= self.warmup and tr > 0.0:
                    scores[t, g] = float(d @ np.linalg.solve(cov + eye * (self.ridge * tr / p), d))
                a = max(self.alpha, 1.0 / (c + 1.0))
                mean += a * d
                cov[:] = (1.0 - a) * (cov + a * np.outer(d, d))
                state[g, 0] = c + 1.0
        a0 = 1 + p + p * p
        alarms = reference_alarm(scores, self.alarm, state[:, a0], state[:, a0 + 1], state[:, a0 + 2])
        return Scored(scores, alarms)
