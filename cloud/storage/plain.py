"""Plain PostgreSQL backend: BRIN time indexes and rollup tables merged by each ingest transaction.

Rollups are kept exact and incremental: the transaction that inserts samples also merges exactly the
rows it inserted into `samples_1m` / `samples_1h` (min, max, sum, count, last by time). A replayed or
duplicate sample is never inserted, so it is never merged twice; merges commute, so concurrent writers
need no ordering. Buckets are UTC-aligned.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import psycopg

log = logging.getLogger(__name__)

ROLLUPS: dict[str, tuple[str, int]] = {"samples_1m": ("minute", 60_000), "samples_1h": ("hour", 3_600_000)}


def setup(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Create the plain-PostgreSQL objects (idempotent): BRIN indexes on ts, rollup tables."""
    # BRIN: samples arrive roughly in time order, so a tiny block-range index serves time-range scans;
    # the unique (tag_id, ts) btree from the core migration serves per-tag queries and ON CONFLICT.
    conn.execute("CREATE INDEX IF NOT EXISTS samples_ts_brin ON samples USING brin (ts)")
    conn.execute("CREATE INDEX IF NOT EXISTS samples_text_ts_brin ON samples_text USING brin (ts)")
    conn.execute("CREATE INDEX IF NOT EXISTS samples_int_ts_brin ON samples_int USING brin (ts)")
    for table in ROLLUPS:
        # sum and last_ts make merging exact: avg = sum / count, last = value at the greatest ts.
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            " bucket timestamptz NOT NULL, tag_id integer NOT NULL,"
            " min double precision, max double precision,"
            " sum double precision NOT NULL DEFAULT 0, count bigint NOT NULL DEFAULT 0,"
            " last double precision, last_ts timestamptz NOT NULL,"
            " avg double precision GENERATED ALWAYS AS (CASE WHEN count > 0 THEN sum / count END) STORED,"
            " PRIMARY KEY (tag_id, bucket))"
        )
        conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_bucket_brin ON {table} USING brin (bucket)")


def _merge_set(alias: str) -> str:
    return (
        f" ON CONFLICT (tag_id, bucket) DO UPDATE SET"
        f" min = least({alias}.min, excluded.min), max = greatest({alias}.max, excluded.max),"
        f" sum = {alias}.sum + excluded.sum, count = {alias}.count + excluded.count,"
        f" last = CASE WHEN excluded.last_ts > {alias}.last_ts THEN excluded.last ELSE {alias}.last END,"
        f" last_ts = greatest({alias}.last_ts, excluded.last_ts)"
    )


def merge_arrays_sql(table: str) -> str:
    """Upsert-merge one rollup from parallel arrays (bucket ms, tag, min, max, sum, count, last, last_ts ms)."""
    return (
        f"INSERT INTO {table} AS r (bucket, tag_id, min, max, sum, count, last, last_ts)"
        " SELECT 'epoch'::timestamptz + b * interval '1 millisecond', t, mn, mx, sm, c, l,"
        " 'epoch'::timestamptz + lt * interval '1 millisecond'"
        " FROM unnest(%s::bigint[], %s::integer[], %s::float8[], %s::float8[], %s::float8[], %s::bigint[],"
        " %s::float8[], %s::bigint[]) AS x(b, t, mn, mx, sm, c, l, lt)" + _merge_set("r")
    )


def merge_returning_ctes(source: str) -> str:
    """CTEs (each starting with a comma) merging the rows of CTE `source` (ts, tag_id, value) into rollups."""
    parts = []
    for table, (unit, _) in ROLLUPS.items():
        parts.append(
            f""", {table}_merge AS (
    INSERT INTO {table} AS r (bucket, tag_id, min, max, sum, count, last, last_ts)
    SELECT date_trunc('{unit}', ts, 'UTC'), tag_id, min(value), max(value), coalesce(sum(value), 0),
           count(value), (array_agg(value ORDER BY ts DESC))[1], max(ts)
    FROM {source} GROUP BY 1, 2{_merge_set("r")}
)"""
        )
    return "".join(parts)


RollupRows = tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float64], npt.NDArray[np.float64],
    npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64],
]


def aggregate(
    tag: npt.NDArray[np.int32],
    ts_ms: npt.NDArray[np.int64],
    value: npt.NDArray[np.float64],
    null: npt.NDArray[np.bool_],
    width_ms: int,
) -> RollupRows:
    """Per (tag, UTC bucket) aggregates of samples sorted by (tag, ts): one numpy pass, no Python loop."""
    bucket = ts_ms - ts_ms % width_ms
    n = len(tag)
    start = np.ones(n, np.bool_)
    start[1:] = (tag[1:] != tag[:-1]) | (bucket[1:] != bucket[:-1])
    first = np.flatnonzero(start)
    last = np.append(first[1:], n) - 1
    has = ~null
    counts = np.add.reduceat(has.astype(np.int64), first)
    sums = np.add.reduceat(np.where(has, value, 0.0), first)
    mins = np.minimum.reduceat(np.where(has, value, np.inf), first)
    maxs = np.maximum.reduceat(np.where(has, value, -np.inf), first)
    empty = counts == 0
    mins[empty] = np.nan
    maxs[empty] = np.nan
    lasts = np.where(null[last], np.nan, value[last])
    return bucket[first], tag[first], mins, maxs, sums, counts, lasts, ts_ms[last]


def merge_aggregates(cur: psycopg.Cursor[tuple[object, ...]], rows_by_table: dict[str, RollupRows]) -> None:
    """Upsert-merge precomputed aggregates (NaN min/max/last become NULL)."""
    for table, rows in rows_by_table.items():
        b, t, mn, mx, sm, c, lv, lt = rows
        params = [b.tolist(), t.tolist(), _nullable(mn), _nullable(mx), sm.tolist(), c.tolist(), _nullable(lv),
                  lt.tolist()]
        cur.execute(merge_arrays_sql(table), params)


def _nullable(a: npt.NDArray[np.float64]) -> list[float | None]:
    return [None if x != x else x for x in a.tolist()]
