"""OEE test helpers: a small two-site fleet in the database, scripted machine data, and the reference answer."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import psycopg
import pytest

from zhizao.analytics import OeeResult, reference_fleet_oee
from zhizao.analytics.oee import kernel as k
from zhizao.broker.contract.calendar import Calendar, StateClasses
from zhizao.cloud.oee.calendar import WINDOW_KINDS, PlannedStop, SiteCalendar
from zhizao.cloud.oee.store import dt
from zhizao.cloud.storage import apply_migrations

if TYPE_CHECKING:
    from zhizao.cloud.service import CloudService

# 2026-11-02 08:00 in Shanghai (a Monday): the start of shift A.
T0 = int(datetime(2026, 11, 2, 0, 0, tzinfo=UTC).timestamp() * 1000)
MIN = 60_000
TZ = "Asia/Shanghai"
CALENDAR: dict[str, Any] = {
    "shifts": [
        {"name": "A", "start": "08:00", "hours": 8, "days": [1, 2, 3, 4, 5, 6, 7],
         "breaks": [{"start": "10:00", "minutes": 15}, {"start": "12:00", "minutes": 30},
                    {"start": "15:00", "minutes": 15}]},
        {"name": "B", "start": "16:00", "hours": 8, "days": [1, 2, 3, 4, 5, 6, 7]},
    ],
    "no_shift": [],
}  # fmt: skip
# As in the Shaoxing seeds: material stops are performance losses (they stay in run time).
CLASSES = {
    "planned": [150000, 160000, 170000],
    "availability_loss": [40000, 100000, 110000, 120000, 130000, 140000, 180000, 190000, 200000, 210000, 220000],
    "performance_loss": [20000, 50000, 60000, 70000, 80000, 90000],
}
FLEET = {"site-a": {"l1": ["m1", "m2"], "l2": ["m3"]}, "site-b": {"l9": ["m9"]}}
ROLES = ("State", "Counts/Total", "Counts/Good", "Rate/Ideal", "Temperature/Spindle")


@dataclass
class Running:
    """A started service, its database, tags and an admin client."""

    url: str
    db: str
    service: CloudService
    tags: dict[tuple[str, str, str], int]
    client: httpx.Client


@dataclass
class MachineData:
    """Samples of one machine per metric: (ts ms, value) lists."""

    site: str
    line: str
    machine: str
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def site_calendar(site: str, calendar: dict[str, Any] | None = None,
                  planned_stops: list[PlannedStop] | None = None, microstop_s: float = 120.0,
                  startup_s: float = 0.0) -> SiteCalendar:
    """The SiteCalendar the service builds for the fixture sites."""
    return SiteCalendar(site, TZ, Calendar.model_validate(calendar or CALENDAR), StateClasses.model_validate(CLASSES),
                        planned_stops or [], microstop_s, startup_s)


def make_fleet(url: str) -> dict[tuple[str, str, str], int]:
    """Migrate, then insert sites, edge nodes, machines, tags and OEE site configs; (site, machine, metric) -> tag id."""
    apply_migrations(url)
    tags: dict[tuple[str, str, str], int] = {}
    with psycopg.connect(url) as conn:
        for site, lines in FLEET.items():
            conn.execute("INSERT INTO sites (site_id, name, tz) VALUES (%s, %s, %s)", [site, site, TZ])
            conn.execute(
                "INSERT INTO oee_site_config (site_id, tz, calendar, state_classes, source) VALUES (%s, %s, %s, %s, 'test')",
                [site, TZ, json.dumps(CALENDAR), json.dumps(CLASSES)],
            )
            for line, machines in lines.items():
                conn.execute("INSERT INTO edge_nodes (site_id, edge_node_id, online) VALUES (%s, %s, true)", [site, line])
                for m in machines:
                    conn.execute("INSERT INTO machines (site_id, machine_id, edge_node_id, line_id, online)"
                                 " VALUES (%s, %s, %s, %s, true)", [site, m, line, line])
                    for name in ROLES:
                        row = conn.execute(
                            "INSERT INTO tags (site_id, edge_node_id, machine_id, name, datatype) VALUES"
                            " (%s, %s, %s, %s, 10) RETURNING tag_id", [site, line, m, name]).fetchone()
                        assert row is not None
                        tags[(site, m, name)] = int(row[0])
    return tags


def scripted(site: str, line: str, machine: str, segments: list[tuple[int, int, int, int]], rate: float,
             start: int = T0) -> MachineData:
    """A machine following `segments` of (minutes, state code, made, rejects), counts spread per minute."""
    d = MachineData(site, line, machine, {name: [] for name in ROLES})
    d.series["Rate/Ideal"].append((start, rate))
    t, total, bad = start, 0, 0
    d.series["Counts/Total"].append((t, 0.0))
    d.series["Counts/Good"].append((t, 0.0))
    for minutes, code, made, rejects in segments:
        d.series["State"].append((t, float(code)))
        for i in range(1, minutes + 1):
            new_total = total + made * i // minutes - made * (i - 1) // minutes
            new_bad = bad + rejects * i // minutes - rejects * (i - 1) // minutes
            if new_total != total:
                d.series["Counts/Total"].append((t + i * MIN, float(new_total)))
                d.series["Counts/Good"].append((t + i * MIN, float(new_total - new_bad)))
            total, bad = new_total, new_bad
            d.series["Temperature/Spindle"].append((t + i * MIN, 40.0 + (i % 5)))
        t += minutes * MIN
    return d


V1_SEGMENTS = [  # reference/oee-vectors.json V1 (shift 08:00-16:00 with the fixture calendar's breaks)
    (120, 20000, 6200, 136), (15, 150000, 0, 0), (105, 20000, 5425, 119), (30, 150001, 0, 0),
    (60, 20000, 3100, 68), (47, 180000, 0, 0), (43, 20000, 2222, 49), (15, 150000, 0, 0), (45, 20000, 2324, 51),
]  # fmt: skip


def random_machine(site: str, line: str, machine: str, seed: int, hours: int = 14) -> MachineData:
    """Random but plausible states and counts from T0 - 1 h, with an ideal-rate change half-way."""
    rng = np.random.default_rng(seed)
    codes = [10000, 20000, 40000, 50000, 60000, 100000, 150000, 180000, 40000]
    rate = float(rng.choice([30.0, 60.0, 120.0]))
    segs: list[tuple[int, int, int, int]] = []
    minutes = 0
    while minutes < hours * 60:
        code = 10000 if rng.random() < 0.5 else int(rng.choice(codes))
        length = int(rng.integers(1, 40)) if code >= 40000 else int(rng.integers(5, 90))
        made = int(length * rate * rng.uniform(0.6, 0.95)) if code < 30000 else 0
        segs.append((length, code, made, int(made * rng.uniform(0, 0.05))))
        minutes += length
    d = scripted(site, line, machine, segs, rate, start=T0 - 60 * MIN)
    half = T0 + hours * 30 * MIN
    d.series["Rate/Ideal"].append((half, rate * 1.25))
    return d


def batches(data: list[MachineData], tags: dict[tuple[str, str, str], int], step_ms: int
            ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """All samples cut into time slices of `step_ms` (one slice = one committed batch), in time order."""
    rows = [(ts, tags[(d.site, d.machine, name)], v) for d in data for name, s in d.series.items() for ts, v in s]
    rows.sort()
    arr = np.array(rows, dtype=np.float64)
    ts = arr[:, 0].astype(np.int64)
    out = []
    lo = int(ts.min())
    while lo <= ts.max():
        sel = (ts >= lo) & (ts < lo + step_ms)
        if sel.any():
            out.append((arr[sel, 1].astype(np.int32), ts[sel], arr[sel, 2]))
        lo += step_ms
    return out


def store_batch(conn: psycopg.Connection[tuple[object, ...]], tag: np.ndarray, ts: np.ndarray, value: np.ndarray) -> None:
    """Write samples as the ingest would (before its commit listeners run)."""
    conn.execute(
        "INSERT INTO samples (ts, tag_id, value) SELECT 'epoch'::timestamptz + t * interval '1 millisecond', g, v"
        " FROM unnest(%s::bigint[], %s::integer[], %s::float8[]) AS x(t, g, v) ON CONFLICT DO NOTHING",
        [ts.tolist(), tag.tolist(), value.tolist()],
    )
    conn.execute(
        "INSERT INTO latest_values (tag_id, ts, value) SELECT DISTINCT ON (g) g,"
        " 'epoch'::timestamptz + t * interval '1 millisecond', v"
        " FROM unnest(%s::bigint[], %s::integer[], %s::float8[]) AS x(t, g, v) ORDER BY g, t DESC"
        " ON CONFLICT (tag_id) DO UPDATE SET ts = excluded.ts, value = excluded.value WHERE excluded.ts > latest_values.ts",
        [ts.tolist(), tag.tolist(), value.tolist()],
    )
    conn.commit()


def reference(d: MachineData, cal: SiteCalendar, windows: list[tuple[int, int]],
              reasons: dict[int, int] | None = None) -> OeeResult:
    """The reference twin over the machine's whole history, windows clipped to its last sample."""
    horizon = max(ts for s in d.series.values() for ts, _ in s)
    st = d.series["State"]
    codes = [int((reasons or {}).get(t, c)) for t, c in st]
    tot = d.series["Counts/Total"]
    good = d.series["Counts/Good"]
    rates = d.series["Rate/Ideal"]
    ws = [w[0] for w in windows]
    we = [min(w[1], horizon) for w in windows]
    lo = min(t for t, _ in st) - 86_400_000
    ps, pe = cal.plan_intervals(lo, max(we) + 86_400_000)
    return reference_fleet_oee(
        cal.config,
        state_offsets=[0, len(st)], state_time=[t for t, _ in st], state_code=codes,
        count_offsets=[0, len(tot)], count_time=[t for t, _ in tot], count_total=[int(v) for _, v in tot],
        count_good=[int(v) for _, v in good],
        rate_offsets=[0, len(rates)], rate_time=[t for t, _ in rates], rate_per_min=[v for _, v in rates],
        plan_offsets=[0, len(ps)], plan_start=ps, plan_end=pe,
        window_offsets=[0, len(ws)], window_start=ws, window_end=we,
    )


def feed(r: Running, data: list[MachineData], step_ms: int = 7 * MIN) -> None:
    """Store and hand over the data as committed batches, as the ingest would."""
    oee = r.service.oee
    assert oee is not None
    with psycopg.connect(r.db) as conn:
        for tag, ts, value in batches(data, r.tags, step_ms):
            store_batch(conn, tag, ts, value)
            oee.on_committed(tag, ts, value)
    assert oee.flush(60), "the OEE service did not catch up"


def api_oee(r: Running, scope: str, window: str, site: str | None = None, ident: str | None = None,
            lo: int = T0 - 120 * MIN, hi: int = T0 + 24 * 60 * MIN) -> list[dict[str, Any]]:
    params = {"scope": scope, "window": window, "from": dt(lo).isoformat(), "to": dt(hi).isoformat()}
    if site:
        params["site"] = site
    if ident:
        params["id"] = ident
    resp = r.client.get("/api/v1/oee", params=params)
    assert resp.status_code == 200, resp.text
    rows: list[dict[str, Any]] = resp.json()
    return rows


def check_machine_windows(r: Running, d: MachineData, calendar: dict[str, Any] | None = None,
                          reasons: dict[int, int] | None = None, planned_stops: list[PlannedStop] | None = None,
                          microstop_s: float = 120.0, startup_s: float = 0.0) -> dict[str, dict[int, dict[str, float]]]:
    """Every window of the machine from the API equals the reference twin; returns the reference sums."""
    cal = site_calendar(d.site, calendar, planned_stops, microstop_s, startup_s)
    out: dict[str, dict[int, dict[str, float]]] = {}
    for kind in WINDOW_KINDS:
        rows = api_oee(r, "machine", kind, d.site, d.machine)
        assert rows, f"no {kind} windows for {d.machine}"
        wins = [(int(dt_ms(x["start"])), int(dt_ms(x["end"]))) for x in rows]
        ref = reference(d, cal, wins, reasons)
        out[kind] = {}
        for i, row in enumerate(rows):
            check_row(row, ref, i, f"{d.machine} {kind} {row['start']}")
            out[kind][wins[i][0]] = {
                "planned": float(ref.planned_s[i]), "run": float(ref.run_s[i]), "ideal": float(ref.ideal_s[i]),
                "good_ideal": float(ref.ideal_s[i] - ref.floats[i, k.F_LOSS_DEFECT_S] - ref.floats[i, k.F_LOSS_STARTUP_S]),
            }
    return out


def check_row(row: dict[str, Any], ref: OeeResult, i: int, where: str) -> None:
    """Every figure of one machine window row of /api/v1/oee equals window `i` of the reference twin."""
    for key, want in (("all_s", ref.all_s[i]), ("planned_s", ref.planned_s[i]), ("run_s", ref.run_s[i]),
                      ("repair_s", ref.repair_s[i]), ("output_ideal_s", ref.ideal_s[i])):
        assert row[key] == pytest.approx(want, abs=1e-6), f"{where}: {key}"
    for key, n in (("total", ref.total[i]), ("good", ref.good[i]), ("stops", ref.stops[i]),
                   ("failures", ref.failures[i]), ("microstops", ref.microstops[i])):
        assert row[key] == n, f"{where}: {key} {row[key]} != {n}"
    for name, values in ref.losses_s().items():
        assert row["losses"][name] == pytest.approx(values[i], abs=1e-6), f"{where}: loss {name}"
    for key in ("availability", "performance", "quality", "oee", "teep", "mtbf_s", "mttr_s"):
        want = float(getattr(ref, key)[i])
        assert (row[key] is None) == math.isnan(want), f"{where}: {key} {row[key]} vs {want}"
        if not math.isnan(want):
            assert row[key] == pytest.approx(want, rel=1e-9, abs=1e-9), f"{where}: {key}"
    capped = bool(ref.flags[i] & k.FLAG_PERFORMANCE_CAPPED)
    assert row["performance_capped"] is capped, f"{where}: performance_capped"


def dt_ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


