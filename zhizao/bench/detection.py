"""Detection quality on synthetic signals: false alarms on stationary noise, delay to flag the seeds' faults.

Signals are unit-variance Gaussian noise; faults start at `ONSET` (after every warm-up):
step (+3 sigma), drift (+0.01 sigma per sample: sensor drift, tool wear), variance (x3), jam bursts
(5 samples at +8 sigma), bearing wear (the kurtosis of 256-sample vibration windows, rising as
impulses appear), tool wear (spindle load and temperature drifting together: the multivariate case).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from zhizao.analytics.anomaly import Cusum, Detector, EwmaZ, MahalanobisT2, PcaT2Q, RobustZ, ValueNovelty
from zhizao.analytics.features import vibration_features

ONSET = 1000
HORIZON = 1000  # samples after the onset within which a detection counts


def default_detectors() -> list[Detector]:
    """The detectors with their default parameters (the multivariate ones over pairs of tags)."""
    return [EwmaZ(), EwmaZ(gate=6.0, name="ewma_z_gated"), Cusum(), RobustZ(), MahalanobisT2(dims=2),
            PcaT2Q(dims=2), ValueNovelty()]


def _as_input(det: Detector, x: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
    # A multivariate detector sees each signal next to an independent noise channel.
    if det.tags_per_output == 1:
        return x
    pair = np.empty((x.shape[0], 2 * x.shape[1]))
    pair[:, 0::2] = x
    pair[:, 1::2] = rng.normal(size=x.shape)
    return pair


def false_alarms_per_1e5(det: Detector, n_tags: int, n_time: int, seed: int = 0) -> float:
    """Alarm onsets per 100,000 scored samples of stationary unit noise."""
    rng = np.random.default_rng(seed)
    x = _as_input(det, rng.normal(size=(n_time, n_tags)), rng)
    alarms = det.update(det.init_state(x.shape[1]), x).alarms[ONSET:]
    onsets = int(np.count_nonzero(alarms[1:] & ~alarms[:-1]) + np.count_nonzero(alarms[0]))
    return onsets / alarms.size * 1e5


def _delays(det: Detector, x: NDArray[np.float64], rng: np.random.Generator) -> tuple[float, float]:
    # Median samples from the onset to the first alarm, and the fraction of series flagged in time.
    inp = _as_input(det, x, rng)
    alarms = det.update(det.init_state(inp.shape[1]), inp).alarms
    after = alarms[ONSET:ONSET + HORIZON]
    hit = after.any(axis=0)
    first = np.argmax(after, axis=0)
    delay = float(np.median(first[hit])) if hit.any() else float("nan")
    return delay, float(hit.mean())


def _bearing_kurtosis(n_windows: int, n_tags: int, rng: np.random.Generator) -> NDArray[np.float64]:
    # Raw vibration per 256-sample window; after the onset impulses grow in number: kurtosis rises.
    length = 256
    raw = rng.normal(size=(n_windows * length, n_tags))
    t = np.arange(n_windows * length) // length
    wear = np.clip((t - ONSET) / 400.0, 0.0, 1.0)
    impulses = rng.random(raw.shape) < (wear * 0.004)[:, None]
    raw += impulses * 6.0
    kurt = vibration_features(raw, length).kurtosis
    return np.asarray((kurt - 3.0) / np.sqrt(24.0 / length), dtype=np.float64)  # standardised: the estimator's noise is about 1


def detection_report(quick: bool = False, seed: int = 1) -> list[dict[str, Any]]:
    """One row per detector: false alarms per 1e5 samples and delay (samples) per fault profile."""
    n_tags = 16 if quick else 64
    n_noise = 4_000 if quick else 20_000
    n_time = ONSET + HORIZON
    rows = []
    for det in default_detectors():
        rng = np.random.default_rng(seed)
        t = np.arange(n_time)[:, None]
        after = t >= ONSET
        base = rng.normal(size=(n_time, n_tags))
        profiles = {
            "step": base + 3.0 * after,
            "drift": base + 0.01 * (t - ONSET) * after,
            "variance": base * np.where(after, 3.0, 1.0),
            "jam_burst": base + 8.0 * (after & (t < ONSET + 5)),
            "bearing_wear": _bearing_kurtosis(n_time, n_tags, rng),
        }
        row: dict[str, Any] = {
            "detector": det.name,
            "false_alarms_per_1e5": false_alarms_per_1e5(det, n_tags, ONSET + n_noise, seed),
        }
        for name, x in profiles.items():
            delay, frac = _delays(det, x, rng)
            row[f"{name}_delay"] = delay
            row[f"{name}_detected"] = frac
        # Tool wear: spindle load and temperature drift together (0.005 sigma per sample each).
        drift = 0.005 * (t - ONSET) * after
        load = base + drift
        temp = 0.6 * base + 0.8 * rng.normal(size=base.shape) + drift
        if det.tags_per_output == 2:
            pair = np.empty((n_time, 2 * n_tags))
            pair[:, 0::2], pair[:, 1::2] = load, temp
            alarms = det.update(det.init_state(pair.shape[1]), pair).alarms[ONSET:ONSET + HORIZON]
        else:
            alarms = det.update(det.init_state(n_tags), load).alarms[ONSET:ONSET + HORIZON]
        hit = alarms.any(axis=0)
        row["tool_wear_delay"] = float(np.median(np.argmax(alarms, axis=0)[hit])) if hit.any() else float("nan")
        row["tool_wear_detected"] = float(hit.mean())
        rows.append(row)
    return rows
