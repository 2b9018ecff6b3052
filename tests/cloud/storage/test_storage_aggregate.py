"""The numpy rollup aggregation (optimistic ingest path) against a plain-Python reference, nulls included."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from zhizao.cloud.storage.plain import aggregate


def reference(rows: list[tuple[int, int, float | None]], width: int) -> dict[tuple[int, int], tuple[object, ...]]:
    groups: dict[tuple[int, int], list[tuple[int, float | None]]] = {}
    for tag, ts, value in rows:
        groups.setdefault((tag, ts - ts % width), []).append((ts, value))
    out: dict[tuple[int, int], tuple[object, ...]] = {}
    for key, members in groups.items():
        values = [v for _, v in members if v is not None]
        last_ts, last = max(members, key=lambda m: m[0])
        out[key] = (
            min(values) if values else None, max(values) if values else None, sum(values), len(values), last, last_ts
        )
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.integers(0, 400_000), st.one_of(st.none(), st.floats(-1e6, 1e6))),
        min_size=1,
        max_size=80,
        unique_by=lambda r: (r[0], r[1]),
    ),
    st.sampled_from([60_000, 3_600_000]),
)
def test_aggregate_matches_reference(rows: list[tuple[int, int, float | None]], width: int) -> None:
    rows = sorted(rows, key=lambda r: (r[0], r[1]))
    tag = np.array([r[0] for r in rows], np.int32)
    ts = np.array([r[1] for r in rows], np.int64)
    null = np.array([r[2] is None for r in rows])
    value = np.array([math.nan if r[2] is None else r[2] for r in rows], np.float64)
    got = aggregate(tag, ts, value, null, width)
    expected = reference(rows, width)
    assert len(got[0]) == len(expected)
    for b, t, mn, mx, sm, c, lv, lt in zip(*(a.tolist() for a in got), strict=True):
        e_min, e_max, e_sum, e_count, e_last, e_last_ts = expected[(t, b)]
        assert (None if math.isnan(mn) else mn) == e_min and (None if math.isnan(mx) else mx) == e_max
        assert math.isclose(sm, e_sum, rel_tol=1e-12, abs_tol=1e-6) and c == e_count
        assert (None if math.isnan(lv) else lv) == e_last and lt == e_last_ts
