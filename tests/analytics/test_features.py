"""Vibration features: kernel equals the NumPy twin; known values on simple signals; bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from zhizao.analytics.features import reference_vibration_features, vibration_features

values = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.just(np.nan), st.just(0.0))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6), st.integers(0, 4), st.integers(1, 5), st.data())
def test_kernel_equals_reference(length: int, n_win: int, n_tags: int, data: st.DataObject) -> None:
    x = data.draw(hnp.arrays(np.float64, (length * n_win, n_tags), elements=values))
    got, want = vibration_features(x, length), reference_vibration_features(x, length)
    for name, a, b in zip(got._fields, got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=name)


def test_sine_and_impulses() -> None:
    t = np.arange(4000)
    sine = np.sin(2 * np.pi * t / 40)
    impulses = np.where(t % 400 == 0, 10.0, 0.0) + 0.01 * sine
    f = vibration_features(np.stack([sine, impulses], axis=1), 4000)
    assert f.rms[0, 0] == pytest.approx(1 / np.sqrt(2), rel=1e-9)
    assert f.crest[0, 0] == pytest.approx(np.sqrt(2), rel=1e-6)
    assert f.kurtosis[0, 0] == pytest.approx(1.5, rel=1e-6)
    assert f.kurtosis[0, 1] > 50  # impulsive: bearing-fault-like


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="not a whole number of windows of length 4"):
        vibration_features(np.zeros((10, 2)), 4)
    with pytest.raises(ValueError, match="length"):
        vibration_features(np.zeros((10, 2)), 1)
    with pytest.raises(ValueError, match="2-D"):
        vibration_features(np.zeros(8), 4)
