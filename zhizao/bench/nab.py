"""The Numenta Anomaly Benchmark (NAB) read from a local checkout, scored by its published rules.

This is our implementation of NAB's scoring (NAB 1.x, `nab/sweeper.py`, `nab/optimizer.py`, `nab/runner.py`
of github numenta/NAB), in NumPy, not NAB's code; `tests/bench/test_detect.py` holds it to NAB's own
published results (`results/<detector>/*.csv` scored to `results/final_results.json`). The rules:

- The corpus is `data/**/*.csv` (timestamp, value) with the anomaly windows of `labels/combined_windows.json`;
  the profiles (cost matrices) are `config/profiles.json`.
- The first `min(floor(0.15 n), 0.15 * 5000)` rows of a file are probationary: not scored.
- A row inside a window weighs `tpWeight * S(p) / S(-1)` with `S(p) = 2 sigmoid(-5 p) - 1` and
  `p = -(right - i + 1) / width` (earlier in the window is worth more); a row outside every window weighs
  `fpWeight * S(p)` with `p = (i - right of the previous window) / (width of that window - 1)`
  (`S = -1` past `p > 3`, and `-1` before the first window).
- A detection is a row with anomaly score >= the threshold. Per window, only the best (earliest) detection
  counts; a window without one costs `-fnWeight`; every detection outside windows adds its (negative) weight.
- The optimizer sweeps every threshold (each distinct score) over the whole corpus and keeps the best total.
- Normalised score = 100 (raw - null) / (perfect - null): null is the best total of a detector that gives
  every row the same score (it never detects: `-fnWeight * windows`), perfect is `tpWeight * windows`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

PROBATION = 0.15
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")

# The published scoreboard (NAB results/final_results.json, as in NAB's README): standard, low FP, low FN.
PUBLISHED: dict[str, tuple[float, float, float]] = {
    "ARTime": (74.9, 65.1, 80.4),
    "Numenta HTM": (70.5, 62.6, 75.2),
    "CAD OSE": (69.9, 67.0, 73.2),
    "earthgecko Skyline": (58.2, 46.2, 63.9),
    "KNN CAD": (58.0, 43.4, 64.8),
    "Relative Entropy": (54.6, 47.6, 58.8),
    "Random Cut Forest": (51.7, 38.4, 59.7),
    "Twitter ADVec": (47.1, 33.6, 53.5),
    "Windowed Gaussian": (39.6, 20.9, 47.4),
    "Bayesian Changepoint": (17.7, 3.2, 32.2),
    "Null": (0.0, 0.0, 0.0),
}


@dataclass(frozen=True)
class Series:
    """One NAB data file: its name (relative path), values, and the row ranges [lo, hi] of its windows."""

    name: str
    timestamps: NDArray[np.datetime64]
    values: F64
    windows: tuple[tuple[int, int], ...]

    @property
    def probation(self) -> int:
        """Rows at the start that NAB does not score (its probationary period)."""
        return probationary_length(len(self.values))


def probationary_length(n: int) -> int:
    """NAB's probationary period for a file of `n` rows."""
    return int(min(math.floor(PROBATION * n), PROBATION * 5000))


def _read_csv(path: Path) -> tuple[NDArray[np.datetime64], F64]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    ts = np.array([ln.split(",", 1)[0] for ln in lines if ln], dtype="datetime64[s]")
    vals = np.array([float(ln.split(",", 2)[1]) for ln in lines if ln], dtype=np.float64)
    return ts, vals


def load_corpus(root: Path) -> list[Series]:
    """Every data file of a NAB checkout (or a sample laid out like one), with its labelled windows."""
    labels_path = root / "labels" / "combined_windows.json"
    data = root / "data"
    if not labels_path.is_file() or not data.is_dir():
        raise FileNotFoundError(f"--nab: {root} has no labels/combined_windows.json and data/ (a NAB checkout?)")
    labels: dict[str, list[list[str]]] = json.loads(labels_path.read_text(encoding="utf-8"))
    out = []
    for name in sorted(labels):
        path = data / name
        if not path.is_file():
            continue
        ts, vals = _read_csv(path)
        wins = []
        for lo, hi in labels[name]:
            a = int(np.searchsorted(ts, np.datetime64(lo.split(".")[0], "s")))
            b = int(np.searchsorted(ts, np.datetime64(hi.split(".")[0], "s")))
            wins.append((a, min(b, len(ts) - 1)))
        out.append(Series(name, ts, vals, tuple(wins)))
    if not out:
        raise FileNotFoundError(f"--nab: no data file of labels/combined_windows.json is under {data}")
    return out


def load_profiles(root: Path) -> dict[str, dict[str, float]]:
    """The cost matrices of `config/profiles.json`."""
    raw = json.loads((root / "config" / "profiles.json").read_text(encoding="utf-8"))
    return {name: {k: float(v) for k, v in raw[name]["CostMatrix"].items()} for name in PROFILES}


def _scaled_sigmoid(p: F64) -> F64:
    return np.where(p > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * p)) - 1.0)


@dataclass(frozen=True)
class Sweep:
    """Per scored row of the corpus: unweighted sweep value, window id (-1: outside) and whether it is a TP row."""

    unweighted: F64
    window: NDArray[np.int64]
    n_windows: int  # windows with at least one scored row


def sweep_rows(corpus: list[Series]) -> Sweep:
    """The unweighted NAB value of every non-probationary row, and the window each row falls in."""
    vals, wins = [], []
    n_win = 0
    for s in corpus:
        n = len(s.values)
        i = np.arange(n)
        u = np.full(n, -1.0)
        w = np.full(n, -1, np.int64)
        prev_right, prev_width = -1, 0.0
        start = 0
        file_windows = 0
        for lo, hi in s.windows:
            # Rows after the previous window and before this one: false positives, graded by distance.
            seg = slice(start, lo)
            if prev_right >= 0:
                u[seg] = _scaled_sigmoid(np.abs(prev_right - i[seg]) / (prev_width - 1.0))
            width = float(hi - lo + 1)
            u[lo:hi + 1] = _scaled_sigmoid(-(hi - i[lo:hi + 1] + 1) / width)
            w[lo:hi + 1] = n_win + file_windows
            file_windows += 1
            prev_right, prev_width, start = hi, width, hi + 1
        if prev_right >= 0:
            u[start:] = _scaled_sigmoid(np.abs(prev_right - i[start:]) / (prev_width - 1.0))
        keep = slice(s.probation, n)
        vals.append(u[keep])
        wins.append(w[keep])
        n_win += file_windows
    window = np.concatenate(wins)
    scored = np.unique(window[window >= 0])
    # Renumber the windows that have scored rows 0..k-1 (a window inside the probation is not counted).
    remap = np.full(n_win + 1, -1, np.int64)
    remap[scored] = np.arange(scored.size)
    return Sweep(np.concatenate(vals), np.where(window >= 0, remap[window], -1), int(scored.size))


@dataclass(frozen=True)
class Result:
    """The optimizer's best threshold for one profile, the raw and normalised score, and its counts."""

    profile: str
    threshold: float
    raw: float
    normalised: float
    detected_windows: int
    false_positive_rows: int


def optimise(sweep: Sweep, scores: F64, cost: dict[str, float]) -> tuple[float, float]:
    """NAB's threshold sweep over the corpus; returns (threshold, raw score) of the best threshold."""
    tp_w, fp_w, fn_w = cost["tpWeight"], cost["fpWeight"], cost["fnWeight"]
    max_tp = 2.0 / (1.0 + math.exp(-5.0)) - 1.0
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    win = sweep.window[order]
    u = sweep.unweighted[order]
    inside = win >= 0
    weighted = np.where(inside, u * tp_w / max_tp, u * fp_w)
    # Each row's change of the total when it becomes a detection: FP rows add their weight; a window row
    # lifts its window from its best so far (initially -fnWeight) to its own value if higher.
    delta = np.where(inside, 0.0, weighted)
    best = np.full(sweep.n_windows, -fn_w)
    idx = np.flatnonzero(inside)
    for k, wv, val in zip(idx.tolist(), win[idx].tolist(), weighted[idx].tolist(), strict=True):
        if val > best[wv]:
            delta[k] = val - best[wv]
            best[wv] = val
    total = -fn_w * sweep.n_windows + np.cumsum(delta)
    # A threshold equal to a row's score detects every row >= it: evaluate at the end of each run of ties.
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    cand = total[ends]
    k = int(np.argmax(cand)) if cand.size else 0
    never = -fn_w * sweep.n_windows
    if not cand.size or cand[k] <= never:
        return 1.1, never
    return float(s[ends[k]]), float(cand[k])


def score_at(sweep: Sweep, scores: F64, cost: dict[str, float], threshold: float) -> tuple[float, int, int]:
    """NAB's scoring step at a given threshold: (raw score, detections inside windows, detections outside)."""
    tp_w, fp_w, fn_w = cost["tpWeight"], cost["fpWeight"], cost["fnWeight"]
    max_tp = 2.0 / (1.0 + math.exp(-5.0)) - 1.0
    det = scores >= threshold
    inside = sweep.window >= 0
    raw = float(np.sum(sweep.unweighted[det & ~inside]) * fp_w)
    best = np.full(sweep.n_windows, -fn_w)
    hits = det & inside
    np.maximum.at(best, sweep.window[hits], sweep.unweighted[hits] * tp_w / max_tp)
    return raw + float(best.sum()), int(np.count_nonzero(hits)), int(np.count_nonzero(det & ~inside))


def score_corpus(corpus: list[Series], scores: list[F64], profiles: dict[str, dict[str, float]]) -> list[Result]:
    """Optimise and normalise one detector's scores (one array per series, values in [0, 1]) per profile."""
    sweep = sweep_rows(corpus)
    flat = np.concatenate([np.nan_to_num(sc[s.probation:], nan=0.0) for s, sc in zip(corpus, scores, strict=True)])
    total_windows = sum(len(s.windows) for s in corpus)
    out = []
    for name, cost in profiles.items():
        thr, raw = optimise(sweep, flat, cost)
        null = -cost["fnWeight"] * sweep.n_windows
        perfect = cost["tpWeight"] * total_windows
        det = flat >= thr
        hit = np.unique(sweep.window[det & (sweep.window >= 0)]).size
        fp = int(np.count_nonzero(det & (sweep.window < 0)))
        out.append(Result(name, thr, raw, 100.0 * (raw - null) / (perfect - null), hit, fp))
    return out


def published_results(root: Path, detector: str) -> Iterator[tuple[Series, F64]]:
    """The anomaly scores NAB's repository ships for `detector` (results/<detector>/<dir>/<detector>_<file>)."""
    for s in load_corpus(root):
        d, f = s.name.split("/")
        path = root / "results" / detector / d / f"{detector}_{f}"
        lines = path.read_text(encoding="utf-8").splitlines()
        col = lines[0].split(",").index("anomaly_score")
        yield s, np.array([float(ln.split(",")[col]) for ln in lines[1:] if ln])
