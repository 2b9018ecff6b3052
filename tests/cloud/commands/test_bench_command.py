"""`zhizao bench command`'s measurement on the shared stack: N setpoint commands timed to `confirmed`, and the
device round trip as the same-run baseline."""

from __future__ import annotations

import math

from zhizao.bench.command import CommandStack, run_bench


def test_bench_command_reports_latency_to_confirmed_and_the_device_baseline(stack: CommandStack) -> None:
    report = run_bench(stack, 5)
    total, base = report.figure("api_to_confirmed"), report.figure("device_write_readback")
    assert total["n"] == 5 and base["n"] == 5
    assert 0 < base["p50_ms"] < total["p50_ms"] <= total["p99_ms"] <= total["max_ms"]
    ratio = report.ratios["p99_vs_device"]["value"]
    assert ratio is not None and math.isfinite(ratio) and ratio > 1
    assert float(stack.sim.model.setpoint[0]) == 32.0  # the last of 30.0, 30.5, ... 32.0 read back
