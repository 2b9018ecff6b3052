"""End to end on real parts: the OPC UA simulator, one edge agent per line, Mosquitto, the cloud service (ingest,
OEE, planner, re-plan watcher, command dispatcher, API) and PostgreSQL. An order is planned at its own site; a
failure injected into the simulator there makes the watcher propose moving it to the other site; a cluster
planner accepts; the operator there starts the production order, which reaches the machine as a signed RunOrder
command (OPC UA method call); the simulator makes exactly the quantity, and the plan counts it from the
machine's counters; counted, the order is done and the line's next lot (that site's own order) reaches the
machine the same way, by itself, and is made and counted too."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest

from zhizao.bench.command import SIM_PATH, SIM_USER, _LoopThread
from zhizao.broker.commands import load_or_create_key, public_key_text
from zhizao.broker.embedded import free_port
from zhizao.cloud.auth import create_token
from zhizao.cloud.ingest.settings import IngestSettings
from zhizao.cloud.planning.dispatch import DISPATCHER
from zhizao.cloud.planning.network import seed_network
from zhizao.cloud.seed import seed_database
from zhizao.cloud.service import CloudService
from zhizao.cloud.settings import CloudSettings
from zhizao.edge.agent import run_agent
from zhizao.edge.bootstrap import agent_configs_for_scenario
from zhizao.edge.config import parse_agent_config
from zhizao.edge.sim.server import SimServer
from zhizao.seeds.model import Scenario
from zhizao.seeds.network import Network

T = TypeVar("T")
QUANTITY = 90  # boards: 18 s at 300 a minute
RATE = 300.0


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
    def site(sid: str, line: str) -> dict[str, Any]:
        return {"id": sid, "timezone": "Asia/Shanghai", "state_classes": CLASSES,
                "calendar": {"shifts": [{"name": "all", "start": "00:00", "hours": 24, "days": [1, 2, 3, 4, 5, 6, 7]}]},
                "lines": [{"id": line, "machines": [{
                    "id": f"{line}-m01", "kind": "pick-and-place", "ideal_rate_per_min": RATE, "reject_rate": 0.0,
                    "behaviour": {"mtbf_h": 1e6, "repair": {"median_min": 1}}}]}]}
    return Scenario.model_validate({"name": "e2e-cluster", "sites": [site(west, "smt-w"), site(east, "smt-e")]})


def network(west: str, east: str) -> Network:
    return Network.model_validate({
        "scenario": "e2e-cluster", "transport_source": "test: 100 km",
        "families": [{"id": "boards"}], "products": [{"id": "board-a", "family": "boards", "unit": "board"}],
        "line_kinds": [{"id": "smt", "lines": [f"{west}/smt-w", f"{east}/smt-e"],
                        "makes": [{"product": "board-a", "rate_per_min": RATE, "yield": 1.0}]}],
        "transport": [{"a": west, "b": east, "km": 100, "hours": 1.5, "cost": 500}]})


@dataclass
class Stack:
    url: str
    west: str
    east: str
    db: str
    sim: SimServer
    sim_thread: _LoopThread


@pytest.fixture
def stack(fresh_database: str, mqtt_url: str, unique_id: str, tmp_path: Path) -> Iterator[Stack]:
    west, east = f"{unique_id}-w", f"{unique_id}-e"
    sc = scenario(west, east)
    key_file = tmp_path / "command-key.pem"
    key = load_or_create_key(key_file)
    port = free_port()
    sim_thread = _LoopThread("plan-e2e-sim")
    stop_sim = asyncio.Event()

    async def start_sim() -> tuple[SimServer, asyncio.Task[None]]:
        sim = SimServer(sc, port, seed=3, dt_ms=100, data_dir=tmp_path / "sim", users=dict([SIM_USER]))
        await sim.start()
        return sim, asyncio.create_task(sim.run(stop_sim))

    sim, sim_task = sim_thread.run(start_sim())
    settings = CloudSettings(database_url=fresh_database, mqtt_url=mqtt_url, host_id=unique_id, api_port=0,
                             data_dir=tmp_path, command_key_file=key_file, command_result_timeout_s=10.0)
    service = CloudService(settings, warm_up=False, ingest_settings=IngestSettings(sites=(west, east)))
    agents: list[tuple[_LoopThread, asyncio.Event, Any]] = []
    try:
        url = service.start_in_thread(timeout=60)
        seed_database(fresh_database, sc)
        seed_network(fresh_database, network(west, east), sc)
        raws = agent_configs_for_scenario(sc, f"opc.tcp://127.0.0.1:{port}{SIM_PATH}", mqtt_url=mqtt_url,
                                          outbox_root=str(tmp_path / "edge"), primary_host=unique_id,
                                          command_keys=(public_key_text(key),))
        for edge, raw in raws.items():
            raw["sparkplug"]["publish_interval_ms"] = 100
            # the simulator refuses anonymous method calls: the agent calls RunOrder as its user
            raw["adapters"][0]["security"] = {"mode": "None", "username": SIM_USER[0], "password": SIM_USER[1]}
            raw["adapters"][0]["subscription"] = {"publishing_interval_ms": 100, "sampling_interval_ms": 50,
                                                  "queue_size": 1000}
            thread = _LoopThread(f"plan-e2e-{edge}")
            stop = thread.run(_event())
            agents.append((thread, stop, asyncio.run_coroutine_threadsafe(
                run_agent(parse_agent_config(raw, edge), stop), thread.loop)))
        yield Stack(url, west, east, fresh_database, sim, sim_thread)
    finally:
        for thread, stop, fut in agents:
            thread.loop.call_soon_threadsafe(stop.set)
            with contextlib.suppress(Exception):
                fut.result(30)
            thread.close()
        service.stop()

        async def end_sim() -> None:
            stop_sim.set()
            await sim_task
            await sim.stop()

        sim_thread.run(end_sim())
        sim_thread.close()


async def _event() -> asyncio.Event:
    return asyncio.Event()


def test_order_moves_after_a_failure_and_the_simulator_makes_it_on_command(stack: Stack) -> None:
    west, east, db = stack.west, stack.east, stack.db
    planner = {"Authorization": f"Bearer {create_token(db, 'cluster-planner', '*', 'planner')}"}
    operator_east = {"Authorization": f"Bearer {create_token(db, 'operator', east, 'east operator')}"}
    engineer_west = {"Authorization": f"Bearer {create_token(db, 'engineer', west, 'west engineer')}"}
    engineer_east = {"Authorization": f"Bearer {create_token(db, 'engineer', east, 'east engineer')}"}
    root = httpx.Client(base_url=f"{stack.url}/api/v1", timeout=30)
    api = httpx.Client(base_url=f"{stack.url}/api/v1/planning", timeout=30)
    try:
        # Both agents are up: the cloud knows their command targets (RunOrder among them).
        poll(lambda: True if root.get("/machines/smt-e-m01/command-targets", headers=operator_east).json() else None,
             30, "the east agent's command targets")
        # The east machine waits for work (stopped), so what it makes from now on is the order's.
        r = root.post("/machines/smt-e-m01/commands", headers=operator_east, json={"method": "Stop", "reason": "e2e"})
        assert r.status_code == 201, r.text
        poll(lambda: True if root.get(f"/commands/{r.json()['command_id']}", headers=operator_east).json()["status"]
             == "confirmed" else None, 15, "the east machine stopped")

        # 1. The order is planned at the ordering site (no transport).
        r = api.post("/orders", headers=engineer_west, json={
            "order_id": "w-1", "site_id": west, "product_id": "board-a", "quantity": QUANTITY,
            "due": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2 * 3600))})
        assert r.status_code == 201, r.text
        # The east site's own order, due later, on its own line.
        r = api.post("/orders", headers=engineer_east, json={
            "order_id": "e-1", "site_id": east, "product_id": "board-a", "quantity": QUANTITY,
            "due": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 4 * 3600))})
        assert r.status_code == 201, r.text
        first = api.post("/plans", headers=planner).json()
        plan = api.get(f"/plans/{first['plan_id']}", headers=planner).json()
        assert {lot["order_id"]: (lot["site_id"], lot["line_id"]) for lot in plan["lots"]} == {
            "w-1": (west, "smt-w"), "e-1": (east, "smt-e")}
        assert api.post(f"/plans/{first['plan_id']}/accept", headers=planner).json()["production_orders"] == 2

        # 2. A failure at the ordering site, in the simulator: the watcher proposes moving the order.
        t_fail = time.monotonic()
        stack.sim_thread.loop.call_soon_threadsafe(stack.sim.model.fail, 0, 30.0)  # smt-w-m01, 30 minutes
        proposal = poll(lambda: next((p for p in api.get("/plans", headers=planner).json()
                                      if p["status"] == "proposed"), None), 40, "a re-plan proposal")
        print(f"e2e: failure in the simulator -> re-plan proposal in {time.monotonic() - t_fail:.1f} s")
        assert proposal["reason"] == f"replan: {west}/smt-w down"
        diff = api.get(f"/plans/{proposal['plan_id']}/diff", headers=planner).json()["changes"]
        assert [(c["change"], c["from_site"], c["to_site"]) for c in diff] == [("moved", west, east)]
        assert api.post(f"/plans/{proposal['plan_id']}/accept", headers=planner).json()["production_orders"] == 2

        # 3. The east line's operator starts its first lot: a signed RunOrder reaches the machine.
        pos = api.get("/production-orders", headers=operator_east).json()
        assert [p["site_id"] for p in pos] == [east, east] and all(p["status"] == "planned" for p in pos)
        po, nxt = sorted(pos, key=lambda p: p["seq"])
        assert (po["product_id"], po["quantity"]) == ("board-a", QUANTITY)
        started = api.post(f"/production-orders/{po['po_id']}/start", headers=operator_east).json()
        assert started["sent_to_line"] is True, started
        (cmd,) = started["commands"]
        assert (cmd["machine_id"], cmd["product"], cmd["quantity"], cmd["rate_per_min"]) == (
            "smt-e-m01", "board-a", QUANTITY, RATE)
        def outcome() -> dict[str, Any] | None:
            d: dict[str, Any] = root.get(f"/commands/{cmd['command_id']}", headers=operator_east).json()
            return d if d["status"] in ("confirmed", "failed", "refused", "timed_out") else None

        done = poll(outcome, 20, "RunOrder's outcome")
        assert done["status"] == "confirmed", done

        # 4. The simulator makes the quantity; the plan counts it from the counters, and the order is done.
        def finished(po_id: int) -> dict[str, Any] | None:
            rows = api.get("/production-orders?active=false", headers=operator_east).json()
            found: dict[str, Any] = next(p for p in rows if p["po_id"] == po_id)
            return found if found["status"] == "done" else None

        t_made = time.monotonic()
        done_po = poll(lambda: finished(po["po_id"]), 60, "the first lot counted and done")
        assert done_po["made"] == QUANTITY
        print(f"e2e: first lot made, counted and done in {time.monotonic() - t_made:.1f} s")

        # 5. The line's next lot went to the machine by itself, once, and is made and counted too.
        with psycopg.connect(db) as conn:
            sent = conn.execute("SELECT status, requested_by FROM commands WHERE name = 'Method/RunOrder'"
                                " AND reason LIKE %s", [f"production order {nxt['po_id']}:%"]).fetchall()
        assert len(sent) == 1 and sent[0][1] == DISPATCHER, sent
        second = poll(lambda: finished(nxt["po_id"]), 60, "the second lot made, counted and done")
        assert second["made"] == QUANTITY and second["started_at"] >= done_po["finished_at"]
        time.sleep(1.0)  # the machine idles after the order: nothing more is counted or sent
        assert api.get("/production-orders", headers=operator_east).json() == []
        assert api.get("/orders/w-1", headers=engineer_west).json()["status"] == "done"
        with psycopg.connect(db) as conn:
            row = conn.execute("SELECT count(*) FROM commands WHERE name = 'Method/RunOrder'").fetchone()
            assert row is not None and row[0] == 2  # the operator's and the dispatcher's
    finally:
        api.close()
        root.close()
