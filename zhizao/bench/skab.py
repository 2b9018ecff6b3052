"""The Skoltech Anomaly Benchmark (SKAB v0.9) read from a local checkout, scored by its published rules.

Our implementation of SKAB's outlier-detection evaluation (github waico/SKAB: `core/utils.py`
`load_preprocess_skab`, `core/metrics.py` `chp_score(metric="binary")`), not SKAB's code:

- The corpus is every `data/**/*.csv` except `anomaly-free` (34 files: valve1, valve2, other), `;`-separated,
  the 8 sensor columns, labels in `anomaly`.
- Each file is split without shuffling: the first 400 rows train, the rest are the test part.
- Predictions (0/1 per test row) are compared with `anomaly` row by row, counts summed over all files:
  F1 = TP / (TP + (FN + FP) / 2), FAR = FP / (FP + TN), MAR = FN / (FN + TP) (both in %).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
TRAIN_ROWS = 400

# The published leaderboard (SKAB README, outlier detection): F1, FAR %, MAR %.
PUBLISHED: dict[str, tuple[float, float, float]] = {
    "Conv-AE": (0.78, 13.55, 28.02),
    "MSET": (0.78, 39.73, 14.13),
    "T-squared+Q (PCA-based)": (0.76, 26.62, 24.92),
    "LSTM-AE": (0.74, 29.96, 25.92),
    "T-squared": (0.66, 19.21, 42.6),
    "LSTM-VAE": (0.56, 9.13, 55.03),
    "Vanilla LSTM": (0.54, 12.54, 59.53),
    "Vanilla AE": (0.39, 2.59, 75.15),
    "MSCRED": (0.36, 49.94, 69.88),
    "Isolation forest": (0.29, 2.56, 82.89),
    "Null detector": (0.0, 0.0, 100.0),
}


@dataclass(frozen=True)
class Experiment:
    """One SKAB file: its name, the sensor values (rows x 8) and the `anomaly` labels."""

    name: str
    values: F64
    anomaly: NDArray[np.bool_]

    @property
    def train(self) -> F64:
        """The training rows (the first 400)."""
        return self.values[:TRAIN_ROWS]

    @property
    def test_labels(self) -> NDArray[np.bool_]:
        """Labels of the test part (every row after the first 400)."""
        return self.anomaly[TRAIN_ROWS:]


def load_corpus(root: Path) -> list[Experiment]:
    """Every experiment of a SKAB checkout (or a sample laid out like one), sorted by name."""
    data = root / "data"
    files = sorted(p for p in data.rglob("*.csv") if "anomaly-free" not in p.parts)
    if not files:
        raise FileNotFoundError(f"--skab: no data/**/*.csv under {root} (a SKAB checkout?)")
    out = []
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        head = lines[0].split(";")
        if "anomaly" not in head:
            raise ValueError(f"--skab: {path} has no 'anomaly' column (columns {head})")
        sensors = [i for i, h in enumerate(head) if h not in ("datetime", "anomaly", "changepoint")]
        a = head.index("anomaly")
        rows = [ln.split(";") for ln in lines[1:] if ln]
        vals = np.array([[float(r[i]) for i in sensors] for r in rows], dtype=np.float64)
        lab = np.array([float(r[a]) == 1.0 for r in rows])
        out.append(Experiment(str(path.relative_to(data)), vals, lab))
    return out


@dataclass(frozen=True)
class Binary:
    """SKAB's binary metrics over a corpus, with the summed counts."""

    f1: float
    far: float
    mar: float
    tp: int
    tn: int
    fp: int
    fn: int


def binary_metrics(labels: list[NDArray[np.bool_]], predictions: list[NDArray[np.bool_]]) -> Binary:
    """F1, FAR % and MAR % with the counts summed over every file (SKAB's `chp_score(metric='binary')`)."""
    tp = tn = fp = fn = 0
    for y, p in zip(labels, predictions, strict=True):
        if y.shape != p.shape:
            raise ValueError(f"predictions: shape {p.shape} does not match labels {y.shape}")
        tp += int(np.count_nonzero(y & p))
        tn += int(np.count_nonzero(~y & ~p))
        fp += int(np.count_nonzero(~y & p))
        fn += int(np.count_nonzero(y & ~p))
    f1 = tp / (tp + (fn + fp) / 2) if tp + fn + fp else 0.0
    far = 100.0 * fp / (fp + tn) if fp + tn else 0.0
    mar = 100.0 * fn / (fn + tp) if fn + tp else 0.0
    return Binary(f1, far, mar, tp, tn, fp, fn)
