"""Rules, anomaly scores, work orders (planned stops counted by OEE), MTBF/MTTR and the wear trend via the API."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import psycopg

from tests.support.monitorfixtures import Monitored
from tests.support.oeefixtures import CALENDAR, MIN, T0, batches, scripted, store_batch
from zhizao.bench.series import fill_rollups

SEC = 1000
H = 60 * MIN


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def test_rules_validated_and_applied_then_scores_served(monitored: Monitored) -> None:
    m = monitored
    bad = m.admin.post("/api/v1/monitoring/rules", json={"rule_type": "detector", "tag": "Temperature/Spindle",
                                                          "params": {"detector": "ewma_z", "settings": {"alfa": 0.1}}})
    assert bad.status_code == 400 and "settings.alfa" in bad.json()["error"]["message"], bad.text
    bad = m.admin.post("/api/v1/monitoring/rules", json={"rule_type": "threshold", "params": {"deadband": 1}})
    assert bad.status_code == 400 and "give high, low or both" in bad.json()["error"]["message"]
    rule = {"rule_type": "detector", "site": "site-a", "tag": "Temperature/Spindle",
            "params": {"detector": "ewma_z", "settings": {"warmup": 10, "alpha": 0.05}, "level": 5}}
    assert m.viewer.post("/api/v1/monitoring/rules", json=rule).status_code == 403
    assert m.engineer_b.post("/api/v1/monitoring/rules", json=rule).status_code == 404  # site-a is not theirs
    assert m.engineer_b.post("/api/v1/monitoring/rules", json={**rule, "site": None}).status_code == 403
    made = m.admin.post("/api/v1/monitoring/rules", json=rule)
    assert made.status_code == 201 and made.json()["applied"] is True, made.text
    assert [r["id"] for r in m.viewer.get("/api/v1/monitoring/rules").json()][-1] == made.json()["id"]
    tag = m.tags[("site-a", "m1", "Temperature/Spindle")]
    ts = np.array([T0 + i * 10 * SEC for i in range(40)], np.int64)
    vals = 40 + np.sin(np.arange(40.0))
    m.feed(np.full(40, tag, np.int32), ts, vals)
    got = m.viewer.get("/api/v1/anomaly-scores", params={"site": "site-a", "machine": "m1", "from": _iso(T0),
                                                         "to": _iso(T0 + H)}).json()
    (sig,) = got["signals"]
    assert sig["signal"] == "Temperature/Spindle" and len(sig["points"]) == 30  # after the 10-sample learning period
    assert sig["points"][0][0] == int(ts[10])
    assert m.engineer_b.get("/api/v1/anomaly-scores", params={"site": "site-a", "machine": "m1"}).status_code == 404
    # Another detector for the same tags: they start afresh from their newest sample (no re-scoring of history).
    rid = made.json()["id"]
    put = m.admin.put(f"/api/v1/monitoring/rules/{rid}", json={**rule, "params": {"detector": "robust_z"}})
    assert put.status_code == 200 and put.json()["applied"] is True
    mon = m.service.monitoring
    assert mon is not None
    assert mon.bank.groups[mon.bank.spec_of[tag]].params.detector == "robust_z"
    assert mon.bank.column(tag)[2] == int(ts[-1])
    assert m.admin.delete(f"/api/v1/monitoring/rules/{rid}").json()["deleted"] is True
    with psycopg.connect(m.db) as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM audit_log WHERE action LIKE 'monitoring.%%' ORDER BY id")]
    assert actions == ["monitoring.rule.create", "monitoring.rule.put", "monitoring.rule.delete"]


def test_work_order_planned_downtime_counts_as_planned_in_oee(monitored: Monitored) -> None:
    m = monitored
    oee = m.service.oee
    assert oee is not None
    # m1 runs shift A with a 30-minute failure and is stopped for maintenance 13:00-14:00; m2 fails twice.
    d1 = scripted("site-a", "l1", "m1", [(200, 20000, 6000, 0), (30, 180000, 0, 0), (70, 20000, 2000, 0),
                                          (60, 210000, 0, 0), (120, 20000, 3000, 0)], 40.0)
    d2 = scripted("site-a", "l1", "m2", [(100, 20000, 3000, 0), (20, 180000, 0, 0), (60, 20000, 2000, 0),
                                          (40, 180000, 0, 0), (260, 20000, 7000, 0)], 40.0)  # outside the breaks
    with psycopg.connect(m.db) as conn:
        for tag, ts, val in batches([d1, d2], m.tags, 30 * MIN):
            store_batch(conn, tag, ts, val)
            oee.on_committed(tag, ts, val)
    assert oee.flush(60)

    def planned_hour(start: int) -> float:
        rows = m.admin.get("/api/v1/oee", params={"scope": "machine", "site": "site-a", "id": "m1", "window": "hour",
                                                  "from": _iso(start), "to": _iso(start + H)}).json()
        return float(rows[0]["planned_s"])

    assert planned_hour(T0 + 5 * H) == 3600.0  # the site's classes count 210000 as an availability loss
    m.feed(np.full(2, m.tags[("site-a", "m1", "Temperature/Spindle")], np.int32),
           np.array([T0 + 10 * SEC, T0 + 20 * SEC], np.int64), np.array([75.0, 40.0]))
    alarm = m.viewer.get("/api/v1/alarms").json()[0]
    body = {"site": "site-a", "machine": "m1", "title": "replace coolant pump", "assignee": "wang.lei",
            "alarm_ids": [alarm["id"]], "planned_start": _iso(T0 + 5 * H), "planned_end": _iso(T0 + 6 * H)}
    assert m.viewer.post("/api/v1/work-orders", json=body).status_code == 403
    assert m.operator.post("/api/v1/work-orders", json={**body, "alarm_ids": [alarm["id"] + 999]}).status_code == 404
    made = m.operator.post("/api/v1/work-orders", json=body)
    assert made.status_code == 201, made.text
    wo = made.json()
    assert wo["status"] == "open" and wo["line"] == "l1" and [a["id"] for a in wo["alarms"]] == [alarm["id"]]
    assert wo["recomputed"] is True and len(wo["planned_stops"]) == 1
    assert planned_hour(T0 + 5 * H) == 0.0  # planned maintenance: out of planned production time
    # A calendar edit keeps the work order's planned stop.
    cal = m.admin.put("/api/v1/sites/site-a/calendar", json={**CALENDAR, "recompute_from": _iso(T0)})
    assert cal.status_code == 200 and cal.json()["planned_stops"] == []
    assert planned_hour(T0 + 5 * H) == 0.0
    assert m.engineer_b.get(f"/api/v1/work-orders/{wo['id']}").status_code == 404
    done = m.operator.patch(f"/api/v1/work-orders/{wo['id']}", json={"status": "done"}).json()
    assert done["status"] == "done" and done["done_at"] is not None
    assert [w["id"] for w in m.viewer.get("/api/v1/work-orders", params={"status": "done"}).json()] == [wo["id"]]

    rel = m.viewer.get("/api/v1/reliability", params={"site": "site-a", "from": _iso(T0 - H), "to": _iso(T0 + 9 * H)})
    assert rel.status_code == 200, rel.text
    by_machine = {r["machine"]: r for r in rel.json()["machines"]}
    assert by_machine["m2"]["failures"] == 2
    assert by_machine["m2"]["mttr_min"] == 30.0  # (20 + 40) / 2 minutes
    m2 = by_machine["m2"]
    assert m2["mtbf_h"] == m2["run_h"] / 2
    (line,) = rel.json()["lines"]
    assert line["failures"] == by_machine["m1"]["failures"] + 2
    assert line["mttr_min"] == (by_machine["m1"]["failure_h"] + m2["failure_h"]) * 60 / line["failures"]


def test_mttr_is_repair_time_per_failure_also_through_a_break_and_beside_other_stops(monitored: Monitored) -> None:
    """A failure that runs through the 10:00 break and a 20-minute unspecified stop: MTTR counts the whole
    repair (30 min, the break too) and only failures (reference/oee-vectors.json V5: MTTR = repair / failures)."""
    m = monitored
    oee = m.service.oee
    assert oee is not None
    d3 = scripted("site-a", "l2", "m3", [(110, 20000, 3000, 0), (30, 180000, 0, 0), (60, 20000, 2000, 0),
                                          (20, 40000, 0, 0), (60, 20000, 2000, 0)], 40.0)  # failure 09:50-10:20
    with psycopg.connect(m.db) as conn:
        for tag, ts, val in batches([d3], m.tags, 30 * MIN):
            store_batch(conn, tag, ts, val)
            oee.on_committed(tag, ts, val)
    assert oee.flush(60)
    rel = m.viewer.get("/api/v1/reliability", params={"site": "site-a", "from": _iso(T0 - H), "to": _iso(T0 + 9 * H)})
    assert rel.status_code == 200, rel.text
    (m3,) = [r for r in rel.json()["machines"] if r["machine"] == "m3"]
    assert (m3["failures"], m3["failure_h"], m3["mttr_min"]) == (1, 0.5, 30.0)
    assert m3["run_h"] == (110 + 60 + 60) / 60 and m3["mtbf_h"] == m3["run_h"]


def test_wear_trend_estimates_time_to_alarm_level(monitored: Monitored) -> None:
    m = monitored
    tag = m.tags[("site-a", "m2", "Temperature/Spindle")]
    n = 3 * 360  # three hours, a sample every 10 s, rising 2 degC per hour from 40
    ts = T0 + np.arange(n, dtype=np.int64) * 10 * SEC
    vals = 40.0 + 2.0 * np.arange(n) * 10 / 3600
    with psycopg.connect(m.db) as conn:
        store_batch(conn, np.full(n, tag, np.int32), ts, vals)
        fill_rollups(conn, [tag])
    got = m.viewer.get("/api/v1/wear", params={"site": "site-a", "machine": "m2", "signal": "Temperature/Spindle",
                                               "hours": 6}).json()
    assert got["limit"] == 70.0  # from the threshold rule
    assert abs(got["slope_per_h"] - 2.0) < 1e-6
    assert abs(got["hours_to_limit"] - (70.0 - got["value_now"]) / 2.0) < 1e-6 and 12 < got["hours_to_limit"] < 13
    assert m.viewer.get("/api/v1/wear", params={"site": "site-a", "machine": "m2", "signal": "Nope"}).status_code == 404
