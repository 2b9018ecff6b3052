"""/api/v1/series: raw and bucketed answers equal to SQL over the same rows, paging, limits, errors."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.support.apifixtures import (
    N_SAMPLES,
    T0_MS,
    Cluster,
    Tokens,
    bearer,
    fill_cluster,
    make_client,
    make_tokens,
    scratch_database,
)
from zhizao.cloud.storage import apply_migrations
from zhizao.cloud.storage.migrate import TimescaleHorizons

HOUR = 3_600_000


# These tests only read: one filled database serves the whole module.
@pytest.fixture(scope="module")
def cluster(database_url: str) -> Iterator[Cluster]:
    """The filled two-site database, shared by this module."""
    with scratch_database(database_url) as url:
        apply_migrations(url, horizons=TimescaleHorizons(use_timescale=False))  # the fixture writes rollup rows
        yield fill_cluster(url)


@pytest.fixture(scope="module")
def tokens(cluster: Cluster) -> Tokens:
    """Tokens for the shared database."""
    return make_tokens(cluster.url)


@pytest.fixture(scope="module")
def client(cluster: Cluster) -> Iterator[TestClient]:
    """One app for the module."""
    with make_client(cluster.url) as c:
        yield c


def _sql_buckets(url: str, tag: int, width_s: int, start_ms: int, end_ms: int) -> list[tuple[Any, ...]]:
    """The reference: date_bin straight over samples."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT floor(extract(epoch FROM b) * 1000)::int8, min(value), max(value), avg(value),"
            " (array_agg(value ORDER BY ts DESC))[1], count(value) FROM ("
            "  SELECT date_bin(make_interval(secs => %s), ts, '1970-01-01Z') AS b, ts, value FROM samples"
            "  WHERE tag_id = %s AND ts >= to_timestamp(%s / 1000.0) AND ts < to_timestamp(%s / 1000.0)) s"
            " GROUP BY b ORDER BY b",
            [width_s, tag, start_ms, end_ms],
        ).fetchall()


def _get(client: TestClient, token: str, **params: Any) -> Any:
    r = client.get("/api/v1/series", params=params, headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()


def test_raw_page_matches_the_rows(client: TestClient, cluster: Cluster, tokens: Tokens) -> None:
    body = _get(client, tokens.viewer_a, tag_id=cluster.temp_a, start=T0_MS, end=T0_MS + 10_000)
    assert body["source"] == "raw" and body["bucket_ms"] is None and body["next_cursor"] is None
    pts = body["points"]
    assert pts["ts"] == [T0_MS + i * 1000 for i in range(10)]
    assert pts["value"] == [(i % 97) * 0.5 + i / 60.0 for i in range(10)]
    assert pts["quality"] == [192] * 10
    assert body["tag"]["name"] == "Temperature/Spindle"


def test_tag_by_site_machine_name(client: TestClient, cluster: Cluster, tokens: Tokens) -> None:
    body = _get(client, tokens.viewer_a, site="site-a", machine="m1", name="Temperature/Spindle",
                start="2026-01-01T00:00:00Z", end="2026-01-01T08:00:05+08:00")
    assert body["tag"]["tag_id"] == cluster.temp_a
    assert len(body["points"]["ts"]) == 5
    node = _get(client, tokens.viewer_a, site="site-a", edge_node="line-1", name="Node/Uptime",
                start=T0_MS, end=T0_MS + HOUR)
    assert node["tag"]["tag_id"] == cluster.node_a and node["points"]["ts"] == []


def test_raw_paging_walks_every_row_once(client: TestClient, cluster: Cluster, tokens: Tokens) -> None:
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"tag_id": cluster.temp_a, "start": T0_MS, "end": T0_MS + 2 * HOUR, "limit": 1000}
        if cursor:
            params["cursor"] = cursor
        body = _get(client, tokens.viewer_a, **params)
        seen += body["points"]["ts"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == math.ceil(N_SAMPLES / 1000)
    assert seen == [T0_MS + i * 1000 for i in range(N_SAMPLES)]


@pytest.mark.parametrize("source", ["raw", "samples_1m", "auto"])
@pytest.mark.parametrize("bucket,width_s", [("1m", 60), ("5m", 300), ("1h", 3600)])
def test_buckets_match_sql(
    client: TestClient, cluster: Cluster, tokens: Tokens, source: str, bucket: str, width_s: int
) -> None:
    # The request starts and ends off the bucket grid; the answer widens to whole buckets.
    start, end = T0_MS + 30_000, T0_MS + 2 * HOUR - 30_000
    body = _get(client, tokens.viewer_a, tag_id=cluster.temp_a, start=start, end=end, bucket=bucket, source=source)
    width = width_s * 1000
    assert body["bucket_ms"] == width
    assert body["start"] == start // width * width and body["end"] == -(-end // width) * width
    if source == "auto":
        assert body["source"] == ("samples_1h" if width_s == 3600 else "samples_1m")
    else:
        assert body["source"] == source
    expected = _sql_buckets(cluster.url, cluster.temp_a, width_s, body["start"], body["end"])
    pts = body["points"]
    assert pts["ts"] == [r[0] for r in expected]
    assert pts["min"] == [r[1] for r in expected]
    assert pts["max"] == [r[2] for r in expected]
    assert pts["avg"] == pytest.approx([r[3] for r in expected], rel=1e-12)
    assert pts["last"] == [r[4] for r in expected]
    assert pts["count"] == [r[5] for r in expected]


def test_bucket_paging_and_selected_aggregates(client: TestClient, cluster: Cluster, tokens: Tokens) -> None:
    params = {"tag_id": cluster.temp_a, "start": T0_MS, "end": T0_MS + 2 * HOUR, "bucket": "1m",
              "agg": "max,count", "limit": 50}
    first = _get(client, tokens.viewer_a, **params)
    assert set(first["points"]) >= {"ts", "max", "count"} and first["points"]["min"] is None
    second = _get(client, tokens.viewer_a, **params, cursor=first["next_cursor"])
    third = _get(client, tokens.viewer_a, **params, cursor=second["next_cursor"])
    ts = first["points"]["ts"] + second["points"]["ts"] + third["points"]["ts"]
    assert ts == [T0_MS + i * 60_000 for i in range(120)]
    assert third["next_cursor"] is None
    # Every 500th sample is NULL: 499, 999, ..., 2999 fall in the first 50 minutes and are not counted.
    assert sum(first["points"]["count"]) == 50 * 60 - 6


def test_text_tags_are_raw_only(client: TestClient, cluster: Cluster, tokens: Tokens) -> None:
    body = _get(client, tokens.viewer_a, tag_id=cluster.text_a, start=T0_MS, end=T0_MS + HOUR)
    assert body["points"]["value"] == ["idle", "running"]
    r = client.get("/api/v1/series", params={"tag_id": cluster.text_a, "start": T0_MS, "end": T0_MS + HOUR,
                                             "bucket": "1m"}, headers=bearer(tokens.viewer_a))
    assert r.status_code == 400 and r.json()["error"]["field"] == "bucket"


@pytest.mark.parametrize(
    "params,field,value,fragment",
    [
        ({"start": T0_MS + HOUR, "end": T0_MS}, "start", str(T0_MS + HOUR), "must be before end"),
        ({"start": "yesterday"}, "start", "yesterday", "not a time"),
        ({"start": "2026-01-01T00:00:00"}, "start", "2026-01-01T00:00:00", "without a zone"),
        ({"start": T0_MS, "end": T0_MS + 500 * 86_400_000}, "end", str(T0_MS + 500 * 86_400_000), "over the limit"),
        ({"limit": 1_000_000}, "limit", 1_000_000, "points per page must be 1..100000"),
        ({"limit": 0}, "limit", 0, "points per page"),
        ({"limit": "many"}, "limit", "many", "valid integer"),
        ({"bucket": "1s", "start": T0_MS, "end": T0_MS + 86_400_000}, "bucket", "1s", "86400 buckets"),
        ({"bucket": "fortnight"}, "bucket", "fortnight", "not a bucket width"),
        ({"bucket": "500ms"}, "bucket", "500ms", "at least 1s"),
        ({"bucket": "1m", "agg": "median"}, "agg", "median", "unknown aggregate 'median'"),
        ({"agg": "min"}, "agg", "min", "need a bucket"),
        ({"cursor": "%%%"}, "cursor", "%%%", "not a cursor"),
        ({"source": "samples_1d", "bucket": "1m"}, "source", "samples_1d", "should match pattern"),
    ],
)
def test_bad_parameters_name_field_and_value(
    client: TestClient, cluster: Cluster, tokens: Tokens, params: dict[str, Any], field: str, value: Any,
    fragment: str,
) -> None:
    r = client.get("/api/v1/series", params={"tag_id": cluster.temp_a, **params}, headers=bearer(tokens.viewer_a))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["field"], error["value"]) == (field, value)
    assert error["message"].startswith(f"{field}={value!r}: ")
    assert fragment in error["message"]


def test_a_cursor_of_another_tag_is_refused(client: TestClient, cluster: Cluster, tokens: Tokens) -> None:
    first = _get(client, tokens.admin_all, tag_id=cluster.temp_b, start=T0_MS, end=T0_MS + HOUR, limit=10)
    r = client.get("/api/v1/series", params={"tag_id": cluster.temp_a, "start": T0_MS, "end": T0_MS + HOUR,
                                             "cursor": first["next_cursor"]}, headers=bearer(tokens.admin_all))
    assert r.status_code == 400 and "another tag" in r.json()["error"]["message"]


def test_tag_selection_errors(client: TestClient, tokens: Tokens) -> None:
    r = client.get("/api/v1/series", params={"site": "site-a", "name": "Temperature/Spindle"},
                   headers=bearer(tokens.viewer_a))
    assert r.status_code == 400 and r.json()["error"]["field"] == "tag_id"
    r = client.get("/api/v1/series", params={"site": "site-a", "machine": "m1", "name": "Nope"},
                   headers=bearer(tokens.viewer_a))
    assert r.status_code == 404 and r.json()["error"]["message"] == "tag 'site-a/m1/Nope' not found"


def test_limits_come_from_settings(cluster: Cluster, tokens: Tokens) -> None:
    with make_client(cluster.url, series_max_points=100, series_max_range_days=1.0) as client:
        r = client.get("/api/v1/series", params={"tag_id": cluster.temp_a, "limit": 101},
                       headers=bearer(tokens.viewer_a))
        assert r.json()["error"]["message"] == "limit=101: points per page must be 1..100"
        r = client.get("/api/v1/series", params={"tag_id": cluster.temp_a, "start": T0_MS,
                                                 "end": T0_MS + 2 * 86_400_000}, headers=bearer(tokens.viewer_a))
        assert r.status_code == 400 and "limit of 1 days" in r.json()["error"]["message"]

