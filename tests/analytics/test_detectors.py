"""Conformance suite run over every detector: twin agreement, state round-trip, batch-split invariance."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from zhizao.analytics.anomaly import Alarm, Cusum, Detector, EwmaZ, MahalanobisT2, RobustZ, Scored

# Small warm-ups and windows so that short random batches reach the scoring phase.
DETECTORS: list[Detector] = [
    EwmaZ(alpha=0.2, warmup=3, alarm=Alarm(on=2.0, off=1.0, min_on=2, min_off=2)),
    Cusum(warmup=3, k=0.3, cap=4.0, alarm=Alarm(on=2.0, off=0.5, min_on=1, min_off=2)),
    RobustZ(window=4, alarm=Alarm(on=2.0, off=1.0, min_on=1, min_off=1)),
    MahalanobisT2(dims=2, alpha=0.3, warmup=3, alarm=Alarm(on=6.0, off=3.0, min_on=1, min_off=2)),
]
IDS = [d.name for d in DETECTORS]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

values = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.just(np.nan), st.sampled_from([0.0, 1.0, 5.0]))


@st.composite
def batch(draw: Any, group: int) -> np.ndarray:
    n_t = draw(st.integers(0, 30))
    n_tags = group * draw(st.integers(1, 3))
    return draw(hnp.arrays(np.float64, (n_t, n_tags), elements=values))


def assert_same(a: Any, b: Any, rtol: float) -> None:
    np.testing.assert_allclose(a.scores, b.scores, rtol=rtol, atol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(a.alarms, b.alarms)


@pytest.mark.parametrize("det", DETECTORS, ids=IDS)
def test_kernel_equals_reference_twin(det: Detector) -> None:
    @SETTINGS
    @given(batch(det.tags_per_output))
    def check(x: np.ndarray) -> None:
        s1 = det.init_state(x.shape[1])
        s2 = s1.copy()
        # T² solves a linear system (Cholesky here, LU in the twin): agreement depends on conditioning.
        rtol = 1e-6 if isinstance(det, MahalanobisT2) else 1e-9
        assert_same(det.update(s1, x), det.reference_update(s2, x), rtol)
        np.testing.assert_allclose(s1, s2, rtol=1e-9, atol=1e-9)

    check()


@pytest.mark.parametrize("det", DETECTORS, ids=IDS)
def test_batch_split_invariance_and_state_round_trip(det: Detector) -> None:
    @SETTINGS
    @given(batch(det.tags_per_output), st.integers(0, 30))
    def check(x: np.ndarray, cut: int) -> None:
        cut = min(cut, x.shape[0])
        whole = det.init_state(x.shape[1])
        one = det.update(whole, x)
        part = det.init_state(x.shape[1])
        first = det.update(part, x[:cut])
        # The caller persists the state between batches: bytes out, bytes back.
        restored = pickle.loads(pickle.dumps(part))
        second = det.update(restored, x[cut:])
        np.testing.assert_array_equal(np.concatenate([first.scores, second.scores]), one.scores)
        np.testing.assert_array_equal(np.concatenate([first.alarms, second.alarms]), one.alarms)
        np.testing.assert_array_equal(restored, whole)

    check()


@pytest.mark.parametrize("det", DETECTORS, ids=IDS)
def test_scores_shape_and_no_scores_before_warm_up(det: Detector) -> None:
    n_tags = 4 * det.tags_per_output
    x = np.random.default_rng(0).normal(size=(2, n_tags))
    out = det.update(det.init_state(n_tags), x)
    assert out.scores.shape == (2, det.n_outputs(n_tags)) == out.alarms.shape
    assert np.isnan(out.scores).all() and not out.alarms.any()


@pytest.mark.parametrize("det", [EwmaZ(), Cusum(), RobustZ(), MahalanobisT2(dims=2)], ids=IDS)
def test_flags_a_large_step_and_stays_quiet_before_it(det: Detector) -> None:
    """With default parameters: no alarm on the noise before the step, an alarm within 10 samples of it."""
    rng = np.random.default_rng(2)  # false-alarm rates are measured in analytics.evaluate, not here
    n_tags = 3 * det.tags_per_output
    x = rng.normal(size=(400, n_tags))
    x[300:] += 20.0
    out = det.update(det.init_state(n_tags), x)
    assert not out.alarms[:300].any()
    assert out.alarms[300:310].any(axis=0).all()


@pytest.mark.parametrize("det", DETECTORS, ids=IDS)
def test_bad_input_raises_value_error(det: Detector) -> None:
    g = det.tags_per_output
    state = det.init_state(2 * g)
    with pytest.raises(ValueError, match="x: expected a 2-D"):
        det.update(state, np.zeros(5))
    with pytest.raises(ValueError, match="state: shape"):
        det.update(state, np.zeros((5, 3 * g)))
    with pytest.raises(ValueError, match="state: expected the C-contiguous float64"):
        det.update(state.astype(np.float32), np.zeros((5, 2 * g)))
    with pytest.raises(ValueError, match="n_tags"):
        det.init_state(0)


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="alpha"):
        EwmaZ(alpha=0.0)
    with pytest.raises(ValueError, match="warmup"):
        Cusum(warmup=1)
    with pytest.raises(ValueError, match="window"):
        RobustZ(window=2)
    with pytest.raises(ValueError, match="dims"):
        MahalanobisT2(dims=0)
    with pytest.raises(ValueError, match=r"alarm.off: 5.0 must not exceed alarm.on 1.0"):
        Alarm(on=1.0, off=5.0)
    with pytest.raises(ValueError, match="x: 3 tags is not a multiple of the group size 2"):
        MahalanobisT2(dims=2).update(np.zeros((1, 8)), np.zeros((1, 3)))


def test_robust_detector_is_not_dragged_by_outliers() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 1))
    x[::10] = 50.0  # a spike every 10 samples
    robust = RobustZ(window=64).update(RobustZ(window=64).init_state(1), x)
    clean = np.ones(600, bool)
    clean[::10] = False
    clean[:64] = False
    # Scores of the ordinary samples stay those of unit noise; the spikes stand out.
    assert np.nanmax(robust.scores[clean, 0]) < 6.0
    assert np.nanmin(robust.scores[::10][7:, 0]) > 20.0


@pytest.mark.parametrize("det", DETECTORS, ids=IDS)
def test_output_buffers_are_reused_and_checked(det: Detector) -> None:
    n_tags = 2 * det.tags_per_output
    x = np.random.default_rng(4).normal(size=(20, n_tags))
    shape = (20, det.n_outputs(n_tags))
    out = Scored(np.empty(shape), np.empty(shape, np.bool_))
    fresh = det.update(det.init_state(n_tags), x)
    reused = det.update(det.init_state(n_tags), x, out)
    assert reused.scores is out[0]
    np.testing.assert_array_equal(reused.scores, fresh.scores)
    with pytest.raises(ValueError, match=r"out.scores: expected a C-contiguous float64 array of shape"):
        det.update(det.init_state(n_tags), x, Scored(np.empty((3, 3)), out.alarms))
