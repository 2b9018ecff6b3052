"""The factory model: numpy arrays over every machine of a scenario, stepped on a fixed simulated clock.

Step semantics: the values published at `ts_k = start + k * dt` are the state in effect from `ts_k` on and the
counters through `ts_k` (production of step k-1 -> k follows the state published at `ts_{k-1}`). Everything
random comes from one `numpy.random.Generator(PCG64(seed))`, drawn in a fixed order, so a seed and a start time
give the same values and timestamps on every run, at any speed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from zhizao.broker.contract.calendar import CalendarClock
from zhizao.broker.contract.states import NO_ORDER, UNSPECIFIED_STOP
from zhizao.edge.sim.faults import ABORTED, HELD, SUSPENDED, Faults, StopEvents
from zhizao.edge.sim.nodes import (
    T_DEFECTIVE,
    T_DESIGN,
    T_PROCESSED,
    T_REASON,
    T_SETPOINT,
    T_SPEED,
    T_STATE,
    NodeTable,
    build_node_table,
)
from zhizao.edge.sim.timeline import Script, TimelineError
from zhizao.seeds.model import Scenario
from zhizao.seeds.timeline import Timeline

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

STOPPED, IDLE, EXECUTE = 2, 4, 6
COMMANDED_STOP = UNSPECIFIED_STOP  # an operator pressed Stop
MICROSTOP = 50000
MAX_SPEED_FACTOR = 1.5  # MachSpeed is clamped to [0, 1.5 x ideal rate]


class OrderRefused(ValueError):
    """The machine cannot take a production order now (it is in a failure)."""


@dataclass(frozen=True)
class Changes:
    """The values that changed at one sim instant: node indices and new values (ints travel as float64)."""

    ts_ms: int
    index: I64
    value: F64


def wrap_int32(x: I64) -> I64:
    """Two's-complement Int32 wrap, like a PLC counter."""
    return ((x + 2**31) % 2**32) - 2**31


class FactoryModel:
    """All machines of a scenario as arrays; `initial()` then `step()` yield the value changes per sim step."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int,
        start_ms: int,
        dt_ms: int = 1000,
        timeline: Timeline | list[Timeline] | None = None,
    ) -> None:
        if dt_ms < 1:
            raise ValueError(f"dt_ms: {dt_ms} must be at least 1 ms")
        self.table: NodeTable = build_node_table(scenario)
        t = self.table
        self.dt_ms, self.dt_s, self.start_ms, self.k = dt_ms, dt_ms / 1000.0, start_ms, 0
        self.rng = np.random.Generator(np.random.PCG64(seed))
        ms = t.machines
        n = len(ms)
        self.ideal = np.array([m.ideal_rate_per_min for m in ms])
        self.setpoint = self.ideal * np.array([m.nominal_speed for m in ms])
        self.reject = np.array([m.reject_rate for m in ms])
        self.counter0 = np.array([m.counter_start for m in ms], dtype=np.int64)
        self.mtbf_s = np.array([m.behaviour.mtbf_h * 3600 for m in ms])
        self.repair_median_s = np.array([m.behaviour.repair.median_min * 60 for m in ms])
        self.repair_spread = np.array([m.behaviour.repair.spread for m in ms])
        self.failure_code = np.array([m.behaviour.failure_code for m in ms], dtype=np.int64)
        self.micro_rate = np.array([m.behaviour.microstops_per_h / 3600 for m in ms])
        self.micro_min = np.array([m.behaviour.microstop_s.min for m in ms])
        self.micro_max = np.array([m.behaviour.microstop_s.max for m in ms])
        every = [m.behaviour.changeover_every_h for m in ms]
        self.change_every_s = np.array([e * 3600 if e else np.inf for e in every])
        self.change_s = np.array([m.behaviour.changeover_min * 60 for m in ms])
        self.change_code = np.array([m.behaviour.changeover_code for m in ms], dtype=np.int64)
        self.since_change = np.zeros(n)
        self.fail_p = self.dt_s / self.mtbf_s  # per-step probabilities (exponential inter-arrival, small dt)
        self.micro_p = self.micro_rate * self.dt_s
        self.run_cmd = np.ones(n, dtype=np.bool_)
        self.was_reset = np.zeros(n, dtype=np.bool_)
        # Production orders (run_order): good units still to make (inf: no order, run on), and "made, now idle".
        self.order_left = np.full(n, np.inf)
        self.order_done = np.zeros(n, dtype=np.bool_)
        self.state = np.full(n, STOPPED, dtype=np.int64)
        self.reason = np.zeros(n, dtype=np.int64)
        self.down_left = np.zeros(n)
        self.down_state = np.zeros(n, dtype=np.int64)
        self.down_code = np.zeros(n, dtype=np.int64)
        self.produced = np.zeros(n)  # fractional units made since the start or the last Reset
        self.processed = np.zeros(n, dtype=np.int64)
        self.defective = np.zeros(n, dtype=np.int64)
        self.speed = np.zeros(n)
        sig = [s for m in ms for s in m.signals]
        self.s_typ = np.array([s.typical for s in sig])
        self.s_idle = np.array([s.typical if s.idle is None else s.idle for s in sig])
        self.s_noise = np.array([s.noise for s in sig])
        self.s_res = np.array([s.resolution for s in sig])
        self.s_alpha = np.array([1.0 if s.tau_s == 0 else -math.expm1(-self.dt_s / s.tau_s) for s in sig])
        self.s_true = self.s_idle.copy()
        self.faults = Faults(t)
        self.clocks = [CalendarClock(site.calendar, site.timezone) for site in scenario.sites]
        self.scripts: list[tuple[Script, I64]] = []  # each timeline and the machines that follow it
        for i, tl in enumerate([timeline] if isinstance(timeline, Timeline) else timeline or []):
            self._attach(tl, i)
        self.values = np.zeros(t.size)
        self.published = np.full(t.size, np.nan)
        # MachSpeed is an input after the first publish: client writes own it, the model only reads it.
        self.auto = np.ones(t.size, dtype=np.bool_)
        self.auto[t.packml[:, T_SETPOINT]] = False

    def _attach(self, timeline: Timeline, n: int) -> None:
        paths = self.table.machine_paths
        taken = {int(m) for _, ms in self.scripts for m in ms}
        idx = []
        for i, path in enumerate(timeline.machines):
            if path not in paths:
                raise TimelineError(f"machines[{i}]: {path!r} is not a machine of the scenario")
            m_i = paths.index(path)
            if m_i in taken or m_i in idx:
                raise TimelineError(f"machines[{i}]: {path!r} already follows a timeline (timeline {n + 1}, {timeline.name!r})")
            rate = self.ideal[m_i]
            if timeline.ideal_rate_per_min is not None and rate != timeline.ideal_rate_per_min:
                raise TimelineError(
                    f"ideal_rate_per_min: {timeline.ideal_rate_per_min} differs from {path} ({rate:g}/min)"
                )
            idx.append(m_i)
        self.scripts.append((Script(timeline, self.dt_ms), np.asarray(idx, dtype=np.int64)))

    @property
    def ts_ms(self) -> int:
        """Sim time of the current step, UTC epoch ms."""
        return self.start_ms + self.k * self.dt_ms

    # ------------------------------------------------------------------ commands from OPC UA clients
    def set_speed(self, machine: int, value: float) -> float:
        """Honour a MachSpeed write; returns the value in effect (clamped to [0, 1.5 x ideal])."""
        hi = float(self.ideal[machine] * MAX_SPEED_FACTOR)
        clamped = min(max(value, 0.0), hi) if math.isfinite(value) else float(self.setpoint[machine])
        if clamped != value:
            log.warning("MachSpeed of %s: %r is outside [0, %g]; using %g",
                        self.table.machine_paths[machine], value, hi, clamped)  # fmt: skip
        self.setpoint[machine] = clamped
        return clamped

    def command(self, machine: int, name: str) -> None:
        """Start, Stop or Reset a machine (PackML-style); takes effect at the next step."""
        if name == "Start":
            self.run_cmd[machine] = True
            self.order_done[machine] = False  # a machine idle after its order runs on when started
        elif name == "Stop":
            self.run_cmd[machine] = False
            self.was_reset[machine] = False
        elif name == "Reset":
            # Clears an active stop, recalibrates sensors and zeroes the job counters; a stopped machine goes Idle.
            self.down_left[machine] = 0.0
            self.produced[machine] = 0.0
            self.processed[machine] = 0
            self.defective[machine] = 0
            self.counter0[machine] = 0
            self.was_reset[machine] = not self.run_cmd[machine]
            self.faults.recalibrate(machine)
        else:
            raise ValueError(f"command: {name!r} is not Start, Stop or Reset")
        log.info("%s: %s", self.table.machine_paths[machine], name)

    # ------------------------------------------------------------------ production orders (planning, issue 14)
    def run_order(self, machine: int, rate_per_min: float, changeover_min: float, quantity: float | None = None,
                  code: int | None = None, product: str = "") -> None:
        """Start a production order: a changeover of `changeover_min` (Held with the machine's changeover code or
        `code`), then Execute at `rate_per_min`, the product's ideal rate (MachDesignSpeed and MachSpeed follow),
        until `quantity` good units are made (None: run on); then Idle with stop reason 170000 (no order).
        Takes effect at the next step; the counters keep counting (progress is counted from the order's start).
        A machine run by production orders changes over when an order asks for it, not on its own schedule."""
        if not (math.isfinite(rate_per_min) and rate_per_min > 0):
            raise ValueError(f"rate_per_min: {rate_per_min!r} must be a positive number")
        if not (math.isfinite(changeover_min) and changeover_min >= 0):
            raise ValueError(f"changeover_min: {changeover_min!r} must be zero or more")
        if quantity is not None and not (math.isfinite(quantity) and quantity > 0):
            raise ValueError(f"quantity: {quantity!r} must be a positive number")
        if self.down_left[machine] > 0 and self.down_state[machine] == ABORTED:
            raise OrderRefused(f"{self.table.machine_paths[machine]} is in a failure; repair it first")
        self.ideal[machine] = rate_per_min
        self.setpoint[machine] = rate_per_min
        self.run_cmd[machine] = True
        self.was_reset[machine] = False
        self.since_change[machine] = 0.0
        self.change_every_s[machine] = np.inf
        self.order_left[machine] = math.inf if quantity is None else float(quantity)
        self.order_done[machine] = False
        if changeover_min > 0:
            self.down_left[machine] = math.ceil(changeover_min * 60 / self.dt_s) * self.dt_s
            self.down_state[machine] = HELD
            self.down_code[machine] = self.change_code[machine] if code is None else code
        log.info("%s: production order %s of %s at %g/min after a %g min changeover",
                 self.table.machine_paths[machine], product, "an open quantity" if quantity is None else f"{quantity:g}",
                 rate_per_min, changeover_min)  # fmt: skip

    def fail(self, machine: int, minutes: float, code: int | None = None) -> None:
        """Inject a failure (Aborted with the machine's failure code or `code`) lasting `minutes` from the next step."""
        if not (math.isfinite(minutes) and minutes > 0):
            raise ValueError(f"minutes: {minutes!r} must be a positive number")
        self.down_left[machine] = math.ceil(minutes * 60 / self.dt_s) * self.dt_s
        self.down_state[machine] = ABORTED
        self.down_code[machine] = self.failure_code[machine] if code is None else code
        log.info("%s: failure injected for %g min", self.table.machine_paths[machine], minutes)

    # ------------------------------------------------------------------ stepping
    def initial(self) -> Changes:
        """Every node's value at the start instant."""
        self._resolve_state()
        self._update_signals()
        return self._publish(all_nodes=True)

    def step(self) -> Changes:
        """Advance one sim step and return the nodes whose value changed."""
        self.k += 1
        executing = self.state == EXECUTE
        # Production of the step that just ended, at the speed that was in effect.
        made = np.where(executing, self.speed / 60.0 * self.dt_s, 0.0)
        self.produced += made
        new_units = np.floor(self.produced).astype(np.int64) - self.processed
        if new_units.any():  # skipping the draw when nothing was made keeps runs deterministic
            self.processed += new_units
            bad = self.rng.binomial(new_units, self.reject)
            self.defective += bad
            self.order_left -= new_units - bad
            made_it = self.order_left <= 0
            if made_it.any():  # the order is made: the machine idles until the next one
                self.order_done |= made_it
                self.order_left[made_it] = np.inf
        self.since_change += np.where(executing, self.dt_s, 0.0)
        # Stop timers run while their stop is shown; a repair also runs through breaks.
        shown_down = (self.down_left > 0) & (self.state == self.down_state) & (self.reason == self.down_code)
        self.down_left = np.where(shown_down, np.maximum(self.down_left - self.dt_s, 0.0), self.down_left)
        self.faults.advance(executing, self.dt_s)
        self._new_stops(executing & (self.down_left <= 0))
        self._resolve_state()
        self._update_signals()
        return self._publish(all_nodes=False)

    def _new_stops(self, free: npt.NDArray[np.bool_]) -> None:
        u = self.rng.random((2, len(self.state)))
        events = StopEvents()
        self.faults.events(free, self.rng, self.dt_s, events)
        fail = u[0] < self.fail_p
        change = self.since_change >= self.change_every_s
        micro_hit = u[1] < self.micro_p
        if not events.machines and not (free & (fail | change | micro_hit)).any():
            return  # the common step: nothing starts
        failed = np.flatnonzero(free & fail)
        events.add(failed, np.full(len(failed), np.nan), ABORTED, self.failure_code[failed])
        changing = np.flatnonzero(free & change)
        events.add(changing, self.change_s[changing], HELD, self.change_code[changing])
        self.since_change[changing] = 0.0
        micro = np.flatnonzero(free & micro_hit)
        events.add(
            micro, self.rng.uniform(self.micro_min[micro], self.micro_max[micro]), SUSPENDED, MICROSTOP
        )
        if not events.machines:
            return
        machines = np.concatenate(events.machines)
        first = np.unique(machines, return_index=True)[1]  # earlier queued stops win
        machines = machines[first]
        seconds = np.concatenate(events.seconds)[first]
        repair = np.isnan(seconds)
        if repair.any():
            m = machines[repair]
            seconds[repair] = self.repair_median_s[m] * np.exp(
                self.repair_spread[m] * self.rng.standard_normal(len(m))
            )
        # Round up to whole steps so every stop is visible for at least one step.
        self.down_left[machines] = np.ceil(seconds / self.dt_s) * self.dt_s
        self.down_state[machines] = np.concatenate(events.states)[first]
        self.down_code[machines] = np.concatenate(events.codes)[first]

    def _resolve_state(self) -> None:
        """State and stop reason from ts_k on: operator command > failure > calendar > other stops > Execute."""
        ts = self.ts_ms
        site_codes = np.array([clock.code_at(ts) for clock in self.clocks], dtype=np.int64)
        planned = site_codes[self.table.site_index]
        down = self.down_left > 0
        failure = down & (self.down_state == ABORTED)
        state = np.full(len(self.state), EXECUTE, dtype=np.int64)
        reason = np.zeros(len(self.state), dtype=np.int64)
        other = down & ~failure & (planned == 0)
        state[other], reason[other] = self.down_state[other], self.down_code[other]
        idle = self.order_done & ~failure
        state[idle], reason[idle] = IDLE, NO_ORDER
        cal = (planned != 0) & ~failure
        state[cal], reason[cal] = STOPPED, planned[cal]
        state[failure], reason[failure] = ABORTED, self.down_code[failure]
        off = ~self.run_cmd
        state[off] = np.where(self.was_reset[off], IDLE, STOPPED)
        reason[off] = COMMANDED_STOP
        self.state, self.reason = state, reason
        self.speed = np.where(state == EXECUTE, self.setpoint, 0.0)
        for script, sc in self.scripts:
            p = script.at(self.k)
            self.state[sc], self.reason[sc], self.speed[sc] = p.state, p.reason, p.speed
            self.processed[sc], self.defective[sc], self.produced[sc] = p.processed, p.defective, p.processed

    def _update_signals(self) -> None:
        if not len(self.s_typ):
            return
        frac = self.speed / self.ideal
        target = self.s_idle + (self.s_typ - self.s_idle) * frac[self.table.signal_machine]
        self.s_true += self.s_alpha * (target - self.s_true)
        mult, add = self.faults.signal_effects(frac, len(self.s_typ))
        noisy = self.s_true * mult + add + self.s_noise * self.rng.standard_normal(len(self.s_typ))
        self.s_out = np.round(np.round(noisy / self.s_res) * self.s_res, 9)

    def _publish(self, *, all_nodes: bool) -> Changes:
        t, v = self.table, self.values
        pk = t.packml
        v[pk[:, T_STATE]] = self.state
        v[pk[:, T_REASON]] = self.reason
        v[pk[:, T_PROCESSED]] = wrap_int32(self.processed + self.counter0)
        v[pk[:, T_DEFECTIVE]] = wrap_int32(self.defective)
        v[pk[:, T_SETPOINT]] = self.setpoint
        v[pk[:, T_SPEED]] = np.round(self.speed, 6)
        v[pk[:, T_DESIGN]] = self.ideal
        if len(self.s_typ):
            v[t.signal_nodes] = self.s_out
        if all_nodes:
            idx = np.arange(t.size, dtype=np.int64)
        else:
            idx = np.flatnonzero((v != self.published) & self.auto).astype(np.int64)
        self.published[idx] = v[idx]
        return Changes(self.ts_ms, idx, v[idx].copy())
