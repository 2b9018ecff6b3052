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
import signal
from collections.abc import Mapping

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
from zhizao.edge.config import AgentConfig
from zhizao.edge.health import HealthExporter
from zhizao.edge.mapping import AgentMapping, build_mapping
from zhizao.edge.node.session import EdgeNode, NodeError
from zhizao.edge.outbox import Outbox, OutboxError, OutboxFullError
from zhizao.edge.samples import SampleBlock

log = logging.getLogger(__name__)

# A PLC that reboots is back within seconds: the retry delay stays short (jittered, so a plant's agents do not
# reconnect to a shared server in lockstep).
BACKOFF_MIN_S = 0.5
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
                on_command=self._command,
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
            self.adapters[name] = cls(plan.config, plan.sources, self._sink(name), self.node.device_state)
        self._sink_errors: set[str] = set()
        self.fatal: list[str] = []
        self._adapters_down: set[str] = set()  # adapters whose machines are marked offline

    def _sink(self, adapter: str) -> SampleSink:
        transform, append = self.mapping.transform, self.outbox.append

        def sink(block: SampleBlock) -> None:
            try:
                out = transform(adapter, block)
                if len(out):
                    append(out)
            except OutboxFullError:
                pass  # counted by the outbox (rejected_samples) and logged there once per episode
            except (OutboxError, ValueError, IndexError) as exc:
                # A bad block or a disk error must not take the adapter's session down; say so once per kind.
                key = f"{adapter}:{type(exc).__name__}"
                if key not in self._sink_errors:
                    self._sink_errors.add(key)
                    log.error(
                        "edge agent %s/%s: samples from %s dropped: %s", self.site, self.edge, adapter, exc
                    )

        return sink

    async def _command(self, signal_index: int, value: float | int | bool | str) -> None:
        target = self.mapping.write_target(signal_index)
        sig = self.mapping.signals.signals[signal_index]
        if target is None:
            log.warning(
                "edge agent %s/%s: DCMD %s/%s is not writable", self.site, self.edge, sig.machine, sig.metric
            )
            return
        adapter, source = target
        try:
            await self.adapters[adapter].write(source, value)
            log.info(
                "edge agent %s/%s: wrote %s/%s = %r", self.site, self.edge, sig.machine, sig.metric, value
            )
        except AdapterError as exc:
            log.warning(
                "edge agent %s/%s: write %s/%s failed: %s", self.site, self.edge, sig.machine, sig.metric, exc
            )

    def _machines_state(self, adapter: str, online: bool) -> None:
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
        """Refresh the prometheus metrics every second."""
        while True:
            self.health.update()
            await asyncio.sleep(HEALTH_UPDATE_S)


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


async def run_agent(
    config: AgentConfig,
    stop: asyncio.Event | None = None,
    *,
    adapter_types: Mapping[str, type[Adapter]] | None = None,
) -> None:
    """Run one edge agent until `stop` is set (or, without `stop`, SIGINT/SIGTERM); AgentError if it cannot run.

    `adapter_types` replaces the installed adapters (`zhizao.adapters` entry points), for embedding and tests;
    without it only the adapter types the config names are imported, and a broken one is named in AgentError.
    """
    own_signals = stop is None  # a caller that passes `stop` (several agents in one process) owns the signals
    stop = stop or asyncio.Event()
    agent = _Agent(config, adapter_types if adapter_types is not None else _load_adapter_types(config))
    if config.metrics_port:
        try:
            agent.health.serve(config.metrics_port, str(config.metrics_host))
        except OSError as exc:
            agent.outbox.close()
            raise AgentError(f"metrics_port: cannot serve /metrics on {config.metrics_host}:{config.metrics_port}:"
                             f" {exc}") from None  # fmt: skip
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM) if own_signals else ():
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (embedded use): the caller owns `stop`
    log.info(
        "edge agent %s/%s: starting (%d machines, %d signals, outbox %s)",
        agent.site, agent.edge, len(config.machines), len(agent.mapping.signals), agent.outbox.dir,
    )  # fmt: skip
    await agent.node.start()
    tasks = [
        asyncio.create_task(agent.supervise(n, a, stop), name=f"adapter {n}")
        for n, a in agent.adapters.items()
    ]
    health = asyncio.create_task(agent.health_loop())
    try:
        await stop.wait()
    finally:
        for t in (*tasks, health):
            t.cancel()
        await asyncio.gather(*tasks, health, return_exceptions=True)
        for name, adapter in agent.adapters.items():
            await agent._close(name, adapter)
        await agent.node.stop()
        agent.health.update()
        agent.outbox.close()
        agent.health.close()
        for sig in handled:
            loop.remove_signal_handler(sig)
        log.info("edge agent %s/%s: stopped", agent.site, agent.edge)
    if agent.fatal:
        raise AgentError("; ".join(agent.fatal))
