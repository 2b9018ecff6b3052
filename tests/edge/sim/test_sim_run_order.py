"""A production order on the simulator: a changeover (Held, the changeover code), then Execute at the product's
ideal rate, counted on the machine's counters."""

from __future__ import annotations

import pytest

from zhizao.edge.sim.model import EXECUTE, FactoryModel
from zhizao.seeds import load_scenario

START = 1_780_000_000_000  # Friday 2026-05-29 04:26 in Shanghai: inside the Hefei night shift


def test_run_order_changes_over_then_runs_at_the_product_rate() -> None:
    path = "ah-hefei/mod-1/mod-1-m04"
    scenario = load_scenario().subset([path])
    m = FactoryModel(scenario, seed=1, start_ms=START, dt_ms=1000)
    m.mtbf_s[:] = 1e12  # no random stops: the test reads the order's own effect
    m.fail_p[:] = 0.0
    m.micro_p[:] = 0.0
    m.initial()
    m.run_order(0, rate_per_min=6.0, changeover_min=2.0)
    before = int(m.processed[0])
    states, reasons = [], []
    for _ in range(120 + 300):
        m.step()
        states.append(int(m.state[0]))
        reasons.append(int(m.reason[0]))
    assert states[:119] == [11] * 119 and set(reasons[:119]) == {100000}  # Held, changeover
    assert set(states[121:]) == {EXECUTE}
    assert m.ideal[0] == 6.0 and m.speed[0] == 6.0
    assert int(m.processed[0]) - before == pytest.approx(30, abs=1)  # 300 s at 6/min
    with pytest.raises(ValueError, match="rate_per_min"):
        m.run_order(0, rate_per_min=0.0, changeover_min=1.0)
