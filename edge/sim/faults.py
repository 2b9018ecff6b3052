"""Fault profiles that develop over time, as arrays over every machine that carries each kind."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from zhizao.edge.sim.nodes import NodeTable
from zhizao.seeds.model import BearingWear, JamBursts, SensorDrift, ToolWear

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# PackML states the simulator uses for stops.
HELD = 11
SUSPENDED = 5
ABORTED = 9


@dataclass
class StopEvents:
    """Stops that start in this step: machine indices, durations, PackML state and stop reason per stop."""

    machines: list[I64] = field(default_factory=list)
    seconds: list[F64] = field(default_factory=list)
    states: list[I64] = field(default_factory=list)
    codes: list[I64] = field(default_factory=list)

    def add(self, machines: I64, seconds: F64, state: int | I64, code: int | I64) -> None:
        """Queue stops (earlier adds win when a machine gets several in one step)."""
        n = len(machines)
        if n:
            self.machines.append(machines)
            self.seconds.append(np.asarray(seconds, dtype=np.float64))
            self.states.append(np.broadcast_to(np.asarray(state, dtype=np.int64), (n,)))
            self.codes.append(np.broadcast_to(np.asarray(code, dtype=np.int64), (n,)))


def _cols(rows: list[tuple[float, ...]], n: int) -> list[F64]:
    if not rows:
        return [np.zeros(0) for _ in range(n)]
    arr = np.asarray(rows, dtype=np.float64)
    return [arr[:, i].copy() for i in range(n)]


class Faults:
    """Bearing wear, tool wear, sensor drift and jam bursts for all machines, advanced one step at a time."""

    def __init__(self, table: NodeTable) -> None:
        sig_of: dict[tuple[int, str], int] = {}
        for s_i, (m_i, n_i) in enumerate(zip(table.signal_machine, table.signal_nodes, strict=True)):
            sig_of[(int(m_i), table.tags[int(n_i)])] = s_i
        bearing: list[tuple[float, ...]] = []
        tool: list[tuple[float, ...]] = []
        drift: list[tuple[float, ...]] = []
        jam: list[tuple[float, ...]] = []
        for m_i, machine in enumerate(table.machines):
            for f in machine.faults:
                if isinstance(f, BearingWear):
                    bearing.append((m_i, sig_of[(m_i, f.rms_signal)], sig_of[(m_i, f.kurtosis_signal)],
                                    f.onset_h * 3600, f.life_h * 3600, f.rms_factor, f.kurtosis_rise,
                                    f.failure_code))  # fmt: skip
                elif isinstance(f, ToolWear):
                    tool.append((m_i, sig_of[(m_i, f.load_signal)], sig_of[(m_i, f.temperature_signal)],
                                 f.tool_life_min * 60, f.load_rise, f.temperature_rise, f.change_min * 60,
                                 f.change_code))  # fmt: skip
                elif isinstance(f, SensorDrift):
                    drift.append(
                        (m_i, sig_of[(m_i, f.signal)], f.onset_h * 3600, f.rate_per_h / 3600, f.limit)
                    )
                elif isinstance(f, JamBursts):
                    jam.append((m_i, f.bursts_per_day / 86400, f.burst_min * 60,
                                f.jams_per_burst / (f.burst_min * 60), f.jam_s.min, f.jam_s.max, f.code))  # fmt: skip
        (bm, self.b_rms, self.b_kurt, self.b_onset, self.b_life, self.b_factor, self.b_krise, bc) = _cols(
            bearing, 8
        )
        self.b_m, self.b_rms_i, self.b_kurt_i, self.b_code = (
            bm.astype(np.int64), self.b_rms.astype(np.int64), self.b_kurt.astype(np.int64), bc.astype(np.int64))  # fmt: skip
        self.b_age = np.zeros(len(bearing))
        (tm, tl, tt, self.t_life, self.t_load_rise, self.t_temp_rise, self.t_change, tc) = _cols(tool, 8)
        self.t_m, self.t_load_i, self.t_temp_i, self.t_code = (
            tm.astype(np.int64), tl.astype(np.int64), tt.astype(np.int64), tc.astype(np.int64))  # fmt: skip
        self.t_used = np.zeros(len(tool))
        (dm, ds, self.d_onset, self.d_rate, self.d_limit) = _cols(drift, 5)
        self.d_m, self.d_sig = dm.astype(np.int64), ds.astype(np.int64)
        self.d_age = np.zeros(len(drift))
        (jm, self.j_burst_rate, self.j_burst_s, self.j_jam_rate, self.j_min, self.j_max, jc) = _cols(jam, 7)
        self.j_m, self.j_code = jm.astype(np.int64), jc.astype(np.int64)
        self.j_left = np.zeros(len(jam))

    def advance(self, executing: npt.NDArray[np.bool_], dt_s: float) -> None:
        """Age every profile by one step: bearings and drift by clock time, tools by cutting time."""
        self.b_age += dt_s
        self.d_age += dt_s
        self.t_used += np.where(executing[self.t_m], dt_s, 0.0)
        self.j_left = np.maximum(self.j_left - dt_s, 0.0)

    def signal_effects(self, speed_frac: F64, n_signals: int) -> tuple[F64, F64]:
        """Multiplicative and additive offsets per process signal from the current wear and drift."""
        mult = np.ones(n_signals)
        add = np.zeros(n_signals)
        if len(self.b_m):
            w = np.clip((self.b_age - self.b_onset) / self.b_life, 0.0, 1.0)
            mult[self.b_rms_i] *= 1.0 + (self.b_factor - 1.0) * w**2
            add[self.b_kurt_i] += self.b_krise * w**1.5 * (speed_frac[self.b_m] > 0)
        if len(self.t_m):
            w = np.clip(self.t_used / self.t_life, 0.0, 1.0)
            add[self.t_load_i] += self.t_load_rise * w * speed_frac[self.t_m]
            add[self.t_temp_i] += self.t_temp_rise * w
        if len(self.d_m):
            offset = np.clip((self.d_age - self.d_onset) * self.d_rate, -self.d_limit, self.d_limit)
            add[self.d_sig] += np.where(self.d_age > self.d_onset, offset, 0.0)
        return mult, add

    def events(
        self, free: npt.NDArray[np.bool_], rng: np.random.Generator, dt_s: float, out: StopEvents
    ) -> None:
        """Queue the fault-driven stops of machines that are executing and free: worn bearings, tool changes, jams."""
        if len(self.b_m):
            hit = free[self.b_m] & (self.b_age >= self.b_onset + self.b_life)
            if hit.any():
                out.add(self.b_m[hit], np.full(int(hit.sum()), np.nan), ABORTED, self.b_code[hit])
                self.b_age[hit] = 0.0  # the repair replaces the bearing
        if len(self.t_m):
            hit = free[self.t_m] & (self.t_used >= self.t_life)
            if hit.any():
                out.add(self.t_m[hit], self.t_change[hit], HELD, self.t_code[hit])
                self.t_used[hit] = 0.0
        if len(self.j_m):
            u = rng.random((2, len(self.j_m)))
            opening = (self.j_left <= 0) & (u[0] < self.j_burst_rate * dt_s)
            self.j_left[opening] = self.j_burst_s[opening]
            hit = free[self.j_m] & (self.j_left > 0) & (u[1] < self.j_jam_rate * dt_s)
            if hit.any():
                secs = rng.uniform(self.j_min[hit], self.j_max[hit])
                out.add(self.j_m[hit], secs, SUSPENDED, self.j_code[hit])

    def recalibrate(self, machine: int) -> None:
        """Reset command: sensors are recalibrated (drift starts over)."""
        self.d_age[self.d_m == machine] = 0.0
