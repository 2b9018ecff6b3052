"""Refused samples of known tags are kept whole in quarantine before the batch is acknowledged, and come back
through the API once the cause is fixed (real Mosquitto + PostgreSQL + the API over the same database)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import psycopg

from tests.support.apifixtures import bearer, make_client
from tests.support.db import count
from tests.support.spnode import SpNode, now_ms, wait_for
from zhizao.cloud.auth import create_token
from zhizao.cloud.ingest.service import IngestService
from zhizao.edge.samples import QUALITY_BAD

HOUR_MS = 3_600_000


def test_a_clock_an_hour_ahead_is_held_acknowledged_and_reingested_with_a_shift(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    make_service()
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 2})
    t0 = now_ms() - 60_000
    n = 50
    try:
        node.birth()
        wait_for(lambda: count(fresh_database, "SELECT count(*) FROM machines WHERE online") == 1, what="birth")
        for k in range(4):  # the device clock runs an hour ahead
            ts = t0 + HOUR_MS + k * n * 100 + np.arange(n, dtype=np.int64) * 100
            node.new_batch()
            node.ddata("m1", ts, np.arange(n) % 2, np.arange(n, dtype=np.float64) + k * n)
        node.new_batch()
        node.ddata("m1", np.array([t0 - 1000], np.int64), np.array([0]), np.array([-1.0]))  # closes batch 4
        wait_for(lambda: node.acks and max(node.acks) == 4, what="ack of batch 4")
        # Acknowledged means kept: every refused sample is in quarantine, nothing reached the time series.
        assert count(fresh_database, "SELECT count(*) FROM quarantine WHERE reason = 'future_timestamp'") == 4 * n
        assert count(fresh_database, "SELECT count(*) FROM samples s JOIN tags t USING (tag_id)"
                      " WHERE t.machine_id = 'm1' AND s.ts >= to_timestamp(%s / 1000.0)", t0) == 0  # fmt: skip
    finally:
        node.close()

    engineer = create_token(fresh_database, "engineer", unique_id, "eng")
    viewer = create_token(fresh_database, "viewer", unique_id, "view")
    with make_client(fresh_database) as client:
        r = client.get(f"/api/v1/quarantine?site={unique_id}", headers=bearer(viewer))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == 4 * n and body["by_reason"] == {"future_timestamp": 4 * n}
        assert len(body["samples"]) == 100 and body["samples"][0]["machine_id"] == "m1"
        assert client.get("/api/v1/quarantine?site=other-site", headers=bearer(viewer)).status_code == 404
        assert client.get("/api/v1/quarantine?site=Bad_Site", headers=bearer(viewer)).status_code in (400, 422)
        r = client.post("/api/v1/quarantine/reingest", json={"site": unique_id, "shift_ms": -HOUR_MS},
                        headers=bearer(viewer))  # fmt: skip
        assert r.status_code == 403
        # Without the shift nothing passes yet: everything stays held.
        r = client.post("/api/v1/quarantine/reingest", json={"site": unique_id}, headers=bearer(engineer))
        assert r.json() == {"site": unique_id, "moved": 0, "stored": 0, "remaining": 4 * n}
        r = client.post("/api/v1/quarantine/reingest",
                        json={"site": unique_id, "reason": "future_timestamp", "shift_ms": -HOUR_MS},
                        headers=bearer(engineer))  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json() == {"site": unique_id, "moved": 4 * n, "stored": 4 * n, "remaining": 0}
    with psycopg.connect(fresh_database) as conn:
        values = sorted(v for (v,) in conn.execute(
            "SELECT s.value FROM samples s JOIN tags t USING (tag_id) WHERE t.machine_id = 'm1'"
            " AND s.ts >= to_timestamp(%s / 1000.0)", [t0]).fetchall())  # fmt: skip
    assert values == [float(v) for v in range(4 * n)]
    # The plain-PostgreSQL rollups saw the re-ingested rows too: per minute, as many as the raw rows.
    since = "date_trunc('minute', to_timestamp(%s / 1000.0))"
    rolled = count(fresh_database, "SELECT coalesce(sum(count), 0) FROM samples_1m r JOIN tags t USING (tag_id)"
                    f" WHERE t.machine_id = 'm1' AND r.bucket >= {since}", t0)  # fmt: skip
    raw = count(fresh_database, "SELECT count(*) FROM samples s JOIN tags t USING (tag_id)"
                 f" WHERE t.machine_id = 'm1' AND date_trunc('minute', s.ts) >= {since}", t0)  # fmt: skip
    assert rolled == raw >= 4 * n
    assert count(fresh_database, "SELECT count(*) FROM audit_log WHERE action = 'quarantine.reingest'") == 2


def test_a_bad_quality_nan_is_stored_as_no_value_and_a_good_one_is_held(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    make_service()
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 2})
    t0 = now_ms() - 10_000
    try:
        node.birth()
        node.new_batch()
        node.ddata("m1", np.array([t0, t0 + 1, t0 + 2], np.int64), np.array([0, 0, 1]),
                   np.array([np.nan, 3.0, np.nan]), quality=np.array([QUALITY_BAD, 192, 192]))  # fmt: skip
        node.new_batch()
        node.ddata("m1", np.array([t0 + 3], np.int64), np.array([0]), np.array([4.0]))
        wait_for(lambda: node.acks and max(node.acks) == 1, what="ack of batch 1")
        with psycopg.connect(fresh_database) as conn:
            rows = conn.execute(
                "SELECT s.ts, s.value, s.quality FROM samples s JOIN tags t USING (tag_id)"
                " WHERE t.machine_id = 'm1' AND s.ts >= to_timestamp(%s / 1000.0) AND s.ts < to_timestamp(%s / 1000.0)"
                " ORDER BY s.ts", [t0, t0 + 3]).fetchall()  # fmt: skip
            held = conn.execute("SELECT reason, ts_ms FROM quarantine").fetchall()
        assert [(v, q) for _, v, q in rows] == [(None, QUALITY_BAD), (3.0, 192)]
        assert held == [("non_finite", t0 + 2)]
    finally:
        node.close()
