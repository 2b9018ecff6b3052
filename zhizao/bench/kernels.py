"""`zhizao bench kernels`: kernel rates against pandas, bottleneck, the reference twins and memory streaming.

Every baseline is timed in the same run; a kernel's figures are its rate (at all numba threads and at one)
and each baseline's rate in the same unit, and the ratios are taken between those figures. The pandas and
bottleneck baselines need the `bench` extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from zhizao.analytics.anomaly import (
    Cusum,
    Detector,
    EwmaZ,
    MahalanobisT2,
    PcaT2Q,
    RobustZ,
    Scored,
    ValueNovelty,
)
from zhizao.analytics.features import reference_vibration_features, vibration_features
from zhizao.analytics.oee.api import OeeInputs, run_oee_kernel
from zhizao.analytics.oee.config import OeeConfig
from zhizao.analytics.oee.reference import run_reference
from zhizao.bench import baselines as base
from zhizao.bench.harness import Report, json_option, machine_line, require

_BUDGET_S = {"value": 1.0}  # extra timing runs allowed per measurement; small in --quick


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Smallest wall time of at least `repeat` calls, more within a time budget (the machine may be shared)."""
    budget_s = _BUDGET_S["value"]
    fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < repeat or (spent < budget_s and len(times) < 4 * repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return min(times)


def memory_stream_rate(n_items: int, item_bytes: int, repeat: int) -> float:
    """Items per second that a NumPy copy of the same bytes reaches on this machine."""
    src = np.ones(n_items * item_bytes // 8)
    dst = np.empty_like(src)
    return n_items / best_time(lambda: np.copyto(dst, src), repeat)


def _threads(n: int) -> None:
    import numba

    numba.set_num_threads(n)


def measure_oee(quick: bool, repeat: int, max_threads: int) -> dict[str, Any]:
    """Fleet OEE: events (state changes + counter samples) per second."""
    # A day per machine: a state change every ~3 min, a counter sample every ~4 s, hourly windows.
    n_m = 100 if quick else 1000
    cfg = OeeConfig(startup_s=300.0)
    fleet = base.synthetic_fleet(n_m, 500, 20_000)
    small = base.synthetic_fleet(max(n_m // 10, 1), 500, 20_000)
    tiny = base.synthetic_fleet(2, 50, 2_000)
    _threads(1)
    one = fleet.n_events / best_time(lambda: run_oee_kernel(fleet, cfg), repeat)
    _threads(max_threads)
    ours = fleet.n_events / best_time(lambda: run_oee_kernel(fleet, cfg), repeat)
    pandas = small.n_events / best_time(lambda: base.pandas_oee(small, cfg), 1)
    ref = tiny.n_events / best_time(lambda: run_reference(tiny, cfg), 1)
    mem = memory_stream_rate(fleet.n_events, _event_bytes(fleet), repeat)
    return _row("events/s", ours, one, max_threads, pandas, None, ref, mem,
                f"{n_m} machines x (500 states + 20000 counter samples), 24 hourly windows each")


def _event_bytes(a: OeeInputs) -> int:
    total = a.state_time.nbytes + a.state_code.nbytes + a.count_time.nbytes + a.count_total.nbytes
    return (total + a.count_good.nbytes) // a.n_events


def _row(unit: str, ours: float, one: float, threads: int, pandas: float | None, bottleneck: float | None,
         ref: float, mem: float, size: str) -> dict[str, Any]:
    """A kernel's figures: its rates and each baseline's rate (None: no such baseline for this kernel)."""
    return {
        "unit": unit, "size": size, "threads": threads, "rate": ours, "rate_1_thread": one,
        "baselines": {"pandas": pandas, "bottleneck": bottleneck, "reference": ref, "memory_stream": mem},
    }


def measure_detector(det: Detector, quick: bool, repeat: int, max_threads: int) -> dict[str, Any]:
    """A detector over 1000+ tags: samples per second (a sliding window fills within the first quarter)."""
    rng = np.random.default_rng(0)
    n_tags = 1000 * det.tags_per_output if det.tags_per_output > 1 else 1000
    n_t = 500 if quick else 4000
    if isinstance(det, RobustZ):
        n_t = max(n_t, 4 * det.window)
        if quick and n_t > 500:  # a long window: fewer tags keep --quick short
            n_tags = 250
    x = rng.normal(size=(n_t, n_tags))
    # A streaming caller keeps its output buffers, as the memory copy keeps its destination.
    shape = (n_t, det.n_outputs(n_tags))
    out = Scored(np.empty(shape), np.empty(shape, np.bool_))

    def run() -> None:
        det.update(det.init_state(n_tags), x, out)

    _threads(1)
    one = x.size / best_time(run, repeat)
    _threads(max_threads)
    ours = x.size / best_time(run, repeat)
    pandas = bottleneck = None
    if isinstance(det, EwmaZ):
        pandas = x.size / best_time(lambda: base.pandas_ewma_z(x, det.alpha, det.alarm.on), 1)
    elif isinstance(det, RobustZ):
        pandas = x.size / best_time(lambda: base.pandas_robust_z(x, det.window, det.alarm.on), 1)
        bottleneck = x.size / best_time(lambda: base.bottleneck_robust_z(x, det.window), 1)
    sub = x[: 300, : 50 * det.tags_per_output]
    if isinstance(det, RobustZ):  # past the window's warm-up, as the kernel's run is
        sub = x[: 300 + det.window, : 10]
    ref = sub.size / best_time(lambda: det.reference_update(det.init_state(sub.shape[1]), sub), 1)
    mem = memory_stream_rate(x.size, 8, repeat)
    window = f", window {det.window}" if isinstance(det, RobustZ) else ""
    return _row("samples/s", ours, one, max_threads, pandas, bottleneck, ref, mem,
                f"{n_t} samples x {n_tags} tags{window}")


def measure_features(quick: bool, repeat: int, max_threads: int) -> dict[str, Any]:
    """Vibration features (RMS, kurtosis, crest, peak) over 256-sample windows: samples per second."""
    rng = np.random.default_rng(0)
    n_t = 256 * (4 if quick else 32)
    x = rng.normal(size=(n_t, 1000))
    _threads(1)
    one = x.size / best_time(lambda: vibration_features(x, 256), repeat)
    _threads(max_threads)
    ours = x.size / best_time(lambda: vibration_features(x, 256), repeat)
    pandas = x.size / best_time(lambda: base.pandas_features(x, 256), 1)
    ref = x.size / best_time(lambda: reference_vibration_features(x, 256), 1)
    mem = memory_stream_rate(x.size, 8, repeat)
    return _row("samples/s", ours, one, max_threads, pandas, None, ref, mem,
                f"{n_t} samples x 1000 tags, windows of 256")


_WARM = (
    "import time; t = time.perf_counter(); from zhizao.analytics.warmup import warm_up; warm_up(); "
    "print(time.perf_counter() - t)"
)


def compile_times(cold: bool) -> dict[str, float | None]:
    """Seconds for warm_up() in a fresh process: with an empty numba cache (compile) and with a filled one."""
    out: dict[str, float | None] = {"first_call_compile_s": None, "cached_warm_start_s": None}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ)
        if cold:
            env["NUMBA_CACHE_DIR"] = cache
        keys = ["first_call_compile_s", "cached_warm_start_s"] if cold else ["cached_warm_start_s"]
        if not cold:  # make sure the default cache is filled before timing a warm start
            subprocess.run([sys.executable, "-c", _WARM], env=env, check=True, capture_output=True)
        for key in keys:
            start = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", _WARM], env=env, check=True, capture_output=True,
                                 text=True)
            out[key] = round(float(res.stdout.strip().splitlines()[-1]), 3)
            out[key[:-2] + "_incl_process_s"] = round(time.perf_counter() - start, 3)
    return out


_DETECTORS: dict[str, Detector] = {
    "ewma_z": EwmaZ(), "cusum": Cusum(), "robust_z": RobustZ(),
    "robust_z_w1024": RobustZ(window=1024),  # the O(log w) chunk-rank kernel; bottleneck at the same window
    "mahalanobis_t2": MahalanobisT2(dims=3), "pca_t2q": PcaT2Q(dims=3, learn=200), "value_novelty": ValueNovelty(),
}
KERNELS = ("oee_fleet", *_DETECTORS, "vibration_features")
"""The rows of `zhizao bench kernels`, in order (the names `--only` takes)."""


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


@click.command("kernels")
@json_option
@click.option("--quick", is_flag=True, help="Small sizes, no cold compile, no detection study (CI smoke, < 30 s).")
@click.option("--only", "only", multiple=True, metavar="NAME",
              help=f"Measure only this kernel (repeatable; one of {', '.join(KERNELS)}); no compile times or "
                   "detection study then.")
def bench_kernels(json_path: Path | None, quick: bool, only: tuple[str, ...]) -> None:
    """OEE and anomaly kernels against pandas, bottleneck, the reference twins and a memory copy."""
    unknown = [name for name in only if name not in KERNELS]
    if unknown:
        raise click.BadParameter(f"{unknown[0]!r} is not a kernel; one of {', '.join(KERNELS)}",
                                 param_hint="--only")
    require("zhizao bench kernels", "bench", "pandas", "bottleneck")
    import numba

    max_threads = numba.get_num_threads()
    repeat = 2 if quick else 5
    _BUDGET_S["value"] = 0.1 if quick else 1.0
    click.echo(f"zhizao bench kernels ({'quick' if quick else 'full'}), {max_threads} threads", err=True)
    from zhizao.analytics.warmup import warm_up

    warm_up()
    report = Report("kernels")
    kernels: dict[str, dict[str, Any]] = {}
    report.figures["kernels"] = kernels
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("oee_fleet", lambda: measure_oee(quick, repeat, max_threads)),
        *[(name, lambda d=d: measure_detector(d, quick, repeat, max_threads)) for name, d in _DETECTORS.items()],
        ("vibration_features", lambda: measure_features(quick, repeat, max_threads)),
    ]
    for name, step in steps:
        if only and name not in only:
            continue
        click.echo(f"  {name} ...", err=True)
        kernels[name] = row = step()
        report.ratio(f"{name}/1_thread", f"kernels.{name}.rate", f"kernels.{name}.rate_1_thread")
        for other, rate in row["baselines"].items():
            if rate is not None:
                report.ratio(f"{name}/{other}", f"kernels.{name}.rate", f"kernels.{name}.baselines.{other}")
    compile_info: dict[str, float | None] | str = "not measured (--only)"
    if not only:
        click.echo("  compile / warm start ...", err=True)
        report.figures["compile"] = compile_info = compile_times(cold=not quick)
    if not quick and not only:
        from zhizao.bench.detection import detection_report

        click.echo("  detection study ...", err=True)
        report.figures["detection"] = detection_report()
    click.echo(machine_line(report.finish()))
    header = f"{'kernel':<20}{'unit':<11}{'rate':>10}{'1 thread':>10}{'pandas':>9}{'bn':>8}{'ref':>10}{'mem':>8}"
    click.echo(header)
    for name, r in kernels.items():

        def vs(other: str, name: str = name) -> float | None:
            ratio = report.ratios.get(f"{name}/{other}")
            return None if ratio is None else ratio["value"]

        click.echo(f"{name:<20}{r['unit']:<11}{r['rate']:>10.3g}{_fmt(r['rate_1_thread']):>10}"
                   f"{_fmt(vs('pandas')):>9}{_fmt(vs('bottleneck')):>8}{_fmt(vs('reference')):>10}"
                   f"{_fmt(vs('memory_stream')):>8}")
    click.echo(f"compile: {compile_info}")
    for row in report.figures.get("detection", []):
        click.echo("detect: " + ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in row.items()))
    report.write(json_path)
    click.echo("ratios are our rate over the baseline's, same run; memory = share of a NumPy copy's rate", err=True)
