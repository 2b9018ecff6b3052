"""The `commands` section of an agent config: which cloud keys the agent trusts and what may be commanded.

```yaml
commands:
  public_keys: [<base64 of the cloud's Ed25519 public key>]   # `zhizao cloud command-key` prints it
  max_skew_s: 30              # clock difference tolerated on a command's expiry
  readback_timeout_s: 3       # how long a method's read-back may take
  targets:                    # nothing else may be written or called
  - {machine: "*", method: Stop}                                   # operators by default
  - {machine: "*", method: Start, readback_metric: State, expect: [6]}
  - {machine: pack-1-m01, metric: Rate/Setpoint, min: 0, max: 150, step: 0.5, allowed_states: [10000, 20000]}
  - machine: "*"                                                   # a production order (planning)
    method: RunOrder
    args: [{name: product, type: String}, {name: quantity, type: Double, min: 0}, ...]
```

Without this section (or without keys) the agent refuses every command. A target's `role` is the least role
the cloud demands (default: operator for methods, engineer for writes); `critical: true` needs a second
person's approval in the cloud. A method with `args` takes them as a JSON object in its DCMD metric (a String:
`{"product": "bms-slave", "quantity": 400}`), checked against the declared names, types and limits and passed
to the device method in the declared order; a method without `args` carries Boolean true. `allowed_states` lists state-code ranges (10000 = 10000..19999, section 4 of
DESIGN.md): the command is refused while the machine's State lies outside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

METHODS = ("Start", "Stop", "Reset", "RunOrder")
Method = Literal["Start", "Stop", "Reset", "RunOrder"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArgConfig(_Model):
    """One input argument of a method target: its name, OPC UA type and (numbers) limits."""

    name: str = Field(min_length=1, max_length=100)
    type: Literal["String", "Double"]
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _limits(self) -> ArgConfig:
        if self.type == "String" and (self.min is not None or self.max is not None):
            raise ValueError(f"min: only for Double arguments, {self.name!r} is a String")
        if self.min is not None and self.max is not None and self.max < self.min:
            raise ValueError(f"max: {self.max!r} is below min ({self.min!r})")
        return self


class TargetConfig(_Model):
    """One thing the cloud may command: a signal to write (with limits) or a method to call."""

    machine: str = Field(description="machine id, or * for every machine of the agent")
    metric: str | None = Field(default=None, description="the published signal to write (map: value)")
    method: Method | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = Field(default=None, gt=0, description="values must be min (or 0) + k x step")
    allowed_states: tuple[int, ...] | None = Field(
        default=None, description="state-code ranges (multiples of 10000) in which the command is allowed"
    )
    role: Literal["operator", "engineer", "admin"] | None = None
    critical: bool = Field(default=False, description="needs a second person's approval in the cloud")
    readback_metric: str | None = Field(default=None, description="method only: signal read back after the call")
    expect: tuple[float, ...] | None = Field(default=None, description="method only: raw values that confirm it")
    args: tuple[ArgConfig, ...] | None = Field(default=None, description="method only: its input arguments")

    @field_validator("allowed_states")
    @classmethod
    def _ranges(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None:
            bad = [c for c in v if c % 10000 or not 10000 <= c <= 220000]
            if bad:
                raise ValueError(f"{bad} are not state-code range starts (10000, 20000, ..., 220000)")
        return v

    @model_validator(mode="after")
    def _kind(self) -> TargetConfig:
        if (self.metric is None) == (self.method is None):
            raise ValueError("metric: give exactly one of metric (a write) or method (a call)")
        if self.method is not None:
            for name in ("min", "max", "step"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only for writes (metric), this target calls {self.method}")
            names = [a.name for a in self.args or ()]
            for i, n in enumerate(names):
                if n in names[:i]:
                    raise ValueError(f"args[{i}].name: {n!r} is listed twice")
        else:
            for name in ("readback_metric", "expect", "args"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only for methods, this target writes {self.metric}")
        if self.min is not None and self.max is not None and self.max < self.min:
            raise ValueError(f"max: {self.max!r} is below min ({self.min!r})")
        if (self.readback_metric is None) != (self.expect is None):
            raise ValueError("expect: readback_metric and expect go together")
        return self

    @property
    def name(self) -> str:
        """The DCMD metric name: the signal, or `Method/<name>`."""
        return self.metric if self.metric is not None else f"Method/{self.method}"

    @property
    def kind(self) -> str:
        """write or call."""
        return "write" if self.metric is not None else "call"

    def least_role(self) -> str:
        """The least role the cloud demands."""
        return self.role or ("engineer" if self.metric is not None else "operator")


class CommandsConfig(_Model):
    """Command authenticity and targets (see the module docstring)."""

    public_keys: tuple[str, ...] = Field(default=(), description="cloud Ed25519 public keys, base64 raw")
    public_key_files: tuple[Path, ...] = Field(default=(), description="files holding one such key each")
    max_skew_s: float = Field(default=30.0, ge=0, le=3600)
    readback_timeout_s: float = Field(default=3.0, gt=0, le=120)
    targets: tuple[TargetConfig, ...] = ()

    @field_validator("public_keys")
    @classmethod
    def _keys(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from zhizao.broker.commands import CommandError, parse_public_key

        for text in v:
            try:
                parse_public_key(text)
            except CommandError as exc:
                raise ValueError(str(exc)) from None
        return v


def cross_check_commands(commands: CommandsConfig, machines: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Targets name known machines and (for writes) value-mapped signals; `machines`: id -> {metric: map}."""
    problems: list[str] = []
    for i, t in enumerate(commands.targets):
        where = f"commands.targets[{i}]"
        if t.machine != "*" and t.machine not in machines:
            problems.append(f"{where}.machine: no machine with this id ({t.machine!r})")
            continue
        signals = [machines[t.machine]] if t.machine != "*" else list(machines.values())
        for metric, need_value in ((t.metric, True), (t.readback_metric, False)):
            if metric is None:
                continue
            field = "metric" if need_value else "readback_metric"
            if not any(metric in s for s in signals):
                problems.append(f"{where}.{field}: the machine has no such signal ({metric!r})")
            elif need_value and any(s.get(metric) not in (None, "value") for s in signals):
                problems.append(f"{where}.{field}: only signals with map 'value' can be written ({metric!r})")
    return problems
