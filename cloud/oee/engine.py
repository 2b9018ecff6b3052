"""Per-machine OEE state kept in memory and computed incrementally with the analytics kernel.

Every window (hour, shift, day) is a union of "atoms": the local hour grid split at shift and day edges.
The kernel runs only over the atoms that new data touched; a window is the sum of its atoms' additive
figures (planned, run, ideal time, counts, losses), so ratios are derived from sums and never averaged.
Buffers hold only the data the atom that is still open needs (plus a baseline), so memory stays small.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from zhizao.analytics import Category, OeeConfig, fleet_oee
from zhizao.analytics.oee import kernel as k
from zhizao.cloud.oee.calendar import DAY_MS, WINDOW_KINDS, SiteCalendar

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

# Column order of a sums vector (and of the numeric columns of oee_windows); FLAGS is OR-ed, not added.
# In an atom, loss_speed_s is not clipped at 0 (an hour above the ideal rate makes it negative) so that it
# adds up; a window's row takes it, and the performance/quality caps, from the window's own sums.
SUM_FIELDS = (
    "all_s", "planned_s", "run_s", "ideal_s", "good_ideal_s", "total", "good",
    "loss_failure_s", "loss_setup_s", "loss_minor_s", "loss_speed_s", "loss_defect_s", "loss_startup_s",
    "stops", "failures", "microstops", "loss_material_s", "repair_s", "flags",
)  # fmt: skip
FLAGS = len(SUM_FIELDS) - 1
_IX = {name: i for i, name in enumerate(SUM_FIELDS)}
# Flags a window derives from its own sums, never from its pieces.
_DERIVED_FLAGS = k.FLAG_PERFORMANCE_CAPPED | k.FLAG_QUALITY_CAPPED
_EMPTY = np.zeros(0, np.int64)


def _cat(a: NDArray[np.generic], b: NDArray[np.generic]) -> NDArray[np.generic]:
    return np.concatenate([a, b]) if a.size else b


@dataclass
class MachineState:
    """Buffers, computed atoms and bookkeeping of one machine."""

    site: str
    line: str
    machine: str
    st_t: I64 = field(default_factory=lambda: _EMPTY.copy())
    st_c: I64 = field(default_factory=lambda: _EMPTY.copy())
    ct_t: I64 = field(default_factory=lambda: _EMPTY.copy())
    ct_total: I64 = field(default_factory=lambda: _EMPTY.copy())
    ct_good: I64 = field(default_factory=lambda: _EMPTY.copy())
    rt_t: I64 = field(default_factory=lambda: _EMPTY.copy())
    rt_v: F64 = field(default_factory=lambda: np.zeros(0, np.float64))
    reasons: dict[int, int] = field(default_factory=dict)  # stop start ms -> code given by an operator
    last_total: int | None = None  # last raw values, to forward-fill counters that arrive on separate tags
    last_good: int | None = None
    horizon: int = -(2**62)  # latest sample time seen for the machine
    dirty_from: int | None = None  # earliest instant whose atoms need computing
    complete_from: int = 2**62  # atoms from here on are all in memory
    buffer_from: int = -(2**62)  # the buffers hold every sample needed to recompute atoms from here on
    atoms: dict[int, tuple[int, F64]] = field(default_factory=dict)  # atom start -> (end, sums)
    loaded: bool = False

    def mark(self, t: int) -> None:
        """Data at or after `t` changed: recompute from the atom holding min(t, previous horizon)."""
        lo = min(t, self.horizon) if self.horizon > -(2**62) else t
        self.dirty_from = lo if self.dirty_from is None else min(self.dirty_from, lo)

    def append_states(self, t: I64, c: I64) -> tuple[I64, I64, int | None]:
        """Append state samples in time order; returns the changes kept and the time of any late sample."""
        last_t = int(self.st_t[-1]) if self.st_t.size else None
        late = None
        if last_t is not None:
            older = t < last_t
            if older.any():
                late = int(t[older].min())
            t, c = t[~older], c[~older]
            if t.size and t[0] == last_t:
                t, c = t[1:], c[1:]
        prev = int(self.st_c[-1]) if self.st_c.size else -1
        if t.size:
            keep = np.ones(t.size, np.bool_)
            keep[1:] = c[1:] != c[:-1]
            keep[0] = c[0] != prev
            t, c = t[keep], c[keep]
            self.st_t = _cat(self.st_t, t)  # type: ignore[assignment]
            self.st_c = _cat(self.st_c, c)  # type: ignore[assignment]
        return t, c, late

    def append_counts(self, t_tot: I64, v_tot: I64, t_good: I64, v_good: I64) -> int | None:
        """Merge the two counter tags (forward-filled onto the union of their times); returns a late time."""
        if not (t_tot.size or t_good.size):
            return None
        last_t = int(self.ct_t[-1]) if self.ct_t.size else None
        times = np.union1d(t_tot, t_good)
        total = _ffill(times, t_tot, v_tot, self.last_total)
        good = _ffill(times, t_good, v_good, self.last_good)
        if t_tot.size:
            self.last_total = int(v_tot[-1])
        if t_good.size:
            self.last_good = int(v_good[-1])
        if self.last_good is None:  # a machine without a good counter: everything counts as good
            good = total
        valid = (total >= 0) & (good >= 0)
        times, total, good = times[valid], total[valid], good[valid]
        late = None
        if last_t is not None:
            older = times < last_t
            if older.any():
                late = int(times[older].min())
            # The other counter of the last instant, in a later commit: complete that sample, not drop it.
            same = np.flatnonzero(times == last_t)
            if same.size:
                self.ct_total[-1], self.ct_good[-1] = total[same[-1]], good[same[-1]]
            keep = times > last_t
            times, total, good = times[keep], total[keep], good[keep]
        self.ct_t = _cat(self.ct_t, times)  # type: ignore[assignment]
        self.ct_total = _cat(self.ct_total, total)  # type: ignore[assignment]
        self.ct_good = _cat(self.ct_good, good)  # type: ignore[assignment]
        return late

    def append_rates(self, t: I64, v: F64) -> int | None:
        """Append ideal-rate samples; returns a late time."""
        last_t = int(self.rt_t[-1]) if self.rt_t.size else None
        late = None
        if last_t is not None:
            older = t < last_t
            if older.any():
                late = int(t[older].min())
            t, v = t[t > last_t], v[t > last_t]
        self.rt_t = _cat(self.rt_t, t)  # type: ignore[assignment]
        self.rt_v = _cat(self.rt_v, v)  # type: ignore[assignment]
        return late

    def open_stop_start(self, config: OeeConfig) -> int | None:
        """Start of the stop event (a run of consecutive stop states) the machine is in, or None."""
        if not self.st_t.size:
            return None
        codes = self.codes()
        i = codes.size - 1
        while i >= 0 and _stop_category(config, int(codes[i])):
            i -= 1
        return int(self.st_t[i + 1]) if i + 1 < codes.size else None

    def codes(self) -> I64:
        """State codes with operator-given reasons applied."""
        if not self.reasons or not self.st_t.size:
            return self.st_c
        out = self.st_c.copy()
        for ts, code in self.reasons.items():
            idx = np.flatnonzero(self.st_t == ts)
            out[idx] = code
        return out

    def trim(self, cal: SiteCalendar) -> None:
        """Drop buffered data and atoms no open window needs any more."""
        if self.horizon <= -(2**62) or not self.atoms:
            return
        keep_from = cal.earliest_start(self.horizon)
        for start in [s for s in self.atoms if s < keep_from]:
            del self.atoms[start]
        self.complete_from = max(self.complete_from, keep_from)
        open_atom = max(s for s in self.atoms if s <= self.horizon) if self.atoms else keep_from
        self.buffer_from = max(self.buffer_from, open_atom)
        i = _baseline(self.ct_t, open_atom)
        self.ct_t, self.ct_total, self.ct_good = self.ct_t[i:], self.ct_total[i:], self.ct_good[i:]
        i = _baseline(self.rt_t, open_atom)
        self.rt_t, self.rt_v = self.rt_t[i:], self.rt_v[i:]
        # States reach a day further back: a stop's length (microstop or not) depends on where it began.
        i = _baseline(self.st_t, open_atom - DAY_MS)
        self.st_t, self.st_c = self.st_t[i:], self.st_c[i:]

    def window_sums(self, cal: SiteCalendar, lo: int, hi: int) -> list[tuple[str, int, int, F64]]:
        """(kind, start, end, sums) of every window overlapping [lo, hi] whose atoms are all in memory."""
        out = []
        starts = np.array(sorted(self.atoms), np.int64)
        for kind in WINDOW_KINDS:
            for ws, we in cal.windows(kind, lo, hi + 1):
                if ws < self.complete_from:
                    continue
                sel = starts[(starts >= ws) & (starts < we)]
                if not sel.size or sel[0] != ws:  # only windows whose atoms are there from their start
                    continue
                rows = np.stack([self.atoms[int(s)][1] for s in sel])
                out.append((kind, ws, we, window_of(rows)))
        return out


def _stop_category(config: OeeConfig, code: int) -> bool:
    """Whether the kernel treats a state as a stop (microstop or an unplanned stop category)."""
    return Category.MICROSTOP <= config.category_of(code) < Category.PLANNED


def window_of(atoms: F64) -> F64:
    """A window's sums from its atoms' rows: additive figures summed; the reduced-speed loss and the
    performance and quality caps from the window's own sums (not from its pieces); other flags OR-ed."""
    sums: F64 = atoms.sum(axis=0)
    flags = int(np.bitwise_or.reduce(atoms[:, FLAGS].astype(np.int64))) & ~_DERIVED_FLAGS
    if sums[_IX["ideal_s"]] > sums[_IX["run_s"]]:
        flags |= k.FLAG_PERFORMANCE_CAPPED
    if sums[_IX["good"]] > sums[_IX["total"]]:
        flags |= k.FLAG_QUALITY_CAPPED
    sums[FLAGS] = float(flags)
    sums[_IX["loss_speed_s"]] = max(sums[_IX["loss_speed_s"]], 0.0)
    return sums


def _baseline(t: I64, t0: int) -> int:
    """Index of the last sample at or before `t0` (the baseline kept when older samples are dropped)."""
    return max(int(np.searchsorted(t, t0, side="right")) - 1, 0)


def _ffill(times: I64, t: I64, v: I64, before: int | None) -> I64:
    """Values of the series (t, v) at `times`, holding the last value; `before` (or -1) ahead of the first."""
    idx = np.searchsorted(t, times, side="right") - 1
    out = np.where(idx >= 0, v[np.maximum(idx, 0)] if v.size else -1, -1 if before is None else before)
    return out.astype(np.int64)


def compute_atoms(machines: list[tuple[MachineState, SiteCalendar]]) -> list[tuple[int, int]]:
    """Run the kernel once over the dirty atoms of all given machines; store the sums; return (lo, hi) per machine."""
    args: dict[str, list[I64 | F64]] = {n: [] for n in (
        "state_time", "state_code", "count_time", "count_total", "count_good", "rate_time", "rate_per_min",
        "plan_start", "plan_end", "window_start", "window_end")}  # fmt: skip
    offs: dict[str, list[int]] = {n: [0] for n in ("state", "count", "rate", "plan", "window")}
    spans: list[tuple[int, int]] = []
    atom_keys: list[list[int]] = []
    for m, cal in machines:
        lo = m.dirty_from if m.dirty_from is not None else m.horizon
        hi = max(m.horizon, lo)
        edges = cal.atom_edges(lo, hi + 1)
        ws, we = edges[:-1], np.minimum(edges[1:], hi)
        keep = we > ws
        ws, we = ws[keep], we[keep]
        ps, pe = cal.plan_intervals(int(edges[0]), int(edges[-1])) if edges.size else (_EMPTY, _EMPTY)
        for name, arr in (("state_time", m.st_t), ("state_code", m.codes()), ("count_time", m.ct_t),
                          ("count_total", m.ct_total), ("count_good", m.ct_good), ("rate_time", m.rt_t),
                          ("rate_per_min", m.rt_v), ("plan_start", ps), ("plan_end", pe),
                          ("window_start", ws), ("window_end", we)):  # fmt: skip
            args[name].append(arr)
        for group, arr in (("state", m.st_t), ("count", m.ct_t), ("rate", m.rt_t), ("plan", ps), ("window", ws)):
            offs[group].append(offs[group][-1] + arr.size)
        spans.append((lo, hi))
        atom_keys.append(ws.tolist())
    if not machines:
        return spans
    config = machines[0][1].config
    flat = {n: np.concatenate(v) if v else _EMPTY for n, v in args.items()}
    res = fleet_oee(config, **{f"{g}_offsets": np.array(o, np.int64) for g, o in offs.items()}, **flat)
    sums = result_sums(res.floats, res.ints)
    row = 0
    for (m, _), keys in zip(machines, atom_keys, strict=True):
        ends = flat["window_end"][row:row + len(keys)]
        for j, start in enumerate(keys):
            m.atoms[start] = (int(ends[j]), sums[row + j])
        row += len(keys)
        m.dirty_from = None
    return spans


def result_sums(floats: F64, ints: I64) -> F64:
    """The kernel's per-window output as sums vectors (SUM_FIELDS order)."""
    f, i = floats, ints.astype(np.float64)
    ideal = f[:, k.F_IDEAL_S]
    good_ideal = ideal - f[:, k.F_LOSS_DEFECT_S] - f[:, k.F_LOSS_STARTUP_S]
    # Unclipped: planned time = stops cutting run time + stops in run time + reduced speed + ideal time.
    speed = (f[:, k.F_PLANNED_S] - f[:, k.F_LOSS_FAILURE_S] - f[:, k.F_LOSS_SETUP_S] - f[:, k.F_LOSS_MATERIAL_S]
             - f[:, k.F_LOSS_MINOR_S] - ideal)
    return np.column_stack([
        f[:, k.F_ALL_S], f[:, k.F_PLANNED_S], f[:, k.F_RUN_S], ideal, good_ideal, i[:, k.I_TOTAL], i[:, k.I_GOOD],
        f[:, k.F_LOSS_FAILURE_S], f[:, k.F_LOSS_SETUP_S], f[:, k.F_LOSS_MINOR_S], speed,
        f[:, k.F_LOSS_DEFECT_S], f[:, k.F_LOSS_STARTUP_S], i[:, k.I_STOPS], i[:, k.I_FAILURES],
        i[:, k.I_MICROSTOPS], f[:, k.F_LOSS_MATERIAL_S], f[:, k.F_REPAIR_S], i[:, k.I_FLAGS],
    ])  # fmt: skip


def ratios(sums: F64) -> dict[str, float | None]:
    """Availability, performance, quality, OEE and TEEP of a sums vector (None where undefined)."""
    s = dict(zip(SUM_FIELDS, sums.tolist(), strict=True))
    planned, run, ideal = s["planned_s"], s["run_s"], s["ideal_s"]
    a = run / planned if planned > 0 else None
    p = min(1.0, ideal / run) if run > 0 else (1.0 if ideal > 0 else None)
    q = s["good"] / s["total"] if s["total"] > 0 else None  # one machine: good / total, as the kernel
    oee = None if planned <= 0 else (0.0 if s["total"] == 0 else (a or 0.0) * (p or 0.0) * (q or 0.0))
    teep = oee * planned / s["all_s"] if oee is not None and s["all_s"] > 0 else None
    return {"availability": a, "performance": p, "quality": q, "oee": oee, "teep": teep}
