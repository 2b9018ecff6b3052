"""The detector bank: one kernel call per spec, results independent of how samples are cut into batches."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from zhizao.cloud.monitoring.detection import DetectorBank
from zhizao.cloud.monitoring.rules import DetectorParams

SPECS = [DetectorParams(detector="ewma_z", settings={"warmup": 20}), DetectorParams(detector="cusum", settings={"warmup": 20}),
         DetectorParams(detector="robust_z", settings={"window": 16}),
         DetectorParams(detector="value_novelty", settings={"warmup": 20})]


def _samples(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Five tags with their own irregular times and sample counts, a level shift in tag 2."""
    rng = np.random.default_rng(seed)
    tags, ts, vals = [], [], []
    for tag in range(1, 6):
        n = int(rng.integers(50, 300))
        t = np.cumsum(rng.integers(1, 5000, n)).astype(np.int64)
        v = rng.normal(10.0 * tag, 1.0, n)
        if tag == 2:
            v[n // 2:] += 8.0
        tags.append(np.full(n, tag, np.int32))
        ts.append(t)
        vals.append(v)
    return np.concatenate(tags), np.concatenate(ts), np.concatenate(vals)


@pytest.mark.parametrize("spec", SPECS, ids=[s.detector for s in SPECS])
def test_scores_do_not_depend_on_batching(spec: DetectorParams) -> None:
    tag, ts, val = _samples(3)
    whole = DetectorBank()
    for t in range(1, 6):
        whole.assign(t, spec)
    ref = whole.score(tag, ts, val).score
    assert whole.calls == 1  # five tags, one kernel call
    # The level shift stands out in each detector's own units (value novelty: distance over the learnt range).
    peak = 1.0 if spec.detector == "value_novelty" else 4.0
    assert np.isfinite(ref).sum() > 500 and np.nanmax(ref[tag == 2]) > peak

    cut = DetectorBank()
    for t in range(1, 6):
        cut.assign(t, spec)
    # Time slices across all tags (as the ingest commits them), each sorted by (tag, ts).
    edges = np.quantile(ts, np.linspace(0, 1, 9))
    got = np.full(ref.shape, np.nan)
    for lo, hi in itertools.pairwise(edges):
        sel = np.flatnonzero((ts >= lo) & ((ts < hi) | (hi == edges[-1])))
        sel = sel[np.lexsort((ts[sel], tag[sel]))]
        s = cut.score(tag[sel], ts[sel], val[sel])
        assert not s.late.any()
        got[sel] = s.score
    np.testing.assert_array_equal(got, ref)
    # State columns round-trip as persisted (bytes) and a replayed (late) sample leaves them untouched.
    _key, col, last, n = cut.column(2)
    again = DetectorBank()
    again.assign(2, spec, np.frombuffer(col.tobytes(), np.float64).copy(), last, n)
    late = again.score(np.array([2], np.int32), np.array([ts[tag == 2][0]], np.int64), np.array([50.0]))
    assert late.late.all()
    np.testing.assert_array_equal(again.column(2)[1], col)
