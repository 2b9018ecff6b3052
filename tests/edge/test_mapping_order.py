"""Derived signals pair their inputs by source timestamp, whatever order a publish's notifications arrive in.

OPC UA servers (asyncua among them) deliver the notifications of one publish grouped per monitored item: all
changes of ProdProcessedCount, then all of ProdDefectiveCount, then State, then StopReason. Counts/Good and
State must come out as if the changes had arrived in time order (issue 11, defects 3 and 4), also when a
publish ends between two changes of one instant (the rest of the instant comes with the next publish).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.edge.test_mapping import CASE, M1, T0, make_mapping, published
from tests.support.simserver import Collector, ServerThread, adapter_config, free_port
from tests.support.spb_capture import Capture, Captured, all_samples
from zhizao.edge.adapters.opcua import OpcUaAdapter
from zhizao.edge.agent import run_agent
from zhizao.edge.config import AgentConfig, parse_agent_config
from zhizao.edge.mapping import AgentMapping, build_mapping
from zhizao.edge.outbox import read_outbox
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
    for out in [*(m.transform("sim", b) for b in blocks), m.flush("sim")]:  # the agent flushes at the end
        good += published(m, out, "cnc-1-m01", "Counts/Good")
        state += published(m, out, "cnc-1-m01", "State")
    return good, state


def chunks(rows: list[tuple[str, int, float]], per_publish: int) -> list[list[tuple[str, int, float]]]:
    """Publishes of about `per_publish` changes in time order, each holding every change of its instants."""
    out: list[list[tuple[str, int, float]]] = [[]]
    for row in rows:
        if len(out[-1]) >= per_publish and out[-1][-1][1] != row[1]:
            out.append([])
        out[-1].append(row)
    return out


def cut(rows: list[tuple[str, int, float]], per_publish: int) -> list[list[tuple[str, int, float]]]:
    """Publishes of exactly `per_publish` changes in time order: many end between two changes of one instant."""
    return [rows[i:i + per_publish] for i in range(0, len(rows), per_publish)]


def grouped(rows: list[tuple[str, int, float]], per_publish: int, split: bool = False
            ) -> list[list[tuple[str, int, float]]]:
    """Publishes of `per_publish` changes each, their notifications grouped per node (as asyncua sends them)."""
    order = {PROCESSED: 0, DEFECTIVE: 1, STATE: 2, REASON: 3}
    return [sorted(c, key=lambda r: order[r[0]]) for c in (cut if split else chunks)(rows, per_publish)]


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


@pytest.mark.parametrize("seed", range(6))
def test_a_publish_ending_inside_an_instant_waits_for_the_rest(seed: int) -> None:
    """ProdProcessedCount at t in one publish, ProdDefectiveCount at t in the next: Counts/Good of t is
    processed - defective of t (never the in-between value), State of t pairs with the StopReason of t."""
    rows = production(400, seed)
    want = expected(rows)
    rng = np.random.default_rng(200 + seed)
    per_publish = int(rng.integers(2, 40))
    pubs = cut(rows, per_publish)
    assert sum(a[-1][1] == b[0][1] for a, b in itertools.pairwise(pubs)) > 3  # ends inside instants
    m = make_mapping()
    assert run(m, [source_block(m, c) for c in pubs]) == want
    m = make_mapping()
    shuffled = []
    for c in grouped(rows, per_publish, split=True):
        perm = rng.permutation(len(c))
        shuffled.append(source_block(m, [c[i] for i in perm]))
    assert run(m, shuffled) == want


def test_asyncua_server_publish_ending_inside_an_instant() -> None:
    """A real asyncua server publishes between the writes of one instant (the writer pauses longer than the
    publishing interval after ProdProcessedCount, State or the stop's start): the result is still by source time."""
    srv = ServerThread(port=free_port())
    m = make_mapping()
    try:
        sink = Collector()
        config = adapter_config(srv.url, subscription={"publishing_interval_ms": 50, "sampling_interval_ms": 1,
                                                       "queue_size": 1000})
        adapter = OpcUaAdapter(config, m.plans["sim"].sources, sink, sink.on_device_state)
        rows = production(60, seed=7)
        instants = chunks(rows, 1)

        async def write_split(instant: list[tuple[str, int, float]], pause: bool) -> None:
            for k, (node, ts, value) in enumerate(instant):
                await srv.sim.write(node, int(value), ts)
                if pause and k == 0 and len(instant) > 1:
                    await asyncio.sleep(0.15)  # a publish goes out with the first change of the instant only

        async def scenario() -> None:
            await adapter.connect()
            task = asyncio.create_task(adapter.run())
            try:
                await sink.wait_for(lambda: len(sink.all()) >= len(m.plans["sim"].sources.signals))
                sink.blocks.clear()
                for i, instant in enumerate(instants):
                    await srv.run(write_split, instant, i % 2 == 0)
                    if i % 2:
                        await asyncio.sleep(0.12)
                await sink.wait_for(lambda: int(sink.all().ts_ms.max(initial=0)) >= rows[-1][1])
            finally:
                task.cancel()
                await adapter.close()

        asyncio.run(scenario())
        blocks = sink.blocks
        ends_inside = sum(int(a.ts_ms.max()) == int(b.ts_ms.min()) for a, b in itertools.pairwise(blocks))
        assert ends_inside >= 5, "publishes should end between two changes of one instant"
        initial = source_block(m, [(STATE, T0 - 1, 2), (REASON, T0 - 1, 0), (PROCESSED, T0 - 1, 0),
                                   (DEFECTIVE, T0 - 1, 0)])
        good, state = run(m, [initial, *blocks])
        want_good, want_state = expected(rows)
        assert [g for g in good if g[0] >= T0] == want_good
        assert [s for s in state if s[0] >= T0] == want_state
    finally:
        srv.close()


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


def test_agent_releases_a_held_instant_after_a_short_time_and_at_stop(tmp_path: Path, mqtt_url: str,
                                                                      unique_id: str) -> None:
    """The agent on a real asyncua server: a publish ends between the two counts of one instant and the
    machine then goes quiet: Counts/Good of that instant pairs both (never the in-between value) and goes
    out without a later publish (after about two publishing intervals); one held when the agent stops still
    reaches the outbox."""
    srv = ServerThread(port=free_port())
    data = yaml.safe_load(CASE.read_text(encoding="utf-8"))
    data.update(site=unique_id, mqtt={"url": mqtt_url}, outbox={"dir": str(tmp_path / "outbox")})
    data["adapters"][0].update(endpoint=srv.url, subscription={"publishing_interval_ms": 100,
                                                               "sampling_interval_ms": 10, "queue_size": 100})
    config = parse_agent_config(data)
    cap = Capture(mqtt_url, [f"spBv1.0/{unique_id}/#"])
    t1 = int(time.time() * 1000) + 60_000  # after the initial values' timestamps

    def good(msgs: list[Captured]) -> list[tuple[int, float]]:
        return [(s.timestamp, float(s.value)) for s in all_samples(msgs)  # type: ignore[arg-type]
                if s.device == "cnc-1-m01" and s.name == "Counts/Good"]

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_agent(config, stop))
        try:
            await cap.until(lambda ms: len(good(ms)) >= 1, within_s=30, what="the initial Counts/Good")
            await srv.write(PROCESSED, 105, t1)
            await asyncio.sleep(0.3)  # a publish goes out with the processed count alone
            await srv.write(DEFECTIVE, 3, t1)  # the same instant, in the next publish
            await cap.until(lambda ms: (t1, 102.0) in good(ms), within_s=5, what="Counts/Good of the quiet instant")
            await srv.write(PROCESSED, 110, t1 + 1000)
            # Counts/Total goes out at once; Counts/Good of this instant is held: the stop must not lose it.
            await cap.until(lambda ms: any(s.name == "Counts/Total" and s.timestamp == t1 + 1000
                                           for s in all_samples(ms)), within_s=5, what="Counts/Total")
        finally:
            stop.set()
            await task

    try:
        asyncio.run(main())
    finally:
        cap.close()
        srv.close()
    got = [(int(t), float(v)) for _, b in read_outbox(tmp_path / "outbox")
           for t, v, sig in zip(b.ts_ms, b.value, b.signal, strict=True)
           if sig == _good_signal(config)]
    assert [g for g in got if g[0] >= t1] == [(t1, 102.0), (t1 + 1000, 107.0)]


def _good_signal(config: AgentConfig) -> int:
    m = build_mapping(config)
    return next(i for i, s in enumerate(m.signals.signals) if s.machine == "cnc-1-m01" and s.metric == "Counts/Good")
