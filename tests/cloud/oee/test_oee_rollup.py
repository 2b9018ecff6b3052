"""OEE service fed batch by batch, against the reference twin over the whole history; roll-ups by sums; V1."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.oeefixtures import (
    FLEET,
    MIN,
    T0,
    V1_SEGMENTS,
    MachineData,
    Running,
    api_oee,
    batches,
    check_machine_windows,
    dt_ms,
    feed,
    random_machine,
    scripted,
    store_batch,
)
from zhizao.cloud.oee.store import dt


def fleet_data() -> list[MachineData]:
    out, seed = [], 1
    for site, lines in FLEET.items():
        for line, machines in lines.items():
            for m in machines:
                out.append(random_machine(site, line, m, seed))
                seed += 1
    return out


def test_windows_match_reference_and_rollups_sum_planned_and_ideal_time(running: Running) -> None:
    data = fleet_data()
    feed(running, data)
    check_windows_and_rollups(running, data)


def check_windows_and_rollups(running: Running, data: list[MachineData]) -> None:
    """Every machine window equals the reference twin; line, site and cluster windows sum them."""
    refs = {(d.site, d.machine): check_machine_windows(running, d) for d in data}

    def expect(members: list[tuple[str, str]], kind: str) -> dict[int, tuple[float, float, float]]:
        acc: dict[int, list[float]] = {}
        for key in members:
            for start, s in refs[key][kind].items():
                a = acc.setdefault(start, [0.0, 0.0, 0.0, 0.0])
                a[0] += s["planned"]
                a[1] += s["run"]
                a[2] += s["ideal"]
                a[3] += s["good_ideal"]
        # OEE of a group = good output at ideal cycle time / planned time, all summed over its machines.
        return {st: (a[1] / a[0], a[3] / a[0], a[0]) for st, a in acc.items() if a[0] > 0}

    groups = {
        ("line", "site-a", "l1"): [("site-a", "m1"), ("site-a", "m2")],
        ("site", "site-a", "site-a"): [("site-a", "m1"), ("site-a", "m2"), ("site-a", "m3")],
        ("cluster", None, None): [(d.site, d.machine) for d in data],
    }
    averaged_differs = False
    for (scope, site, ident), members in groups.items():
        for kind in ("hour", "day"):
            want = expect(members, kind)
            rows = api_oee(running, scope, kind, site, ident)
            got = {dt_ms(x["start"]): x for x in rows if x["planned_s"] > 0}
            assert set(got) == set(want), f"{scope} {kind}: windows differ"
            for start, (avail, oee, planned) in want.items():
                assert got[start]["planned_s"] == pytest.approx(planned, rel=1e-9)
                assert got[start]["availability"] == pytest.approx(avail, rel=1e-9)
                if got[start]["oee"] != pytest.approx(oee, rel=1e-9):
                    with psycopg.connect(running.db) as conn:
                        stored = conn.execute(
                            "SELECT machine_id, line_id, ideal_s, good_ideal_s, total, good, loss_defect_s,"
                            " loss_startup_s FROM oee_windows WHERE kind = %s AND start_ts = %s ORDER BY 1",
                            [kind, dt(start)]).fetchall()
                    wanted = {m: refs[m][kind].get(start) for m in members}
                    raise AssertionError(f"{scope} {kind} {start}: oee {got[start]['oee']} != {oee}\n"
                                         f"stored: {stored}\nreference: {wanted}")
                mean = sum(
                    refs[m][kind][start]["good_ideal"] / refs[m][kind][start]["planned"]
                    for m in members if refs[m][kind].get(start, {}).get("planned", 0) > 0
                ) / max(1, sum(1 for m in members if refs[m][kind].get(start, {}).get("planned", 0) > 0))
                averaged_differs |= abs(mean - oee) > 1e-6
    assert averaged_differs, "fixture too uniform: roll-up by sums indistinguishable from averaging"


def test_v1_vector_shift_shows_0_7479(running: Running) -> None:
    d = scripted("site-b", "l9", "m9", V1_SEGMENTS, 60.0)
    feed(running, [d], step_ms=3 * MIN)
    rows = api_oee(running, "machine", "shift", "site-b", "m9")
    shift = next(x for x in rows if dt_ms(x["start"]) == T0)
    assert shift["planned_s"] == pytest.approx(420 * 60)
    assert shift["run_s"] == pytest.approx(373 * 60)
    assert (shift["total"], shift["good"]) == (19271, 18848)
    assert shift["availability"] == pytest.approx(0.888095238, abs=1e-9)
    assert shift["performance"] == pytest.approx(0.861081323, abs=1e-9)
    assert shift["quality"] == pytest.approx(0.978049919, abs=1e-9)
    assert shift["oee"] == pytest.approx(18848 / 25200, abs=1e-12)
    # The hour windows of the shift add up to the same shift figures.
    hours = [x for x in api_oee(running, "machine", "hour", "site-b", "m9") if T0 <= dt_ms(x["start"]) < T0 + 480 * MIN]
    assert len(hours) == 8
    assert sum(x["planned_s"] for x in hours) == pytest.approx(420 * 60)
    assert sum(x["good"] for x in hours) == 18848


def test_state_timeline_holds_every_change_from_the_first_batch_on(running: Running) -> None:
    # The OEE service loads a machine it has not seen from the stored samples, which already hold the
    # batch that woke it: that batch's state changes must reach the timeline too, not only later ones.
    d = random_machine("site-a", "l1", "m1", seed=11)
    feed(running, [d], step_ms=20 * MIN)
    expected = []
    for ts, code in d.series["State"]:
        if not expected or expected[-1][1] != int(code):
            expected.append((ts, int(code)))
    lo, hi = expected[0][0], max(ts for s in d.series.values() for ts, _ in s) + MIN
    resp = running.client.get("/api/v1/states", params={"site": "site-a", "machine": "m1", "from": str(lo),
                                                         "to": str(hi)})
    assert resp.status_code == 200, resp.text
    got = [(dt_ms(x["start"]), int(x["code"])) for x in resp.json()]
    assert got == expected


@pytest.mark.parametrize(("ahead", "flush_every"), [(8, 1), (5, 2)])
def test_windows_exact_when_the_oee_worker_lags_behind_the_database(running: Running, ahead: int,
                                                                   flush_every: int) -> None:
    # Two writer connections commit in parallel and the OEE worker has a queue: when it takes a batch, the
    # database may already hold the next ones. A batch of process values only (no OEE signal) arriving
    # after the buffers were trimmed must not recompute an hour from trimmed buffers (regression: such an
    # hour was stored with 0 units).
    data = fleet_data()
    oee = running.service.oee
    assert oee is not None
    todo = batches(data, running.tags, 7 * MIN)
    with psycopg.connect(running.db) as conn:
        stored = 0
        for i, (tag, ts, value) in enumerate(todo):
            while stored < min(len(todo), i + ahead):
                store_batch(conn, *todo[stored])
                stored += 1
            oee.on_committed(tag, ts, value)
            if i % flush_every == 0:
                assert oee.flush(60)
    assert oee.flush(60)
    check_windows_and_rollups(running, data)
