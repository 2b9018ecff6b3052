"""Pydantic models of a scripted timeline: machines that follow segments exactly (the simulator's scripted mode)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from zhizao.broker.contract.hierarchy import MachineRef
from zhizao.broker.contract.states import validate_stop_code
from zhizao.seeds.model import PACKML_STATES, _Model

__all__ = ["Timeline", "TimelineSegment"]


class TimelineSegment(_Model):
    """A scripted stretch: PackML state, stop reason, and counts spread evenly over the segment."""

    duration_s: int = Field(gt=0)
    state: int
    stop_reason: int = 0
    produced: int = Field(default=0, ge=0)
    defective: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _coherent(self) -> TimelineSegment:
        if self.state not in PACKML_STATES:
            raise ValueError(f"state: {self.state} is not a PackTags StateCurrent number (1-17)")
        if self.state == 6:
            if self.stop_reason != 0:
                raise ValueError(f"stop_reason: {self.stop_reason} must be 0 while executing (state 6)")
        else:
            try:
                validate_stop_code(self.stop_reason)
            except ValueError as exc:
                raise ValueError(f"stop_reason: {exc} (required when state is {self.state})") from None
            if self.produced:
                raise ValueError(f"produced: {self.produced} must be 0 outside Execute (state {self.state})")
        if self.defective > self.produced:
            raise ValueError(f"defective: {self.defective} exceeds produced {self.produced}")
        return self


class Timeline(_Model):
    """A script one or more machines follow exactly (scripted mode of the simulator)."""

    name: str = Field(min_length=1)
    description: str = ""
    machines: list[str] = Field(min_length=1, description="`site/line/machine` paths that follow the script")
    ideal_rate_per_min: float | None = Field(
        default=None, gt=0, description="must match the machines, if given"
    )
    segments: list[TimelineSegment] = Field(min_length=1)

    @field_validator("machines")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for i, path in enumerate(value):
            MachineRef.parse(path, f"[{i}]")
        return value

    @property
    def duration_s(self) -> int:
        """Total scripted seconds."""
        return sum(seg.duration_s for seg in self.segments)
