"""RobustZ: both kernels equal the NumPy twin (median/IQR with linear interpolation) and keep the batch-split
rule on random windows, ties, NaN gaps and splits; the scale floor is relative to the data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zhizao.analytics.anomaly import RobustZ
from zhizao.analytics.anomaly.robust import RANKS_FROM_WINDOW, STEP_TO_STD, TIME_BLOCK
from zhizao.analytics.checks import check_detector

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def series(draw: Any) -> tuple[RobustZ, np.ndarray, list[int]]:
    """A detector (either kernel, small windows so that chunks turn over often) and a batch with NaN gaps,
    ties (quantised values) or both, and cut points splitting it into consecutive batches."""
    w = draw(st.integers(4, 12))
    method = draw(st.sampled_from(["sorted", "ranks"]))
    n_t = draw(st.integers(0, 80))
    n_tags = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    step = draw(st.sampled_from([0.0, 0.5, 1.0, 10.0]))  # 0: continuous values
    x = rng.normal(size=(n_t, n_tags)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    if step:
        x = np.round(x / step) * step
    x[rng.random(x.shape) < draw(st.sampled_from([0.0, 0.1, 0.5]))] = np.nan
    if draw(st.booleans()) and n_t:
        x[: n_t // 2] = 7.0  # a flat stretch
    cuts = sorted(draw(st.lists(st.integers(0, n_t), max_size=4)))
    return RobustZ(window=w, method=method), x, cuts


@SETTINGS
@given(series())
def test_kernels_equal_the_twin_and_any_batch_split(case: tuple[RobustZ, np.ndarray, list[int]]) -> None:
    det, x, cuts = case
    twin_state = det.init_state(x.shape[1])
    twin = det.reference_update(twin_state, x)
    one_state = det.init_state(x.shape[1])
    one = det.update(one_state, x)
    np.testing.assert_allclose(one.scores, twin.scores, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(one.alarms, twin.alarms)
    np.testing.assert_allclose(one_state, twin_state, rtol=1e-12, atol=0.0)
    split_state = det.init_state(x.shape[1])
    parts = [det.update(split_state, p) for p in np.split(x, cuts)]
    np.testing.assert_array_equal(np.concatenate([p.scores for p in parts]), one.scores)
    np.testing.assert_array_equal(np.concatenate([p.alarms for p in parts]), one.alarms)
    np.testing.assert_array_equal(split_state, one_state)
    other = RobustZ(window=det.window, method="ranks" if det.method == "sorted" else "sorted")
    other_state = other.init_state(x.shape[1])
    np.testing.assert_array_equal(other.update(other_state, x).scores, one.scores)


def test_the_rank_kernel_on_a_long_series_and_a_large_window() -> None:
    rng = np.random.default_rng(5)
    det = RobustZ(window=RANKS_FROM_WINDOW)
    assert det.uses_ranks and not RobustZ().uses_ranks
    x = rng.standard_t(3, size=(3 * RANKS_FROM_WINDOW + 37, 2))
    x[rng.random(x.shape) < 0.05] = np.nan
    fast = det.update(det.init_state(2), x)
    slow = det.reference_update(det.init_state(2), x)
    np.testing.assert_allclose(fast.scores, slow.scores, rtol=1e-9)
    assert np.isfinite(fast.scores[-100:]).mean() > 0.9


def test_batches_longer_than_the_kernels_time_block_give_the_same_bits() -> None:
    # The sorted kernel takes a batch TIME_BLOCK samples at a time: the blocks' seams must not show.
    rng = np.random.default_rng(11)
    x = np.round(rng.normal(size=(2 * TIME_BLOCK + 37, 5)) * 4) / 4  # ties, and windows with IQR 0
    x[rng.random(x.shape) < 0.1] = np.nan
    det = RobustZ(window=16, method="sorted")
    state = det.init_state(5)
    whole = det.update(state, x)
    twin_state = det.init_state(5)
    twin = det.reference_update(twin_state, x)
    np.testing.assert_allclose(whole.scores, twin.scores, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(whole.alarms, twin.alarms)
    np.testing.assert_allclose(state, twin_state, rtol=1e-12, atol=0.0)
    split_state = det.init_state(5)
    parts = [det.update(split_state, p) for p in np.split(x, [7, TIME_BLOCK + 3])]
    np.testing.assert_array_equal(np.concatenate([p.scores for p in parts]), whole.scores)
    np.testing.assert_array_equal(split_state, state)
    ranks = RobustZ(window=16, method="ranks")
    np.testing.assert_array_equal(ranks.update(ranks.init_state(5), x).scores, whole.scores)
    assert np.isfinite(whole.scores[-TIME_BLOCK:]).mean() > 0.8


@pytest.mark.parametrize("method", ["sorted", "ranks"])
def test_check_detector_holds_for_both_kernels(method: str) -> None:
    check_detector(RobustZ(window=8, method=method))


def test_quantised_data_scores_one_step_as_rounding_noise_not_1e9() -> None:
    # An integer-valued signal mostly on one value: IQR 0, so the old absolute floor gave ~1e9 per step.
    det = RobustZ(window=64)
    x = np.full((200, 1), 20.0)
    x[::9] = 21.0
    x[150] = 25.0
    s = det.update(det.init_state(1), x).scores[:, 0]
    one_step = s[64:][x[64:, 0] == 21.0]
    np.testing.assert_allclose(one_step, 1.0 / STEP_TO_STD)  # sqrt(12) = 3.46: below the alarm at 5
    assert s[150] == pytest.approx(5.0 / STEP_TO_STD)  # five steps: alarmed


def test_a_flat_window_scores_relative_to_the_level_and_stays_bounded() -> None:
    det = RobustZ(window=16)
    for level, jump in ((1000.0, 1.0), (0.0, 1.0), (0.0, -1e-6), (5.0, 5e6)):
        x = np.full((40, 1), level)
        x[30] = level + jump
        s = det.update(det.init_state(1), x).scores[:, 0]
        assert s[16:30].max() == 0.0  # the flat part itself
        assert s[30] == pytest.approx(abs(jump) / (det.rel_floor * max(abs(level), abs(level + jump))))
        assert s[30] <= 2.0 / det.rel_floor


def test_parameters_of_the_floor_and_the_kernel_are_checked() -> None:
    with pytest.raises(ValueError, match="rel_floor"):
        RobustZ(rel_floor=1.5)
    with pytest.raises(ValueError, match="method"):
        RobustZ(method="heap")
