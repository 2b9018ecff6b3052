"""`fleet_oee`: validated entry point of the OEE kernel, for a whole fleet and any set of windows."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from zhizao.analytics._validate import as_array, check_offsets, check_same_length, check_sorted
from zhizao.analytics.oee import kernel as k
from zhizao.analytics.oee.config import MAX_STATE_CODE, N_CATEGORIES, OeeConfig
from zhizao.analytics.oee.result import OeeResult

_DEFAULT_CONFIG = OeeConfig()
I64 = NDArray[np.int64]


class OeeInputs(NamedTuple):
    """Validated, contiguous input arrays (the kernel and the reference twin take the same)."""

    state_offsets: I64
    state_time: I64
    state_code: I64
    count_offsets: I64
    count_time: I64
    count_total: I64
    count_good: I64
    rate_offsets: I64
    rate_time: I64
    rate_per_min: NDArray[np.float64]
    plan_offsets: I64
    plan_start: I64
    plan_end: I64
    window_offsets: I64
    window_start: I64
    window_end: I64

    @property
    def n_machines(self) -> int:
        """Number of machines (segments)."""
        return int(self.state_offsets.size - 1)

    @property
    def n_events(self) -> int:
        """State changes plus counter samples: the unit of the kernel's events/s figure."""
        return int(self.state_time.size + self.count_time.size)


def prepare_oee_inputs(
    *,
    state_offsets: ArrayLike, state_time: ArrayLike, state_code: ArrayLike,
    count_offsets: ArrayLike, count_time: ArrayLike, count_total: ArrayLike, count_good: ArrayLike,
    rate_offsets: ArrayLike, rate_time: ArrayLike, rate_per_min: ArrayLike,
    plan_offsets: ArrayLike, plan_start: ArrayLike, plan_end: ArrayLike,
    window_offsets: ArrayLike, window_start: ArrayLike, window_end: ArrayLike,
) -> OeeInputs:
    """Convert and check the inputs of `fleet_oee`; raise ValueError naming the array and the fault."""
    i64 = np.int64
    a = OeeInputs(
        as_array("state_offsets", state_offsets, i64), as_array("state_time", state_time, i64),
        as_array("state_code", state_code, i64),
        as_array("count_offsets", count_offsets, i64), as_array("count_time", count_time, i64),
        as_array("count_total", count_total, i64), as_array("count_good", count_good, i64),
        as_array("rate_offsets", rate_offsets, i64), as_array("rate_time", rate_time, i64),
        as_array("rate_per_min", rate_per_min, np.float64),
        as_array("plan_offsets", plan_offsets, i64), as_array("plan_start", plan_start, i64),
        as_array("plan_end", plan_end, i64),
        as_array("window_offsets", window_offsets, i64), as_array("window_start", window_start, i64),
        as_array("window_end", window_end, i64),
    )
    check_same_length(state_time=a.state_time, state_code=a.state_code)
    check_same_length(count_time=a.count_time, count_total=a.count_total, count_good=a.count_good)
    check_same_length(rate_time=a.rate_time, rate_per_min=a.rate_per_min)
    check_same_length(plan_start=a.plan_start, plan_end=a.plan_end)
    check_same_length(window_start=a.window_start, window_end=a.window_end)
    n = check_offsets("state_offsets", a.state_offsets, a.state_time.size)
    check_offsets("count_offsets", a.count_offsets, a.count_time.size, n)
    check_offsets("rate_offsets", a.rate_offsets, a.rate_time.size, n)
    check_offsets("plan_offsets", a.plan_offsets, a.plan_start.size, n)
    check_offsets("window_offsets", a.window_offsets, a.window_start.size, n)
    check_sorted("state_time", a.state_time, a.state_offsets)
    check_sorted("count_time", a.count_time, a.count_offsets)
    check_sorted("rate_time", a.rate_time, a.rate_offsets)
    check_sorted("plan_start", a.plan_start, a.plan_offsets)
    _first_bad("state_code", (a.state_code < 0) | (a.state_code >= MAX_STATE_CODE), a.state_code,
               f"outside 0..{MAX_STATE_CODE - 1}")
    _first_bad("count_total", a.count_total < 0, a.count_total, "is negative")
    _first_bad("count_good", a.count_good < 0, a.count_good, "is negative")
    _first_bad("plan_end", a.plan_end < a.plan_start, a.plan_end, "is before its plan_start")
    _first_bad("window_end", a.window_end < a.window_start, a.window_end, "is before its window_start")
    if a.plan_start.size > 1:
        overlap = a.plan_start[1:] < a.plan_end[:-1]
        # Intervals of different machines may overlap: ignore each machine's first interval.
        firsts = a.plan_offsets[1:-1]
        firsts = firsts[(firsts > 0) & (firsts < a.plan_start.size)]
        overlap[firsts - 1] = False
        _first_bad("plan_start", np.concatenate([[False], overlap]), a.plan_start,
                   "overlaps the previous planned interval")
    return a


def _first_bad(name: str, bad: NDArray[np.bool_], values: NDArray[np.generic], what: str) -> None:
    idx = np.flatnonzero(bad)
    if idx.size:
        i = int(idx[0])
        raise ValueError(f"{name}[{i}] = {values[i]} {what}")


def fleet_oee(config: OeeConfig = _DEFAULT_CONFIG, **arrays: ArrayLike) -> OeeResult:
    """OEE, losses, stops and MTBF/MTTR for many machines and any windows in one call (numba, parallel).

    Contract. Every input is a flat array; machine m owns the slice `x[x_offsets[m]:x_offsets[m+1]]` of
    each group (CSR-style offsets, length n_machines + 1, starting at 0). Times are epoch milliseconds
    (int64, UTC), sorted within each machine.

    - `state_time`, `state_code`: state changes; a state holds until the next change, the last one until
      the machine's latest window end. Include the last change at or before each window start.
    - `count_time`, `count_total`, `count_good`: monotonic counter samples; units are credited to the
      window holding the sample, (start, end]. Include the last sample at or before each window start
      (it is the baseline). A decrease is a reset, or a wrap when `config.counter_modulus` says so.
    - `rate_time`, `rate_per_min`: ideal rate changes (units per minute), in force from their time on.
    - `plan_start`, `plan_end`: planned (shift) intervals, sorted and non-overlapping. Running outside
      them still counts as planned time; stops outside them are "no shift".
    - `window_start`, `window_end`: the windows to report, any number per machine (shifts, hours,
      days, rolling windows; they may overlap). One output row per window, in input order.

    Example: two machines, one 8-hour shift window each, the cloud passing its current offsets:

        res = fleet_oee(
            state_offsets=[0, 2, 3], state_time=[t0, t0 + 3_600_000, t0], state_code=[10000, 180000, 10000],
            count_offsets=[0, 2, 4], count_time=[t0, t1, t0, t1], count_total=[0, 900, 50, 1000],
            count_good=[0, 880, 50, 990],
            rate_offsets=[0, 1, 2], rate_time=[t0, t0], rate_per_min=[60.0, 2.5],
            plan_offsets=[0, 1, 2], plan_start=[t0, t0], plan_end=[t1, t1],
            window_offsets=[0, 1, 2], window_start=[t0, t0], window_end=[t1, t1],
        )
        res.oee            # array of 2 OEE values, one per window
        res.losses_s()     # six big losses, seconds per window

    Raises ValueError naming the array and index at fault (unsorted times, inconsistent lengths or
    offsets, codes outside 0..229999, negative counters, overlapping shifts, windows ending before they
    start).
    """
    a = prepare_oee_inputs(**arrays)
    return run_oee_kernel(a, config)


def run_oee_kernel(a: OeeInputs, config: OeeConfig = _DEFAULT_CONFIG) -> OeeResult:
    """Run the kernel on already validated inputs (the benchmark's hot path)."""
    nw = a.window_start.size
    out_f = np.zeros((nw, k.N_FLOAT), np.float64)
    out_i = np.zeros((nw, k.N_INT), np.int64)
    out_t = np.zeros((nw, N_CATEGORIES), np.float64)
    ranges, ov_codes, ov_cats = config.tables()
    k.oee_kernel(
        a.state_offsets, a.state_time, a.state_code,
        a.count_offsets, a.count_time, a.count_total, a.count_good,
        a.rate_offsets, a.rate_time, a.rate_per_min,
        a.plan_offsets, a.plan_start, a.plan_end,
        a.window_offsets, a.window_start, a.window_end,
        ranges, ov_codes, ov_cats,
        round(config.microstop_s * 1000), round(config.startup_s * 1000), int(config.counter_modulus),
        bool(config.material_in_run),
        out_f, out_i, out_t,
    )
    machine = np.repeat(np.arange(a.n_machines, dtype=np.int64), np.diff(a.window_offsets))
    return OeeResult(machine, out_f, out_i, out_t)
