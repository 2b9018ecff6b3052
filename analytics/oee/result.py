"""`OeeResult`: the per-window output arrays of the OEE kernel and of its reference twin."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from zhizao.analytics.oee import kernel as k

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True)
class OeeResult:
    """Per-window OEE figures, one entry per window (in the order of the windows passed in).

    Times are seconds. Ratios are NaN where undefined (no planned time, no run time, no count).
    `time_s[:, Category.X]` is the time spent in each category; a row sums to the window length.
    `flags` holds the FLAG_* data-quality bits (analytics.oee.kernel).
    """

    machine: I64
    floats: F64
    ints: I64
    time_s: F64

    def _f(self, col: int) -> F64:
        return np.ascontiguousarray(self.floats[:, col])

    def _i(self, col: int) -> I64:
        return np.ascontiguousarray(self.ints[:, col])

    @property
    def planned_s(self) -> F64:
        """Planned production time: window minus planned stops and non-running time outside the calendar."""
        return self._f(k.F_PLANNED_S)

    @property
    def run_s(self) -> F64:
        """Run time: planned time minus unplanned stops (microstops stay in run time)."""
        return self._f(k.F_RUN_S)

    @property
    def all_s(self) -> F64:
        """Window length (all time)."""
        return self._f(k.F_ALL_S)

    @property
    def availability(self) -> F64:
        """run / planned."""
        return self._f(k.F_AVAILABILITY)

    @property
    def performance(self) -> F64:
        """ideal time of all units / run, capped at 1 (FLAG_PERFORMANCE_CAPPED)."""
        return self._f(k.F_PERFORMANCE)

    @property
    def quality(self) -> F64:
        """good / total."""
        return self._f(k.F_QUALITY)

    @property
    def oee(self) -> F64:
        """availability x performance x quality (0 when planned but nothing was made)."""
        return self._f(k.F_OEE)

    @property
    def teep(self) -> F64:
        """OEE x planned / all time."""
        return self._f(k.F_TEEP)

    @property
    def ideal_s(self) -> F64:
        """Ideal cycle time x units, summed with the ideal rate in force at each counter sample."""
        return self._f(k.F_IDEAL_S)

    @property
    def total(self) -> I64:
        """Units counted in the window (resets and wraps handled)."""
        return self._i(k.I_TOTAL)

    @property
    def good(self) -> I64:
        """Good units counted in the window."""
        return self._i(k.I_GOOD)

    @property
    def stops(self) -> I64:
        """Stops (not microstops) that began in the window."""
        return self._i(k.I_STOPS)

    @property
    def failures(self) -> I64:
        """Stops with a technical failure state that began in the window."""
        return self._i(k.I_FAILURES)

    @property
    def microstops(self) -> I64:
        """Stops shorter than the microstop threshold that began in the window."""
        return self._i(k.I_MICROSTOPS)

    @property
    def flags(self) -> I64:
        """Data-quality bits (FLAG_*)."""
        return self._i(k.I_FLAGS)

    @property
    def repair_s(self) -> F64:
        """Time inside failure stops, within the window."""
        return self._f(k.F_REPAIR_S)

    @property
    def mtbf_s(self) -> F64:
        """Mean time between failures: run time / failures (NaN without failures)."""
        return self._f(k.F_MTBF_S)

    @property
    def mttr_s(self) -> F64:
        """Mean time to repair: repair time / failures (NaN without failures)."""
        return self._f(k.F_MTTR_S)

    @property
    def material_s(self) -> F64:
        """Time in material stops (jams, congestion, material missing) that are not microstops."""
        return self._f(k.F_LOSS_MATERIAL_S)

    def losses_s(self) -> dict[str, F64]:
        """The six big losses in seconds, and material stops as a class of their own (they add up to
        planned time - good units x ideal cycle time when no loss was clipped at 0)."""
        return {
            "equipment_failure": self._f(k.F_LOSS_FAILURE_S),
            "setup_adjustment": self._f(k.F_LOSS_SETUP_S),
            "idling_minor_stops": self._f(k.F_LOSS_MINOR_S),
            "reduced_speed": self._f(k.F_LOSS_SPEED_S),
            "process_defects": self._f(k.F_LOSS_DEFECT_S),
            "startup_rejects": self._f(k.F_LOSS_STARTUP_S),
            "material_stops": self._f(k.F_LOSS_MATERIAL_S),
        }
