"""The monitoring service over committed batches: scores, alarms, and a restart mid-run that changes nothing."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.support.apifixtures import scratch_database
from tests.support.oeefixtures import MIN, T0, make_fleet, store_batch
from zhizao.cloud.ingest.owners import SiteOwners, write_feed
from zhizao.cloud.monitoring import MonitoringService

SEC = 1000
RULES: list[tuple[str, str | None, dict[str, Any], str]] = [
    ("detector", None, {"detector": "ewma_z", "settings": {"alpha": 0.02, "warmup": 30}, "level": 6.0,
                        "deadband": 3.0, "on_delay_s": 10, "off_delay_s": 60}, "medium"),
    ("threshold", "Temperature/Spindle", {"high": 70.0, "deadband": 2.0, "on_delay_s": 30}, "high"),
    ("failure", None, {"minutes": 10}, "high"),
]
# site-b's machine on another detector: every batch writes the states of two specs.
SITE_B_DETECTOR = {"detector": "cusum", "settings": {"warmup": 30}, "level": 50.0}


def _setup(url: str) -> dict[tuple[str, str, str], int]:
    tags = make_fleet(url)
    with psycopg.connect(url) as conn:
        for rule_type, tag, params, prio in RULES:
            conn.execute("INSERT INTO monitoring_rules (rule_type, tag_name, params, priority) VALUES (%s, %s, %s, %s)",
                         [rule_type, tag, json.dumps(params), prio])
        conn.execute("INSERT INTO monitoring_rules (rule_type, site_id, params) VALUES ('detector', 'site-b', %s)",
                     [json.dumps(SITE_B_DETECTOR)])
    return tags


def _data(tags: dict[tuple[str, str, str], int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Two hours of a temperature every 10 s on four machines; m1 steps up to 80 degC for 15 min at 60 min and
    is in failure for 20 min from 90 min; cut into 7-minute batches."""
    rng = np.random.default_rng(7)
    rows: list[tuple[int, int, float]] = []
    for (_site, machine, name), tag in tags.items():
        if name == "Temperature/Spindle":
            for i in range(720):
                t = T0 + i * 10 * SEC
                v = 40.0 + rng.normal(0, 0.5)
                if machine == "m1" and 360 <= i < 450:
                    v += 40.0
                rows.append((t, tag, v))
        elif name == "State":
            rows.append((T0, tag, 20000.0))
            if machine == "m1":
                rows += [(T0 + 90 * MIN, tag, 180000.0), (T0 + 110 * MIN, tag, 20000.0)]
    rows.sort()
    arr = np.array(rows, dtype=np.float64)
    ts = arr[:, 0].astype(np.int64)
    out = []
    for lo in range(T0, T0 + 120 * MIN, 7 * MIN):
        sel = (ts >= lo) & (ts < lo + 7 * MIN)
        out.append((arr[sel, 1].astype(np.int32), ts[sel], arr[sel, 2]))
    return out


def _feed(url: str, svc: MonitoringService, batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    with psycopg.connect(url) as conn:
        for tag, ts, val in batches:
            store_batch(conn, tag, ts, val)
            svc.on_committed(tag, ts, val)
    assert svc.flush(60)


def _outcome(url: str) -> tuple[list[Any], list[Any], list[Any]]:
    with psycopg.connect(url) as conn:
        scores = conn.execute("SELECT t.machine_id, s.ts, round(s.score::numeric, 9), s.alarm FROM anomaly_scores s"
                              " JOIN tags t USING (tag_id) WHERE s.score IS NOT NULL ORDER BY 1, 2").fetchall()
        history = conn.execute("SELECT a.source, a.machine_id, h.event, h.data_ts, h.to_state FROM alarm_history h"
                               " JOIN alarms a ON a.id = h.alarm_id ORDER BY h.data_ts, a.source, a.machine_id").fetchall()
        alarms = conn.execute("SELECT source, machine_id, state, activations FROM alarms ORDER BY 1, 2").fetchall()
    return scores, history, alarms


def test_scores_alarms_and_restart_mid_run_change_nothing(fresh_database: str, database_url: str) -> None:
    tags = _setup(fresh_database)
    batches = _data(tags)
    once = MonitoringService(fresh_database, webhooks=False)
    once.start()
    try:
        _feed(fresh_database, once, batches)
        assert len(once.bank.groups) == 2
        assert once.bank.calls <= 2 * len(batches)  # one kernel call per spec per batch, for the whole fleet
    finally:
        once.stop()
    scores, history, alarms = _outcome(fresh_database)
    # Every temperature sample after the 30-sample learning period is scored, on every machine, except m1's while
    # it is in failure (detectors learn and score a machine while it runs): 20 minutes of 10-second samples.
    assert len(scores) == 4 * (720 - 30) - 120
    assert not [ts for m, ts, _, _ in scores
                if m == "m1" and T0 + 90 * MIN <= int(ts.timestamp() * 1000) < T0 + 110 * MIN]
    events = [(src, m, ev) for src, m, ev, _, _ in history]
    assert ("anomaly", "m1", "activate") in events and ("anomaly", "m1", "clear") in events
    assert ("threshold", "m1", "activate") in events and ("threshold", "m1", "clear") in events
    assert ("failure", "m1", "activate") in events and ("failure", "m1", "clear") in events
    assert not [e for e in events if e[1] != "m1"], "no false alarm on the steady machines"
    # The threshold alarm waits its 30 s on-delay: raised at the fourth sample above 70 degC (0, 10, 20, 30 s).
    th = [ts for src, m, ev, ts, _ in history if src == "threshold" and ev == "activate"]
    assert [int(t.timestamp() * 1000) for t in th] == [T0 + 60 * MIN + 30 * SEC]
    fail = [ts for src, m, ev, ts, _ in history if src == "failure" and ev == "activate"]
    assert [int(t.timestamp() * 1000) for t in fail] == [T0 + 100 * MIN]  # exactly 10 min into the failure
    assert {(s, m, st) for s, m, st, _ in alarms} == {("anomaly", "m1", "rtn_unack"), ("threshold", "m1", "rtn_unack"),
                                                     ("failure", "m1", "rtn_unack")}

    # The same data through a service stopped and restarted half-way, with batches committed while it was down.
    with scratch_database(database_url) as other:
        _setup(other)
        first = MonitoringService(other, webhooks=False)
        first.start()
        try:
            _feed(other, first, batches[:8])
        finally:
            first.stop()
        with psycopg.connect(other) as conn:  # committed by the ingest while monitoring was down
            for tag, ts, val in batches[8:11]:
                store_batch(conn, tag, ts, val)
        second = MonitoringService(other, webhooks=False)
        second.start()
        try:
            _feed(other, second, batches[11:])
            for resumed in second.bank.groups.values():
                assert int(resumed.samples.min()) == 720  # resumed, not re-warmed: every tag counts its whole history
        finally:
            second.stop()
        assert _outcome(other) == (scores, history, alarms)


def test_a_site_moving_between_owners_and_back_scores_as_one_service(fresh_database: str, database_url: str) -> None:
    """Several ingest workers (ingest/owners.py): the sites' detection moves to another worker for three batches
    and back. The returning owner reloads its states (`resync`, called when it takes the sites over), so scores,
    alarm history and alarms are those of one service over all the data."""
    tags = _setup(fresh_database)
    batches = _data(tags)
    once = MonitoringService(fresh_database, webhooks=False, check_every_s=3600)
    once.start()
    try:
        _feed(fresh_database, once, batches)
    finally:
        once.stop()
    expected = _outcome(fresh_database)

    with scratch_database(database_url) as db:
        _setup(db)
        owner = {"mine"}
        mine = MonitoringService(db, webhooks=False, check_every_s=3600, owns=lambda site: "mine" in owner)
        other = MonitoringService(db, webhooks=False, check_every_s=3600, owns=lambda site: "other" in owner)
        mine.start()
        other.start()
        try:
            _feed(db, mine, batches[:8])
            owner.clear()
            owner.add("other")
            other.resync()
            _feed(db, other, batches[8:11])
            owner.clear()
            owner.add("mine")
            mine.resync()
            _feed(db, mine, batches[11:])
        finally:
            mine.stop()
            other.stop()
        assert _outcome(db) == expected


@pytest.mark.parametrize("scored", [True, False], ids=["scored", "not-scored"])
def test_an_owner_dying_before_confirming_its_feed_loses_nothing_and_scores_nothing_twice(
        fresh_database: str, database_url: str, scored: bool) -> None:  # fmt: skip
    """Two workers' site owners (ingest/owners.py) on the feed the ingest writes. The first owner takes three
    batches and dies before it confirms them, after its monitoring scored them or before (its connection, and
    with it the site locks, goes; the rows stay in the feed); the second takes the sites over, reloads the states
    and gets those rows again: scores, alarm history and alarms are those of one service over all the data."""
    tags = _setup(fresh_database)
    batches = _data(tags)
    once = MonitoringService(fresh_database, webhooks=False, check_every_s=3600)
    once.start()
    try:
        _feed(fresh_database, once, batches)
    finally:
        once.stop()
    expected = _outcome(fresh_database)

    with scratch_database(database_url) as db:
        _setup(db)
        owners: list[SiteOwners] = []
        services = [MonitoringService(db, webhooks=False, check_every_s=3600, owns=lambda site, i=i: owners[i].owns(site))
                    for i in range(2)]  # fmt: skip
        dying = [False]

        def dies() -> bool:  # the first worker's death, before the confirm
            if dying[0]:
                if scored:
                    assert services[0].flush(60)
                services[0].stop()
                owners[0]._close()
            return not dying[0]

        owners += [SiteOwners(db, [services[0].on_committed], on_claim=[services[0].resync],
                              confirm=[dies, services[0].flush]),
                   SiteOwners(db, [services[1].on_committed], on_claim=[services[1].resync],
                              confirm=[services[1].flush])]  # fmt: skip
        for svc in services:
            svc.start()
        try:
            with psycopg.connect(db) as conn:

                def commit(part: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
                    for tag, ts, val in part:
                        write_feed(conn, tag, ts, val)
                        store_batch(conn, tag, ts, val)  # commits samples and feed rows together

                for k in range(8):
                    commit(batches[k : k + 1])
                    owners[0].poll()
                    owners[1].poll()
                assert owners[0].owned == {"site-a", "site-b"} and not owners[1].owned
                commit(batches[8:11])
                dying[0] = True
                if not scored:
                    services[0].stop()  # dead before its monitoring got to the rows
                before = services[0].samples
                owners[0].poll()
                assert (services[0].samples > before) == scored and not owners[0].owned
                assert conn.execute("SELECT count(*) FROM ingest_site_feed").fetchone() == (6,)  # 3 batches x 2 sites
                conn.commit()
                for k in range(11, len(batches) + 1):
                    owners[1].poll()  # claims, reloads, gets the unconfirmed rows again, then the rest
                    commit(batches[k : k + 1])
                assert owners[1].owned == {"site-a", "site-b"}
                assert conn.execute("SELECT count(*) FROM ingest_site_feed").fetchone() == (0,)
        finally:
            owners[1]._close()
            for svc in services:
                svc.stop()
        assert _outcome(db) == expected
