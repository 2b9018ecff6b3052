"""After the score: AnomalyLikelihood and EventDetector (kernel = twin, batch split), and PcaT2Q's behaviour."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from zhizao.analytics.anomaly import Alarm, AnomalyLikelihood, EventDetector, Events, PcaT2Q

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
scores = st.one_of(st.floats(0.0, 50.0), st.just(np.nan), st.sampled_from([0.0, 0.5, 1.0, 3.0]))
LIKELIHOODS = [AnomalyLikelihood(short=1, alpha=0.2, learn=3), AnomalyLikelihood(short=4, alpha=0.01, learn=5)]
EVENTS = [EventDetector(level=2.0, off=1.0, refractory=1), EventDetector(level=3.0, off=0.5, refractory=4)]


@st.composite
def batches(draw: Any) -> tuple[np.ndarray, list[int]]:
    n_t = draw(st.integers(0, 40))
    x = draw(hnp.arrays(np.float64, (n_t, draw(st.integers(1, 3))), elements=scores))
    return x, sorted(draw(st.lists(st.integers(0, n_t), max_size=4)))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


def _split(x: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    bounds = [0, *cuts, len(x)]
    return [x[lo:hi] for lo, hi in itertools.pairwise(bounds)]


@pytest.mark.parametrize("lik", LIKELIHOODS, ids=["fast", "slow"])
def test_likelihood_kernel_equals_twin_and_keeps_the_batch_split_rule(lik: AnomalyLikelihood) -> None:
    @SETTINGS
    @given(batches())
    def check(case: tuple[np.ndarray, list[int]]) -> None:
        x, cuts = case
        s1, s2, s3 = (lik.init_state(x.shape[1]) for _ in range(3))
        fast, slow = lik.update(s1, x), lik.reference_update(s2, x)
        np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(s1, s2, rtol=1e-12, atol=1e-12)
        parts = [lik.update(s3, part) for part in _split(x, cuts)]
        whole = np.concatenate(parts) if parts else np.empty((0, x.shape[1]))
        assert _same(whole, fast) and _same(s3, s1)
        ok = fast[~np.isnan(fast)]
        assert ((ok >= 0.0) & (ok <= 1.0)).all()

    check()


@pytest.mark.parametrize("ev", EVENTS, ids=["short", "long"])
def test_event_kernel_equals_twin_and_keeps_the_batch_split_rule(ev: EventDetector) -> None:
    @SETTINGS
    @given(batches())
    def check(case: tuple[np.ndarray, list[int]]) -> None:
        x, cuts = case
        s1, s2, s3 = (ev.init_state(x.shape[1]) for _ in range(3))
        fast, slow = ev.update(s1, x), ev.reference_update(s2, x)
        for a, b in zip(fast, slow, strict=True):
            assert _same(np.asarray(a), np.asarray(b))
        assert _same(s1, s2)
        parts = [ev.update(s3, part) for part in _split(x, cuts)]
        assert _same(s3, s1)
        assert _same(np.concatenate([p.strength for p in parts]), fast.strength)
        assert _same(np.concatenate([p.active for p in parts]), fast.active)
        # The same events, wherever the batches were cut (each reported once, in the batch it ended).
        joined = sorted((int(o), int(a), int(p), int(e)) for part in parts
                        for o, a, p, e in zip(part.output, part.onset, part.peak, part.end, strict=True))
        assert joined == sorted(zip(fast.output.tolist(), fast.onset.tolist(), fast.peak.tolist(),
                                    fast.end.tolist(), strict=True))

    check()


def test_events_have_onset_peak_and_end_and_repeats_are_held_down() -> None:
    ev = EventDetector(level=2.0, off=1.0, refractory=3)
    x = np.array([0, 0, 3, 5, 4, 0.5, 0.5, 0.5, 0, 0, 0, 0, 0, 0, 2.5, np.nan, 0, 0, 0], float)[:, None]
    out = ev.update(ev.init_state(1), x)
    assert isinstance(out, Events)
    # First event: onset at 2, peak at 3 (value 5), quiet from 5 for 3 samples: it ends at 5.
    # Second: onset at 14, NaN at 15 skipped, three quiet samples 16..18: ends at 16.
    assert out.onset.tolist() == [2, 14] and out.peak.tolist() == [3, 14] and out.end.tolist() == [5, 16]
    assert out.peak_value.tolist() == [5.0, 2.5] and out.output.tolist() == [0, 0]
    assert out.active[:, 0].tolist() == [False, False] + [True] * 5 + [False] * 7 + [True] * 4 + [False]
    # Strength: new peaks only; 4 at t=4 is below the held 5; 3 samples after the peak the hold lapses.
    s = out.strength[:, 0]
    assert s[:7].tolist() == [0, 0, 3, 5, 0, 0, 0] and s[7] == 0.5
    assert math.isnan(s[15]) and s[14] == 2.5


def test_likelihood_is_calibrated_on_noise_and_flags_a_jump() -> None:
    rng = np.random.default_rng(5)
    lik = AnomalyLikelihood(short=1, alpha=1e-3, learn=200)
    raw = np.abs(rng.normal(size=(5000, 4)))
    raw[4000, 0] = 12.0
    out = lik.update(lik.init_state(4), raw)
    assert np.isnan(out[:200]).all() and not np.isnan(out[200:]).any()
    assert out[4000, 0] > 0.8  # far in the tail of the same output's scores
    normal = np.delete(out[200:], 3800, axis=0)
    assert np.quantile(normal, 0.99) < 0.3  # ordinary scores stay low, whatever their scale
    bigger = lik.update(lik.init_state(4), raw * 1e6)  # the same series in other units
    np.testing.assert_allclose(bigger, out, rtol=1e-6, atol=1e-9)


def test_post_processors_check_their_inputs() -> None:
    with pytest.raises(ValueError, match="short"):
        AnomalyLikelihood(short=0)
    with pytest.raises(ValueError, match=r"off: 3\.0 must be finite and not exceed level 2\.0"):
        EventDetector(level=2.0, off=3.0)
    with pytest.raises(ValueError, match="refractory"):
        EventDetector(refractory=0)
    lik, ev = AnomalyLikelihood(), EventDetector()
    with pytest.raises(ValueError, match=r"state: expected the float64 array of shape \(4, 2\)"):
        lik.update(lik.init_state(3), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="scores: expected a 2-D"):
        ev.update(ev.init_state(1), np.zeros(5))
    with pytest.raises(ValueError, match="n_outputs"):
        ev.init_state(0)


@pytest.mark.parametrize("dims", [3, 8, 20])
def test_pca_limits_scale_with_the_number_of_signals(dims: int) -> None:
    """On noise like the training data, the share of scores above 1.0 is about 1 - p for any dims."""
    rng = np.random.default_rng(dims)
    mix = rng.normal(size=(dims, dims))
    x = rng.normal(size=(6000, dims)) @ mix  # correlated signals
    det = PcaT2Q(dims=dims, lags=0, learn=2000, p=0.99)
    s = det.update(det.init_state(dims), x).scores[2000:, 0]
    share = float(np.mean(s > 1.0))
    assert 0.002 < share < 0.05, share


def test_pca_freezes_after_learning_so_a_fault_is_not_absorbed() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3000, 4))
    x[1000:, 1] += 6.0  # a lasting fault after the learning period
    det = PcaT2Q(dims=4, lags=1, learn=500, alarm=Alarm(on=2.0, off=1.0, min_on=3, min_off=5))
    out = det.update(det.init_state(4), x)
    assert not out.alarms[:1000].any()
    assert out.alarms[1010:, 0].mean() > 0.99  # still alarmed 2000 samples later


def test_pca_scale_floor_is_relative_to_the_signal() -> None:
    """A flat signal during learning (quantised, or stuck) gives moderate scores for a tiny change, not 1e9."""
    rng = np.random.default_rng(8)
    x = np.column_stack([rng.normal(size=1000), np.full(1000, 250.0), rng.normal(size=1000)])
    x[600:, 1] = 250.01  # one quantisation step of a 0.01-resolution sensor
    det = PcaT2Q(dims=3, lags=0, learn=500)
    s = det.update(det.init_state(3), x).scores[600:, 0]
    assert np.isfinite(s).all() and s.max() < 100.0
    x[800:, 1] = 400.0  # a real change of the flat signal is still flagged
    s = det.update(det.init_state(3), x).scores[800:, 0]
    assert s.min() > 10.0
