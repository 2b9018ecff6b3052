"""From a `Problem` to the engine's arrays, and from the engine's sequences back to a `Plan`: times of every
lot, the objective figures, a lower bound and the reason each late lot is late."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from zhizao.cloud.planning.problem import Objective, Plan, Problem, ScheduledLot
from zhizao.cloud.planning.solver.engine import Inst, advance, refresh

__all__ = ["check_sequences", "compile_problem", "earliest_completion", "lower_bound", "make_plan", "to_arrays"]


def compile_problem(problem: Problem) -> Inst:
    """The arrays the engine works on; ValueError naming the field for an inconsistent `fixed`."""
    n, m = len(problem.lots), len(problem.lines)
    p = np.ascontiguousarray(problem.proc_s, dtype=np.float64)
    allowed = np.isfinite(p)
    S = np.zeros((m, n + 1, n + 1))
    S[:, :n, :n] = problem.setup_s
    S[:, n, :n] = problem.initial_setup_s
    rel = np.array([lot.release_s for lot in problem.lots], dtype=np.float64)
    due = np.array([lot.due_s for lot in problem.lots], dtype=np.float64)
    w = np.array([lot.weight for lot in problem.lots], dtype=np.float64)
    starts: list[float] = []
    ends: list[float] = []
    uoff = np.zeros(m + 1, np.int64)
    for k, intervals in enumerate(problem.unavailable):
        last = -math.inf
        for a, b in intervals:
            if not (a < b and a >= last):
                raise ValueError(f"unavailable[{k}]: interval ({a}, {b}) is empty, unsorted or overlapping")
            starts.append(float(a))
            ends.append(float(b))
            last = b
        uoff[k + 1] = len(starts)
    fix = np.zeros(m, np.int64)
    movable = np.ones(n, np.bool_)
    if problem.fixed:
        if len(problem.fixed) != m:
            raise ValueError(f"fixed: {len(problem.fixed)} lists, expected one per line ({m}) or none")
        for k, lots in enumerate(problem.fixed):
            for j in lots:
                if not 0 <= j < n:
                    raise ValueError(f"fixed[{k}]: lot index {j} out of range 0..{n - 1}")
                if not movable[j]:
                    raise ValueError(f"fixed[{k}]: lot {problem.lots[j].id!r} is fixed twice")
                if not allowed[j, k]:
                    raise ValueError(f"fixed[{k}]: line {problem.lines[k]!r} cannot make lot {problem.lots[j].id!r}")
                movable[j] = False
            fix[k] = len(lots)
    avail = np.ascontiguousarray(problem.available_from_s, dtype=np.float64)
    makespan = problem.objective is Objective.makespan
    simple = makespan and not starts and bool(np.all(rel <= (avail.min() if m else 0.0)))
    return Inst(p=p, allowed=allowed, S=S, rel=rel, due=due, w=w,
                tr=np.ascontiguousarray(problem.transport_s, dtype=np.float64),
                tc=np.ascontiguousarray(problem.transport_cost, dtype=np.float64), avail=avail,
                us=np.array(starts, dtype=np.float64), ue=np.array(ends, dtype=np.float64), uoff=uoff,
                fix=fix, movable=movable, makespan=makespan, simple=simple)  # fmt: skip


def check_sequences(problem: Problem, sequences: list[list[int]], field: str = "sequences") -> None:
    """ValueError naming the field unless every lot is on exactly one line that can make it, fixed first."""
    n, m = len(problem.lots), len(problem.lines)
    if len(sequences) != m:
        raise ValueError(f"{field}: {len(sequences)} lines, expected {m}")
    seen = np.zeros(n, np.bool_)
    for k, seq in enumerate(sequences):
        for j in seq:
            if not 0 <= j < n:
                raise ValueError(f"{field}[{k}]: lot index {j} out of range 0..{n - 1}")
            if seen[j]:
                raise ValueError(f"{field}[{k}]: lot {problem.lots[j].id!r} is planned twice")
            if not math.isfinite(problem.proc_s[j, k]):
                raise ValueError(f"{field}[{k}]: line {problem.lines[k]!r} cannot make lot {problem.lots[j].id!r}")
            seen[j] = True
        if problem.fixed and list(seq[: len(problem.fixed[k])]) != list(problem.fixed[k]):
            raise ValueError(f"{field}[{k}]: does not start with the fixed lots {list(problem.fixed[k])}")
    if not seen.all():
        missing = [problem.lots[j].id for j in np.flatnonzero(~seen)[:5]]
        raise ValueError(f"{field}: lots not planned: {missing}")


def to_arrays(inst: Inst, sequences: list[list[int]]) -> tuple[Any, Any, Any]:
    """(seq, ln, lc) for the engine from per-line lists."""
    n, m = inst.p.shape
    seq = np.full((m, n + 1), -1, np.int64)
    ln = np.zeros(m, np.int64)
    for k, s in enumerate(sequences):
        seq[k, : len(s)] = s
        ln[k] = len(s)
    lc = np.zeros((m, 3))
    refresh(inst, seq, ln, lc)
    return seq, ln, lc


@njit(cache=True)
def _detail(ins: Inst, k: int, seq: Any, L: int, out: Any) -> None:
    """out[q] = (changeover start, setup, processing start, end, downtime inside [changeover start, end])."""
    n = ins.p.shape[0]
    t = ins.avail[k]
    ptr = ins.uoff[k]
    hi = ins.uoff[k + 1]
    prev = n
    for q in range(L):
        j = seq[q]
        s = ins.S[k, prev, j]
        # The changeover starts at the first instant the line works (not inside a break or a failure).
        while ptr < hi and ins.us[ptr] <= t:
            if ins.ue[ptr] > t:
                t = ins.ue[ptr]
            ptr += 1
        t0 = t
        t, ptr = advance(t, s, ins.us, ins.ue, hi, ptr)
        if ins.rel[j] > t:
            t = ins.rel[j]
        t1 = t
        t, ptr = advance(t, ins.p[j, k], ins.us, ins.ue, hi, ptr)
        down = 0.0
        for e in range(ins.uoff[k], hi):
            down += max(0.0, min(ins.ue[e], t) - max(ins.us[e], t0))
        out[q, 0] = t0
        out[q, 1] = s
        out[q, 2] = t1
        out[q, 3] = t
        out[q, 4] = down
        prev = j


@njit(cache=True)
def _earliest(ins: Inst, min_setup: Any) -> Any:
    n, m = ins.p.shape
    ec = np.full((n, m), np.inf)
    for k in range(m):
        lo = ins.uoff[k]
        hi = ins.uoff[k + 1]
        for j in range(n):
            if not ins.allowed[j, k]:
                continue
            t, i = advance(ins.avail[k], min_setup[k, j], ins.us, ins.ue, hi, lo)
            t = max(t, ins.rel[j])
            t, _ = advance(t, ins.p[j, k], ins.us, ins.ue, hi, i)
            ec[j, k] = t + ins.tr[j, k]
    return ec


def earliest_completion(inst: Inst) -> Any:
    """ec[j, k]: the earliest lot j can be done on line k if it were alone there (cheapest changeover into it,
    not before its release, pausing in the line's downtime), transport included; inf where k cannot make j."""
    n = inst.p.shape[0]
    cheapest = inst.S[:, :, :n].copy()
    cheapest[:, np.arange(n), np.arange(n)] = np.inf
    return _earliest(inst, np.ascontiguousarray(cheapest.min(axis=1)))


def lower_bound(inst: Inst) -> float:
    """A bound on the primary objective from a relaxation: every lot alone on its best line (tardiness), or
    that and the cheapest total work spread evenly over the lines (makespan)."""
    n, m = inst.p.shape
    if n == 0:
        return 0.0
    ec = earliest_completion(inst)
    if not inst.makespan:
        late = np.maximum(ec.min(axis=1) - inst.due, 0.0)
        return float(np.sum(inst.w * np.where(np.isfinite(late), late, 0.0)))
    cheapest = inst.S[:, :, :n].copy()  # (m, n+1, n)
    cheapest[:, np.arange(n), np.arange(n)] = np.inf
    work = inst.p + cheapest.min(axis=1).T  # (n, m)
    return float(max(np.max((ec - inst.tr).min(axis=1)), np.sum(work.min(axis=1)) / m))


def make_plan(problem: Problem, inst: Inst, sequences: list[list[int]], solver: str, solve_s: float,
              lower: float | None = None, optimal: bool = False) -> Plan:
    """The plan of `sequences`: times, figures and why each late lot is late."""
    sched: list[ScheduledLot] = []
    wt = chg = cost = mk = 0.0
    ec = earliest_completion(inst)
    why: dict[int, str] = {}
    for k, seq in enumerate(sequences):
        arr = np.asarray(seq, dtype=np.int64)
        out = np.zeros((len(seq), 5))
        _detail(inst, k, arr, len(seq), out)
        for q, j in enumerate(seq):
            t0, s, _t1, end, _down = (float(v) for v in out[q])
            lot = problem.lots[j]
            late = max(0.0, end + float(inst.tr[j, k]) - lot.due_s)
            sched.append(ScheduledLot(lot=j, line=k, start_s=t0, setup_s=s, end_s=end, tardiness_s=late))
            wt += lot.weight * late
            chg += s
            cost += float(inst.tc[j, k])
            mk = max(mk, end)
            if late > 1e-6:
                why[j] = _why(problem, inst, ec, k, seq, q, out, late)
    return Plan(sequences=[list(s) for s in sequences], scheduled=sched, weighted_tardiness=wt, makespan=mk,
                changeover_s=chg, transport_cost=cost, lower_bound=lower, solver=solver, solve_s=solve_s,
                optimal=optimal, why_late=why)  # fmt: skip


def _hours(s: float) -> str:
    return f"{s / 3600:.1f} h"


def _why(problem: Problem, inst: Inst, ec: Any, k: int, seq: list[int], q: int, out: Any, late: float) -> str:
    j = seq[q]
    lot = problem.lots[j]
    best = int(np.argmin(ec[j]))
    if ec[j, best] > lot.due_s + 1e-6:
        parts = [f"due date unreachable: even alone on the best line {problem.lines[best]} it would be "
                 f"{_hours(ec[j, best] - lot.due_s)} late"]  # fmt: skip
        if lot.release_s > 0 and lot.release_s + inst.p[j, best] + inst.tr[j, best] > lot.due_s:
            parts.append("released too late for its processing time")
        return "; ".join(parts)
    line = problem.lines[k]
    waited = out[q, 0] - max(float(inst.avail[k]), 0.0)
    parts = [f"capacity: {q} lots ahead of it on {line} (it waits {_hours(max(waited, 0.0))} for the line)"]
    downtime = float(np.sum(out[: q + 1, 4]))
    if downtime > 0:
        parts.append(f"{_hours(downtime)} of planned downtime on {line} before it is done")
    setups = float(np.sum(out[: q + 1, 1]))
    if setups > 0:
        parts.append(f"{_hours(setups)} of changeovers on {line} up to it")
    if inst.tr[j, k] > 0:
        parts.append(f"{_hours(float(inst.tr[j, k]))} transport to the ordering site")
    return "; ".join(parts)
