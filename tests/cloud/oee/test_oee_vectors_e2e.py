"""reference/oee-vectors.json V1-V6 through the whole path, in one run: scripted simulators -> edge agent ->
Mosquitto -> cloud ingest -> OEE -> API (tests/support/oee_e2e.py).

Five machines of the Shaoxing packing line, one vector each, in one 08:00-16:00 shift (Shanghai) of a day
three days back (the calendar: that shift, no breaks; the vectors' planned stops are breaks and planned stops
the machines show, planned states): m01 V1 (60/min; its day window is V4, TEEP), m02 V2 (2/min), m03 V3 (ideal
cycle 1 min), m04 V6 (1/min, more made than the ideal rate allows: P capped and flagged). Outside the shift the
machines show "no shift" (planned); a planned stop at midnight moves their horizon past the day's end.
V5 (3600 operating hours, 12 failures, 720 min of repair) needs 150.5 days: m05 runs it on a second simulator
with one-hour steps, 160 days back, read by the same agent; /api/v1/reliability gives MTBF and MTTR.
Every figure must equal the vector to 1e-6.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from tests.support.oee_e2e import IDLE, ROOT, SITE, ZONE, Sim, oee_path

TOL = 1e-6


def run(minutes: int, produced: int, defective: int) -> dict[str, Any]:
    return {"duration_s": minutes * 60, "state": 6, "produced": produced, "defective": defective}


def stop(minutes: int, state: int, code: int) -> dict[str, Any]:
    return {"duration_s": minutes * 60, "state": state, "stop_reason": code}


V1 = yaml.safe_load((ROOT / "seeds" / "timelines" / "v1-vorne.yaml").read_text())["segments"]
# V2: 480 min shift, 45 min planned stops, 30 min unplanned, 2/min, 700 made, 25 rejects.
V2 = [run(120, 207, 7), stop(15, 2, 150000), run(105, 182, 7), stop(30, 2, 150001), run(60, 104, 4),
      stop(30, 9, 180000), run(120, 207, 7)]
# V3: planned 480 min, run 420 min, ideal cycle 1 min, 400 made, 380 good.
V3 = [run(240, 228, 11), stop(60, 9, 180000), run(180, 172, 9)]
# V6: planned 100 min (the rest of the shift is a planned stop), run 100 min, 1/min, 150 made, all good.
V6 = [stop(380, 2, 170000), run(100, 150, 0)]
# V5: 12 x (300 h running, a 1 h failure) = 3600 operating hours, 12 failures, 720 min of repair.
V5 = [seg for _ in range(12) for seg in ({"duration_s": 300 * 3600, "state": 6, "produced": 300 * 54},
                                         {"duration_s": 3600, "state": 9, "stop_reason": 180000})]

EXPECT = {  # reference/oee-vectors.json
    "pack-1-m01": {"planned_s": 420 * 60, "run_s": 373 * 60, "total": 19271, "good": 18848,
                   "availability": 0.888095238, "performance": 0.861081323, "quality": 0.978049919,
                   "oee": 0.747936508, "oee_exact": 18848 / 25200, "performance_capped": False},
    "pack-1-m02": {"planned_s": 435 * 60, "run_s": 405 * 60, "total": 700, "good": 675,
                   "availability": 0.931034483, "performance": 0.864197531, "quality": 0.964285714,
                   "oee": 0.775862069, "oee_exact": 675 / 870, "performance_capped": False},
    "pack-1-m03": {"planned_s": 480 * 60, "run_s": 420 * 60, "total": 400, "good": 380,
                   "availability": 0.875, "performance": 0.952380952, "quality": 0.95, "oee": 0.791666667,
                   "oee_exact": 0.875 * 400 / 420 * 0.95, "performance_capped": False},
    "pack-1-m04": {"planned_s": 100 * 60, "run_s": 100 * 60, "total": 150, "good": 150,
                   "performance": 1.0, "performance_capped": True},
}
V4 = {"all_s": 1440 * 60, "utilization": 0.291666667, "teep": 0.218148148, "teep_exact": 18848 / 86400}
V5_EXPECT = {"run_h": 3600, "failures": 12, "failure_h": 12, "mtbf_h": 300, "mttr_min": 60,
             "inherent_availability": 0.996677741}
CALENDAR = {"shifts": [{"name": "Day", "start": "08:00", "hours": 8, "days": [1, 2, 3, 4, 5, 6, 7]}]}
MACHINES = {"pack-1-m01": {}, "pack-1-m02": {"ideal_rate_per_min": 2}, "pack-1-m03": {"ideal_rate_per_min": 1},
            "pack-1-m04": {"ideal_rate_per_min": 1}, "pack-1-m05": {"ideal_rate_per_min": 1}}


def day(script: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """From 22:00 the day before: no shift to 08:00, the 480-min script, no shift to midnight, then a planned stop
    for an hour (a change after midnight: the day's windows reach their end)."""
    assert sum(s["duration_s"] for s in script) == 480 * 60
    return [{"duration_s": 10 * 3600, **IDLE}, *script, {"duration_s": 8 * 3600, **IDLE}, stop(60, 2, 170000)]


def test_vectors_v1_to_v6_through_sim_edge_broker_cloud(fresh_database: str, tmp_path: Any) -> None:
    day0 = datetime.combine((datetime.now(UTC).astimezone(ZONE) - timedelta(days=3)).date(), datetime.min.time(),
                            tzinfo=ZONE)
    shift = day0 + timedelta(hours=8)
    v5_start = day0 - timedelta(days=160)
    main = Sim({"pack-1-m01": day(V1), "pack-1-m02": day(V2), "pack-1-m03": day(V3), "pack-1-m04": day(V6)},
               start=day0 - timedelta(hours=2), speed=8000, dt_s=60)
    v5 = Sim({"pack-1-m05": V5}, start=v5_start, speed=1.2e6, dt_s=3600)
    with oee_path(fresh_database, tmp_path, MACHINES) as path:
        path.put_calendar(CALENDAR, v5_start - timedelta(seconds=v5.pre_roll_s + 86400))
        path.run([main, v5])
        end = shift + timedelta(hours=8)

        # Complete once every machine's day reached midnight: the edge sends in time order, so all of the
        # shift is in (its last instant's Counts/Good too, which the edge holds until its next publish).
        path.wait(lambda: all(path.window(m, "day", day0, day0 + timedelta(days=1)).get("all_s") == 86400
                              for m in EXPECT), 150, "the day of every vector")
        v5_end = v5_start + timedelta(hours=3612)
        reliability: dict[str, Any] = {}

        def v5_done() -> bool:
            nonlocal reliability
            resp = path.engineer.get("/api/v1/reliability", params={"site": SITE, "from": v5_start.isoformat(),
                                                                    "to": v5_end.isoformat()})
            assert resp.status_code == 200, resp.text
            reliability = next((r for r in resp.json()["machines"] if r["machine"] == "pack-1-m05"), {})
            return reliability.get("failures") == 12 and reliability.get("run_h") == 3600

        path.wait(v5_done, 90, "V5's 3612 hours")

        figures: dict[str, dict[str, Any]] = {}
        for machine, want in EXPECT.items():
            row = path.window(machine, "shift", shift, end)
            figures[machine] = row
            assert (row["planned_s"], row["run_s"], row["total"], row["good"]) == (
                want["planned_s"], want["run_s"], want["total"], want["good"]), (machine, row)
            for key in ("availability", "performance", "quality", "oee"):
                if key in want:
                    assert row[key] == pytest.approx(want[key], abs=TOL), (machine, key, row[key])
            if "oee_exact" in want:
                assert row["oee"] == pytest.approx(want["oee_exact"], abs=1e-12), (machine, row["oee"])
            assert row["performance_capped"] is want["performance_capped"], (machine, row)
        assert f"{figures['pack-1-m01']['oee']:.4f}" == "0.7479"
        states = path.engineer.get("/api/v1/states", params={"site": SITE, "machine": "pack-1-m01",
                                                             "from": shift.isoformat(), "to": end.isoformat()}).json()
        failure = [(s["code"], s["start"][11:16]) for s in states if s["category"] == "failure"]
        assert failure == [(180000, "05:30")]  # V1's 47 min failure from 13:30 in Shanghai
        dayrow = path.window("pack-1-m01", "day", day0, day0 + timedelta(days=1))
        assert dayrow["all_s"] == V4["all_s"] and dayrow["planned_s"] == 420 * 60
        assert dayrow["planned_s"] / dayrow["all_s"] == pytest.approx(V4["utilization"], abs=TOL)
        assert dayrow["teep"] == pytest.approx(V4["teep"], abs=TOL)
        assert dayrow["teep"] == pytest.approx(V4["teep_exact"], abs=1e-12)
        rel = reliability
        inherent = rel["mtbf_h"] / (rel["mtbf_h"] + rel["mttr_min"] / 60)
        for key in ("run_h", "failures", "failure_h", "mtbf_h", "mttr_min"):
            assert rel[key] == pytest.approx(V5_EXPECT[key], abs=TOL), (key, rel)
        assert inherent == pytest.approx(V5_EXPECT["inherent_availability"], abs=TOL)
        print("\nvector figures through the path (machine shift windows):")
        for machine, row in figures.items():
            print(f"  {machine}: " + ", ".join(f"{k}={row[k]}" for k in ("planned_s", "run_s", "total", "good",
                                                                      "availability", "performance", "quality",
                                                                      "oee", "performance_capped")))
        print(f"  V4 day: all_s={dayrow['all_s']} planned_s={dayrow['planned_s']} teep={dayrow['teep']}")
        print(f"  V5: {rel}, inherent availability {inherent}")
