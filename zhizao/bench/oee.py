"""`zhizao bench oee`: latency of `/api/v1/oee` for the whole cluster over 24 h (hour windows), p50/p99.

The seeded cluster (each machine replicated `--scale` times) gets `--days` days of stored OEE windows, as the
OEE service writes them, and 24 h of raw samples (state changes, counters per minute, ideal rate). The
baseline, timed in the same run on the same server, answers the same question without stored windows:
it reads the 24 h of samples and runs the OEE kernel over the whole fleet on request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
import psycopg

from zhizao.analytics import OeeConfig, fleet_oee
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

__all__ = ["bench_oee", "run_oee_bench"]

HOUR_MS = 3_600_000
T0_MS = 1_767_196_800_000  # 2025-12-31T16:00:00Z = 2026-01-01 00:00 in Shanghai
_ROLES = ("State", "Counts/Total", "Counts/Good", "Rate/Ideal")


def _fill(url: str, scale: int, days: int) -> int:
    """Assets of the seeded cluster x scale, `days` of windows, 24 h of samples; returns the machine count."""
    from zhizao.cloud.storage.migrate import apply_migrations
    from zhizao.seeds import load_scenario

    apply_migrations(url)
    machines: list[tuple[str, str, str]] = []
    for s in load_scenario().sites:
        for ln in s.lines:
            for m in ln.machines:
                machines.extend((s.id, ln.id, f"{m.id}-r{r}") for r in range(scale))
    with psycopg.connect(url) as conn:
        for site in sorted({m[0] for m in machines}):
            conn.execute("INSERT INTO sites (site_id, name, tz) VALUES (%s, %s, 'Asia/Shanghai')", [site, site])
        for site, line in sorted({(m[0], m[1]) for m in machines}):
            conn.execute("INSERT INTO edge_nodes (site_id, edge_node_id) VALUES (%s, %s)", [site, line])
        conn.execute(
            "INSERT INTO machines (site_id, machine_id, edge_node_id, line_id)"
            " SELECT s, m, l, l FROM unnest(%s::text[], %s::text[], %s::text[]) AS x(s, l, m)",
            [[m[0] for m in machines], [m[1] for m in machines], [m[2] for m in machines]],
        )
        conn.execute(
            "INSERT INTO tags (site_id, edge_node_id, machine_id, name, datatype)"
            " SELECT m.site_id, m.edge_node_id, m.machine_id, r.name, 10 FROM machines m, unnest(%s::text[]) AS r(name)",
            [list(_ROLES)],
        )
        # Windows as the OEE service stores them: hours, three 8 h shifts and the day, per machine and day.
        conn.execute(
            """INSERT INTO oee_windows (site_id, machine_id, line_id, kind, start_ts, end_ts, all_s, planned_s, run_s,
                ideal_s, good_ideal_s, total, good, loss_failure_s, loss_setup_s, loss_minor_s, loss_speed_s,
                loss_defect_s, loss_startup_s, stops, failures, microstops, flags)
            SELECT m.site_id, m.machine_id, m.line_id, w.kind, w.s, w.s + w.len, extract(epoch FROM w.len),
                   extract(epoch FROM w.len) * 0.9, extract(epoch FROM w.len) * 0.8, extract(epoch FROM w.len) * 0.7,
                   extract(epoch FROM w.len) * 0.68, 1000, 980, 100, 50, 20, 30, 5, 1, 2, 1, 3, 0
            FROM machines m, (
                SELECT 'hour' AS kind, to_timestamp(%(t0)s / 1000.0) - %(days)s * interval '1 day' + h * interval '1 hour' AS s,
                       interval '1 hour' AS len FROM generate_series(0, %(days)s * 24 + 23) AS h
                UNION ALL SELECT 'shift', to_timestamp(%(t0)s / 1000.0) - %(days)s * interval '1 day' + h * interval '8 hours',
                       interval '8 hours' FROM generate_series(0, %(days)s * 3 + 2) AS h
                UNION ALL SELECT 'day', to_timestamp(%(t0)s / 1000.0) - %(days)s * interval '1 day' + h * interval '1 day',
                       interval '1 day' FROM generate_series(0, %(days)s) AS h) w""",
            {"t0": T0_MS, "days": days},
        )
        # 24 h of raw samples for the baseline: a state change every 30 min, counters every minute, one rate.
        conn.execute(
            """INSERT INTO samples (ts, tag_id, value)
            SELECT to_timestamp(%(t0)s / 1000.0) + i * interval '30 minutes', t.tag_id,
                   CASE WHEN i %% 3 = 2 THEN 180000 ELSE 10000 END
            FROM tags t, generate_series(0, 47) AS i WHERE t.name = 'State'
            UNION ALL SELECT to_timestamp(%(t0)s / 1000.0) + i * interval '1 minute', t.tag_id,
                   CASE WHEN t.name = 'Counts/Total' THEN i * 50 ELSE i * 49 END
            FROM tags t, generate_series(0, 1440) AS i WHERE t.name IN ('Counts/Total', 'Counts/Good')
            UNION ALL SELECT to_timestamp(%(t0)s / 1000.0), t.tag_id, 60 FROM tags t WHERE t.name = 'Rate/Ideal'""",
            {"t0": T0_MS},
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return len(machines)


def _from_samples(conn: psycopg.Connection[Any], lo: int, hi: int) -> float:
    """Baseline: cluster OEE per hour from raw samples by the kernel, on request; returns the day's OEE."""
    rows = conn.execute(
        "SELECT t.site_id || '/' || t.machine_id, t.name, (extract(epoch FROM s.ts) * 1000)::bigint, s.value"
        " FROM samples s JOIN tags t USING (tag_id) WHERE t.name = ANY(%s) AND s.ts >= to_timestamp(%s / 1000.0)"
        " AND s.ts < to_timestamp(%s / 1000.0) ORDER BY 1, 2, 3",
        [list(_ROLES), lo, hi + 1],
    ).fetchall()
    key = np.array([r[0] for r in rows])
    name = np.array([r[1] for r in rows])
    ts = np.array([r[2] for r in rows], np.int64)
    val = np.array([r[3] for r in rows], np.float64)
    machines = np.unique(key)
    arrays: dict[str, list[Any]] = {k: [] for k in ("state", "count", "rate", "plan", "window")}
    cols: dict[str, list[Any]] = {k: [] for k in (
        "state_time", "state_code", "count_time", "count_total", "count_good", "rate_time", "rate_per_min",
        "plan_start", "plan_end", "window_start", "window_end")}  # fmt: skip
    for m in machines:
        sel = key == m
        n, t, v = name[sel], ts[sel], val[sel]
        st, tot, good, rate = (n == "State"), (n == "Counts/Total"), (n == "Counts/Good"), (n == "Rate/Ideal")
        cols["state_time"].append(t[st])
        cols["state_code"].append(v[st].astype(np.int64))
        cols["count_time"].append(t[tot])
        cols["count_total"].append(v[tot].astype(np.int64))
        cols["count_good"].append(v[good].astype(np.int64))
        cols["rate_time"].append(t[rate])
        cols["rate_per_min"].append(v[rate])
        cols["plan_start"].append(np.array([lo], np.int64))
        cols["plan_end"].append(np.array([hi], np.int64))
        edges = np.arange(lo, hi + 1, HOUR_MS, dtype=np.int64)
        cols["window_start"].append(edges[:-1])
        cols["window_end"].append(edges[1:])
        for group, arr in (("state", t[st]), ("count", t[tot]), ("rate", t[rate]), ("plan", [lo]), ("window", edges[:-1])):
            arrays[group].append(len(arr))
    offsets = {f"{g}_offsets": np.concatenate([[0], np.cumsum(c)]).astype(np.int64) for g, c in arrays.items()}
    res = fleet_oee(OeeConfig(), **offsets, **{k: np.concatenate(v) for k, v in cols.items()})
    good_ideal = res.ideal_s * np.divide(res.good, res.total, out=np.zeros(len(res.good)), where=res.total > 0)
    return float(good_ideal.sum() / res.planned_s.sum())


def run_oee_bench(server_url: str, requests: int = 200, scale: int = 10, days: int = 30) -> Report:
    """Create a scratch database on `server_url`, fill it, time API and baseline, drop it; return the report."""
    import httpx

    from zhizao.cloud.auth import create_token
    from zhizao.cloud.service import CloudService
    from zhizao.cloud.settings import CloudSettings

    with scratch_database(server_url, "oee") as url:
        service: CloudService | None = None
        try:
            n_machines = _fill(url, scale, days)
            token = create_token(url, "viewer", "*", "bench")
            service = CloudService(CloudSettings(database_url=url, api_port=0), ingest=False, warm_up=False, oee=False)
            base = service.start_in_thread()
            params = {"scope": "cluster", "window": "hour", "from": str(T0_MS), "to": str(T0_MS + 24 * HOUR_MS)}
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:

                def api() -> None:
                    r = client.get("/api/v1/oee", params=params)
                    r.raise_for_status()
                    assert len(r.json()) == 24

                api_res = latency_summary(time_calls_ms(api, requests, max(3, requests // 20)))
            with psycopg.connect(url) as conn:
                base_res = latency_summary(time_calls_ms(lambda: _from_samples(conn, T0_MS, T0_MS + 24 * HOUR_MS), 3, 1))
            report = Report("oee")
            report.figures.update(machines=n_machines, days=days, api=api_res, baseline_from_samples=base_res)
            report.ratio("baseline_vs_api_p99", "baseline_from_samples.p99_ms", "api.p99_ms")
            report.finish(server_url)
            return report
        finally:
            if service is not None:
                service.stop()


@click.command("oee")
@click.option("--database-url", envvar="ZHIZAO_DATABASE_URL", required=True, metavar="URL",
              help="A PostgreSQL server where a scratch database may be created (dropped afterwards).")
@click.option("-n", "--requests", default=200, show_default=True, help="Timed API requests.")
@click.option("--scale", default=10, show_default=True, help="Copies of each seeded machine (39 per copy).")
@click.option("--days", default=30, show_default=True, help="Days of stored windows before the measured day.")
@json_option
def bench_oee(database_url: str, requests: int, scale: int, days: int, json_path: Path | None) -> None:
    """p50/p99 of /api/v1/oee for the whole cluster over 24 h (hour windows), against recomputing from samples."""
    require("zhizao bench oee", "bench", "httpx")
    click.echo(f"filling {days} days of OEE windows and 24 h of samples for {39 * scale} machines ...", err=True)
    report = run_oee_bench(database_url, requests, scale, days)
    f = report.figures
    click.echo(machine_line(report.machine))
    click.echo(f"{f['machines']} machines, {f['days']} days of windows stored")
    for label, r in (("/api/v1/oee cluster 24 h", f["api"]), ("baseline: kernel over samples", f["baseline_from_samples"])):
        click.echo(f"  {label:30s} p50 {r['p50_ms']:8.2f} ms   p99 {r['p99_ms']:8.2f} ms   "
                   f"mean {r['mean_ms']:8.2f} ms   n {int(r['n'])}")
    speedup = report.ratios["baseline_vs_api_p99"]["value"]
    click.echo(f"  stored windows vs recompute-from-samples baseline: {times(speedup, 1)} faster at p99")
    report.write(json_path)
