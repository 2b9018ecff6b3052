"""OR-Tools CP-SAT models: the exact makespan model for small problems (one circuit per line, lots left out
of a line's circuit by their self-loop) and the same model on a subset of lines and lots as the sub-problem
of the large-neighbourhood step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ortools.sat.python import cp_model

from zhizao.cloud.planning.solver.engine import Inst

__all__ = ["CpResult", "integral", "solve_makespan"]


@dataclass
class CpResult:
    sequences: list[list[int]]  # indices into `lines` order given, lots as given
    objective: float
    bound: float
    optimal: bool
    feasible: bool


def integral(inst: Inst) -> bool:
    """CP-SAT needs integers: the finite processing and setup times must be whole numbers."""
    p = inst.p[inst.allowed]
    return bool(np.all(p == np.round(p)) and np.all(np.isfinite(inst.S)) and np.all(np.round(inst.S) == inst.S)
                and np.all(inst.avail == np.round(inst.avail)))  # fmt: skip


def solve_makespan(inst: Inst, lines: list[int], lots: list[int], hint: list[list[int]] | None,
                   time_limit_s: float, workers: int = 1, seed: int = 0) -> CpResult:
    """Minimise the latest completion of `lots` on `lines` (simple problems: no downtime, no release after
    the lines are free, no fixed lots among `lots`). `hint`: a sequence per line of `lines`."""
    model = cp_model.CpModel()
    n = inst.p.shape[0]
    horizon = int(sum(float(np.max(inst.p[j, lines][inst.allowed[j, lines]])) for j in lots)
                  + len(lots) * float(np.max(inst.S[lines])) + float(np.max(inst.avail[lines])) + 1)  # fmt: skip
    cmax = model.new_int_var(0, horizon, "cmax")
    assign: dict[tuple[int, int], Any] = {}
    arcs_of: dict[tuple[int, int, int], Any] = {}
    for k in lines:
        arcs: list[tuple[int, int, Any]] = []
        here = [j for j in lots if inst.allowed[j, k]]
        terms: list[Any] = []
        coefs: list[int] = []
        empty = model.new_bool_var(f"empty{k}")
        arcs.append((0, 0, empty))
        for j in here:
            x = model.new_bool_var(f"x{j},{k}")
            assign[j, k] = x
            arcs.append((j + 1, j + 1, ~x))
            a = model.new_bool_var(f"s{k},{j}")
            arcs.append((0, j + 1, a))
            arcs_of[k, n, j] = a
            terms.append(a)
            coefs.append(int(inst.S[k, n, j]))
            arcs.append((j + 1, 0, model.new_bool_var(f"e{k},{j}")))
            terms.append(x)
            coefs.append(int(inst.p[j, k]))
            model.add_implication(x, ~empty)
        for i in here:
            for j in here:
                if i != j:
                    a = model.new_bool_var(f"a{k},{i},{j}")
                    arcs.append((i + 1, j + 1, a))
                    arcs_of[k, i, j] = a
                    terms.append(a)
                    coefs.append(int(inst.S[k, i, j]))
        model.add_circuit(arcs)
        avail = int(inst.avail[k])
        model.add(cmax >= sum(c * t for c, t in zip(coefs, terms, strict=True)) + avail * (1 - empty))
    for j in lots:
        model.add_exactly_one(assign[j, k] for k in lines if (j, k) in assign)
    model.minimize(cmax)
    if hint is not None:
        for pos, k in enumerate(lines):
            s = hint[pos]
            on = set(s)
            for j in lots:
                if (j, k) in assign:
                    model.add_hint(assign[j, k], j in on)
            prev = n
            used = set()
            for j in s:
                used.add((k, prev, j))
                prev = j
            for key, a in arcs_of.items():
                if key[0] == k:
                    model.add_hint(a, key in used)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_limit_s, 0.01)
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = seed
    status = solver.status_name(solver.solve(model))
    if status not in ("OPTIMAL", "FEASIBLE"):
        return CpResult([], float("inf"), float(solver.best_objective_bound), False, False)
    sequences: list[list[int]] = []
    for k in lines:
        nxt: dict[int, int] = {}
        for (kk, i, j), a in arcs_of.items():
            if kk == k and solver.boolean_value(a):
                nxt[i] = j
        seq: list[int] = []
        cur = n
        while cur in nxt:
            cur = nxt[cur]
            seq.append(cur)
        sequences.append(seq)
    return CpResult(sequences, float(solver.objective_value), float(solver.best_objective_bound),
                    status == "OPTIMAL", True)  # fmt: skip
