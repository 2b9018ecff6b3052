"""The planner's solver: exact optima on committed Vallada & Ruiz instances, the numba evaluation against a
plain-Python one on random problems (downtime, release, initial setups, fixed lots, transport), repair,
time limits and the reasons for late lots."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zhizao.bench.plan import cluster_problem, fail_line, load_bounds, load_vr
from zhizao.cloud.planning.problem import Lot, Objective, Plan, Problem
from zhizao.cloud.planning.solver import engine, repair, solve, warm_up
from zhizao.cloud.planning.solver.cpsat import solve_makespan
from zhizao.cloud.planning.solver.model import check_sequences, compile_problem, to_arrays

DATA = Path(__file__).parent / "data"
OPTIMA = load_bounds([DATA / "optimal.csv"])


# ---- the plain-Python evaluation --------------------------------------------------------------------------
def _finish(down: tuple[tuple[float, float], ...], t: float, work: float) -> float:
    """When `work` seconds started at `t` are done, producing only in the gaps between `down` intervals."""
    cur = t
    for a, b in down:
        if b <= cur:
            continue
        if a > cur:
            if work <= a - cur:
                return cur + work
            work -= a - cur
        cur = max(cur, b)
    return cur + work


def reference(problem: Problem, sequences: list[list[int]]) -> dict[str, object]:
    ends: dict[int, float] = {}
    wt = chg = cost = mk = 0.0
    per_line = []
    for k, seq in enumerate(sequences):
        t = float(problem.available_from_s[k])
        line = [0.0, 0.0, 0.0]
        prev = None
        for j in seq:
            s = float(problem.initial_setup_s[k, j] if prev is None else problem.setup_s[k, prev, j])
            t = _finish(problem.unavailable[k], t, s)
            t = max(t, problem.lots[j].release_s)
            t = _finish(problem.unavailable[k], t, float(problem.proc_s[j, k]))
            ends[j] = t
            late = max(0.0, t + float(problem.transport_s[j, k]) - problem.lots[j].due_s)
            line[0] += problem.lots[j].weight * late
            line[1] += s
            line[2] += float(problem.transport_cost[j, k])
            prev = j
        if problem.objective is Objective.makespan:
            line[0] = t if seq else 0.0
        wt += line[0] if problem.objective is Objective.tardiness else 0.0
        chg += line[1]
        cost += line[2]
        mk = max(mk, t if seq else 0.0)
        per_line.append(line)
    return {"ends": ends, "wt": wt, "chg": chg, "cost": cost, "makespan": mk, "lines": per_line}


def random_problem(seed: int, objective: Objective = Objective.tardiness, simple: bool = False) -> Problem:
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(1, 9)), int(rng.integers(1, 4))
    proc = rng.uniform(10, 100, size=(n, m)).round()
    proc[rng.random((n, m)) < 0.3] = np.inf
    for j in range(n):
        if not np.isfinite(proc[j]).any():
            proc[j, rng.integers(0, m)] = float(rng.integers(10, 100))
    setup = rng.uniform(0, 30, size=(m, n, n)).round()
    for k in range(m):
        np.fill_diagonal(setup[k], 0)
    lots = tuple(Lot(id=f"L{j}", order_id=f"O{j}", product=f"P{j}", family=f"F{j % 3}", quantity=1.0,
                     due_s=float(rng.uniform(20, 400)), weight=float(rng.choice([1.0, 2.0, 5.0])),
                     release_s=0.0 if simple else float(rng.choice([0.0, rng.uniform(0, 150)])))
                 for j in range(n))  # fmt: skip
    down: list[tuple[tuple[float, float], ...]] = []
    for _ in range(m):
        if simple:
            down.append(())
            continue
        cuts = np.sort(rng.uniform(0, 600, size=2 * int(rng.integers(0, 4))))
        down.append(tuple((float(cuts[i]), float(cuts[i + 1])) for i in range(0, len(cuts), 2) if cuts[i] < cuts[i + 1]))
    fixed: list[tuple[int, ...]] = [() for _ in range(m)]
    if not simple and rng.random() < 0.5:
        j = int(rng.integers(0, n))
        fixed[int(np.flatnonzero(np.isfinite(proc[j]))[0])] = (j,)
    return Problem(lots=lots, lines=tuple(f"s/l{k}" for k in range(m)), proc_s=proc, setup_s=setup,
                   initial_setup_s=np.zeros((m, n)) if simple else rng.uniform(0, 20, size=(m, n)).round(),
                   transport_s=rng.choice([0.0, 30.0], size=(n, m)), transport_cost=rng.uniform(0, 5, size=(n, m)),
                   unavailable=tuple(down), available_from_s=np.zeros(m) if simple else rng.uniform(0, 50, size=m),
                   objective=objective, fixed=tuple(fixed))  # fmt: skip


def random_sequences(problem: Problem, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed + 1)
    seqs = [list(f) for f in problem.fixed] if problem.fixed else [[] for _ in problem.lines]
    placed = {j for s in seqs for j in s}
    for j in rng.permutation(len(problem.lots)):
        if int(j) not in placed:
            seqs[int(rng.choice(np.flatnonzero(np.isfinite(problem.proc_s[j]))))].append(int(j))
    return seqs


# ---- exact optima -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(DATA.glob("I_*.txt")), ids=lambda p: p.stem)
def test_small_instances_are_solved_to_their_published_optimum(path: Path) -> None:
    # (how fast: `zhizao bench plan` on the 640 small instances; a unit test does not time it)
    problem = load_vr(path)
    plan = solve(problem, 1.0)
    assert plan.makespan == OPTIMA[path.stem] and plan.optimal and plan.lower_bound == OPTIMA[path.stem]
    assert reference(problem, plan.sequences)["makespan"] == plan.makespan
    check_sequences(problem, plan.sequences)


@pytest.mark.parametrize("name", ["I_8_3_S_1-49_2", "I_10_2_S_1-124_1"])
def test_cp_sat_proves_the_same_optimum(name: str) -> None:
    problem = load_vr(DATA / f"{name}.txt")
    inst = compile_problem(problem)
    n, m = len(problem.lots), len(problem.lines)
    res = solve_makespan(inst, list(range(m)), list(range(n)), None, 30.0, workers=1)
    assert res.optimal and res.objective == res.bound == OPTIMA[name]
    assert reference(problem, res.sequences)["makespan"] == OPTIMA[name]


def test_the_lower_bound_holds_from_a_poor_warm_start() -> None:
    problem = load_vr(DATA / "I_12_5_S_1-9_3.txt")
    big = Problem(**{**problem.__dict__, "objective": Objective.makespan})
    plan = solve(big, 0.3, warm_start=Plan(sequences=[[j for j in range(12) if j % 5 == k] for k in range(5)]))
    assert plan.lower_bound is not None and plan.lower_bound <= plan.makespan


# ---- evaluation against the plain-Python one --------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([Objective.tardiness, Objective.makespan]))
def test_plan_figures_and_engine_evaluation_match_the_reference(seed: int, objective: Objective) -> None:
    problem = random_problem(seed, objective)
    seqs = random_sequences(problem, seed)
    ref = reference(problem, seqs)
    from zhizao.cloud.planning.solver import make_plan

    inst = compile_problem(problem)
    plan = make_plan(problem, inst, seqs, "test", 0.0)
    for lot in plan.scheduled:
        assert lot.end_s == pytest.approx(ref["ends"][lot.lot])  # type: ignore[index]
    if objective is Objective.tardiness:
        assert plan.weighted_tardiness == pytest.approx(ref["wt"])
    assert plan.changeover_s == pytest.approx(ref["chg"])
    assert plan.transport_cost == pytest.approx(ref["cost"])
    assert plan.makespan == pytest.approx(ref["makespan"])
    assert set(plan.why_late) == {s.lot for s in plan.scheduled if s.tardiness_s > 1e-6}
    _, _, lc = to_arrays(inst, seqs)
    for k, line in enumerate(ref["lines"]):  # type: ignore[arg-type]
        assert list(lc[k]) == pytest.approx(line)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**31 - 1), st.booleans())
def test_incremental_edit_figures_match_a_full_reference_evaluation(seed: int, simple: bool) -> None:
    """The move figures the search uses (prefix-cached on the general path, O(1) on the simple one)."""
    objective = Objective.makespan if simple else Objective.tardiness
    problem = random_problem(seed, objective, simple=simple)
    inst = compile_problem(problem)
    assert inst.simple == simple
    seqs = random_sequences(problem, seed)
    seq, ln, lc = to_arrays(inst, seqs)
    P = np.zeros((len(problem.lines), len(problem.lots) + 2, 5))
    engine.refresh_prefix(inst, seq, ln, P)
    rng = np.random.default_rng(seed)
    for _ in range(10):
        k = int(rng.integers(0, len(seqs)))
        fix = int(inst.fix[k])
        r = int(rng.integers(fix, ln[k])) if ln[k] > fix and rng.random() < 0.7 else -1
        others = [j for s in seqs for j in s if j not in seqs[k] and inst.movable[j] and inst.allowed[j, k]]
        x = seqs[k][r] if r >= 0 and (not others or rng.random() < 0.5) else (int(rng.choice(others)) if others else -1)
        length = len(seqs[k]) - (r >= 0)
        q = int(rng.integers(fix, length + 1)) if x >= 0 and fix <= length else -1
        edited = [j for e, j in enumerate(seqs[k]) if e != r]
        if q >= 0:
            edited.insert(q, x)
        got = engine.edit_cost(inst, seq, ln, lc, P, k, r, q, x, np.inf)
        want = reference(problem, [edited if kk == k else [] for kk in range(len(seqs))])["lines"][k]  # type: ignore[index]
        assert list(got) == pytest.approx(want)


# ---- the search -------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_solve_returns_a_valid_plan_no_worse_than_its_warm_start(seed: int) -> None:
    problem = random_problem(seed)
    warm = Plan(sequences=random_sequences(problem, seed))
    plan = solve(problem, 0.05, warm_start=warm, seed=seed)
    check_sequences(problem, plan.sequences)
    start = reference(problem, warm.sequences)
    got = reference(problem, plan.sequences)
    assert plan.weighted_tardiness == pytest.approx(got["wt"])
    assert (got["wt"], got["chg"]) <= (start["wt"], start["chg"])  # type: ignore[operator]
    assert plan.lower_bound is not None and plan.lower_bound <= plan.weighted_tardiness + 1e-6


@pytest.fixture(scope="module")
def cluster() -> tuple[Problem, Plan]:
    warm_up()  # as a service does at start: the first repair then keeps its time limit
    problem = cluster_problem(120, days=7, seed=3)
    return problem, solve(problem, 1.5)


def test_solver_beats_greedy_edd_on_a_cluster_instance(cluster: tuple[Problem, Plan]) -> None:
    from zhizao.bench.plan import edd_plan

    problem, plan = cluster
    greedy, _ = edd_plan(problem)
    check_sequences(problem, greedy.sequences)
    assert plan.weighted_tardiness <= 0.5 * greedy.weighted_tardiness
    assert plan.weighted_tardiness == pytest.approx(reference(problem, plan.sequences)["wt"])


def test_repair_moves_lots_off_a_failed_line_within_its_time_limit(cluster: tuple[Problem, Plan]) -> None:
    problem, plan = cluster
    line = max(range(len(problem.lines)), key=lambda k: len(plan.sequences[k]))
    failed = fail_line(problem, line, 0.0, 72.0)
    stale = reference(failed, plan.sequences)
    repaired = repair(failed, plan, [line], 1.0)
    check_sequences(failed, repaired.sequences)
    got = reference(failed, repaired.sequences)
    assert repaired.weighted_tardiness == pytest.approx(got["wt"])
    assert got["wt"] <= stale["wt"]  # type: ignore[operator]
    # nothing runs inside the 72 h failure on that line
    for s in repaired.scheduled:
        if s.line == line:
            assert s.end_s >= 72 * 3600.0 or s.end_s <= 0.0
    with pytest.raises(ValueError, match="changed_lines"):
        repair(failed, plan, [len(problem.lines)], 0.1)


def _reach(problem: Problem, line: int) -> set[int]:
    """The lines a change on `line` can touch: connected through lots that more than one of them can make."""
    allowed = np.isfinite(problem.proc_s)
    seen, todo = {line}, [line]
    while todo:
        k = todo.pop()
        for b in map(int, np.flatnonzero(allowed[allowed[:, k]].any(axis=0))):
            if b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


def _check_repaired(problem: Problem, failed: Problem, plan: Plan, repaired: Plan, line: int,
                    outage: tuple[float, float]) -> None:
    """Feasible (every lot once, on a line that can make it; the figures and times of the independent evaluation;
    no work on the failed line in its outage), no worse than the old plan as it now runs, and the lines the failure
    cannot reach keep their sequences."""
    check_sequences(failed, repaired.sequences)
    got = reference(failed, repaired.sequences)
    stale = reference(failed, plan.sequences)
    assert repaired.weighted_tardiness == pytest.approx(got["wt"])
    assert (got["wt"], got["chg"]) <= (stale["wt"], stale["chg"])  # type: ignore[operator]
    a, b = outage[0] + 1e-6, outage[1] - 1e-6  # (the outage's end in hours, back in seconds)
    for s in repaired.scheduled:
        assert s.end_s == pytest.approx(got["ends"][s.lot])  # type: ignore[index]
        if s.line == line:  # a lot may pause across the outage, but nothing starts or ends in it
            assert not a < s.start_s < b and not a < s.end_s <= b, (s, outage)
    reach = _reach(problem, line)
    for k, seq in enumerate(repaired.sequences):
        if k not in reach:
            assert seq == plan.sequences[k], k


def test_repairs_after_failures_of_several_lines_and_lengths_are_feasible_and_no_worse(
        cluster: tuple[Problem, Plan]) -> None:
    from zhizao.bench.plan import failure_lines

    problem, plan = cluster
    for line in failure_lines(problem, plan, 3):
        for start_h, hours in ((0.0, 12.0), (6.0, 48.0)):
            failed = fail_line(problem, line, start_h * 3600, hours)
            repaired = repair(failed, plan, [line], 0.3)
            _check_repaired(problem, failed, plan, repaired, line, (start_h * 3600, (start_h + hours) * 3600))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(10.0, 400.0))
def test_repair_of_random_problems_is_feasible_and_no_worse_than_the_old_plan(seed: int, down_s: float) -> None:
    """Random problems (fixed lots, release times, downtime, lines that share some lots and not others)."""
    problem = random_problem(seed)
    plan = Plan(sequences=random_sequences(problem, seed))
    line = seed % len(problem.lines)
    failed = fail_line(problem, line, 0.0, down_s / 3600)
    repaired = repair(failed, plan, [line], 0.05)
    _check_repaired(problem, failed, plan, repaired, line, (0.0, down_s))


@pytest.mark.parametrize("limit", [0.2, 1.0])
def test_solve_keeps_its_time_limit(cluster: tuple[Problem, Plan], limit: float) -> None:
    problem, _ = cluster
    started = time.perf_counter()
    plan = solve(problem, limit)
    took = time.perf_counter() - started
    assert took <= limit + 1.0, took  # the deadline is kept (its precision: `zhizao bench plan`)
    assert plan.solve_s <= took


def test_why_late_names_an_unreachable_due_date_and_queueing() -> None:
    lots = (Lot(id="rush", order_id="O1", product="A", family="A", quantity=1.0, due_s=50.0),
            Lot(id="next", order_id="O2", product="B", family="B", quantity=1.0, due_s=150.0))  # fmt: skip
    problem = Problem(lots=lots, lines=("s/l",), proc_s=np.array([[100.0], [100.0]]), setup_s=np.zeros((1, 2, 2)),
                      initial_setup_s=np.zeros((1, 2)), transport_s=np.zeros((2, 1)), transport_cost=np.zeros((2, 1)),
                      unavailable=((),), available_from_s=np.zeros(1))  # fmt: skip
    plan = solve(problem, 0.2)
    assert plan.sequences == [[0, 1]] and plan.weighted_tardiness == 50.0 + 50.0
    assert plan.why_late[0].startswith("due date unreachable")
    assert plan.why_late[1].startswith("capacity: 1 lots ahead of it on s/l")


def test_an_empty_order_book_gives_an_empty_plan() -> None:
    problem = Problem(lots=(), lines=("s/a", "s/b"), proc_s=np.zeros((0, 2)), setup_s=np.zeros((2, 0, 0)),
                      initial_setup_s=np.zeros((2, 0)), transport_s=np.zeros((0, 2)), transport_cost=np.zeros((0, 2)),
                      unavailable=((), ()), available_from_s=np.zeros(2))  # fmt: skip
    plan = solve(problem, 0.1)
    assert plan.sequences == [[], []] and plan.weighted_tardiness == 0.0 and plan.scheduled == []
    assert repair(problem, plan, [1], 0.1).sequences == [[], []]


def test_inconsistent_fixed_lots_and_bad_instance_files_are_refused_by_name(tmp_path: Path) -> None:
    problem = random_problem(1)
    bad = Problem(**{**problem.__dict__, "fixed": (*tuple(() for _ in problem.lines[:-1]), (len(problem.lots),))})
    with pytest.raises(ValueError, match=r"fixed\[\d\]: lot index"):
        compile_problem(bad)
    path = tmp_path / "I_1_1_S_1-9_1.txt"
    path.write_text("1 1 1\n1\n 0 5\nXSD\n")
    with pytest.raises(ValueError, match="not a Vallada & Ruiz instance: expected 'SSD'"):
        load_vr(path)
