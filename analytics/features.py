"""Vibration features over consecutive windows of a (time x tags) block: RMS, kurtosis, crest factor, peak."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange
from numpy.typing import ArrayLike, NDArray

F64 = NDArray[np.float64]


class VibrationFeatures(NamedTuple):
    """Per window and tag (shape windows x tags); NaN where a window holds a NaN sample."""

    rms: F64
    kurtosis: F64  # Pearson kurtosis m4 / m2² (3 for Gaussian noise); NaN for a constant window
    crest: F64  # peak / RMS; NaN where RMS is 0
    peak: F64  # max |x|


@njit(cache=True, parallel=True, error_model="numpy")
def features_kernel(x: np.ndarray, length: int, out: np.ndarray) -> None:
    """out[f, w, j] for f in (rms, kurtosis, crest, peak); two passes per window, tags innermost (SIMD)."""
    n_t, n = x.shape
    n_w = n_t // length
    for w in prange(n_w):
        base = w * length
        s1 = np.zeros(n)
        s2 = np.zeros(n)
        s4 = np.zeros(n)
        sq = np.zeros(n)
        pk = np.zeros(n)
        for t in range(base, base + length):
            xr = x[t]
            for j in range(n):
                v = xr[j]
                s1[j] += v
                sq[j] += v * v
                pk[j] = max(pk[j], abs(v)) if v == v else np.nan
        for j in range(n):
            s1[j] /= length
        for t in range(base, base + length):
            xr = x[t]
            for j in range(n):
                d = xr[j] - s1[j]
                d2 = d * d
                s2[j] += d2
                s4[j] += d2 * d2
        for j in range(n):
            rms = math.sqrt(sq[j] / length)
            m2 = s2[j] / length
            m4 = s4[j] / length
            out[0, w, j] = rms
            out[1, w, j] = m4 / (m2 * m2) if m2 > 0.0 else np.nan
            out[2, w, j] = pk[j] / rms if rms > 0.0 else np.nan
            out[3, w, j] = pk[j]


def _check(x: ArrayLike, length: int) -> F64:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"x: expected a 2-D (time, tags) array, got shape {arr.shape}")
    if length < 2:
        raise ValueError(f"length: a window needs at least 2 samples, got {length}")
    if arr.shape[0] % length:
        raise ValueError(f"x: {arr.shape[0]} samples is not a whole number of windows of length {length}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def vibration_features(x: ArrayLike, length: int) -> VibrationFeatures:
    """Features of each consecutive window of `length` samples (time must be a multiple of `length`)."""
    arr = _check(x, length)
    out = np.empty((4, arr.shape[0] // length, arr.shape[1]), np.float64)
    if out.shape[1]:
        features_kernel(arr, length, out)
    return VibrationFeatures(out[0], out[1], out[2], out[3])


def reference_vibration_features(x: ArrayLike, length: int) -> VibrationFeatures:
    """Reference twin: the same features with NumPy reductions per window."""
    arr = _check(x, length)
    blocks = arr.reshape(arr.shape[0] // length, length, arr.shape[1])
    rms = np.sqrt(np.mean(blocks**2, axis=1))
    dev = blocks - blocks.mean(axis=1, keepdims=True)
    m2 = np.mean(dev**2, axis=1)
    m4 = np.mean(dev**4, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kurt = np.where(m2 > 0, m4 / np.where(m2 > 0, m2, 1.0) ** 2, np.nan)
        peak = np.max(np.abs(blocks), axis=1)
        crest = np.where(rms > 0, peak / np.where(rms > 0, rms, 1.0), np.nan)
    return VibrationFeatures(rms, kurt, crest, peak)
