"""Multivariate detector per machine: Hotelling's T² and Q (SPE) on a PCA fitted on the learning period, then frozen.

Per machine of `dims` consecutive tags, each valid sample (no NaN in any of its tags) forms a vector of the
current values and the `lags` previous valid samples (lagged copies catch changes of the dynamics, not only of
the levels). The first `learn` vectors are the learning period: their mean and covariance are accumulated
(Welford); at its end the detector standardises (scale floors relative to each signal's mean: a flat or
quantised signal counts as noise of the floor's size, so it does not explode), takes the eigen-decomposition of the correlation matrix (Jacobi), keeps the
`k` leading components explaining `explained` of the variance, and sets the two control limits at probability
`p` from the training eigenvalues alone: T² against the chi-square quantile with k degrees of freedom
(Wilson-Hilferty), Q against the Jackson-Mudholkar limit of the residual eigenvalues. Both limits scale with
the number of signals and components. The model is then frozen (fit-then-freeze: an anomaly is never learnt).

The score is `max(T² / T²-limit, Q / Q-limit)`: 1.0 is the control limit at probability `p`, for any number of
signals, so one alarm level suits every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import ClassVar

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from zhizao.analytics.anomaly.base import F64, Alarm, Detector, Scored, alarm_step, reference_alarm

# Header fields of a machine's state row.
_CNT, _FIT, _K, _T2L, _QL = range(5)
_HEAD = 5
REL_FLOOR = 1e-3  # a signal's scale is at least this share of its mean's magnitude (and >= 1e-12)


def _layout(dims: int, lags: int) -> tuple[int, int, int, int, int, int, int, int]:
    """Offsets in a state row: ring, mean, co-moment, scale, vectors, values, alarm; and the row length."""
    p = dims * (lags + 1)
    ring = _HEAD
    mean = ring + dims * lags
    m2 = mean + p
    sd = m2 + p * p
    vec = sd + p
    val = vec + p * p
    alarm = val + p
    return p, ring, mean, m2, sd, vec, val, alarm


@njit(cache=True, error_model="numpy")
def _jacobi(a: np.ndarray, vec: np.ndarray, val: np.ndarray) -> None:
    """Eigen-decomposition of the symmetric a (overwritten): val descending, vec columns, sign-normalised."""
    p = a.shape[0]
    for i in range(p):
        for j in range(p):
            vec[i, j] = 1.0 if i == j else 0.0
    for _sweep in range(100):
        off = 0.0
        diag = 0.0
        for i in range(p):
            diag += a[i, i] * a[i, i]
            for j in range(i + 1, p):
                off += a[i, j] * a[i, j]
        if off <= 1e-30 * max(diag, 1e-300):
            break
        for i in range(p - 1):
            for j in range(i + 1, p):
                aij = a[i, j]
                if abs(aij) <= 1e-300:
                    continue
                theta = (a[j, j] - a[i, i]) / (2.0 * aij)
                t = (1.0 if theta >= 0.0 else -1.0) / (abs(theta) + math.sqrt(theta * theta + 1.0))
                c = 1.0 / math.sqrt(t * t + 1.0)
                s = t * c
                for r in range(p):
                    ari = a[r, i]
                    arj = a[r, j]
                    a[r, i] = c * ari - s * arj
                    a[r, j] = s * ari + c * arj
                for r in range(p):
                    air = a[i, r]
                    ajr = a[j, r]
                    a[i, r] = c * air - s * ajr
                    a[j, r] = s * air + c * ajr
                for r in range(p):
                    vri = vec[r, i]
                    vrj = vec[r, j]
                    vec[r, i] = c * vri - s * vrj
                    vec[r, j] = s * vri + c * vrj
    # Sort descending (selection sort: p is small), then make each vector's largest entry positive.
    for i in range(p):
        val[i] = a[i, i]
    for i in range(p):
        best = i
        for j in range(i + 1, p):
            if val[j] > val[best]:
                best = j
        if best != i:
            tmp = val[i]
            val[i] = val[best]
            val[best] = tmp
            for r in range(p):
                tmp = vec[r, i]
                vec[r, i] = vec[r, best]
                vec[r, best] = tmp
    for i in range(p):
        big = 0
        for r in range(p):
            if abs(vec[r, i]) > abs(vec[big, i]):
                big = r
        if vec[big, i] < 0.0:
            for r in range(p):
                vec[r, i] = -vec[r, i]


@njit(cache=True, error_model="numpy")
def _fit(row: np.ndarray, dims: int, lags: int, explained: float, z: float) -> None:
    p = dims * (lags + 1)
    o_mean = _HEAD + dims * lags
    o_m2 = o_mean + p
    o_sd = o_m2 + p * p
    o_vec = o_sd + p
    o_val = o_vec + p * p
    n = row[_CNT] - lags
    corr = np.empty((p, p))
    for i in range(p):
        s = math.sqrt(max(row[o_m2 + i * p + i] / n, 0.0))
        row[o_sd + i] = max(s, REL_FLOOR * abs(row[o_mean + i]), 1e-12)
    for i in range(p):
        for j in range(p):
            corr[i, j] = row[o_m2 + i * p + j] / n / (row[o_sd + i] * row[o_sd + j])
        corr[i, i] = 1.0  # a floored (flat) signal counts as noise of the floor's size, not as no variance
    vec = np.empty((p, p))
    val = np.empty(p)
    _jacobi(corr, vec, val)
    total = 0.0
    for i in range(p):
        val[i] = max(val[i], 0.0)
        total += val[i]
    k = p
    acc = 0.0
    for i in range(p):
        acc += val[i]
        if total > 0.0 and acc / total > explained:
            k = i + 1
            break
    top = max(val[0], 1e-12)
    for i in range(p):
        val[i] = max(val[i], 1e-9 * top)
        row[o_val + i] = val[i]
        for j in range(p):
            row[o_vec + i * p + j] = vec[i, j]
    # T² limit: chi-square quantile with k degrees of freedom (Wilson-Hilferty).
    c = 2.0 / (9.0 * k)
    row[_T2L] = k * max(1.0 - c + z * math.sqrt(c), 1e-3) ** 3
    # Q limit: Jackson-Mudholkar from the residual eigenvalues.
    th1 = 0.0
    th2 = 0.0
    th3 = 0.0
    for i in range(k, p):
        th1 += val[i]
        th2 += val[i] * val[i]
        th3 += val[i] * val[i] * val[i]
    qfloor = 1e-9 * max(total, 1e-12)
    if th1 <= qfloor or th2 <= 0.0:
        row[_QL] = qfloor
    else:
        h0 = max(1.0 - 2.0 * th1 * th3 / (3.0 * th2 * th2), 1e-3)
        base = 1.0 + z * h0 * math.sqrt(2.0 * th2) / th1 + th2 * h0 * (h0 - 1.0) / (th1 * th1)
        row[_QL] = max(th1 * max(base, 1e-12) ** (1.0 / h0), qfloor)
    row[_K] = k
    row[_FIT] = 1.0


@njit(cache=True, error_model="numpy")
def _score(row: np.ndarray, u: np.ndarray, p: int, o_mean: int, o_sd: int, o_vec: int, o_val: int,
           zbuf: np.ndarray, res: np.ndarray) -> float:
    k = int(row[_K])
    for i in range(p):
        zbuf[i] = (u[i] - row[o_mean + i]) / row[o_sd + i]
    t2 = 0.0
    # Residual r = z - V_k V_k' z, accumulated into rbuf = zbuf copy.
    q = 0.0
    for i in range(p):
        res[i] = zbuf[i]
    for c in range(k):
        tc = 0.0
        for i in range(p):
            tc += row[o_vec + i * p + c] * zbuf[i]
        t2 += tc * tc / row[o_val + c]
        for i in range(p):
            res[i] -= row[o_vec + i * p + c] * tc
    for i in range(p):
        q += res[i] * res[i]
    return float(max(t2 / row[_T2L], q / row[_QL]))


@njit(cache=True, parallel=True, error_model="numpy")
def pca_kernel(st: np.ndarray, x: np.ndarray, dims: int, lags: int, learn: float, explained: float, z: float,
               relearn: float, on: float, off: float, min_on: int, min_off: int, scores: np.ndarray, alarms: np.ndarray) -> None:
    """Per machine: build the lagged vector, learn (Welford) then fit once, then score T²/Q against the limits."""
    n_t = x.shape[0]
    n_g = st.shape[0]
    p = dims * (lags + 1)
    o_ring = _HEAD
    o_mean = o_ring + dims * lags
    o_m2 = o_mean + p
    o_sd = o_m2 + p * p
    o_vec = o_sd + p
    o_val = o_vec + p * p
    o_al = o_val + p
    for g in prange(n_g):
        row = st[g]
        u = np.empty(p)
        d = np.empty(p)
        zbuf = np.empty(p)
        rbuf = np.empty(p)
        for t in range(n_t):
            ok = True
            for i in range(dims):
                if x[t, g * dims + i] != x[t, g * dims + i]:
                    ok = False
            score = np.nan
            if ok:
                cnt = row[_CNT]
                for i in range(dims):
                    u[i] = x[t, g * dims + i]
                for i in range(dims * lags):
                    u[dims + i] = row[o_ring + i]
                if cnt >= lags:
                    if row[_FIT] > 0.5:
                        score = _score(row, u, p, o_mean, o_sd, o_vec, o_val, zbuf, rbuf)
                        if score < 1.0:  # within the control limits: follow a slow drift of the levels
                            for i in range(p):
                                row[o_mean + i] += relearn * (u[i] - row[o_mean + i])
                    else:
                        n1 = cnt - lags + 1.0
                        for i in range(p):
                            d[i] = u[i] - row[o_mean + i]
                            row[o_mean + i] += d[i] / n1
                        for i in range(p):
                            for j in range(p):
                                row[o_m2 + i * p + j] += d[i] * (u[j] - row[o_mean + j])
                        if n1 >= learn:
                            row[_CNT] = cnt + 1.0
                            _fit(row, dims, lags, explained, z)
                            cnt = row[_CNT] - 1.0
                # Shift the ring: newest sample first.
                for i in range(dims * lags - 1, dims - 1, -1):
                    row[o_ring + i] = row[o_ring + i - dims]
                if lags > 0:
                    for i in range(dims):
                        row[o_ring + i] = u[i]
                row[_CNT] = cnt + 1.0
            scores[t, g] = score
            act, con, coff = alarm_step(score, on, off, min_on, min_off, row[o_al], row[o_al + 1], row[o_al + 2])
            row[o_al] = act
            row[o_al + 1] = con
            row[o_al + 2] = coff
            alarms[t, g] = act > 0.5


def _jacobi_reference(a: F64) -> tuple[F64, F64]:
    """The same cyclic Jacobi rotations as the kernel, in plain Python/NumPy: (values desc, vectors)."""
    a = a.copy()
    p = a.shape[0]
    vec = np.eye(p)
    for _sweep in range(100):
        off = float(sum(a[i, j] * a[i, j] for i in range(p) for j in range(i + 1, p)))
        diag = float(sum(a[i, i] * a[i, i] for i in range(p)))
        if off <= 1e-30 * max(diag, 1e-300):
            break
        for i in range(p - 1):
            for j in range(i + 1, p):
                aij = float(a[i, j])
                if abs(aij) <= 1e-300:
                    continue
                theta = (a[j, j] - a[i, i]) / (2.0 * aij)
                t = (1.0 if theta >= 0.0 else -1.0) / (abs(theta) + math.sqrt(theta * theta + 1.0))
                c = 1.0 / math.sqrt(t * t + 1.0)
                s = t * c
                ci, cj = a[:, i].copy(), a[:, j].copy()
                a[:, i], a[:, j] = c * ci - s * cj, s * ci + c * cj
                ri, rj = a[i, :].copy(), a[j, :].copy()
                a[i, :], a[j, :] = c * ri - s * rj, s * ri + c * rj
                vi, vj = vec[:, i].copy(), vec[:, j].copy()
                vec[:, i], vec[:, j] = c * vi - s * vj, s * vi + c * vj
    # The kernel's selection sort (swaps), reproduced exactly.
    val_k, vec_k = np.diag(a).copy(), vec.copy()
    for i in range(p):
        best = i
        for j in range(i + 1, p):
            if val_k[j] > val_k[best]:
                best = j
        if best != i:
            val_k[[i, best]] = val_k[[best, i]]
            vec_k[:, [i, best]] = vec_k[:, [best, i]]
    for i in range(p):
        big = int(np.argmax(np.abs(vec_k[:, i])))
        if vec_k[big, i] < 0.0:
            vec_k[:, i] = -vec_k[:, i]
    return val_k, vec_k


@dataclass(frozen=True)
class PcaT2Q(Detector):
    """T² and Q on a PCA of the learning period, per machine of `dims` tags with `lags` lagged copies; frozen after.

    No score during the learning period (`lags + learn` valid samples); the score is the larger of T² and Q
    over their control limits at probability `p`, so `alarm.on = 1.0` is the textbook limit.
    """

    dims: int = 3
    lags: int = 2
    learn: int = 400
    explained: float = 0.85
    p: float = 0.99
    relearn: float = 0.0
    alarm: Alarm = field(default_factory=lambda: Alarm(on=2.0, off=1.0, min_on=3, min_off=5))
    name: str = "pca_t2q"
    reference_rtol: ClassVar[float] = 1e-6

    def __post_init__(self) -> None:
        if self.dims < 1:
            raise ValueError(f"dims: must be >= 1, got {self.dims}")
        if self.lags < 0:
            raise ValueError(f"lags: must be >= 0, got {self.lags}")
        if self.learn < 2:
            raise ValueError(f"learn: must be >= 2, got {self.learn}")
        if not 0.0 < self.explained <= 1.0:
            raise ValueError(f"explained: must be in (0, 1], got {self.explained}")
        if not 0.0 <= self.relearn < 1.0:
            raise ValueError(f"relearn: must be in [0, 1), got {self.relearn}")
        if not 0.5 < self.p < 1.0:
            raise ValueError(f"p: must be in (0.5, 1), got {self.p}")

    @property
    def tags_per_output(self) -> int:  # type: ignore[override]
        """Tags per machine."""
        return self.dims

    def state_shape(self, n_tags: int) -> tuple[int, int]:
        """Per machine: header, lag ring, mean, co-moment, scales, eigenvectors, eigenvalues, alarm x3."""
        return (n_tags // self.dims, _layout(self.dims, self.lags)[7] + 3)

    @property
    def _z(self) -> float:
        return NormalDist().inv_cdf(self.p)

    def _kernel(self, state: F64, x: F64, scores: F64, alarms: NDArray[np.bool_]) -> None:
        al = self.alarm
        pca_kernel(state, x, self.dims, self.lags, float(self.learn), self.explained, self._z, self.relearn,
                   al.on, al.off, al.min_on, al.min_off, scores, alarms)

    def _fit_reference(self, row: F64) -> None:
        p, _ring, o_mean, o_m2, o_sd, o_vec, o_val, _al = _layout(self.dims, self.lags)
        n = row[_CNT] - self.lags
        cov = row[o_m2:o_m2 + p * p].reshape(p, p) / n
        mean = row[o_mean:o_mean + p]
        sd = np.maximum(np.maximum(np.sqrt(np.maximum(np.diag(cov), 0.0)), REL_FLOOR * np.abs(mean)), 1e-12)
        row[o_sd:o_sd + p] = sd
        corr = cov / np.outer(sd, sd)
        np.fill_diagonal(corr, 1.0)
        val, vec = _jacobi_reference(corr)
        val = np.maximum(val, 0.0)
        total = float(val.sum())
        acc = np.cumsum(val)
        above = np.flatnonzero(acc / total > self.explained) if total > 0 else np.array([], np.int64)
        k = int(above[0]) + 1 if above.size else p
        val = np.maximum(val, 1e-9 * max(val[0], 1e-12))
        row[o_val:o_val + p] = val
        row[o_vec:o_vec + p * p] = vec.ravel()
        c = 2.0 / (9.0 * k)
        row[_T2L] = k * max(1.0 - c + self._z * math.sqrt(c), 1e-3) ** 3
        rest = val[k:]
        th1, th2, th3 = float((rest).sum()), float((rest**2).sum()), float((rest**3).sum())
        qfloor = 1e-9 * max(total, 1e-12)
        if th1 <= qfloor or th2 <= 0.0:
            row[_QL] = qfloor
        else:
            h0 = max(1.0 - 2.0 * th1 * th3 / (3.0 * th2 * th2), 1e-3)
            base = 1.0 + self._z * h0 * math.sqrt(2.0 * th2) / th1 + th2 * h0 * (h0 - 1.0) / (th1 * th1)
            row[_QL] = max(th1 * max(base, 1e-12) ** (1.0 / h0), qfloor)
        row[_K] = k
        row[_FIT] = 1.0

    def _reference(self, state: F64, x: F64) -> Scored:
        dims, lags = self.dims, self.lags
        p, o_ring, o_mean, o_m2, o_sd, o_vec, o_val, o_al = _layout(dims, lags)
        n_g = state.shape[0]
        scores = np.full((x.shape[0], n_g), np.nan)
        for g in range(n_g):
            row = state[g]
            for t in range(x.shape[0]):
                v = x[t, g * dims:(g + 1) * dims]
                if np.isnan(v).any():
                    continue
                cnt = row[_CNT]
                u = np.concatenate([v, row[o_ring:o_ring + dims * lags]])
                if cnt >= lags:
                    if row[_FIT] > 0.5:
                        k = int(row[_K])
                        zz = (u - row[o_mean:o_mean + p]) / row[o_sd:o_sd + p]
                        vec = row[o_vec:o_vec + p * p].reshape(p, p)[:, :k]
                        tc = zz @ vec
                        t2 = float((tc * tc / row[o_val:o_val + k]).sum())
                        q = float(((zz - vec @ tc) ** 2).sum())
                        sc = max(t2 / row[_T2L], q / row[_QL])
                        scores[t, g] = sc
                        if sc < 1.0:
                            mean = row[o_mean:o_mean + p]
                            mean += self.relearn * (u - mean)
                    else:
                        n1 = cnt - lags + 1.0
                        mean = row[o_mean:o_mean + p]
                        d = u - mean
                        mean += d / n1
                        row[o_m2:o_m2 + p * p] += np.outer(d, u - mean).ravel()
                        if n1 >= self.learn:
                            row[_CNT] = cnt + 1.0
                            self._fit_reference(row)
                            cnt = row[_CNT] - 1.0
                if lags > 0:
                    row[o_ring + dims:o_ring + dims * lags] = row[o_ring:o_ring + dims * (lags - 1)].copy()
                    row[o_ring:o_ring + dims] = v
                row[_CNT] = cnt + 1.0
        alarms = reference_alarm(scores, self.alarm, state[:, o_al], state[:, o_al + 1], state[:, o_al + 2])
        return Scored(scores, alarms)
