"""Reference twin of the OEE kernel: the same definitions, written as plain Python loops."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from zhizao.analytics.oee import kernel as k
from zhizao.analytics.oee.api import OeeInputs, prepare_oee_inputs
from zhizao.analytics.oee.config import N_CATEGORIES, Category, OeeConfig
from zhizao.analytics.oee.result import OeeResult

_RUN = (Category.RUNNING, Category.REDUCED_SPEED)


def _is_stop(cat: Category) -> bool:
    return cat not in _RUN and cat != Category.PLANNED


def reference_fleet_oee(config: OeeConfig = OeeConfig(), **arrays: ArrayLike) -> OeeResult:  # noqa: B008
    """Same contract as `fleet_oee`, computed slowly and plainly; the property tests hold the two together."""
    return run_reference(prepare_oee_inputs(**arrays), config)


def _delta(prev: int, cur: int, modulus: int) -> tuple[int, int]:
    if cur >= prev:
        return cur - prev, 0
    if modulus > 0 and prev - cur > modulus // 2:
        return cur - prev + modulus, k.FLAG_COUNTER_WRAP
    return cur, k.FLAG_COUNTER_RESET


def run_reference(a: OeeInputs, config: OeeConfig) -> OeeResult:
    """Reference computation on validated inputs."""
    nw = a.window_start.size
    out_f = np.zeros((nw, k.N_FLOAT))
    out_i = np.zeros((nw, k.N_INT), np.int64)
    out_t = np.zeros((nw, N_CATEGORIES))
    micro_ms = round(config.microstop_s * 1000)
    startup_ms = round(config.startup_s * 1000)
    for m in range(a.n_machines):
        w_idx = range(int(a.window_offsets[m]), int(a.window_offsets[m + 1]))
        if not w_idx:
            continue
        times = [int(t) for t in a.state_time[a.state_offsets[m]:a.state_offsets[m + 1]]]
        cats = [config.category_of(int(c)) for c in a.state_code[a.state_offsets[m]:a.state_offsets[m + 1]]]
        horizon = max([int(a.window_end[w]) for w in w_idx] + times)
        ends = [*times[1:], horizon]
        n = len(times)
        # Stop events: maximal runs of stop states; short ones become microstops.
        eff = list(cats)
        first = [False] * n
        failing = [False] * n
        i = 0
        while i < n:
            if not _is_stop(cats[i]):
                i += 1
                continue
            j = i
            while j < n and _is_stop(cats[j]):
                j += 1
            micro = ends[j - 1] - times[i] < micro_ms
            fail = not micro and Category.FAILURE in cats[i:j]
            for q in range(i, j):
                eff[q] = Category.MICROSTOP if micro else cats[q]
                failing[q] = fail
            first[i] = True
            i = j
        plans = list(zip(a.plan_start[a.plan_offsets[m]:a.plan_offsets[m + 1]].tolist(),
                         a.plan_end[a.plan_offsets[m]:a.plan_offsets[m + 1]].tolist(), strict=True))

        def in_plan(lo: int, hi: int, plans: list[tuple[int, int]] = plans) -> int:
            return sum(max(0, min(hi, pe) - max(lo, ps)) for ps, pe in plans)

        def in_startup(t: int, times: list[int] = times, eff: list[Category] = eff) -> bool:
            seg = max((q for q in range(len(times)) if times[q] <= t), default=-1)
            if seg < 0 or eff[seg] not in (*_RUN, Category.MICROSTOP):
                return False
            start = seg
            while start > 0 and eff[start - 1] in (*_RUN, Category.MICROSTOP):
                start -= 1
            return start > 0 and t - times[start] < startup_ms

        c_lo, c_hi = int(a.count_offsets[m]), int(a.count_offsets[m + 1])
        r_lo, r_hi = int(a.rate_offsets[m]), int(a.rate_offsets[m + 1])
        for w in w_idx:
            ws, we = int(a.window_start[w]), int(a.window_end[w])
            tm = [0] * N_CATEGORIES
            run = planned = minor = fail_loss = setup_loss = material = repair = 0
            stops = failures = micros = flags = 0
            pieces: list[tuple[int, int, Category, int]] = []
            if n == 0 or times[0] > ws:
                b = min(we, times[0]) if n else we
                if b > ws:  # not monitored yet: excluded like planned time
                    flags |= k.FLAG_NO_STATE
                    pieces.append((ws, b, Category.PLANNED, -1))
            for q in range(n):
                lo, hi = max(times[q], ws), min(ends[q], we)
                if first[q] and ws <= times[q] < we:
                    if eff[q] == Category.MICROSTOP:
                        micros += 1
                    else:
                        stops += 1
                        failures += failing[q]
                if hi > lo:
                    pieces.append((lo, hi, eff[q], q))
            for lo, hi, cat, q in pieces:
                dur = hi - lo
                if cat in _RUN:
                    run += dur
                    planned += dur
                    tm[cat] += dur
                elif cat == Category.PLANNED:
                    tm[cat] += dur
                else:
                    inside = in_plan(lo, hi)
                    tm[Category.PLANNED] += dur - inside
                    tm[cat] += inside
                    planned += inside
                    if cat == Category.MICROSTOP:
                        run += inside
                        minor += inside
                    elif cat == Category.SETUP:
                        setup_loss += inside
                    elif cat == Category.MATERIAL:
                        material += inside
                        if config.material_in_run:
                            run += inside
                    else:
                        fail_loss += inside
                    if q >= 0 and failing[q]:
                        repair += dur
            total = good = 0
            ideal = rej_startup = rej_other = 0.0
            samples = [i for i in range(c_lo, c_hi) if ws < a.count_time[i] <= we]
            if samples and not any(a.count_time[i] <= ws for i in range(c_lo, c_hi)):
                flags |= k.FLAG_NO_COUNT_BASELINE
            for i in samples:
                if i == c_lo:
                    continue  # the machine's first sample is only a baseline
                t = int(a.count_time[i])
                dt, f1 = _delta(int(a.count_total[i - 1]), int(a.count_total[i]), config.counter_modulus)
                dg, f2 = _delta(int(a.count_good[i - 1]), int(a.count_good[i]), config.counter_modulus)
                flags |= f1 | f2
                total += dt
                good += dg
                rates = [float(a.rate_per_min[r]) for r in range(r_lo, r_hi) if a.rate_time[r] <= t]
                ict = 60.0 / rates[-1] if rates and rates[-1] > 0 else 0.0
                if ict == 0.0 and dt > 0:
                    flags |= k.FLAG_NO_IDEAL_RATE
                ideal += dt * ict
                if dt - dg > 0:
                    if in_startup(t):
                        rej_startup += (dt - dg) * ict
                    else:
                        rej_other += (dt - dg) * ict
            run_s, planned_s = run / 1000.0, planned / 1000.0
            avail = run_s / planned_s if planned > 0 else math.nan
            perf = ideal / run_s if run > 0 else (math.inf if ideal > 0 else math.nan)
            if perf > 1.0:
                perf = 1.0
                flags |= k.FLAG_PERFORMANCE_CAPPED
            qual = good / total if total > 0 else math.nan
            if qual > 1.0:
                qual = 1.0
                flags |= k.FLAG_QUALITY_CAPPED
            oee = math.nan if planned <= 0 else (0.0 if total == 0 else avail * perf * qual)
            row = out_f[w]
            row[k.F_PLANNED_S], row[k.F_RUN_S], row[k.F_ALL_S] = planned_s, run_s, (we - ws) / 1000.0
            row[k.F_AVAILABILITY], row[k.F_PERFORMANCE], row[k.F_QUALITY] = avail, perf, qual
            row[k.F_OEE] = oee
            row[k.F_TEEP] = oee * planned / (we - ws) if we > ws else math.nan
            row[k.F_IDEAL_S] = ideal
            row[k.F_LOSS_FAILURE_S], row[k.F_LOSS_SETUP_S] = fail_loss / 1000.0, setup_loss / 1000.0
            row[k.F_LOSS_MINOR_S] = minor / 1000.0
            in_run_stops = minor + (material if config.material_in_run else 0)
            row[k.F_LOSS_SPEED_S] = max((run - in_run_stops) / 1000.0 - ideal, 0.0)
            row[k.F_LOSS_MATERIAL_S] = material / 1000.0
            row[k.F_LOSS_DEFECT_S], row[k.F_LOSS_STARTUP_S] = rej_other, rej_startup
            row[k.F_REPAIR_S] = repair / 1000.0
            row[k.F_MTBF_S] = run_s / failures if failures else math.nan
            row[k.F_MTTR_S] = repair / 1000.0 / failures if failures else math.nan
            out_t[w] = np.array(tm, dtype=np.float64) / 1000.0
            out_i[w] = [total, good, stops, failures, micros, flags]
    machine = np.repeat(np.arange(a.n_machines, dtype=np.int64), np.diff(a.window_offsets))
    return OeeResult(machine, out_f, out_i, out_t)
