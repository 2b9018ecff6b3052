"""The edge agent runtime: adapters -> mapping -> outbox -> Sparkplug edge node, supervised, until stopped.

`run_agent(config)` builds the signal table and adapters from the config, starts the edge node, supervises
each adapter (AdapterTemporaryError: retry with capped backoff, its machines DDEATH meanwhile;
AdapterAuthError: that adapter stops with one clear log line; AdapterConfigError: the agent refuses to run
and `run_agent` raises AgentError), and on SIGINT/SIGTERM or `stop` shuts down cleanly: the last samples
published, NDEATH, DISCONNECT, outbox fsynced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from zhizao.broker.commands import CommandResult, info_topic
from zhizao.broker.mqtt import mqtt_url_from_env
from zhizao.broker.mqtt.backoff import Backoff
from zhizao.edge.adapters.base import (
    Adapter,
    AdapterAuthError,
    AdapterConfigError,
    AdapterError,
    AdapterTemporaryError,
    SampleSink,
    installed_adapters,
    load_adapters,
)
from zhizao.edge.commands.executor import CommandExecutor, now_ms
from zhizao.edge.commands.info import config_version, encode_info
from zhizao.edge.config import AdapterSettings, AgentConfig, ConfigError, parse_agent_config
from zhizao.edge.health import HealthExporter
from zhizao.edge.mapping import AgentMapping, build_mapping
from zhizao.edge.node.session import EdgeNode, NodeError
from zhizao.edge.outbox import Outbox, OutboxError, OutboxFullError
from zhizao.edge.samples import SampleBlock

log = logging.getLogger(__name__)

# A PLC that reboots is back within seconds: the retry delay stays short (jittered, so a plant's agents do not
# reconnect to a shared server in lockstep).
BACKOFF_MIN_S = 0.5
# Derived signals of a block's newest instant wait for the adapter's next block (edge/mapping.py); without
# one they go out after this many delivery intervals of the adapter (never sooner than HELD_MIN_S).
HELD_INTERVALS = 2.0
HELD_MIN_S = 0.5
BACKOFF_MAX_S = 5.0
HEALTH_UPDATE_S = 1.0


class AgentError(Exception):
    """The agent cannot run with this configuration (unknown adapter type, outbox in use, config refused)."""


class _Agent:
    """One running agent: the objects `run_agent` wires together."""

    def __init__(self, config: AgentConfig, adapter_types: Mapping[str, type[Adapter]]) -> None:
        self.config = config
        self.site, self.edge = config.site, config.edge_node
        self.mapping: AgentMapping = build_mapping(config)
        try:
            self.outbox = Outbox(
                config.outbox.resolve_dir(self.site, self.edge),
                config.outbox,
                label=f"{self.site}/{self.edge}",
            )
        except OutboxError as exc:
            raise AgentError(f"outbox.dir: {exc}") from None
        try:
            self.node = EdgeNode(
                self.site,
                self.edge,
                config.mqtt,
                config.sparkplug,
                self.outbox,
                self.mapping.signals,
                acks=config.outbox.acks,
            )
        except NodeError as exc:
            self.outbox.close()
            raise AgentError(str(exc)) from None
        self.health = HealthExporter(self.site, self.edge, self.node, self.outbox)
        self.adapters: dict[str, Adapter] = {}
        for i, (name, plan) in enumerate(self.mapping.plans.items()):
            cls = adapter_types.get(plan.type)
            if cls is None:
                self.outbox.close()
                known = ", ".join(sorted(adapter_types)) or "none"
                raise AgentError(
                    f"adapters[{i}].type: no adapter {plan.type!r} is installed (known: {known})"
                )
            self.adapters[name] = cls(plan.config, plan.sources, self._sink(name), self._device_state(name))
        self._sink_errors: set[str] = set()
        self.fatal: list[str] = []
        self._adapters_down: set[str] = set()  # adapters whose machines are marked offline
        # Remote commands: only signed ones, only to configured targets (edge/commands/).
        self.commands = CommandExecutor(config, self.mapping, self.node, self.adapters, self.outbox.dir)
        self.node.on_dcmd = self.commands.on_dcmd
        self.node.on_ncmd = self.commands.on_ncmd
        self.node.on_birth = self.publish_info
        self.started_ms = now_ms()
        self.config_version = config_version(config)
        self.last_errors: list[dict[str, object]] = []
        self._info_topic = info_topic(self.site, self.edge)
        # Remote configuration: a validated push waits here until the runner swaps agents (see run_agent).
        self.commands.on_config = self.request_config
        self.wake = asyncio.Event()  # set: this agent run ends (stop, config change, rollback)
        self.change: _Change | None = None
        self.trial: _Change | None = None  # this run tries a pushed config
        self.rollback_reason: str | None = None
        self.pending: list[CommandResult] = []  # reported once the session is online
        self.connected: set[str] = set()
        self.cloud_version = _read_version(self.outbox.dir)
        self.tasks: dict[str, asyncio.Task[None]] = {}  # supervise task per adapter
        self.config_path: Path | None = None
        self._swap: asyncio.Task[None] | None = None
        self._release_timers: dict[str, asyncio.TimerHandle] = {}

    def _sink(self, adapter: str) -> SampleSink:
        transform = self.mapping.transform

        def sink(block: SampleBlock) -> None:
            self._append(adapter, lambda: transform(adapter, block))
            self._arm_release(adapter)

        return sink

    def _device_state(self, adapter: str) -> Callable[[str, bool], None]:
        def device_state(machine: str, online: bool) -> None:
            if not online:
                self.release(adapter)  # its samples go out before the machine's DDEATH
            self.node.device_state(machine, online)

        return device_state

    def _append(self, adapter: str, produce: Callable[[], SampleBlock]) -> None:
        try:
            out = produce()
            if len(out):
                self.outbox.append(out)
        except OutboxFullError:
            pass  # counted by the outbox (rejected_samples) and logged there once per episode
        except (OutboxError, ValueError, IndexError) as exc:
            # A bad block or a disk error must not take the adapter's session down; say so once per kind.
            key = f"{adapter}:{type(exc).__name__}"
            if key not in self._sink_errors:
                self._sink_errors.add(key)
                log.error("edge agent %s/%s: samples from %s dropped: %s", self.site, self.edge, adapter, exc)

    def _arm_release(self, adapter: str) -> None:
        """Held derived inputs (the newest instant of the block) go out with the next block, or after a short
        time without one."""
        timer = self._release_timers.pop(adapter, None)
        if timer is not None:
            timer.cancel()
        if not self.mapping.holding(adapter):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a sink called outside the event loop (against the adapter contract): no wait
            self.release(adapter)
            return
        hold_s = max(HELD_INTERVALS * self.adapters[adapter].delivery_interval_s, HELD_MIN_S)
        self._release_timers[adapter] = loop.call_later(hold_s, self.release, adapter)

    def release(self, adapter: str) -> None:
        """Append the derived samples the mapping holds back for `adapter` (timer, adapter stop, shutdown)."""
        timer = self._release_timers.pop(adapter, None)
        if timer is not None:
            timer.cancel()
        if self.mapping.holding(adapter):
            self._append(adapter, lambda: self.mapping.flush(adapter))

    def _machines_state(self, adapter: str, online: bool) -> None:
        if not online:
            self.release(adapter)
        for machine in self.mapping.plans[adapter].machines:
            self.node.device_state(machine, online)

    async def supervise(self, name: str, adapter: Adapter, stop: asyncio.Event) -> None:
        """Run one adapter; retry temporary errors (and any error its library raises untyped) with capped,
        jittered backoff, so a PLC reboot costs seconds; stop on auth errors; fail the agent on config errors."""
        backoff = Backoff(BACKOFF_MIN_S, BACKOFF_MAX_S)
        while not stop.is_set():
            try:
                await self._connect_and_run(name, adapter, backoff)
            except AdapterTemporaryError as exc:
                self._down(name, str(exc))
            except AdapterAuthError as exc:
                self.health.adapter(name, False)
                log.error(
                    "edge agent %s/%s: adapter %s stopped: credentials refused (%s); fix its security settings",
                    self.site, self.edge, name, exc,
                )  # fmt: skip
                self._machines_state(name, False)
                await self._close(name, adapter)
                return
            except AdapterConfigError as exc:
                self.fatal.append(f"adapter {name}: {exc}")
                log.error(
                    "edge agent %s/%s: adapter %s refused its config: %s", self.site, self.edge, name, exc
                )
                await self._close(name, adapter)
                stop.set()
                return
            except Exception as exc:  # an adapter's library may raise anything: retry it, never die silently
                log.error("edge agent %s/%s: adapter %s failed with an unexpected %s: %s; retrying",
                          self.site, self.edge, name, type(exc).__name__, exc,
                          exc_info=name not in self._adapters_down)  # fmt: skip
                self._down(name, f"{type(exc).__name__}: {exc}")
            await self._close(name, adapter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff.next_delay())

    async def _connect_and_run(self, name: str, adapter: Adapter, backoff: Backoff) -> None:
        """Connect, then deliver until the adapter stops (a normal return counts as a lost connection)."""
        await adapter.connect()
        self.health.adapter(name, True)
        self.connected.add(name)
        backoff.reset()
        if name in self._adapters_down:
            self._adapters_down.discard(name)
            log.info("edge agent %s/%s: adapter %s connected again", self.site, self.edge, name)
            self._machines_state(name, True)
        await adapter.run()
        raise AdapterTemporaryError(f"adapter {name} stopped delivering without an error")

    def _down(self, name: str, why: str) -> None:
        """An adapter is not delivering: count it; the first time, log it and mark its machines offline."""
        self.health.adapter(name, False, restarted=True)
        self.connected.discard(name)
        self.last_errors = [*self.last_errors[-4:], {"at": now_ms(), "adapter": name, "error": why[:300]}]
        if name not in self._adapters_down:
            self._adapters_down.add(name)
            log.warning(
                "edge agent %s/%s: adapter %s down (%s); retrying every <= %.0f s",
                self.site, self.edge, name, why, BACKOFF_MAX_S,
            )  # fmt: skip
            self._machines_state(name, False)

    async def _close(self, name: str, adapter: Adapter) -> None:
        try:
            await adapter.close()
        except AdapterError as exc:
            log.warning("edge agent %s/%s: adapter %s close: %s", self.site, self.edge, name, exc)

    async def health_loop(self) -> None:
        """Refresh the prometheus metrics every second; the agent info every health interval while online."""
        last_info = 0.0
        loop = asyncio.get_running_loop()
        while True:
            self.health.update()
            self.commands.export()
            if self.node.state == "online" and loop.time() - last_info >= self.config.sparkplug.health_interval_s:
                last_info = loop.time()
                self.publish_info()
            await asyncio.sleep(HEALTH_UPDATE_S)

    def request_config(self, push_id: str, text: str, version: int, rollback_s: float) -> None:
        """A signed config push: validate it with the agent's own model; if good, end this run to apply it."""
        try:
            data = yaml.safe_load(text)
            env_url = mqtt_url_from_env()
            if env_url and isinstance(data, dict) and isinstance(data.get("mqtt"), dict):
                data["mqtt"] = {**data["mqtt"], "url": env_url}  # as load_agent_config: the environment wins
            new = parse_agent_config(data, f"config v{version}")
        except (yaml.YAMLError, ConfigError) as exc:
            problems = exc.problems if isinstance(exc, ConfigError) else [f"(file): not valid YAML: {exc}"]
            self.commands.report(CommandResult("refused", push_id, message="; ".join(problems)[:1900],
                                               reason="invalid", timestamp_ms=now_ms()))  # fmt: skip
            return
        wrong = [f"{k}: {getattr(new, k)!r} differs from this agent's {getattr(self.config, k)!r}"
                 for k in ("site", "edge_node") if getattr(new, k) != getattr(self.config, k)]  # fmt: skip
        if new.outbox.resolve_dir(new.site, new.edge_node) != self.outbox.dir:
            wrong.append("outbox.dir: a config push may not move the outbox (its data would be left behind)")
        if self.change is not None or self.trial is not None:
            wrong.append("another config push is being applied")
        if wrong:
            self.commands.report(CommandResult("refused", push_id, message="; ".join(wrong), reason="invalid",
                                               timestamp_ms=now_ms()))  # fmt: skip
            return
        log.info("edge agent %s/%s: applying config version %d", self.site, self.edge, version)
        change = _Change(push_id, new, text, version, rollback_s)
        if _adapters_only(self.config, new):
            # Only adapter sections changed: those adapters reconnect, the MQTT session and the rest stay.
            self.trial = change
            self._swap = asyncio.create_task(self._swap_adapters(change))
            return
        self.change = change
        self.wake.set()

    def start_adapter(self, name: str) -> None:
        """Supervise adapter `name` (in a task of its own)."""
        self.tasks[name] = asyncio.create_task(self.supervise(name, self.adapters[name], self.wake),
                                               name=f"adapter {name}")  # fmt: skip

    async def _replace_adapters(self, sections: dict[str, AdapterSettings]) -> None:
        for name, section in sections.items():
            task = self.tasks.pop(name, None)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await self._close(name, self.adapters[name])
            self.health.adapter(name, False)
            self.connected.discard(name)
            plan = self.mapping.plans[name]
            plan.config = section
            self.adapters[name] = type(self.adapters[name])(section, plan.sources, self._sink(name),
                                                            self._device_state(name))  # fmt: skip
            self.start_adapter(name)

    async def _swap_adapters(self, change: _Change) -> None:
        """Reconnect only the adapters whose section changed; back to the old sections if they do not connect."""
        old = {a.name: a for a in self.config.adapters}
        new = {a.name: a for a in change.config.adapters}
        changed = [n for n in new if new[n] != old[n]]
        previous, previous_version = self.config, self.config_version
        await self._replace_adapters({n: new[n] for n in changed})
        self.config, self.config_version = change.config, config_version(change.config)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + change.rollback_s
        while loop.time() < deadline and not set(changed) <= self.connected:  # noqa: ASYNC110 - no event for it
            await asyncio.sleep(0.1)
        if set(changed) <= self.connected:
            self.cloud_version = change.version
            _write_version(self.outbox.dir, change.version)
            await asyncio.to_thread(_persist, self.config_path, change.text)
            self.commands.report(CommandResult("applied", change.push_id, timestamp_ms=now_ms(),
                                               message=f"config version {change.version} applied; reconnected "
                                               f"{', '.join(changed) or 'no adapter'}"))  # fmt: skip
            log.info("edge agent %s/%s: config version %d applied in place (%s)", self.site, self.edge,
                     change.version, ", ".join(changed))  # fmt: skip
        else:
            missing = sorted(set(changed) - self.connected)
            reason = (f"not connected within {change.rollback_s:g} s: "
                      + ", ".join(f"adapter {n} not connected" for n in missing))  # fmt: skip
            log.warning("edge agent %s/%s: config version %d rolled back (%s)", self.site, self.edge,
                        change.version, reason)  # fmt: skip
            await self._replace_adapters({n: old[n] for n in changed})
            self.config, self.config_version = previous, previous_version
            self.commands.report(CommandResult("rolled_back", change.push_id, message=reason, timestamp_ms=now_ms()))
        self.trial = None

    async def trial_watch(self) -> None:
        """A pushed config must connect (MQTT session and every adapter) within its time, else roll back."""
        assert self.trial is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.trial.rollback_s
        while loop.time() < deadline:
            if self.node.state == "online" and self.connected == set(self.adapters) and not self.fatal:
                self.commands.report(CommandResult("applied", self.trial.push_id,
                                                   message=f"config version {self.trial.version} applied",
                                                   timestamp_ms=now_ms()))  # fmt: skip
                self.cloud_version = self.trial.version
                _write_version(self.outbox.dir, self.trial.version)
                log.info("edge agent %s/%s: config version %d applied", self.site, self.edge, self.trial.version)
                self.trial = None
                return
            await asyncio.sleep(0.1)
        missing = sorted(set(self.adapters) - self.connected)
        why = [] if self.node.state == "online" else [f"MQTT session {self.node.state}"]
        why += [f"adapter {n} not connected" for n in missing] + list(self.fatal)
        self.rollback_reason = f"not connected within {self.trial.rollback_s:g} s: {', '.join(why)}"
        log.warning("edge agent %s/%s: config version %d rolled back (%s)", self.site, self.edge,
                    self.trial.version, self.rollback_reason)  # fmt: skip
        self.wake.set()

    def publish_info(self) -> None:
        """Publish the agent info (retained): versions, targets, outbox, devices, counters, last errors, clock."""
        for result in self.pending:
            self.commands.report(result)
        self.pending.clear()
        node, box = self.node, self.outbox
        oldest = box.oldest_sample_ms()
        doc = {
            "timestamp": now_ms(), "started": self.started_ms, "config_version": self.config_version,
            "config_cloud_version": self.cloud_version,
            "state": node.state, "outbox_depth": box.depth_samples, "outbox_bytes": box.depth_bytes,
            "outbox_oldest_ms": oldest,
            "samples_per_s": node.samples_per_s, "reconnects": node.stats.reconnects,
            "devices": {m: node.device_online(m) for m in node.index.devices},
            "adapters_down": sorted(self._adapters_down), "last_errors": self.last_errors,
            "commands": {"enabled": self.commands.enabled, "counters": dict(self.commands.counters),
                         "targets": self.commands.describe_targets()},
        }  # fmt: skip
        try:
            self.node.link.publish(self._info_topic, encode_info(doc), 1, retain=True)
        except Exception as exc:  # noqa: BLE001 - info is best effort; data publishing must go on
            log.warning("edge agent %s/%s: agent info not published: %s", self.site, self.edge, exc)


def _load_adapter_types(config: AgentConfig) -> dict[str, type[Adapter]]:
    """Import only the adapter types the config names; AgentError naming a broken or missing plugin."""
    loaded, broken = load_adapters(a.type for a in config.adapters)
    for i, a in enumerate(config.adapters):
        if a.type in broken:
            raise AgentError(f"adapters[{i}].type: {broken[a.type]}")
        if a.type not in loaded:
            known = ", ".join(sorted(installed_adapters())) or "none"
            raise AgentError(f"adapters[{i}].type: no adapter {a.type!r} is installed (known: {known})")
    return loaded


@dataclass(frozen=True)
class _Change:
    """A validated config push on its way in."""

    push_id: str
    config: AgentConfig
    text: str
    version: int
    rollback_s: float


def _adapters_only(old: AgentConfig, new: AgentConfig) -> bool:
    """True when only adapter sections differ (same adapter names and types): those can reconnect in place."""
    def rest(c: AgentConfig) -> str:
        return c.model_dump_json(exclude={"adapters"})

    same = [(a.name, a.type) for a in old.adapters] == [(a.name, a.type) for a in new.adapters]
    return same and rest(old) == rest(new)


_VERSION_FILE = "config-cloud-version"


def _read_version(outbox_dir: Path) -> int | None:
    try:
        return int((outbox_dir / _VERSION_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _write_version(outbox_dir: Path, version: int) -> None:
    tmp = outbox_dir / f"{_VERSION_FILE}.tmp"
    tmp.write_text(str(version))
    os.replace(tmp, outbox_dir / _VERSION_FILE)


def _read_text(path: Path | None) -> str | None:
    return path.read_text(encoding="utf-8") if path is not None and path.exists() else None


def _persist(path: Path | None, text: str) -> None:
    """Replace the config file atomically (the previous one kept as FILE.prev), so a restart runs it."""
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    if path.exists():
        os.replace(path, path.with_name(path.name + ".prev"))
    os.replace(tmp, path)


async def run_agent(
    config: AgentConfig,
    stop: asyncio.Event | None = None,
    *,
    adapter_types: Mapping[str, type[Adapter]] | None = None,
    config_path: Path | None = None,
) -> None:
    """Run one edge agent until `stop` is set (or, without `stop`, SIGINT/SIGTERM); AgentError if it cannot run.

    `adapter_types` replaces the installed adapters (`zhizao.adapters` entry points), for embedding and tests;
    without it only the adapter types the config names are imported, and a broken one is named in AgentError.
    A signed config push (NCMD) ends the current run cleanly (NDEATH, outbox closed: nothing is lost; when the
    signal table changes, the outbox is first drained) and starts one on the new config, which must connect
    within its rollback time or the previous config comes back by itself. `config_path` is rewritten with an
    applied config (the previous one kept as FILE.prev), so a restart runs what the cloud pushed.
    """
    own_signals = stop is None  # a caller that passes `stop` (several agents in one process) owns the signals
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM) if own_signals else ():
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (embedded use): the caller owns `stop`
    current, previous, trial, carried = config, config, None, list[CommandResult]()
    previous_text: str | None = None
    try:
        while True:
            types = adapter_types if adapter_types is not None else _load_adapter_types(current)
            agent = _Agent(current, types)
            agent.trial, agent.pending, agent.config_path = trial, carried, config_path
            await _run_once(agent, stop)
            if stop.is_set():
                if agent.fatal:
                    raise AgentError("; ".join(agent.fatal))
                return
            if agent.trial is not None:  # the pushed config did not connect, or failed: the previous one again
                reason = agent.rollback_reason or "; ".join(agent.fatal) or "the agent stopped"
                carried = [CommandResult("rolled_back", agent.trial.push_id, message=reason, timestamp_ms=now_ms())]
                if trial is not None:  # a whole new run was tried (an in-place trial never changed `current`)
                    current = previous
                    if previous_text is not None and config_path is not None:
                        _persist(config_path, previous_text)
                trial = None
                continue
            if agent.fatal:
                raise AgentError("; ".join(agent.fatal))
            change = agent.change
            if change is None:
                carried = list(agent.pending)
                continue  # a push refused while the outbox drained: the same config runs again
            previous, trial, carried = current, change, []
            previous_text = _read_text(config_path)
            current = change.config
            _persist(config_path, change.text)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def _drain(agent: _Agent, timeout_s: float = 15.0) -> bool:
    """Stop the adapters and wait until the host acknowledged every sample in the outbox."""
    tasks = list(agent.tasks.values())
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    agent.tasks.clear()
    for name, adapter in agent.adapters.items():
        agent.release(name)
        await agent._close(name, adapter)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while agent.outbox.depth_samples > 0 and loop.time() < deadline:  # noqa: ASYNC110 - acks set no event
        await asyncio.sleep(0.05)
    return agent.outbox.depth_samples == 0


async def _run_once(agent: _Agent, stop: asyncio.Event) -> None:
    """One agent run: until `stop`, a config change or a rollback; always a clean shutdown."""
    config = agent.config
    if config.metrics_port:
        try:
            agent.health.serve(config.metrics_port, str(config.metrics_host))
        except OSError as exc:
            agent.outbox.close()
            raise AgentError(f"metrics_port: cannot serve /metrics on {config.metrics_host}:{config.metrics_port}:"
                             f" {exc}") from None  # fmt: skip
    log.info(
        "edge agent %s/%s: starting (%d machines, %d signals, outbox %s)",
        agent.site, agent.edge, len(config.machines), len(agent.mapping.signals), agent.outbox.dir,
    )  # fmt: skip
    await agent.node.start()
    for name in agent.adapters:
        agent.start_adapter(name)
    health = asyncio.create_task(agent.health_loop())
    watch = asyncio.create_task(agent.trial_watch()) if agent.trial is not None else None
    stopper = asyncio.create_task(stop.wait())
    waker = asyncio.create_task(agent.wake.wait())
    try:
        await asyncio.wait([stopper, waker], return_when=asyncio.FIRST_COMPLETED)
        change = agent.change
        # Outbox records index the current signal table: with a new one, the host gets them all first.
        if (change is not None and not stop.is_set()
                and build_mapping(change.config).signals.signals != agent.mapping.signals.signals
                and not await _drain(agent)):  # fmt: skip
            agent.commands.report(CommandResult(
                "refused", change.push_id, reason="outbox",
                message=f"the outbox still holds {agent.outbox.depth_samples} samples of the old signal table "
                "after 15 s (host offline?); try again once it is empty", timestamp_ms=now_ms()))  # fmt: skip
            agent.change = None
    finally:
        stopper.cancel()
        waker.cancel()
        await agent.commands.close()
        extra = [t for t in (watch, agent._swap) if t is not None]
        tasks = list(agent.tasks.values())
        for t in (*tasks, health, *extra):
            t.cancel()
        await asyncio.gather(*tasks, health, stopper, waker, *extra, return_exceptions=True)
        for name, adapter in agent.adapters.items():
            agent.release(name)  # nothing held back is lost at shutdown (and it goes before any DDEATH)
            await agent._close(name, adapter)
        if agent.node.state == "online":
            # The retained info goes with the agent (the cloud keeps its last copy): brokers hold no stale ones.
            with contextlib.suppress(Exception):
                agent.node.link.publish(agent._info_topic, b"", 1, retain=True)
        await agent.node.stop()
        agent.health.update()
        agent.outbox.close()
        agent.health.close()
        log.info("edge agent %s/%s: stopped", agent.site, agent.edge)
