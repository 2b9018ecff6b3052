"""The factory model on its own: determinism for a seed, PackML states and stop reasons, counters, faults."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from zhizao.edge.sim.model import FactoryModel, wrap_int32
from zhizao.edge.sim.nodes import T_DEFECTIVE, T_PROCESSED, T_REASON, T_STATE
from zhizao.seeds import load_scenario

START = 1_795_000_000_000  # 2026-11-18T09:46:40Z, a Wednesday


def _run(seed: int, steps: int, start: int = START) -> list[tuple[int, bytes, bytes]]:
    model = FactoryModel(load_scenario(), seed=seed, start_ms=start)
    out = []
    for changes in [model.initial(), *(model.step() for _ in range(steps))]:
        out.append((changes.ts_ms, changes.index.tobytes(), changes.value.tobytes()))
    return out


def test_same_seed_same_values_and_timestamps() -> None:
    a, b = _run(7, 1500), _run(7, 1500)
    assert a == b
    assert [ts for ts, _, _ in a] == [START + 1000 * k for k in range(1501)]
    assert _run(8, 300) != a[:301]


def test_cluster_states_counters_and_faults_over_a_day() -> None:
    model = FactoryModel(load_scenario(), seed=1, start_ms=START, dt_ms=10_000)  # coarse steps keep it quick
    t = model.table
    model.initial()
    seen: set[tuple[int, int]] = set()
    last = np.zeros(len(t.machine_paths), dtype=np.int64)
    for _ in range(86_400 // 60):  # one sim day, checked every sim minute
        for _ in range(6):
            model.step()
        states = model.values[t.packml[:, T_STATE]].astype(np.int64)
        reasons = model.values[t.packml[:, T_REASON]].astype(np.int64)
        seen.update(zip(states.tolist(), reasons.tolist(), strict=True))
        assert np.all((states == 6) == (reasons == 0)), "a stop reason exactly when not executing"
        assert np.all(model.processed >= last)
        last = model.processed.copy()
    states_seen = {s for s, _ in seen}
    assert {2, 6, 9} <= states_seen
    reasons_seen = {r // 10000 * 10000 for _, r in seen}
    # Over a day: breaks, failures, microstops, jams, changeovers, tool changes (130001) and cleaning (110001).
    assert {50000, 60000, 100000, 110000, 130000, 150000, 180000} <= reasons_seen
    # Counters are Int32 on the wire and wrap: the seeded machines near 2**31 have wrapped by now.
    wire = model.values[t.packml[:, T_PROCESSED]]
    sorter = t.machine_paths.index("ah-hefei/mod-1/mod-1-m01")
    assert wire[sorter] < 0 and model.processed[sorter] > 0
    assert np.all(model.values[t.packml[:, T_DEFECTIVE]] <= model.processed)


def test_bearing_wear_raises_vibration_until_a_failure() -> None:
    scenario = load_scenario().subset(["js-suzhou/smt-1/smt-1-m05"])  # reflow oven: onset 1 h, life 20 h
    model = FactoryModel(scenario, seed=2, start_ms=START, dt_ms=10_000)
    model.initial()
    rms = model.table.index_of("js-suzhou/smt-1/smt-1-m05", "Vibration/RMS")
    samples, codes = [], set()
    for _ in range(22 * 60):  # 22 h, one sample per sim minute
        for _ in range(6):
            model.step()
            codes.add(int(model.reason[0]))
        samples.append(model.values[rms])
    early, late = np.mean(samples[60:120]), np.mean(samples[19 * 60 : 20 * 60])
    assert late > 2.5 * early
    assert 180002 in codes  # the bearing failure code of this machine


def test_wrap_int32() -> None:
    x = np.array([0, 2**31 - 1, 2**31, 2**32 + 5], dtype=np.int64)
    assert wrap_int32(x).tolist() == [0, 2**31 - 1, -(2**31), 5]


@pytest.mark.parametrize("command", ["Jump", ""])
def test_unknown_command_names_the_value(command: str, make_scenario: Any) -> None:
    model = FactoryModel(make_scenario(1), seed=0, start_ms=START)
    with pytest.raises(ValueError, match=f"command: {command!r}"):
        model.command(0, command)


def test_tool_wear_drifts_load_then_a_tool_change_resets_it() -> None:
    path = "sh-lingang/cnc-1/cnc-1-m03"  # lathe: tool life 120 running min, +15 % load, tool change 130001
    model = FactoryModel(load_scenario().subset([path]), seed=3, start_ms=START, dt_ms=10_000)
    model.initial()
    load = model.table.index_of(path, "Load/Spindle")
    running_load: list[float] = []
    changes = 0
    for _ in range(6 * 60 * 8):  # 8 sim hours
        model.step()
        if model.reason[0] == 130001:
            if running_load and model.faults.t_used[0] == 0.0 and len(running_load) > 60:
                early, late = np.mean(running_load[:30]), np.mean(running_load[-30:])
                assert late > early + 8.0  # most of the 15 % rise shows before the change
                changes += 1
            running_load = []
        elif model.state[0] == 6:
            running_load.append(model.values[load])
    assert changes >= 2


def test_sensor_drift_grows_and_reset_recalibrates() -> None:
    path = "ah-hefei/mod-1/mod-1-m01"  # cell sorter: voltage drifts +0.002 V/h after 4 h, up to 0.02 V
    model = FactoryModel(load_scenario().subset([path]), seed=4, start_ms=START, dt_ms=10_000)
    model.initial()
    for _ in range(6 * 60 * 14):  # 14 sim hours: 10 h of drift
        model.step()
    _, add = model.faults.signal_effects(np.ones(1), len(model.s_typ))
    volt = model.table.tags[int(model.table.signal_nodes[0])]
    assert volt == "Voltage/Cell" and add[0] == pytest.approx(0.02)
    before = int(model.processed[0])
    model.command(0, "Reset")
    model.step()
    _, add = model.faults.signal_effects(np.ones(1), len(model.s_typ))
    assert add[0] == 0.0
    assert (
        before > 10_000 and 0 <= model.processed[0] <= 20
    )  # counting starts over (one 10 s step at 120/min)
