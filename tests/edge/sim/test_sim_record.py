"""The record file equals what a subscribed client received; timestamps are strictly increasing and never ahead."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
from asyncua import Client

from tests.support.spnode import until
from zhizao.edge.sim.model import FactoryModel
from zhizao.edge.sim.record import read_record
from zhizao.edge.sim.server import SimServer


class _Collector:
    """asyncua subscription handler that keeps (node id, source ts ms, value) for every notification."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, float]] = []

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        ts = data.monitored_item.Value.SourceTimestamp
        self.rows.append((node.nodeid.to_string(), round(ts.timestamp() * 1000), float(val)))


async def _source_ms(node: Any) -> int:
    """The source timestamp (ms) of a node's current value, as `_Collector` rounds it."""
    ts = (await node.read_data_value()).SourceTimestamp
    assert ts is not None
    ms: int = round(ts.timestamp() * 1000)
    return ms


def test_record_equals_what_a_subscriber_received(
    free_port: int, run_sim: Any, make_scenario: Any, tmp_path: Path
) -> None:
    record = tmp_path / "sim.rec"
    scenario = make_scenario(3, behaviour={"mtbf_h": 0.0005, "repair": {"median_min": 0.005}, "microstops_per_h": 1800,
                                           "microstop_s": {"min": 0.1, "max": 0.5}})  # fmt: skip

    async def main() -> float:
        sim = SimServer(scenario, free_port, seed=11, dt_ms=50, record=record)
        collector = _Collector()
        async with run_sim(sim) as (_, stop, task), Client(sim.endpoint) as client:
            sub = await client.create_subscription(20, collector)
            nodes = [client.get_node(n) for n in sim.model.table.node_ids]
            await sub.subscribe_data_change(nodes, queuesize=10_000)
            await asyncio.sleep(3.0)  # the scenario: three seconds of production with stops
            stop.set()  # stepping ends; the endpoint stays up until the last notifications arrive
            await task
            last = {n.nodeid.to_string(): await _source_ms(n) for n in nodes}
            await until(lambda: last.items() <= {(nid, ts) for nid, ts, _ in collector.rows},
                        what="the notification of every node's last value")
            ended = time.time() * 1000
            await sub.delete()
        return ended, collector.rows

    ended, received = asyncio.run(main())
    ids, idx, ts, val = read_record(record)
    assert ids == [f"ns=2;s=s1/l1/m{m:02d}/{tag}" for m in (1, 2, 3) for tag in (
        "State", "StopReason", "ProdProcessedCount", "ProdDefectiveCount", "MachSpeed", "CurMachSpeed",
        "MachDesignSpeed", "Temperature/Spindle", "Vibration/RMS")]  # fmt: skip
    assert len(idx) > 500
    # Per node: strictly increasing source timestamps, none after the run ended.
    for n in range(len(ids)):
        node_ts = ts[idx == n]
        assert np.all(np.diff(node_ts) > 0), ids[n]
    assert ts.max() <= ended
    # The stops we provoked show up as state changes.
    states = set(val[idx == ids.index("ns=2;s=s1/l1/m01/State")].astype(int).tolist())
    assert {5, 6, 9} <= states
    # What the client got, from its first value per node on, equals the record exactly.
    by_node: dict[str, list[tuple[int, float]]] = {}
    for node, t, v in received:
        by_node.setdefault(node, []).append((t, v))
    assert set(by_node) == set(ids)
    for n, node in enumerate(ids):
        got = by_node[node]
        sel = (idx == n) & (ts >= got[0][0])
        expected = list(zip(ts[sel].tolist(), val[sel].tolist(), strict=True))
        assert got == expected, node


def test_server_publishes_the_seeded_model_sequence_and_catches_up(
    free_port: int, run_sim: Any, make_scenario: Any, tmp_path: Path
) -> None:
    """The server writes exactly what a fresh model with the same seed and start produces (so runs repeat),
    steps the past at `speed` without skipping, and never stamps a value later than the wall clock."""
    start = (int(time.time() * 1000) - 300_000) // 1000 * 1000  # 5 sim minutes behind
    scenario = make_scenario(
        3, behaviour={"mtbf_h": 0.02, "repair": {"median_min": 0.3}, "microstops_per_h": 60}
    )
    record = tmp_path / "a.rec"

    async def one() -> tuple[SimServer, float]:
        sim = SimServer(scenario, free_port, speed=1000, seed=4, start_ms=start, record=record)
        async with run_sim(sim) as (_, stop, task):
            deadline = time.monotonic() + 20
            while not sim.stats.caught_up:
                assert time.monotonic() < deadline, "never caught up with the wall clock"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # the scenario: then real time
            stop.set()
            await task
            ended = time.time() * 1000  # stepping is over; closing the server may take a while longer
        return sim, ended

    sim, ended = asyncio.run(one())
    _, idx, ts, val = read_record(record)
    assert ended - 2000 <= ts.max() <= ended  # kept up with the wall clock (1 s steps), never ran ahead of it
    model = FactoryModel(scenario, seed=4, start_ms=start)
    parts = [model.initial()]
    while model.ts_ms < ts.max():
        parts.append(model.step())
    assert model.ts_ms == ts.max() and sim.stats.steps == model.k  # every step of the past was stepped
    assert np.array_equal(idx, np.concatenate([p.index for p in parts]))
    assert np.array_equal(ts, np.concatenate([np.full(len(p.index), p.ts_ms) for p in parts]))
    assert np.array_equal(val, np.concatenate([p.value for p in parts]))
    assert {6, 9} <= set(val[idx == 0].astype(int).tolist())  # the stretch compared includes failures
