"""Pydantic models of a cluster scenario: sites, lines, machines and fault profiles, built on the contract types."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from zhizao.broker.contract.calendar import Calendar, StateClasses
from zhizao.broker.contract.hierarchy import MachineRef
from zhizao.broker.contract.ids import Id
from zhizao.broker.contract.states import StopCode

__all__ = [
    "PACKML_STATES",
    "Band",
    "BearingWear",
    "Behaviour",
    "Fault",
    "JamBursts",
    "Line",
    "Machine",
    "OeeTarget",
    "Repair",
    "Scenario",
    "SensorDrift",
    "Signal",
    "Site",
    "ToolWear",
    "format_validation_error",
]

# Process signal names become OPC UA node-id tails and Sparkplug metric names: `Temperature/Spindle`.
SignalName = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Za-z0-9]*(/[A-Z][A-Za-z0-9]*)*$")]

# PackTags Status.StateCurrent numbering (1-17); never the OPC 30060 0-16 order.
PACKML_STATES: dict[int, str] = {
    1: "Clearing", 2: "Stopped", 3: "Starting", 4: "Idle", 5: "Suspended", 6: "Execute", 7: "Stopping",
    8: "Aborting", 9: "Aborted", 10: "Holding", 11: "Held", 12: "Unholding", 13: "Suspending",
    14: "Unsuspending", 15: "Resetting", 16: "Completing", 17: "Complete",
}  # fmt: skip

RESERVED_TAGS = {
    "State", "StopReason", "ProdProcessedCount", "ProdDefectiveCount", "MachSpeed", "CurMachSpeed",
    "MachDesignSpeed", "Start", "Stop", "Reset",
}  # fmt: skip

MachineKind = Literal[
    # Shanghai Lingang: powertrain and aero-engine parts
    "cnc-machining-center", "cnc-lathe", "grinder", "coordinate-measuring-machine", "washer", "deburring-robot",
    # Jiangsu electronics: SMT lines
    "solder-paste-printer", "spi", "pick-and-place", "reflow-oven", "aoi", "wave-solder",
    # Zhejiang textiles / packaging
    "air-jet-loom", "rapier-loom", "knitting-machine", "dyeing-machine", "stenter",
    "carton-erector", "case-packer", "palletizer", "labeler",
    # Anhui new-energy battery modules
    "cell-sorter", "cell-stacker", "laser-welder", "busbar-welder", "module-tester", "eol-tester",
]  # fmt: skip


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Band(_Model):
    """A uniform range [min, max]."""

    min: float = Field(ge=0)
    max: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.max < self.min:
            raise ValueError(f"max {self.max} is below min {self.min}")
        return self


class Repair(_Model):
    """Lognormal repair time: median minutes and the log-space spread (sigma)."""

    median_min: float = Field(gt=0)
    spread: float = Field(default=0.5, ge=0, le=3)


class Behaviour(_Model):
    """How a machine leaves Execute: random failures, microstops and periodic changeovers."""

    mtbf_h: float = Field(gt=0, description="mean running hours between random failures (exponential)")
    repair: Repair
    failure_code: StopCode = 180000
    microstops_per_h: float = Field(default=0, ge=0)
    microstop_s: Band = Band(min=5, max=60)
    changeover_every_h: float | None = Field(default=None, gt=0)
    changeover_min: float = Field(default=20, gt=0)
    changeover_code: StopCode = 100000


class Signal(_Model):
    """A process signal: running value, value when stopped, gaussian noise, sensor resolution and time constant."""

    name: SignalName
    unit: str = Field(min_length=1)
    typical: float
    idle: float | None = None
    noise: float = Field(default=0, ge=0)
    resolution: float = Field(default=0.01, gt=0)
    tau_s: float = Field(default=0, ge=0)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_TAGS:
            raise ValueError(f"{value!r} is a PackML tag the simulator serves itself")
        return value


class BearingWear(_Model):
    """Bearing degradation: vibration RMS and kurtosis rise from onset until a failure; repair resets it."""

    kind: Literal["bearing_wear"]
    rms_signal: SignalName
    kurtosis_signal: SignalName
    onset_h: float = Field(ge=0)
    life_h: float = Field(gt=0)
    rms_factor: float = Field(default=3.0, ge=1)
    kurtosis_rise: float = Field(default=6.0, ge=0)
    failure_code: StopCode = 180001


class ToolWear(_Model):
    """Tool wear: spindle load and temperature drift up over the tool life, then a tool change resets them."""

    kind: Literal["tool_wear"]
    load_signal: SignalName
    temperature_signal: SignalName
    tool_life_min: float = Field(gt=0, description="running minutes per tool")
    load_rise: float = Field(ge=0, description="added to the load signal at end of life")
    temperature_rise: float = Field(ge=0)
    change_min: float = Field(default=5, gt=0)
    change_code: StopCode = 130001


class SensorDrift(_Model):
    """A sensor reads off by an offset growing linearly after onset, up to a limit; Reset recalibrates it."""

    kind: Literal["sensor_drift"]
    signal: SignalName
    onset_h: float = Field(ge=0)
    rate_per_h: float
    limit: float = Field(gt=0)


class JamBursts(_Model):
    """Material jams that come in bursts: a burst window opens at random and holds several short jams."""

    kind: Literal["jam_bursts"]
    bursts_per_day: float = Field(gt=0)
    burst_min: float = Field(gt=0)
    jams_per_burst: float = Field(gt=0)
    jam_s: Band = Band(min=20, max=120)
    code: StopCode = 60000


Fault = Annotated[BearingWear | ToolWear | SensorDrift | JamBursts, Field(discriminator="kind")]


class Machine(_Model):
    """One machine: kind, ideal rate, state behaviour, quality, process signals and developing faults."""

    id: Id
    name: str = ""
    kind: MachineKind
    ideal_rate_per_min: float = Field(gt=0)
    nominal_speed: float = Field(default=0.95, gt=0, le=1.2, description="initial MachSpeed / ideal rate")
    reject_rate: float = Field(ge=0, le=0.5)
    counter_start: int = Field(
        default=0, ge=0, description="initial ProdProcessedCount (to exercise Int32 wrap)"
    )
    behaviour: Behaviour
    signals: list[Signal] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Machine:
        names = [s.name for s in self.signals]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"signals[{i}].name: {name!r} is listed twice")
        kinds: list[str] = []
        for i, fault in enumerate(self.faults):
            if fault.kind in kinds:
                raise ValueError(f"faults[{i}].kind: {fault.kind!r} is listed twice (one per kind)")
            kinds.append(fault.kind)
            for field in ("rms_signal", "kurtosis_signal", "load_signal", "temperature_signal", "signal"):
                ref = getattr(fault, field, None)
                if ref is not None and ref not in names:
                    raise ValueError(f"faults[{i}].{field}: {ref!r} is not one of this machine's signals")
        return self


class OeeTarget(_Model):
    """A line's OEE target as fractions (0.85 = 85 %); A, P and Q targets are optional."""

    oee: float = Field(gt=0, le=1)
    availability: float | None = Field(default=None, gt=0, le=1)
    performance: float | None = Field(default=None, gt=0, le=1)
    quality: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _reachable(self) -> OeeTarget:
        parts = [self.availability, self.performance, self.quality]
        if all(x is not None for x in parts):
            product = parts[0] * parts[1] * parts[2]  # type: ignore[operator]
            if product + 1e-9 < self.oee:
                raise ValueError(f"oee {self.oee} is above availability x performance x quality = {product:.4f}")
        return self


class Line(_Model):
    """A production line (one edge agent each)."""

    id: Id
    name: str = ""
    name_zh: str = Field(default="", description="Chinese display name (reports and the dashboard in Chinese)")
    product: str = ""
    target: OeeTarget | None = None
    machines: list[Machine] = Field(min_length=1)


class SiteOee(_Model):
    """A site's OEE settings beyond its calendar: the microstop threshold and the startup-reject period."""

    microstop_s: float = Field(default=120.0, ge=0, le=86400, description="a stop shorter than this is a microstop")
    startup_s: float = Field(default=0.0, ge=0, le=86400,
                             description="rejects within this long after a restart are startup rejects")


class Site(_Model):
    """A factory of the cluster, with its time zone, shift calendar and state classes."""

    id: Id
    name: str = ""
    name_zh: str = Field(default="", description="Chinese display name")
    member: str = Field(default="", description="cluster member: Shanghai, Jiangsu, Zhejiang or Anhui")
    industry: str = ""
    timezone: str = "Asia/Shanghai"
    calendar: Calendar
    state_classes: StateClasses
    oee: SiteOee = Field(default_factory=SiteOee)
    lines: list[Line] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone") from exc
        return value

    @model_validator(mode="after")
    def _unique(self) -> Site:
        _unique_ids([line.id for line in self.lines], "lines")
        seen: set[str] = set()
        for i, line in enumerate(self.lines):
            for j, machine in enumerate(line.machines):
                if machine.id in seen:
                    raise ValueError(
                        f"lines[{i}].machines[{j}].id: {machine.id!r} is not unique within the site"
                    )
                seen.add(machine.id)
        return self


class Scenario(_Model):
    """A cluster scenario: the sites the simulator serves and the demo starts from."""

    name: Id
    description: str = ""
    sites: list[Site] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Scenario:
        _unique_ids([site.id for site in self.sites], "sites")
        return self

    def machines(self) -> list[MachineRef]:
        """Every machine of the scenario, in scenario order."""
        return [MachineRef(s.id, ln.id, m.id) for s in self.sites for ln in s.lines for m in ln.machines]

    def machine_paths(self) -> list[str]:
        """Every machine as `site/line/machine`, in scenario order."""
        return [str(ref) for ref in self.machines()]

    def subset(self, paths: list[str]) -> Scenario:
        """A scenario holding only the given `site/line/machine` paths (for tests and focused demos)."""
        unknown = sorted(set(paths) - set(self.machine_paths()))
        if unknown:
            raise ValueError(f"machines: {unknown[0]!r} is not in scenario {self.name!r}")
        sites = []
        for site in self.sites:
            lines = []
            for line in site.lines:
                keep = [m for m in line.machines if f"{site.id}/{line.id}/{m.id}" in paths]
                if keep:
                    lines.append(line.model_copy(update={"machines": keep}))
            if lines:
                sites.append(site.model_copy(update={"lines": lines}))
        return self.model_copy(update={"sites": sites})


def _unique_ids(ids: list[str], where: str) -> None:
    for i, value in enumerate(ids):
        if value in ids[:i]:
            raise ValueError(f"{where}[{i}].id: {value!r} is not unique")


def format_validation_error(exc: ValidationError) -> list[str]:
    """Turn a pydantic error into lines `path.to[3].field: 'value' message`, naming path and value."""
    lines = []
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif part in ("bearing_wear", "tool_wear", "sensor_drift", "jam_bursts"):
                continue  # discriminator branch names add noise, not location
            else:
                path += f".{part}" if path else str(part)
        value: Any = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        if re.match(r"^[\w.\[\]]+: ", msg):  # validator already names a sub-path and value
            sep = "" if not path or msg.startswith("[") else "."
            lines.append(f"{path}{sep}{msg}")
        elif isinstance(value, dict | list) or repr(value) in msg:
            lines.append(
                f"{path or '<root>'}: {msg}"
            )  # a whole object failed, or the message shows the value
        else:
            lines.append(f"{path or '<root>'}: {value!r} {msg}")
    return lines
