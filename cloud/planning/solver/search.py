"""`solve` and `repair`: iterated greedy with local search (Vallada & Ruiz 2011) on the numba engine, CP-SAT
for small makespan problems (exact, with its bound), and a repair that keeps the plan where it can."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from zhizao.cloud.planning.problem import Plan, Problem
from zhizao.cloud.planning.solver import engine
from zhizao.cloud.planning.solver.engine import Inst
from zhizao.cloud.planning.solver.exact import DP_MAX_LOTS, solve_makespan_dp
from zhizao.cloud.planning.solver.model import (
    check_sequences,
    compile_problem,
    lower_bound,
    make_plan,
    to_arrays,
)

__all__ = ["EXACT_MAX_LOTS", "repair", "solve"]

EXACT_MAX_LOTS = 16  # makespan problems up to this many lots go to CP-SAT (with the IG solution as hint)
_SWEEPS = 50
_NO_LIMIT = 1 << 62
_T_FACTOR = 0.25  # temperature: this times the mean processing time / 10 (chosen on 3 large instances, 8 s)
_REPAIR_WINDOW = 5  # repair: positions a lot moves within its line in one local-search move (`zhizao bench plan`)
_REPAIR_T_FACTOR = 1.0  # repair, tardiness: worse solutions accepted with exp(-delta / (this x mean processing / 10))


def _lex_less(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    for x, y in zip(a, b, strict=True):
        tol = 1e-7 * (1.0 + abs(y))
        if x < y - tol:
            return True
        if x > y + tol:
            return False
    return False


def _seed_sequences(problem: Problem, inst: Inst, warm: Plan | None) -> tuple[list[list[int]], list[int]]:
    """Fixed prefixes, then the warm start's lots where they are still possible; the rest to insert."""
    m = len(problem.lines)
    n = len(problem.lots)
    seqs: list[list[int]] = [list(problem.fixed[k]) if problem.fixed else [] for k in range(m)]
    placed = np.zeros(n, np.bool_)
    for s in seqs:
        placed[s] = True
    if warm is not None and len(warm.sequences) == m:
        for k, s in enumerate(warm.sequences):
            for j in s:
                if 0 <= j < n and not placed[j] and inst.allowed[j, k]:
                    seqs[k].append(j)
                    placed[j] = True
    rest = [j for j in range(n) if not placed[j]]
    return seqs, rest


def _order(problem: Problem, inst: Inst, rest: list[int]) -> Any:
    if inst.makespan:  # the longest lots first (their cheapest line), as in list scheduling
        key = -np.where(inst.allowed, inst.p, np.inf).min(axis=1)[rest]
    else:  # earliest due date, then the heaviest
        key = np.array([problem.lots[j].due_s - 1e-9 * problem.lots[j].weight for j in rest])
    return np.asarray(rest, dtype=np.int64)[np.argsort(key, kind="stable")]


def _temperature(inst: Inst, factor: float = _T_FACTOR) -> float:
    """Simulated-annealing acceptance: makespan always; tardiness in the repair's focused search only."""
    if not inst.makespan and factor == _T_FACTOR:
        return 0.0
    p = inst.p[inst.allowed]
    return factor * float(np.mean(p)) / 10.0 if p.size else 0.0


class _Search:
    """The current and best solution of one run of the iterated greedy."""

    def __init__(self, inst: Inst, seqs: list[list[int]], seed: int) -> None:
        self.inst = inst
        engine.seed_rng(seed)
        self.cur = to_arrays(inst, seqs)
        self.best = tuple(a.copy() for a in self.cur)
        self.rate = 0.0  # candidate moves per second, measured
        self.window = 1 << 30  # how far a lot moves within its line in one local-search move

    def construct(self, order: Any) -> None:
        """Insert the lots of `order` one by one where they cost least (no local search yet)."""
        seq, ln, lc = self.cur
        engine.construct(self.inst, seq, ln, lc, order, 0, _NO_LIMIT)
        self.best = tuple(a.copy() for a in self.cur)

    def _budget(self, left: float) -> int:
        """Candidate moves for one kernel call of about 50 ms, from the rate measured so far."""
        if self.rate <= 0:
            return 20_000
        return int(max(1000, min(self.rate * min(0.05, left / 2), 1e12)))

    def descend(self, deadline: float) -> None:
        """Local search on the whole current solution, in calls that end near `deadline` at the latest."""
        budget = np.zeros(1, np.int64)
        seq, ln, lc = self.cur
        while (left := deadline - time.perf_counter()) > 0:
            give = budget[0] = self._budget(left)
            started = time.perf_counter()
            engine.improve(self.inst, seq, ln, lc, _SWEEPS, budget)
            self.rate = (give - int(budget[0])) / max(time.perf_counter() - started, 1e-6)
            if budget[0] > 0:
                break  # a local optimum (or the sweep limit)
        self.best = tuple(a.copy() for a in self.cur)

    def run(self, deadline: float, focused: bool = False) -> int:
        """Iterate until `deadline` (perf_counter); chunks sized to end close to it. Returns iterations.
        `focused` (the repair): half of the destructions around a late lot (`engine.iterate`), and worse
        solutions accepted by the annealing rule also for tardiness."""
        n = self.inst.p.shape[0]
        d_max = max(2, min(6, n // 2))
        d_min = min(2, d_max)
        temp = _temperature(self.inst, _REPAIR_T_FACTOR if focused else _T_FACTOR)
        if n < 2 or not self.inst.movable.any():
            return 0  # nothing to destroy and rebuild
        # Each call gets a budget of candidate moves sized to last about 50 ms: the length of an iteration
        # varies too much to size calls by iterations.
        budget = np.zeros(1, np.int64)
        done = 0
        while (left := deadline - time.perf_counter()) > 0:
            give = budget[0] = self._budget(left)
            started = time.perf_counter()
            seq, ln, lc = self.cur
            bseq, bln, blc = self.best
            done += engine.iterate(self.inst, seq, ln, lc, bseq, bln, blc, 1 << 40, d_min, d_max, temp, _SWEEPS,
                                   budget, focused, self.window)  # fmt: skip
            self.rate = (give - int(budget[0])) / max(time.perf_counter() - started, 1e-6)
        return done


    def sequences(self) -> list[list[int]]:
        seq, ln, _ = self.best
        return [list(map(int, seq[k, : ln[k]])) for k in range(seq.shape[0])]

    def figures(self) -> tuple[float, float, float]:
        f0, f1, f2 = engine.total(self.inst, self.best[2])
        return float(f0), float(f1), float(f2)


def _exact_ok(problem: Problem, inst: Inst) -> bool:
    if not (inst.simple and 0 < len(problem.lots) <= EXACT_MAX_LOTS and not inst.fix.any()):
        return False
    from zhizao.cloud.planning.solver.cpsat import integral

    return integral(inst)


def solve(problem: Problem, time_limit_s: float, warm_start: Plan | None = None, seed: int = 0) -> Plan:
    """The best plan found within `time_limit_s` (wall clock, plan building included)."""
    started = time.perf_counter()
    deadline = started + max(time_limit_s, 0.0) * 0.97
    inst = compile_problem(problem)
    n, m = inst.p.shape
    if inst.simple and not inst.fix.any() and 0 < n <= DP_MAX_LOTS and m * 3.0**n <= 5e7:
        seqs, value = solve_makespan_dp(inst)
        return make_plan(problem, inst, seqs, "exact-dp", time.perf_counter() - started, value, True)
    seqs, rest = _seed_sequences(problem, inst, warm_start)
    search = _Search(inst, seqs, seed)
    search.construct(_order(problem, inst, rest))
    lower = lower_bound(inst)
    if _exact_ok(problem, inst):
        from zhizao.cloud.planning.solver.cpsat import solve_makespan

        search.descend(deadline)
        search.run(min(deadline, time.perf_counter() + 0.005 * len(problem.lots)))
        ub = search.figures()[0]
        if ub > lower + 1e-9:
            m = len(problem.lines)
            res = solve_makespan(inst, list(range(m)), list(range(len(problem.lots))), search.sequences(),
                                 deadline - time.perf_counter(), seed=seed)  # fmt: skip
            if res.feasible and res.objective <= ub:
                return make_plan(problem, inst, res.sequences, "cp-sat", time.perf_counter() - started,
                                 max(lower, res.bound), res.optimal)  # fmt: skip
            lower = max(lower, res.bound)
        return make_plan(problem, inst, search.sequences(), "iterated-greedy", time.perf_counter() - started,
                         lower, ub <= lower + 1e-9)  # fmt: skip
    search.descend(deadline)
    search.run(deadline)
    primary = search.figures()[0]
    return make_plan(problem, inst, search.sequences(), "iterated-greedy", time.perf_counter() - started,
                     lower, primary <= lower + 1e-9)  # fmt: skip


def _component(inst: Inst, lines: Iterable[int]) -> list[int]:
    """The lines connected to `lines` by lots that more than one of them can make (what a change there can
    move), in index order."""
    allowed = inst.allowed
    seen = set(lines)
    todo = list(seen)
    while todo:
        k = todo.pop()
        for b in np.flatnonzero(allowed[allowed[:, k]].any(axis=0)):
            if int(b) not in seen:
                seen.add(int(b))
                todo.append(int(b))
    return sorted(seen)


def _sub_inst(inst: Inst, lots: Any, lines: Any) -> Inst:
    """The instance of `lots` on `lines` only (their indices into `inst`): every lot that one of these lines can
    make must be among `lots` and make no other line, so that the rest of the plan does not change its figures."""
    n = inst.p.shape[0]
    idx = np.append(lots, n)
    starts: list[Any] = []
    ends: list[Any] = []
    uoff = np.zeros(len(lines) + 1, np.int64)
    for i, k in enumerate(lines):
        starts.append(inst.us[inst.uoff[k]: inst.uoff[k + 1]])
        ends.append(inst.ue[inst.uoff[k]: inst.uoff[k + 1]])
        uoff[i + 1] = uoff[i] + len(starts[-1])
    return Inst(p=np.ascontiguousarray(inst.p[np.ix_(lots, lines)]),
                allowed=np.ascontiguousarray(inst.allowed[np.ix_(lots, lines)]),
                S=np.ascontiguousarray(inst.S[np.ix_(lines, idx, idx)]), rel=inst.rel[lots], due=inst.due[lots],
                w=inst.w[lots], tr=np.ascontiguousarray(inst.tr[np.ix_(lots, lines)]),
                tc=np.ascontiguousarray(inst.tc[np.ix_(lots, lines)]), avail=inst.avail[lines],
                us=np.ascontiguousarray(np.concatenate([inst.us[:0], *starts])),
                ue=np.ascontiguousarray(np.concatenate([inst.ue[:0], *ends])), uoff=uoff, fix=inst.fix[lines], movable=inst.movable[lots], makespan=inst.makespan,
                simple=inst.simple)  # fmt: skip


def _repair_part(problem: Problem, inst: Inst, seqs: list[list[int]], rest: list[int], changed: set[int],
                 deadline: float) -> list[list[int]]:
    """Tardiness: the lines that a change can reach (through lots that more than one of them can make) are
    searched as one small instance, as the figures add up over lines and the rest of the plan keeps its
    sequences and figures. Its iterated greedy destroys around late lots half of the time and moves lots
    within their line by a few positions only (more iterations in the second it has)."""
    start = set(changed) | {int(k) for j in rest for k in np.flatnonzero(inst.allowed[j])}
    if not start:
        return seqs
    lines = np.asarray(_component(inst, start), np.int64)
    lots = np.flatnonzero(inst.allowed[:, lines].any(axis=1)).astype(np.int64)
    sub = _sub_inst(inst, lots, lines)
    local = np.full(inst.p.shape[0], -1, np.int64)
    local[lots] = np.arange(len(lots))
    search = _Search(sub, [[int(local[j]) for j in seqs[k]] for k in lines], 0)
    search.construct(local[_order(problem, inst, rest)])
    search.descend(deadline)
    search.window = _REPAIR_WINDOW
    search.run(deadline, focused=True)
    out = [list(s) for s in seqs]
    for i, s in enumerate(search.sequences()):
        out[int(lines[i])] = [int(lots[j]) for j in s]
    return out


def repair(problem: Problem, plan: Plan, changed_lines: Iterable[int], time_limit_s: float) -> Plan:
    """Re-plan after lines lost capacity (`problem` already has their new downtime or available-from time):
    the lots of `changed_lines` that are not fixed are taken off and inserted again where they cost least
    (which may be the same line), every other line keeps its sequence, then local search and the iterated
    greedy improve the result for the rest of `time_limit_s`."""
    started = time.perf_counter()
    deadline = started + max(time_limit_s, 0.0) * 0.8
    inst = compile_problem(problem)
    changed = set(changed_lines)
    m = len(problem.lines)
    for k in changed:
        if not 0 <= k < m:
            raise ValueError(f"changed_lines: line index {k} out of range 0..{m - 1}")
    keep = Plan(sequences=[[] if k in changed else list(s) for k, s in enumerate(plan.sequences)]) \
        if len(plan.sequences) == m else None  # fmt: skip
    seqs, rest = _seed_sequences(problem, inst, keep)
    if inst.makespan:
        # the search destroys only lots that a changed line could make: the rest of the plan cannot gain
        related = inst.allowed[:, sorted(changed)].any(axis=1) if changed else np.zeros(len(problem.lots), np.bool_)
        focused = inst._replace(movable=inst.movable & related)
        search = _Search(focused, seqs, 0)
        search.construct(_order(problem, inst, rest))
        search.descend(deadline)
        search.run(deadline)
        sequences = search.sequences()
    else:
        sequences = _repair_part(problem, inst, seqs, rest, changed, deadline)
    try:  # the old plan as it stands on the changed problem, when it is still valid and better
        check_sequences(problem, plan.sequences, "plan")
        old = to_arrays(inst, plan.sequences)
        a, b = engine.total(inst, old[2]), engine.total(inst, to_arrays(inst, sequences)[2])
        if _lex_less(a, b):
            sequences = [list(s) for s in plan.sequences]
    except ValueError:
        pass
    result = make_plan(problem, inst, sequences, "repair", time.perf_counter() - started, lower_bound(inst))
    check_sequences(problem, result.sequences)
    return result
