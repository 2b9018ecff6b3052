"""The greedy baseline and the evaluator: times with changeovers, pauses in unavailable intervals, transport,
EDD to the earliest free capable line, fixed lots first."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zhizao.cloud.planning import greedy
from zhizao.cloud.planning.greedy import LineClock
from zhizao.cloud.planning.problem import Lot, Problem

INF = math.inf


def problem(proc: list[list[float]], due: list[float], *, families: list[str] | None = None, setup: float = 0.0,
            unavailable: tuple[tuple[tuple[float, float], ...], ...] | None = None,
            transport: list[list[float]] | None = None, fixed: tuple[tuple[int, ...], ...] = (),
            weights: list[float] | None = None) -> Problem:
    n, m = len(proc), len(proc[0])
    fams = families or ["f"] * n
    lots = tuple(Lot(f"l{j}", f"o{j}", "p", fams[j], 1.0, due[j], (weights or [1.0] * n)[j]) for j in range(n))
    s = np.array([[[0.0 if fams[a] == fams[b] else setup for b in range(n)] for a in range(n)] for _ in range(m)])
    return Problem(
        lots=lots, lines=tuple(f"s/l{i}" for i in range(m)), proc_s=np.array(proc, float), setup_s=s,
        initial_setup_s=np.zeros((m, n)), transport_s=np.array(transport or [[0.0] * m] * n, float),
        transport_cost=np.array(transport or [[0.0] * m] * n, float) / 10,
        unavailable=unavailable or tuple(() for _ in range(m)), available_from_s=np.zeros(m), fixed=fixed,
    )


def test_line_clock_pauses_work_in_unavailable_intervals() -> None:
    clock = LineClock.of(((10.0, 20.0), (30.0, 40.0)))
    assert clock.first_free(15.0) == 20.0 and clock.first_free(25.0) == 25.0
    assert clock.advance(0.0, 10.0) == 10.0  # ends exactly where the break begins
    assert clock.advance(0.0, 15.0) == 25.0
    assert clock.advance(5.0, 20.0) == 45.0  # 5 before the first break, 10 between, 5 after the second
    assert clock.advance(12.0, 5.0) == 25.0  # starting inside a break waits for its end
    assert LineClock.of(()).advance(3.0, 4.0) == 7.0


def test_evaluate_counts_setups_transport_and_tardiness() -> None:
    p = problem([[10, INF], [10, 5]], [15, 12], families=["a", "b"], setup=3, transport=[[0, 0], [2, 2]],
                unavailable=(((12.0, 14.0),), ()), weights=[1.0, 2.0])
    plan = greedy.evaluate(p, [[0, 1], []])
    first, second = plan.scheduled
    assert (first.start_s, first.end_s, first.tardiness_s) == (0.0, 10.0, 0.0)
    assert (second.setup_s, second.end_s) == (3.0, 25.0)  # 10 + 3 setup + 10 work, paused 12-14
    assert second.tardiness_s == 25 + 2 - 12
    assert plan.weighted_tardiness == 2.0 * 15 and plan.changeover_s == 3.0 and plan.makespan == 25.0
    assert plan.transport_cost == pytest.approx(0.2)
    assert plan.why_late[1].startswith("capacity")
    with pytest.raises(ValueError, match="planned twice"):
        greedy.evaluate(p, [[0, 1], [1]])


def test_greedy_sends_earliest_due_lot_to_the_earliest_free_capable_line() -> None:
    # Lot 2 is due first; only line 1 can make lot 0; lots 1 and 2 can go anywhere.
    p = problem([[5, INF], [4, 4], [3, 6]], [30, 20, 5])
    plan = greedy.solve(p, 1.0)
    assert plan.sequences == [[2, 0], [1]]  # 2 -> line 0 (tie, faster), 1 -> line 1 (free at 0), 0 -> only line 0
    assert plan.solver == "greedy-edd" and plan.weighted_tardiness == 0.0
    assert sorted(j for seq in plan.sequences for j in seq) == [0, 1, 2]


def test_greedy_keeps_fixed_lots_first_and_avoids_a_broken_line() -> None:
    down = ((0.0, 1000.0),)  # line 0 is down for the first 1000 s
    p = problem([[10, 10], [10, 10], [10, 10]], [50, 60, 70], unavailable=(down, ()), fixed=((), (2,)))
    plan = greedy.solve(p, 1.0)
    assert plan.sequences[1][:1] == [2]
    # line 1 is free again at 10, line 0 only at 1000: both open lots go to line 1
    assert plan.sequences == [[], [2, 0, 1]]
    assert plan.weighted_tardiness == 0.0
