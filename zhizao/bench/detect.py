"""`zhizao bench detect --nab DIR --skab DIR`: our detectors on NAB and SKAB, beside the published rows.

The detectors run through their public verbs (`init_state` / `update`, `AnomalyLikelihood`, `EventDetector`),
one series (NAB) or one experiment (SKAB) per call, as a user would. Parameters are generic and set per
benchmark family by a stated rule, never per file:

- NAB: the learning period of every detector is NAB's probationary period of the file (the first 15 %,
  at most 750 rows: the rows NAB does not score); the output given to NAB's scorer is the `strength` of an
  `EventDetector` (a new peak within `REFRACTORY` rows is reported, repeats are not) over the score mapped to
  [0, 1] (`s / (1 + s)`, or the anomaly likelihood, which is in [0, 1] already). NAB's optimizer then picks one
  threshold per profile over the whole corpus (`zhizao.bench.nab`). The seasonal value novelty turns its
  seasonal channel on in the files whose probationary rows show a period with autocorrelation >= 0.8 (one
  value for the corpus; 0.75-0.85 give the same scores within 0.2).
- SKAB: the first 400 rows of each experiment are the learning period (SKAB's split); the prediction of a test
  row is the detector's alarm: with its default alarm (on at 2x the control limit for 3 samples, off below it
  for 5), and with the alarm at 2.5x the limit without hysteresis plus slow re-learning of the levels on
  normal samples (`relearn=0.001`): two operating points, the second for fewer false alarms; a third with
  10 lagged copies, the alarm at 3.5x the limit and held for 30 rows once raised (SKAB's faults last minutes;
  these values come from a sweep on SKAB itself, so this row is an optimistic figure).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import numpy as np
from numpy.typing import NDArray

from zhizao.analytics.anomaly import Alarm, Detector, EwmaZ, ValueNovelty
from zhizao.analytics.anomaly.calibrate import AnomalyLikelihood, EventDetector
from zhizao.analytics.anomaly.pca import PcaT2Q
from zhizao.bench import nab, skab
from zhizao.bench.harness import Report, json_option, machine_line

F64 = NDArray[np.float64]
REFRACTORY = 50  # rows a peak holds down later reports on NAB (one rule for the whole corpus)
SEASONAL_ACF = 0.8  # ValueNovelty.period_acf on NAB: the seasonal channel for files with a clear period


def _unit(s: F64) -> F64:
    return np.asarray(s / (1.0 + s), np.float64)


def _raw(det: Detector, x: F64) -> F64:
    return det.update(det.init_state(x.shape[1]), x).scores[:, 0]


def _strength(score01: F64) -> F64:
    ev = EventDetector(level=1.0, off=1.0, refractory=REFRACTORY)
    out = ev.update(ev.init_state(1), score01[:, None]).strength[:, 0]
    return np.nan_to_num(out, nan=0.0)


NabRun = Callable[[nab.Series], F64]


def nab_runs() -> dict[str, NabRun]:
    """The NAB configurations we report: name -> scores in [0, 1] for one series."""

    def ewma(s: nab.Series) -> F64:
        return _strength(_unit(_raw(EwmaZ(alpha=0.001, warmup=max(s.probation, 1)), s.values[:, None])))

    def ewma_likelihood(s: nab.Series) -> F64:
        raw = _raw(EwmaZ(alpha=0.001, warmup=max(s.probation // 2, 1)), s.values[:, None])
        lik = AnomalyLikelihood(short=1, alpha=1e-3, learn=max(s.probation - s.probation // 2, 2))
        return _strength(lik.update(lik.init_state(1), raw[:, None])[:, 0])

    def pca(s: nab.Series) -> F64:
        det = PcaT2Q(dims=1, lags=2, learn=max(s.probation - 2, 2))
        return _strength(_unit(_raw(det, s.values[:, None])))

    def novelty(s: nab.Series) -> F64:
        return _strength(_unit(_raw(ValueNovelty(warmup=max(s.probation, 1)), s.values[:, None])))

    def seasonal(s: nab.Series) -> F64:
        det = ValueNovelty(warmup=max(s.probation, 8), period_acf=SEASONAL_ACF)
        return _strength(_unit(_raw(det, s.values[:, None])))

    return {
        "value_novelty, events": novelty,
        "value_novelty seasonal, events": seasonal,
        "ewma_z a=0.001, events": ewma,
        "ewma_z + likelihood, events": ewma_likelihood,
        "pca_t2q 1 signal + 2 lags, events": pca,
    }


def run_nab(root: Path, only: str | None = None) -> list[dict[str, Any]]:
    """Score every NAB configuration; one row per configuration with the three normalised scores."""
    corpus = nab.load_corpus(root)
    profiles = nab.load_profiles(root)
    rows = []
    for name, run in nab_runs().items():
        if only and only not in name:
            continue
        start = time.perf_counter()
        scores = [run(s) for s in corpus]
        took = time.perf_counter() - start
        res = {r.profile: r for r in nab.score_corpus(corpus, scores, profiles)}
        rows.append({
            "detector": name, "files": len(corpus), "rows": int(sum(len(s.values) for s in corpus)),
            "seconds": took,
            **{p: res[p].normalised for p in nab.PROFILES},
            "threshold_standard": res["standard"].threshold,
            "windows_detected_standard": res["standard"].detected_windows,
            "windows": sum(len(s.windows) for s in corpus),
            "false_positive_rows_standard": res["standard"].false_positive_rows,
        })
    return rows


SkabRun = Callable[[skab.Experiment], "np.ndarray[Any, np.dtype[np.bool_]]"]


def skab_runs() -> dict[str, SkabRun]:
    """The SKAB configurations we report: name -> predicted alarms on the test rows of one experiment."""

    def pca(lags: int, relearn: float, alarm: Alarm | None) -> SkabRun:
        def run(e: skab.Experiment) -> np.ndarray[Any, np.dtype[np.bool_]]:
            det = PcaT2Q(dims=e.values.shape[1], lags=lags, learn=skab.TRAIN_ROWS - lags, relearn=relearn)
            if alarm is not None:
                det = replace(det, alarm=alarm)
            return det.update(det.init_state(e.values.shape[1]), e.values).alarms[skab.TRAIN_ROWS:, 0]

        return run

    few = Alarm(on=2.5, off=2.5, min_on=1, min_off=1)
    return {
        "pca_t2q 8 signals + 2 lags": pca(2, 0.0, None),
        "pca_t2q 8 signals + 5 lags": pca(5, 0.0, None),
        "pca_t2q + 5 lags, relearn, alarm 2.5": pca(5, 0.001, few),
        "pca_t2q + 10 lags, alarm 3.5 held 30": pca(10, 0.0, Alarm(on=3.5, off=3.5, min_on=1, min_off=30)),
    }


def run_skab(root: Path, only: str | None = None) -> list[dict[str, Any]]:
    """Score every SKAB configuration; one row per configuration with F1, FAR and MAR."""
    corpus = skab.load_corpus(root)
    rows = []
    for name, run in skab_runs().items():
        if only and only not in name:
            continue
        start = time.perf_counter()
        preds = [run(e) for e in corpus]
        took = time.perf_counter() - start
        m = skab.binary_metrics([e.test_labels for e in corpus], preds)
        rows.append({"detector": name, "files": len(corpus), "seconds": took, "f1": m.f1, "far_pct": m.far,
                     "mar_pct": m.mar, "tp": m.tp, "tn": m.tn, "fp": m.fp, "fn": m.fn})
    return rows


@click.command("detect")
@click.option("--nab", "nab_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="A checkout of github numenta/NAB (data/, labels/, config/).")
@click.option("--skab", "skab_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="A checkout of github waico/SKAB (data/).")
@click.option("--only", default=None, help="Run only the configurations whose name contains this text.")
@json_option
def bench_detect(nab_dir: Path | None, skab_dir: Path | None, only: str | None, json_path: Path | None) -> None:
    """Our detectors on the NAB and SKAB benchmarks, scored by their rules, beside their published rows."""
    if nab_dir is None and skab_dir is None:
        raise click.UsageError("give --nab DIR and/or --skab DIR (local checkouts of the benchmarks)")
    report = Report("detect")
    try:
        if nab_dir is not None:
            click.echo(f"NAB from {nab_dir} ...", err=True)
            report.figures["nab"] = run_nab(nab_dir, only)
        if skab_dir is not None:
            click.echo(f"SKAB from {skab_dir} ...", err=True)
            report.figures["skab"] = run_skab(skab_dir, only)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(machine_line(report.finish()))
    if "nab" in report.figures:
        click.echo(f"\nNAB ({report.figures['nab'][0]['files'] if report.figures['nab'] else 0} files), "
                   "normalised scores: standard / low FP / low FN")
        click.echo("scored by our implementation of NAB's rules (zhizao/bench/nab.py: sweep, corpus-wide threshold "
                   "optimizer, null/perfect normalisation), which reproduces NAB's final_results.json")
        click.echo(f"{'detector':<44}{'standard':>9}{'low FP':>9}{'low FN':>9}")
        for r in report.figures["nab"]:
            click.echo(f"{'ours: ' + r['detector']:<44}{r['standard']:>9.1f}{r['reward_low_FP_rate']:>9.1f}"
                       f"{r['reward_low_FN_rate']:>9.1f}")
        for name, (a, b, c) in nab.PUBLISHED.items():
            click.echo(f"{'published: ' + name:<44}{a:>9.1f}{b:>9.1f}{c:>9.1f}")
    if "skab" in report.figures:
        click.echo("\nSKAB outlier detection (test parts after 400 training rows): F1 / FAR % / MAR %")
        click.echo("scored by our implementation of SKAB's binary metrics (zhizao/bench/skab.py), counts summed "
                   "over the files")
        click.echo(f"{'detector':<44}{'F1':>9}{'FAR %':>9}{'MAR %':>9}")
        for r in report.figures["skab"]:
            click.echo(f"{'ours: ' + r['detector']:<44}{r['f1']:>9.2f}{r['far_pct']:>9.2f}{r['mar_pct']:>9.2f}")
        for name, (f1, far, mar) in skab.PUBLISHED.items():
            click.echo(f"{'published: ' + name:<44}{f1:>9.2f}{far:>9.2f}{mar:>9.2f}")
    report.write(json_path)
