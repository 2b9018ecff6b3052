"""Scripted mode: machines that follow a timeline exactly, with counts spread evenly over each segment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zhizao.broker.contract.states import NO_SHIFT
from zhizao.seeds.timeline import Timeline

END_STATE = 2  # Stopped
END_REASON = NO_SHIFT  # the script is over


class TimelineError(ValueError):
    """A timeline that does not fit the scenario or the sim step; the message names field and value."""


@dataclass(frozen=True)
class ScriptPoint:
    """What a scripted machine shows at one instant."""

    state: int
    reason: int
    processed: int
    defective: int
    speed: float


class Script:
    """A timeline resolved to sim steps: `at(k)` is the state from step k on and the counts through step k."""

    def __init__(self, timeline: Timeline, dt_ms: int) -> None:
        steps = []
        for i, seg in enumerate(timeline.segments):
            if (seg.duration_s * 1000) % dt_ms:
                raise TimelineError(
                    f"segments[{i}].duration_s: {seg.duration_s} is not a whole number of sim steps ({dt_ms} ms)"
                )
            steps.append(seg.duration_s * 1000 // dt_ms)
        self._segments = timeline.segments
        self._steps = np.asarray(steps, dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._steps)])
        self._produced_before = np.concatenate([[0], np.cumsum([s.produced for s in timeline.segments])])
        self._defective_before = np.concatenate([[0], np.cumsum([s.defective for s in timeline.segments])])
        self.total_steps = int(self._starts[-1])

    def _counts_through(self, k: int) -> tuple[int, int]:
        """Cumulative counts of steps [0, k)."""
        if k <= 0:
            return 0, 0
        if k >= self.total_steps:
            return int(self._produced_before[-1]), int(self._defective_before[-1])
        i = int(np.searchsorted(self._starts, k - 1, side="right")) - 1
        seg = self._segments[i]
        done = k - int(self._starts[i])  # steps of segment i already over
        n = int(self._steps[i])
        return (
            int(self._produced_before[i]) + seg.produced * done // n,
            int(self._defective_before[i]) + seg.defective * done // n,
        )

    def at(self, k: int) -> ScriptPoint:
        """The scripted point at sim step k (k = 0 is the start instant)."""
        processed, defective = self._counts_through(k)
        if k >= self.total_steps:
            return ScriptPoint(END_STATE, END_REASON, processed, defective, 0.0)
        i = int(np.searchsorted(self._starts, k, side="right")) - 1
        seg = self._segments[i]
        speed = seg.produced / (seg.duration_s / 60) if seg.state == 6 else 0.0
        return ScriptPoint(seg.state, seg.stop_reason, processed, defective, speed)
