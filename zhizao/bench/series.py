"""`/api/v1/series` latency benchmark: one tag, 24 h of 1 s samples, 1-minute buckets over HTTP.

The answer from the 1-minute rollup is timed against the same query computed by `date_bin` over the raw
samples (the baseline), in the same run, on the same server, through a real uvicorn listener.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import psycopg

from zhizao.bench.harness import (
    Report,
    json_option,
    latency_summary,
    machine_line,
    require,
    scratch_database,
    time_calls_ms,
    times,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["bench_series", "fill_rollups", "run_series_bench"]

DAY_S = 86_400
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def fill_rollups(conn: psycopg.Connection[Any], tags: list[int]) -> None:
    """Plain-PostgreSQL rollup rows of `tags` straight from their samples (what the ingest maintains)."""
    for table, width in (("samples_1m", "1 minute"), ("samples_1h", "1 hour")):
        conn.execute(
            f"INSERT INTO {table} (bucket, tag_id, min, max, sum, count, last, last_ts)"
            f" SELECT date_bin('{width}', ts, 'epoch'), tag_id, min(value), max(value), coalesce(sum(value), 0),"
            " count(value), (array_agg(value ORDER BY ts DESC))[1], max(ts)"
            " FROM samples WHERE tag_id = ANY(%s) GROUP BY 1, 2",
            [tags],
        )


def _fill(url: str) -> int:
    """One site, machine and tag; 24 h of 1 s samples; rollups maintained as the ingest would."""
    from zhizao.cloud.storage.migrate import apply_migrations

    info = apply_migrations(url)
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO sites (site_id, name) VALUES ('bench', 'bench')")
        conn.execute("INSERT INTO edge_nodes (site_id, edge_node_id, online) VALUES ('bench', 'line-1', true)")
        conn.execute("INSERT INTO machines (site_id, machine_id, edge_node_id, line_id) VALUES"
                     " ('bench', 'm1', 'line-1', 'line-1')")
        row = conn.execute("INSERT INTO tags (site_id, edge_node_id, machine_id, name, datatype) VALUES"
                           " ('bench', 'line-1', 'm1', 'Temperature/Spindle', 10) RETURNING tag_id").fetchone()
        assert row is not None
        tag = int(row[0])
        conn.execute(
            "CREATE TEMP TABLE src AS SELECT to_timestamp(%(t0)s / 1000.0) + i * interval '1 second' AS ts,"
            " %(tag)s::int AS tag_id, 50 + 10 * sin(i / 600.0) + (i %% 7) * 0.1 AS value"
            " FROM generate_series(0, %(n)s - 1) AS i",
            {"t0": T0_MS, "tag": tag, "n": DAY_S},
        )
        conn.execute("INSERT INTO samples (ts, tag_id, value) SELECT ts, tag_id, value FROM src")
    if not info.timescale:
        with psycopg.connect(url) as conn:
            fill_rollups(conn, [tag])
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            for view in ("samples_1m", "samples_1h"):
                conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return tag


def _time(client: httpx.Client, params: dict[str, Any], n: int) -> dict[str, float]:
    """Latencies of `n` requests (after a few to warm the pool, plans and caches) and the points answered."""
    points: list[int] = []

    def get() -> None:
        r = client.get("/api/v1/series", params=params)
        r.raise_for_status()
        points.append(len(r.json()["points"]["ts"]))

    summary = latency_summary(time_calls_ms(get, n, max(3, n // 20)))
    return {**summary, "points": float(points[-1])}


def run_series_bench(server_url: str, requests: int = 200) -> Report:
    """Create a scratch database on `server_url`, fill it, time the variants, drop it; return the report."""
    import httpx

    from zhizao.cloud.auth import create_token
    from zhizao.cloud.service import CloudService
    from zhizao.cloud.settings import CloudSettings

    with scratch_database(server_url, "series") as url:
        service: CloudService | None = None
        try:
            tag = _fill(url)
            token = create_token(url, "viewer", "*", "bench")
            service = CloudService(CloudSettings(database_url=url, api_port=0), ingest=False, warm_up=False)
            base = service.start_in_thread()
            day = {"tag_id": tag, "start": T0_MS, "end": T0_MS + DAY_S * 1000, "bucket": "1m"}
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
                results = {
                    "rollup_1m": _time(client, {**day, "source": "auto"}, requests),
                    "date_bin_raw": _time(client, {**day, "source": "raw"}, requests),
                    "raw_page_10k": _time(client, {"tag_id": tag, "start": T0_MS, "end": T0_MS + DAY_S * 1000,
                                                   "limit": 10_000}, max(10, requests // 4)),
                }
            report = Report("series")
            report.figures.update(requests=requests, **results)
            report.ratio("date_bin_vs_rollup_p50", "date_bin_raw.p50_ms", "rollup_1m.p50_ms")
            report.finish(server_url)
            return report
        finally:
            if service is not None:
                service.stop()


@click.command("series")
@click.option("--database-url", envvar="ZHIZAO_DATABASE_URL", required=True, metavar="URL",
              help="A PostgreSQL server where a scratch database may be created (dropped afterwards).")
@click.option("-n", "--requests", default=200, show_default=True, help="Timed requests per variant.")
@json_option
def bench_series(database_url: str, requests: int, json_path: Path | None) -> None:
    """p50/p99 of /api/v1/series: one tag, 24 h at 1-minute buckets (rollup vs date_bin baseline)."""
    require("zhizao bench series", "bench", "httpx")
    click.echo("filling 24 h of 1 s samples for one tag (86,400 rows) ...", err=True)
    report = run_series_bench(database_url, requests)
    click.echo(f"{machine_line(report.machine)}; {requests} requests per variant")
    for name in ("rollup_1m", "date_bin_raw", "raw_page_10k"):
        r = report.figures[name]
        click.echo(f"  {name:14s} p50 {r['p50_ms']:7.2f} ms   p99 {r['p99_ms']:7.2f} ms   "
                   f"mean {r['mean_ms']:7.2f} ms   points {int(r['points'])}")
    speedup = report.ratios["date_bin_vs_rollup_p50"]["value"]
    click.echo(f"  rollup vs date_bin baseline: {times(speedup, 1)} faster at p50")
    report.write(json_path)
