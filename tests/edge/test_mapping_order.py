"""Derived signals pair their inputs by source timestamp, whatever order a publish's notifications arrive in.

OPC UA servers (asyncua among them) deliver the notifications of one publish grouped per monitored item: all
changes of ProdProcessedCount, then all of ProdDefectiveCount, then State, then StopReason. Counts/Good and
State must come out as if the changes had arrived in time order (issue 11, defects 3 and 4).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.edge.test_mapping import M1, T0, make_mapping, published
from tests.support.simserver import Collector, ServerThread, adapter_config, free_port
from zhizao.edge.adapters.opcua import OpcUaAdapter
from zhizao.edge.mapping import AgentMapping
from zhizao.edge.samples import QUALITY_GOOD, SampleBlock

PROCESSED, DEFECTIVE, STATE, REASON = (M1 + n for n in ("ProdProcessedCount", "ProdDefectiveCount", "State",
                                                       "StopReason"))
EXECUTE, SUSPENDED = 6, 5


def production(steps: int, seed: int) -> list[tuple[str, int, float]]:
    """(node, ts, value) changes of a fast machine in time order: a part every step, a reject now and then,
    and short stops (State and StopReason change together, and the machine restarts a few steps later)."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, int, float]] = [(STATE, T0, EXECUTE), (REASON, T0, 0), (PROCESSED, T0, 1000),
                                          (DEFECTIVE, T0, 10)]
    made, bad, stopped_until = 1000, 10, -1
    for k in range(1, steps):
        ts = T0 + 10 * k
        if k == stopped_until:
            rows += [(STATE, ts, EXECUTE), (REASON, ts, 0)]
            stopped_until = -1
        elif stopped_until < 0 and rng.random() < 0.08:
            rows += [(STATE, ts, SUSPENDED), (REASON, ts, float(rng.choice([50000, 60000, 180000])))]
            stopped_until = k + int(rng.integers(1, 4))
        elif stopped_until < 0:
            made += 1
            rows.append((PROCESSED, ts, made))
            if rng.random() < 0.2:
                bad += 1
                rows.append((DEFECTIVE, ts, bad))
    return rows


def expected(rows: list[tuple[str, int, float]]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """Counts/Good and State by source time, computed straight from the changes."""
    last: dict[str, float] = {}
    good: list[tuple[int, float]] = []
    state: list[tuple[int, float]] = []
    for ts in sorted({r[1] for r in rows}):
        for node, t, v in rows:
            if t == ts:
                last[node] = v
        if PROCESSED in last and DEFECTIVE in last and any(r[1] == ts and r[0] in (PROCESSED, DEFECTIVE) for r in rows):
            value = last[PROCESSED] - last[DEFECTIVE]
            good.append((ts, max(value, good[-1][1] if good else value)))
        if STATE in last and any(r[1] == ts and r[0] in (STATE, REASON) for r in rows):
            code = 10000.0 if last[STATE] == EXECUTE else (last.get(REASON) or 40000.0)
            if not state or state[-1][1] != code:
                state.append((ts, code))
    return good, state


def source_block(m: AgentMapping, rows: list[tuple[str, int, float]]) -> SampleBlock:
    index = {s.metric: i for i, s in enumerate(m.plans["sim"].sources.signals)}
    return SampleBlock(np.array([index[r[0]] for r in rows], np.int32), np.array([r[1] for r in rows], np.int64),
                       np.array([r[2] for r in rows], np.float64), np.full(len(rows), QUALITY_GOOD, np.int16))


def run(m: AgentMapping, blocks: list[SampleBlock]) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    good: list[tuple[int, float]] = []
    state: list[tuple[int, float]] = []
    for b in blocks:
        out = m.transform("sim", b)
        good += published(m, out, "cnc-1-m01", "Counts/Good")
        state += published(m, out, "cnc-1-m01", "State")
    return good, state


def chunks(rows: list[tuple[str, int, float]], per_publish: int) -> list[list[tuple[str, int, float]]]:
    """Publishes of about `per_publish` changes in time order, each holding every change of its instants.

    (A publish ending between two changes of one instant is the limit of pairing inside the edge: the
    derived sample of that instant goes out before its second input arrives.)"""
    out: list[list[tuple[str, int, float]]] = [[]]
    for row in rows:
        if len(out[-1]) >= per_publish and out[-1][-1][1] != row[1]:
            out.append([])
        out[-1].append(row)
    return out


def grouped(rows: list[tuple[str, int, float]], per_publish: int) -> list[list[tuple[str, int, float]]]:
    """Publishes of `per_publish` changes each, their notifications grouped per node (as asyncua sends them)."""
    order = {PROCESSED: 0, DEFECTIVE: 1, STATE: 2, REASON: 3}
    return [sorted(c, key=lambda r: order[r[0]]) for c in chunks(rows, per_publish)]


@pytest.mark.parametrize("seed", range(6))
def test_grouped_and_shuffled_notifications_give_the_time_ordered_result(seed: int) -> None:
    rows = production(400, seed)
    want = expected(rows)
    rng = np.random.default_rng(100 + seed)
    per_publish = int(rng.integers(5, 60))
    m = make_mapping()
    assert run(m, [source_block(m, c) for c in chunks(rows, per_publish)]) == want
    m = make_mapping()
    assert run(m, [source_block(m, c) for c in grouped(rows, per_publish)]) == want
    shuffled = []
    for c in grouped(rows, per_publish):
        perm = rng.permutation(len(c))
        shuffled.append(source_block(m, [c[i] for i in perm]))
    assert run(make_mapping(), shuffled) == want


def test_asyncua_server_with_many_changes_per_publish() -> None:
    srv = ServerThread(port=free_port())
    m = make_mapping()
    try:
        sink = Collector()
        config = adapter_config(srv.url, subscription={"publishing_interval_ms": 400, "sampling_interval_ms": 1,
                                                       "queue_size": 10000})
        adapter = OpcUaAdapter(config, m.plans["sim"].sources, sink, sink.on_device_state)
        rows = production(300, seed=42)

        async def write_all(instant: list[tuple[str, int, float]]) -> None:
            for node, ts, value in instant:
                await srv.sim.write(node, int(value), ts)

        async def scenario() -> None:
            await adapter.connect()
            task = asyncio.create_task(adapter.run())
            try:
                await sink.wait_for(lambda: len(sink.all()) >= len(m.plans["sim"].sources.signals))  # initial values
                sink.blocks.clear()
                for instant in chunks(rows, 1):  # all changes of one instant in one go, as the simulator
                    await srv.run(write_all, instant)
                await sink.wait_for(lambda: int(sink.all().ts_ms.max(initial=0)) >= rows[-1][1])
            finally:
                task.cancel()
                await adapter.close()

        asyncio.run(scenario())
        blocks = sink.blocks
        assert len(blocks) < len(rows) / 5, "the server should batch many changes into one publish"
        # ... grouped per monitored item, not in time order: what the mapping must cope with.
        assert any(np.any(np.diff(b.ts_ms) < 0) for b in blocks)
        # The first block of the script is the reference baseline: feed the initial values first.
        initial = source_block(m, [(STATE, T0 - 1, 2), (REASON, T0 - 1, 0), (PROCESSED, T0 - 1, 0),
                                   (DEFECTIVE, T0 - 1, 0)])
        good, state = run(m, [initial, *blocks])
        want_good, want_state = expected(rows)
        assert [g for g in good if g[0] >= T0] == want_good
        assert [s for s in state if s[0] >= T0] == want_state
    finally:
        srv.close()
