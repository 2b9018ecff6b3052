"""The planner's solver: `solve(problem, time_limit_s)` and `repair(problem, plan, changed_lines, ...)`.

An iterated greedy with local search on insertion and interchange moves (Vallada & Ruiz 2011), its
sequences evaluated by numba kernels that honour downtime (processing pauses and resumes), available-from
times, release times, initial setups, fixed prefixes and transport; OR-Tools CP-SAT solves small makespan
problems exactly. See README.md in this folder.
"""

from zhizao.cloud.planning.solver.model import make_plan
from zhizao.cloud.planning.solver.search import repair, solve

__all__ = ["make_plan", "repair", "solve"]
