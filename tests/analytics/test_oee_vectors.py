"""The OEE kernel and its twin reproduce reference/oee-vectors.json (Vorne worksheets, TEEP, MTBF, cap)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from zhizao.analytics.oee import OeeConfig, fleet_oee, reference_fleet_oee
from zhizao.analytics.oee.kernel import FLAG_PERFORMANCE_CAPPED

MIN = 60_000
HOUR = 60 * MIN
TOL = 1e-9
IMPLS = [fleet_oee, reference_fleet_oee]


def one_machine(states: list[tuple[int, int]], counts: list[tuple[int, int, int]], rate: float,
                plan: tuple[int, int], window: tuple[int, int]) -> dict[str, Any]:
    """Inputs for one machine and one window (times in ms)."""
    return {
        "state_offsets": [0, len(states)], "state_time": [t for t, _ in states],
        "state_code": [c for _, c in states],
        "count_offsets": [0, len(counts)], "count_time": [t for t, _, _ in counts],
        "count_total": [n for _, n, _ in counts], "count_good": [g for _, _, g in counts],
        "rate_offsets": [0, 1], "rate_time": [0], "rate_per_min": [rate],
        "plan_offsets": [0, 1], "plan_start": [plan[0]], "plan_end": [plan[1]],
        "window_offsets": [0, 1], "window_start": [window[0]], "window_end": [window[1]],
    }


def shift(planned_stops_min: int, unplanned_min: int, total: int, reject: int, rate: float,
          all_min: int = 480) -> dict[str, Any]:
    """A 480-min shift: run, a break (planned), run, a failure (unplanned), run; then no shift."""
    states = [
        (0, 10000),
        (100 * MIN, 150000),  # operator break: planned stop
        ((100 + planned_stops_min) * MIN, 10000),
        (300 * MIN, 180000),  # equipment failure
        ((300 + unplanned_min) * MIN, 10000),
        (480 * MIN, 160000),  # no shift
    ]
    counts = [(0, 1000, 1000), (480 * MIN, 1000 + total, 1000 + total - reject)]
    return one_machine(states, counts, rate, (0, 480 * MIN), (0, all_min * MIN))


@pytest.mark.parametrize("impl", IMPLS)
def test_v1_vorne_worksheet_a(impl: Any) -> None:
    r = impl(**shift(60, 47, 19271, 423, 60.0))
    assert r.planned_s[0] == pytest.approx(420 * 60, abs=TOL)
    assert r.run_s[0] == pytest.approx(373 * 60, abs=TOL)
    assert r.good[0] == 18848
    assert abs(r.availability[0] - 373 / 420) < TOL
    assert abs(r.performance[0] - 19271 / 22380) < TOL
    assert abs(r.quality[0] - 18848 / 19271) < TOL
    assert abs(r.oee[0] - 18848 / 25200) < TOL
    assert abs(r.oee[0] - 0.747936508) < 1e-9
    assert r.flags[0] == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_v2_vorne_worksheet_b(impl: Any) -> None:
    r = impl(**shift(45, 30, 700, 25, 2.0))
    assert r.planned_s[0] == pytest.approx(435 * 60, abs=TOL)
    assert r.run_s[0] == pytest.approx(405 * 60, abs=TOL)
    assert r.good[0] == 675
    assert abs(r.availability[0] - 0.931034483) < 1e-9
    assert abs(r.performance[0] - 700 / 810) < TOL
    assert abs(r.quality[0] - 675 / 700) < TOL
    assert abs(r.oee[0] - 675 / 870) < TOL


@pytest.mark.parametrize("impl", IMPLS)
def test_v3_simple(impl: Any) -> None:
    states = [(0, 10000), (420 * MIN, 40000)]  # 60 min unspecified stop at the end
    counts = [(0, 0, 0), (420 * MIN, 400, 380)]
    r = impl(**one_machine(states, counts, 1.0, (0, 480 * MIN), (0, 480 * MIN)))
    assert abs(r.availability[0] - 0.875) < TOL
    assert abs(r.performance[0] - 400 / 420) < TOL
    assert abs(r.quality[0] - 0.95) < TOL
    assert abs(r.oee[0] - 0.791666667) < 1e-9


@pytest.mark.parametrize("impl", IMPLS)
def test_v4_teep_over_a_day(impl: Any) -> None:
    r = impl(**shift(60, 47, 19271, 423, 60.0, all_min=1440))
    assert abs(r.oee[0] - 18848 / 25200) < TOL
    assert abs(r.planned_s[0] / r.all_s[0] - 0.291666667) < 1e-9
    assert abs(r.teep[0] - 18848 / 86400) < TOL


@pytest.mark.parametrize("impl", IMPLS)
def test_v5_mtbf_mttr(impl: Any) -> None:
    # 12 failures of 60 min each, 300 h of operation between them: 3600 h operating, 720 min repair.
    states: list[tuple[int, int]] = []
    t = 0
    for _ in range(12):
        states += [(t, 10000), (t + 300 * HOUR, 180000)]
        t += 300 * HOUR + HOUR
    states.append((t, 10000))
    args = one_machine(states, [(0, 0, 0)], 60.0, (0, t), (0, t))
    r = impl(**args)
    assert r.failures[0] == 12
    assert abs(r.mtbf_s[0] / 3600 - 300) < TOL
    assert abs(r.mttr_s[0] / 60 - 60) < TOL
    inherent = r.mtbf_s[0] / (r.mtbf_s[0] + r.mttr_s[0])
    assert abs(inherent - 0.996677741) < 1e-9


@pytest.mark.parametrize("impl", IMPLS)
def test_v6_performance_capped_with_flag(impl: Any) -> None:
    r = impl(**one_machine([(0, 10000)], [(0, 0, 0), (100 * MIN, 150, 150)], 1.0,
                           (0, 100 * MIN), (0, 100 * MIN)))
    assert r.performance[0] == 1.0
    assert r.flags[0] & FLAG_PERFORMANCE_CAPPED


@pytest.mark.parametrize("impl", IMPLS)
def test_six_losses_add_up_to_the_oee_gap(impl: Any) -> None:
    cfg = OeeConfig(microstop_s=120, startup_s=600)
    states = [(0, 10000), (60 * MIN, 40000), (61 * MIN, 10000), (100 * MIN, 100000), (130 * MIN, 20000),
              (200 * MIN, 180000), (260 * MIN, 10000)]
    counts = [(0, 0, 0), (30 * MIN, 1500, 1490), (265 * MIN, 9000, 8900), (480 * MIN, 20000, 19800)]
    r = impl(cfg, **one_machine(states, counts, 60.0, (0, 480 * MIN), (0, 480 * MIN)))
    losses = r.losses_s()
    assert r.microstops[0] == 1 and r.stops[0] == 2 and r.failures[0] == 1
    assert losses["idling_minor_stops"][0] == 60.0
    assert losses["setup_adjustment"][0] == 30 * 60.0
    assert losses["equipment_failure"][0] == 60 * 60.0
    assert losses["startup_rejects"][0] == 90.0  # the 90 rejects reported 5 min after the restart
    fully_productive = r.good[0] * 1.0  # 60/min: 1 s ideal cycle
    assert sum(v[0] for v in losses.values()) == pytest.approx(r.planned_s[0] - fully_productive, abs=1e-6)
    assert r.time_s[0].sum() == pytest.approx(r.all_s[0])


def test_kernel_matches_reference_on_a_busy_fleet() -> None:
    rng = np.random.default_rng(7)
    n, per = 20, 50
    st_t = np.sort(rng.integers(0, 10 * HOUR, size=(n, per)), axis=1).ravel()
    codes = rng.choice([10000, 20000, 40000, 50000, 60000, 100000, 150000, 160000, 180000, 210000],
                       size=n * per)
    ct = np.sort(rng.integers(0, 10 * HOUR, size=(n, per)), axis=1).ravel()
    tot = np.cumsum(rng.integers(0, 50, size=(n, per)), axis=1).ravel()
    good = tot - np.cumsum(rng.integers(0, 2, size=(n, per)), axis=1).ravel()
    off = np.arange(0, n * per + 1, per)
    ws = np.tile(np.arange(10) * HOUR, n)
    args = {
        "state_offsets": off, "state_time": st_t, "state_code": codes,
        "count_offsets": off, "count_time": ct, "count_total": tot, "count_good": np.maximum(good, 0),
        "rate_offsets": np.arange(n + 1), "rate_time": np.zeros(n, np.int64), "rate_per_min": np.full(n, 30.0),
        "plan_offsets": np.arange(n + 1), "plan_start": np.full(n, HOUR), "plan_end": np.full(n, 9 * HOUR),
        "window_offsets": np.arange(0, 10 * n + 1, 10), "window_start": ws, "window_end": ws + HOUR,
    }
    a, b = fleet_oee(**args), reference_fleet_oee(**args)
    np.testing.assert_allclose(a.floats, b.floats, rtol=1e-12, atol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(a.ints, b.ints)
    np.testing.assert_allclose(a.time_s, b.time_s, atol=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("in_run", [False, True])
def test_material_stops_are_a_loss_class_of_their_own(impl: Any, in_run: bool) -> None:
    cfg = OeeConfig(microstop_s=120, material_in_run=in_run)
    states = [(0, 10000), (60 * MIN, 60000), (70 * MIN, 10000), (100 * MIN, 70000), (100 * MIN + 30_000, 10000),
              (200 * MIN, 180000), (230 * MIN, 10000)]
    counts = [(0, 0, 0), (480 * MIN, 24000, 23800)]
    r = impl(cfg, **one_machine(states, counts, 60.0, (0, 480 * MIN), (0, 480 * MIN)))
    losses = r.losses_s()
    assert losses["material_stops"][0] == 600.0  # the 10 min jam; the 30 s one is a microstop
    assert losses["idling_minor_stops"][0] == 30.0
    assert losses["equipment_failure"][0] == 30 * 60.0
    assert r.run_s[0] == pytest.approx((480 - 30 - (0 if in_run else 10)) * 60.0)
    assert r.stops[0] == 2 and r.microstops[0] == 1 and r.failures[0] == 1
    assert sum(v[0] for v in losses.values()) == pytest.approx(r.planned_s[0] - r.good[0] * 1.0, abs=1e-6)
