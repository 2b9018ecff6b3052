"""Scripted mode reproduces the Vorne V1 worksheet exactly (reference/oee-vectors.json)."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asyncua import Client

from zhizao.edge.sim.record import read_record
from zhizao.edge.sim.server import SimServer
from zhizao.edge.sim.timeline import Script, TimelineError
from zhizao.seeds import SEEDS_DIR, load_scenario, load_timeline

MACHINE = "zj-shaoxing/pack-1/pack-1-m01"
# reference/oee-vectors.json V1: 480 min shift, 60 min planned stops, 47 min down, 60/min, 19,271 made, 423 rejects.


def _intervals(ts: np.ndarray, values: np.ndarray, end: int) -> list[tuple[int, int]]:
    """(value, seconds) per run of a piecewise-constant series up to `end`."""
    bounds = [*ts.tolist(), end]
    return [(int(v), (bounds[i + 1] - bounds[i]) // 1000) for i, v in enumerate(values.tolist())]


def test_v1_timeline_exact_counts_and_stop_durations(free_port: int, run_sim: Any, tmp_path: Path) -> None:
    scenario = load_scenario().subset([MACHINE])
    timeline = load_timeline(SEEDS_DIR / "timelines" / "v1-vorne.yaml")
    shift_ms = 480 * 60_000
    start = (int(time.time() * 1000) - shift_ms - 120_000) // 60_000 * 60_000
    record = tmp_path / "v1.rec"

    async def main() -> tuple[int, int, int, int]:
        sim = SimServer(
            scenario, free_port, speed=1e6, start_ms=start, dt_ms=60_000, timeline=timeline, record=record
        )
        async with run_sim(sim):
            deadline = time.monotonic() + 40
            while sim.model.ts_ms < start + shift_ms + 1000:
                assert time.monotonic() < deadline, "the timeline did not finish in time"
                await asyncio.sleep(0.1)
            async with Client(sim.endpoint) as client:
                read = [client.get_node(f"ns=2;s={MACHINE}/{tag}").read_value()
                        for tag in ("ProdProcessedCount", "ProdDefectiveCount", "State", "StopReason")]  # fmt: skip
                got = [await r for r in read]
        return got[0], got[1], got[2], got[3]

    total, rejects, state, reason = asyncio.run(main())
    assert (total, rejects) == (19_271, 423)
    assert (state, reason) == (2, 160000)  # after the script: no shift

    ids, idx, ts, val = read_record(record)
    end = start + shift_ms

    def series(tag: str) -> tuple[np.ndarray, np.ndarray]:
        sel = (idx == ids.index(f"ns=2;s={MACHINE}/{tag}")) & (ts < end)
        return ts[sel], val[sel]

    st_ts, st_val = series("State")
    rs_ts, rs_val = series("StopReason")
    assert st_ts[0] == start and rs_ts[0] == start
    by_state: dict[int, int] = {}
    for s, secs in _intervals(st_ts, st_val, end):
        by_state[s] = by_state.get(s, 0) + secs
    by_reason: dict[int, int] = {}
    for r, secs in _intervals(rs_ts, rs_val, end):
        by_reason[r // 10000 * 10000] = by_reason.get(r // 10000 * 10000, 0) + secs
    planned_stop_s = by_reason[150000]
    unplanned_stop_s = by_reason[180000]
    run_s = by_state[6]
    assert (planned_stop_s, unplanned_stop_s, run_s) == (60 * 60, 47 * 60, 373 * 60)
    assert by_state == {6: 373 * 60, 2: 60 * 60, 9: 47 * 60}

    planned_min = Fraction(480 * 60 - planned_stop_s, 60)
    good = total - rejects
    oee = Fraction(good, 60) / planned_min  # good x ideal cycle time (1/60 min) / planned time
    assert oee == Fraction(18848, 25200)
    assert planned_min == 420 and good == 18_848

    # Counts are spread evenly (one sim step per minute here): each minute adds 51 or 52 (6200 / 120 min).
    pc_ts, pc_val = series("ProdProcessedCount")
    minute = np.searchsorted(pc_ts, start + 60_000 * np.arange(1, 120), side="right") - 1
    per_min = np.diff(pc_val[minute])
    assert per_min.min() >= 51 and per_min.max() <= 52


def test_script_at_one_second_steps_is_exact_and_even() -> None:
    timeline = load_timeline(SEEDS_DIR / "timelines" / "v1-vorne.yaml")
    script = Script(timeline, dt_ms=1000)
    assert script.total_steps == 480 * 60
    points = [script.at(k) for k in range(script.total_steps + 1)]
    assert (points[-1].processed, points[-1].defective) == (19_271, 423)
    processed = np.array([p.processed for p in points])
    steps = np.diff(processed)
    assert steps.min() >= 0 and steps.max() <= 1  # at most one carton per second at 60/min ideal
    states = np.array([p.state for p in points[:-1]])
    assert (
        (states == 6).sum() == 373 * 60 and (states == 9).sum() == 47 * 60 and (states == 2).sum() == 60 * 60
    )
    assert sum(steps[states == 6]) == 19_271  # nothing is counted outside Execute


def test_timeline_must_fit_the_scenario(free_port: int) -> None:
    timeline = load_timeline(SEEDS_DIR / "timelines" / "v1-vorne.yaml")
    other = load_scenario().subset(["zj-shaoxing/pack-1/pack-1-m02"])
    with pytest.raises(
        TimelineError, match=r"machines\[0\]: 'zj-shaoxing/pack-1/pack-1-m01' is not a machine"
    ):
        SimServer(other, free_port, timeline=timeline)
    with pytest.raises(
        TimelineError, match=r"segments\[0\].duration_s: 7200 is not a whole number of sim steps"
    ):
        SimServer(load_scenario().subset([MACHINE]), free_port, timeline=timeline, dt_ms=7)


def test_several_timelines_each_machine_its_own_script() -> None:
    """`--timeline` repeated: every machine follows its own script (the OEE vectors run side by side)."""
    from zhizao.edge.sim.model import FactoryModel
    from zhizao.seeds.timeline import Timeline

    m2 = "zj-shaoxing/pack-1/pack-1-m02"
    v1 = load_timeline(SEEDS_DIR / "timelines" / "v1-vorne.yaml")
    other = Timeline.model_validate({"name": "other", "machines": [m2], "segments": [
        {"duration_s": 120, "state": 9, "stop_reason": 180000}, {"duration_s": 600, "state": 6, "produced": 10}]})
    model = FactoryModel(load_scenario().subset([MACHINE, m2]), seed=0, start_ms=0, dt_ms=60_000,
                         timeline=[v1, other])
    model.initial()
    seen = []
    for _ in range(13):
        seen.append((int(model.state[0]), int(model.state[1]), int(model.processed[1])))
        model.step()
    assert seen[0] == (6, 9, 0) and seen[2] == (6, 6, 0) and seen[12] == (6, 2, 10)
    assert int(model.processed[0]) == 6200 * 13 // 120  # V1's first segment, spread per step
    with pytest.raises(TimelineError, match=r"machines\[0\]: 'zj-shaoxing/pack-1/pack-1-m01' already follows"):
        FactoryModel(load_scenario().subset([MACHINE]), seed=0, start_ms=0, dt_ms=60_000, timeline=[v1, v1])


def test_wait_for_client_holds_the_clock_until_a_subscription(free_port: int, tmp_path: Path) -> None:
    """`--wait-for-client`: nothing is stepped before a client monitors nodes; then the script runs."""
    timeline = load_timeline(SEEDS_DIR / "timelines" / "v1-vorne.yaml")
    start = int(time.time() * 1000) - 3_600_000
    sim = SimServer(load_scenario().subset([MACHINE]), free_port, speed=1000, start_ms=start - start % 1000,
                    timeline=timeline, wait_for_client=True, data_dir=tmp_path)
    steps: list[int] = []

    async def main() -> None:
        stop = asyncio.Event()
        await sim.start()
        task = asyncio.create_task(sim.run(stop))
        try:
            await asyncio.sleep(1.5)
            steps.append(sim.stats.steps)
            async with Client(sim.endpoint) as client:
                sub = await client.create_subscription(100, None)
                await sub.subscribe_data_change([client.get_node(f"ns=2;s={MACHINE}/ProdProcessedCount")])
                await asyncio.sleep(2.0)
                steps.append(sim.stats.steps)
        finally:
            stop.set()
            await task
            await sim.stop()

    asyncio.run(main())
    assert steps[0] == 0 and steps[1] > 100, steps
