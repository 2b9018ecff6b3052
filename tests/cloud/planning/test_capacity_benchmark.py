"""Capacity per line and day (calendar x shrunk measured A and P, minus planned stops and booked work) and the
anonymised benchmark (own figures against quartiles over at least three sites, never another site's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.support.apifixtures import bearer
from zhizao.cloud.planning import capacity

from .conftest import PlanTokens

SH = ZoneInfo("Asia/Shanghai")
LOSSES = ("loss_failure_s", "loss_setup_s", "loss_minor_s", "loss_speed_s", "loss_defect_s", "loss_startup_s")


def day_window(conn: psycopg.Connection[Any], site: str, line: str, machine: str, start: datetime, planned: float,
               run: float, ideal: float, good_ideal: float, failure: float = 0.0, setup: float = 0.0) -> None:
    conn.execute(
        "INSERT INTO oee_windows (site_id, machine_id, line_id, kind, start_ts, end_ts, all_s, planned_s, run_s, ideal_s,"
        " good_ideal_s, total, good, " + ", ".join(LOSSES) + ", stops, failures, microstops, flags) VALUES"
        " (%s, %s, %s, 'day', %s, %s, 86400, %s, %s, %s, %s, 100, 99, %s, %s, 0, 0, 0, 0, 0, 0, 0, 0)",
        [site, machine, line, start, start + timedelta(days=1), planned, run, ideal, good_ideal, failure, setup])


def test_capacity_from_calendar_measured_oee_planned_stops_and_booked_work(
        pclient: TestClient, ptokens: PlanTokens, seeded: str) -> None:
    now = datetime.now(UTC)
    today = now.astimezone(SH).date()
    tomorrow = datetime(today.year, today.month, today.day, tzinfo=SH) + timedelta(days=1)
    machines = ["mod-1-m01", "mod-1-m02", "mod-1-m03", "mod-1-m04"]
    with psycopg.connect(seeded) as conn:
        for d in (1, 2, 3):
            for m in machines:
                day_window(conn, "ah-hefei", "mod-1", m, now - timedelta(days=d, hours=1), 20_000, 16_000, 12_000, 11_900)
        day_window(conn, "ah-hefei", "mod-1", "mod-1-m01", now - timedelta(days=9), 20_000, 100, 100, 100)  # too old
        conn.execute("INSERT INTO oee_planned_stops (site_id, start_ts, end_ts, code, note) VALUES"
                     " ('ah-hefei', %s, %s, 170000, 'maintenance')",
                     [tomorrow + timedelta(hours=10), tomorrow + timedelta(hours=12)])
        plan = conn.execute("INSERT INTO plan_versions (origin_ts, solver, solve_s, weighted_tardiness, makespan_s,"
                            " changeover_s, transport_cost, status) VALUES (now(), 'test', 0, 0, 0, 0, 0, 'accepted')"
                            " RETURNING plan_id").fetchone()
        assert plan is not None
        conn.execute("INSERT INTO plan_orders (order_id, site_id, product_id, quantity, due_ts) VALUES"
                     " ('o1', 'ah-hefei', 'mod-16s-314', 100, %s)", [tomorrow + timedelta(days=2)])
        conn.execute("INSERT INTO production_orders (plan_id, lot_id, order_id, site_id, line_id, product_id, quantity,"
                     " seq, planned_start, planned_end) VALUES (%s, 'o1', 'o1', 'ah-hefei', 'mod-2', 'mod-16s-314', 100,"
                     " 0, %s, %s)", [plan[0], tomorrow + timedelta(hours=14), tomorrow + timedelta(hours=16)])
    r = pclient.get("/api/v1/planning/capacity?days=3", headers=bearer(ptokens.hefei))
    assert r.status_code == 200, r.text
    rows = {(x["line"], x["day"]): x for x in r.json()["lines"]}
    day = tomorrow.date().isoformat()
    k = capacity.K_S * 4
    a = (3 * 4 * 16_000 + k * capacity.A0) / (3 * 4 * 20_000 + k)
    p = (3 * 4 * 12_000 + k * capacity.P0) / (3 * 4 * 16_000 + k)
    m1, m2 = rows[("mod-1", day)], rows[("mod-2", day)]
    assert m1["availability"] == pytest.approx(a) and m1["performance"] == pytest.approx(p)
    assert (m2["availability"], m2["performance"]) == (capacity.A0, capacity.P0)  # nothing measured: the prior
    assert m1["planned_s"] == 21.5 * 3600  # two 12-hour shifts minus 2 x 75 min of breaks
    assert m1["stops_s"] == 7200
    assert m1["capacity_s"] == pytest.approx((21.5 * 3600 - 7200) * a * p)
    assert m1["booked_s"] == 0 and m1["free_s"] == m1["capacity_s"]
    assert m2["booked_s"] == pytest.approx(7200 * capacity.A0 * capacity.P0)
    assert m2["free_s"] == pytest.approx(m2["capacity_s"] - m2["booked_s"])
    cluster = {(c["capability"], c["day"]): c for c in r.json()["cluster"]}
    assert cluster[("module-line", day)]["free_s"] == pytest.approx(m1["free_s"] + m2["free_s"])
    # A collapsed week is floored, not planned at zero.
    with psycopg.connect(seeded) as conn:
        for d in range(1, 8):
            for m in ("smt-1-m01", "smt-1-m02"):
                day_window(conn, "js-suzhou", "smt-1", m, now - timedelta(days=d, hours=1), 80_000, 10, 0, 0)
    rows2 = pclient.get("/api/v1/planning/capacity?days=1", headers=bearer(ptokens.suzhou)).json()["lines"]
    smt1 = next(x for x in rows2 if x["line"] == "smt-1")
    assert smt1["availability"] == capacity.FLOOR


def test_benchmark_quartiles_over_three_sites_or_none(pclient: TestClient, ptokens: PlanTokens, seeded: str) -> None:
    start = datetime.now(UTC) - timedelta(days=2)
    oee = {"sh-lingang": ("cnc-1", "cnc-1-m01", 0.51), "js-suzhou": ("smt-1", "smt-1-m01", 0.74),
           "zj-shaoxing": ("pack-1", "pack-1-m01", 0.63), "ah-hefei": ("mod-1", "mod-1-m01", 0.8)}
    with psycopg.connect(seeded) as conn:
        for site, (line, machine, a) in oee.items():
            day_window(conn, site, line, machine, start, 10_000, 10_000 * a, 9_000 * a, 9_000 * a,
                       failure=10_000 * (1 - a) / 2, setup=10_000 * (1 - a) / 2)
    r = pclient.get("/api/v1/planning/benchmark?site=ah-hefei", headers=bearer(ptokens.hefei))
    assert r.status_code == 200, r.text
    kinds = {k["kind"]: k for k in r.json()["kinds"]}
    everyone = kinds["all"]
    assert everyone["sites"] == 4 and everyone["site"]["availability"] == pytest.approx(0.8)
    q1, med, q3 = np.quantile([0.51, 0.74, 0.63, 0.8], [0.25, 0.5, 0.75])
    assert everyone["cluster"]["availability"] == pytest.approx({"q1": q1, "median": med, "q3": q3, "n": 4})
    assert everyone["site"]["loss_share_equipment_failure"] == pytest.approx(0.5)
    assert kinds["module-line"]["sites"] == 1 and kinds["module-line"]["cluster"] is None  # fewer than three sites
    assert all(s not in r.text for s in ("sh-lingang", "js-suzhou", "zj-shaoxing"))
    numbers: list[float] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, float):
            numbers.append(v)

    walk(r.json())
    others = (0.51, 0.63, 0.74, 0.459, 0.567, 0.666)  # other sites' A and OEE appear nowhere
    assert not [n for n in numbers if any(abs(n - o) < 1e-9 for o in others)]
    assert pclient.get("/api/v1/planning/benchmark?site=js-suzhou", headers=bearer(ptokens.hefei)).status_code == 404
