"""Monitoring rules: which detector scores a tag, and the threshold / rate / machine-state / connectivity alarms.

A rule applies to every tag (or machine) matching all its non-empty selectors (site, machine kind, machine,
tag name). For a tag, the most specific enabled `detector` rule chooses the detector (machine > tag name > kind >
site > everything; a later rule wins a tie); `detector: none` turns scoring off. Alarm rules all apply.
Rules come from `seeds/monitoring/rules.yaml` (loaded once into an empty table) and from
`/api/v1/monitoring/rules`; each rule's `params` is validated by the model of its type, so a typo is refused
with the field and value named.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from zhizao.analytics.anomaly import Alarm, Cusum, Detector, EwmaZ, RobustZ, ValueNovelty
from zhizao.broker.contract.ids import Id

__all__ = [
    "DETECTOR_KINDS",
    "DetectorParams",
    "Priority",
    "Rule",
    "RuleIn",
    "RuleSet",
    "TagRef",
    "is_process_signal",
    "seed_rules",
]

Priority = Literal["low", "medium", "high", "critical"]
PRIORITIES: tuple[str, ...] = ("critical", "high", "medium", "low")  # most urgent first

# The univariate detectors a rule may choose (the multivariate T^2 couples tags and is not offered per tag).
DETECTOR_KINDS: dict[str, type[Detector]] = {
    "ewma_z": EwmaZ, "cusum": Cusum, "robust_z": RobustZ, "value_novelty": ValueNovelty,
}

# Signals OEE reads, and Sparkplug control metrics: never scored (DESIGN.md section 2).
_NOT_PROCESS = ("State", "StopReason")
_NOT_PROCESS_PREFIX = ("Counts/", "Rate/", "Node Control/", "Device Control/", "Properties/", "bdSeq")
_NUMERIC = frozenset(range(1, 11))  # Sparkplug Int8..Double; Boolean (11) and String (12) are not scored


def is_process_signal(name: str, datatype: int) -> bool:
    """True for a machine's process value (temperature, vibration, ...), false for State, Counts/*, Rate/*."""
    return datatype in _NUMERIC and name not in _NOT_PROCESS and not name.startswith(_NOT_PROCESS_PREFIX)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectorParams(_Params):
    """Detector choice, its parameters, and the alarm on its score: level, deadband and on/off delays."""

    detector: Literal["ewma_z", "cusum", "robust_z", "value_novelty", "none"] = "ewma_z"
    settings: dict[str, float | int] = Field(default_factory=dict, description="detector parameters, e.g. alpha, warmup")
    level: float | None = Field(default=None, description="alarm when the score exceeds this (default: the detector's)")
    deadband: float | None = Field(default=None, ge=0, description="clears below level - deadband (default: detector's)")
    on_delay_s: float = Field(default=0.0, ge=0)
    off_delay_s: float = Field(default=10.0, ge=0)
    only_running: bool = Field(default=True, description="score only while the machine runs (its State says so)")
    settle_s: float = Field(default=0.0, ge=0, description="and not in the first seconds after it started running")

    @model_validator(mode="after")
    def _builds(self) -> DetectorParams:
        if self.detector != "none":
            self.build()
        return self

    def build(self) -> Detector:
        """The detector instance (ValueError naming the parameter when it does not fit the detector)."""
        cls = DETECTOR_KINDS[self.detector]
        fields = set(cls.__dataclass_fields__) - {"name", "alarm"}  # type: ignore[attr-defined]
        for key in self.settings:
            if key not in fields:
                raise ValueError(f"settings.{key}: not a parameter of {self.detector} (one of {sorted(fields)})")
        try:
            det: Detector = cls(**self.settings)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"settings: {exc}") from exc
        return det

    def levels(self, det: Detector) -> tuple[float, float]:
        """(on, off) score levels: explicit ones, else the detector's own alarm levels."""
        alarm: Alarm = det.alarm  # type: ignore[attr-defined]
        on = alarm.on if self.level is None else self.level
        off = alarm.off if self.deadband is None and self.level is None else on - (self.deadband or 0.0)
        return on, min(on, off)

    def spec_key(self) -> str:
        """Identity of the detector state: a changed detector or setting starts afresh (levels do not)."""
        return json.dumps({"detector": self.detector, "settings": dict(sorted(self.settings.items()))},
                          separators=(",", ":"))


class ThresholdParams(_Params):
    """High and/or low limit on the value, with a deadband and on/off delays."""

    high: float | None = None
    low: float | None = None
    deadband: float = Field(default=0.0, ge=0)
    on_delay_s: float = Field(default=0.0, ge=0)
    off_delay_s: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _some_limit(self) -> ThresholdParams:
        if self.high is None and self.low is None:
            raise ValueError("give high, low or both")
        if self.high is not None and self.low is not None and self.low >= self.high:
            raise ValueError(f"low={self.low} must be below high={self.high}")
        return self


class RateParams(_Params):
    """Rate of change: |dv/dt| per minute above `per_min`, with a deadband and on/off delays."""

    per_min: float = Field(gt=0)
    deadband: float = Field(default=0.0, ge=0)
    on_delay_s: float = Field(default=0.0, ge=0)
    off_delay_s: float = Field(default=0.0, ge=0)


class FailureParams(_Params):
    """A machine in a failure state (category failure) for longer than `minutes`."""

    minutes: float = Field(gt=0)


class MicrostopParams(_Params):
    """More than `per_hour` microstops in the trailing hour of a machine."""

    per_hour: float = Field(gt=0)


class OfflineParams(_Params):
    """A line's edge node or a machine offline (Sparkplug death) for longer than `after_s`."""

    after_s: float = Field(default=60.0, ge=0)


class StaleParams(_Params):
    """An online machine whose process values have not changed for `after_s`."""

    after_s: float = Field(default=300.0, gt=0)


PARAMS: dict[str, type[_Params]] = {
    "detector": DetectorParams, "threshold": ThresholdParams, "rate": RateParams, "failure": FailureParams,
    "microstops": MicrostopParams, "offline": OfflineParams, "stale": StaleParams,
}  # fmt: skip
RuleType = Literal["detector", "threshold", "rate", "failure", "microstops", "offline", "stale"]


class RuleIn(BaseModel):
    """A rule as the API and the seeds give it."""

    model_config = ConfigDict(extra="forbid")
    rule_type: RuleType
    site: Id | None = None
    machine_kind: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    machine: Id | None = None
    tag: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = "medium"
    enabled: bool = True

    @model_validator(mode="after")
    def _params(self) -> RuleIn:
        if self.machine is not None and self.site is None:
            raise ValueError(f"machine={self.machine!r} needs a site")
        try:
            PARAMS[self.rule_type].model_validate(self.params)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err.get("loc", ()))
            where = f"params.{loc}" if loc else "params"
            value = err.get("input")
            raise ValueError(f"{where}={value!r}: {str(err.get('msg', '')).removeprefix('Value error, ')}") from None
        return self


@dataclass(frozen=True)
class Rule:
    """A stored rule with its validated parameters."""

    id: int
    rule_type: str
    site: str | None
    machine_kind: str | None
    machine: str | None
    tag: str | None
    params: Any
    priority: str
    enabled: bool

    def matches(self, site: str, kind: str | None, machine: str | None, tag: str | None) -> bool:
        """True when every selector of the rule holds for this tag / machine."""
        return ((self.site is None or self.site == site) and (self.machine_kind is None or self.machine_kind == kind)
                and (self.machine is None or self.machine == machine) and (self.tag is None or self.tag == tag))

    def specificity(self) -> int:
        """Higher wins among detector rules that match one tag."""
        return (8 * (self.machine is not None) + 4 * (self.tag is not None) + 2 * (self.machine_kind is not None)
                + (self.site is not None))

    def as_json(self) -> dict[str, Any]:
        """The rule as the API shows it."""
        return {"id": self.id, "rule_type": self.rule_type, "site": self.site, "machine_kind": self.machine_kind,
                "machine": self.machine, "tag": self.tag, "params": self.params.model_dump(mode="json"),
                "priority": self.priority, "enabled": self.enabled}


def rule_from_row(row: tuple[Any, ...]) -> Rule | None:
    """(id, rule_type, site, kind, machine, tag, params, priority, enabled) -> Rule; None when invalid."""
    try:
        params = PARAMS[str(row[1])].model_validate(row[6])
    except (ValidationError, KeyError):
        return None  # a row edited by hand into something invalid is ignored, never stops monitoring
    return Rule(int(row[0]), str(row[1]), row[2], row[3], row[4], row[5], params, str(row[7]), bool(row[8]))


RULE_COLUMNS = "id, rule_type, site_id, machine_kind, machine_id, tag_name, params, priority, enabled"


@dataclass(frozen=True)
class TagRef:
    """What the service knows about a process-signal tag."""

    tag_id: int
    site: str
    line: str
    machine: str
    kind: str | None
    name: str
    unit: str | None


class RuleSet:
    """The enabled rules, with the per-tag detector choice resolved."""

    DEFAULT = DetectorParams()

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = [r for r in rules if r.enabled]
        self.detector_rules = sorted((r for r in self.rules if r.rule_type == "detector"),
                                     key=lambda r: (r.specificity(), r.id))

    def of_type(self, rule_type: str) -> list[Rule]:
        """Enabled rules of one type."""
        return [r for r in self.rules if r.rule_type == rule_type]

    def detector_for(self, tag: TagRef) -> tuple[DetectorParams, str, int | None]:
        """(detector params, priority, rule id) for a tag: the most specific matching detector rule."""
        for r in reversed(self.detector_rules):
            if r.matches(tag.site, tag.kind, tag.machine, tag.name):
                params: DetectorParams = r.params
                return params, r.priority, r.id
        return self.DEFAULT, "low", None

    def tag_rules(self, tag: TagRef, rule_type: str) -> list[Rule]:
        """Enabled threshold / rate rules matching a tag."""
        return [r for r in self.of_type(rule_type) if r.matches(tag.site, tag.kind, tag.machine, tag.name)]

    def machine_rules(self, site: str, kind: str | None, machine: str, rule_type: str) -> list[Rule]:
        """Enabled machine-level rules (failure, microstops, stale, offline) matching a machine."""
        return [r for r in self.of_type(rule_type) if r.tag is None and r.matches(site, kind, machine, None)]


def seed_rules(text: str | None = None) -> list[RuleIn]:
    """The rules of `seeds/monitoring/rules.yaml` (or of `text`), validated."""
    if text is None:
        text = resources.files("zhizao.seeds").joinpath("monitoring", "rules.yaml").read_text(encoding="utf-8")
    doc = yaml.safe_load(text) or {}
    return [RuleIn.model_validate(r) for r in doc.get("rules", [])]


def finite(value: float | None) -> float | None:
    """None for NaN/inf (JSON has no NaN)."""
    return value if value is not None and math.isfinite(value) else None
