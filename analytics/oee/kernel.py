"""The fleet OEE kernel: one numba pass per machine over state segments and counter samples, per window."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Column indices of the float output (seconds, ratios).
F_PLANNED_S = 0
F_RUN_S = 1
F_ALL_S = 2
F_AVAILABILITY = 3
F_PERFORMANCE = 4
F_QUALITY = 5
F_OEE = 6
F_TEEP = 7
F_IDEAL_S = 8
F_LOSS_FAILURE_S = 9
F_LOSS_SETUP_S = 10
F_LOSS_MINOR_S = 11
F_LOSS_SPEED_S = 12
F_LOSS_DEFECT_S = 13
F_LOSS_STARTUP_S = 14
F_REPAIR_S = 15
F_MTBF_S = 16
F_MTTR_S = 17
N_FLOAT = 18

# Column indices of the integer output (counts, flags).
I_TOTAL = 0
I_GOOD = 1
I_STOPS = 2
I_FAILURES = 3
I_MICROSTOPS = 4
I_FLAGS = 5
N_INT = 6

# Data-quality flag bits.
FLAG_PERFORMANCE_CAPPED = 1
FLAG_QUALITY_CAPPED = 2
FLAG_COUNTER_RESET = 4
FLAG_COUNTER_WRAP = 8
FLAG_NO_IDEAL_RATE = 16
FLAG_NO_STATE = 32
FLAG_NO_COUNT_BASELINE = 64

# Category numbers (mirror config.Category; numba wants plain ints).
C_RUNNING = 0
C_REDUCED = 1
C_MICRO = 2
C_FAILURE = 3
C_SETUP = 4
C_UNKNOWN = 8
C_PLANNED = 9
N_CAT = 10


@njit(cache=True, inline="always")
def _is_stop(cat: int) -> bool:
    # Stops: microstop and every unplanned stop category (FAILURE..UNKNOWN).
    return cat >= C_MICRO and cat < C_PLANNED


@njit(cache=True)
def _classify(code: int, ranges: np.ndarray, ov_codes: np.ndarray, ov_cats: np.ndarray) -> int:
    if ov_codes.size > 0:
        k = np.searchsorted(ov_codes, code)
        if k < ov_codes.size and ov_codes[k] == code:
            return int(ov_cats[k])
    return int(ranges[code // 10000])


@njit(cache=True, inline="always")
def _covered(t: int, k: int, p_start: np.ndarray, p_end: np.ndarray, p_cum: np.ndarray) -> tuple[int, int]:
    # Planned-calendar milliseconds before t, and the index of the first interval ending after t.
    # Callers ask for non-decreasing t within a window, so the index only moves forward from `k`.
    while k < p_end.size and p_end[k] <= t:
        k += 1
    c = p_cum[k]
    if k < p_start.size and p_start[k] < t:
        c += t - p_start[k]
    return c, k


@njit(cache=True, inline="always")
def _delta(prev: int, cur: int, modulus: int) -> tuple[int, int]:
    # Counter increase between two samples; flag 4 = reset (restart from 0), 8 = wrap at `modulus`.
    d = cur - prev
    if d >= 0:
        return d, 0
    if modulus > 0 and prev - cur > modulus // 2:
        return d + modulus, FLAG_COUNTER_WRAP
    return max(cur, 0), FLAG_COUNTER_RESET


@njit(cache=True)
def _machine(
    m: int,
    st_t: np.ndarray, st_code: np.ndarray, s0: int, s1: int,
    c_t: np.ndarray, c_total: np.ndarray, c_good: np.ndarray, c0: int, c1: int,
    r_t: np.ndarray, r_val: np.ndarray, r0: int, r1: int,
    p_start: np.ndarray, p_end: np.ndarray,
    w_start: np.ndarray, w_end: np.ndarray, w0: int, w1: int,
    ranges: np.ndarray, ov_codes: np.ndarray, ov_cats: np.ndarray,
    microstop_ms: int, startup_ms: int, modulus: int,
    out_f: np.ndarray, out_i: np.ndarray, out_t: np.ndarray,
) -> None:
    if w1 <= w0:
        return
    ns = s1 - s0
    horizon = w_end[w0]
    for w in range(w0, w1):
        horizon = max(horizon, w_end[w])
    if ns > 0:
        horizon = max(horizon, st_t[s1 - 1])

    # Pass 1: segments, stop events (maximal runs of stop states) and run blocks.
    seg_t = st_t[s0:s1]
    eff = np.empty(ns, np.int8)
    ev_first = np.zeros(ns, np.bool_)
    ev_fail = np.zeros(ns, np.bool_)
    block_start = np.empty(ns, np.int64)
    block_restart = np.zeros(ns, np.bool_)
    if ov_codes.size > 0:
        for i in range(ns):
            eff[i] = _classify(st_code[s0 + i], ranges, ov_codes, ov_cats)
    else:
        for i in range(ns):
            eff[i] = ranges[st_code[s0 + i] // 10000]
    i = 0
    while i < ns:
        if not _is_stop(eff[i]):
            i += 1
            continue
        j = i
        has_fail = False
        while j < ns and _is_stop(eff[j]):
            if eff[j] == C_FAILURE:
                has_fail = True
            j += 1
        end = seg_t[j] if j < ns else horizon
        micro = end - seg_t[i] < microstop_ms
        for k in range(i, j):
            if micro:
                eff[k] = C_MICRO
            ev_fail[k] = has_fail and not micro
        ev_first[i] = True
        i = j
    # Run blocks: consecutive run/microstop segments; a block that follows a real stop is a restart.
    cur_start = seg_t[0] if ns > 0 else 0
    restart = False
    for k in range(ns):
        e = eff[k]
        if e <= C_MICRO:
            if k == 0 or eff[k - 1] > C_MICRO:
                cur_start = seg_t[k]
                restart = k > 0
            block_start[k] = cur_start
            block_restart[k] = restart
        else:
            block_start[k] = seg_t[k]

    # Planned calendar prefix sums.
    npl = p_start.size
    p_cum = np.zeros(npl + 1, np.int64)
    for k in range(npl):
        p_cum[k + 1] = p_cum[k] + (p_end[k] - p_start[k])

    acc = np.zeros(N_CAT, np.int64)
    for w in range(w0, w1):
        ws = w_start[w]
        we = w_end[w]
        acc_out = 0
        flags = 0
        run = 0
        planned = 0
        minor = 0
        fail_loss = 0
        setup_loss = 0
        repair = 0
        stops = 0
        failures = 0
        micros = 0
        # First segment to visit: every (even zero-length) segment starting at ws, else the one holding ws.
        k = np.searchsorted(seg_t, ws, side="left")
        if k == ns or seg_t[k] != ws:
            k -= 1
        pk = np.searchsorted(p_end, ws, side="right")
        if k < 0:
            # Before the first state change nothing is known about the machine.
            t_first = seg_t[0] if ns > 0 else we
            b = min(we, t_first)
            if b > ws:
                flags |= FLAG_NO_STATE
                c_a, pk = _covered(ws, pk, p_start, p_end, p_cum)
                c_b, pk = _covered(b, pk, p_start, p_end, p_cum)
                inside = c_b - c_a
                planned += inside
                fail_loss += inside
                out_t[w, C_UNKNOWN] += inside
                out_t[w, C_PLANNED] += (b - ws) - inside
            k = 0
        # Branch-light walk over the segments: every piece adds its in-calendar time to its category
        # (run and planned categories: all of it) and the rest to "planned"; totals are derived below.
        c_a, pk = _covered(max(seg_t[k], ws) if k < ns else ws, pk, p_start, p_end, p_cum)
        while k < ns and seg_t[k] < we:
            a = max(seg_t[k], ws)
            b = min(seg_t[k + 1] if k + 1 < ns else horizon, we)
            e = eff[k]
            first = ev_first[k] and seg_t[k] >= ws
            micro = e == C_MICRO
            micros += first and micro
            stops += first and not micro
            failures += first and not micro and ev_fail[k]
            dur = b - a
            c_b, pk = _covered(b, pk, p_start, p_end, p_cum)
            inside = c_b - c_a if _is_stop(e) else dur
            c_a = c_b
            acc[e] += inside
            acc_out += dur - inside
            repair += dur if ev_fail[k] else 0
            k += 1
        run += acc[C_RUNNING] + acc[C_REDUCED] + acc[C_MICRO]
        minor += acc[C_MICRO]
        setup_loss += acc[C_SETUP]
        for c in range(N_CAT):
            out_t[w, c] += acc[c]
            if c != C_PLANNED:
                planned += acc[c]
            if c > C_MICRO and c < C_PLANNED and c != C_SETUP:
                fail_loss += acc[c]
            acc[c] = 0
        out_t[w, C_PLANNED] += acc_out

        # Counters: units reported by samples in (ws, we], measured from the last sample at or before ws.
        lo = np.searchsorted(c_t[c0:c1], ws, side="right") - 1
        hi = np.searchsorted(c_t[c0:c1], we, side="right") - 1
        total = 0
        good = 0
        ideal = 0.0
        rej_startup = 0.0
        rej_other = 0.0
        if lo < 0 and hi >= 0:
            flags |= FLAG_NO_COUNT_BASELINE
        rp = r0 - 1
        sp = 0
        if hi > max(lo, 0):
            t_base = c_t[c0 + max(lo, 0)]
            rp = r0 + np.searchsorted(r_t[r0:r1], t_base, side="right") - 1
            sp = max(np.searchsorted(seg_t, t_base, side="right") - 1, 0)
        for q in range(max(lo, 0) + 1, hi + 1):
            idx = c0 + q
            t = c_t[idx]
            dt, f1 = _delta(c_total[idx - 1], c_total[idx], modulus)
            dg, f2 = _delta(c_good[idx - 1], c_good[idx], modulus)
            flags |= f1 | f2
            total += dt
            good += dg
            while rp + 1 < r1 and r_t[rp + 1] <= t:
                rp += 1
            if rp >= r0 and r_val[rp] > 0.0:
                ict = 60.0 / r_val[rp]
            else:
                ict = 0.0
                if dt > 0:
                    flags |= FLAG_NO_IDEAL_RATE
            ideal += dt * ict
            rej = dt - dg
            if rej > 0:
                while sp + 1 < ns and seg_t[sp + 1] <= t:
                    sp += 1
                in_startup = (
                    ns > 0 and seg_t[sp] <= t and eff[sp] <= C_MICRO and block_restart[sp]
                    and t - block_start[sp] < startup_ms
                )
                if in_startup:
                    rej_startup += rej * ict
                else:
                    rej_other += rej * ict

        all_ms = we - ws
        planned_s = planned / 1000.0
        run_s = run / 1000.0
        o = out_f[w]
        o[F_PLANNED_S] = planned_s
        o[F_RUN_S] = run_s
        o[F_ALL_S] = all_ms / 1000.0
        o[F_IDEAL_S] = ideal
        o[F_AVAILABILITY] = run_s / planned_s if planned > 0 else np.nan
        if run > 0:
            perf = ideal / run_s
        elif ideal > 0.0:
            perf = np.inf
        else:
            perf = np.nan
        if perf > 1.0:
            perf = 1.0
            flags |= FLAG_PERFORMANCE_CAPPED
        o[F_PERFORMANCE] = perf
        if total > 0:
            qual = good / total
            if qual > 1.0:
                qual = 1.0
                flags |= FLAG_QUALITY_CAPPED
        else:
            qual = np.nan
        o[F_QUALITY] = qual
        if planned <= 0:
            oee = np.nan
        elif total == 0:
            oee = 0.0
        else:
            oee = o[F_AVAILABILITY] * perf * qual
        o[F_OEE] = oee
        o[F_TEEP] = oee * planned / all_ms if all_ms > 0 else np.nan
        o[F_LOSS_FAILURE_S] = fail_loss / 1000.0
        o[F_LOSS_SETUP_S] = setup_loss / 1000.0
        o[F_LOSS_MINOR_S] = minor / 1000.0
        o[F_LOSS_SPEED_S] = max((run - minor) / 1000.0 - ideal, 0.0)
        o[F_LOSS_DEFECT_S] = rej_other
        o[F_LOSS_STARTUP_S] = rej_startup
        o[F_REPAIR_S] = repair / 1000.0
        o[F_MTBF_S] = run_s / failures if failures > 0 else np.nan
        o[F_MTTR_S] = repair / 1000.0 / failures if failures > 0 else np.nan
        for c in range(N_CAT):
            out_t[w, c] = out_t[w, c] / 1000.0
        r = out_i[w]
        r[I_TOTAL] = total
        r[I_GOOD] = good
        r[I_STOPS] = stops
        r[I_FAILURES] = failures
        r[I_MICROSTOPS] = micros
        r[I_FLAGS] = flags


@njit(cache=True, parallel=True)
def oee_kernel(
    st_off: np.ndarray, st_t: np.ndarray, st_code: np.ndarray,
    c_off: np.ndarray, c_t: np.ndarray, c_total: np.ndarray, c_good: np.ndarray,
    r_off: np.ndarray, r_t: np.ndarray, r_val: np.ndarray,
    p_off: np.ndarray, p_start: np.ndarray, p_end: np.ndarray,
    w_off: np.ndarray, w_start: np.ndarray, w_end: np.ndarray,
    ranges: np.ndarray, ov_codes: np.ndarray, ov_cats: np.ndarray,
    microstop_ms: int, startup_ms: int, modulus: int,
    out_f: np.ndarray, out_i: np.ndarray, out_t: np.ndarray,
) -> None:
    """Fill out_f/out_i/out_t (zeroed, one row per window) for every machine; inputs validated by the caller."""
    n = st_off.size - 1
    for m in prange(n):
        _machine(
            m,
            st_t, st_code, st_off[m], st_off[m + 1],
            c_t, c_total, c_good, c_off[m], c_off[m + 1],
            r_t, r_val, r_off[m], r_off[m + 1],
            p_start[p_off[m]:p_off[m + 1]], p_end[p_off[m]:p_off[m + 1]],
            w_start, w_end, w_off[m], w_off[m + 1],
            ranges, ov_codes, ov_cats,
            microstop_ms, startup_ms, modulus,
            out_f, out_i, out_t,
        )
