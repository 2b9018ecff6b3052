"""Property tests: the numba OEE kernel equals its reference twin on random fleets; bad input is refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zhizao.analytics.oee import Category, OeeConfig, fleet_oee, reference_fleet_oee

CODES = [10000, 10005, 20000, 30000, 40000, 50000, 60000, 100000, 140000, 150000, 160000, 180000, 180001,
         210000, 220000]
SPAN = 20_000  # ms; small so that times collide and windows cut segments


def sorted_times(draw: Any, n: int) -> list[int]:
    return sorted(draw(st.lists(st.integers(0, SPAN), min_size=n, max_size=n)))


@st.composite
def machine(draw: Any) -> dict[str, Any]:
    ns, nc = draw(st.integers(0, 7)), draw(st.integers(0, 7))
    counters = draw(st.lists(st.tuples(st.integers(0, 120), st.integers(0, 120)), min_size=nc, max_size=nc))
    n_plan = draw(st.integers(0, 3))
    edges = sorted(draw(st.lists(st.integers(0, SPAN), min_size=2 * n_plan, max_size=2 * n_plan)))
    nw = draw(st.integers(0, 4))
    windows = [sorted(draw(st.lists(st.integers(0, SPAN + 2000), min_size=2, max_size=2))) for _ in range(nw)]
    nr = draw(st.integers(0, 3))
    return {
        "states": (sorted_times(draw, ns), draw(st.lists(st.sampled_from(CODES), min_size=ns, max_size=ns))),
        "counts": (sorted_times(draw, nc), [max(a, b) for a, b in counters], [min(a, b) for a, b in counters]),
        "rates": (sorted_times(draw, nr), draw(st.lists(st.sampled_from([0.0, 0.5, 30.0, 600.0, float("nan")]),
                                                       min_size=nr, max_size=nr))),
        "plan": (edges[0::2], edges[1::2]),
        "windows": ([w[0] for w in windows], [w[1] for w in windows]),
    }


def fleet(machines: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate machines into the flat arrays + offsets that fleet_oee takes."""
    def cat(key: str, part: int) -> list[Any]:
        return [v for m in machines for v in m[key][part]]

    def off(key: str) -> list[int]:
        return [0, *np.cumsum([len(m[key][0]) for m in machines]).tolist()]

    return {
        "state_offsets": off("states"), "state_time": cat("states", 0), "state_code": cat("states", 1),
        "count_offsets": off("counts"), "count_time": cat("counts", 0), "count_total": cat("counts", 1),
        "count_good": cat("counts", 2),
        "rate_offsets": off("rates"), "rate_time": cat("rates", 0), "rate_per_min": cat("rates", 1),
        "plan_offsets": off("plan"), "plan_start": cat("plan", 0), "plan_end": cat("plan", 1),
        "window_offsets": off("windows"), "window_start": cat("windows", 0), "window_end": cat("windows", 1),
    }


configs = st.builds(
    OeeConfig,
    microstop_s=st.sampled_from([0.0, 1.0, 5.0]),
    startup_s=st.sampled_from([0.0, 3.0]),
    counter_modulus=st.sampled_from([0, 128]),
    overrides=st.sampled_from([{}, {180001: Category.SETUP, 30000: Category.PLANNED}]),
    material_in_run=st.booleans(),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(machine(), min_size=1, max_size=4), configs)
def test_kernel_equals_reference(machines: list[dict[str, Any]], config: OeeConfig) -> None:
    args = fleet(machines)
    got, want = fleet_oee(config, **args), reference_fleet_oee(config, **args)
    np.testing.assert_array_equal(got.machine, want.machine)
    np.testing.assert_array_equal(got.ints, want.ints)
    np.testing.assert_allclose(got.floats, want.floats, rtol=1e-9, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(got.time_s, want.time_s, rtol=0, atol=1e-9)
    # Invariants that hold for any input.
    np.testing.assert_allclose(got.time_s.sum(axis=1), got.all_s, atol=1e-6)
    assert np.all(got.run_s <= got.planned_s + 1e-9)
    assert np.all(got.planned_s <= got.all_s + 1e-9)
    for ratio in (got.availability, got.performance, got.quality, got.oee):
        finite = ratio[~np.isnan(ratio)]
        assert np.all((finite >= 0) & (finite <= 1))


@settings(max_examples=40, deadline=None)
@given(machine(), st.integers(0, SPAN))
def test_window_split_adds_up(m: dict[str, Any], cut: int) -> None:
    """Two adjacent windows give the same time, counts and stops-by-start as the window that covers both."""
    m = dict(m, windows=([0, 0, cut], [SPAN, cut, SPAN]))
    r = fleet_oee(**fleet([m]))
    np.testing.assert_allclose(r.time_s[0], r.time_s[1] + r.time_s[2], atol=1e-9)
    assert r.total[0] == r.total[1] + r.total[2]
    assert r.good[0] == r.good[1] + r.good[2]
    assert r.stops[0] == r.stops[1] + r.stops[2]
    assert r.planned_s[0] == pytest.approx(r.planned_s[1] + r.planned_s[2], abs=1e-9)


def base_args() -> dict[str, Any]:
    return fleet([{
        "states": ([0, 10], [10000, 40000]), "counts": ([0, 10], [0, 5], [0, 5]), "rates": ([0], [1.0]),
        "plan": ([0], [20]), "windows": ([0], [20]),
    }])


@pytest.mark.parametrize(("change", "message"), [
    ({"state_time": [10, 0]}, "state_time: not sorted for machine 0 at index 1"),
    ({"count_time": [5, 4]}, "count_time: not sorted"),
    ({"state_code": [10000]}, "inconsistent lengths: state_time=2, state_code=1"),
    ({"state_code": [10000, 250000]}, "state_code[1] = 250000 outside 0..229999"),
    ({"state_code": [10000, -1]}, "state_code[1] = -1"),
    ({"count_total": [0, -5]}, "count_total[1] = -5 is negative"),
    ({"state_offsets": [0, 1]}, "state_offsets: last offset 1 != number of items 2"),
    ({"state_offsets": [1, 2]}, "state_offsets: offsets must start at 0"),
    ({"count_offsets": [0, 1, 2]}, "count_offsets: describes 2 machines, expected 1"),
    ({"window_end": [-1]}, "window_end[0] = -1 is before its window_start"),
    ({"plan_start": [0, 5], "plan_end": [10, 20], "plan_offsets": [0, 2]}, "plan_start[1] = 5 overlaps"),
    ({"state_time": [0.5, 1.0]}, "state_time: expected integers"),
    ({"state_time": [[0, 10]]}, "state_time: expected a 1-D array"),
])
def test_bad_input_raises_value_error_naming_the_fault(change: dict[str, Any], message: str) -> None:
    args = base_args() | change
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        fleet_oee(**args)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="microstop_s"):
        OeeConfig(microstop_s=-1)
    with pytest.raises(ValueError, match="overrides: code 999999"):
        OeeConfig(overrides={999999: Category.RUNNING})
    with pytest.raises(ValueError, match="ranges: no category"):
        OeeConfig(ranges={1: Category.RUNNING})


def test_counter_wrap_and_reset_are_not_negative_production() -> None:
    args = base_args() | {"count_time": [0, 5, 10, 15], "count_total": [120, 126, 3, 0],
                          "count_good": [120, 126, 3, 0], "count_offsets": [0, 4]}
    wrapped = fleet_oee(OeeConfig(counter_modulus=128), **args)
    assert wrapped.total[0] == 6 + 5  # 126 -> 3 wraps at 128 (+5); 3 -> 0 is a reset (+0)
    reset = fleet_oee(OeeConfig(), **args)
    assert reset.total[0] == 6 + 3
    assert reset.flags[0] & 4 and wrapped.flags[0] & 8
