"""Planning through the API on the seeded cluster: orders (API and CSV), a plan, its acceptance as production
orders, a re-plan after a line goes down shown as a diff, and what each site may see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from tests.support.apifixtures import bearer
from tests.support.db import count

from .conftest import PlanTokens


def _due(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def test_orders_plan_accept_replan_and_isolation(pclient: TestClient, ptokens: PlanTokens, seeded: str) -> None:
    hefei, suzhou, planner = bearer(ptokens.hefei), bearer(ptokens.suzhou), bearer(ptokens.planner)
    # Hefei orders BMS boards from Suzhou (allowed there only, though its own bms-1 line makes them too) and
    # modules (its own lines).
    r = pclient.post("/api/v1/planning/orders", headers=hefei, json={
        "order_id": "hf-bms-1", "site_id": "ah-hefei", "product_id": "bms-slave", "quantity": 600,
        "due": _due(30), "weight": 3, "allowed_sites": ["js-suzhou"]})
    assert r.status_code == 201, r.text
    csv_text = ("order_id,site_id,product_id,quantity,due,weight,allowed_sites\n"
                f"hf-mod-1,ah-hefei,mod-12s-280,500,{_due(48)},1,ah-hefei\n"
                f"hf-bms-2,ah-hefei,bms-master,400,{_due(40)},2,js-suzhou\n")
    r = pclient.post("/api/v1/planning/orders/import", headers={**hefei, "Content-Type": "text/csv"}, content=csv_text)
    assert r.status_code == 201 and r.json()["imported"] == 2, r.text
    r = pclient.post("/api/v1/planning/orders", headers=suzhou, json={
        "order_id": "sz-ecu-1", "site_id": "js-suzhou", "product_id": "ecu-main", "quantity": 900, "due": _due(36)})
    assert r.status_code == 201, r.text

    # Bad input names the field and value; a CSV error names the row; nothing of a bad file is kept.
    r = pclient.post("/api/v1/planning/orders", headers=hefei, json={
        "site_id": "ah-hefei", "product_id": "warp-drive", "quantity": 1, "due": _due(5)})
    assert r.status_code == 400 and r.json()["error"]["field"] == "product_id"
    bad = f"site_id,product_id,quantity,due\nah-hefei,mod-12s-280,10,{_due(5)}\nah-hefei,mod-12s-280,-3,{_due(5)}\n"
    r = pclient.post("/api/v1/planning/orders/import", headers={**hefei, "Content-Type": "text/csv"}, content=bad)
    assert r.status_code == 400 and r.json()["error"]["field"] == "row 2.quantity", r.text
    # An order for another site is outside the token's scope: 404, as for every site-scoped object.
    r = pclient.post("/api/v1/planning/orders", headers=hefei, json={
        "site_id": "js-suzhou", "product_id": "ecu-main", "quantity": 1, "due": _due(5)})
    assert r.status_code == 404
    assert pclient.get("/api/v1/planning/orders/sz-ecu-1", headers=hefei).status_code == 404
    assert {o["order_id"] for o in pclient.get("/api/v1/planning/orders", headers=hefei).json()} == {
        "hf-bms-1", "hf-mod-1", "hf-bms-2"}
    assert len(pclient.get("/api/v1/planning/orders", headers=planner).json()) == 4

    # Edit and cancel, audited.
    r = pclient.patch("/api/v1/planning/orders/hf-mod-1", headers=hefei, json={"quantity": 450})
    assert r.status_code == 200 and r.json()["quantity"] == 450
    extra = pclient.post("/api/v1/planning/orders", headers=hefei, json={
        "site_id": "ah-hefei", "product_id": "mod-16s-314", "quantity": 5, "due": _due(90)}).json()
    assert pclient.post(f"/api/v1/planning/orders/{extra['order_id']}/cancel", headers=hefei).json()["status"] == "cancelled"

    # Only a cluster planner for every site plans; a site's admin may not.
    assert pclient.post("/api/v1/planning/plans", headers=bearer(ptokens.admin_hefei)).status_code == 403
    assert pclient.post("/api/v1/planning/plans", headers=hefei).status_code == 403
    r = pclient.post("/api/v1/planning/plans", headers=planner)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["solver"] == "iterated-greedy" and first["lots"] >= 4
    plan = pclient.get(f"/api/v1/planning/plans/{first['plan_id']}", headers=planner).json()
    bms = [lot for lot in plan["lots"] if lot["order_id"] in ("hf-bms-1", "hf-bms-2")]
    assert bms and all(lot["site_id"] == "js-suzhou" for lot in bms)
    assert all(lot["arrival_ts"] > lot["end_ts"] for lot in bms)  # trucked 400 km to Hefei
    assert {lot["site_id"] for lot in plan["lots"] if lot["order_id"] == "hf-mod-1"} == {"ah-hefei"}

    # Suzhou sees the lots it makes, not whose orders they are; Hefei sees where its orders go, not the line.
    sz = pclient.get(f"/api/v1/planning/plans/{first['plan_id']}", headers=suzhou).json()
    foreign = [lot for lot in sz["lots"] if lot["product_id"] in ("bms-slave", "bms-master")]
    assert foreign and all(lot["order_id"] is None and lot["line_id"] is not None for lot in foreign)
    assert sz["weighted_tardiness"] is None
    hf = pclient.get(f"/api/v1/planning/plans/{first['plan_id']}", headers=hefei).json()
    assert {lot["order_id"] for lot in hf["lots"]} == {lot["order_id"] for lot in plan["lots"]} - {"sz-ecu-1"}
    assert all(lot["line_id"] is None for lot in hf["lots"] if lot["site_id"] == "js-suzhou")
    lingang = pclient.get(f"/api/v1/planning/plans/{first['plan_id']}", headers=bearer(ptokens.lingang_viewer)).json()
    assert lingang["lots"] == []

    r = pclient.post(f"/api/v1/planning/plans/{first['plan_id']}/accept", headers=planner)
    assert r.status_code == 200 and r.json()["production_orders"] == len(plan["lots"])
    assert pclient.post(f"/api/v1/planning/plans/{first['plan_id']}/accept", headers=planner).status_code == 409
    pos = pclient.get("/api/v1/planning/production-orders", headers=suzhou).json()
    assert pos and {p["site_id"] for p in pos} == {"js-suzhou"}
    assert all(p["order_id"] is None for p in pos if p["product_id"].startswith("bms"))
    # Another site's production orders: 404, whatever the role; a viewer may not start one of its own.
    assert pclient.post(f"/api/v1/planning/production-orders/{pos[0]['po_id']}/start", headers=hefei).status_code == 404
    assert pclient.get("/api/v1/planning/production-orders?site=js-suzhou", headers=hefei).status_code == 404
    assert pclient.get("/api/v1/planning/production-orders", headers=hefei).json() == [
        p for p in pclient.get("/api/v1/planning/production-orders", headers=planner).json() if p["site_id"] == "ah-hefei"]

    # smt-1 goes down for four days: the re-plan moves its lots to smt-2 and says so.
    on_smt1 = {lot["lot_id"] for lot in plan["lots"] if lot["line_id"] == "smt-1"}
    assert on_smt1
    r = pclient.post("/api/v1/planning/replan", headers=planner,
                     json={"site": "js-suzhou", "line": "smt-1", "hours": 96, "reason": "spindle failure"})
    assert r.status_code == 201, r.text
    proposal = r.json()
    assert proposal["solve_s"] < 1.0 and proposal["base_plan_id"] == first["plan_id"]
    moved = {c["lot_id"] for c in proposal["changes"] if c["change"] == "moved"}
    assert moved == on_smt1
    assert all(c["to_line"] == "smt-2" for c in proposal["changes"] if c["change"] == "moved")
    # A site reads that there is a re-plan, not which line of another site went down.
    listed = {p["plan_id"]: p for p in pclient.get("/api/v1/planning/plans", headers=hefei).json()}
    assert listed[proposal["plan_id"]]["reason"] == "replan" and "basis" not in listed[proposal["plan_id"]]
    mine = pclient.get(f"/api/v1/planning/plans/{proposal['plan_id']}", headers=hefei).json()
    assert "smt-1" not in str(mine) and "basis" not in mine
    full = pclient.get(f"/api/v1/planning/plans/{proposal['plan_id']}", headers=planner).json()
    assert full["reason"] == "replan: spindle failure"
    diff = pclient.get(f"/api/v1/planning/plans/{proposal['plan_id']}/diff", headers=hefei).json()["changes"]
    assert diff and all(c["to_line"] is None for c in diff)  # Hefei sees that its lots move, not the lines
    r = pclient.post(f"/api/v1/planning/plans/{proposal['plan_id']}/reject", headers=planner)
    assert r.json()["status"] == "rejected"
    assert count(seeded, "SELECT count(*) FROM audit_log WHERE action LIKE 'planning.%%'") >= 8
    # The rejected proposal changed nothing: smt-1 keeps its production orders.
    assert count(seeded, "SELECT count(*) FROM production_orders WHERE status = 'planned' AND line_id = 'smt-1'") == len(on_smt1)


def test_capacity_and_model_show_own_lines_and_the_cluster_aggregate(pclient: TestClient, ptokens: PlanTokens) -> None:
    r = pclient.get("/api/v1/planning/capacity?days=3", headers=bearer(ptokens.hefei))
    assert r.status_code == 200, r.text
    body = r.json()
    assert {row["site"] for row in body["lines"]} == {"ah-hefei"}
    assert {row["line"] for row in body["lines"]} == {"mod-1", "mod-2", "bms-1"}
    assert {c["capability"] for c in body["cluster"]} >= {"smt-line", "module-line", "crankshaft-cell"}
    assert all("site" not in c and "line" not in c for c in body["cluster"])
    for row in body["lines"]:
        assert row["availability"] == 0.85 and row["performance"] == 0.9  # the prior: nothing measured yet
        assert 0 <= row["free_s"] <= row["capacity_s"] <= row["planned_s"]
    model = pclient.get("/api/v1/planning/model", headers=bearer(ptokens.hefei)).json()
    assert {ln["site_id"] for ln in model["lines"]} == {"ah-hefei"}
    assert len(model["products"]) == 14 and len(model["transport"]) == 12
    r = pclient.put("/api/v1/planning/lines/js-suzhou/smt-1/changeovers", headers=bearer(ptokens.hefei),
                    json=[{"from_family": "ecu-board", "to_family": "bms-board", "minutes": 10}])
    assert r.status_code == 404
    r = pclient.put("/api/v1/planning/lines/js-suzhou/smt-1/changeovers", headers=bearer(ptokens.suzhou),
                    json=[{"from_family": "ecu-board", "to_family": "bms-board", "minutes": 10}])
    assert r.status_code == 200
    r = pclient.put("/api/v1/planning/transport/js-suzhou/ah-hefei", headers=bearer(ptokens.suzhou),
                    json={"hours": 1, "cost": 1})
    assert r.status_code == 403


def test_master_data_edits_are_audited_and_survive_seeding_again(pclient: TestClient, ptokens: PlanTokens,
                                                                  seeded: str) -> None:
    from zhizao.cloud.planning.network import seed_network
    from zhizao.seeds import load_scenario
    from zhizao.seeds.network import load_network

    planner = bearer(ptokens.planner)
    r = pclient.put("/api/v1/planning/products/gateway-board", headers=planner,
                    json={"name": "Telematics gateway board", "family_id": "ecu-board", "unit": "board"})
    assert r.status_code == 200, r.text
    r = pclient.put("/api/v1/planning/line-kinds/smt-line/makes/gateway-board", headers=planner,
                    json={"rate_per_min": 2.5, "yield": 0.99})
    assert r.status_code == 200, r.text
    r = pclient.put("/api/v1/planning/line-kinds/smt-line/makes/ecu-main", headers=planner, json={"rate_per_min": 2.0})
    assert r.status_code == 200
    r = pclient.put("/api/v1/planning/line-kinds/smt-line/makes/ecu-main", headers=planner, json={"rate_per_min": -1})
    assert r.status_code == 400 and r.json()["error"]["field"] == "rate_per_min"
    assert pclient.put("/api/v1/planning/line-kinds/no-such/makes/ecu-main", headers=planner,
                       json={"rate_per_min": 1}).status_code == 404
    assert pclient.put("/api/v1/planning/products/x", headers=bearer(ptokens.suzhou),
                       json={"family_id": "ecu-board"}).status_code == 403
    # Suzhou's engineer makes smt-2 a packing line (what it can make follows its kind); not a line elsewhere.
    suzhou = bearer(ptokens.suzhou)
    r = pclient.put("/api/v1/planning/lines/js-suzhou/smt-2", headers=suzhou, json={"kind_id": "packing-line"})
    assert r.status_code == 200 and r.json()["output_machine"] == "smt-2-m05", r.text
    r = pclient.put("/api/v1/planning/lines/js-suzhou/smt-2", headers=suzhou,
                    json={"kind_id": "smt-line", "output_machine": "pack-1-m01"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "output_machine"
    assert pclient.put("/api/v1/planning/lines/ah-hefei/mod-1", headers=suzhou,
                       json={"kind_id": "smt-line"}).status_code == 404
    scenario = load_scenario()
    seed_network(seeded, load_network(scenario=scenario), scenario)  # the seeds again: the API's edits stay
    model = pclient.get("/api/v1/planning/model", headers=planner).json()
    smt = next(k for k in model["line_kinds"] if k["kind_id"] == "smt-line")
    rates = {c["product_id"]: c["rate_per_min"] for c in smt["makes"]}
    assert rates["ecu-main"] == 2.0 and rates["gateway-board"] == 2.5 and rates["bms-slave"] == 4.0
    kinds = {(ln["site_id"], ln["line_id"]): ln["kind_id"] for ln in model["lines"]}
    assert kinds[("js-suzhou", "smt-2")] == "packing-line" and kinds[("js-suzhou", "smt-1")] == "smt-line"
    assert count(seeded, "SELECT count(*) FROM audit_log WHERE action IN ('planning.product.put',"
                         " 'planning.capability.put')") == 3


def test_the_sample_orders_import_with_relative_due_dates(pclient: TestClient, ptokens: PlanTokens) -> None:
    from zhizao.seeds import SEEDS_DIR

    text = (SEEDS_DIR / "orders-sample.csv").read_text(encoding="utf-8")
    r = pclient.post("/api/v1/planning/orders/import", headers={**bearer(ptokens.planner), "Content-Type": "text/csv"},
                     content=text)
    assert r.status_code == 201, r.text
    orders = r.json()["orders"]
    assert len(orders) == 12 and {o["site_id"] for o in orders} == {"ah-hefei", "js-suzhou", "sh-lingang", "zj-shaoxing"}
    due = {o["order_id"]: datetime.fromisoformat(o["due"]) for o in orders}
    assert timedelta(hours=29) < due["hf-bms-101"] - datetime.now(UTC) <= timedelta(hours=30)
    r = pclient.post("/api/v1/planning/orders/import", headers={**bearer(ptokens.planner), "Content-Type": "text/csv"},
                     content="site_id,product_id,quantity,due\nah-hefei,mod-12s-280,5,+9999d\n")
    assert r.status_code == 400 and r.json()["error"]["field"] == "row 1.due"
    assert pclient.post("/api/v1/planning/plans", headers=bearer(ptokens.planner)).json()["lots"] >= 12


def test_why_late_names_another_site_but_not_its_line(pclient: TestClient, ptokens: PlanTokens) -> None:
    hefei, planner = bearer(ptokens.hefei), bearer(ptokens.planner)
    # Each lot alone arrives in time (~3.3 h on a line + 6 h by truck), four on Suzhou's two lines do not.
    for i in range(4):
        r = pclient.post("/api/v1/planning/orders", headers=hefei, json={
            "order_id": f"rush-{i}", "site_id": "ah-hefei", "product_id": "bms-slave", "quantity": 600,
            "due": _due(10 + i / 2), "allowed_sites": ["js-suzhou"]})
        assert r.status_code == 201
    plan_id = pclient.post("/api/v1/planning/plans", headers=planner).json()["plan_id"]
    full = pclient.get(f"/api/v1/planning/plans/{plan_id}", headers=planner).json()["lots"]
    assert any("js-suzhou/smt-" in (lot["why_late"] or "") for lot in full)
    mine = pclient.get(f"/api/v1/planning/plans/{plan_id}", headers=hefei).json()["lots"]
    late = [lot for lot in mine if lot["why_late"]]
    assert late and all("smt-" not in lot["why_late"] and lot["line_id"] is None for lot in late)
