"""A small real asyncua server with the agreed simulator address space, for the adapter tests.

Namespace `urn:zhizao:sim` (index 2), variables `ns=2;s={site}/{line}/{machine}/{tag}` under objects
`Objects/{site}/{line}/{machine}` that carry methods Start, Stop, Reset (as in briefs/edge-config.md).
Access as the simulator's (edge/sim/security.py): anonymous clients read and subscribe, writes and method
calls need the user (`USER`, or `users=`) unless `allow_anonymous_writes`; with `security` only the user.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from asyncua import Server, ua

from zhizao.edge.adapters.opcua import OpcUaAdapter, OpcUaConfig
from zhizao.edge.samples import SampleBlock, Signal, SignalTable
from zhizao.edge.sim.security import SimUsers, WriteRules

NS_URI = "urn:zhizao:sim"
PACKML_TAGS: dict[str, tuple[Any, ua.VariantType]] = {
    "State": (2, ua.VariantType.Int32),
    "StopReason": (0, ua.VariantType.Int32),
    "ProdProcessedCount": (0, ua.VariantType.Int32),
    "ProdDefectiveCount": (0, ua.VariantType.Int32),
    "MachSpeed": (60.0, ua.VariantType.Double),
    "CurMachSpeed": (0.0, ua.VariantType.Double),
}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


USER = ("edge", "edge-pass")  # the user that may write and call on a test server by default
AS_USER: dict[str, Any] = {"mode": "None", "username": USER[0], "password": USER[1]}  # an adapter's `security`


@dataclass
class SimServer:
    """The running server and its variables by node id string."""

    server: Server
    url: str
    port: int
    nodes: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def write(self, node_id: str, value: Any, ts_ms: int | None = None, status: int = 0) -> None:
        """Change a value the way a device does: a new DataValue with its source timestamp."""
        vtype = ua.VariantType.String if isinstance(value, str) else self.nodes[node_id][1]
        ts = datetime.now(UTC) if ts_ms is None else datetime.fromtimestamp(ts_ms / 1000, UTC)
        dv = ua.DataValue(ua.Variant(value, vtype), StatusCode=ua.StatusCode(status), SourceTimestamp=ts,
                          ServerTimestamp=ts)
        await self.server.write_attribute_value(ua.NodeId.from_string(node_id), dv)

    async def read(self, node_id: str) -> Any:
        """The current value of a node."""
        return await self.nodes[node_id][0].read_value()

    async def stop(self) -> None:
        """Stop serving."""
        await self.server.stop()


async def start_server(
    machines: list[str],
    *,
    port: int | None = None,
    process_tags: tuple[str, ...] = ("Temperature/Spindle",),
    extra: int = 0,
    security: tuple[Path, Path] | None = None,
    users: tuple[str, str] = USER,
    allow_anonymous_writes: bool = False,
    shelf: Path | None = None,
    nested: bool = False,
    extend: Callable[[Server, int, SimServer], Awaitable[None]] | None = None,
) -> SimServer:
    """Serve `machines` ('site/line/machine' paths) with PackML tags; `extra` adds Double nodes extra/{k};
    `nested` adds a folder object Axis with a variable Position (Double) below each machine; `extend(server,
    namespace index, sim)` adds more nodes before the server starts."""
    port = port or free_port()
    server = Server(user_manager=SimUsers(dict([users])))
    await server.init(shelf_file=shelf)
    url = f"opc.tcp://127.0.0.1:{port}/zhizao/sim"
    server.set_endpoint(url)
    server.set_server_name("zhizao test sim")
    rules = WriteRules(allow_anonymous_writes)
    if security is not None:
        await server.load_certificate(str(security[0]))
        await server.load_private_key(str(security[1]))
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt], permission_ruleset=rules)
        server.set_identity_tokens([ua.UserNameIdentityToken])
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity], permission_ruleset=rules)
        server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken])
    idx = await server.register_namespace(NS_URI)
    assert idx == 2, idx
    sim = SimServer(server, url, port)
    folders: dict[str, Any] = {}
    for path in machines:
        parent = server.nodes.objects
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            key = "/".join(parts[:depth])
            if key not in folders:
                folders[key] = await parent.add_object(ua.NodeId(key, idx), ua.QualifiedName(parts[depth - 1], idx))
            parent = folders[key]
        machine = parent
        tags = dict(PACKML_TAGS)
        tags.update({t: (20.0, ua.VariantType.Double) for t in process_tags})
        for tag, (initial, vtype) in tags.items():
            nid = f"{path}/{tag}"
            var = await machine.add_variable(ua.NodeId(nid, idx), ua.QualifiedName(tag, idx),
                                             ua.Variant(initial, vtype))
            if tag == "MachSpeed":
                await var.set_writable()
            sim.nodes[f"ns=2;s={nid}"] = (var, vtype)

        def make(name: str, state_node: str) -> Any:
            async def method(parent_id: ua.NodeId) -> list[ua.Variant]:
                sim.calls.append((state_node.rsplit("/", 1)[0], name))
                await sim.write(state_node, {"Start": 6, "Stop": 2, "Reset": 4}[name])
                return []
            return method

        if nested:
            axis = await machine.add_object(ua.NodeId(f"{path}/Axis", idx), ua.QualifiedName("Axis", idx))
            var = await axis.add_variable(ua.NodeId(f"{path}/Axis/Position", idx), ua.QualifiedName("Position", idx),
                                          ua.Variant(0.0, ua.VariantType.Double))
            sim.nodes[f"ns=2;s={path}/Axis/Position"] = (var, ua.VariantType.Double)
        for name in ("Start", "Stop", "Reset"):
            await machine.add_method(ua.NodeId(f"{path}/{name}", idx), ua.QualifiedName(name, idx),
                                     make(name, f"ns=2;s={path}/State"), [], [])
    if extra:
        folder = await server.nodes.objects.add_object(ua.NodeId("extra", idx), ua.QualifiedName("extra", idx))
        items = []
        for k in range(extra):
            item = ua.AddNodesItem()
            item.RequestedNewNodeId = ua.NodeId(f"extra/{k}", idx)
            item.BrowseName = ua.QualifiedName(f"x{k}", idx)
            item.NodeClass = ua.NodeClass.Variable
            item.ParentNodeId = folder.nodeid
            item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HasComponent)
            item.TypeDefinition = ua.NodeId(ua.ObjectIds.BaseDataVariableType)
            attrs = ua.VariableAttributes()
            attrs.DisplayName = ua.LocalizedText(f"x{k}")
            attrs.Value = ua.Variant(0.0, ua.VariantType.Double)
            attrs.DataType = ua.NodeId(ua.ObjectIds.Double)
            attrs.AccessLevel = attrs.UserAccessLevel = 3
            item.NodeAttributes = attrs
            items.append(item)
        results = await server.iserver.isession.add_nodes(items)
        for k, r in enumerate(results):
            r.StatusCode.check()
            sim.nodes[f"ns=2;s=extra/{k}"] = (server.get_node(r.AddedNodeId), ua.VariantType.Double)
    if extend is not None:
        await extend(server, idx, sim)
    await server.start()
    return sim


T = TypeVar("T")
MACHINES = ["sh-lingang/cnc-1/cnc-1-m01", "sh-lingang/cnc-1/cnc-1-m02"]
M1 = "ns=2;s=sh-lingang/cnc-1/cnc-1-m01/"
M2 = "ns=2;s=sh-lingang/cnc-1/cnc-1-m02/"


class ServerThread:
    """An asyncua server on a private event loop in a daemon thread."""

    def __init__(self, machines: list[str] | None = None, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.machines = machines or MACHINES
        self.kwargs = kwargs
        self.sim: SimServer = self.run_sync(start_server(self.machines, **kwargs))

    def run_sync(self, coro: Awaitable[T], timeout: float = 60) -> T:
        """Run a coroutine on the server loop from plain code."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(*args)` on the server loop from a test's event loop, without blocking it."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(fn(*args), self.loop)  # type: ignore[arg-type]
        return await asyncio.wrap_future(fut)

    async def write(self, node_id: str, value: Any, ts_ms: int | None = None, status: int = 0) -> None:
        """Change a node's value as a device would."""
        await self.run(self.sim.write, node_id, value, ts_ms, status)

    async def read(self, node_id: str) -> Any:
        """The node's current value."""
        return await self.run(self.sim.read, node_id)

    @property
    def url(self) -> str:
        """The endpoint URL."""
        return self.sim.url

    def stop(self) -> None:
        """Stop the server (the thread's loop keeps running so `restart` can reuse it)."""
        self.run_sync(self.sim.stop())

    def restart(self) -> None:
        """A fresh server on the same port (a device that rebooted)."""
        self.sim = self.run_sync(start_server(self.machines, **{**self.kwargs, "port": self.sim.port}))

    def close(self) -> None:
        """Stop the server and the thread."""
        try:
            self.stop()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def source_table(node_ids: list[str]) -> SignalTable:
    """An adapter source table: Signal.metric is the node id; Int32 for PackML tags, Double otherwise."""
    table = SignalTable()
    int_tags = ("State", "StopReason", "ProdProcessedCount", "ProdDefectiveCount")
    for nid in node_ids:
        machine = nid.split("/")[2] if nid.count("/") >= 3 else "extra"
        table.add(Signal(machine, nid, 3 if nid.endswith(int_tags) else 10))
    return table


def adapter_config(url: str, **over: Any) -> OpcUaConfig:
    """An adapter section with fast intervals for tests."""
    data: dict[str, Any] = {
        "type": "opcua", "name": "sim", "endpoint": url, "security": {"mode": "None"},
        "subscription": {"publishing_interval_ms": 50, "sampling_interval_ms": 10, "queue_size": 1000},
        "polling": {"interval_ms": 50}, "timeout_s": 3, "watchdog_s": 0.5,
    }
    data.update(over)
    return OpcUaConfig.model_validate(data)


class Collector:
    """A sink that keeps every block, and device-state reports."""

    def __init__(self) -> None:
        self.blocks: list[SampleBlock] = []
        self.device_states: list[tuple[str, bool]] = []

    def __call__(self, block: SampleBlock) -> None:
        self.blocks.append(block)

    def on_device_state(self, machine: str, online: bool) -> None:
        self.device_states.append((machine, online))

    def all(self) -> SampleBlock:
        return SampleBlock.concat(self.blocks)

    def values(self, signal: int) -> list[float]:
        b = self.all()
        return b.value[b.signal == signal].tolist()

    async def wait_for(self, pred: Callable[[], bool], within_s: float = 10.0) -> None:
        """Poll `pred` until it holds; fail after `within_s` seconds."""
        deadline = asyncio.get_running_loop().time() + within_s
        while not pred():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; have {len(self.all())} samples in {len(self.blocks)} blocks")
            await asyncio.sleep(0.02)


def make_adapter(url: str, node_ids: list[str], **over: Any) -> tuple[OpcUaAdapter, Collector]:
    """An adapter over `node_ids` with a collecting sink."""
    sink = Collector()
    return OpcUaAdapter(adapter_config(url, **over), source_table(node_ids), sink, sink.on_device_state), sink
