"""Stop reasons and calendar edits through the API recompute the windows; site scope answers 404 outside."""

from __future__ import annotations

import copy
from typing import Any

import httpx

from tests.support.oeefixtures import (
    CALENDAR,
    FLEET,
    MIN,
    T0,
    Running,
    api_oee,
    check_machine_windows,
    dt_ms,
    feed,
    random_machine,
)
from zhizao.cloud.auth import create_token
from zhizao.cloud.oee.calendar import PlannedStop
from zhizao.cloud.oee.store import dt


def client(r: Running, role: str, sites: str = "*") -> httpx.Client:
    token = create_token(r.db, role, sites, f"t-{role}-{sites.replace(',', '-').replace('*', 'all')}")
    return httpx.Client(base_url=r.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_stop_reason_recomputes_windows_states_and_pareto(running: Running) -> None:
    d = random_machine("site-a", "l1", "m2", seed=3)
    feed(running, [d])
    st = d.series["State"]
    stop_ts = next(st[i][0] for i in range(1, len(st)) if st[i][1] == 40000 and st[i - 1][1] != 40000
                   and st[i + 1][1] != 40000 and st[i][0] >= T0)
    span = {"site": "site-a", "machine": "m2", "from": dt(T0 - 120 * MIN).isoformat(),
            "to": dt(T0 + 24 * 60 * MIN).isoformat()}
    states = running.client.get("/api/v1/states", params=span).json()
    before = next(s for s in states if dt_ms(s["start"]) == stop_ts)
    assert (before["code"], before["category"]) == (40000, "unspecified")
    hour_before = next(x for x in api_oee(running, "machine", "hour", "site-a", "m2")
                       if dt_ms(x["start"]) <= stop_ts < dt_ms(x["end"]))

    path = "/api/v1/sites/site-a/machines/m2/stops/reason"
    with client(running, "viewer") as viewer:
        assert viewer.post(path, json={"start": before["start"], "code": 60000}).status_code == 403
    with client(running, "operator", "site-a") as op:
        bad = op.post(path, json={"start": before["start"], "code": 10000})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "code", bad.text
        running_ts = next(st[i][0] for i in range(1, len(st)) if st[i][1] == 10000 and st[i - 1][1] != 10000
                          and st[i][0] >= T0)
        bad = op.post(path, json={"start": dt(running_ts).isoformat(), "code": 60000})
        assert bad.status_code == 400 and "not an unspecified stop" in bad.text, bad.text
        assert op.post(path, json={"start": dt(stop_ts + 1).isoformat(), "code": 60000}).status_code == 404
        ok = op.post(path, json={"start": before["start"], "code": 60000})
        assert ok.status_code == 200, ok.text
        assert ok.json()["recomputed"] is True

    states = running.client.get("/api/v1/states", params=span).json()
    after = next(s for s in states if dt_ms(s["start"]) == stop_ts)
    assert (after["code"], after["original_code"], after["category"]) == (60000, 40000, "material")
    # Site-a counts material stops as performance losses: the stop's time moved into run time.
    hour_after = next(x for x in api_oee(running, "machine", "hour", "site-a", "m2")
                      if x["start"] == hour_before["start"])
    assert hour_after["run_s"] > hour_before["run_s"]
    check_machine_windows(running, d, reasons={stop_ts: 60000})
    losses = running.client.get("/api/v1/losses", params={"scope": "machine", "site": "site-a", "id": "m2",
                                                            "from": span["from"], "to": span["to"]}).json()
    pareto = {e["code"]: e for e in losses["pareto"]}
    assert pareto[60000]["count"] >= 1 and pareto[60000]["reason"] == "inlet jam"
    assert all(e["category"] not in ("running", "reduced_speed") for e in losses["pareto"])
    seconds = [e["seconds"] for e in losses["pareto"]]
    assert seconds == sorted(seconds, reverse=True)
    assert set(losses["six_big_losses"]) == {"equipment_failure_s", "setup_adjustment_s", "idling_minor_stops_s",
                                             "reduced_speed_s", "process_defects_s", "startup_rejects_s"}


def test_calendar_edit_recomputes_planned_time(running: Running) -> None:
    d = random_machine("site-a", "l1", "m1", seed=1)
    feed(running, [d])
    day_before = api_oee(running, "machine", "day", "site-a", "m1")
    calendar: dict[str, Any] = copy.deepcopy(CALENDAR)
    calendar["shifts"][0]["hours"] = 4
    calendar["shifts"][0]["breaks"] = [{"start": "10:00", "minutes": 15}]
    stop = {"start": dt(T0 + 9 * 60 * MIN).isoformat(), "end": dt(T0 + 10 * 60 * MIN).isoformat(), "code": 210000,
            "note": "quarterly maintenance"}
    body = {**calendar, "planned_stops": [stop], "recompute_from": dt(T0 - 240 * MIN).isoformat()}
    with client(running, "operator") as op:
        assert op.put("/api/v1/sites/site-a/calendar", json=body).status_code == 403
    with client(running, "engineer", "site-a") as eng:
        bad = eng.put("/api/v1/sites/site-a/calendar", json={**body, "shifts": [{"name": "X", "start": "25:00",
                                                                                  "hours": 8}]})
        assert bad.status_code == 400 and "shifts.0.start" in bad.json()["error"]["field"], bad.text
        resp = eng.put("/api/v1/sites/site-a/calendar", json=body)
        assert resp.status_code == 200, resp.text
        assert resp.json()["recomputed"] is True
        stored = eng.get("/api/v1/sites/site-a/calendar").json()
        assert stored["shifts"][0]["hours"] == 4 and stored["planned_stops"][0]["code"] == 210000
    day_after = api_oee(running, "machine", "day", "site-a", "m1")
    assert day_after[0]["planned_s"] < day_before[0]["planned_s"]
    planned = [PlannedStop(T0 + 9 * 60 * MIN, T0 + 10 * 60 * MIN, 210000)]
    check_machine_windows(running, d, calendar=calendar, planned_stops=planned)


def test_site_scope_answers_404_outside_and_cluster_holds_only_own_sites(running: Running) -> None:
    data = [random_machine(site, line, m, seed=i)
            for i, (site, line, m) in enumerate([("site-a", "l1", "m1"), ("site-b", "l9", "m9")])]
    feed(running, data)
    span = {"from": dt(T0 - 120 * MIN).isoformat(), "to": dt(T0 + 24 * 60 * MIN).isoformat()}
    with client(running, "engineer", "site-b") as b:
        for params in ({"scope": "site", "site": "site-a"}, {"scope": "machine", "site": "site-a", "id": "m1"},
                       {"scope": "line", "site": "site-a", "id": "l1"}):
            for route in ("/api/v1/oee", "/api/v1/losses"):
                resp = b.get(route, params={**params, **span})
                assert resp.status_code == 404, (route, params, resp.text)
        assert b.get("/api/v1/states", params={"site": "site-a", "machine": "m1", **span}).status_code == 404
        assert b.get("/api/v1/sites/site-a/calendar").status_code == 404
        assert b.put("/api/v1/sites/site-a/calendar", json=CALENDAR).status_code == 404
        reason = b.post("/api/v1/sites/site-a/machines/m1/stops/reason", json={"start": span["from"], "code": 60000})
        assert reason.status_code == 404
        cluster = b.get("/api/v1/oee", params={"scope": "cluster", "window": "day", **span}).json()
        site_b = b.get("/api/v1/oee", params={"scope": "site", "site": "site-b", "window": "day", **span}).json()
        assert [(x["start"], x["oee"]) for x in cluster] == [(x["start"], x["oee"]) for x in site_b]
        assert cluster and all("site" not in x for x in cluster)
        # Unknown machines inside the scope are 404 too; bad parameters name the field and value.
        assert b.get("/api/v1/oee", params={"scope": "machine", "site": "site-b", "id": "nope"}).status_code == 404
        bad = b.get("/api/v1/oee", params={"scope": "site", "site": "site-b", "window": "week"})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "window"
        bad = b.get("/api/v1/oee", params={"scope": "site", "site": "site-b", "from": span["to"], "to": span["from"]})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "to"
    assert FLEET["site-b"] == {"l9": ["m9"]}


def test_calendar_edit_before_a_machines_first_sample_keeps_it_computing(running: Running) -> None:
    # An engineer sets the calendar while the site's machines are registered (births) but silent: the
    # recompute finds no samples. The data that follows must still be computed into windows (regression:
    # such a machine stayed "incomplete" for good and no window was ever written).
    with client(running, "engineer", "site-a") as eng:
        body = {**CALENDAR, "recompute_from": dt(T0 - 240 * MIN).isoformat()}
        resp = eng.put("/api/v1/sites/site-a/calendar", json=body)
        assert resp.status_code == 200 and resp.json()["recomputed"] is True, resp.text
    d = random_machine("site-a", "l1", "m1", seed=3)
    feed(running, [d])
    check_machine_windows(running, d)
