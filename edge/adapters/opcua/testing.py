"""The OPC UA conformance harness: a real asyncua server on a free local port, for `check_adapter`.

    from zhizao.edge.adapters.opcua import OpcUaAdapter
    from zhizao.edge.adapters.opcua.testing import OpcUaHarness
    from zhizao.edge.adapters.testing import check_adapter

    check_adapter(OpcUaAdapter, OpcUaHarness())
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from asyncua import ua as _ua
from asyncua.server.server import Server

from zhizao.edge.adapters.opcua.config import OpcUaConfig
from zhizao.edge.samples import Signal, SignalTable

__all__ = ["OpcUaHarness"]

ua: Any = _ua  # asyncua's generated stubs reject plain ints and strs under --strict
NAMESPACE_URI = "urn:zhizao:conformance"
# (tag, initial value, OPC UA type, Sparkplug datatype of the source)
_TAGS: tuple[tuple[str, float, Any, int], ...] = (
    ("State", 6, ua.VariantType.Int32, 3),
    ("Temperature", 20.0, ua.VariantType.Double, 10),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OpcUaHarness:
    """Two machines (`conf-m01`, `conf-m02`), each with an Int32 `State` and a Double `Temperature` variable.

    The server runs on its own event loop in a daemon thread, so the adapter under test talks to it over
    TCP exactly as to a device; `poke()` writes a new Temperature of the first machine with a fresh source
    timestamp.
    """

    machines = ("conf-m01", "conf-m02")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._port = 0
        self._dead_port = 0
        self._ns = 2

    def node_id(self, machine: str, tag: str) -> str:
        """The string node id of `tag` of `machine`."""
        return f"ns={self._ns};s={machine}/{tag}"

    def start(self) -> None:
        """Start the server; returns once it accepts connections."""
        self._port, self._dead_port = _free_port(), _free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="opcua-harness", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(60)

    async def _serve(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{self._port}/zhizao/conformance")
        server.set_server_name("zhizao conformance harness")
        self._ns = await server.register_namespace(NAMESPACE_URI)
        for machine in self.machines:
            obj = await server.nodes.objects.add_object(ua.NodeId(machine, self._ns),
                                                        ua.QualifiedName(machine, self._ns))
            for tag, initial, vtype, _ in _TAGS:
                await obj.add_variable(ua.NodeId(f"{machine}/{tag}", self._ns), ua.QualifiedName(tag, self._ns),
                                       ua.Variant(initial, vtype))
        await server.start()
        self._server = server

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._loop is None:
            return
        try:
            if self._server is not None:
                asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self._loop.close()
            self._loop = self._thread = self._server = None

    def _config(self, endpoint: str) -> OpcUaConfig:
        return OpcUaConfig.model_validate({
            "type": "opcua", "name": "conformance", "endpoint": endpoint, "security": {"mode": "None"},
            "subscription": {"publishing_interval_ms": 50, "sampling_interval_ms": 10, "queue_size": 1000},
            "polling": {"interval_ms": 50}, "timeout_s": 3, "watchdog_s": 0.5,
        })  # fmt: skip

    @property
    def config(self) -> OpcUaConfig:
        """Reaches the running server, with fast intervals."""
        return self._config(f"opc.tcp://127.0.0.1:{self._port}/zhizao/conformance")

    @property
    def unreachable(self) -> OpcUaConfig:
        """A port nobody listens on."""
        return self._config(f"opc.tcp://127.0.0.1:{self._dead_port}/zhizao/none")

    @property
    def sources(self) -> SignalTable:
        """Every variable of both machines."""
        table = SignalTable()
        for machine in self.machines:
            for tag, _, _, datatype in _TAGS:
                table.add(Signal(machine, self.node_id(machine, tag), datatype))
        return table

    async def poke(self) -> None:
        """Write a new Temperature to the first machine, as the device would (new value, new source timestamp)."""
        if self._loop is None or self._server is None:
            raise RuntimeError("OpcUaHarness.poke: the harness is not started")
        now = datetime.now(UTC)
        dv = ua.DataValue(ua.Variant(50.0 + time.time() % 1, ua.VariantType.Double), SourceTimestamp=now,
                          ServerTimestamp=now)
        node = ua.NodeId.from_string(self.node_id(self.machines[0], "Temperature"))
        fut: Future[None] = asyncio.run_coroutine_threadsafe(self._server.write_attribute_value(node, dv), self._loop)
        await asyncio.wrap_future(fut)
