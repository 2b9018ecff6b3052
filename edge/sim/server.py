"""The OPC UA factory simulator: an asyncua server that serves a scenario's address space and steps the model.

Address space (the contract with the edge adapters): namespace `urn:zhizao:sim` at index 2; objects
`Objects/{site}/{line}/{machine}` with methods Start, Stop, Reset; variables with string node ids
`ns=2;s={site}/{line}/{machine}/{tag}`. Endpoint: `opc.tcp://{host}:{port}/zhizao/sim`. Writes (MachSpeed)
and method calls need a configured user unless `allow_anonymous_writes` (see security.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from asyncua import ua as _ua
from asyncua.server.server import Server

from zhizao.edge.sim.model import MAX_SPEED_FACTOR, FactoryModel, OrderRefused
from zhizao.edge.sim.nodes import ENDPOINT_PATH, METHODS, NAMESPACE_URI, T_SETPOINT
from zhizao.edge.sim.record import Recorder
from zhizao.edge.sim.security import configure_security
from zhizao.seeds.model import Scenario
from zhizao.seeds.timeline import Timeline

log = logging.getLogger(__name__)
# asyncua's generated stubs declare NodeId(Int32) etc., which plain ints and strs fail under --strict.
ua: Any = _ua

_INT32 = ua.NodeId(ua.ObjectIds.Int32)
_DOUBLE = ua.NodeId(ua.ObjectIds.Double)
_STRING = ua.NodeId(ua.ObjectIds.String)
_HAS_COMPONENT = ua.NodeId(ua.ObjectIds.HasComponent)
_ORGANIZES = ua.NodeId(ua.ObjectIds.Organizes)
_STEPS_PER_YIELD = 1  # steps between yields to the event loop: subscribers starve if the sim hogs it
# RunOrder(product, quantity, rate_per_min, changeover_min) under every machine: a production order (issue 14).
RUN_ORDER = "RunOrder"
RUN_ORDER_ARGS = (("product", "String", "the product id (logged)"),
                  ("quantity", "Double", "good units (machine counts) to make"),
                  ("rate_per_min", "Double", "the product's ideal rate on this machine, counts per minute"),
                  ("changeover_min", "Double", "minutes of changeover before the order runs (0: none)"))


class SimError(RuntimeError):
    """The simulator could not start (port taken, bad security setup, address space rejected)."""


def default_start_ms(
    speed: float, dt_ms: int, *, catch_up_s: float = 600.0, now_ms: int | None = None
) -> int:
    """Start instant: now at speed 1; with speed X > 1, far enough back to catch up with the wall clock after `catch_up_s`."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    back = (speed - 1.0) * catch_up_s * 1000 if speed > 1 else 0.0
    start = now - int(back)
    return start - start % dt_ms  # aligned to the step, so runs with the same options share timestamps


@dataclass
class SimStats:
    """Counters the loop keeps: steps stepped, values written, and wall seconds spent writing them."""

    steps: int = 0
    values: int = 0
    write_s: float = 0.0
    caught_up: bool = False


class SimServer:
    """One asyncua server for a scenario; `start()`, then `run(stop)`, then `stop()` (or use `serve`)."""

    def __init__(
        self,
        scenario: Scenario,
        port: int,
        *,
        speed: float = 1.0,
        seed: int = 0,
        host: str = "127.0.0.1",
        record: Path | str | None = None,
        timeline: Timeline | list[Timeline] | None = None,
        start_ms: int | None = None,
        dt_ms: int = 1000,
        security: bool = False,
        data_dir: Path | str = ".zhizao/sim",
        wait_for_client: bool = False,
        users: Mapping[str, str] | None = None,
        allow_anonymous_writes: bool = False,
    ) -> None:
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed: {speed!r} must be a positive number")
        self.speed = speed
        # The sim clock maps wall time t to start_ms + speed * (t - created_ms), capped at t.
        self.created_ms = time.time() * 1000
        self.start_ms = (
            default_start_ms(speed, dt_ms, now_ms=int(self.created_ms)) if start_ms is None else start_ms
        )
        if self.start_ms > time.time() * 1000:
            raise ValueError(f"start_ms: {self.start_ms} lies in the future; source timestamps never may")
        self.model = FactoryModel(scenario, seed=seed, start_ms=self.start_ms, dt_ms=dt_ms, timeline=timeline)
        self.endpoint = f"opc.tcp://{host}:{port}{ENDPOINT_PATH}"
        self._host, self._port = host, port
        self.stats = SimStats()
        self._record_path = record
        self._recorder: Recorder | None = None
        self._wait_for_client = wait_for_client
        self._security = security
        self._users = dict(users or {})
        self._allow_anonymous_writes = allow_anonymous_writes
        self._data_dir = Path(data_dir)
        self._server = Server()
        self._ua_ids = [ua.NodeId.from_string(n) for n in self.model.table.node_ids]
        self._vtypes = [ua.VariantType.Int32 if i else ua.VariantType.Double for i in self.model.table.is_int]
        self._setpoint_last_ts: dict[int, int] = {}
        self._machine_of_object: dict[Any, int] = {}

    # ------------------------------------------------------------------ address space
    async def start(self) -> None:
        """Build the address space, open the endpoint and publish every node's initial value."""
        srv = self._server
        self._check_port()  # fail fast: asyncua's init costs a second or two before it would bind
        await srv.init()
        srv.set_endpoint(self.endpoint)
        srv.set_server_name("zhizao OPC UA factory simulator")
        await configure_security(srv, self._security, self._data_dir, users=self._users,
                                 allow_anonymous_writes=self._allow_anonymous_writes)  # fmt: skip
        idx = await srv.register_namespace(NAMESPACE_URI)
        if idx != 2:
            raise SimError(f"namespace {NAMESPACE_URI} got index {idx}, the contract needs 2")
        results = await srv.iserver.isession.add_nodes(self._node_items())
        bad = [r.StatusCode for r in results if not r.StatusCode.is_good()]
        if bad:
            raise SimError(f"{len(bad)} nodes were rejected by the address space, first: {bad[0]}")
        for name in METHODS:
            handler = self._method_handler(name)
            for path in self.model.table.machine_paths:
                srv.link_method(srv.get_node(ua.NodeId(f"{path}/{name}", 2)), handler)
        for m_i, path in enumerate(self.model.table.machine_paths):
            await srv.get_node(ua.NodeId(path, 2)).add_method(
                ua.NodeId(f"{path}/{RUN_ORDER}", 2), ua.QualifiedName(RUN_ORDER, 2), self._run_order_handler(m_i),
                [ua.Argument(Name=n, DataType=_STRING if k == "String" else _DOUBLE, ValueRank=-1,
                             Description=ua.LocalizedText(d)) for n, k, d in RUN_ORDER_ARGS], [])  # fmt: skip
        t = self.model.table
        if self._record_path is not None:
            self._recorder = Recorder(self._record_path, t.node_ids)
        changes = self.model.initial()
        await self._write(changes.ts_ms, changes.index, changes.value)
        # From here on MachSpeed belongs to clients: their writes go through the setter, the model never writes it.
        self._setpoint_last_ts.update({int(i): changes.ts_ms for i in t.packml[:, T_SETPOINT]})
        for m_i in range(len(t.machine_paths)):
            srv.set_attribute_value_setter(
                self._ua_ids[int(t.packml[m_i, T_SETPOINT])], self._setpoint_setter(m_i)
            )
        try:
            await srv.start()
        except OSError as exc:
            if self._recorder is not None:
                self._recorder.close()
            raise SimError(f"cannot listen on {self.endpoint}: {exc.strerror or exc}") from exc
        log.info("simulator serving %d machines, %d variables at %s (start %s, speed %g)", len(t.machine_paths),
                 t.size, self.endpoint, datetime.fromtimestamp(self.start_ms / 1000, UTC).isoformat(), self.speed)  # fmt: skip

    def _check_port(self) -> None:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server will
            try:
                probe.bind((self._host, self._port))
            except OSError as exc:
                raise SimError(f"cannot listen on {self.endpoint}: {exc.strerror or exc}") from exc

    def _node_items(self) -> list[Any]:
        t = self.model.table
        items: list[Any] = []
        made: set[str] = set()

        def obj(path: str, parent: Any, folder: bool) -> Any:
            nid = ua.NodeId(path, 2)
            if path not in made:
                made.add(path)
                attrs = ua.ObjectAttributes(
                    DisplayName=ua.LocalizedText(path.rsplit("/", 1)[-1]), EventNotifier=0
                )
                items.append(ua.AddNodesItem(
                    ParentNodeId=parent, ReferenceTypeId=_ORGANIZES if folder else _HAS_COMPONENT,
                    RequestedNewNodeId=nid, BrowseName=ua.QualifiedName(path.rsplit("/", 1)[-1], 2),
                    NodeClass=ua.NodeClass.Object, NodeAttributes=attrs,
                    TypeDefinition=ua.NodeId(ua.ObjectIds.FolderType if folder else ua.ObjectIds.BaseObjectType)))  # fmt: skip
            return nid

        objects = ua.NodeId(ua.ObjectIds.ObjectsFolder)
        machine_nodes = []
        for path in t.machine_paths:
            site, line, _ = path.split("/")
            site_id = obj(site, objects, True)
            line_id = obj(f"{site}/{line}", site_id, True)
            machine_nodes.append(obj(path, line_id, False))
            self._machine_of_object[machine_nodes[-1]] = len(machine_nodes) - 1
        for n_i, (nid, tag) in enumerate(zip(self._ua_ids, t.tags, strict=True)):
            writable = tag == "MachSpeed"
            access = ua.AccessLevel.CurrentRead.mask | (ua.AccessLevel.CurrentWrite.mask if writable else 0)
            is_int = bool(t.is_int[n_i])
            attrs = ua.VariableAttributes(
                DisplayName=ua.LocalizedText(tag), DataType=_INT32 if is_int else _DOUBLE, ValueRank=-1,
                Value=ua.Variant(0 if is_int else 0.0, self._vtypes[n_i]), AccessLevel=access,
                UserAccessLevel=access)  # fmt: skip
            items.append(ua.AddNodesItem(
                ParentNodeId=machine_nodes[int(t.node_machine[n_i])], ReferenceTypeId=_HAS_COMPONENT,
                RequestedNewNodeId=nid, BrowseName=ua.QualifiedName(tag, 2), NodeClass=ua.NodeClass.Variable,
                NodeAttributes=attrs, TypeDefinition=ua.NodeId(ua.ObjectIds.BaseDataVariableType)))  # fmt: skip
        for m_i, path in enumerate(t.machine_paths):
            for name in METHODS:
                attrs = ua.MethodAttributes(
                    DisplayName=ua.LocalizedText(name), Executable=True, UserExecutable=True
                )
                items.append(ua.AddNodesItem(
                    ParentNodeId=machine_nodes[m_i], ReferenceTypeId=_HAS_COMPONENT,
                    RequestedNewNodeId=ua.NodeId(f"{path}/{name}", 2), BrowseName=ua.QualifiedName(name, 2),
                    NodeClass=ua.NodeClass.Method, NodeAttributes=attrs))  # fmt: skip
        return items

    def _method_handler(self, name: str) -> Any:
        async def handler(parent: Any, *args: Any) -> Any:
            machine = self._machine_of_object.get(parent)
            if machine is None:
                return ua.StatusCode(ua.StatusCodes.BadNodeIdInvalid)
            self.model.command(machine, name)
            return []

        return handler

    def _run_order_handler(self, machine: int) -> Any:
        async def handler(parent: Any, *args: Any) -> Any:
            values = [getattr(a, "Value", a) for a in args]
            if len(values) != len(RUN_ORDER_ARGS):
                return ua.StatusCode(ua.StatusCodes.BadArgumentsMissing if len(values) < len(RUN_ORDER_ARGS)
                                     else ua.StatusCodes.BadTooManyArguments)  # fmt: skip
            product, numbers = values[0], values[1:]
            if not isinstance(product, str) or not product or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
                log.warning("RunOrder of %s: arguments %r are not (product, quantity, rate_per_min, changeover_min)",
                            self.model.table.machine_paths[machine], values)  # fmt: skip
                return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
            quantity, rate, changeover = (float(v) for v in numbers)
            try:
                self.model.run_order(machine, rate, changeover, quantity, product=product)
            except OrderRefused as exc:
                log.warning("RunOrder refused: %s", exc)
                return ua.StatusCode(ua.StatusCodes.BadInvalidState)
            except ValueError as exc:
                log.warning("RunOrder of %s refused: %s", self.model.table.machine_paths[machine], exc)
                return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
            return []

        return handler

    def _setpoint_setter(self, machine: int) -> Any:
        node_index = int(self.model.table.packml[machine, T_SETPOINT])

        def setter(node: Any, attr: Any, value: Any) -> None:
            raw = value.Value.Value if value.Value is not None else None
            path = self.model.table.machine_paths[machine]
            limit = float(self.model.ideal[machine] * MAX_SPEED_FACTOR)
            if not isinstance(raw, int | float) or not 0.0 <= float(raw) <= limit:
                # Refused before anything is stored or notified: the client gets BadOutOfRange.
                log.warning("MachSpeed of %s: %r refused, outside [0, %g]", path, raw, limit)
                raise ua.uaerrors.BadOutOfRange()
            effective = self.model.set_speed(machine, float(raw))
            # Stored (and read back) with sim time, strictly increasing per node. Subscribers are notified
            # by asyncua with the DataValue the client wrote (its own timestamps, often none).
            ts = max(self.model.ts_ms, self._setpoint_last_ts.get(node_index, -1) + 1)
            self._setpoint_last_ts[node_index] = ts
            node.attributes[attr].value = ua.DataValue(
                ua.Variant(effective, ua.VariantType.Double), SourceTimestamp=_dt(ts), ServerTimestamp=_now()
            )
            if self._recorder is not None:
                self._recorder.append(np.array([node_index]), ts, np.array([effective]))

        return setter

    # ------------------------------------------------------------------ stepping
    async def _write(self, ts_ms: int, index: Any, value: Any) -> None:
        t0 = time.perf_counter()
        source, server = _dt(ts_ms), _now()
        ids, vtypes, write = self._ua_ids, self._vtypes, self._server.write_attribute_value
        for i, v in zip(index.tolist(), value.tolist(), strict=True):
            vt = vtypes[i]
            variant = ua.Variant(int(v) if vt is ua.VariantType.Int32 else v, vt)
            await write(ids[i], ua.DataValue(variant, SourceTimestamp=source, ServerTimestamp=server))
        if self._recorder is not None:
            self._recorder.append(index, ts_ms, value)
        self.stats.values += len(index)
        self.stats.write_s += time.perf_counter() - t0

    def _monitored_items(self) -> int:
        subs = self._server.iserver.subscription_service.subscriptions.values()
        return sum(len(sub.monitored_item_srv._monitored_items) for sub in subs)

    async def _client_subscribed(self, stop: asyncio.Event) -> None:
        """Until a client monitors nodes and has stopped adding any for 0.5 s (all its chunks are in)."""
        seen, since = 0, time.monotonic()
        while not stop.is_set():
            n = self._monitored_items()
            if n != seen:
                seen, since = n, time.monotonic()
            elif n and time.monotonic() - since >= 0.5:
                log.info("simulator: a client monitors %d nodes; the sim clock starts", n)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)

    async def run(self, stop: asyncio.Event) -> None:
        """Step the model until `stop` is set: at `speed` x wall clock, never past the wall clock. With
        `wait_for_client` the clock stays at the start until a client subscribed (scripts that must not begin
        before their reader has their first values)."""
        model = self.model
        if self._wait_for_client:
            await self._client_subscribed(stop)
            self.created_ms = time.time() * 1000
        while not stop.is_set():
            now = time.time() * 1000
            paced = self.start_ms + self.speed * (now - self.created_ms)
            target = min(paced, now)
            due = int((target - model.ts_ms) // model.dt_ms)
            if due <= 0:
                if not self.stats.caught_up and (paced >= now or self.speed <= 1):
                    self.stats.caught_up = True
                    log.info(
                        "simulator runs in step with the wall clock (sim time %s)",
                        _dt(model.ts_ms).isoformat(),
                    )
                # Wall time until the next step falls due, at the pace in force (sim speed or real time).
                wait_ms = (model.ts_ms + model.dt_ms - target) / (1.0 if target >= now else self.speed)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=min(max(wait_ms / 1000, 0.001), 1.0))
                continue
            for _ in range(min(due, _STEPS_PER_YIELD)):
                changes = model.step()
                await self._write(changes.ts_ms, changes.index, changes.value)
                self.stats.steps += 1
            await asyncio.sleep(0)

    async def stop(self) -> None:
        """Close the endpoint and the record file."""
        try:
            await self._server.stop()
        finally:
            if self._recorder is not None:
                self._recorder.close()


def _dt(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, UTC)


def _now() -> datetime:
    return datetime.now(UTC)


async def serve(
    scenario: Scenario,
    port: int,
    *,
    speed: float = 1.0,
    seed: int = 0,
    host: str = "127.0.0.1",
    record: Path | str | None = None,
    timeline: Timeline | list[Timeline] | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    start_ms: int | None = None,
    dt_ms: int = 1000,
    security: bool = False,
    data_dir: Path | str = ".zhizao/sim",
    wait_for_client: bool = False,
    users: Mapping[str, str] | None = None,
    allow_anonymous_writes: bool = False,
) -> SimStats:
    """Serve a scenario at `opc.tcp://{host}:{port}/zhizao/sim` until `stop` is set; sets `ready` once listening."""
    sim = SimServer(scenario, port, speed=speed, seed=seed, host=host, record=record, timeline=timeline,
                    start_ms=start_ms, dt_ms=dt_ms, security=security, data_dir=data_dir, users=users,
                    allow_anonymous_writes=allow_anonymous_writes, wait_for_client=wait_for_client)  # fmt: skip
    stop = stop or asyncio.Event()
    await sim.start()
    try:
        if ready is not None:
            ready.set()
        await sim.run(stop)
    finally:
        await sim.stop()
    return sim.stats
