"""The planning problem and its solution, as the solver sees them: lots on unrelated parallel lines with
sequence-dependent changeovers, due dates and weights, and per-line unavailable intervals.

This module is the border between the planning service (orders, capacity, calendars, sites: cloud/planning)
and the solver (cloud/planning/solver): the service builds a `Problem`, the solver returns a `Plan`.
Times are seconds from the plan's origin (`Problem.origin`, epoch seconds). A line that cannot make a lot
has processing time `inf`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

__all__ = ["Lot", "Objective", "Plan", "Problem", "ScheduledLot"]


class Objective(StrEnum):
    """What the solver minimises, lexicographically where more than one figure is named."""

    makespan = "makespan"  # the academic benchmark (Vallada & Ruiz UPMSP with setups): latest completion
    tardiness = "tardiness"  # production: weighted tardiness, then changeover time, then transport cost


@dataclass(frozen=True)
class Lot:
    """A quantity of one product to make in one go on one line (an order or a part of a split order)."""

    id: str
    order_id: str
    product: str
    family: str  # changeover times are between families
    quantity: float
    due_s: float = float("inf")
    weight: float = 1.0
    release_s: float = 0.0  # not before (material availability)


@dataclass(frozen=True)
class Problem:
    """`proc_s[j, m]`: processing time of lot j on line m (inf: the line cannot make it).
    `setup_s[m, i, j]`: changeover on line m from lot i to lot j (i = j: 0); `initial_setup_s[m, j]`:
    from the line's current state to lot j. `transport_s[j, m]` / `transport_cost[j, m]`: moving lot j
    from line m's site to the ordering site (added to its completion for tardiness; cost in the third
    objective). `unavailable[m]`: sorted, non-overlapping (start_s, end_s) intervals in which line m does
    not produce (breaks, planned stops, maintenance, failures); a lot's processing pauses there and resumes.
    `available_from_s[m]`: the line is busy (current lot, repair) until then. `fixed[m]`: lots that must
    stay first on line m in this order (already started or frozen by the planner's horizon)."""

    lots: tuple[Lot, ...]
    lines: tuple[str, ...]  # "site/line" ids
    proc_s: F64
    setup_s: F64
    initial_setup_s: F64
    transport_s: F64
    transport_cost: F64
    unavailable: tuple[tuple[tuple[float, float], ...], ...]
    available_from_s: F64
    objective: Objective = Objective.tardiness
    origin: float = 0.0
    fixed: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        n, m = len(self.lots), len(self.lines)
        shapes = {
            "proc_s": (self.proc_s.shape, (n, m)),
            "setup_s": (self.setup_s.shape, (m, n, n)),
            "initial_setup_s": (self.initial_setup_s.shape, (m, n)),
            "transport_s": (self.transport_s.shape, (n, m)),
            "transport_cost": (self.transport_cost.shape, (n, m)),
            "available_from_s": (self.available_from_s.shape, (m,)),
        }
        for name, (got, want) in shapes.items():
            if got != want:
                raise ValueError(f"{name}: shape {got}, expected {want} for {n} lots on {m} lines")
        if len(self.unavailable) != m:
            raise ValueError(f"unavailable: {len(self.unavailable)} lists, expected one per line ({m})")
        for j, lot in enumerate(self.lots):
            if not np.isfinite(self.proc_s[j]).any():
                raise ValueError(f"lots[{j}] {lot.id!r}: no line can make product {lot.product!r}")


@dataclass(frozen=True)
class ScheduledLot:
    lot: int  # index into Problem.lots
    line: int  # index into Problem.lines
    start_s: float  # changeover starts (setup before the lot)
    setup_s: float
    end_s: float  # completion, with pauses in unavailable intervals
    tardiness_s: float  # max(0, end + transport - due)


@dataclass
class Plan:
    """A solution: one sequence of lot indices per line, with times and objective figures."""

    sequences: list[list[int]]
    scheduled: list[ScheduledLot] = field(default_factory=list)
    weighted_tardiness: float = 0.0
    makespan: float = 0.0
    changeover_s: float = 0.0
    transport_cost: float = 0.0
    lower_bound: float | None = None  # on the primary objective, where the solver has one
    solver: str = ""
    solve_s: float = 0.0
    optimal: bool = False
    why_late: dict[int, str] = field(default_factory=dict)  # lot index -> reason (capacity, due date, setup)
