"""The edge agent config file: `AgentConfig`, `load_agent_config(path)`, and `ConfigError` with path+value messages.

Validation is pure: it never touches the network. Every problem is reported as `path: message (value)`, e.g.
`machines[0].signals[3].node_id: not an OPC UA node id ('ns=2;x=1')`, all of them at once.

Adapter sections are validated by the config model of the adapter registered under their `type`
(entry-point group `zhizao.adapters`), so an integrator's adapter brings its own config schema.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    ValidationError,
    field_validator,
    model_validator,
)

from zhizao.broker.contract.ids import ID_RULE, is_id
from zhizao.broker.contract.states import is_state_code
from zhizao.broker.mqtt import MqttUrlError, mqtt_url_from_env
from zhizao.edge.commands.config import CommandsConfig, cross_check_commands
from zhizao.edge.node.config import MqttConfig, OutboxConfig, SparkplugConfig

__all__ = [
    "OEE_SIGNALS",
    "AdapterSettings",
    "AgentConfig",
    "ConfigError",
    "MachineConfig",
    "SignalConfig",
    "is_node_id",
    "load_agent_config",
    "parse_agent_config",
]

# Sparkplug metric names: '/'-separated words; no MQTT wildcards, no leading/trailing '/'.
_METRIC = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .:-]*(?:/[A-Za-z0-9_][A-Za-z0-9_ .:-]*)*$")
# OPC UA node id text form (Part 6 5.3.1.10): optional ns=/nsu= prefix, then i=, s=, g= or b=.
_NODE_ID = re.compile(
    r"^(?:(?:ns=(?P<ns>\d{1,5})|nsu=[^;]+);)?"
    r"(?:i=(?P<i>\d{1,10})|s=.+|g=[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"|b=[A-Za-z0-9+/]+=*)$",
    re.DOTALL,
)

OEE_SIGNALS = ("State", "Counts/Total", "Counts/Good")
"""Metrics every machine needs for OEE (unless it sets `oee: false`)."""

MapKind = Literal["value", "packml_state", "counter", "good_counter"]
# The Sparkplug datatypes a signal can be published with (broker.sparkplug.DataType names); what each OPC UA type
# maps to is in edge/adapters/opcua/CONNECTING.md.
DataTypeName = Literal[
    "Double", "Float", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Boolean", "String",
    "Text", "UUID", "DateTime", "Int8Array", "Int16Array", "Int32Array", "Int64Array", "UInt8Array", "UInt16Array",
    "UInt32Array", "UInt64Array", "FloatArray", "DoubleArray", "BooleanArray", "StringArray", "DateTimeArray", "Bytes",
]
INTEGER_NAMES = frozenset({"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"})
SCALED_DATATYPES = frozenset({"Double", "Float", *INTEGER_NAMES})
"""Datatypes whose values `scale` and `offset` apply to (numbers in the float64 lane)."""
StateTarget = int | Literal["running", "stop_reason", "unknown"]


def is_node_id(text: str) -> bool:
    """True when `text` is an OPC UA node id in its string form (`ns=2;s=...`, `i=2258`, `nsu=...;s=...`)."""
    m = _NODE_ID.match(text)
    if m is None:
        return False
    if m.group("ns") is not None and int(m.group("ns")) > 0xFFFF:
        return False
    return not (m.group("i") is not None and int(m.group("i")) > 0xFFFFFFFF)


def _check_id(value: str) -> str:
    if not is_id(value):
        raise ValueError(f"not a valid id ({ID_RULE})")  # the error formatter adds the path and the value
    return value


def _check_node_id(value: str) -> str:
    if not is_node_id(value):
        raise ValueError("not an OPC UA node id")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdapterSettings(_Model):
    """Base of every adapter's config model: `type` picks the adapter, `name` is what machines refer to."""

    type: str
    name: str

    @field_validator("name")
    @classmethod
    def _name_is_id(cls, v: str) -> str:
        return _check_id(v)


class SignalConfig(_Model):
    """One machine signal: the metric it publishes, the device node it reads, and how the value is mapped.

    `map`: `value` (scaled pass-through), `packml_state` (PackML StateCurrent [+ StopReason] -> state code),
    `counter` (Int32 wrapping counter -> monotonic Int64), `good_counter` (processed - defective, monotonic).
    """

    metric: str
    node_id: str
    map: MapKind = "value"
    datatype: DataTypeName | None = Field(default=None, description="default: Double; Int32 for states, Int64 for counters")
    unit: str = ""
    scale: float | None = Field(default=None, description="value map only: published = raw * scale + offset")
    offset: float | None = None
    stop_reason_node_id: str | None = Field(default=None, description="packml_state only: the StopReason node")
    defective_node_id: str | None = Field(default=None, description="good_counter only: ProdDefectiveCount")
    numbering: Literal["packtags", "opc30060"] | None = Field(
        default=None, description="packml_state only: how StateCurrent numbers the states (default packtags)"
    )
    stop_reasons: dict[int, int] | None = Field(
        default=None, description="packml_state only: the PLC's own stop-reason numbers -> state codes"
    )
    states: dict[str, StateTarget] | None = Field(
        default=None, description="packml_state only: state name -> code, 'running', 'stop_reason' or 'unknown'"
    )
    slow_below: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="packml_state only: Execute counts as 20000 (slower) when CurMachSpeed < slow_below * MachSpeed",
    )

    @field_validator("metric")
    @classmethod
    def _metric_name(cls, v: str) -> str:
        if not _METRIC.match(v):
            raise ValueError("not a metric name (words separated by '/', no '+', '#' or empty parts)")
        return v

    @field_validator("node_id", "stop_reason_node_id", "defective_node_id")
    @classmethod
    def _node_ids(cls, v: str | None) -> str | None:
        return None if v is None else _check_node_id(v)

    @field_validator("states")
    @classmethod
    def _state_names(cls, v: dict[str, StateTarget] | None) -> dict[str, StateTarget] | None:
        from zhizao.edge.mapping import PACKML_STATE_NAMES  # lazy: mapping imports config

        if v is None:
            return v
        for name, target in v.items():
            if name not in PACKML_STATE_NAMES:
                raise ValueError(f"unknown PackML state {name!r}; known: {', '.join(PACKML_STATE_NAMES)}")
            if isinstance(target, int) and not is_state_code(target):
                raise ValueError(f"state {name!r}: {target} is not a state code (10000..229999)")
        return v

    @field_validator("stop_reasons")
    @classmethod
    def _reason_codes(cls, v: dict[int, int] | None) -> dict[int, int] | None:
        for plc, code in (v or {}).items():
            if not is_state_code(code):
                raise ValueError(f"stop reason {plc}: {code} is not a state code (10000..229999)")
        return v

    @model_validator(mode="after")
    def _fields_fit_map(self) -> SignalConfig:
        only = {
            "scale": "value", "offset": "value", "stop_reason_node_id": "packml_state", "numbering": "packml_state",
            "states": "packml_state", "stop_reasons": "packml_state", "slow_below": "packml_state",
            "defective_node_id": "good_counter",
        }
        # Messages start with "field: " so the error path names the field (see format_validation_error).
        for name, kind in only.items():
            if getattr(self, name) is not None and self.map != kind:
                raise ValueError(f"{name}: only for map {kind!r}, this signal has map {self.map!r}")
        if self.map == "good_counter" and self.defective_node_id is None:
            raise ValueError("defective_node_id: required for map 'good_counter' (the ProdDefectiveCount node)")
        if self.map != "value" and self.datatype is not None and self.datatype not in ("Int32", "Int64"):
            raise ValueError(f"datatype: map {self.map!r} publishes integers, not {self.datatype!r}")
        if (self.scale is not None or self.offset is not None) and self.published_datatype() not in SCALED_DATATYPES:
            name = "scale" if self.scale is not None else "offset"
            raise ValueError(f"{name}: only numbers are scaled; datatype {self.published_datatype()!r} is passed through")
        return self

    def published_datatype(self) -> DataTypeName:
        """The datatype this signal is published with."""
        if self.datatype is not None:
            return self.datatype
        return {"value": "Double", "packml_state": "Int32", "counter": "Int64", "good_counter": "Int64"}[self.map]  # type: ignore[return-value]


class MachineConfig(_Model):
    """A machine (Sparkplug device): its id, the adapter that reads it, and its signals."""

    id: str
    adapter: str
    oee: bool = Field(default=True, description="require State, Counts/Total and Counts/Good")
    signals: tuple[SignalConfig, ...] = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _check_id(v)


class AgentConfig(_Model):
    """One edge agent (Sparkplug edge node): where it publishes, what it reads, which machines it serves.

    Build it with `load_agent_config(path)` or `parse_agent_config(mapping)`: they validate the adapter
    sections with the model of each adapter's registered type.
    """

    site: str = Field(description="Sparkplug group_id")
    edge_node: str = Field(description="Sparkplug edge_node_id")
    mqtt: MqttConfig
    sparkplug: SparkplugConfig = SparkplugConfig()
    outbox: OutboxConfig = OutboxConfig()
    metrics_port: int | None = Field(default=None, ge=1, le=65535, description="Prometheus /metrics port; none: off")
    metrics_host: IPvAnyAddress = Field(
        default=IPv4Address("127.0.0.1"),
        description="address /metrics listens on (it has no authentication): this host only unless set, e.g. 0.0.0.0",
    )
    adapters: tuple[AdapterSettings, ...]
    machines: tuple[MachineConfig, ...]
    commands: CommandsConfig | None = Field(default=None, description="signed remote commands; none: refused")

    @field_validator("site", "edge_node")
    @classmethod
    def _ids(cls, v: str) -> str:
        return _check_id(v)

    @model_validator(mode="after")
    def _cross_checks(self) -> AgentConfig:
        problems = cross_check(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def machine_count(self) -> int:
        """Number of machines."""
        return len(self.machines)

    def signal_count(self) -> int:
        """Number of published machine signals."""
        return sum(len(m.signals) for m in self.machines)


def cross_check(config: AgentConfig) -> list[str]:
    """Checks that span sections: unique ids and metrics, machines mapped to adapters, OEE signals present."""
    problems: list[str] = []
    for key in ("adapters", "machines"):
        if not getattr(config, key):
            problems.append(f"{key}: at least one entry is needed (())")
    names: dict[str, int] = {}
    for i, a in enumerate(config.adapters):
        if a.name in names:
            problems.append(f"adapters[{i}].name: duplicate adapter name, also adapters[{names[a.name]}] ({a.name!r})")
        names.setdefault(a.name, i)
    machines: dict[str, int] = {}
    for i, m in enumerate(config.machines):
        where = f"machines[{i}]"
        if m.id in machines:
            problems.append(f"{where}.id: duplicate machine id, also machines[{machines[m.id]}] ({m.id!r})")
        machines.setdefault(m.id, i)
        if m.adapter not in names:
            known = ", ".join(repr(n) for n in names) or "none"
            problems.append(f"{where}.adapter: no adapter with this name (known: {known}) ({m.adapter!r})")
        seen: dict[str, int] = {}
        for j, s in enumerate(m.signals):
            key = s.metric.casefold()
            if key in seen:
                other = m.signals[seen[key]].metric
                what = "duplicate metric" if other == s.metric else f"differs only in case from {other!r}"
                problems.append(f"{where}.signals[{j}].metric: {what} (signals[{seen[key]}]) ({s.metric!r})")
            seen.setdefault(key, j)
        if m.oee:
            have = {s.metric for s in m.signals}
            missing = [name for name in OEE_SIGNALS if name not in have]
            if missing:
                problems.append(
                    f"{where}.signals: machine {m.id!r} lacks {', '.join(missing)} needed for OEE "
                    f"(map them, or set oee: false) ({sorted(have)!r})"
                )
    if config.commands is not None:
        signals = {m.id: {s.metric: s.map for s in m.signals} for m in config.machines}
        problems.extend(cross_check_commands(config.commands, signals))
    return problems


class ConfigError(ValueError):
    """An agent config is invalid; `problems` lists every `path: message (value)` line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid agent config\n" + "\n".join(f"  {p}" for p in problems))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_FIELD_MSG = re.compile(r"^([a-z_]+): (.*)$", re.DOTALL)


def format_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """Turn a pydantic error into `path: message (value)` lines."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path = _path(loc, prefix) or "(top level)"
        kind, msg, value = err["type"], str(err["msg"]), err.get("input")
        if kind == "extra_forbidden":
            lines.append(f"{path}: unknown key (a typo?) ({_short(value)})")
        elif kind == "missing":
            lines.append(f"{path}: required key is missing")
        elif kind == "value_error" and not loc and msg.removeprefix("Value error, ").count("\n"):
            lines.extend(msg.removeprefix("Value error, ").splitlines())
        elif kind == "value_error" and not loc:
            lines.append(msg.removeprefix("Value error, "))
        else:
            msg = msg.removeprefix("Value error, ")
            field = _FIELD_MSG.match(msg)
            if kind == "value_error" and isinstance(value, Mapping) and field and field.group(1) in value:
                # a model-level check about one field: point at that field and show its value
                lines.append(f"{path}.{field.group(1)}: {field.group(2)} ({_short(value[field.group(1)])})")
            elif kind == "value_error" and isinstance(value, Mapping) and field:
                lines.append(f"{path}.{field.group(1)}: {field.group(2)}")
            else:
                lines.append(f"{path}: {msg} ({_short(value)})")
    return lines


def parse_agent_config(data: Any, source: str = "<config>") -> AgentConfig:
    """Validate a parsed YAML document as an agent config; raise ConfigError listing every problem."""
    from zhizao.edge.adapters.base import installed_adapters, load_adapters  # lazy: plugins load on demand

    if not isinstance(data, Mapping):
        raise ConfigError(source, [f"(top level): expected a mapping of keys, got {type(data).__name__} ({_short(data)})"])
    problems: list[str] = []
    raw = dict(data)
    adapters_in = raw.get("adapters")
    if isinstance(adapters_in, list | tuple):
        # Only the adapter types this config names are imported: a broken plugin affects only configs using it.
        kinds = [item.get("type") for item in adapters_in if isinstance(item, Mapping)]
        registry, broken = load_adapters(k for k in kinds if isinstance(k, str))
        typed: list[Any] = []
        for i, item in enumerate(adapters_in):
            kind = item.get("type") if isinstance(item, Mapping) else None
            if not isinstance(item, Mapping):
                problems.append(f"adapters[{i}]: expected a mapping ({_short(item)})")
            elif isinstance(kind, str) and kind in broken:
                problems.append(f"adapters[{i}].type: {broken[kind]}")
            elif kind not in registry:
                known = ", ".join(sorted(installed_adapters())) or "none installed"
                problems.append(f"adapters[{i}].type: unknown adapter type (installed: {known}) ({kind!r})")
            else:
                try:
                    typed.append(registry[kind].config_model.model_validate(dict(item)))
                except ValidationError as exc:
                    problems.extend(format_validation_error(exc, f"adapters[{i}]"))
        if problems:
            # Report the other sections too: validate them with placeholder adapters removed.
            raw["adapters"] = typed or [{"type": "placeholder", "name": "placeholder"}]
        else:
            raw["adapters"] = typed
    try:
        config = AgentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = format_validation_error(exc)
        if problems:
            # A machine naming an adapter whose section failed would be reported twice; keep the root cause.
            lines = [ln for ln in lines if ".adapter: no adapter with this name" not in ln and "placeholder" not in ln]
        problems.extend(lines)
    if problems:
        raise ConfigError(source, problems)
    return config


def load_agent_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read and validate an agent config file (YAML); `ZHIZAO_MQTT_URL` overrides `mqtt.url`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"(file): cannot read the file: {exc.strerror} ({source!r})"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
        raise ConfigError(source, [f"(file): not valid YAML at {where}: {getattr(exc, 'problem', exc)}"]) from exc
    try:
        url = mqtt_url_from_env()
    except MqttUrlError as exc:
        raise ConfigError(source, [f"mqtt.url: {exc}"]) from exc
    if url and isinstance(data, dict):
        mqtt = data.get("mqtt")
        data["mqtt"] = {**mqtt, "url": url} if isinstance(mqtt, dict) else {"url": url}
    return parse_agent_config(data, source)
