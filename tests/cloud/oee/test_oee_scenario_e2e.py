"""Issue 11 end to end: a scenario of its own through the real simulator, edge agent, Mosquitto and cloud.

The Shaoxing carton erector follows a scripted shift (08:00-16:00 Shanghai, breaks 10:00/12:00/15:00, a
one-off planned stop 12:30-12:50 set through the API while the machine is in changeover): an hour above the
ideal rate (72/min against 60/min), a 60 s microstop, a 10 min jam (a material stop, which this site keeps in
run time), a failure starting 90 s before 14:00 that lasts 47 min, an unspecified stop that an operator
explains afterwards as cleaning, rejects, and a counter that starts 1,848 units below the Int32 limit (it
wraps in the first hour). The simulator runs it at 8000x in 30 s steps (the setup of
tests/support/oee_e2e.py, as the vectors test). The expected figures come from the reference twin
over the script itself (states at segment starts, counts at segment ends), never from the pipeline.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.oee_e2e import ZONE, Sim, oee_path
from zhizao.analytics import reference_fleet_oee
from zhizao.broker.contract.calendar import Calendar, StateClasses
from zhizao.cloud.oee.calendar import PlannedStop, SiteCalendar

V1_CALENDAR = {
    "shifts": [{"name": "V1", "start": "08:00", "hours": 8, "days": [1, 2, 3, 4, 5, 6, 7],
                "breaks": [{"start": "10:00", "minutes": 15}, {"start": "12:00", "minutes": 30},
                           {"start": "15:00", "minutes": 15}]}],
}  # fmt: skip
CLASSES = {"planned": [150000, 160000, 170000],
           "availability_loss": [40000, 100000, 110000, 120000, 130000, 140000, 180000, 190000, 200000, 210000,
                                 220000],
           "performance_loss": [20000, 50000, 60000, 70000, 80000, 90000]}
# (seconds, PackML state, stop reason, produced, defective) from 08:00
SCRIPT = [
    (3600, 6, 0, 4320, 40),        # 08:00 an hour above the ideal rate
    (60, 5, 50000, 0, 0),          # 09:00 microstop
    (3540, 6, 0, 3000, 30),        # 09:01
    (900, 2, 150000, 0, 0),        # 10:00 break
    (2700, 6, 0, 2500, 25),        # 10:15
    (600, 5, 60000, 0, 0),         # 11:00 jam, 10 min
    (3000, 6, 0, 2800, 50),        # 11:10
    (1800, 2, 150001, 0, 0),       # 12:00 meal
    (1200, 2, 100000, 0, 0),       # 12:30 changeover inside the planned stop
    (4110, 6, 0, 3500, 30),        # 12:50
    (2820, 9, 180000, 0, 0),       # 13:58:30 failure, 47 min
    (870, 6, 0, 800, 10),          # 14:45:30
    (900, 2, 150000, 0, 0),        # 15:00 break
    (300, 9, 40000, 0, 0),         # 15:15 unspecified stop (explained later as cleaning, 110000)
    (2400, 6, 0, 2300, 40),        # 15:20 to 16:00
]  # fmt: skip
REASON = 110000


def expected(shift_start_ms: int, windows: list[tuple[int, int]]) -> Any:
    """The twin over the script: states at segment starts, cumulative counts at segment ends."""
    st_t, st_c, c_t, c_tot, c_good = [], [], [shift_start_ms - 3_600_000], [0], [0]
    t, total, good = shift_start_ms, 0, 0
    st_t.append(shift_start_ms - 3_600_000)
    st_c.append(160000)
    for seconds, state, reason, produced, defective in SCRIPT:
        code = 10000 if state == 6 else (reason or 40000)
        st_t.append(t)
        st_c.append(REASON if code == 40000 else code)
        t += seconds * 1000
        if produced:
            total, good = total + produced, good + produced - defective
            c_t.append(t)
            c_tot.append(total)
            c_good.append(good)
    st_t.append(t)
    st_c.append(160000)
    plan_start = shift_start_ms + (4 * 3600 + 30 * 60) * 1000
    cal = SiteCalendar("zj-shaoxing", "Asia/Shanghai", Calendar.model_validate(V1_CALENDAR),
                       StateClasses.model_validate(CLASSES), [PlannedStop(plan_start, plan_start + 1_200_000, 170000)])
    ps, pe = cal.plan_intervals(shift_start_ms - 86_400_000, shift_start_ms + 86_400_000)
    return reference_fleet_oee(
        cal.config, state_offsets=[0, len(st_t)], state_time=st_t, state_code=st_c,
        count_offsets=[0, len(c_t)], count_time=c_t, count_total=c_tot, count_good=c_good,
        rate_offsets=[0, 1], rate_time=[shift_start_ms - 3_600_000], rate_per_min=[60.0],
        plan_offsets=[0, len(ps)], plan_start=ps, plan_end=pe,
        window_offsets=[0, len(windows)], window_start=[w[0] for w in windows], window_end=[w[1] for w in windows])


def test_own_scenario_through_sim_edge_broker_cloud(fresh_database: str, tmp_path: Path) -> None:
    segments: list[dict[str, Any]] = []
    for seconds, state, reason, produced, defective in SCRIPT:
        seg: dict[str, Any] = {"duration_s": seconds, "state": state}
        if state != 6:
            seg["stop_reason"] = reason
        else:
            seg.update(produced=produced, defective=defective)
        segments.append(seg)
    segments.append({"duration_s": 3600, "state": 2, "stop_reason": 170000})  # a change at 17:00 ends the hour
    day = (datetime.now(UTC).astimezone(ZONE) - timedelta(days=2)).date()
    shift_start = datetime(day.year, day.month, day.day, 8, tzinfo=ZONE)
    t0 = int(shift_start.timestamp() * 1000)
    machines = {"pack-1-m01": {"counter_start": 2**31 - 1848}}  # wraps in the first hour
    with oee_path(fresh_database, tmp_path, machines) as path:
        eng, op = path.engineer, path.operator
        planned = shift_start + timedelta(hours=4, minutes=30)
        path.put_calendar({**V1_CALENDAR, "planned_stops": [
            {"start": planned.isoformat(), "end": (planned + timedelta(minutes=20)).isoformat(), "code": 170000,
             "note": "trial order"}]}, shift_start - timedelta(hours=1))
        path.run([Sim({"pack-1-m01": segments}, start=shift_start, speed=8000, dt_s=30)])

        span = {"site": "zj-shaoxing", "from": shift_start.isoformat(),
                "to": (shift_start + timedelta(hours=8)).isoformat()}
        want_total = sum(s[3] for s in SCRIPT)
        # Complete once the hour after the shift reached its end: the edge sends in time order.
        after = shift_start + timedelta(hours=8)
        path.wait(lambda: path.window("pack-1-m01", "hour", after, after + timedelta(hours=1)).get("all_s") == 3600,
                  150, "the shift and the hour after it")
        shift = path.window("pack-1-m01", "shift", shift_start, after)
        assert shift.get("all_s") == 8 * 3600 and shift.get("total") == want_total, f"shift not complete: {shift}"

        # The operator explains the unspecified stop; the windows are recomputed.
        stop_at = shift_start + timedelta(hours=7, minutes=15)
        reason = op.post("/api/v1/sites/zj-shaoxing/machines/pack-1-m01/stops/reason",
                         json={"start": stop_at.isoformat(), "code": REASON})
        assert reason.status_code == 200 and reason.json()["recomputed"] is True, reason.text

        hours = eng.get("/api/v1/oee", params={**span, "scope": "machine", "id": "pack-1-m01",
                                               "window": "hour"}).json()
        hours = [h for h in hours if t0 <= _ms(h["start"]) < t0 + 8 * 3_600_000]
        shift = next(x for x in eng.get("/api/v1/oee", params={**span, "scope": "machine", "id": "pack-1-m01",
                                                                 "window": "shift"}).json()
                     if _ms(x["start"]) == t0)
        windows = [(t0, t0 + 8 * 3_600_000)] + [(_ms(h["start"]), _ms(h["end"])) for h in hours]
        ref = expected(t0, windows)
        print(f"issue-11 scenario shift: {shift}")
        for i, row in enumerate([shift, *hours]):
            where = f"window {row['start']}"
            for key, want in (("planned_s", ref.planned_s[i]), ("run_s", ref.run_s[i]), ("repair_s", ref.repair_s[i])):
                assert row[key] == pytest.approx(want, abs=1e-6), (where, key)
            for key in ("equipment_failure", "setup_adjustment", "idling_minor_stops", "material_stops"):
                assert row["losses"][key] == pytest.approx(ref.losses_s()[key][i], abs=1e-6), (where, key)
            assert (row["stops"], row["failures"], row["microstops"]) == (
                ref.stops[i], ref.failures[i], ref.microstops[i]), where
        # Whole-shift figures that depend on counts too.
        assert (shift["total"], shift["good"]) == (ref.total[0], ref.good[0])
        for key in ("availability", "performance", "quality", "oee", "teep", "mtbf_s", "mttr_s"):
            assert shift[key] == pytest.approx(float(getattr(ref, key)[0]), rel=1e-9, abs=1e-12), key
        for key, values in ref.losses_s().items():
            assert shift["losses"][key] == pytest.approx(values[0], abs=1e-6), key
        assert shift["performance_capped"] is False and shift["performance"] < 1
        assert sum(shift["losses"].values()) == pytest.approx(shift["planned_s"] - shift["good_output_ideal_s"])
        first, two = hours[0], next(h for h in hours if _ms(h["start"]) == t0 + 5 * 3_600_000)
        assert first["total"] == 4320 and first["performance_capped"] is True  # the wrap counted right
        assert (two["failures"], two["microstops"], two["losses"]["equipment_failure"]) == (1, 0, 90.0)
        assert shift["losses"]["setup_adjustment"] == pytest.approx(300.0)  # the cleaning; the changeover was planned
        assert shift["losses"]["material_stops"] == pytest.approx(600.0)
        losses = eng.get("/api/v1/losses", params={**span, "scope": "machine", "id": "pack-1-m01"}).json()
        pareto = {e["code"]: e for e in losses["pareto"]}
        assert pareto[180000]["seconds"] == pytest.approx(2820) and REASON in pareto and 40000 not in pareto
        assert {e["code"] for e in losses["planned"]} >= {150000, 150001}
        # The changeover inside the planned stop is planned time, not a loss.
        assert 100000 not in pareto and next(e for e in losses["planned"] if e["code"] == 100000)["seconds"] == 1200
        assert sum(e["seconds"] for e in losses["pareto"]) == pytest.approx(2820 + 300 + 600 + 60)
        assert losses["six_big_losses"]["equipment_failure_s"] == pytest.approx(shift["losses"]["equipment_failure"])
        assert not math.isnan(float(shift["oee"]))


def _ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)
