"""Signed remote commands at the edge: verify, refuse replays, check limits, execute, read back, report.

`CommandExecutor.on_dcmd(device, decoded)` is the edge node's DCMD handler. A DCMD is executed only when it is
signed by a key in `commands.public_keys` (broker/commands.py), not expired, not seen before (ids are kept
until they expire, on disk, so a restart does not reopen the replay window) and aimed at a configured
target within its limits. Refusals are counted by reason (`counters`, exported as
`zhizao_edge_commands_total{result=...}`). Execution runs in its own task, one command at a time per machine,
so a slow read-back never holds up publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections import Counter as Tally
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from zhizao.broker.commands import (
    COMMAND_ID,
    CONFIG_DOCUMENT,
    CONFIG_ROLLBACK_S,
    CONFIG_VERSION,
    CommandError,
    CommandResult,
    encode_result,
    key_id,
    parse_public_key,
    result_topic,
    verify_command,
)
from zhizao.broker.sparkplug.codec import Decoded
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.edge.adapters.base import Adapter, AdapterError
from zhizao.edge.commands.config import CommandsConfig, TargetConfig
from zhizao.edge.config import INTEGER_NAMES, AgentConfig, SignalConfig
from zhizao.edge.mapping import AgentMapping
from zhizao.edge.node.session import EdgeNode

log = logging.getLogger(__name__)

COMMANDS = Counter("zhizao_edge_commands", "Remote commands by outcome (refusals by reason)",
                   ["site", "edge_node", "result"])  # fmt: skip
_POLL_S = 0.05
Value = float | int | bool | str | None
ConfigHandler = Callable[[str, str, int, float], None]
"""(push id, config YAML, cloud version, rollback after s): the agent validates and applies a pushed config."""


def now_ms() -> int:
    """UTC epoch milliseconds."""
    return time.time_ns() // 1_000_000


class _Seen:
    """Command ids already taken, with their expiry, persisted so that a restart keeps refusing replays."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError, AttributeError):
            self.ids = {str(k): int(v) for k, v in json.loads(path.read_text()).items()}

    def add(self, command_id: str, expires_ms: int, now: int, keep_ms: int) -> bool:
        """Remember `command_id`; False when it was seen before (a replay)."""
        if command_id in self.ids:
            return False
        self.ids = {k: v for k, v in self.ids.items() if v + keep_ms >= now}
        self.ids[command_id] = expires_ms
        tmp = self.path.with_suffix(".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(self.ids))
        os.replace(tmp, self.path)
        return True


class CommandExecutor:
    """Executes the signed commands of one agent (see the module docstring)."""

    def __init__(self, config: AgentConfig, mapping: AgentMapping, node: EdgeNode,
                 adapters: dict[str, Adapter], state_dir: Path) -> None:  # fmt: skip
        self.site, self.edge = config.site, config.edge_node
        self.config: CommandsConfig = config.commands or CommandsConfig()
        self.mapping = mapping
        self.node = node
        self.adapters = adapters
        self.counters: Tally[str] = Tally()
        self._exported: Tally[str] = Tally()
        self._keys = {}
        for text in self.config.public_keys:
            pub = parse_public_key(text)
            self._keys[key_id(pub)] = pub
        for path in self.config.public_key_files:
            try:
                pub = parse_public_key(Path(path).read_text())
            except (OSError, CommandError) as exc:
                log.error("edge agent %s/%s: commands.public_key_files %s: %s", self.site, self.edge, path, exc)
                continue
            self._keys[key_id(pub)] = pub
        self._seen = _Seen(state_dir / "commands-seen.json")
        self._signals: dict[tuple[str, str], SignalConfig] = {
            (m.id, s.metric): s for m in config.machines for s in m.signals
        }
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._topic = result_topic(self.site, self.edge)
        self.on_config: ConfigHandler | None = None

    # ---- what the cloud learns from the agent info ----------------------------------------------------------
    def target(self, machine: str, name: str) -> TargetConfig | None:
        """The configured target for `name` (a metric or Method/X) on `machine`; the machine's own wins over *."""
        found = None
        for t in self.config.targets:
            if t.name == name and t.machine in (machine, "*"):
                if t.machine == machine:
                    return t
                found = found or t
        return found

    def describe_targets(self) -> list[dict[str, Any]]:
        """Every (machine, target) with its limits, for the agent info (the cloud's pre-checks and buttons)."""
        out = []
        for machine in self.node.index.devices:
            for name in dict.fromkeys(t.name for t in self.config.targets):
                t = self.target(machine, name)
                if t is None:
                    continue
                sig = self.node.index.by_name.get((machine, t.metric)) if t.metric else None
                if t.metric is not None and sig is None:
                    continue
                datatype = int(self.node.index.datatype_of[sig]) if sig is not None else None
                if t.args:  # the arguments travel as a JSON object in a String metric
                    datatype = int(DataType.String)
                out.append({
                    "machine": machine, "name": t.name, "kind": t.kind, "method": t.method, "datatype": datatype,
                    "args": [a.model_dump(exclude_none=True) for a in t.args] if t.args else None,
                    "min": t.min, "max": t.max, "step": t.step,
                    "allowed_states": list(t.allowed_states) if t.allowed_states is not None else None,
                    "role": t.least_role(), "critical": t.critical,
                })  # fmt: skip
        return out

    @property
    def enabled(self) -> bool:
        """True when the agent trusts at least one key."""
        return bool(self._keys)

    # ---- the DCMD path ----------------------------------------------------------------------------------------
    async def on_dcmd(self, device: int, decoded: Decoded) -> None:
        """Verify a DCMD and start executing it; refusals are counted and (when the id is trusted) reported."""
        machine = self.node.index.devices[device]
        self.counters["received"] += 1
        if not self._keys:
            self._refuse(None, machine, "disabled", "this agent trusts no command key (commands.public_keys)")
            return
        now = now_ms()
        try:
            cmd = verify_command(decoded, self._keys, self.site, self.edge, machine, now,
                                 int(self.config.max_skew_s * 1000))  # fmt: skip
        except CommandError as exc:
            # An expired command is authentic: the cloud learns why it did nothing.
            trusted = exc.reason == "expired"
            at = decoded.index_of(COMMAND_ID)
            cid = decoded.text.get(at) if trusted and at is not None else None
            self._refuse(cid, machine, exc.reason, str(exc))
            return
        if not self._seen.add(cmd.command_id, cmd.expires_ms, now, int(self.config.max_skew_s * 1000)):
            # Never reported with the id: the original's outcome stands.
            self._refuse(None, machine, "replayed", f"DCMD {cmd.command_id!r} was executed before: a replay")
            return
        self._report(CommandResult("delivered", cmd.command_id, machine, timestamp_ms=now_ms()))
        task = asyncio.create_task(self._execute(machine, cmd.command_id, cmd.metrics))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_ncmd(self, decoded: Decoded) -> None:
        """A config push (NCMD): verified like a DCMD (machine ""), then handed to the agent (`on_config`)."""
        self.counters["received"] += 1
        if not self._keys:
            self._refuse(None, "", "disabled", "this agent trusts no command key (commands.public_keys)")
            return
        now = now_ms()
        try:
            cmd = verify_command(decoded, self._keys, self.site, self.edge, "", now, int(self.config.max_skew_s * 1000))
        except CommandError as exc:
            at = decoded.index_of(COMMAND_ID)
            cid = decoded.text.get(at) if exc.reason == "expired" and at is not None else None
            self._refuse(cid, "", exc.reason, str(exc))
            return
        if not self._seen.add(cmd.command_id, cmd.expires_ms, now, int(self.config.max_skew_s * 1000)):
            self._refuse(None, "", "replayed", f"config push {cmd.command_id!r} was taken before: a replay")
            return
        values = {name: v for name, _dt, v in cmd.metrics}
        doc, version, rollback = values.get(CONFIG_DOCUMENT), values.get(CONFIG_VERSION), values.get(CONFIG_ROLLBACK_S)
        if not isinstance(doc, str) or not isinstance(version, int) or not isinstance(rollback, float | int):
            self._refuse(cmd.command_id, "", "malformed", "a config push carries Document, Version and RollbackAfterS")
            return
        self._report(CommandResult("delivered", cmd.command_id, timestamp_ms=now_ms()))
        if self.on_config is None:
            self._refuse(cmd.command_id, "", "disabled", "this agent does not take config pushes")
            return
        self.on_config(cmd.command_id, doc, version, float(rollback))

    def report(self, result: CommandResult) -> None:
        """Publish a result (QoS 1) on the agent's result topic."""
        self._report(result)

    def _refuse(self, command_id: str | None, machine: str, reason: str, message: str) -> None:
        self.counters[f"refused_{reason.replace('-', '_')}"] += 1
        self.node.stats.rejected_commands += 1
        log.warning("edge agent %s/%s: command refused (%s): %s", self.site, self.edge, reason, message)
        self._report(CommandResult("refused", command_id, machine, message, reason=reason, timestamp_ms=now_ms()))

    def _report(self, result: CommandResult) -> None:
        if result.status in ("confirmed", "failed"):
            self.counters[result.status] += 1
        try:
            self.node.link.publish(self._topic, encode_result(result), 1)
        except Exception as exc:  # noqa: BLE001 - a lost connection must not kill the command task
            log.warning("edge agent %s/%s: command result not published: %s", self.site, self.edge, exc)

    async def _execute(self, machine: str, command_id: str, metrics: tuple[tuple[str, int, Value], ...]) -> None:
        lock = self._locks.setdefault(machine, asyncio.Lock())
        async with lock:
            try:
                result = await self._run(machine, command_id, metrics)
            except Exception as exc:
                log.exception("edge agent %s/%s: command %s failed unexpectedly", self.site, self.edge, command_id)
                result = CommandResult("failed", command_id, machine, f"{type(exc).__name__}: {exc}")
        if result.status == "refused":
            self._refuse(command_id, machine, result.reason or "limit", result.message)
            return
        self._report(CommandResult(result.status, command_id, machine, result.message, result.value, result.code,
                                   result.code_name, result.reason, now_ms()))  # fmt: skip

    async def _run(self, machine: str, cid: str, metrics: tuple[tuple[str, int, Value], ...]) -> CommandResult:
        if len(metrics) != 1:
            return CommandResult("refused", cid, machine, f"a command carries exactly one metric, not {len(metrics)}",
                                 reason="malformed")  # fmt: skip
        name, _dt, value = metrics[0]
        target = self.target(machine, name)
        if target is None:
            return CommandResult("refused", cid, machine, f"{machine} {name}: not a command target of this agent",
                                 reason="not-a-target")  # fmt: skip
        problem = self._check_limits(machine, target, value)
        if problem:
            return CommandResult("refused", cid, machine, problem, reason="limit")
        if target.method is not None:
            return await self._call(machine, cid, target, _parse_args(machine, target, value)[0] if target.args else [])
        return await self._write(machine, cid, target, value)

    def _state_of(self, machine: str) -> int | None:
        sig = self.node.index.by_name.get((machine, "State"))
        if sig is None or not self.node.pub.last.seen[sig]:
            return None
        v = float(self.node.pub.last.value[sig])
        return int(v) if math.isfinite(v) else None

    def _check_limits(self, machine: str, t: TargetConfig, value: Value) -> str | None:
        where = f"{machine} {t.name}"
        if t.allowed_states is not None:
            state = self._state_of(machine)
            allowed = ", ".join(str(c) for c in t.allowed_states)
            if state is None or (state // 10000) * 10000 not in t.allowed_states:
                return f"{where}: limit allowed_states: the machine's State is {state}, allowed: {allowed}"
        if t.method is not None:
            if t.args:
                return _parse_args(where, t, value)[1]
            return None if value is True else f"{where}: a method metric carries Boolean true, not {value!r}"
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(float(value)):
            return f"{where}: value {value!r} is not a finite number"
        v = float(value)
        if t.min is not None and v < t.min:
            return f"{where}: value {v:g} is below the limit min={t.min:g}"
        if t.max is not None and v > t.max:
            return f"{where}: value {v:g} is above the limit max={t.max:g}"
        if t.step is not None:
            k = (v - (t.min or 0.0)) / t.step
            if abs(k - round(k)) > 1e-9 * max(1.0, abs(k)):
                return f"{where}: value {v:g} is not on the limit step={t.step:g} (from {t.min or 0.0:g})"
        return None

    def _source(self, machine: str, metric: str) -> tuple[Adapter, int, SignalConfig]:
        sig = self._signals[(machine, metric)]
        adapter = self.mapping.adapter_of(machine)
        assert adapter is not None
        sources = self.mapping.plans[adapter].sources.signals
        src = next(i for i, s in enumerate(sources) if s.metric == sig.node_id)
        return self.adapters[adapter], src, sig

    async def _write(self, machine: str, cid: str, t: TargetConfig, value: Value) -> CommandResult:
        assert t.metric is not None and isinstance(value, int | float)
        adapter, src, sig = self._source(machine, t.metric)
        scale, offset = sig.scale or 1.0, sig.offset or 0.0
        raw = (float(value) - offset) / scale
        raw_out: float | int = round(raw) if sig.published_datatype() in INTEGER_NAMES else raw
        try:
            await adapter.write(src, raw_out)
            back = await adapter.read(src)
        except AdapterError as exc:
            return _failed(cid, machine, exc)
        if not isinstance(back, int | float) or isinstance(back, bool):
            return CommandResult("failed", cid, machine, f"read-back of {t.metric} gave {back!r}", back)
        published = float(back) * scale + offset
        if not math.isclose(published, float(value), rel_tol=1e-9, abs_tol=1e-9):
            return CommandResult("failed", cid, machine,
                                 f"read-back of {t.metric} is {published:g}, not the {float(value):g} written",
                                 published, reason="readback")  # fmt: skip
        log.info("edge agent %s/%s: %s %s = %g confirmed", self.site, self.edge, machine, t.metric, published)
        return CommandResult("confirmed", cid, machine, f"{t.metric} = {published:g} read back", published)

    async def _call(self, machine: str, cid: str, t: TargetConfig, args: list[Any]) -> CommandResult:
        assert t.method is not None
        adapter_name = self.mapping.adapter_of(machine)
        assert adapter_name is not None
        try:
            await self.adapters[adapter_name].call(machine, t.method, args)
        except AdapterError as exc:
            return _failed(cid, machine, exc)
        if t.readback_metric is None or t.expect is None:
            return CommandResult("confirmed", cid, machine, f"{t.method} returned Good (no read-back configured)")
        adapter, src, _ = self._source(machine, t.readback_metric)
        deadline = time.monotonic() + self.config.readback_timeout_s
        back: Value = None
        while True:
            try:
                back = await adapter.read(src)
            except AdapterError as exc:
                return _failed(cid, machine, exc)
            if isinstance(back, int | float) and not isinstance(back, bool) and float(back) in t.expect:
                log.info("edge agent %s/%s: %s %s confirmed", self.site, self.edge, machine, t.method)
                return CommandResult("confirmed", cid, machine, f"{t.method}: {t.readback_metric} = {back!r}", back)
            if time.monotonic() >= deadline:
                expected = ", ".join(f"{x:g}" for x in t.expect)
                return CommandResult("failed", cid, machine,
                                     f"{t.method}: {t.readback_metric} is {back!r} after "
                                     f"{self.config.readback_timeout_s:g} s, expected {expected}", back,
                                     reason="readback")  # fmt: skip
            await asyncio.sleep(_POLL_S)

    # ---- counters ---------------------------------------------------------------------------------------------
    def export(self) -> None:
        """Add the counter deltas to the prometheus metric."""
        for key, n in self.counters.items():
            d = n - self._exported[key]
            if d > 0:
                COMMANDS.labels(self.site, self.edge, key).inc(d)
                self._exported[key] = n

    async def close(self) -> None:
        """Wait briefly for commands in flight, then cancel them."""
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def _parse_args(where: str, t: TargetConfig, value: Value) -> tuple[list[Any], str | None]:
    """A method's arguments from the JSON object its metric carries: (values in declared order, problem)."""
    assert t.args is not None
    try:
        doc = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return [], f"{where}: the arguments are a JSON object (String), not {value!r}"
    names = [a.name for a in t.args]
    unknown = sorted(set(doc) - set(names))
    if unknown:
        return [], f"{where}: unknown argument {unknown[0]!r} (arguments: {', '.join(names)})"
    out: list[Any] = []
    for a in t.args:
        v = doc.get(a.name)
        if a.type == "String":
            if not isinstance(v, str):
                return [], f"{where}: argument {a.name}={v!r} is not a string"
            out.append(v)
            continue
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(float(v)):
            return [], f"{where}: argument {a.name}={v!r} is not a finite number"
        if a.min is not None and float(v) < a.min:
            return [], f"{where}: argument {a.name}={v!r} is below the limit min={a.min:g}"
        if a.max is not None and float(v) > a.max:
            return [], f"{where}: argument {a.name}={v!r} is above the limit max={a.max:g}"
        out.append(float(v))
    return out, None


def _failed(cid: str, machine: str, exc: AdapterError) -> CommandResult:
    return CommandResult("failed", cid, machine, str(exc), code=exc.status_code, code_name=exc.status_name,
                         reason="device")  # fmt: skip

