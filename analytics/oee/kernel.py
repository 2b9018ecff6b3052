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
F_LOSS_MATERIAL_S = 18
N_FLOAT = 19

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
C_MATERIAL = 5
C_UNKNOWN = 8
C_PLANNED = 9
N_CAT = 10
NO_END = np.iinfo(np.int64).max


@njit(cache=True, error_model="numpy")
def _is_stop(cat: int) -> bool:
    # Stops: microstop and every unplanned stop category (FAILURE..UNKNOWN).
    return cat >= C_MICRO and cat < C_PLANNED


@njit(cache=True, error_model="numpy")
def _classify(code: int, ranges: np.ndarray, ov_codes: np.ndarray, ov_cats: np.ndarray) -> int:
    if ov_codes.size > 0:
        k = np.searchsorted(ov_codes, code)
        if k < ov_codes.size and ov_codes[k] == code:
            return int(ov_cats[k])
    return int(ranges[code // 10000])


@njit(cache=True, error_model="numpy")
def _covered(t: int, k: int, p_start: np.ndarray, p_end: np.ndarray, p_cum: np.ndarray) -> tuple[int, int]:
    # Planned-calendar milliseconds before t, and the index of the first interval ending after t.
    # Callers ask for non-decreasing t within a window, so the index only moves forward from `k`.
    while k < p_end.size and p_end[k] <= t:
        k += 1
    c = p_cum[k]
    if k < p_start.size and p_start[k] < t:
        c += t - p_start[k]
    return c, k


@njit(cache=True, error_model="numpy")
def _gallop(ct: np.ndarray, q: int, q_end: int, t: int) -> int:
    # First index in [q, q_end] whose time is >= t (q_end if none). Pieces are short, so search
    # outwards from q (1, 2, 4, ... samples) before bisecting, instead of over the whole machine.
    step = 1
    lo = q
    while lo + step < q_end and ct[lo + step] < t:
        lo += step
        step *= 2
    hi = min(lo + step, q_end)
    while lo < hi:
        mid = (lo + hi) >> 1
        if ct[mid] < t:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, error_model="numpy")
def _scan(tot: np.ndarray, good: np.ndarray, modulus: int) -> tuple[int, int, int, int]:
    # Sum of counter increases over samples 1.. of the views (each against the one before): total,
    # good, rejects (per sample, never negative) and reset/wrap flags. Selects only: it vectorises.
    half = modulus // 2
    s_t = 0
    s_g = 0
    s_r = 0
    n_reset = 0
    n_wrap = 0
    for i in range(1, tot.size):
        pt = tot[i - 1]
        ct = tot[i]
        pg = good[i - 1]
        cg = good[i]
        d_t = ct - pt
        d_g = cg - pg
        w_t = (d_t < 0) & (modulus > 0) & (pt - ct > half)
        w_g = (d_g < 0) & (modulus > 0) & (pg - cg > half)
        r_t = (d_t < 0) & ~w_t
        r_g = (d_g < 0) & ~w_g
        d_t = d_t + modulus if w_t else (ct if r_t else d_t)
        d_g = d_g + modulus if w_g else (cg if r_g else d_g)
        s_t += d_t
        s_g += d_g
        s_r += max(d_t - d_g, 0)
        n_reset += r_t | r_g
        n_wrap += w_t | w_g
    flags = (FLAG_COUNTER_RESET if n_reset > 0 else 0) | (FLAG_COUNTER_WRAP if n_wrap > 0 else 0)
    return s_t, s_g, s_r, flags


@njit(cache=True, error_model="numpy")
def _machine(
    m: int,
    st_t: np.ndarray, st_code: np.ndarray, s0: int, s1: int,
    c_t: np.ndarray, c_total: np.ndarray, c_good: np.ndarray, c0: int, c1: int,
    r_t: np.ndarray, r_val: np.ndarray, r0: int, r1: int,
    p_start: np.ndarray, p_end: np.ndarray,
    w_start: np.ndarray, w_end: np.ndarray, w0: int, w1: int,
    ranges: np.ndarray, ov_codes: np.ndarray, ov_cats: np.ndarray,
    microstop_ms: int, startup_ms: int, modulus: int, material_in_run: bool,
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
    su_start = np.empty(ns, np.int64)
    su_end = np.empty(ns, np.int64)
    if ov_codes.size > 0:
        for i in range(ns):
            eff[i] = _classify(st_code[s0 + i], ranges, ov_codes, ov_cats)
    else:
        for i in range(ns):
            eff[i] = ranges[st_code[s0 + i] // 10000]
    # Three straight passes with selects instead of branches (state sequences mispredict badly):
    # forward: event start and "failure so far"; backward: event end and "failure anywhere"; then decide.
    ev_start = np.empty(ns, np.int64)
    ev_end = np.empty(ns, np.int64)
    prev_stop = False
    start = 0
    fail = False
    for i in range(ns):
        st = _is_stop(eff[i])
        cont = st & prev_stop
        start = start if cont else seg_t[i]
        fail = (fail & cont) | (eff[i] == C_FAILURE)
        ev_start[i] = start
        ev_fail[i] = fail
        ev_first[i] = st & ~prev_stop
        prev_stop = st
    next_stop = False
    end = horizon
    fail = False
    for i in range(ns - 1, -1, -1):
        st = _is_stop(eff[i])
        cont = st & next_stop
        end = end if cont else (seg_t[i + 1] if i + 1 < ns else horizon)
        fail = (fail & cont) | ev_fail[i]
        ev_end[i] = end
        ev_fail[i] = fail
        next_stop = st
    for i in range(ns):
        st = _is_stop(eff[i])
        micro = st & (ev_end[i] - ev_start[i] < microstop_ms)
        eff[i] = C_MICRO if micro else eff[i]
        ev_fail[i] = st & ev_fail[i] & ~micro
    # Startup intervals: the first `startup_ms` of each run block (consecutive run/microstop segments)
    # that follows a real stop or planned time; rejects counted in them are startup rejects.
    n_su = 0
    if startup_ms > 0:
        k = 1
        while k < ns:
            if eff[k] <= C_MICRO and eff[k - 1] > C_MICRO:
                j = k
                while j < ns and eff[j] <= C_MICRO:
                    j += 1
                end = seg_t[j] if j < ns else NO_END
                stop = min(seg_t[k] + startup_ms, end)
                if stop > seg_t[k]:
                    su_start[n_su] = seg_t[k]
                    su_end[n_su] = stop
                    n_su += 1
                k = j
            else:
                k += 1

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
            # Before the first state change the machine was not monitored: that time is excluded like
            # planned time (flagged), never charged to it as a failure.
            t_first = seg_t[0] if ns > 0 else we
            b = min(we, t_first)
            if b > ws:
                flags |= FLAG_NO_STATE
                out_t[w, C_PLANNED] += b - ws
            k = 0
        # Branch-light walk over the segments: every piece adds its in-calendar time to its category
        # (run and planned categories: all of it) and the rest to "planned"; totals are derived below.
        c_a, pk = _covered(max(seg_t[k], ws) if k < ns else ws, pk, p_start, p_end, p_cum)
        while k < ns and seg_t[k] < we:
            a = max(seg_t[k], ws)
            b = min(seg_t[k + 1] if k + 1 < ns else horizon, we)
            e = eff[k]
            first = ev_first[k] & (seg_t[k] >= ws)
            micro = e == C_MICRO
            micros += first & micro
            stops += first & ~micro
            failures += first & ~micro & ev_fail[k]
            dur = b - a
            c_b, pk = _covered(b, pk, p_start, p_end, p_cum)
            inside = c_b - c_a if _is_stop(e) else dur
            c_a = c_b
            acc[e] += inside
            acc_out += dur - inside
            repair += dur if ev_fail[k] else 0
            k += 1
        material = acc[C_MATERIAL]
        run += acc[C_RUNNING] + acc[C_REDUCED] + acc[C_MICRO] + (material if material_in_run else 0)
        minor += acc[C_MICRO]
        setup_loss += acc[C_SETUP]
        for c in range(N_CAT):
            out_t[w, c] += acc[c]
            if c != C_PLANNED:
                planned += acc[c]
            if c > C_MICRO and c < C_PLANNED and c != C_SETUP and c != C_MATERIAL:
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
        # Pieces of constant ideal rate and constant startup status, each summed in one SIMD-friendly scan.
        q = max(lo, 0) + 1
        q_end = hi + 1
        if q < q_end:
            ct = c_t[c0:c1]
            t = ct[q]
            rp = r0 + np.searchsorted(r_t[r0:r1], t, side="right") - 1
            up = np.searchsorted(su_end[:n_su], t, side="right")
            while q < q_end:
                nxt = NO_END
                if rp + 1 < r1:
                    nxt = r_t[rp + 1]
                in_su = up < n_su and su_start[up] <= t
                if in_su:
                    nxt = min(nxt, su_end[up])
                elif up < n_su:
                    nxt = min(nxt, su_start[up])
                q_next = _gallop(ct, q, q_end, nxt)
                dt, dg, rej, f = _scan(c_total[c0 + q - 1:c0 + q_next], c_good[c0 + q - 1:c0 + q_next], modulus)
                flags |= f
                ict = 60.0 / r_val[rp] if rp >= r0 and r_val[rp] > 0.0 else 0.0
                if ict == 0.0 and dt > 0:
                    flags |= FLAG_NO_IDEAL_RATE
                total += dt
                good += dg
                ideal += dt * ict
                if in_su:
                    rej_startup += rej * ict
                else:
                    rej_other += rej * ict
                q = q_next
                if q < q_end:
                    t = ct[q]
                    while rp + 1 < r1 and r_t[rp + 1] <= t:
                        rp += 1
                    while up < n_su and su_end[up] <= t:
                        up += 1

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
        # Run time beyond the ideal time of the units made, minus the stops that stay in run time.
        o[F_LOSS_SPEED_S] = max((run - minor - (material if material_in_run else 0)) / 1000.0 - ideal, 0.0)
        o[F_LOSS_MATERIAL_S] = material / 1000.0
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


@njit(cache=True, parallel=True, error_model="numpy")
def oee_kernel(
    st_off: np.ndarray, st_t: np.ndarray, st_code: np.ndarray,
    c_off: np.ndarray, c_t: np.ndarray, c_total: np.ndarray, c_good: np.ndarray,
    r_off: np.ndarray, r_t: np.ndarray, r_val: np.ndarray,
    p_off: np.ndarray, p_start: np.ndarray, p_end: np.ndarray,
    w_off: np.ndarray, w_start: np.ndarray, w_end: np.ndarray,
    ranges: np.ndarray, ov_codes: np.ndarray, ov_cats: np.ndarray,
    microstop_ms: int, startup_ms: int, modulus: int, material_in_run: bool,
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
            microstop_ms, startup_ms, modulus, material_in_run,
            out_f, out_i, out_t,
        )
