"""The greedy baseline planner and the one evaluator of a plan's times and objective figures.

`solve` is the baseline the issue names: lots in earliest-due-date order (ties: heavier weight first, then
lot index), each appended to the capable line that is free earliest (ties: the one that finishes it first,
then the cheaper transport, then the lower line index). It honours the Problem's changeovers (sequence
dependent, from the line's current state for its first lot), unavailable intervals (setup and processing
pause there and resume), `available_from_s`, release times, fixed lots and transport. Deterministic: `seed`
is accepted for the solver's signature and unused.

`evaluate(problem, sequences)` times given sequences with the solver package's evaluation (the one every
stored plan goes through) and fills a `Plan` (weighted tardiness, makespan, changeover time, transport cost,
why each late lot is late).
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass

import numpy as np

from zhizao.cloud.planning.problem import F64, Plan, Problem

__all__ = ["LineClock", "evaluate", "solve"]


@dataclass
class LineClock:
    """A line's unavailable intervals as arrays: advance a time by an amount of available (working) time."""

    starts: F64
    ends: F64
    avail_at_start: F64  # available seconds from 0 up to each interval's start
    unavail_before: F64  # unavailable seconds before each interval (len n + 1; last = total)

    @classmethod
    def of(cls, intervals: tuple[tuple[float, float], ...]) -> LineClock:
        """Clock of sorted, non-overlapping (start, end) intervals."""
        starts = np.array([s for s, _ in intervals], np.float64)
        ends = np.array([e for _, e in intervals], np.float64)
        before = np.concatenate([[0.0], np.cumsum(ends - starts)])
        return cls(starts, ends, starts - before[:-1], before)

    def first_free(self, t: float) -> float:
        """The first instant >= t that is not inside an unavailable interval."""
        i = bisect.bisect_right(self.starts, t) - 1
        if i >= 0 and t < self.ends[i]:
            return float(self.ends[i])
        return t

    def available(self, t: float) -> float:
        """Available seconds in [0, t)."""
        i = bisect.bisect_right(self.starts, t) - 1
        if i >= 0 and t < self.ends[i]:
            return float(self.avail_at_start[i])
        return t - float(self.unavail_before[i + 1])

    def advance(self, t: float, work_s: float) -> float:
        """The earliest instant by which `work_s` seconds of available time after `t` have passed."""
        if not math.isfinite(work_s):
            return math.inf
        target = self.available(t) + work_s
        k = bisect.bisect_left(self.avail_at_start, target)
        return target + float(self.unavail_before[k])


def _setup(problem: Problem, m: int, prev: int | None, j: int) -> float:
    return float(problem.initial_setup_s[m, j] if prev is None else problem.setup_s[m, prev, j])


def _place(problem: Problem, clock: LineClock, m: int, free_s: float, prev: int | None, j: int) -> tuple[float, float, float]:
    """(start, setup, end) of lot j appended on line m after `prev`, the line being free at `free_s`."""
    lot = problem.lots[j]
    setup = _setup(problem, m, prev, j)
    ready = clock.first_free(max(free_s, lot.release_s, float(problem.available_from_s[m])))
    end = clock.advance(ready, setup + float(problem.proc_s[j, m]))
    return ready, setup, end


def evaluate(problem: Problem, sequences: list[list[int]], *, solver: str = "evaluate") -> Plan:
    """Times and objective figures of one sequence of lot indices per line (a lot on an incapable line: inf)."""
    if len(sequences) != len(problem.lines):
        raise ValueError(f"sequences: {len(sequences)} lists, expected one per line ({len(problem.lines)})")
    seen: set[int] = set()
    for m, seq in enumerate(sequences):
        for j in seq:
            if not 0 <= j < len(problem.lots):
                raise ValueError(f"sequences[{m}]: lot index {j} is out of range (0..{len(problem.lots) - 1})")
            if j in seen:
                raise ValueError(f"sequences[{m}]: lot {problem.lots[j].id!r} is planned twice")
            seen.add(j)
    # One evaluation for every plan, whichever solver made it: the solver package's (held equal to an
    # independent plain-Python evaluation by its tests).
    from zhizao.cloud.planning.solver.model import compile_problem, make_plan

    return make_plan(problem, compile_problem(problem), [list(s) for s in sequences], solver, 0.0)


def solve(problem: Problem, time_limit_s: float, warm_start: Plan | None = None, seed: int = 0) -> Plan:
    """The EDD / earliest-free-capable-line baseline (see the module docstring); `warm_start` and `seed` unused."""
    del warm_start, seed, time_limit_s  # one pass; it never needs the limit
    t0 = time.perf_counter()
    n, m_count = len(problem.lots), len(problem.lines)
    clocks = [LineClock.of(u) for u in problem.unavailable]
    sequences: list[list[int]] = [[] for _ in range(m_count)]
    free = [0.0] * m_count
    last: list[int | None] = [None] * m_count
    placed: set[int] = set()
    for m, fixed in enumerate(problem.fixed):
        for j in fixed:
            _, _, end = _place(problem, clocks[m], m, free[m], last[m], j)
            sequences[m].append(j)
            free[m], last[m] = end, j
            placed.add(j)
    order = sorted((j for j in range(n) if j not in placed),
                   key=lambda j: (problem.lots[j].due_s, -problem.lots[j].weight, j))
    for j in order:
        best: tuple[float, float, float, int] | None = None
        for m in range(m_count):
            if not math.isfinite(problem.proc_s[j, m]):
                continue
            ready = clocks[m].first_free(max(free[m], float(problem.available_from_s[m])))
            _, _, end = _place(problem, clocks[m], m, free[m], last[m], j)
            key = (ready, end + float(problem.transport_s[j, m]), float(problem.transport_cost[j, m]), m)
            if best is None or key < best:
                best = key
        assert best is not None  # Problem guarantees a capable line per lot
        m = best[3]
        _, _, end = _place(problem, clocks[m], m, free[m], last[m], j)
        sequences[m].append(j)
        free[m], last[m] = end, j
    plan = evaluate(problem, sequences, solver="greedy-edd")
    plan.solve_s = time.perf_counter() - t0
    return plan
