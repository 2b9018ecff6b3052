"""Alarm sources and alarm management: flood suppression, chattering, rate of change, microstops, offline, stale."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.support.monitorfixtures import add_rule
from tests.support.oeefixtures import MIN, T0, make_fleet, store_batch
from zhizao.cloud.monitoring import MonitoringService

SEC = 1000


@pytest.fixture
def fleet(fresh_database: str) -> dict[tuple[str, str, str], int]:
    tags = make_fleet(fresh_database)
    add_rule(fresh_database, "detector", {"detector": "none"})
    return tags


@pytest.fixture
def make_service(fresh_database: str) -> Iterator[Any]:
    started: list[MonitoringService] = []

    def make(**kw: Any) -> MonitoringService:
        svc = MonitoringService(fresh_database, webhooks=False, check_every_s=3600, **kw)
        svc.start()
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop()


def feed(db: str, svc: MonitoringService, tag: int, ts: list[int], values: list[float]) -> None:
    t, v = np.array(ts, np.int64), np.array(values, np.float64)
    g = np.full(t.size, tag, np.int32)
    with psycopg.connect(db) as conn:
        store_batch(conn, g, t, v)
    svc.on_committed(g, t, v)
    assert svc.flush(30)


def rows(db: str, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(db) as conn:
        return conn.execute(sql, params or []).fetchall()


def test_flood_gives_one_summary_alarm_and_suppresses_the_rest(fresh_database: str, fleet: Any, make_service: Any) -> None:
    for limit in range(70, 82):  # twelve alarm points that one step raises at once
        add_rule(fresh_database, "threshold", {"high": float(limit)}, tag="Temperature/Spindle")
    svc = make_service()
    tag = fleet[("site-a", "m1", "Temperature/Spindle")]
    feed(fresh_database, svc, tag, [T0, T0 + 10 * SEC], [40.0, 90.0])
    got = rows(fresh_database, "SELECT source, state, suppressed FROM alarms ORDER BY id")
    assert got.count(("threshold", "unack", False)) == 10  # EEMUA 191: the 10th alarm in 10 minutes is a flood
    assert got.count(("threshold", "suppressed", True)) == 2
    assert ("flood", "unack", False) in got and len(got) == 13
    # Suppressed alarms are never announced: no webhook deliveries, no acknowledgement needed once they clear.
    feed(fresh_database, svc, tag, [T0 + 20 * SEC], [40.0])
    got = rows(fresh_database, "SELECT source, state FROM alarms ORDER BY id")
    assert got.count(("threshold", "rtn_unack")) == 10 and got.count(("threshold", "normal")) == 2
    # Ten minutes later (data time) the flood is over.
    feed(fresh_database, svc, tag, [T0 + 11 * MIN], [41.0])
    assert svc.check_now()
    assert rows(fresh_database, "SELECT state FROM alarms WHERE source = 'flood'") == [("rtn_unack",)]


def test_chattering_alarm_is_marked_and_no_longer_announced(fresh_database: str, fleet: Any, make_service: Any) -> None:
    add_rule(fresh_database, "threshold", {"high": 70.0, "deadband": 1.0}, tag="Temperature/Spindle")
    with psycopg.connect(fresh_database) as conn:
        conn.execute("INSERT INTO webhooks (url, secret) VALUES ('http://127.0.0.1:9/none', 'x')")
    svc = make_service()
    tag = fleet[("site-a", "m1", "Temperature/Spindle")]
    values = [75.0, 65.0] * 4  # raised every 20 s
    feed(fresh_database, svc, tag, [T0 + i * 10 * SEC for i in range(8)], values)
    ((alarm_id, activations, chattering),) = rows(fresh_database, "SELECT id, activations, chattering FROM alarms")
    assert (activations, chattering) == (4, True)
    announced = rows(fresh_database, "SELECT event FROM webhook_deliveries WHERE alarm_id = %s AND event = 'activate'",
                     [alarm_id])
    assert len(announced) == 3  # the 4th activation within the minute is recorded, not announced
    assert len(rows(fresh_database, "SELECT 1 FROM alarm_history WHERE alarm_id = %s AND event = 'activate'",
                    [alarm_id])) == 4


def test_rate_of_change_with_on_delay(fresh_database: str, fleet: Any, make_service: Any) -> None:
    add_rule(fresh_database, "rate", {"per_min": 6.0, "on_delay_s": 20, "deadband": 1.0}, tag="Temperature/Spindle")
    svc = make_service()
    tag = fleet[("site-a", "m2", "Temperature/Spindle")]
    # +1 degC per 10 s = 6/min (not above), then +2 per 10 s = 12/min for 30 s, then flat.
    vals = [40.0, 41.0, 42.0, 44.0, 46.0, 48.0, 50.0, 50.0, 50.0]
    ts = [T0 + i * 10 * SEC for i in range(len(vals))]
    feed(fresh_database, svc, tag, ts[:4], vals[:4])  # split across batches: the rate spans them
    feed(fresh_database, svc, tag, ts[4:], vals[4:])
    hist = rows(fresh_database, "SELECT h.event, extract(epoch FROM h.data_ts) * 1000 FROM alarm_history h ORDER BY h.id")
    assert [(e, int(t)) for e, t in hist] == [("activate", ts[5]), ("clear", ts[7])]


def test_microstops_per_hour(fresh_database: str, fleet: Any, make_service: Any) -> None:
    add_rule(fresh_database, "microstops", {"per_hour": 3}, priority="low")
    svc = make_service()
    tag = fleet[("site-a", "m3", "State")]
    ts, codes = [], []
    for i in range(5):  # a microstop every 10 minutes
        ts += [T0 + i * 10 * MIN, T0 + i * 10 * MIN + 30 * SEC]
        codes += [50000.0, 20000.0]
    feed(fresh_database, svc, tag, ts, codes)
    feed(fresh_database, svc, tag, [T0 + 125 * MIN], [20000.0])  # an hour after the 4th stop: back to 1
    hist = rows(fresh_database, "SELECT h.event, extract(epoch FROM h.data_ts) * 1000, a.priority FROM alarm_history h"
                " JOIN alarms a ON a.id = h.alarm_id ORDER BY h.id")
    # the 4th microstop in the trailing hour raises it; the hour after the 2nd microstop it is back to 3
    assert [(e, int(t), p) for e, t, p in hist] == [("activate", T0 + 30 * MIN, "low"),
                                                   ("clear", T0 + 70 * MIN, "low")]


def test_offline_and_stale(fresh_database: str, fleet: Any, make_service: Any) -> None:
    add_rule(fresh_database, "offline", {"after_s": 30}, priority="high")
    add_rule(fresh_database, "stale", {"after_s": 120}, site="site-b")
    with psycopg.connect(fresh_database) as conn:
        conn.execute("UPDATE edge_nodes SET online = false, last_death = now() - interval '5 minutes'"
                     " WHERE edge_node_id = 'l2'")
        conn.execute("UPDATE edge_nodes SET online = false, last_death = now() - interval '5 seconds'"
                     " WHERE edge_node_id = 'l1'")  # not yet 30 s
        conn.execute("INSERT INTO latest_values (tag_id, ts, value) VALUES (%s, now() - interval '10 minutes', 1)",
                     [fleet[("site-b", "m9", "Temperature/Spindle")]])
    svc = make_service()
    assert svc.check_now()
    assert sorted(rows(fresh_database, "SELECT key, state FROM alarms")) == [
        (f"offline:{k}:site-a/l2", "unack") for k in [2]] + [("stale:3:site-b/m9", "unack")]
    with psycopg.connect(fresh_database) as conn:
        conn.execute("UPDATE edge_nodes SET online = true")
        conn.execute("UPDATE latest_values SET ts = now()")
    assert svc.check_now()
    assert sorted(rows(fresh_database, "SELECT key, state FROM alarms")) == [
        ("offline:2:site-a/l2", "rtn_unack"), ("stale:3:site-b/m9", "rtn_unack")]


def test_wall_time_checks_run_only_in_the_worker_that_owns_the_site(
    fresh_database: str, fleet: Any, make_service: Any
) -> None:
    """Several ingest workers: each site's offline and stale checks run in its owner only (ingest/owners.py)."""
    add_rule(fresh_database, "offline", {"after_s": 30}, priority="high")
    add_rule(fresh_database, "stale", {"after_s": 120}, site="site-b")
    with psycopg.connect(fresh_database) as conn:
        conn.execute("UPDATE edge_nodes SET online = false, last_death = now() - interval '5 minutes'"
                     " WHERE edge_node_id = 'l2'")
        conn.execute("INSERT INTO latest_values (tag_id, ts, value) VALUES (%s, now() - interval '10 minutes', 1)",
                     [fleet[("site-b", "m9", "Temperature/Spindle")]])
    owner_a = make_service(owns=lambda site: site == "site-a")
    assert owner_a.check_now()
    assert rows(fresh_database, "SELECT key, state FROM alarms") == [("offline:2:site-a/l2", "unack")]
    # started after the first check: a service checks at its start too (once the host is up longer than
    # check_every_s), which would raise site-b's alarm before the assertion above
    owner_b = make_service(owns=lambda site: site == "site-b")
    assert owner_b.check_now() and owner_a.check_now()
    assert sorted(rows(fresh_database, "SELECT key, state FROM alarms")) == [
        ("offline:2:site-a/l2", "unack"), ("stale:3:site-b/m9", "unack")]
