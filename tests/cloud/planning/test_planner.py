"""The Problem the planner builds from the database: long orders split into lots across capable lines, rates
from the capability and expected OEE, changeovers from the line's current family, a started production order
kept first on its line with what is left of it."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from zhizao.cloud.planning import capacity
from zhizao.cloud.planning.service import MAX_LOT_H, Planner


def test_split_rates_changeovers_and_started_lots(seeded: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(seeded) as conn:
        # 8000 BMS boards: ~ 44 h on one SMT line at 4/min x yield x expected OEE -> two lots.
        conn.execute("INSERT INTO plan_orders (order_id, site_id, product_id, quantity, due_ts) VALUES"
                     " ('big', 'ah-hefei', 'bms-slave', 8000, %s), ('small', 'js-suzhou', 'ecu-main', 300, %s)",
                     [now + timedelta(days=5), now + timedelta(hours=8)])
    planner = Planner(seeded)
    with psycopg.connect(seeded) as conn:
        built = planner.build(conn, now)
    p = built.problem
    big = [j for j, lot in enumerate(p.lots) if lot.order_id == "big"]
    factor = capacity.A0 * capacity.P0
    hours_alone = 8000 / (4.0 * 0.997) / 60 / factor
    assert len(big) == math.ceil(hours_alone / MAX_LOT_H) == 2
    assert sum(p.lots[j].quantity for j in big) == pytest.approx(8000)
    smt1 = p.lines.index("js-suzhou/smt-1")
    assert p.proc_s[big[0], smt1] == pytest.approx(p.lots[big[0]].quantity / (4.0 * 0.997) * 60 / factor)
    assert np.isinf(p.proc_s[big[0], p.lines.index("ah-hefei/mod-1")])  # a module line makes no boards
    assert p.transport_s[big[0], smt1] == 6.0 * 3600  # Suzhou -> Hefei by truck
    small = next(j for j, lot in enumerate(p.lots) if lot.order_id == "small")
    assert p.setup_s[smt1, small, big[0]] == 25 * 60 and p.setup_s[smt1, big[0], small] == 30 * 60
    assert p.setup_s[smt1, big[0], big[1]] == 0.0  # lots of one family follow without a changeover
    assert p.initial_setup_s[smt1].max() == 0.0  # nothing ran yet: the current family is unknown

    # The plan is accepted and the ECU lot starts on its line: it stays first there, BMS lots after a changeover.
    proposal = planner.propose("test", None, now=now)
    planner.decide(proposal["plan_id"], True, "test", None)
    with psycopg.connect(seeded) as conn:
        row = conn.execute("SELECT po_id, line_id FROM production_orders WHERE order_id = 'small'").fetchone()
        assert row is not None
        conn.execute("UPDATE production_orders SET status = 'started', started_at = %s WHERE po_id = %s",
                     [now, row[0]])
        built = planner.build(conn, now + timedelta(minutes=5))
    p = built.problem
    line = p.lines.index(f"js-suzhou/{row[1]}")
    (fixed,) = [f for f in p.fixed if f]
    assert p.fixed[line] == fixed and p.lots[fixed[0]].order_id == "small"
    assert p.lots[fixed[0]].quantity == 300  # no counts yet: all of it is left
    bms = next(j for j, lot in enumerate(p.lots) if lot.order_id == "big")
    assert p.initial_setup_s[line, bms] == 25 * 60  # the line now runs ECU boards

    # One lot of the split order starts too: it is fixed, the other keeps its id and quantity.
    with psycopg.connect(seeded) as conn:
        conn.execute("UPDATE production_orders SET status = 'started', started_at = %s WHERE lot_id = 'big.1'"
                     " AND status = 'planned'", [now])
        p = planner.build(conn, now + timedelta(minutes=5)).problem
    big_lots = {lot.id: lot.quantity for lot in p.lots if lot.order_id == "big"}
    assert big_lots == {"big.1": 4000, "big.2": 4000}
    assert sum(1 for f in p.fixed for j in f if p.lots[j].id == "big.1") == 1


def test_any_solver_is_timed_by_the_one_evaluator(seeded: str) -> None:
    """A solver passed to the Planner (here one that puts every lot on its fastest line and forgets the last):
    its sequences are stored with our times and figures, the forgotten lot appended, its name kept."""
    from zhizao.cloud.planning.problem import Plan, Problem

    now = datetime.now(UTC)
    with psycopg.connect(seeded) as conn:
        for i in range(3):
            conn.execute("INSERT INTO plan_orders (order_id, site_id, product_id, quantity, due_ts) VALUES"
                         " (%s, 'js-suzhou', 'ecu-main', 100, %s)", [f"o{i}", now + timedelta(hours=3 + i)])

    def fastest(problem: Problem, time_limit_s: float, warm_start: Plan | None = None, seed: int = 0) -> Plan:
        seqs: list[list[int]] = [[] for _ in problem.lines]
        for j in range(len(problem.lots) - 1):
            seqs[int(np.argmin(problem.proc_s[j]))].append(j)
        return Plan(sequences=seqs, solver="fastest-line", lower_bound=0.0, weighted_tardiness=-1.0)

    result = Planner(seeded, solver=fastest).propose("test", None, now=now)
    assert result["solver"] == "fastest-line" and result["lots"] == 3
    with psycopg.connect(seeded) as conn:
        row = conn.execute("SELECT weighted_tardiness, lower_bound, (SELECT count(*) FROM plan_lots WHERE plan_id = %s)"
                           " FROM plan_versions WHERE plan_id = %s", [result["plan_id"], result["plan_id"]]).fetchone()
    assert row is not None and row[0] >= 0.0 and row[1:] == (0.0, 3)  # our figure, not the solver's -1; 3 lots


def test_which_stops_take_a_line_down(seeded: str) -> None:
    """A failure at once; an unspecified stop after ten minutes; a changeover never (it is planned work)."""
    now = datetime.now(UTC)
    with psycopg.connect(seeded) as conn:
        conn.execute("INSERT INTO oee_state_changes (site_id, machine_id, ts, code) VALUES"
                     " ('js-suzhou', 'smt-1-m01', %s, 180001), ('js-suzhou', 'smt-2-m01', %s, 40000),"
                     " ('ah-hefei', 'mod-1-m01', %s, 40000), ('ah-hefei', 'mod-2-m01', %s, 100000)",
                     [now, now - timedelta(minutes=11), now - timedelta(minutes=2), now - timedelta(hours=1)])
        down = {(d.site, d.line) for d in Planner(seeded).disruptions(conn, now)}
    assert down == {("js-suzhou", "smt-1"), ("js-suzhou", "smt-2")}


def test_a_replan_calls_the_solvers_repair_with_the_changed_lines_and_the_accepted_plan(seeded: str) -> None:
    from zhizao.cloud.planning.basis import Disruption
    from zhizao.cloud.planning.problem import Plan, Problem

    now = datetime.now(UTC)
    with psycopg.connect(seeded) as conn:
        for i in range(4):
            conn.execute("INSERT INTO plan_orders (order_id, site_id, product_id, quantity, due_ts) VALUES"
                         " (%s, 'js-suzhou', 'ecu-main', 200, %s)", [f"o{i}", now + timedelta(hours=4 + i)])
    calls: list[tuple[list[list[int]], list[int], float]] = []

    def repair(problem: Problem, plan: Plan, changed_lines: list[int], time_limit_s: float) -> Plan:
        calls.append((plan.sequences, changed_lines, time_limit_s))
        return Plan(sequences=plan.sequences, solver="test-repair")

    planner = Planner(seeded, repair=repair)
    first = planner.propose("test", None, now=now)
    assert first["solver"] == "iterated-greedy" and not calls  # a first plan is solved (the default solver), not repaired
    planner.decide(first["plan_id"], True, "test", None)
    down = Disruption("js-suzhou", "smt-2", now, now + timedelta(hours=3), "test")
    second = planner.propose("test", None, reason="replan: js-suzhou/smt-2 down", now=now, extra=[down])
    assert second["solver"] == "test-repair"
    ((warm, changed, limit),) = calls
    with psycopg.connect(seeded) as conn:
        built = planner.build(conn, now, [down])
    assert changed == [built.problem.lines.index("js-suzhou/smt-2")] and limit == planner.repair_limit_s == 1.0
    assert sorted(j for seq in warm for j in seq) == list(range(4))  # the accepted plan, mapped onto the lots
