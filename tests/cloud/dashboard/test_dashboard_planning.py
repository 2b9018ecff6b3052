"""The planning page in Chromium: heat map of the cluster's free capacity, the order board, the accepted plan's
Gantt chart with changeovers and due dates, a re-plan proposal as a diff accepted by a cluster planner, and a
site engineer's view that holds no other site's lines or orders; English and Chinese."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.browser import browser_tab, fits
from zhizao.cloud.auth import create_token
from zhizao.cloud.planning.network import seed_network
from zhizao.cloud.seed import seed_database
from zhizao.cloud.service import CloudService
from zhizao.cloud.settings import CloudSettings
from zhizao.cloud.storage import apply_migrations
from zhizao.seeds import load_scenario
from zhizao.seeds.network import load_network


@pytest.fixture
def planning_cloud(fresh_database: str) -> Iterator[tuple[str, str, str]]:
    """The API and dashboard (no ingest) on the seeded cluster and network: (url, planner token, Hefei token)."""
    apply_migrations(fresh_database)
    scenario = load_scenario()
    seed_database(fresh_database, scenario)
    seed_network(fresh_database, load_network(scenario=scenario), scenario)
    now = datetime.now(UTC)
    all_day = {"shifts": [{"name": "all", "start": "00:00", "hours": 24, "days": [1, 2, 3, 4, 5, 6, 7]}]}
    with psycopg.connect(fresh_database) as conn:
        orders = [("hf-bms-1", "ah-hefei", "bms-slave", 900, 10), ("hf-bms-2", "ah-hefei", "bms-master", 700, 14),
                  ("sz-ecu-1", "js-suzhou", "ecu-main", 800, 12), ("sz-ecu-2", "js-suzhou", "ecu-tcu", 600, 20),
                  ("hf-mod-1", "ah-hefei", "mod-12s-280", 400, 30),
                  ("sh-c4-1", "sh-lingang", "crank-4c-15", 200, 16), ("sh-c6-1", "sh-lingang", "crank-6c-30", 100, 30)]
        # Around the clock at Suzhou and Lingang: the re-plan and the changeover below do not depend on the weekday.
        conn.execute("UPDATE oee_site_config SET calendar = %s WHERE site_id IN ('js-suzhou', 'sh-lingang')",
                     [json.dumps(all_day)])
        for i, (site, line, machine) in enumerate([("sh-lingang", "cnc-1", "cnc-1-m01"), ("js-suzhou", "smt-1", "smt-1-m01"),
                                                   ("zj-shaoxing", "pack-1", "pack-1-m01"), ("ah-hefei", "mod-1", "mod-1-m01")]):
            run = 6000 + 1000 * i  # availability 0.6, 0.7, 0.8, 0.9 of 10 000 planned seconds
            conn.execute(
                "INSERT INTO oee_windows (site_id, machine_id, line_id, kind, start_ts, end_ts, all_s, planned_s, run_s,"
                " ideal_s, good_ideal_s, total, good, loss_failure_s, loss_setup_s, loss_minor_s, loss_speed_s,"
                " loss_defect_s, loss_startup_s, stops, failures, microstops, flags) VALUES (%s, %s, %s, 'day', %s,"
                " %s, 86400, 10000, %s, %s, %s, 10, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)",
                [site, machine, line, now - timedelta(days=1), now, run, run, run])
        for oid, site, product, qty, due_h in orders:
            conn.execute("INSERT INTO plan_orders (order_id, site_id, product_id, quantity, due_ts) VALUES"
                         " (%s, %s, %s, %s, %s)", [oid, site, product, qty, now + timedelta(hours=due_h)])
    service = CloudService(CloudSettings(database_url=fresh_database, api_port=0), ingest=False, oee=False,
                           warm_up=False)
    url = service.start_in_thread()
    try:
        yield (url, create_token(fresh_database, "cluster-planner", "*", "planner"),
               create_token(fresh_database, "engineer", "ah-hefei", "hefei engineer"))
    finally:
        service.stop()


def _sign_in(page: Any, url: str, token: str) -> None:
    page.goto(f"{url}/")
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{url}/ui/#/planning")


def test_planning_page_heat_map_gantt_diff_and_site_view(planning_cloud: tuple[str, str, str], chromium: Any,
                                                         artifacts: Path) -> None:
    url, planner, hefei = planning_cloud
    auth = {"Authorization": f"Bearer {planner}"}
    with browser_tab(chromium, artifacts, "planning-failure.png") as (page, errors):
        _sign_in(page, url, planner)
        page.locator("table.heat").first.wait_for()
        assert page.locator("table.heat").first.locator("tbody th").count() == 8  # the seeded line kinds
        assert page.locator("td.heat-cell").count() > 0
        assert page.locator("table.orders tbody tr").count() == 7
        page.get_by_role("button", name="Plan now").click()
        page.get_by_role("button", name="Accept").click()
        page.locator("svg.gantt .gantt-lot").first.wait_for()
        lots = page.locator("svg.gantt .gantt-lot").count()
        assert lots >= 5
        assert page.locator("svg.gantt .gantt-due").count() == lots
        assert page.locator("svg.gantt .gantt-setup").count() >= 1  # 4- to 6-cylinder crankshafts on cnc-1
        fits(page)
        # smt-1 fails: the proposal moves its lots, shown as a diff.
        r = httpx.post(f"{url}/api/v1/planning/replan", headers=auth, timeout=30,
                       json={"site": "js-suzhou", "line": "smt-1", "hours": 96})
        assert r.status_code == 201, r.text
        moved = [c for c in r.json()["changes"] if c["change"] == "moved"]
        assert moved
        page.reload()
        page.locator("table.diff").wait_for()
        assert page.locator('table.diff tr[data-change="moved"]').count() == len(moved)
        page.get_by_role("button", name="Accept").click()
        page.locator("table.diff").wait_for(state="detached")
        # Production orders of the accepted plan, one started by the button, with its progress bar.
        rows = page.locator('table.pos tr[data-status="planned"]')
        assert rows.count() >= 5
        rows.first.get_by_role("button", name="Start").click()
        page.locator('table.pos tr[data-status="started"]').wait_for()
        assert page.locator('table.pos tr[data-status="started"] [role="progressbar"]').get_attribute(
            "aria-valuenow") == "0"
        # The plan shows it too: a progress strip on the started lot's bar, units made on the order board.
        page.locator("svg.gantt .gantt-made").wait_for()
        assert page.locator("svg.gantt .gantt-made").count() == 1
        assert page.locator("svg.gantt .gantt-made").get_attribute("data-made") == "0"
        assert page.locator("table.orders td.made").count() == 1
        # Chinese
        page.locator("#lang").click()
        page.get_by_role("heading", name="集群计划").wait_for()
        assert page.locator("svg.gantt .gantt-lot").count() >= 5
        assert not errors, errors
    with browser_tab(chromium, artifacts, "planning-site-failure.png") as (page, errors):
        _sign_in(page, url, hefei)
        page.locator("table.orders").wait_for()
        sites = page.locator("table.orders tbody tr td:nth-child(2)").all_inner_texts()
        assert sites and set(sites) == {"ah-hefei"}
        bms = page.locator('table.orders tr[data-order="hf-bms-1"] td:nth-child(8)')
        current = httpx.get(f"{url}/api/v1/planning/plans/current", headers={"Authorization": f"Bearer {hefei}"}).json()
        made_at = {lot["site_id"] for lot in current["lots"] if lot["order_id"] == "hf-bms-1"}
        assert made_at and set(bms.inner_text().split(", ")) == made_at  # where its order is made, no line named
        assert page.get_by_role("button", name="Plan now").count() == 0
        labels = page.locator("svg.gantt .gantt-label").evaluate_all("els => els.map((e) => e.textContent)")
        assert labels and all(label.startswith("ah-hefei/") for label in labels)  # Suzhou's lines are not named
        assert "js-suzhou/smt" not in page.content()
        everyone = page.locator('table.bench tr[data-kind="all"] td').nth(1)  # availability
        assert everyone.inner_text().splitlines() == ["90.0 %", "67.5 % · 75.0 % · 82.5 %"]
        module = page.locator('table.bench tr[data-kind="module-line"] td').nth(1)
        assert "fewer than 3 sites" in module.inner_text()
        assert not errors, errors
