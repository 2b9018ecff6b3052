"""/api/v1/oee and /api/v1/losses for operators (issue 11, item 3): losses, stops, MTBF/MTTR in every row,
exact losses for a shift starting on the half hour, unplanned pareto with planned time apart, wall-clock line
time, output across products at ideal time, and the site's microstop threshold and startup period."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.oeefixtures import (
    CALENDAR,
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
from zhizao.cloud.oee.store import dt

LOSSES = {"equipment_failure", "setup_adjustment", "idling_minor_stops", "reduced_speed", "process_defects",
          "startup_rejects", "material_stops"}


def engineer(r: Running) -> httpx.Client:
    token = create_token(r.db, "engineer", "site-a", "t-eng-api")
    return httpx.Client(base_url=r.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_site_settings_shift_on_the_half_hour_exact_losses_and_pareto(running: Running) -> None:
    calendar: dict[str, Any] = copy.deepcopy(CALENDAR)
    calendar["shifts"][0]["start"] = "08:30"
    calendar["shifts"][0]["breaks"] = [{"start": "10:30", "minutes": 15}, {"start": "12:30", "minutes": 30}]
    calendar["shifts"][1]["start"] = "16:30"
    body = {**calendar, "microstop_s": 300, "startup_s": 600, "recompute_from": dt(T0 - 240 * MIN).isoformat()}
    with engineer(running) as eng:
        for field, value in (("microstop_s", -1), ("startup_s", 90_000), ("microstop_s", "soon")):
            bad = eng.put("/api/v1/sites/site-a/calendar", json={**body, field: value})
            assert bad.status_code == 400 and bad.json()["error"]["field"] == field, bad.text
        resp = eng.put("/api/v1/sites/site-a/calendar", json=body)
        assert resp.status_code == 200 and resp.json()["recomputed"] is True, resp.text
        stored = eng.get("/api/v1/sites/site-a/calendar").json()
        assert (stored["microstop_s"], stored["startup_s"]) == (300, 600)
        # A calendar edit that leaves them out keeps them.
        keep = {k: v for k, v in body.items() if k not in ("microstop_s", "startup_s")}
        assert eng.put("/api/v1/sites/site-a/calendar", json=keep).status_code == 200
        assert eng.get("/api/v1/sites/site-a/calendar").json()["microstop_s"] == 300
    data = [random_machine("site-a", "l1", "m1", seed=21), random_machine("site-a", "l1", "m2", seed=22)]
    feed(running, data)
    for d in data:  # every figure of every window with the site's threshold and startup period
        check_machine_windows(running, d, calendar=calendar, microstop_s=300, startup_s=600)

    shift = next(x for x in api_oee(running, "machine", "shift", "site-a", "m1") if dt_ms(x["start"]) == T0 + 30 * MIN)
    assert set(shift["losses"]) == LOSSES
    assert {"stops", "failures", "microstops", "repair_s", "mtbf_s", "mttr_s"} <= set(shift)
    if shift["failures"]:
        assert shift["mtbf_s"] == pytest.approx(shift["run_s"] / shift["failures"])
        assert shift["mttr_s"] == pytest.approx(shift["repair_s"] / shift["failures"])
    resp = running.client.get("/api/v1/losses", params={"scope": "machine", "site": "site-a", "id": "m1",
                                                          "from": shift["start"], "to": shift["end"]})
    assert resp.status_code == 200, resp.text
    losses = resp.json()
    got = {**{k.removesuffix("_s"): v for k, v in losses["six_big_losses"].items()},
           "material_stops": losses["material_stops_s"]}
    assert got == pytest.approx(shift["losses"], abs=1e-6)  # exact for a shift starting at 08:30
    assert losses["covered_s"] == pytest.approx(shift["all_s"])
    assert all(e["category"] not in ("planned", "running", "reduced_speed") for e in losses["pareto"])
    assert {e["code"] for e in losses["planned"]} & {150000, 160000}
    # Stop time inside the calendar is the pareto: it adds up to the stop losses of the shift.
    stop_losses = sum(shift["losses"][k] for k in ("equipment_failure", "setup_adjustment", "idling_minor_stops"))
    material = shift["losses"]["material_stops"]  # this site keeps material stops in run time, not as microstops
    assert sum(e["seconds"] for e in losses["pareto"]) == pytest.approx(stop_losses + material, abs=1e-3)

    # A line: wall-clock time, output at ideal time, raw units per machine.
    line = next(x for x in api_oee(running, "line", "shift", "site-a", "l1") if x["start"] == shift["start"])
    machines = [next(x for x in api_oee(running, "machine", "shift", "site-a", m) if x["start"] == shift["start"])
                for m in ("m1", "m2")]
    assert line["all_s"] == pytest.approx(max(m["all_s"] for m in machines))
    assert line["planned_s"] == pytest.approx(sum(m["planned_s"] for m in machines))
    assert line["output_ideal_s"] == pytest.approx(sum(m["output_ideal_s"] for m in machines))
    assert line["total"] is None and line["good"] is None
    assert line["units"] == {f"site-a/{m}": {"total": x["total"], "good": x["good"]}
                             for m, x in zip(("m1", "m2"), machines, strict=True)}
    for name in LOSSES:
        assert line["losses"][name] == pytest.approx(sum(m["losses"][name] for m in machines), abs=1e-6)
    assert line["oee"] == pytest.approx(line["good_output_ideal_s"] / line["planned_s"], rel=1e-9)
    assert line["teep"] == pytest.approx(line["good_output_ideal_s"] / sum(m["all_s"] for m in machines), rel=1e-9)


def test_seeds_carry_the_site_oee_settings(fresh_database: str) -> None:
    from zhizao.cloud.seed import seed_database
    from zhizao.cloud.storage import apply_migrations
    from zhizao.seeds import load_scenario
    from zhizao.seeds.model import Scenario, SiteOee

    apply_migrations(fresh_database)
    scenario = load_scenario().subset(["zj-shaoxing/pack-1/pack-1-m01"])
    data = scenario.model_dump(mode="json")
    data["sites"][0]["oee"] = {"microstop_s": 45, "startup_s": 180}
    seed_database(fresh_database, Scenario.model_validate(data))
    with psycopg.connect(fresh_database) as conn:
        row = conn.execute("SELECT microstop_s, startup_s FROM oee_site_config WHERE site_id = 'zj-shaoxing'").fetchone()
    assert row == (45.0, 180.0)
    assert SiteOee() == SiteOee(microstop_s=120, startup_s=0)  # the defaults are the behaviour before the setting
    with pytest.raises(ValueError, match="microstop_s"):
        SiteOee(microstop_s=-5)
