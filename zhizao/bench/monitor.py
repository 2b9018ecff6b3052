"""Condition monitoring on the seeded cluster: are the developing faults alarmed before they fail, at what cost?

Run: `zhizao bench monitor --database-url URL [--days 7] [--dt 60] [--seed 1] [--json FILE]`.

The simulator's factory model (seeds/cluster.yaml with its bearing wear, tool wear, sensor drift and jam bursts)
is stepped flat out over `--days` simulated days at `--dt` seconds per step; every process-signal change goes to
the cloud's `MonitoringService` as committed batches of `--batch-min` simulated minutes (the default rules of
seeds/monitoring/rules.yaml), and its alarms are compared with the model's own fault record:

- per fault: the functional failure (bearing worn out, tool at the end of its life, sensor drift at its limit)
  is *alarmed before failure* when an anomaly, threshold or rate alarm of that machine was raised while the
  fault developed (bearing: from its onset; tool: the second half of its life since the last change; drift:
  from its onset), with the lead time from the first such alarm to the failure;
- false alarms: activations on a machine outside every window in which one of its faults develops (plus one
  hour after the failure), per machine-week;
- per site (one console each), EEMUA 191 over 10-minute windows of data time: average and peak of announced
  alarms, and the share of windows in flood (>= 10);
- CPU: the monitoring worker's thread CPU per million samples, and per simulated day of the cluster; and the
  ingest's process CPU over `--ingest-samples` pre-encoded DDATA samples (`zhizao bench ingest`'s stream: 2000
  process signals) without and with the monitoring service on its commit listener, same run.

Each machine's State is mapped from the simulator's PackML state and stop reason as the edge maps it, so the
detectors score machines while they run (`only_running`). Jam bursts (stops, seen by the microstops rule) are
counted, not scored as faults here.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from statistics import median
from typing import Any

import click
import numpy as np
import psycopg

from zhizao.bench.harness import Report, json_option, machine_line, scratch_database

EXECUTE = 6  # PackML Execute (PackTags numbering)
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
WINDOW_MS = 600_000  # EEMUA 191: 10 minutes


def run_monitor_bench(database_url: str, days: float, dt_s: float, seed: int, batch_min: float,
                      ingest_samples: int = 0) -> Report:
    """Simulate, monitor, score the alarms against the faults; the report."""
    from zhizao.cloud.monitoring import MonitoringService
    from zhizao.cloud.seed import seed_database
    from zhizao.cloud.storage import apply_migrations
    from zhizao.edge.sim.faults import ABORTED, HELD, SUSPENDED
    from zhizao.edge.sim.model import FactoryModel
    from zhizao.edge.sim.nodes import T_REASON, T_STATE
    from zhizao.seeds import load_scenario

    scenario = load_scenario()
    report = Report("monitor")
    with scratch_database(database_url, "monitor") as url:
        apply_migrations(url)
        seed_database(url, scenario)
        # Whole days back from today: a seed's figures do not depend on the hour the bench runs (they did).
        start_ms = (int(time.time() * 1000) // DAY_MS) * DAY_MS - int(days * DAY_MS) - DAY_MS
        model = FactoryModel(scenario, seed=seed, start_ms=start_ms, dt_ms=int(dt_s * 1000))
        table = model.table
        node_tag = np.full(table.size, -1, np.int64)
        signal_name: dict[int, tuple[int, str]] = {}  # tag -> (machine index, signal)
        with psycopg.connect(url) as conn:
            for node, m_i in zip(table.signal_nodes.tolist(), table.signal_machine.tolist(), strict=True):
                site, line, machine = table.machine_paths[m_i].split("/")
                name = table.tags[node]
                row = conn.execute(
                    "INSERT INTO tags (site_id, edge_node_id, machine_id, name, datatype) VALUES (%s, %s, %s, %s, 10)"
                    " RETURNING tag_id", [site, line, machine, name]).fetchone()
                assert row is not None
                node_tag[node] = int(row[0])
                signal_name[int(row[0])] = (m_i, name)
            # Each machine's State as the edge maps PackML (edge/mapping.py): Execute is running (10000), any
            # other state is a stop with the machine's StopReason (an unspecified stop, 40000, when it has none).
            state_tag = np.zeros(len(table.machines), np.int32)
            for m_i, path in enumerate(table.machine_paths):
                site, line, machine = path.split("/")
                row = conn.execute(
                    "INSERT INTO tags (site_id, edge_node_id, machine_id, name, datatype) VALUES (%s, %s, %s,"
                    " 'State', 3) RETURNING tag_id", [site, line, machine]).fetchone()
                assert row is not None
                state_tag[m_i] = int(row[0])
        # The model's own fault record: functional failures, by kind.
        failures: list[tuple[str, int, int]] = []  # (kind, machine index, ts ms)
        orig = model.faults.events

        def record(free: Any, rng: Any, step_s: float, out: Any) -> None:
            n0 = len(out.machines)
            orig(free, rng, step_s, out)
            kinds = {ABORTED: "bearing_wear", HELD: "tool_wear", SUSPENDED: "jam_bursts"}
            for ms, states in zip(out.machines[n0:], out.states[n0:], strict=True):
                for m_i, st in zip(ms.tolist(), states.tolist(), strict=True):
                    failures.append((kinds[int(st)], int(m_i), model.ts_ms))

        model.faults.events = record  # type: ignore[method-assign,assignment]
        f = model.faults
        drift_failed = np.zeros(len(f.d_m), np.bool_)
        svc = MonitoringService(url, webhooks=False, check_every_s=3600.0)
        svc.start()
        samples = 0
        wall = time.perf_counter()
        try:
            steps = int(days * DAY_MS / (dt_s * 1000))
            per_batch = max(1, int(batch_min * 60 / dt_s))
            buf_t: list[np.ndarray] = []
            buf_ts: list[np.ndarray] = []
            buf_v: list[np.ndarray] = []
            last_code = np.full(len(table.machines), np.nan)
            ch = model.initial()
            for k in range(steps + 1):
                if k:
                    ch = model.step()
                sel = node_tag[ch.index] >= 0
                if sel.any():
                    buf_t.append(node_tag[ch.index[sel]].astype(np.int32))
                    buf_ts.append(np.full(int(sel.sum()), ch.ts_ms, np.int64))
                    buf_v.append(ch.value[sel])
                packml = model.values[table.packml[:, T_STATE]]
                reason = model.values[table.packml[:, T_REASON]]
                code = np.where(packml == EXECUTE, 10000.0, np.where(reason >= 40000, reason, 40000.0))
                moved = np.flatnonzero(code != last_code)
                if moved.size:
                    buf_t.append(state_tag[moved])
                    buf_ts.append(np.full(moved.size, ch.ts_ms, np.int64))
                    buf_v.append(code[moved])
                    last_code = code
                if len(f.d_m):
                    over = (f.d_age > f.d_onset) & ((f.d_age - f.d_onset) * f.d_rate >= f.d_limit)
                    for i in np.flatnonzero(over & ~drift_failed).tolist():
                        failures.append(("sensor_drift", int(f.d_m[i]), model.ts_ms))
                    drift_failed = over
                if buf_t and (k % per_batch == 0 or k == steps):
                    tag, ts, val = np.concatenate(buf_t), np.concatenate(buf_ts), np.concatenate(buf_v)
                    order = np.lexsort((ts, tag))
                    svc.on_committed(tag[order], ts[order], val[order])
                    samples += tag.size
                    buf_t, buf_ts, buf_v = [], [], []
                    if (k // per_batch) % 50 == 0:
                        assert svc.flush(600), "monitoring fell behind"
            assert svc.flush(1800), "monitoring did not finish"
        finally:
            svc.stop()
        wall = time.perf_counter() - wall
        end_ms = model.ts_ms
        with psycopg.connect(url) as conn:
            acts = conn.execute(
                "SELECT a.site_id, a.machine_id, a.source, a.tag_id, (extract(epoch FROM h.data_ts) * 1000)::bigint,"
                " h.to_state FROM alarm_history h JOIN alarms a ON a.id = h.alarm_id WHERE h.event = 'activate'"
                " ORDER BY h.data_ts").fetchall()
        names = {t: name for t, (_m, name) in signal_name.items()}
        report.figures.update(_evaluate(scenario, table, failures, acts, start_ms, end_ms, names))
        report.figures["run"] = {"days": days, "dt_s": dt_s, "seed": seed, "batch_min": batch_min,
                                 "samples": samples, "wall_s": wall, "samples_per_s": samples / wall}
        stats = svc.stats()
        cpu = stats["busy_cpu_s"]
        report.figures["cpu"] = {
            "monitoring_cpu_s": cpu, "per_million_samples_s": cpu / samples * 1e6 if samples else None,
            "per_simulated_day_s": cpu / days, "kernel_calls": stats["kernel_calls"],
        }
    if ingest_samples:
        plain = ingest_cpu(database_url, ingest_samples, monitoring=False)
        monitored = ingest_cpu(database_url, ingest_samples, monitoring=True)
        report.figures["ingest"] = {"plain": plain, "monitored": monitored,
                                    "added_cpu_share": (monitored["cpu_s"] - plain["cpu_s"]) / plain["cpu_s"]}
        report.ratio("ingest_cpu_with_vs_without_monitoring", "ingest.monitored.cpu_s", "ingest.plain.cpu_s")
    report.finish(database_url)
    return report


_WARM_MESSAGES = 40  # one DDATA message per device of the stream (4 nodes x 10 machines)


def ingest_cpu(database_url: str, samples: int, *, monitoring: bool) -> dict[str, float]:
    """Process CPU of the ingest path (decode, COPY, rollups) over `samples` pre-encoded DDATA samples of 2000
    process signals, with or without the monitoring service on its commit listener (both in this process;
    the database server's own CPU is not counted). Measured in steady state: a first message per device,
    before the measurement, lets both the ingest and the monitoring learn the tags."""
    from zhizao.bench.ingest import T0, _payloads
    from zhizao.cloud.ingest.service import IngestService
    from zhizao.cloud.ingest.settings import IngestSettings
    from zhizao.cloud.monitoring import MonitoringService

    warm_samples = _WARM_MESSAGES * 2000
    births, data, produced = _payloads(samples + warm_samples, nodes=4, machines=10, tags=50, per_message=2000)
    settings = IngestSettings(queue_max_bytes=2**40, batch_max_samples=50_000, batch_max_ms=200)
    with scratch_database(database_url, "monitor") as url:
        ingest = IngestService(url, "mqtt://127.0.0.1:1", host_id="zhizao-bench", settings=settings)
        ingest.start_pipeline_only()
        mon = MonitoringService(url, webhooks=False, check_every_s=3600.0) if monitoring else None
        try:
            if mon is not None:
                ingest._commit_listeners.append(mon.on_committed)  # the ingest already runs: add it directly
                mon.start()
            for topic, payload in births:
                ingest.submit(topic, payload, T0)
            deadline = time.monotonic() + 60
            while sum(len(x.devices) for x in ingest.sessions.all()) < 40 and time.monotonic() < deadline:
                time.sleep(0.01)
            # Steady state, as at cluster load: one message of every device first (every tag is known to the
            # ingest and registered with the monitoring), not counted; then the measured stream.
            warm, data = data[:_WARM_MESSAGES], data[_WARM_MESSAGES:]
            stored0 = ingest.stats()["samples_stored"]
            for topic, payload in warm:
                ingest.submit(topic, payload, T0 + 10**9)
            while ingest.stats()["samples_stored"] - stored0 < warm_samples and time.monotonic() < deadline + 60:
                time.sleep(0.01)
            if mon is not None:
                assert mon.flush(120)
            produced -= warm_samples
            stored0 = ingest.stats()["samples_stored"]
            seen0 = mon.stats()["samples"] if mon is not None else 0.0
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for topic, payload in data:
                ingest.submit(topic, payload, T0 + 10**9)
            while ingest.stats()["samples_stored"] - stored0 < produced:
                if time.perf_counter() - wall0 > 900:
                    raise click.ClickException("ingest did not store every sample within 900 s")
                time.sleep(0.005)
            if mon is not None:
                assert mon.flush(900), "monitoring did not catch up"
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            scored = mon.stats()["samples"] - seen0 if mon is not None else 0.0
        finally:
            if mon is not None:
                mon.stop()
            ingest.stop()
    return {"samples": float(produced), "cpu_s": cpu, "wall_s": wall, "monitored_samples": scored}


def _evaluate(scenario: Any, table: Any, failures: list[tuple[str, int, int]], acts: list[tuple[Any, ...]],
              start_ms: int, end_ms: int, names: dict[int, str] | None = None) -> dict[str, Any]:
    from zhizao.seeds.model import BearingWear, SensorDrift, ToolWear

    path_of = table.machine_paths
    machine_acts: dict[str, list[int]] = defaultdict(list)
    what: dict[tuple[str, int], str] = {}  # (machine, ts) -> source:signal, for the false-alarm breakdown
    for site, machine, source, tag, ts, _state in acts:
        if source in ("anomaly", "threshold", "rate") and machine:
            machine_acts[f"{site}/{machine}"].append(int(ts))
            what[(f"{site}/{machine}", int(ts))] = f"{source}:{(names or {}).get(tag, tag)}"
    # Windows in which each machine's faults develop, and the verdict per failure.
    windows: dict[str, list[tuple[int, int]]] = defaultdict(list)
    last_tool: dict[int, int] = {}
    per_fault: list[dict[str, Any]] = []
    for kind, m_i, ts in sorted(failures, key=lambda x: x[2]):
        machine = table.machines[m_i]
        path = path_of[m_i]
        key = "/".join(path.split("/")[::2])  # site/machine
        if kind == "jam_bursts":
            continue
        if kind == "bearing_wear":
            bearing = next(x for x in machine.faults if isinstance(x, BearingWear))
            begin = ts - int(bearing.life_h * HOUR_MS)
        elif kind == "tool_wear":
            next(x for x in machine.faults if isinstance(x, ToolWear))
            changed = last_tool.get(m_i, start_ms)
            begin = changed + (ts - changed) // 2  # the worn second half of the tool's life
            last_tool[m_i] = ts
        else:
            drift = next(x for x in machine.faults if isinstance(x, SensorDrift))
            begin = ts - int(drift.limit / drift.rate_per_h * HOUR_MS)
        windows[key].append((begin, ts + HOUR_MS))
        raised = [a for a in machine_acts.get(key, []) if begin <= a < ts]
        per_fault.append({"kind": kind, "machine": key, "failure_ts": ts, "alarmed": bool(raised),
                          "lead_h": (ts - raised[0]) / HOUR_MS if raised else None})
    # Faults still developing at the end count as windows too (no verdict: they have not failed yet).
    weeks = (end_ms - start_ms) / (7 * DAY_MS)
    false_alarms = 0
    false_by: dict[str, int] = defaultdict(int)
    for key, times_ in machine_acts.items():
        for a in times_:
            if not any(lo <= a < hi for lo, hi in windows.get(key, [])):
                false_alarms += 1
                false_by[what[(key, a)]] += 1
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in ("bearing_wear", "tool_wear", "sensor_drift"):
        rows = [p for p in per_fault if p["kind"] == kind]
        leads = [p["lead_h"] for p in rows if p["lead_h"] is not None]
        by_kind[kind] = {"failures": len(rows), "alarmed_before": sum(p["alarmed"] for p in rows),
                         "median_lead_h": median(leads) if leads else None}
    by_kind["jam_bursts"] = {"failures": sum(1 for k, _, _ in failures if k == "jam_bursts"),
                             "evaluated": False, "why": "stops, not a developing process fault"}
    # EEMUA 191 per site over 10-minute windows of data time (announced activations only).
    n_win = max(1, (end_ms - start_ms) // WINDOW_MS)
    eemua: dict[str, Any] = {}
    for site in [s.id for s in scenario.sites]:
        counts = np.zeros(n_win, np.int64)
        for s, _m, _src, _t, ts, state in acts:
            if s == site and state != "suppressed" and start_ms <= ts < end_ms:
                counts[min(n_win - 1, (int(ts) - start_ms) // WINDOW_MS)] += 1
        eemua[site] = {"avg_per_10min": float(counts.mean()), "peak_per_10min": int(counts.max()),
                       "flood_share": float((counts >= 10).mean())}
    n_machines = len(table.machines)
    return {"faults": by_kind, "per_fault": per_fault,
            "false_alarms": {"count": false_alarms, "per_machine_week": false_alarms / (n_machines * weeks),
                             "by_source_signal": dict(sorted(false_by.items(), key=lambda kv: -kv[1]))},
            "eemua": eemua, "machines": n_machines, "alarm_activations": len(acts)}


@click.command()
@click.option("--database-url", envvar="ZHIZAO_DATABASE_URL", required=True, metavar="URL",
              help="A PostgreSQL server; the bench creates and drops its own database there.")
@click.option("--days", type=float, default=7.0, show_default=True, help="Simulated days.")
@click.option("--dt", "dt_s", type=float, default=60.0, show_default=True, help="Simulated seconds per step.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--batch-min", type=float, default=10.0, show_default=True,
              help="Simulated minutes per committed batch.")
@click.option("--ingest-samples", type=click.IntRange(min=0), default=1_000_000, show_default=True,
              help="Samples for the ingest CPU comparison with and without monitoring (0: skip it).")
@json_option
def bench_monitor(database_url: str, days: float, dt_s: float, seed: int, batch_min: float, ingest_samples: int,
                  json_path: Path | None) -> None:
    """Seeded cluster with developing faults -> alarms before failure, false alarms, EEMUA 191, CPU."""
    report = run_monitor_bench(database_url, days, dt_s, seed, batch_min, ingest_samples)
    fig = report.figures
    click.echo(machine_line(report.machine))
    run = fig["run"]
    click.echo(f"{run['days']:g} simulated days at {run['dt_s']:g} s steps: {run['samples']:,} samples in "
               f"{run['wall_s']:.0f} s ({run['samples_per_s']:,.0f}/s), {fig['machines']} machines")
    for kind, row in fig["faults"].items():
        if row.get("evaluated", True):
            lead = row["median_lead_h"]
            click.echo(f"  {kind:13s} {row['alarmed_before']}/{row['failures']} alarmed before failure, median lead "
                       f"{'-' if lead is None else f'{lead:.1f} h'}")
        else:
            click.echo(f"  {kind:13s} {row['failures']} bursts, not evaluated ({row['why']})")
    fa = fig["false_alarms"]
    click.echo(f"  false alarms  {fa['count']} ({fa['per_machine_week']:.2f} per machine-week)")
    for site, e in fig["eemua"].items():
        click.echo(f"  {site:13s} EEMUA 191: {e['avg_per_10min']:.2f} alarms / 10 min, peak {e['peak_per_10min']},"
                   f" flood {100 * e['flood_share']:.1f} % of windows")
    cpu = fig["cpu"]
    click.echo(f"  detection CPU {cpu['monitoring_cpu_s']:.1f} s: {cpu['per_million_samples_s']:.1f} s per million samples,"
               f" {cpu['per_simulated_day_s']:.2f} s per simulated cluster day")
    if "ingest" in fig:
        ing = fig["ingest"]
        click.echo(f"  ingest CPU    {ing['plain']['samples']:,.0f} samples: {ing['plain']['cpu_s']:.1f} s without,"
                   f" {ing['monitored']['cpu_s']:.1f} s with monitoring: +{100 * ing['added_cpu_share']:.0f} %"
                   " (process CPU; the database server's not counted)")
    report.write(json_path)
