"""The shipped detector suite (`check_detector`) over every detector in DETECTORS, plus detector-specific tests.

`zhizao.analytics.checks` holds the rules every detector keeps; here they also run on short random batches
(hypothesis) and against detectors that break them on purpose.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from zhizao.analytics import DETECTORS
from zhizao.analytics.anomaly import (
    Alarm,
    Cusum,
    Detector,
    EwmaZ,
    MahalanobisT2,
    PcaT2Q,
    RobustZ,
    Scored,
    ValueNovelty,
)
from zhizao.analytics.anomaly.base import F64, reference_alarm
from zhizao.analytics.checks import RULES, DetectorCheckError, assert_batch_split, assert_twin, check_detector

# Small warm-ups and windows so that short random batches reach the scoring phase.
SMALL: list[Detector] = [
    EwmaZ(alpha=0.2, warmup=3, alarm=Alarm(on=2.0, off=1.0, min_on=2, min_off=2)),
    EwmaZ(alpha=0.2, warmup=3, gate=1.5, alarm=Alarm(on=2.0, off=1.0, min_on=2, min_off=2), name="ewma_z_gated"),
    Cusum(warmup=3, k=0.3, cap=4.0, alarm=Alarm(on=2.0, off=0.5, min_on=1, min_off=2)),
    Cusum(warmup=3, k=0.3, cap=4.0, side=-1, alarm=Alarm(on=2.0, off=0.5, min_on=1, min_off=2), name="cusum_down"),
    Cusum(warmup=3, k=0.3, cap=4.0, side=1, floor=0.5, floor_margin=0.3,
          alarm=Alarm(on=2.0, off=0.5, min_on=1, min_off=2), name="cusum_up_floor"),
    RobustZ(window=4, alarm=Alarm(on=2.0, off=1.0, min_on=1, min_off=1)),
    MahalanobisT2(dims=2, alpha=0.3, warmup=3, alarm=Alarm(on=6.0, off=3.0, min_on=1, min_off=2)),
    PcaT2Q(dims=2, lags=1, learn=4, relearn=0.05, alarm=Alarm(on=1.0, off=0.5, min_on=1, min_off=2)),
    ValueNovelty(capacity=4, warmup=3, alarm=Alarm(on=0.5, off=0.1, min_on=1, min_off=2)),
    ValueNovelty(capacity=4, warmup=8, period_acf=0.2, alarm=Alarm(on=0.5, off=0.1, min_on=1, min_off=2),
                 name="value_novelty_seasonal"),
]
SMALL_IDS = [d.name for d in SMALL]
IDS = [cls.__name__ for cls in DETECTORS]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

values = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.just(np.nan), st.sampled_from([0.0, 1.0, 5.0]))


@st.composite
def batch(draw: Any, group: int) -> np.ndarray:
    n_t = draw(st.integers(0, 30))
    n_tags = group * draw(st.integers(1, 3))
    return draw(hnp.arrays(np.float64, (n_t, n_tags), elements=values))


def test_every_detector_is_listed() -> None:
    assert set(DETECTORS) == {EwmaZ, Cusum, RobustZ, MahalanobisT2, PcaT2Q, ValueNovelty}
    assert {type(d) for d in SMALL} == set(DETECTORS)
    assert len(set(SMALL_IDS)) == len(SMALL)


@pytest.mark.parametrize("cls", DETECTORS, ids=IDS)
def test_every_detector_keeps_every_rule(cls: type[Detector]) -> None:
    report = check_detector(cls())
    assert report.passed == RULES


@pytest.mark.parametrize("det", SMALL, ids=SMALL_IDS)
def test_short_warm_ups_keep_every_rule(det: Detector) -> None:
    assert check_detector(det, steps=300).passed == RULES


@pytest.mark.parametrize("det", SMALL, ids=SMALL_IDS)
def test_kernel_equals_reference_twin_on_random_batches(det: Detector) -> None:
    @SETTINGS
    @given(batch(det.tags_per_output))
    def check(x: np.ndarray) -> None:
        assert_twin(det, x)

    check()


@pytest.mark.parametrize("det", SMALL, ids=SMALL_IDS)
def test_batch_split_on_random_batches(det: Detector) -> None:
    @SETTINGS
    @given(batch(det.tags_per_output), st.lists(st.integers(0, 30), max_size=4))
    def check(x: np.ndarray, cuts: list[int]) -> None:
        assert_batch_split(det, x, cuts)

    check()


@dataclass(frozen=True)
class ForgetfulEwma(EwmaZ):
    """Breaks the batch-split rule: starts from nothing at every batch (kernel and twin alike)."""

    name: str = "forgetful_ewma"

    def update(self, state: F64, x: Any, out: Scored | None = None) -> Scored:
        state[:] = 0.0
        return super().update(state, x, out)

    def reference_update(self, state: F64, x: Any) -> Scored:
        state[:] = 0.0
        return super().reference_update(state, x)


@dataclass(frozen=True)
class HiddenDelta(Detector):
    """|x - previous x|, but the previous values are kept on the object instead of in the state array."""

    alarm: Alarm = field(default_factory=lambda: Alarm(on=1e9, off=1e8))
    name: str = "hidden_delta"
    last: dict[int, float] = field(default_factory=dict, compare=False, hash=False)

    def state_shape(self, n_tags: int) -> tuple[int, int]:
        return (3, n_tags)  # the alarm fields only: the bug

    def _score(self, state: F64, x: F64) -> Scored:
        scores = np.full(x.shape, np.nan)
        for t in range(x.shape[0]):
            for j in range(x.shape[1]):
                if not np.isnan(x[t, j]):
                    if j in self.last:
                        scores[t, j] = abs(x[t, j] - self.last[j])
                    self.last[j] = float(x[t, j])
        return Scored(scores, reference_alarm(scores, self.alarm, state[0], state[1], state[2]))

    def _kernel(self, state: F64, x: F64, scores: F64, alarms: NDArray[np.bool_]) -> None:
        scores[:], alarms[:] = self._score(state, x)

    def _reference(self, state: F64, x: F64) -> Scored:
        return self._score(state, x)


@dataclass(frozen=True)
class ZeroFillEwma(EwmaZ):
    """Breaks the missing-values rule: scores a missing sample as if it were 0."""

    name: str = "zero_fill_ewma"

    def update(self, state: F64, x: Any, out: Scored | None = None) -> Scored:
        return super().update(state, np.nan_to_num(np.asarray(x, np.float64)), out)

    def reference_update(self, state: F64, x: Any) -> Scored:
        return super().reference_update(state, np.nan_to_num(np.asarray(x, np.float64)))


def test_a_detector_that_resets_each_batch_breaks_the_batch_split_rule() -> None:
    with pytest.raises(DetectorCheckError) as info:
        check_detector(ForgetfulEwma(alpha=0.05, warmup=20))
    failed = dict(info.value.failures)
    assert {"batch split", "state round trip"} <= set(failed)
    assert "- batch split: scoring 'noise' in one call differs from scoring it in consecutive batches [" in str(
        info.value
    )
    assert "with the state carried" in failed["batch split"]
    assert "kernel equals reference twin" in info.value.passed


def test_a_detector_with_state_on_the_object_breaks_the_state_rule() -> None:
    with pytest.raises(DetectorCheckError) as info:
        check_detector(HiddenDelta())
    failed = dict(info.value.failures)
    assert "state lives in the array" in failed
    assert "two copies of one state scored the same batch differently" in failed["state lives in the array"]


def test_a_detector_that_fills_gaps_with_zeros_breaks_the_missing_values_rule() -> None:
    with pytest.raises(DetectorCheckError) as info:
        check_detector(ZeroFillEwma(alpha=0.05, warmup=20))
    failed = dict(info.value.failures)
    assert set(failed) == {"missing values"}
    assert "has only NaN inputs but was scored" in failed["missing values"]


def test_not_a_detector_fails_the_verbs_rule() -> None:
    with pytest.raises(DetectorCheckError, match=r"- verbs: object is not a zhizao.analytics.anomaly.Detector"):
        check_detector(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", DETECTORS, ids=IDS)
def test_flags_a_large_step_and_stays_quiet_before_it(cls: type[Detector]) -> None:
    """With default parameters: no alarm on the noise before the step, an alarm within 10 samples of it."""
    det = cls()
    rng = np.random.default_rng(2)  # false-alarm rates are measured in the kernel benchmark, not here
    n_tags = 3 * det.tags_per_output
    x = rng.normal(size=(600, n_tags))
    x[500:] += 20.0
    out = det.update(det.init_state(n_tags), x)
    assert not out.alarms[:500].any()
    assert out.alarms[500:510].any(axis=0).all()


@pytest.mark.parametrize("det", SMALL, ids=SMALL_IDS)
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
    with pytest.raises(ValueError, match=r"side: must be 0 \(both\), 1 \(rises only\) or -1 \(falls only\), got 2"):
        Cusum(side=2)
    with pytest.raises(ValueError, match=r"floor: 0\.3 needs side 1"):
        Cusum(floor=0.3)
    with pytest.raises(ValueError, match="floor_margin"):
        Cusum(side=1, floor=0.3, floor_margin=0.0)
    with pytest.raises(ValueError, match="window"):
        RobustZ(window=2)
    with pytest.raises(ValueError, match="dims"):
        MahalanobisT2(dims=0)
    with pytest.raises(ValueError, match="lags"):
        PcaT2Q(lags=-1)
    with pytest.raises(ValueError, match="relearn"):
        PcaT2Q(relearn=1.0)
    with pytest.raises(ValueError, match="capacity"):
        ValueNovelty(capacity=1)
    with pytest.raises(ValueError, match="resolution"):
        ValueNovelty(resolution=1.0)
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


@pytest.mark.parametrize("det", SMALL, ids=SMALL_IDS)
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


def test_the_adding_a_detector_example_runs_and_passes(tmp_path: Path) -> None:
    readme = Path(__file__).parents[2] / "analytics" / "anomaly" / "README.md"
    code = re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)[-1]
    (tmp_path / "example.py").write_text(code, encoding="utf-8")
    out = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"detector 'running_z': {len(RULES)} rules hold (verbs, ")


def test_value_novelty_reports_a_new_level_once_and_is_scale_free() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(3000, 1))
    x[2000:] += 10.0  # a new level: novel at first, known soon after
    det = ValueNovelty(capacity=64, warmup=200)
    s = det.update(det.init_state(1), x).scores[:, 0]
    assert s[2000] > 0.5
    assert np.nanmax(s[2100:]) < 0.1  # the new level has been learnt
    assert np.nanquantile(s[200:2000], 0.99) < 0.05
    other = det.update(det.init_state(1), x * 1e3 - 5e3).scores[:, 0]  # other units and an offset
    np.testing.assert_allclose(other, s, rtol=1e-6, atol=1e-6)
    flat = np.full((500, 1), 250.0)
    flat[300:] = 250.01  # one step of a quantised sensor after a flat history: small, not 1e9
    assert np.nanmax(det.update(det.init_state(1), flat).scores) < 0.1


def test_seasonal_value_novelty_flags_a_normal_value_at_the_wrong_time() -> None:
    """A daily cycle (period 48): a stop at the hour the machine runs is a value it shows every night, so plain
    value novelty misses it; the seasonal channel finds the period in the warm-up and reports the stop."""
    rng = np.random.default_rng(11)
    t = np.arange(48 * 40)
    x = (10.0 + 8.0 * np.sin(2 * np.pi * t / 48) + rng.normal(0.0, 0.3, t.size))[:, None]
    x[1500:1506] = 2.0 + rng.normal(0.0, 0.3, (6, 1))  # near the cycle's trough, at its peak time (1500 % 48 = 12)
    plain = ValueNovelty(capacity=64, warmup=48 * 8)
    seasonal = ValueNovelty(capacity=64, warmup=48 * 8, period_acf=0.8)
    state = seasonal.init_state(1)
    a = plain.update(plain.init_state(1), x).scores[:, 0]
    b = seasonal.update(state, x).scores[:, 0]
    assert int(state[0, 2 * (2 + 64)]) == 48  # the period found in the warm-up
    assert np.nanmax(a[1500:1506]) < 0.1
    assert np.nanmax(b[1500:1506]) > 0.5
    assert np.nanquantile(b[48 * 8:1500], 0.99) < 0.1  # the cycle itself is normal
    aperiodic = rng.normal(size=(2000, 1))  # no period: the same scores as the plain detector
    np.testing.assert_array_equal(seasonal.update(seasonal.init_state(1), aperiodic).scores,
                                  plain.update(plain.init_state(1), aperiodic).scores)


def test_a_gated_ewma_keeps_learning_normal_data_but_not_a_fault() -> None:
    rng = np.random.default_rng(10)
    x = rng.normal(size=(3000, 1)) + np.linspace(0.0, 2.0, 3000)[:, None]  # a slow drift of the normal level
    x[2000:] += 8.0  # a lasting fault
    plain = EwmaZ(alpha=0.01, warmup=100)
    gated = EwmaZ(alpha=0.01, warmup=100, gate=4.0)
    a = plain.update(plain.init_state(1), x).alarms[:, 0]
    b = gated.update(gated.init_state(1), x).alarms[:, 0]
    assert not b[100:2000].any()  # the drift is followed: no false alarm before the fault
    assert b[2000:].all()  # the fault is never learnt
    assert not a[2500:].any()  # while the ungated one has absorbed it
    with pytest.raises(ValueError, match="gate"):
        EwmaZ(gate=0.0)


def _tool_wear(seed: int, cycles: int = 6, life: int = 240, rise: float = 16.0) -> tuple[np.ndarray, np.ndarray]:
    """A spindle load over tool lives: noise 2 on 50, rising by `rise` over each life, back at each change; the
    first life starts half-worn (the detector is deployed on a part-worn tool); and each sample's wear (0..1)."""
    rng = np.random.default_rng(seed)
    wear = np.concatenate([np.linspace(0.5, 1.0, life // 2, endpoint=False)]
                          + [np.linspace(0.0, 1.0, life, endpoint=False)] * cycles)
    return 50.0 + rise * wear + rng.normal(0.0, 2.0, wear.size), wear


def test_cusum_floor_alarms_each_tool_in_its_worn_half() -> None:
    """Learnt on a part-worn tool, a frozen two-sided CUSUM sits in alarm over the fresh tools (below its
    baseline) and rises late; rises-only with a floor follows the baseline down to the fresh tool and alarms
    once per tool, in the second half of its life."""
    alarm = Alarm(on=10.0, off=4.0, min_on=1, min_off=5)
    for seed in range(3):
        x, wear = _tool_wear(seed)
        floor = Cusum(warmup=60, k=5.0, side=1, floor=0.3, alarm=alarm)
        frozen = Cusum(warmup=60, k=1.0, alarm=alarm)
        a_floor = floor.update(floor.init_state(1), x[:, None]).alarms[:, 0]
        a_frozen = frozen.update(frozen.init_state(1), x[:, None]).alarms[:, 0]
        raised = np.flatnonzero(a_floor[1:] & ~a_floor[:-1]) + 1
        assert raised.size == 6 and (wear[raised] > 0.5).all() and (wear[raised] < 0.95).all(), (seed, wear[raised])
        fresh = (wear > 0.05) & (wear < 0.2)  # a fresh tool, a dozen samples after its change
        assert a_frozen[fresh].mean() > 0.5  # the frozen baseline: "anomalous" fresh tools
        assert not a_floor[fresh].any()
