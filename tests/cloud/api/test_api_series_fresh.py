"""/api/v1/series: the newest buckets come from raw samples while rollups catch up (they are refreshed later)."""

from __future__ import annotations

import time

import psycopg

from tests.support.apifixtures import T0_MS, Cluster, Tokens, bearer, make_client

HOUR = 3_600_000



def test_recent_buckets_come_from_raw_samples(cluster: Cluster, tokens: Tokens) -> None:
    with psycopg.connect(cluster.url) as conn:
        conn.execute("UPDATE samples_1m SET max = -1")  # mark every rolled-up minute
    with psycopg.connect(cluster.url) as conn:
        expected = conn.execute(
            "SELECT floor(extract(epoch FROM date_trunc('minute', ts)) * 1000)::int8, max(value) FROM samples"
            " WHERE tag_id = %s GROUP BY 1 ORDER BY 1", [cluster.temp_a]).fetchall()
    params = {"tag_id": cluster.temp_a, "start": T0_MS, "end": T0_MS + 2 * HOUR, "bucket": "1m", "agg": "max"}
    with make_client(cluster.url) as client:  # everything is older than the lag: all from the rollup
        body = client.get("/api/v1/series", params=params, headers=bearer(tokens.viewer_a)).json()
        assert body["source"] == "samples_1m" and set(body["points"]["max"]) == {-1}
    # A lag that puts the boundary at T0 + 1 h: the first hour from the rollup, the second from raw samples.
    lag_s = (time.time() * 1000 - (T0_MS + HOUR)) / 1000
    with make_client(cluster.url, series_rollup_lag_s=lag_s) as client:
        body = client.get("/api/v1/series", params=params, headers=bearer(tokens.viewer_a)).json()
    assert body["points"]["max"][:60] == [-1] * 60
    assert body["points"]["max"][60:] == [r[1] for r in expected[60:]]
    assert body["points"]["ts"] == [r[0] for r in expected]
