"""`zhizao bench detect`: our NAB and SKAB scoring against the benchmarks' published figures, and the command.

The NAB samples under tests/bench/data are extracts of NAB (SOURCE.md there says which). SKAB's data is
GPL-3.0, so its tests use files written here in SKAB's layout and format (`skab_like`), not SKAB's own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from zhizao.bench import nab, skab
from zhizao.cli import cli

DATA = Path(__file__).parent / "data"
NAB = DATA / "nab"
COLUMNS = ("datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;Thermocouple;Voltage;"
           "Volume Flow RateRMS;anomaly;changepoint")


def write_skab_like(root: Path) -> Path:
    """Two files laid out like a SKAB checkout (data/other/1.csv, data/valve1/1.csv): `;`-separated, 8 sensor
    columns with noise around SKAB-like levels, one anomalous segment after the 400 training rows."""
    rng = np.random.default_rng(11)
    levels = np.array([0.027, 0.039, 1.1, 0.055, 75.5, 25.8, 230.0, 32.0])
    for name, rows, (lo, hi) in (("other", 745, (520, 640)), ("valve1", 1145, (700, 980))):
        values = levels * (1 + 0.02 * rng.standard_normal((rows, 8)))
        anomaly = np.zeros(rows)
        anomaly[lo:hi] = 1.0
        values[lo:hi, 2] *= 1.3  # the motor current rises in the anomalous segment
        lines = [COLUMNS]
        for i in range(rows):
            stamp = f"2020-03-09 {10 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
            change = 1.0 if i in (lo, hi) else 0.0
            lines.append(";".join([stamp, *(f"{v:.6g}" for v in values[i]), f"{anomaly[i]:.1f}", f"{change:.1f}"]))
        path = root / "data" / name / "1.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def skab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_skab_like(tmp_path_factory.mktemp("skab"))

# NAB's published per-file scores of the Numenta HTM detector at its threshold 0.542187690735
# (results/numenta/numenta_{standard,reward_low_FN_rate}_scores.csv): score, TP rows, FP rows.
HTM_THRESHOLD = 0.542187690735
HTM_PUBLISHED = {
    "artificialWithAnomaly/art_daily_jumpsup.csv": (0.86067182427, 5, 0),
    "realKnownCause/ec2_request_latency_system_failure.csv": (1.70586905384, 7, 3),
    "artificialNoAnomaly/art_noisy.csv": (0.0, 0, 0),
}


def _htm() -> dict[str, tuple[nab.Series, np.ndarray]]:
    return {s.name: (s, sc) for s, sc in nab.published_results(NAB, "numenta")}


@pytest.mark.parametrize("profile", ["standard", "reward_low_FN_rate"])
def test_nab_scoring_matches_nabs_published_per_file_scores(profile: str) -> None:
    cost = nab.load_profiles(NAB)[profile]
    for name, (series, scores) in _htm().items():
        sweep = nab.sweep_rows([series])
        raw, tp, fp = nab.score_at(sweep, scores[series.probation:], cost, HTM_THRESHOLD)
        want, want_tp, want_fp = HTM_PUBLISHED[name]
        assert (tp, fp) == (want_tp, want_fp), name
        assert raw == pytest.approx(want, abs=1e-9), name


def test_nab_windows_and_probation_follow_nabs_rules() -> None:
    corpus = {s.name: s for s in nab.load_corpus(NAB)}
    jumps = corpus["artificialWithAnomaly/art_daily_jumpsup.csv"]
    assert len(jumps.values) == 4032 and jumps.probation == 604  # floor(0.15 n); 750 at most
    lo, hi = jumps.windows[0]
    assert str(jumps.timestamps[lo]) == "2014-04-10T16:15:00" and str(jumps.timestamps[hi]) == "2014-04-12T01:45:00"
    assert nab.probationary_length(10_000) == 750
    assert corpus["artificialNoAnomaly/art_noisy.csv"].windows == ()


def test_nab_optimiser_finds_the_best_threshold_of_the_sweep() -> None:
    pairs = list(nab.published_results(NAB, "numenta"))
    corpus = [s for s, _ in pairs]
    flat = np.concatenate([sc[s.probation:] for s, sc in pairs])
    sweep = nab.sweep_rows(corpus)
    for cost in nab.load_profiles(NAB).values():
        thr, best = nab.optimise(sweep, flat, cost)
        assert nab.score_at(sweep, flat, cost, thr)[0] == pytest.approx(best, abs=1e-9)
        # No threshold does better: every distinct score (and "never") scored one by one.
        for t in [*np.unique(flat)[::7], 1.1]:
            assert nab.score_at(sweep, flat, cost, float(t))[0] <= best + 1e-9


def test_nab_normalisation_null_is_zero_and_perfect_is_one_hundred() -> None:
    corpus = nab.load_corpus(NAB)
    profiles = nab.load_profiles(NAB)
    null = nab.score_corpus(corpus, [np.full(len(s.values), 0.5) for s in corpus], profiles)
    assert [r.normalised for r in null] == [0.0, 0.0, 0.0]
    perfect = []
    for s in corpus:
        sc = np.zeros(len(s.values))
        for lo, _hi in s.windows:
            sc[lo] = 1.0  # a detection at the left edge of every window: the most a window gives
        perfect.append(sc)
    res = nab.score_corpus(corpus, perfect, profiles)
    assert all(r.normalised == pytest.approx(100.0) and r.detected_windows == 4 for r in res)


def test_skab_split_and_binary_metrics(skab_dir: Path) -> None:
    corpus = skab.load_corpus(skab_dir)
    assert [e.name for e in corpus] == ["other/1.csv", "valve1/1.csv"]
    assert all(e.values.shape[1] == 8 and len(e.test_labels) == len(e.values) - 400 for e in corpus)
    y = [np.array([0, 0, 1, 1, 1, 0], bool)]
    p = [np.array([1, 0, 1, 1, 0, 0], bool)]
    m = skab.binary_metrics(y, p)
    assert (m.tp, m.tn, m.fp, m.fn) == (2, 2, 1, 1)
    assert m.f1 == pytest.approx(2 / 3) and m.far == pytest.approx(100 / 3) and m.mar == pytest.approx(100 / 3)
    every = skab.binary_metrics([e.test_labels for e in corpus], [np.ones_like(e.test_labels) for e in corpus])
    assert every.far == 100.0 and every.mar == 0.0


def test_bench_detect_runs_on_the_samples_and_writes_json(skab_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "detect.json"
    result = CliRunner().invoke(cli, ["bench", "detect", "--nab", str(NAB), "--skab", str(skab_dir), "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["bench"] == "detect"
    for row in doc["figures"]["nab"]:
        assert row["files"] == 3 and row["windows"] == 4
        assert all(-100.0 <= row[p] <= 100.0 for p in nab.PROFILES)
    for row in doc["figures"]["skab"]:
        assert row["files"] == 2 and 0.0 <= row["f1"] <= 1.0 and math.isfinite(row["far_pct"])
        assert row["tp"] + row["tn"] + row["fp"] + row["fn"] == sum(
            len(e.values) - 400 for e in skab.load_corpus(skab_dir))
    assert "published: ARTime" in result.output and "published: Conv-AE" in result.output
    assert "ours: pca_t2q" in result.output


def test_bench_detect_names_a_directory_that_is_not_a_checkout(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", "detect", "--nab", str(tmp_path)])
    assert result.exit_code == 1
    assert "--nab" in result.output and "combined_windows.json" in result.output
    result = CliRunner().invoke(cli, ["bench", "detect"])
    assert result.exit_code == 2 and "--nab DIR" in result.output
