"""The monitoring worker's per-batch kernels against their plain NumPy definitions: the sort and de-duplication of
a batch, the (rank, tag) matrix, the score COPY stream and the anomaly conditions on per-tag levels."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from zhizao.cloud.monitoring.conditions import Conditions
from zhizao.cloud.monitoring.copy import HEADER, PG_EPOCH_MS, TRAILER, scores_copy
from zhizao.cloud.monitoring.detection import _from_matrix, _to_matrix, sort_unique


def _lexsorted(tag: np.ndarray, ts: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.lexsort((ts, tag))
    tag, ts, val = tag[order], ts[order], val[order]
    keep = np.ones(tag.size, np.bool_)
    keep[1:] = (tag[1:] != tag[:-1]) | (ts[1:] != ts[:-1])
    return tag[keep], ts[keep], val[keep]


@pytest.mark.parametrize("times", ["in order", "any order", "sorted batch"])
def test_sort_unique_is_a_stable_lexsort_keeping_the_first_duplicate(times: str) -> None:
    rng = np.random.default_rng(5)
    for trial in range(200):
        n = int(rng.integers(1, 300))
        tag = (rng.integers(0, int(rng.integers(1, 30)), n) * int(rng.choice([1, 7, 1_000_003]))).astype(np.int32)
        ts = rng.integers(0, 40, n).astype(np.int64)  # few distinct times: many duplicates
        if times == "in order":
            ts = np.sort(ts)
        val = rng.normal(size=n)  # duplicates carry different values: which one is kept shows
        if times == "sorted batch":
            tag, ts, val = _lexsorted(tag, ts, val)
        got, want = sort_unique(tag, ts, val), _lexsorted(tag, ts, val)
        for i in range(3):
            assert np.array_equal(got[i], want[i]), (times, trial)


def test_matrix_round_trip_by_runs() -> None:
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 90, 300)  # more runs than one block, uneven lengths
    cols = np.repeat(np.arange(lengths.size, dtype=np.int64) * 3, lengths)
    values = rng.normal(size=cols.size)
    x, run_cols, bounds = _to_matrix(cols, values)
    assert x.shape == (lengths.max(), lengths.size)
    assert np.array_equal(run_cols, np.arange(lengths.size) * 3)
    for r, n in enumerate(lengths.tolist()):
        assert np.array_equal(x[:n, r], values[bounds[r]:bounds[r + 1]])
        assert np.isnan(x[n:, r]).all()
    assert np.array_equal(_from_matrix(bounds, x), values)


def _rows(stream: bytes) -> list[tuple[int, int, float | None, bool]]:
    assert stream[:len(HEADER)] == HEADER and stream[-len(TRAILER):] == TRAILER
    at, out = len(HEADER), []
    while at < len(stream) - len(TRAILER):
        (nf,) = struct.unpack_from(">h", stream, at)
        assert nf == 4
        at += 2
        fields = []
        for _ in range(4):
            (size,) = struct.unpack_from(">i", stream, at)
            at += 4
            fields.append(None if size < 0 else stream[at:at + size])
            at += max(size, 0)
        ts_b, tag_b, score_b, alarm_b = fields
        assert ts_b is not None and tag_b is not None and alarm_b is not None
        out.append((struct.unpack(">q", ts_b)[0] // 1000 + PG_EPOCH_MS, struct.unpack(">i", tag_b)[0],
                    None if score_b is None else struct.unpack(">d", score_b)[0], alarm_b == b"\x01"))
    assert at == len(stream) - len(TRAILER)
    return out


@pytest.mark.parametrize("nulls", [0.0, 0.4, 1.0])
def test_score_copy_rows(nulls: float) -> None:
    rng = np.random.default_rng(1)
    n = 500
    ts = rng.integers(-10**12, 4 * 10**12, n).astype(np.int64)
    tag = rng.integers(1, 2**31 - 1, n).astype(np.int32)
    score = rng.normal(0.0, 5.0, n)
    score[rng.random(n) < nulls] = np.nan
    alarm = rng.random(n) < 0.5
    rows = _rows(bytes(scores_copy(ts, tag, score, alarm)))
    assert rows == [(int(t), int(g), None if s != s else float(s), bool(a))
                    for t, g, s, a in zip(ts, tag, score, alarm, strict=True)]


def test_levels_equal_the_general_condition_run() -> None:
    """`run_levels` (one pass over a batch's scores) moves the conditions as `run` over the scored samples."""
    rng = np.random.default_rng(4)
    n_tags = 6
    tag = np.repeat(np.arange(1, n_tags + 1, dtype=np.int32), 400)
    ts = np.tile(np.arange(400, dtype=np.int64) * 1000, n_tags)
    score = np.abs(rng.normal(0.0, 4.0, tag.size))
    score[rng.random(tag.size) < 0.1] = np.nan
    late = rng.random(tag.size) < 0.05
    on, off = np.full(16, 6.0), np.full(16, 3.0)
    on_delay = np.full(16, 2000, np.int64)
    off_delay = np.full(16, 5000, np.int64)
    fast, slow = Conditions(), Conditions()
    keys = np.full(16, -1, np.int64)
    assert fast.run_levels(tag, ts, score, late, on, off, on_delay, off_delay, keys) is None  # no keys yet
    keys[1:n_tags + 1] = fast.ids([f"anomaly:{t}" for t in range(1, n_tags + 1)])
    slow.ids([f"anomaly:{t}" for t in range(1, n_tags + 1)])
    ev = fast.run_levels(tag, ts, score, late, on, off, on_delay, off_delay, keys)
    assert ev is not None
    pos = np.flatnonzero(~late & np.isfinite(score))
    g = tag[pos]
    ref = slow.run(keys[g], ts[pos], score[pos] > on[g], score[pos] < off[g], on_delay[g], off_delay[g])
    assert np.count_nonzero(ref) > 10  # raised and cleared many times
    assert np.array_equal(ev[pos], ref) and not ev[np.setdiff1d(np.arange(tag.size), pos)].any()
    assert fast.touched == slow.touched
    for a, b in ((fast.active, slow.active), (fast.on_since, slow.on_since), (fast.off_since, slow.off_since)):
        assert np.array_equal(a, b)
