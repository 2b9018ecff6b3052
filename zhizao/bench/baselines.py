"""Baselines for `zhizao bench kernels`: the pandas/bottleneck code a user would write, and synthetic data."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from zhizao.analytics.oee.api import OeeInputs, prepare_oee_inputs
from zhizao.analytics.oee.config import OeeConfig

HOUR = 3_600_000
STOP_CODES = np.array([40000, 50000, 60000, 100000, 150000, 160000, 180000, 210000])


def synthetic_fleet(n_machines: int, states_per_machine: int, counts_per_machine: int,
                    hours: int = 24, seed: int = 0) -> OeeInputs:
    """A day of state changes and counter samples per machine, one shift calendar, hourly windows."""
    rng = np.random.default_rng(seed)
    span = hours * HOUR
    st_t = np.sort(rng.integers(0, span, size=(n_machines, states_per_machine)), axis=1)
    st_t[:, 0] = 0
    # Like a real line: running, then a stop with some reason, then running again.
    codes = rng.choice(STOP_CODES, size=(n_machines, states_per_machine))
    codes[:, 0::2] = rng.choice([10000, 10000, 10000, 20000], size=codes[:, 0::2].shape)
    c_t = np.sort(rng.integers(0, span, size=(n_machines, counts_per_machine)), axis=1)
    c_t[:, 0] = 0
    inc = rng.integers(0, 20, size=(n_machines, counts_per_machine))
    total = np.cumsum(inc, axis=1)
    good = np.cumsum(inc - (rng.random(inc.shape) < 0.02) * np.minimum(inc, 1), axis=1)
    n = n_machines
    w_start = np.tile(np.arange(hours, dtype=np.int64) * HOUR, n)
    return prepare_oee_inputs(
        state_offsets=np.arange(n + 1) * states_per_machine, state_time=st_t.ravel(), state_code=codes.ravel(),
        count_offsets=np.arange(n + 1) * counts_per_machine, count_time=c_t.ravel(),
        count_total=total.ravel(), count_good=good.ravel(),
        rate_offsets=np.arange(n + 1), rate_time=np.zeros(n, np.int64), rate_per_min=np.full(n, 600.0),
        plan_offsets=np.arange(n + 1) * 2, plan_start=np.tile([6 * HOUR, 14 * HOUR], n),
        plan_end=np.tile([13 * HOUR, 22 * HOUR], n),
        window_offsets=np.arange(n + 1) * hours, window_start=w_start, window_end=w_start + HOUR,
    )


def pandas_oee(a: OeeInputs, config: OeeConfig) -> Any:
    """OEE per machine and hour as a pandas user writes it (groupby); states are binned by their start."""
    import pandas as pd

    ranges, _, _ = config.tables()
    machine = np.repeat(np.arange(a.n_machines), np.diff(a.state_offsets))
    s = pd.DataFrame({"machine": machine, "t": a.state_time, "code": a.state_code})
    s["end"] = s.groupby("machine")["t"].shift(-1).fillna(24 * HOUR)
    s["dur"] = (s["end"] - s["t"]) / 1000.0
    s["cat"] = ranges[s["code"].to_numpy() // 10000]
    s["window"] = s["t"] // HOUR
    s["run"] = s["dur"].where(s["cat"] <= 2, 0.0)
    s["excluded"] = s["dur"].where(s["cat"] == 9, 0.0)
    times = s.groupby(["machine", "window"])[["run", "excluded", "dur"]].sum()
    cm = np.repeat(np.arange(a.n_machines), np.diff(a.count_offsets))
    c = pd.DataFrame({"machine": cm, "t": a.count_time, "total": a.count_total, "good": a.count_good})
    for col in ("total", "good"):
        d = c.groupby("machine")[col].diff()
        c["d_" + col] = d.where(d >= 0, c[col]).fillna(0)  # a decrease is a reset
    c["window"] = c["t"] // HOUR
    counts = c.groupby(["machine", "window"])[["d_total", "d_good"]].sum()
    df = times.join(counts, how="outer").fillna(0.0)
    planned = df["dur"] - df["excluded"]
    availability = df["run"] / planned
    performance = (df["d_total"] * 60.0 / 600.0 / df["run"]).clip(upper=1.0)
    quality = df["d_good"] / df["d_total"]
    df["oee"] = availability * performance * quality
    return df


def pandas_ewma_z(x: NDArray[np.float64], alpha: float, on: float) -> Any:
    """EWMA z-score with pandas ewm, scored against the previous mean/std."""
    import pandas as pd

    df = pd.DataFrame(x)
    ew = df.ewm(alpha=alpha)
    z = ((df - ew.mean().shift()) / ew.std(bias=True).shift()).abs()
    return z, z > on


def pandas_robust_z(x: NDArray[np.float64], window: int, on: float) -> Any:
    """Rolling median/IQR z-score with pandas rolling."""
    import pandas as pd

    df = pd.DataFrame(x)
    r = df.rolling(window)
    med = r.median().shift()
    iqr = (r.quantile(0.75) - r.quantile(0.25)).shift()
    z = (df - med).abs() / (iqr / 1.349)
    return z, z > on


def bottleneck_robust_z(x: NDArray[np.float64], window: int) -> Any:
    """bottleneck has the rolling median only (no quantiles): the median part of the robust detector."""
    import bottleneck as bn

    return bn.move_median(x, window, axis=0)


def pandas_features(x: NDArray[np.float64], length: int) -> Any:
    """Per-window RMS, kurtosis, crest factor and peak with pandas groupby."""
    import pandas as pd

    df = pd.DataFrame(x)
    key = np.arange(len(df)) // length
    rms = (df**2).groupby(key).mean() ** 0.5
    dev = df - df.groupby(key).transform("mean")
    m2 = (dev**2).groupby(key).mean()
    m4 = (dev**4).groupby(key).mean()
    peak = df.abs().groupby(key).max()
    return rms, m4 / m2**2, peak / rms, peak
