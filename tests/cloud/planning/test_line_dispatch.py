"""The accepted plan keeps its lines busy (PostgreSQL, the seeded cluster): once a line has counted the quantity
of its started production order, the order is done and the line's next lot of the plan is started and queued
as a RunOrder command to its output machine, once, also when the dispatcher runs again or restarts. A line
whose operator has not started the plan there gets nothing by itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from zhizao.cloud.planning.dispatch import DISPATCHER, RUN_ORDER, LineDispatcher, ProductionOrderSender
from zhizao.cloud.planning.service import Planner


def _count(conn: psycopg.Connection[Any], sql: str, params: list[Any]) -> int:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def test_the_next_lot_is_sent_when_the_line_has_counted_the_first_and_only_once(seeded: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(seeded) as conn:
        for i in range(3):  # three small ECU orders on Suzhou's two SMT lines: one line gets two of them
            conn.execute("INSERT INTO plan_orders (order_id, site_id, product_id, quantity, due_ts, allowed_sites)"
                         " VALUES (%s, 'js-suzhou', 'ecu-main', 120, %s, ARRAY['js-suzhou'])",
                         [f"d{i}", now + timedelta(hours=6 + i)])
    planner = Planner(seeded)
    proposal = planner.propose("test", None, now=now)
    assert planner.decide(proposal["plan_id"], True, "test", None)["production_orders"] == 3
    with psycopg.connect(seeded) as conn:
        pos = conn.execute("SELECT po_id, line_id, quantity FROM production_orders WHERE status = 'planned'"
                           " ORDER BY line_id, seq").fetchall()
        line = next(ln for ln in {p[1] for p in pos} if sum(1 for p in pos if p[1] == ln) >= 2)
        (first, _, qty), (second, _, _) = [p for p in pos if p[1] == line][:2]
        others = [p[0] for p in pos if p[1] != line]
        output, per_unit = conn.execute(
            "SELECT l.output_machine, c.counts_per_unit FROM plan_lines l JOIN plan_capabilities c"
            " ON c.kind_id = l.kind_id AND c.product_id = 'ecu-main' WHERE l.site_id = 'js-suzhou' AND l.line_id = %s",
            [line]).fetchone() or (None, None)
        machines = conn.execute("SELECT machine_id, edge_node_id FROM machines WHERE site_id = 'js-suzhou'"
                                " AND line_id = %s AND (%s = 'all' OR machine_id = %s)", [line, output, output]).fetchall()
        assert machines
        tags = []
        for machine, edge in machines:  # what the line's agent declares: RunOrder, and the good-counts tag
            conn.execute("INSERT INTO command_targets (site_id, edge_node_id, machine_id, name, kind, datatype, role)"
                         " VALUES ('js-suzhou', %s, %s, %s, 'call', 12, 'operator')", [edge, machine, RUN_ORDER])
            row = conn.execute("INSERT INTO tags (site_id, edge_node_id, machine_id, name, datatype) VALUES"
                               " ('js-suzhou', %s, %s, 'Counts/Good', 10) RETURNING tag_id", [edge, machine]).fetchone()
            assert row is not None
            tags.append(int(row[0]))

    def counts(at: datetime, units: float) -> None:
        with psycopg.connect(seeded) as conn:
            for tag in tags:
                conn.execute("INSERT INTO samples (ts, tag_id, value) VALUES (%s, %s, %s)",
                             [at, tag, 5000 + units * float(per_unit or 1.0) / len(tags)])

    sender = ProductionOrderSender(seeded)
    dispatcher = LineDispatcher(planner, sender)
    # No operator has started the plan on any line yet: nothing is started or sent by itself.
    assert dispatcher.check_once(now) == {"completed": [], "started": []}

    # The operator starts the first lot (as POST /production-orders/{id}/start does); the machine counts.
    counts(now - timedelta(seconds=30), 0)
    with psycopg.connect(seeded) as conn:
        conn.execute("UPDATE production_orders SET status = 'started', started_at = %s WHERE po_id = %s", [now, first])
    assert len(sender(first, "suzhou operator", None).commands) == len(machines)
    counts(now + timedelta(minutes=10), qty / 2)
    assert dispatcher.check_once(now + timedelta(minutes=11)) == {"completed": [], "started": []}  # half made

    counts(now + timedelta(minutes=20), qty)
    done_at = now + timedelta(minutes=21)
    result = dispatcher.check_once(done_at)
    assert result["completed"] == [first]
    (started,) = result["started"]
    assert started["po_id"] == second and started["problem"] is None
    assert len(started["commands"]) == len(machines)
    with psycopg.connect(seeded) as conn:
        rows = dict(conn.execute("SELECT po_id, status FROM production_orders WHERE po_id = ANY(%s)",
                                 [[first, second, *others]]).fetchall())
        assert rows == {first: "done", second: "started", **{p: "planned" for p in others}}
        assert conn.execute("SELECT finished_at FROM production_orders WHERE po_id = %s", [first]).fetchone() == (done_at,)
        assert conn.execute("SELECT o.status FROM plan_orders o JOIN production_orders p USING (order_id)"
                            " WHERE p.po_id = %s", [first]).fetchone() == ("done",)
        (value, status, by), = conn.execute(
            "SELECT value, status, requested_by FROM commands WHERE name = %s AND reason LIKE %s",
            [RUN_ORDER, f"production order {second}:%"]).fetchall()[:1]
        assert (status, by) == ("queued", DISPATCHER)
        args = json.loads(value)  # the jsonb column holds the method's argument: a JSON text
        assert args["product"] == "ecu-main" and args["quantity"] > 0
        assert _count(conn, "SELECT count(*) FROM audit_log WHERE actor = %s AND action = 'planning.po.start'"
                      " AND target = %s", [DISPATCHER, str(second)]) == 1

    # Again, and after a restart (a new dispatcher): the second lot is running, nothing more is sent.
    assert dispatcher.check_once(done_at + timedelta(seconds=2))["started"] == []
    assert LineDispatcher(Planner(seeded), ProductionOrderSender(seeded)).check_once(done_at + timedelta(seconds=4)) \
        == {"completed": [], "started": []}
    with psycopg.connect(seeded) as conn:
        assert _count(conn, "SELECT count(*) FROM commands WHERE name = %s AND reason LIKE %s",
                      [RUN_ORDER, f"production order {second}:%"]) == len(machines)
        assert _count(conn, "SELECT count(*) FROM production_orders WHERE status = 'started'", []) == 1


def test_a_lot_whose_material_comes_later_is_sent_when_its_changeover_ends_at_the_release(seeded: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(seeded) as conn:
        conn.execute("INSERT INTO plan_orders (order_id, site_id, product_id, quantity, due_ts, release_ts, allowed_sites)"
                     " VALUES ('late-material', 'js-suzhou', 'ecu-main', 120, %s, %s, ARRAY['js-suzhou'])",
                     [now + timedelta(hours=9), now + timedelta(hours=3)])
    planner = Planner(seeded)
    proposal = planner.propose("test", None, now=now)
    planner.decide(proposal["plan_id"], True, "test", None)
    with psycopg.connect(seeded) as conn:
        row = conn.execute("SELECT p.po_id, p.line_id, t.setup_s FROM production_orders p JOIN plan_lots t"
                           " USING (plan_id, lot_id) WHERE p.status = 'planned'").fetchone()
        assert row is not None
        po_id, line, setup_s = row
        ready = now + timedelta(hours=3) - timedelta(seconds=setup_s)  # the release, less the changeover before it
        # The line ran an order of this plan before and is idle now.
        conn.execute("INSERT INTO production_orders (plan_id, lot_id, order_id, site_id, line_id, product_id, quantity,"
                     " seq, planned_start, planned_end, status, started_at, finished_at) VALUES (%s, 'before', 'before',"
                     " 'js-suzhou', %s, 'ecu-main', 10, 0, %s, %s, 'done', %s, %s)",
                     [proposal["plan_id"], line, now - timedelta(hours=1), now - timedelta(minutes=10),
                      now - timedelta(hours=1), now - timedelta(minutes=10)])
        for machine, edge in conn.execute("SELECT machine_id, edge_node_id FROM machines WHERE site_id = 'js-suzhou'"
                                          " AND line_id = %s", [line]).fetchall():
            conn.execute("INSERT INTO command_targets (site_id, edge_node_id, machine_id, name, kind, datatype, role)"
                         " VALUES ('js-suzhou', %s, %s, %s, 'call', 12, 'operator')", [edge, machine, RUN_ORDER])
    dispatcher = LineDispatcher(planner, ProductionOrderSender(seeded))
    assert dispatcher.check_once(now)["started"] == []  # its material is not there: the line waits
    assert dispatcher.check_once(ready - timedelta(minutes=1))["started"] == []
    (started,) = dispatcher.check_once(ready)["started"]
    assert started["po_id"] == po_id and started["commands"] and started["problem"] is None
    assert dispatcher.check_once(ready + timedelta(seconds=2))["started"] == []


def test_an_operator_start_waits_for_the_dispatcher_and_does_not_start_a_second_order(seeded: str) -> None:
    """The dispatcher starts a lot under the line's lock; an operator pressing Start on the same lot meanwhile
    waits for that lock and then gets 409 (the lot is started), not a second start of it."""
    import threading

    from tests.support.apifixtures import bearer, make_client
    from zhizao.cloud.auth import create_token
    from zhizao.cloud.planning.dispatch import line_lock

    now = datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(seeded) as conn:
        conn.execute("INSERT INTO plan_orders (order_id, site_id, product_id, quantity, due_ts, allowed_sites)"
                     " VALUES ('race', 'js-suzhou', 'ecu-main', 120, %s, ARRAY['js-suzhou'])", [now + timedelta(hours=6)])
    planner = Planner(seeded)
    planner.decide(planner.propose("test", None, now=now)["plan_id"], True, "test", None)
    with psycopg.connect(seeded) as conn:
        po, line = conn.execute("SELECT po_id, line_id FROM production_orders WHERE status = 'planned'").fetchone() or (0, "")
    token = create_token(seeded, "operator", "js-suzhou", "suzhou operator")
    answers: list[int] = []
    with make_client(seeded) as api, psycopg.connect(seeded) as dispatcher:
        # What the dispatcher's transaction does: the line's lock, then the lot started (not committed yet).
        dispatcher.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [line_lock("js-suzhou", line)])
        dispatcher.execute("UPDATE production_orders SET status = 'started', started_at = now() WHERE po_id = %s", [po])
        press = threading.Thread(target=lambda: answers.append(
            api.post(f"/api/v1/planning/production-orders/{po}/start", headers=bearer(token)).status_code))
        press.start()
        press.join(1.5)
        assert press.is_alive()  # the operator's start waits for the line's lock
        dispatcher.commit()
        press.join(10)
    assert answers == [409]
    with psycopg.connect(seeded) as conn:
        assert _count(conn, "SELECT count(*) FROM audit_log WHERE action = 'planning.po.start' AND target = %s",
                      [str(po)]) == 0  # only the API audits here, and it refused
