"""End to end on the real cloud service (ingest, OEE, planner, re-plan watcher, API) over Mosquitto: an order is
planned at its own site, moved to the other site after a failure injected there (the watcher proposes, a cluster
planner accepts the diff), started as a production order, produced by the simulator model (FactoryModel.run_order:
changeover, then the product's ideal rate), its counters published over Sparkplug, and counted on the plan.

The Sparkplug side is the test's own node (tests/support/dashboard_feed.Line) fed from the simulator model; the
OPC UA server and edge agent in between have their own end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import httpx
import pytest

from tests.support.dashboard_feed import FAILURE, RUNNING, Line, now_ms
from zhizao.cloud.auth import create_token
from zhizao.cloud.ingest.settings import IngestSettings
from zhizao.cloud.planning.network import seed_network
from zhizao.cloud.seed import seed_database
from zhizao.cloud.service import CloudService
from zhizao.cloud.settings import CloudSettings
from zhizao.edge.sim.model import EXECUTE, FactoryModel
from zhizao.seeds.model import Scenario
from zhizao.seeds.network import Network

T = TypeVar("T")


def poll(fn: Callable[[], T | None], timeout: float, what: str) -> T:
    """The first non-None answer of `fn`, asked every 0.2 s (each ask is an API request)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value is not None:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


CLASSES = {"planned": [150000, 160000, 170000, 210000],
           "availability_loss": [40000, 100000, 110000, 120000, 130000, 140000, 180000, 190000, 200000, 220000],
           "performance_loss": [20000, 50000, 60000, 70000, 80000, 90000]}


def scenario(west: str, east: str) -> Scenario:
    def site(sid: str) -> dict[str, Any]:
        return {"id": sid, "timezone": "Asia/Shanghai", "state_classes": CLASSES,
                "calendar": {"shifts": [{"name": "all", "start": "00:00", "hours": 24, "days": [1, 2, 3, 4, 5, 6, 7]}]},
                "lines": [{"id": "smt", "machines": [{"id": "smt-m01", "kind": "pick-and-place", "ideal_rate_per_min": 100,
                                                      "reject_rate": 0.0,
                                                      "behaviour": {"mtbf_h": 1e6, "repair": {"median_min": 1}}}]}]}
    return Scenario.model_validate({"name": "e2e-cluster", "sites": [site(west), site(east)]})


def network(west: str, east: str) -> Network:
    return Network.model_validate({
        "scenario": "e2e-cluster", "transport_source": "test: 100 km",
        "families": [{"id": "boards"}], "products": [{"id": "board-a", "family": "boards", "unit": "board"}],
        "line_kinds": [{"id": "smt", "lines": [f"{west}/smt", f"{east}/smt"],
                        "makes": [{"product": "board-a", "rate_per_min": 120, "yield": 1.0}]}],
        "transport": [{"a": west, "b": east, "km": 100, "hours": 1.5, "cost": 500}]})


@pytest.fixture
def cloud(fresh_database: str, mqtt_url: str, unique_id: str) -> Iterator[tuple[str, str, str, str]]:
    west, east = f"{unique_id}-w", f"{unique_id}-e"
    settings = CloudSettings(database_url=fresh_database, mqtt_url=mqtt_url, host_id=unique_id, api_port=0)
    service = CloudService(settings, warm_up=False, ingest_settings=IngestSettings(sites=(west, east)))
    url = service.start_in_thread()
    sc = scenario(west, east)
    seed_database(fresh_database, sc)
    seed_network(fresh_database, network(west, east), sc)
    try:
        yield url, west, east, fresh_database
    finally:
        service.stop()


def test_order_moves_after_a_failure_and_is_counted_from_the_simulator(
        cloud: tuple[str, str, str, str], mqtt_url: str) -> None:
    url, west, east, db = cloud
    planner = {"Authorization": f"Bearer {create_token(db, 'cluster-planner', '*', 'planner')}"}
    operator_east = {"Authorization": f"Bearer {create_token(db, 'operator', east, 'east operator')}"}
    engineer_west = {"Authorization": f"Bearer {create_token(db, 'engineer', west, 'west engineer')}"}
    api = httpx.Client(base_url=f"{url}/api/v1/planning", timeout=30)
    lines = {site: Line(mqtt_url, site, "smt", ["smt-m01"]) for site in (west, east)}
    try:
        for line in lines.values():
            line.birth()
            line.data("smt-m01", [(now_ms(), "State", RUNNING), (now_ms(), "Counts/Total", 0),
                                  (now_ms(), "Counts/Good", 0)])
        # 1. The order is planned at the ordering site (no transport).
        r = api.post("/orders", headers=engineer_west, json={
            "order_id": "w-1", "site_id": west, "product_id": "board-a", "quantity": 60,
            "due": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2 * 3600))})
        assert r.status_code == 201, r.text
        first = api.post("/plans", headers=planner).json()
        plan = api.get(f"/plans/{first['plan_id']}", headers=planner).json()
        assert [(lot["site_id"], lot["line_id"]) for lot in plan["lots"]] == [(west, "smt")]
        assert api.post(f"/plans/{first['plan_id']}/accept", headers=planner).json()["production_orders"] == 1

        # 2. The line at the ordering site fails: the watcher proposes moving the order, within seconds.
        t_fail = time.monotonic()
        lines[west].state("smt-m01", FAILURE)
        proposal = poll(lambda: next((p for p in api.get("/plans", headers=planner).json()
                                      if p["status"] == "proposed"), None), 30, "a re-plan proposal")
        took = time.monotonic() - t_fail
        print(f"e2e: failure -> re-plan proposal in {took:.1f} s")
        assert proposal["reason"] == f"replan: {west}/smt down"
        diff = api.get(f"/plans/{proposal['plan_id']}/diff", headers=planner).json()["changes"]
        assert [(c["change"], c["from_site"], c["to_site"]) for c in diff] == [("moved", west, east)]
        assert api.post(f"/plans/{proposal['plan_id']}/accept", headers=planner).json()["production_orders"] == 1

        # 3. The east line receives the production order and the simulator makes it.
        (po,) = api.get("/production-orders", headers=operator_east).json()
        assert (po["site_id"], po["product_id"], po["quantity"], po["order_id"]) == (east, "board-a", 60, None)
        assert api.post(f"/production-orders/{po['po_id']}/start", headers=operator_east).status_code == 200
        (po,) = api.get("/production-orders", headers=operator_east).json()
        started = int(datetime.fromisoformat(po["started_at"]).timestamp() * 1000)
        sim = FactoryModel(scenario(west, east).subset([f"{east}/smt/smt-m01"]), seed=5, start_ms=started + 1000)
        sim.fail_p[:] = sim.micro_p[:] = 0.0
        sim.initial()
        sim.run_order(0, rate_per_min=120.0, changeover_min=0.1)  # 6 s changeover, then 2 boards a second
        rows: list[tuple[int, str, float]] = []
        for _ in range(45):
            sim.step()
            code = RUNNING if sim.state[0] == EXECUTE else int(sim.reason[0])
            good = int(sim.processed[0] - sim.defective[0])
            rows += [(sim.ts_ms, "State", code), (sim.ts_ms, "Counts/Total", int(sim.processed[0])),
                     (sim.ts_ms, "Counts/Good", good)]
        lines[east].data("smt-m01", rows)
        assert int(sim.processed[0]) >= 60 + 10  # the model made the order (and some more of its run)
        made = poll(lambda: next((p["made"] for p in api.get("/production-orders", headers=operator_east).json()
                                  if p["made"] >= 60), None), 20, "the order counted")
        assert made == pytest.approx(int(sim.processed[0]))
        assert api.post(f"/production-orders/{po['po_id']}/finish", headers=operator_east).status_code == 200
        assert api.get("/orders/w-1", headers=engineer_west).json()["status"] == "done"
    finally:
        for line in lines.values():
            line.close()
        api.close()
