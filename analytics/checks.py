"""The detector conformance suite, shipped so that a new detector is held to the rules ours are.

`check_detector(MyDetector())` scores generated series (noise on mixed scales, gaps of NaN, steps and
spikes, constant tags) through the detector's verbs and returns a `DetectorReport` of the rules passed,
or raises `DetectorCheckError` (an AssertionError) naming every rule broken and where. Our tests run it
over every detector in `zhizao.analytics.DETECTORS`.

The rules, by name:

- verbs: a `Detector` with a `name`, `tags_per_output >= 1`, and `n_outputs(n) == n // tags_per_output`
- fresh state: `init_state(n)` is a finite C-contiguous float64 array of `state_shape(n)`, the same every time
- scores shape: `update` returns `Scored` with float64 scores and bool alarms of shape (time, outputs)
- learning period: the first sample of a fresh state gets a NaN score and no alarm
- kernel equals reference twin: `update` and `reference_update` agree (scores to `reference_rtol`, alarms
  exactly, states to 1e-9)
- batch split: scoring a series in one call equals scoring it in any split into consecutive batches (empty
  ones included), with the state carried from batch to batch: scores, alarms and final state bit for bit
- state round trip: the same holds when the state between batches goes through bytes (`tobytes`) and a list
  of floats (a PostgreSQL `float8[]`), as a caller persists it
- state lives in the array: two copies of one state score a batch identically, and two series scored with
  interleaved batches score as if each were alone (nothing is kept on the detector object)
- missing values: an output whose tags are all NaN gets a NaN score and keeps its alarm as it was; NaN rows
  inserted into a series leave the scores of the other samples unchanged (missing samples are skipped)
- tags independent: scoring many tags in one call equals scoring each output's tags alone
- empty batch: a batch of zero samples returns empty arrays and leaves the state alone
- bad input: ValueError for a 1-D batch, a state of the wrong shape or dtype, and `init_state(0)`
- output buffers: `update(state, x, out)` writes into `out` and checks its shape and dtype
- scores after warm-up: within `steps` samples of noise every output is scored (the learning period ends)

How well a detector detects (false alarms, delay) depends on its parameters and is measured elsewhere
(`zhizao bench kernels`); these rules are what every detector must keep whatever its parameters.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from zhizao.analytics.anomaly.base import F64, Detector, Scored

__all__ = ["RULES", "DetectorCheckError", "DetectorReport", "assert_batch_split", "assert_twin", "check_detector"]

RULES: tuple[str, ...] = (
    "verbs", "fresh state", "scores shape", "learning period", "kernel equals reference twin", "batch split",
    "state round trip", "state lives in the array", "missing values", "tags independent", "empty batch",
    "bad input", "output buffers", "scores after warm-up",
)  # fmt: skip
"""Every rule `check_detector` checks, in order."""

_GROUPS = 3  # outputs per generated series


@dataclass(frozen=True)
class DetectorReport:
    """The outcome of `check_detector`: every rule held, by name, in order."""

    detector: str
    passed: tuple[str, ...]

    def __str__(self) -> str:
        return f"detector {self.detector!r}: {len(self.passed)} rules hold ({', '.join(self.passed)})"


class DetectorCheckError(AssertionError):
    """A detector broke rules; `failures` holds (rule, what happened) pairs, `passed` the rules that held."""

    def __init__(self, detector: str, failures: list[tuple[str, str]], passed: list[str]) -> None:
        lines = [f"detector {detector!r} breaks {len(failures)} rule(s):"]
        lines += [f"  - {rule}: {why}" for rule, why in failures]
        super().__init__("\n".join(lines))
        self.detector = detector
        self.failures = tuple(failures)
        self.passed = tuple(passed)


class _Broken(Exception):
    """A rule does not hold; the message says where."""


def _expect(ok: bool, why: str) -> None:
    if not ok:
        raise _Broken(why)


def _difference(a: Scored, b: Scored, rtol: float = 0.0, names: tuple[str, str] = ("first", "second")) -> str | None:
    """None when `a` and `b` agree (NaN equals NaN; scores to `rtol`), else where they first differ."""
    for what, x, y in (("score", a.scores, b.scores), ("alarm", a.alarms, b.alarms)):
        if x.shape != y.shape:
            return f"{what} shapes differ: {x.shape} vs {y.shape}"
        if what == "score":
            same = (x == y) | (np.isnan(x) & np.isnan(y))
            if rtol:
                same |= np.isclose(x, y, rtol=rtol, atol=1e-9)
        else:
            same = x == y
        if not same.all():
            t, j = (int(i) for i in np.argwhere(~same)[0])
            return (f"{what}s differ at {int((~same).sum())} place(s), first at t={t}, output {j}: "
                    f"{x[t, j].item()!r} ({names[0]}) vs {y[t, j].item()!r} ({names[1]})")
    return None


def _concat(parts: Sequence[Scored], n_outputs: int) -> Scored:
    if not parts:
        return Scored(np.empty((0, n_outputs)), np.empty((0, n_outputs), np.bool_))
    return Scored(np.concatenate([p.scores for p in parts]), np.concatenate([p.alarms for p in parts]))


def _state_difference(a: F64, b: F64) -> str | None:
    if a.shape != b.shape:
        return f"state shapes differ: {a.shape} vs {b.shape}"
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if same.all():
        return None
    where = tuple(int(i) for i in np.argwhere(~same)[0])
    return (f"final states differ at {int((~same).sum())} entries, first at {where}: "
            f"{a[where].item()!r} vs {b[where].item()!r}")


def assert_batch_split(
    detector: Detector, x: NDArray[np.float64], cuts: Sequence[int],
    carry: Callable[[F64], F64] | None = None, label: str = "the series",
) -> None:
    """Assert that scoring `x` in one call equals scoring the batches between `cuts`; `carry` maps the state between batches.

    Raises AssertionError naming the rule ("batch split") and the first difference.
    """
    n_out = detector.n_outputs(x.shape[1])
    whole_state = detector.init_state(x.shape[1])
    whole = detector.update(whole_state, x)
    state = detector.init_state(x.shape[1])
    bounds = [0, *sorted(min(max(c, 0), len(x)) for c in cuts), len(x)]
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        parts.append(detector.update(state, x[lo:hi]))
        if carry is not None:
            state = carry(state)
    batches = ", ".join(f"[{lo}:{hi}]" for lo, hi in itertools.pairwise(bounds))
    if len(batches) > 120:
        batches = batches[:117] + "..."
    how = "with the state carried" if carry is None else "with the state persisted between batches"
    why = _difference(whole, _concat(parts, n_out), names=("one call", "batches")) or _state_difference(
        whole_state, state
    )
    if why:
        raise AssertionError(f"batch split: scoring {label} in one call differs from scoring it in consecutive "
                             f"batches {batches} {how}: {why}")


def assert_twin(detector: Detector, x: NDArray[np.float64], label: str = "the series") -> None:
    """Assert that `update` (the kernel) and `reference_update` (the twin) agree on `x` from a fresh state."""
    s1 = detector.init_state(x.shape[1])
    s2 = s1.copy()
    fast, slow = detector.update(s1, x), detector.reference_update(s2, x)
    why = _difference(fast, slow, detector.reference_rtol, ("update", "reference_update"))
    if why is None and not np.allclose(s1, s2, rtol=1e-9, atol=1e-9, equal_nan=True):
        where = tuple(int(i) for i in np.argwhere(~np.isclose(s1, s2, rtol=1e-9, atol=1e-9, equal_nan=True))[0])
        why = f"states differ, first at {where}: {s1[where].item()!r} vs {s2[where].item()!r}"
    if why:
        raise AssertionError(f"kernel equals reference twin: on {label}, update vs reference_update: {why}")


def _series(detector: Detector, steps: int, seed: int) -> dict[str, NDArray[np.float64]]:
    """The generated inputs, (time, tags) with `_GROUPS` outputs each."""
    rng = np.random.default_rng(seed)
    n = _GROUPS * detector.tags_per_output
    scale = 10.0 ** rng.uniform(-3, 3, n)
    offset = rng.uniform(-1e3, 1e3, n)
    noise = rng.normal(size=(steps, n)) * scale + offset
    gaps = noise.copy()
    gaps[rng.random(gaps.shape) < 0.1] = np.nan
    for start in rng.integers(0, steps, 5):
        gaps[start:start + int(rng.integers(1, 20))] = np.nan  # runs of missing rows
    gaps[:, -1] = np.nan  # a tag that never reports
    events = noise.copy()
    events[int(steps * 0.6):, 0] += 8 * scale[0]
    events[rng.integers(0, steps, 20), n // 2] += 30 * scale[n // 2]
    constant = np.repeat(np.round(offset)[None, :], steps, axis=0)
    constant[:, 0] = 0.0
    return {"noise": noise, "gaps": gaps, "steps and spikes": events, "constant": constant}


def check_detector(detector: Detector, *, steps: int = 1000, seed: int = 0) -> DetectorReport:
    """Check every rule (see RULES) on `detector`; DetectorCheckError names the rules broken.

    `steps` is the length of the generated series: it must exceed the detector's learning period.

    Example::

        from zhizao.analytics import EwmaZ
        from zhizao.analytics.checks import check_detector

        print(check_detector(EwmaZ(alpha=0.05, warmup=20)))
    """
    label = str(getattr(detector, "name", "") or type(detector).__name__)
    passed: list[str] = []
    failures: list[tuple[str, str]] = []
    try:
        _rule_verbs(detector)
        passed.append("verbs")
        _rule_fresh_state(detector)
        passed.append("fresh state")
    except (_Broken, AssertionError) as exc:
        failures.append(("fresh state" if passed else "verbs", str(exc)))
        raise DetectorCheckError(label, failures, passed) from None
    except Exception as exc:  # a detector that cannot even start: name the rule that found it
        failures.append(("fresh state" if passed else "verbs", f"{type(exc).__name__}: {exc}"))
        raise DetectorCheckError(label, failures, passed) from exc
    series = _series(detector, steps, seed)
    rng = np.random.default_rng(seed + 1)
    rules: list[tuple[str, Callable[[], None]]] = [
        ("scores shape", lambda: _rule_scores_shape(detector, series["noise"])),
        ("learning period", lambda: _rule_learning_period(detector, series["noise"])),
        ("kernel equals reference twin", lambda: _rule_twin(detector, series)),
        ("batch split", lambda: _rule_batch_split(detector, series, rng)),
        ("state round trip", lambda: _rule_round_trip(detector, series)),
        ("state lives in the array", lambda: _rule_no_hidden_state(detector, series)),
        ("missing values", lambda: _rule_missing(detector, series, rng)),
        ("tags independent", lambda: _rule_independent(detector, series)),
        ("empty batch", lambda: _rule_empty(detector, series["noise"])),
        ("bad input", lambda: _rule_bad_input(detector)),
        ("output buffers", lambda: _rule_out(detector, series["noise"])),
        ("scores after warm-up", lambda: _rule_scores_after_warm_up(detector, series["noise"], steps)),
    ]
    for rule, run in rules:
        try:
            run()
        except _Broken as exc:
            failures.append((rule, str(exc)))
        except AssertionError as exc:  # from assert_batch_split / assert_twin: the message names the rule
            failures.append((rule, str(exc).removeprefix(f"{rule}: ")))
        except Exception as exc:  # noqa: BLE001 - a crash under a rule breaks it: report it, check the rest
            failures.append((rule, f"{type(exc).__name__}: {exc}"))
        else:
            passed.append(rule)
    if failures:
        raise DetectorCheckError(label, failures, passed)
    return DetectorReport(label, tuple(passed))


def _rule_verbs(det: Detector) -> None:
    _expect(isinstance(det, Detector), f"{type(det).__name__} is not a zhizao.analytics.anomaly.Detector")
    _expect(isinstance(det.name, str) and bool(det.name), f"name must be a non-empty str, got {det.name!r}")
    g = det.tags_per_output
    _expect(isinstance(g, int) and g >= 1, f"tags_per_output must be an int >= 1, got {g!r}")
    for n in (g, 4 * g):
        _expect(det.n_outputs(n) == n // g, f"n_outputs({n}) is {det.n_outputs(n)}, expected {n // g}")


def _rule_fresh_state(det: Detector) -> None:
    n = _GROUPS * det.tags_per_output
    a, b = det.init_state(n), det.init_state(n)
    _expect(isinstance(a, np.ndarray) and a.dtype == np.float64 and a.flags.c_contiguous,
            f"init_state({n}) must be a C-contiguous float64 ndarray, got {type(a).__name__} "
            f"{getattr(a, 'dtype', '')}")
    _expect(a.shape == tuple(det.state_shape(n)), f"init_state({n}).shape {a.shape} != state_shape {det.state_shape(n)}")
    _expect(bool(np.isfinite(a).all()), f"init_state({n}) holds non-finite values")
    _expect(a is not b and np.array_equal(a, b), f"init_state({n}) must return a new, identical array each call")


def _rule_scores_shape(det: Detector, x: F64) -> None:
    n_out = det.n_outputs(x.shape[1])
    for verb in (det.update, det.reference_update):
        out = verb(det.init_state(x.shape[1]), x[:50])
        _expect(isinstance(out, Scored), f"{verb.__name__} returned {type(out).__name__}, not Scored")
        _expect(out.scores.dtype == np.float64 and out.scores.shape == (len(x[:50]), n_out),
                f"{verb.__name__}: scores {out.scores.dtype} {out.scores.shape}, expected float64 {(50, n_out)}")
        _expect(out.alarms.dtype == np.bool_ and out.alarms.shape == (len(x[:50]), n_out),
                f"{verb.__name__}: alarms {out.alarms.dtype} {out.alarms.shape}, expected bool {(50, n_out)}")


def _rule_learning_period(det: Detector, x: F64) -> None:
    out = det.update(det.init_state(x.shape[1]), x[:1])
    _expect(bool(np.isnan(out.scores).all()) and not out.alarms.any(),
            f"the first sample of a fresh state was scored {out.scores[0].tolist()} (alarms "
            f"{out.alarms[0].tolist()}); nothing has been learnt yet, so expected NaN and no alarm")


def _rule_twin(det: Detector, series: dict[str, F64]) -> None:
    for name, x in series.items():
        assert_twin(det, x, f"{name!r}")


def _rule_batch_split(det: Detector, series: dict[str, F64], rng: np.random.Generator) -> None:
    for name, x in series.items():
        n = len(x)
        assert_batch_split(det, x, [int(c) for c in rng.integers(0, n + 1, 6)], label=f"{name!r}")
        assert_batch_split(det, x, [n // 2, n // 2], label=f"{name!r}")  # an empty batch in the middle
        assert_batch_split(det, x, list(range(1, min(n, 400))), label=f"{name!r} one sample at a time")


def _through_bytes(state: F64) -> F64:
    return np.frombuffer(state.tobytes(), np.float64).reshape(state.shape).copy()


def _through_list(state: F64) -> F64:
    return np.array(state.tolist(), np.float64)


def _rule_round_trip(det: Detector, series: dict[str, F64]) -> None:
    for name, x in series.items():
        n = len(x)
        for how, carry in (("bytes", _through_bytes), ("a list of floats", _through_list)):
            try:
                assert_batch_split(det, x, [n // 3, 2 * n // 3], carry, label=f"{name!r}")
            except AssertionError as exc:
                raise _Broken(f"state persisted as {how}: {str(exc).removeprefix('batch split: ')}") from None


def _rule_no_hidden_state(det: Detector, series: dict[str, F64]) -> None:
    x = series["steps and spikes"]
    half = len(x) // 2
    state = det.init_state(x.shape[1])
    det.update(state, x[:half])
    a, b = state.copy(), state.copy()
    why = _difference(det.update(a, x[half:]), det.update(b, x[half:]), names=("copy 1", "copy 2"))
    why = why or _state_difference(a, b)
    _expect(why is None, f"two copies of one state scored the same batch differently: {why}")
    streams = [series["noise"], series["steps and spikes"]]
    alone = [det.update(det.init_state(s.shape[1]), s) for s in streams]
    states = [det.init_state(s.shape[1]) for s in streams]
    parts: list[list[Scored]] = [[], []]
    for lo in range(0, len(x), 50):
        for k, s in enumerate(streams):
            parts[k].append(det.update(states[k], s[lo:lo + 50]))
    for k in range(2):
        why = _difference(alone[k], _concat(parts[k], det.n_outputs(x.shape[1])), names=("alone", "interleaved"))
        _expect(why is None, f"two series scored with interleaved batches differ from each scored alone: {why}")


def _rule_missing(det: Detector, series: dict[str, F64], rng: np.random.Generator) -> None:
    x = series["gaps"]
    g = det.tags_per_output
    out = det.update(det.init_state(x.shape[1]), x)
    missing = np.isnan(x).reshape(len(x), -1, g).all(axis=2)
    scored = missing & ~np.isnan(out.scores)
    if scored.any():
        t, j = (int(i) for i in np.argwhere(scored)[0])
        raise _Broken(f"output {j} at t={t} has only NaN inputs but was scored {out.scores[t, j].item()!r}")
    before = np.vstack([np.zeros((1, missing.shape[1]), np.bool_), out.alarms[:-1]])
    moved = missing & (out.alarms != before)
    if moved.any():
        t, j = (int(i) for i in np.argwhere(moved)[0])
        raise _Broken(f"output {j} at t={t} has only NaN inputs but its alarm changed to {bool(out.alarms[t, j])}")
    clean = series["noise"]
    inserted = np.sort(rng.choice(len(clean), len(clean) // 10, replace=False))
    holes = np.insert(clean, inserted, np.nan, axis=0)
    keep = np.ones(len(holes), np.bool_)
    keep[inserted + np.arange(len(inserted))] = False
    with_holes = det.update(det.init_state(x.shape[1]), holes)
    plain = det.update(det.init_state(x.shape[1]), clean)
    why = _difference(Scored(with_holes.scores[keep], plain.alarms), Scored(plain.scores, plain.alarms),
                      names=("with NaN rows", "without"))
    _expect(why is None, f"inserting NaN rows changed the scores of the other samples (missing samples must be "
                         f"skipped): {why}")
    _expect(bool(np.isnan(with_holes.scores[~keep]).all()), "the inserted NaN rows were scored")


def _rule_independent(det: Detector, series: dict[str, F64]) -> None:
    g = det.tags_per_output
    for name in ("noise", "gaps"):
        x = series[name]
        together = det.update(det.init_state(x.shape[1]), x)
        alone = [det.update(det.init_state(g), np.ascontiguousarray(x[:, j * g:(j + 1) * g]))
                 for j in range(x.shape[1] // g)]
        apart = Scored(np.hstack([a.scores for a in alone]), np.hstack([a.alarms for a in alone]))
        why = _difference(together, apart, names=("together", "alone"))
        _expect(why is None, f"on {name!r}, scoring all tags in one call differs from scoring each output's "
                             f"tags alone: {why}")


def _rule_empty(det: Detector, x: F64) -> None:
    state = det.init_state(x.shape[1])
    det.update(state, x[:30])
    before = state.copy()
    out = det.update(state, x[:0])
    shape = (0, det.n_outputs(x.shape[1]))
    _expect(out.scores.shape == shape and out.alarms.shape == shape,
            f"an empty batch returned scores {out.scores.shape} and alarms {out.alarms.shape}, expected {shape}")
    _expect(_state_difference(before, state) is None, "an empty batch changed the state")


def _raises_value_error(what: str, call: Callable[[], object]) -> None:
    try:
        call()
    except ValueError:
        return
    raise _Broken(f"{what}: expected ValueError, nothing was raised")


def _rule_bad_input(det: Detector) -> None:
    g = det.tags_per_output
    state = det.init_state(2 * g)
    _raises_value_error("a 1-D batch", lambda: det.update(state, np.zeros(5)))
    _raises_value_error("a state of the wrong shape", lambda: det.update(state, np.zeros((5, 3 * g))))
    _raises_value_error("a float32 state", lambda: det.update(state.astype(np.float32), np.zeros((5, 2 * g))))
    _raises_value_error("init_state(0)", lambda: det.init_state(0))
    if g > 1:
        _raises_value_error(f"{2 * g + 1} tags with groups of {g}", lambda: det.update(state, np.zeros((5, 2 * g + 1))))


def _rule_out(det: Detector, x: F64) -> None:
    x = x[:200]
    shape = (len(x), det.n_outputs(x.shape[1]))
    out = Scored(np.empty(shape), np.empty(shape, np.bool_))
    fresh = det.update(det.init_state(x.shape[1]), x)
    reused = det.update(det.init_state(x.shape[1]), x, out)
    _expect(reused.scores is out.scores and reused.alarms is out.alarms, "update(..., out) did not return `out`")
    why = _difference(fresh, reused, names=("fresh", "into out"))
    _expect(why is None, f"results written into `out` differ from fresh ones: {why}")
    _raises_value_error("an `out` of the wrong shape",
                        lambda: det.update(det.init_state(x.shape[1]), x, Scored(np.empty((3, 3)), out.alarms)))


def _rule_scores_after_warm_up(det: Detector, x: F64, steps: int) -> None:
    out = det.update(det.init_state(x.shape[1]), x)
    tail = out.scores[-max(1, steps // 10):]
    unscored = sorted({int(j) for j in np.argwhere(np.isnan(tail))[:, 1]})
    _expect(not unscored, f"outputs {unscored} are still unscored in the last {len(tail)} of {steps} samples of "
                          "noise; pass steps= longer than the learning period")
