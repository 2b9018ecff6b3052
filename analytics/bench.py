"""`zhizao bench kernels`: kernel rates against pandas, bottleneck, the reference twins and memory streaming."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from zhizao.analytics import _baselines as base
from zhizao.analytics.anomaly import Cusum, Detector, EwmaZ, MahalanobisT2, RobustZ, Scored
from zhizao.analytics.features import reference_vibration_features, vibration_features
from zhizao.analytics.oee.api import OeeInputs, run_oee_kernel
from zhizao.analytics.oee.config import OeeConfig
from zhizao.analytics.oee.reference import run_reference

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


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    import numba

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "numba_threads": numba.get_num_threads(),
        "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
        "platform": platform.platform(),
        # Other work on the machine depresses the rates: the load average says how busy it was.
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def _ratio(ours: float, other: float | None) -> float | None:
    return None if other is None else round(ours / other, 3)


def _threads(n: int) -> None:
    import numba

    numba.set_num_threads(n)


def bench_oee(quick: bool, repeat: int, max_threads: int) -> dict[str, Any]:
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
    return _row("oee_fleet", "events/s", ours, one, max_threads, pandas, None, ref, mem,
                f"{n_m} machines x (500 states + 20000 counter samples), 24 hourly windows each")


def _event_bytes(a: OeeInputs) -> int:
    total = a.state_time.nbytes + a.state_code.nbytes + a.count_time.nbytes + a.count_total.nbytes
    return (total + a.count_good.nbytes) // a.n_events


def _row(kernel: str, unit: str, ours: float, one: float | None, threads: int, pandas: float | None,
         bottleneck: float | None, ref: float | None, mem: float, size: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kernel": kernel, "unit": unit, "rate": round(ours),
        "vs": {"pandas": _ratio(ours, pandas), "bottleneck": _ratio(ours, bottleneck),
               "reference": _ratio(ours, ref), "memory_stream": round(ours / mem, 3)},
        "size": size, "threads": threads,
    }
    if one is not None:
        row["rate_1_thread"] = round(one)
        row["parallel_speedup"] = round(ours / one, 2)
    return row


def bench_detector(det: Detector, quick: bool, repeat: int, max_threads: int) -> dict[str, Any]:
    """A detector over 1000+ tags: samples per second."""
    rng = np.random.default_rng(0)
    n_tags = 1000 * det.tags_per_output if det.tags_per_output > 1 else 1000
    n_t = 500 if quick else 4000
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
    ref = sub.size / best_time(lambda: det.reference_update(det.init_state(sub.shape[1]), sub), 1)
    mem = memory_stream_rate(x.size, 8, repeat)
    return _row(det.name, "samples/s", ours, one, max_threads, pandas, bottleneck, ref, mem,
                f"{n_t} samples x {n_tags} tags")


def bench_features(quick: bool, repeat: int, max_threads: int) -> dict[str, Any]:
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
    return _row("vibration_features", "samples/s", ours, one, max_threads, pandas, None, ref, mem,
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


def _nan_to_none(doc: Any) -> Any:
    """JSON has no NaN: undefined figures (e.g. a delay with no detection) become null."""
    if isinstance(doc, float):
        return None if doc != doc else doc
    if isinstance(doc, dict):
        return {k: _nan_to_none(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_nan_to_none(v) for v in doc]
    return doc


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


@click.command("kernels")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the results as JSON to this file.")
@click.option("--quick", is_flag=True, help="Small sizes, no cold compile, no detection study (CI smoke, < 30 s).")
def bench_kernels(json_path: Path | None, quick: bool) -> None:
    """OEE and anomaly kernels against pandas, bottleneck, the reference twins and a memory copy."""
    import numba

    max_threads = numba.get_num_threads()
    repeat = 2 if quick else 5
    _BUDGET_S["value"] = 0.1 if quick else 1.0
    click.echo(f"zhizao bench kernels ({'quick' if quick else 'full'}), {max_threads} threads", err=True)
    from zhizao.analytics.warmup import warm_up

    warm_up()
    results = []
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("oee_fleet", lambda: bench_oee(quick, repeat, max_threads)),
        *[(d.name, lambda d=d: bench_detector(d, quick, repeat, max_threads))
          for d in (EwmaZ(), Cusum(), RobustZ(), MahalanobisT2(dims=3))],
        ("vibration_features", lambda: bench_features(quick, repeat, max_threads)),
    ]
    for name, step in steps:
        click.echo(f"  {name} ...", err=True)
        results.append(step())
    click.echo("  compile / warm start ...", err=True)
    compile_info = compile_times(cold=not quick)
    doc: dict[str, Any] = {"machine": machine_info(), "results": results, "compile": compile_info}
    if not quick:
        from zhizao.analytics.evaluate import detection_report

        click.echo("  detection study ...", err=True)
        doc["detection"] = detection_report()
    header = f"{'kernel':<20}{'unit':<11}{'rate':>10}{'1 thread':>10}{'pandas':>9}{'bn':>8}{'ref':>10}{'mem':>8}"
    click.echo(header)
    for r in results:
        vs = r["vs"]
        click.echo(f"{r['kernel']:<20}{r['unit']:<11}{r['rate']:>10.3g}{_fmt(r.get('rate_1_thread')):>10}"
                   f"{_fmt(vs['pandas']):>9}{_fmt(vs['bottleneck']):>8}{_fmt(vs['reference']):>10}"
                   f"{_fmt(vs['memory_stream']):>8}")
    click.echo(f"compile: {compile_info}")
    for row in doc.get("detection", []):
        click.echo("detect: " + ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in row.items()))
    if json_path is not None:
        json_path.write_text(json.dumps(_nan_to_none(doc), indent=2, allow_nan=False))
        click.echo(f"wrote {json_path}", err=True)
    click.echo("ratios are our rate over the baseline's, same run; memory = share of a NumPy copy's rate", err=True)
