"""OEE targets per line: seeded from the scenario (validated by the seed model), read and set through the API
(engineer, audited), read beside the current shift's actuals; Chinese names seeded with them."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
import yaml
from pydantic import ValidationError

from tests.support.apifixtures import make_client
from tests.support.oeefixtures import Running
from tests.support.reportfixtures import csv_blocks, current_shift_windows, pdf_text
from zhizao.cloud.auth import create_token
from zhizao.cloud.seed import seed_database
from zhizao.cloud.storage import apply_migrations
from zhizao.seeds import SEEDS_DIR, load_scenario
from zhizao.seeds.model import Scenario, format_validation_error


def client(r: Running, role: str, sites: str = "*") -> httpx.Client:
    token = create_token(r.db, role, sites, f"t-{role}-{sites.replace('*', 'all')}")
    return httpx.Client(base_url=r.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _targets(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT site_id, line_id, oee, availability, performance, quality, source, updated_at"
                            " FROM oee_line_targets ORDER BY 1, 2").fetchall()


def test_seed_writes_targets_and_chinese_names_and_keeps_api_edits(fresh_database: str) -> None:
    apply_migrations(fresh_database)
    scenario = load_scenario()
    counts = seed_database(fresh_database, scenario)
    want = sorted((s.id, ln.id, ln.target.oee, ln.target.availability, ln.target.performance, ln.target.quality)
                  for s in scenario.sites for ln in s.lines if ln.target is not None)
    assert counts.targets == len(want) == sum(len(s.lines) for s in scenario.sites)
    first = _targets(fresh_database)
    assert [r[:6] for r in first] == want and {r[6] for r in first} == {"seeds"}
    with psycopg.connect(fresh_database) as conn:
        names = dict(conn.execute("SELECT edge_node_id, name_zh FROM edge_nodes").fetchall())
        site_zh = dict(conn.execute("SELECT site_id, name_zh FROM sites").fetchall())
    assert names["cnc-1"] == "曲轴加工单元" and site_zh["sh-lingang"] == "临港动力总成与航空发动机零部件工厂"
    seed_database(fresh_database, scenario)
    assert _targets(fresh_database) == first  # seeding again changes nothing, not even updated_at
    with psycopg.connect(fresh_database) as conn:
        conn.execute("UPDATE oee_line_targets SET oee = 0.5, source = 'api' WHERE line_id = 'cnc-1'")
    seed_database(fresh_database, scenario)
    kept = {r[1]: r for r in _targets(fresh_database)}
    assert kept["cnc-1"][2] == 0.5 and kept["cnc-1"][6] == "api"


def test_seed_model_refuses_bad_targets() -> None:
    raw = yaml.safe_load((SEEDS_DIR / "cluster.yaml").read_text())
    raw["sites"][0]["lines"][0]["target"] = {"oee": 1.2}
    with pytest.raises(ValidationError) as exc:
        Scenario.model_validate(raw)
    assert any(line.startswith("sites[0].lines[0].target.oee: 1.2") for line in format_validation_error(exc.value))
    raw["sites"][0]["lines"][0]["target"] = {"oee": 0.9, "availability": 0.9, "performance": 0.9, "quality": 0.9}
    with pytest.raises(ValidationError, match="above availability x performance x quality"):
        Scenario.model_validate(raw)
    raw["sites"][0]["lines"][0]["target"] = {"oee": 0.8, "teep": 0.5}
    with pytest.raises(ValidationError, match="teep"):
        Scenario.model_validate(raw)


def test_target_api_roles_audit_validation_scope(running: Running) -> None:
    path = "/api/v1/sites/site-a/lines/l1/target"
    assert running.client.get(path).json()["target"] is None
    body = {"oee": 0.8, "availability": 0.9, "performance": 0.95, "quality": 0.99}
    for role in ("viewer", "operator"):
        with client(running, role) as c:
            assert c.put(path, json=body).status_code == 403
    with client(running, "engineer", "site-a") as eng:
        ok = eng.put(path, json=body)
        assert ok.status_code == 200, ok.text
        assert ok.json()["target"]["oee"] == 0.8 and ok.json()["target"]["source"] == "api"
        for bad, field in (({"oee": 1.5}, "oee"), ({"oee": 0.8, "quality": 0}, "quality"),
                           ({"oee": 0.8, "tepe": 0.5}, "tepe")):
            resp = eng.put(path, json=bad)
            assert resp.status_code == 400 and resp.json()["error"]["field"] == field, resp.text
        resp = eng.put(path, json={"oee": 0.9, "availability": 0.9, "performance": 0.9, "quality": 0.9})
        assert resp.status_code == 400 and "above availability" in resp.json()["error"]["message"]
        assert eng.put("/api/v1/sites/site-a/lines/nope/target", json=body).status_code == 404
        assert eng.put("/api/v1/sites/site-b/lines/l9/target", json=body).status_code == 404
        assert eng.put(path, json={"oee": 0.7}).status_code == 200
    with psycopg.connect(running.db) as conn:
        audit = conn.execute("SELECT actor, site_id, target, detail FROM audit_log WHERE action = 'oee.target.put'"
                             " ORDER BY id").fetchall()
    assert [(a[0], a[1], a[2]) for a in audit] == [("t-engineer-site-a", "site-a", "l1")] * 2
    assert audit[1][3]["old"]["oee"] == 0.8 and audit[1][3]["new"]["oee"] == 0.7
    got = running.client.get(path).json()
    assert got["target"] == {**got["target"], "oee": 0.7, "availability": None, "updated_by": "t-engineer-site-a"}
    with client(running, "viewer", "site-b") as other:
        assert other.get(path).status_code == 404
        assert [t["line"] for t in other.get("/api/v1/targets").json()] == ["l9"]


def test_targets_list_carries_the_current_shift_actuals_by_sums(running: Running) -> None:
    running.client.put("/api/v1/sites/site-a/lines/l1/target", json={"oee": 0.6}).raise_for_status()
    start = current_shift_windows(running.db)
    listed = running.client.get("/api/v1/targets", params={"site": "site-a"}).json()
    by_line = {t["line"]: t for t in listed}
    assert set(by_line) == {"l1", "l2"} and by_line["l2"]["target"] is None and by_line["l2"]["current"] is None
    l1 = by_line["l1"]
    assert l1["current"]["start"] == start.isoformat()
    assert l1["current"]["oee"] == pytest.approx((1800 + 900) / (3600 + 1000))
    assert l1["current"]["availability"] == pytest.approx(4000 / 4600)
    assert l1["on_target"] is False and l1["target"]["oee"] == 0.6
    running.client.put("/api/v1/sites/site-a/lines/l1/target", json={"oee": 0.55}).raise_for_status()
    assert running.client.get("/api/v1/sites/site-a/lines/l1/target").json()["on_target"] is True


def test_seeded_cluster_report_without_data_has_the_seeded_chinese_names(fresh_database: str) -> None:
    """A seeded site whose shift has no OEE data yet: every line listed with no figures, no crash in any format."""
    apply_migrations(fresh_database)
    scenario = load_scenario()
    seed_database(fresh_database, scenario)
    token = create_token(fresh_database, "viewer", "sh-lingang", "seeded-viewer")
    params = {"site": "sh-lingang", "shift_start": "2026-11-02T08:00", "lang": "zh"}  # Monday, shift A, local
    with make_client(fresh_database) as api:
        api.headers["Authorization"] = f"Bearer {token}"
        body = api.get("/api/v1/reports/shift", params=params).json()
        assert body["shift"]["name"] == "A" and body["shift"]["start"] == "2026-11-02T00:00:00+00:00"
        lines = {ln["id"]: ln for ln in body["lines"]}
        assert set(lines) == {ln.id for ln in scenario.sites[0].lines}
        assert lines["cnc-1"]["label"] == "曲轴加工单元" and lines["cnc-1"]["target"]["oee"] == 0.75
        assert lines["cnc-1"]["machines"] == 0 and lines["cnc-1"]["oee"] is None and lines["cnc-1"]["on_target"] is None
        text = pdf_text(api.get("/api/v1/reports/shift", params={**params, "format": "pdf"}).content)
        assert "曲轴加工单元" in text and "航空发动机整体叶盘与机匣单元" in text and "本班次无 OEE 数据" in text
        blocks = csv_blocks(api.get("/api/v1/reports/shift", params={**params, "format": "csv"}).content)
        assert {r["line_id"] for r in blocks["figures"] if r["level"] == "line"} == set(lines)
        # Saturday's shifts exist, Sunday has none: the refusal says so.
        resp = api.get("/api/v1/reports/shift", params={**params, "shift_start": "2026-11-08T08:00"})
        assert resp.status_code == 404 and "no shift starts that day" in resp.json()["error"]["message"]
