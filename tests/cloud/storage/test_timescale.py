"""The TimescaleDB path against a real TimescaleDB server (ZHIZAO_TEST_TIMESCALE_URL; see the README).

Hypertables, compression and policies as configured; samples through the Sparkplug ingest come back from
/api/v1/series with the same figures as on plain PostgreSQL; rows older than the refresh policies look
back reach the continuous aggregates; a database that started on plain PostgreSQL keeps every row when
it is converted at a restart; setup is idempotent. Policy jobs are run with `run_job` where a test needs
them, so nothing waits for the TimescaleDB scheduler.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.support.spnode import T0, SpNode, wait_for
from zhizao.cloud.api import create_app
from zhizao.cloud.auth import create_token
from zhizao.cloud.ingest.service import IngestService
from zhizao.cloud.ingest.settings import IngestSettings
from zhizao.cloud.settings import CloudSettings
from zhizao.cloud.storage.db import StorageError
from zhizao.cloud.storage.migrate import TimescaleHorizons, apply_migrations
from zhizao.cloud.storage.timescale import refresh_aggregates

PLAIN = TimescaleHorizons(use_timescale=False)
HOUR = 3_600_000
HIST_SPAN = 3 * HOUR  # historical block: T0 .. T0 + 3 h (2026-01-01, far older than any lookback)


def _one(url: str, query: str, params: list[Any] | None = None) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params or []).fetchone()
        assert row is not None
        return row[0]


def _unless_busy(fn: Callable[[], object]) -> None:
    """Call `fn`, again while the scheduler refreshes the same aggregate (TimescaleDB allows one at a time)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            fn()
            return
        except psycopg.errors.LockNotAvailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _run_policies(url: str) -> None:
    """Run the refresh policies now, as the scheduler would (moves the watermark to now - 1 bucket)."""
    with psycopg.connect(url, autocommit=True) as conn:
        jobs = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'"
        ).fetchall()
        assert len(jobs) == 2
        for (job,) in jobs:

            def run(j: object = job) -> None:
                conn.execute("CALL run_job(%s)", [j])

            _unless_busy(run)


@contextmanager
def _ingest(
    url: str, mqtt_url: str, site: str, horizons: TimescaleHorizons | None = None
) -> Iterator[IngestService]:
    settings = IngestSettings(batch_max_ms=50, sites=(site,), horizons=horizons or TimescaleHorizons())
    svc = IngestService(url, mqtt_url, host_id=f"host-{uuid.uuid4().hex[:8]}", settings=settings)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@contextmanager
def _node(mqtt_url: str, site: str) -> Iterator[SpNode]:
    """A test edge node, made once the ingest is online (its subscriptions are in place by then)."""
    node = SpNode(mqtt_url, site, "line-1", {"m1": 3})
    try:
        yield node
    finally:
        node.close()


@contextmanager
def _api(url: str) -> Iterator[TestClient]:
    token = create_token(url, "viewer", "*", "timescale test")
    with TestClient(create_app(CloudSettings(database_url=url))) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def _signal(seed: int, start_ms: int, span_ms: int, step_ms: int, metrics: int = 3) -> tuple[np.ndarray, ...]:
    """Samples of `metrics` metrics every `step_ms` (jittered, distinct per metric), bumpy values."""
    rng = np.random.default_rng(seed)
    base = np.arange(start_ms, start_ms + span_ms, step_ms, dtype=np.int64)
    ts = np.concatenate([base + rng.integers(0, step_ms // 2, len(base)) for _ in range(metrics)])
    metric = np.repeat(np.arange(metrics), len(base))
    value = np.round(rng.normal(50, 12, len(ts)), 4)
    return ts, metric, value


def _send(
    node: SpNode, ts: np.ndarray, metric: np.ndarray, value: np.ndarray, *, historical: bool = False
) -> None:
    for i in range(0, len(ts), 1500):
        node.new_batch()
        node.ddata("m1", ts[i : i + 1500], metric[i : i + 1500], value[i : i + 1500], historical=historical)


def _stored(url: str) -> int:
    return int(_one(url, "SELECT count(*) FROM samples"))


def _answers(client: TestClient, site: str, ranges: list[tuple[int, int]]) -> dict[str, Any]:
    """Raw, 1 min, 5 min and 1 h answers of /api/v1/series for each metric and range."""
    out: dict[str, Any] = {}
    for m in range(3):
        for start, end in ranges:
            for bucket in ("raw", "1m", "5m", "1h"):
                r = client.get(
                    "/api/v1/series",
                    params={
                        "site": site,
                        "machine": "m1",
                        "name": f"Value/{m}",
                        "start": start,
                        "end": end,
                        "bucket": bucket,
                        "limit": 100_000,
                    },
                )
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["next_cursor"] is None
                out[f"{m}/{start}/{bucket}"] = (body["source"], body["points"])
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal answers: same sources, times, counts; floats equal to 1e-9 (sums may add in another order)."""
    if a.keys() != b.keys():
        return False
    for key in a:
        (src_a, pa), (src_b, pb) = a[key], b[key]
        if src_a != src_b or pa.keys() != pb.keys():
            return False
        for col in pa:
            xs, ys = pa[col], pb[col]
            if xs is None or ys is None:
                if xs is not ys:
                    return False
                continue
            if len(xs) != len(ys):
                return False
            for x, y in zip(xs, ys, strict=True):
                if isinstance(x, float) or isinstance(y, float):
                    if x is None or y is None or not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9):
                        return False
                elif x != y:
                    return False
    return True


def _diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    for key in a:
        if key not in b or not _same({key: a[key]}, {key: b[key]}):
            return f"{key}: {str(a[key])[:300]} != {str(b.get(key))[:300]}"
    return "no difference"


def test_setup_creates_hypertables_compression_aggregates_and_policies(timescale_database: str) -> None:
    url = timescale_database
    horizons = TimescaleHorizons(
        compress_after="3 days", retain_raw_for="400 days", retain_1h_for="1000 days"
    )
    info = apply_migrations(url, horizons=horizons)
    assert info.timescale and info.version and info.kind.startswith("TimescaleDB ")
    with psycopg.connect(url) as conn:
        hypertables: dict[str, bool] = dict(
            conn.execute(
                "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
            )
        )
        assert hypertables == {"samples": True, "samples_text": True}
        settings = conn.execute(
            "SELECT hypertable_name, attname, segmentby_column_index, orderby_column_index, orderby_asc"
            " FROM timescaledb_information.compression_settings ORDER BY 1, 2"
        ).fetchall()
        assert settings == [
            ("samples", "tag_id", 1, None, None),
            ("samples", "ts", None, 1, True),
            ("samples_text", "tag_id", 1, None, None),
            ("samples_text", "ts", None, 1, True),
        ]
        caggs: dict[str, bool] = dict(
            conn.execute(
                "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
            )
        )
        assert caggs == {"samples_1m": False, "samples_1h": False}  # real-time aggregation
        jobs = conn.execute(
            "SELECT proc_name, coalesce(hypertable_name, ''), config, schedule_interval"
            " FROM timescaledb_information.jobs WHERE job_id >= 1000"
        ).fetchall()
        chunk = _one(
            url,
            "SELECT time_interval FROM timescaledb_information.dimensions WHERE hypertable_name = 'samples'",
        )
        assert str(chunk) == "1 day, 0:00:00"
        hour, minute, two_hours, three_days, half_hour = (
            conn.execute("SELECT %s::interval", [text]).fetchone()[0]  # type: ignore[index]
            for text in ("1 hour", "1 minute", "2 hours", "3 days", "30 minutes")
        )
    configs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for proc, table, config, _ in jobs:
        configs.setdefault((proc, table), []).append(config)
    assert [c["compress_after"] for c in configs[("policy_compression", "samples")]] == ["3 days"]
    assert [c["compress_after"] for c in configs[("policy_compression", "samples_text")]] == ["3 days"]
    assert [c["drop_after"] for c in configs[("policy_retention", "samples")]] == ["400 days"]
    assert [c["drop_after"] for c in configs[("policy_retention", "samples_text")]] == ["400 days"]
    # Retention on the 1 h aggregate only (retain_1m_for is None).
    assert [c["drop_after"] for c in configs[("policy_retention", "samples_1h")]] == ["1000 days"]
    assert ("policy_retention", "samples_1m") not in configs
    refresh = sorted(
        (s, c["start_offset"], c["end_offset"])
        for p, _, c, s in jobs
        if p == "policy_refresh_continuous_aggregate"
    )
    with psycopg.connect(url) as conn:
        offsets = [
            (s, *conn.execute("SELECT %s::interval, %s::interval", [a, b]).fetchone())  # type: ignore[misc]
            for s, a, b in refresh
        ]
    assert offsets == [(minute, two_hours, minute), (half_hour, three_days, hour)]


def test_setup_is_idempotent_and_a_restart_applies_changed_horizons(timescale_database: str) -> None:
    url = timescale_database
    first = apply_migrations(url)
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO samples (ts, tag_id, value) SELECT now() - i * interval '1 minute', 1, i"
            " FROM generate_series(0, 999) AS i"
        )

    def jobs() -> list[tuple[str, str, str]]:
        with psycopg.connect(url) as conn:
            return sorted(
                (str(p), str(t), str(c))
                for p, t, c in conn.execute(
                    "SELECT proc_name, coalesce(hypertable_name, ''), config::text"
                    " FROM timescaledb_information.jobs WHERE job_id >= 1000"
                )
            )

    before = jobs()
    second = apply_migrations(url)
    assert first.applied and second.applied == () and second.timescale
    assert jobs() == before and len(before) == 6  # 2 compression, 2 retention, 2 refresh: nothing doubled
    assert _stored(url) == 1000
    third = apply_migrations(url, horizons=TimescaleHorizons(compress_after=None, retain_raw_for="30 days"))
    assert third.timescale
    after = jobs()
    assert not any(p == "policy_compression" for p, _, _ in after)
    assert [c for p, t, c in after if p == "policy_retention" and t == "samples"] == [
        '{"drop_after": "30 days", "hypertable_id": 1}'
    ]
    assert _stored(url) == 1000


def test_refused_horizons_and_backend_switch_name_what_to_change(timescale_database: str) -> None:
    url = timescale_database
    with pytest.raises(StorageError, match=r"chunk_interval='fortnight'"):
        apply_migrations(url, horizons=TimescaleHorizons(chunk_interval="fortnight"))
    with pytest.raises(StorageError, match=r"refresh_1m_lookback='1 minute'"):
        apply_migrations(url, horizons=TimescaleHorizons(refresh_1m_lookback="1 minute"))
    assert apply_migrations(url).timescale
    with pytest.raises(
        StorageError, match=r"use_timescale=False, but samples is already a TimescaleDB hypertable"
    ):
        apply_migrations(url, horizons=PLAIN)


def test_refresh_aggregates_brings_rows_below_the_watermark_into_the_aggregates(
    timescale_database: str,
) -> None:
    url = timescale_database
    apply_migrations(url)
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO samples (ts, tag_id, value) VALUES (now() - interval '10 minutes', 7, -1),"
            " (now() - interval '3 hours', 7, -2)"
        )
    # Both aggregates materialize a recent row: real-time aggregation then starts after it, so rows written
    # further back are not seen until a refresh covers them.
    _run_policies(url)
    day_ms = int(time.time() * 1000) // 86_400_000 * 86_400_000 - 5 * 86_400_000  # five days ago, midnight
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO samples (ts, tag_id, value) SELECT to_timestamp(%s / 1000.0) + i * interval '10 seconds',"
            " 7, i FROM generate_series(0, 719) AS i",  # two hours
            [day_ms],
        )
    old_rows = "SELECT coalesce(sum(count), 0) FROM {} WHERE bucket < now() - interval '1 day'"
    count_1m, count_1h = old_rows.format("samples_1m"), old_rows.format("samples_1h")
    assert _one(url, count_1m) == 0 and _one(url, count_1h) == 0  # the gap the refresh closes
    with psycopg.connect(url) as conn, pytest.raises(StorageError, match="autocommit"):
        refresh_aggregates(conn, day_ms, day_ms + 2 * HOUR)
    with psycopg.connect(url, autocommit=True) as conn:
        _unless_busy(lambda: refresh_aggregates(conn, day_ms + 1, day_ms + 2 * HOUR - 1))  # whole buckets
    assert _one(url, count_1m) == 720 and _one(url, count_1h) == 720
    row = _one(
        url,
        "SELECT array[min(min), max(max), sum(count)] FROM samples_1h WHERE bucket < now() - '1 day'::interval",
    )
    assert row == [0, 719, 720]


def test_series_through_ingest_matches_plain_postgresql(
    timescale_database: str, fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    now = int(time.time() * 1000)
    hist = _signal(1, T0, HIST_SPAN, 3000)  # older than every lookback: the refresh after commit brings it
    # Inside the 1 min policy's lookback: the policy and real-time aggregation bring it.
    recent_start = now - 100 * 60_000
    recent = _signal(2, recent_start, 98 * 60_000, 10_000)
    expected = len(hist[0]) + len(recent[0])
    ranges = [(T0, T0 + HIST_SPAN), (recent_start - recent_start % HOUR, now + 60_000)]
    with (
        _ingest(timescale_database, mqtt_url, unique_id) as ts_svc,
        _ingest(fresh_database, mqtt_url, unique_id, PLAIN) as plain_svc,
        _node(mqtt_url, unique_id) as node,
    ):
        assert ts_svc.storage is not None and ts_svc.storage.timescale
        assert plain_svc.storage is not None and not plain_svc.storage.timescale
        node.birth()
        wait_for(
            lambda: ts_svc.stats()["nodes_online"] == 1 == plain_svc.stats()["nodes_online"],
            timeout=20,
            what="births",
        )
        _send(node, *hist, historical=True)
        _send(node, *recent)
        for url in (timescale_database, fresh_database):
            wait_for(lambda u=url: _stored(u) == expected, timeout=30, what=f"{expected} samples in {url}")
    _run_policies(timescale_database)
    with _api(fresh_database) as plain_client:
        want = _answers(plain_client, unique_id, ranges)
    assert want[f"0/{T0}/1m"][0] == "samples_1m" and want[f"0/{T0}/1h"][0] == "samples_1h"
    assert len(want[f"0/{T0}/1m"][1]["ts"]) == 180 and sum(want[f"0/{T0}/1h"][1]["count"]) == 3600
    with _api(timescale_database) as ts_client:
        got = _answers(ts_client, unique_id, ranges)
    assert _same(got, want), _diff(got, want)


def test_an_old_batch_through_ingest_reaches_the_aggregates(
    timescale_database: str, mqtt_url: str, unique_id: str
) -> None:
    url = timescale_database
    with _ingest(url, mqtt_url, unique_id) as svc, _node(mqtt_url, unique_id) as node:
        node.birth()
        wait_for(lambda: svc.stats()["nodes_online"] == 1, timeout=20, what="birth")
        now = int(time.time() * 1000)
        live = _signal(3, now - 5 * 60_000, 4 * 60_000, 5000)
        _send(node, *live)
        wait_for(lambda: _stored(url) == len(live[0]), what="live samples")
        _run_policies(url)  # watermark at now - 1 min: what follows is below it
        old_start = now - 5 * 86_400_000  # older than both lookbacks (2 h, 3 days)
        old = _signal(4, old_start - old_start % HOUR, HOUR, 2000)
        _send(node, *old, historical=True)  # an outbox replaying old data
        total = len(live[0]) + len(old[0])
        wait_for(lambda: _stored(url) == total, what="old samples")
        query = (
            "SELECT coalesce(sum(count), 0) FROM {} WHERE bucket >= to_timestamp(%s / 1000.0)"
            " AND bucket < to_timestamp(%s / 1000.0)"
        )
        span = [old_start - 86_400_000, old_start + 86_400_000]
        for view in ("samples_1m", "samples_1h"):
            wait_for(
                lambda v=view: _one(url, query.format(v), span) == len(old[0]),
                timeout=20,
                what=f"{len(old[0])} old samples counted in {view}",
            )
        direct = _one(
            url,
            "SELECT array[min(value), max(value)] FROM samples WHERE ts < to_timestamp(%s / 1000.0)",
            [now - 86_400_000],
        )
        rolled = _one(
            url,
            "SELECT array[min(min), max(max)] FROM samples_1h WHERE bucket < now() - '1 day'::interval",
        )
        assert rolled == direct


def test_a_plain_first_database_converted_at_restart_keeps_every_row(
    timescale_database: str, mqtt_url: str, unique_id: str
) -> None:
    url = timescale_database
    now = int(time.time() * 1000)
    hist = _signal(5, T0, HIST_SPAN, 4000)
    recent_start = now - 90 * 60_000
    recent = _signal(6, recent_start, 80 * 60_000, 20_000)
    ranges = [(T0, T0 + HIST_SPAN), (recent_start - recent_start % HOUR, now + 60_000)]
    expected = len(hist[0]) + len(recent[0])
    with _ingest(url, mqtt_url, unique_id, PLAIN) as svc, _node(mqtt_url, unique_id) as node:
        assert svc.storage is not None and not svc.storage.timescale
        node.birth()
        wait_for(lambda: svc.stats()["nodes_online"] == 1, timeout=20, what="birth")
        _send(node, *hist, historical=True)
        _send(node, *recent)
        wait_for(lambda: _stored(url) == expected, timeout=30, what="samples on plain PostgreSQL")
    assert _one(url, "SELECT relkind FROM pg_class WHERE relname = 'samples_1m'") == "r"  # a plain table
    with _api(url) as client:
        before = _answers(client, unique_id, ranges)
    # The restart: the server preloads TimescaleDB, so the default settings convert the database.
    info = apply_migrations(url)
    assert info.timescale and info.applied == ()
    assert _stored(url) == expected
    assert _one(url, "SELECT count(*) FROM timescaledb_information.hypertables") == 2
    assert _one(url, "SELECT relkind FROM pg_class WHERE relname = 'samples_1m'") == "v"  # the aggregate
    with _api(url) as client:
        assert _same(client_answers := _answers(client, unique_id, ranges), before), _diff(
            client_answers, before
        )
    _run_policies(url)  # the watermark moves past the history: it must be materialized already
    with _api(url) as client:
        after = _answers(client, unique_id, ranges)
    assert _same(after, before), _diff(after, before)
    assert apply_migrations(url).timescale  # and the next start changes nothing
    assert _stored(url) == expected


def test_replays_into_compressed_chunks_store_nothing_twice(
    timescale_database: str, mqtt_url: str, unique_id: str
) -> None:
    url = timescale_database
    ts, metric, value = _signal(7, T0, HOUR, 3000)
    with _ingest(url, mqtt_url, unique_id) as svc, _node(mqtt_url, unique_id) as node:
        node.birth()
        wait_for(lambda: svc.stats()["nodes_online"] == 1, timeout=20, what="birth")
        _send(node, ts, metric, value, historical=True)
        wait_for(lambda: _stored(url) == len(ts), what="first copy")
        compressed = _one(
            url,
            "SELECT count(compress_chunk(c, if_not_compressed => true)) FROM show_chunks('samples') c",
        )
        assert compressed >= 1
        assert (
            _one(
                url,
                "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks"
                " WHERE hypertable_name = 'samples'",
            )
            is True
        )
        checksum = "SELECT count(*), sum(value) FROM samples"
        with psycopg.connect(url) as conn:
            before = conn.execute(checksum).fetchone()
        _send(node, ts, metric, value + 1000, historical=True)  # replay: ON CONFLICT path
        _send(node, ts[:500], metric[:500], value[:500] - 1000)  # live batch: the optimistic path, conflicts
        replayed = node.batch
        node.new_batch()  # closes the last replayed batch: it becomes ackable
        node.ddata("m1", np.array([T0 + 1], np.int64), np.array([2]), np.array([-1.0]), historical=True)
        wait_for(lambda: _stored(url) == len(ts) + 1, what="the one new sample")
        # Acks are released in order, once every batch up to theirs is committed: the replays are all in.
        wait_for(lambda: max(node.acks, default=0) >= replayed, what="the ack of the last replayed batch")
        with psycopg.connect(url) as conn:
            after = conn.execute(checksum).fetchone()
        assert before is not None and after is not None
        assert after[0] == before[0] + 1 and math.isclose(after[1], before[1] - 1.0, rel_tol=1e-12)
        assert svc.stats()["dead_letters"] == 0
