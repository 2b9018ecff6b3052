"""Re-planning when capacity drops: a failure on a line with production orders, then a planned stop, each give
a proposed repaired plan within seconds; a drop where nothing is planned gives none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from zhizao.cloud.planning.diff import plan_diff
from zhizao.cloud.planning.service import Planner
from zhizao.cloud.planning.watcher import ReplanWatcher


def test_failure_and_planned_stop_propose_repaired_plans(seeded: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(seeded) as conn:
        for i in range(6):  # BMS boards for Hefei, allowed at Suzhou only (on its two SMT lines)
            conn.execute("INSERT INTO plan_orders (order_id, site_id, product_id, quantity, due_ts, weight, allowed_sites)"
                         " VALUES (%s, 'ah-hefei', 'bms-slave', 500, %s, 1, '{js-suzhou}')",
                         [f"o{i}", now + timedelta(hours=12 + 4 * i)])
    planner = Planner(seeded)
    watcher = ReplanWatcher(planner)
    assert watcher.check_once(now) is None  # no accepted plan yet: nothing to repair
    first = planner.propose("test", None, now=now)
    planner.decide(first["plan_id"], True, "test", None)
    assert watcher.check_once(now) is None  # the baseline of the accepted plan
    with psycopg.connect(seeded) as conn:
        lines = {str(r[0]) for r in conn.execute("SELECT DISTINCT line_id FROM plan_lots WHERE plan_id = %s",
                                                  [first["plan_id"]]).fetchall()}
        assert lines and lines <= {"smt-1", "smt-2"}  # made where they are allowed
        down = sorted(lines)[0]  # a line the accepted plan uses
        # A machine of it fails; a failure at Lingang, where nothing is planned, is not news for the plan.
        conn.execute("INSERT INTO oee_state_changes (site_id, machine_id, ts, code) VALUES"
                     " ('js-suzhou', %s, %s, 180000), ('sh-lingang', 'cnc-1-m01', %s, 180000)",
                     [f"{down}-m03", now, now])
    proposal = watcher.check_once(now)
    assert proposal is not None
    assert proposal["base_plan_id"] == first["plan_id"]
    assert {d["line"] for d in proposal["disruptions"]} == {"cnc-1", down}
    with psycopg.connect(seeded) as conn:
        reason = conn.execute("SELECT reason FROM plan_versions WHERE plan_id = %s", [proposal["plan_id"]]).fetchone()
        assert reason is not None and reason[0] == f"replan: js-suzhou/{down} down"
        changes = plan_diff(conn, first["plan_id"], proposal["plan_id"])
        # Nothing starts on the failed line during the two hours it is taken as down.
        for lot_start, line in conn.execute("SELECT start_ts, line_id FROM plan_lots WHERE plan_id = %s",
                                            [proposal["plan_id"]]).fetchall():
            assert line != down or lot_start >= now + timedelta(hours=2) - timedelta(seconds=1)
    assert changes
    assert watcher.check_once(now) is None  # the same drop is proposed once
    # A planned stop at Suzhou tomorrow is a second drop.
    with psycopg.connect(seeded) as conn:
        conn.execute("INSERT INTO oee_planned_stops (site_id, start_ts, end_ts, code, note) VALUES"
                     " ('js-suzhou', %s, %s, 170000, 'preventive maintenance')",
                     [now + timedelta(hours=3), now + timedelta(hours=9)])
    second = watcher.check_once(now)
    assert second is not None and second["plan_id"] > proposal["plan_id"]
    with psycopg.connect(seeded) as conn:
        reason = conn.execute("SELECT reason FROM plan_versions WHERE plan_id = %s", [second["plan_id"]]).fetchone()
        assert reason is not None and "planned stop at js-suzhou" in reason[0]
    # A calendar edit at Suzhou (through the API it bumps updated_at) is a third; one at Lingang, with nothing
    # planned there, is none.
    assert watcher.check_once(now) is None
    with psycopg.connect(seeded) as conn:
        conn.execute("UPDATE oee_site_config SET updated_at = now() + interval '1 second', source = 'api'"
                     " WHERE site_id = 'sh-lingang'")
    assert watcher.check_once(now) is None
    with psycopg.connect(seeded) as conn:
        conn.execute("UPDATE oee_site_config SET updated_at = now() + interval '1 second', source = 'api'"
                     " WHERE site_id = 'js-suzhou'")
    third = watcher.check_once(now)
    assert third is not None and third["plan_id"] > second["plan_id"]
