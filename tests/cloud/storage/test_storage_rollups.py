"""Plain-PostgreSQL rollups maintained by the service equal a direct SQL aggregate over `samples`.

Live batches take the optimistic path (aggregates computed in numpy), the replayed batch the
ON CONFLICT .. RETURNING path (aggregates of the inserted rows in SQL); both must agree with SQL.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import psycopg

from tests.support.spnode import T0, SpNode, wait_for
from zhizao.cloud.ingest.service import IngestService
from zhizao.cloud.storage.migrate import TimescaleHorizons

PLAIN = TimescaleHorizons(use_timescale=False)  # these rollups are the plain backend's (TimescaleDB: caggs)

DIRECT = """SELECT date_trunc(%(unit)s, ts, 'UTC') AS bucket, tag_id, min(value), max(value), avg(value),
    (array_agg(value ORDER BY ts DESC))[1], count(value)
FROM samples WHERE ts >= to_timestamp(%(t0)s / 1000.0) AND ts < to_timestamp(%(t0)s / 1000.0 + 86400)
GROUP BY 1, 2 ORDER BY 2, 1"""
ROLLUP = """SELECT bucket, tag_id, min, max, avg, last, count FROM {table}
WHERE bucket >= date_trunc(%(unit)s, to_timestamp(%(t0)s / 1000.0), 'UTC')
  AND bucket < to_timestamp(%(t0)s / 1000.0 + 86400) ORDER BY 2, 1"""


def test_rollups_match_a_direct_aggregate_after_out_of_order_and_replayed_batches(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    svc = make_service(horizons=PLAIN)
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 3})
    rng = np.random.default_rng(11)
    try:
        node.birth()
        wait_for(lambda: svc.stats()["nodes_online"] == 1, what="birth")
        sent = []
        # Spread over ~2.5 hours so minute and hour buckets both have several members; shuffled order.
        for _ in range(6):
            n = 300
            ts = T0 + np.sort(rng.choice(9_000_000, n, replace=False)).astype(np.int64)
            metric = rng.integers(0, 3, n)
            value = np.round(rng.normal(10, 3, n), 3)
            node.new_batch()
            node.ddata("m1", ts, metric, value)
            sent.append((ts, metric, value))
        ts, metric, value = sent[2]
        node.ddata("m1", ts, metric, value + 100, batch=3, historical=True)  # replay: conflicts, ignored
        node.new_batch()
        node.ddata(
            "m1", np.array([T0 + 500], np.int64), np.array([1]), np.array([-7.5])
        )  # late, older sample
        distinct = {(int(m), int(t)) for ts, metric, _ in sent for t, m in zip(ts, metric, strict=True)}
        expected = len(distinct | {(1, T0 + 500)})

        def stored() -> int:
            with psycopg.connect(fresh_database) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM samples WHERE ts >= to_timestamp(%s / 1000.0)"
                    " AND ts < to_timestamp(%s / 1000.0 + 86400)",
                    [T0, T0],
                ).fetchone()
                return int(row[0]) if row else -1

        wait_for(lambda: stored() == expected, what=f"{expected} distinct samples stored")
        # Rollups are merged in the same transaction as the rows: nothing to wait for.
        with psycopg.connect(fresh_database) as conn:
            for table, unit in (("samples_1m", "minute"), ("samples_1h", "hour")):
                params = {"unit": unit, "t0": T0}
                direct = conn.execute(DIRECT, params).fetchall()
                rolled = conn.execute(ROLLUP.format(table=table), params).fetchall()
                assert len(direct) == len(rolled) > 3, table
                for d, r in zip(direct, rolled, strict=True):
                    assert d[:4] == r[:4] and d[5:] == r[5:], (table, d, r)
                    assert abs(d[4] - r[4]) < 1e-9, (table, d, r)
    finally:
        node.close()


def test_refresh_rebuilds_rollups_of_bulk_loaded_history(fresh_database: str) -> None:
    from zhizao.cloud.storage.db import make_pool
    from zhizao.cloud.storage.migrate import apply_migrations
    from zhizao.cloud.storage.rollups import refresh

    apply_migrations(fresh_database, horizons=PLAIN)
    with psycopg.connect(fresh_database) as conn:
        conn.execute(
            "INSERT INTO samples (ts, tag_id, value) SELECT to_timestamp(%s / 1000.0) + i * interval '7 second',"
            " 1 + i %% 3, CASE WHEN i %% 11 = 0 THEN NULL ELSE sin(i) END FROM generate_series(0, 3000) AS i",
            [T0],
        )
    pool = make_pool(fresh_database, min_size=1, max_size=1)
    try:
        refresh(pool, np.array([1, 2, 3], np.int32), T0, T0 + 3001 * 7000)
    finally:
        pool.close()
    with psycopg.connect(fresh_database) as conn:
        for table, unit in (("samples_1m", "minute"), ("samples_1h", "hour")):
            params = {"unit": unit, "t0": T0}
            direct = conn.execute(DIRECT, params).fetchall()
            rolled = conn.execute(ROLLUP.format(table=table), params).fetchall()
            assert len(direct) == len(rolled) > 3, table
            for d, r in zip(direct, rolled, strict=True):
                assert d[:2] == r[:2] and d[5:] == r[5:], (table, d, r)
                for a, b in zip(d[2:5], r[2:5], strict=True):
                    assert (a is None and b is None) or abs(a - b) < 1e-9, (table, d, r)
