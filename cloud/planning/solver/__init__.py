"""The planner's solver: `solve(problem, time_limit_s)` and `repair(problem, plan, changed_lines, ...)`.

An iterated greedy with local search on insertion and interchange moves (Vallada & Ruiz 2011), its
sequences evaluated by numba kernels that honour downtime (processing pauses and resumes), available-from
times, release times, initial setups, fixed prefixes and transport; small makespan problems are solved
exactly (dynamic programme over subsets, OR-Tools CP-SAT). See README.md in this folder.
"""

from __future__ import annotations

import numpy as np

from zhizao.cloud.planning.problem import Lot, Objective, Problem
from zhizao.cloud.planning.solver.model import make_plan
from zhizao.cloud.planning.solver.search import repair, solve

__all__ = ["make_plan", "repair", "solve", "warm_up"]


def warm_up() -> None:
    """Load the compiled kernels (about a second from numba's cache, minutes on the first run after an
    install): call once at service start so that the first re-plan keeps its time limit."""
    n, m = 4, 2
    lots = tuple(Lot(id=f"w{j}", order_id=f"w{j}", product="p", family="f", quantity=1.0, due_s=10.0 * j,
                     release_s=float(j)) for j in range(n))  # fmt: skip
    for objective, down in ((Objective.tardiness, ((5.0, 8.0),)), (Objective.makespan, ())):
        problem = Problem(lots=lots, lines=("w/a", "w/b"), proc_s=np.full((n, m), 3.0),
                          setup_s=np.ones((m, n, n)), initial_setup_s=np.ones((m, n)),
                          transport_s=np.zeros((n, m)), transport_cost=np.zeros((n, m)),
                          unavailable=(down, ()), available_from_s=np.zeros(m), objective=objective)  # fmt: skip
        plan = solve(problem, 0.05)
        repair(problem, plan, [0], 0.05)
