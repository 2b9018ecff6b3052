"""OpcUaAdapter against a real asyncua server: subscriptions, polling, chunking, commands, conformance."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from asyncua import ua
from asyncua.server.internal_session import InternalSession

from tests.support.simserver import AS_USER, M1, M2, ServerThread, free_port, make_adapter
from zhizao.edge.adapters.base import (
    AdapterConfigError,
    AdapterError,
    AdapterTemporaryError,
    installed_adapters,
    load_adapter,
)
from zhizao.edge.adapters.opcua import OpcUaAdapter
from zhizao.edge.samples import QUALITY_BAD, QUALITY_GOOD

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
EXTRA = [f"ns=2;s=extra/{k}" for k in range(230)]


def test_registered_through_entry_point() -> None:
    assert installed_adapters()["opcua"] == "zhizao.edge.adapters.opcua:OpcUaAdapter"
    assert load_adapter("opcua") is OpcUaAdapter


@pytest.mark.parametrize("fast_decode", [True, False])
def test_subscription_delivers_every_change_in_order(server: ServerThread, fast_decode: bool) -> None:
    nodes = [M1 + "Temperature/Spindle", M1 + "ProdProcessedCount", M2 + "CurMachSpeed"]
    adapter, sink = make_adapter(server.url, nodes, fast_decode=fast_decode)

    async def scenario() -> None:
        await adapter.connect()
        task = asyncio.create_task(adapter.run())
        try:
            await sink.wait_for(lambda: len(sink.all()) >= 3)  # initial values
            sink.blocks.clear()
            for k in range(300):
                await server.write(nodes[0], 100.0 + k, T0 + k)
                await server.write(nodes[1], k + 1, T0 + k)  # (+1: a write of the current value is no change)
                if k % 3 == 0:
                    await server.write(nodes[2], float(k + 1), T0 + k)
            await sink.wait_for(lambda: len(sink.all()) >= 700)
        finally:
            task.cancel()
            await adapter.close()

    asyncio.run(scenario())
    got = sink.all()
    assert len(got) == 700
    for idx, expected in ((0, [100.0 + k for k in range(300)]), (1, [float(k + 1) for k in range(300)]),
                          (2, [float(k + 1) for k in range(0, 300, 3)])):
        assert sink.values(idx) == expected
        ts = got.ts_ms[got.signal == idx]
        assert np.all(np.diff(ts) > 0) and ts[0] == T0 and ts[-1] in (T0 + 297, T0 + 299)
    assert np.all(got.quality == QUALITY_GOOD)
    # arrays per notification, not one sink call per value
    assert len(sink.blocks) < 700 / 5
    assert adapter.samples >= 700 and adapter.notifications >= len(sink.blocks)


def test_status_maps_to_quality_and_timestamps_are_utc_ms(server: ServerThread) -> None:
    node = M2 + "Temperature/Spindle"
    adapter, sink = make_adapter(server.url, [node])

    async def scenario() -> None:
        await adapter.connect()
        task = asyncio.create_task(adapter.run())
        try:
            await sink.wait_for(lambda: len(sink.all()) >= 1)
            before = int(time.time() * 1000)
            await server.write(node, 1.5)  # timestamp now
            await server.write(node, 2.5, T0 + 7, status=0x40000000)  # Uncertain
            await server.write(node, 3.5, T0 + 8, status=0x80000000)  # Bad
            await sink.wait_for(lambda: len(sink.all()) >= 4)
            after = int(time.time() * 1000)
            b = sink.all()
            assert before - 5 <= b.ts_ms[1] <= after
        finally:
            task.cancel()
            await adapter.close()

    asyncio.run(scenario())
    b = sink.all()
    assert b.ts_ms.dtype == np.int64 and b.ts_ms[2:].tolist() == [T0 + 7, T0 + 8]
    assert b.quality[1:].tolist() == [QUALITY_GOOD, 500, QUALITY_BAD]


def test_polling_reads_and_emits_only_changes(server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = [M1 + "MachSpeed", M1 + "State", M2 + "Temperature/Spindle"]
    adapter, sink = make_adapter(server.url, nodes, mode="polling")
    polls: list[int] = []  # the server counts the adapter's reads of all three nodes
    read = InternalSession.read

    async def counting_read(self: Any, params: Any) -> Any:
        if len(params.NodesToRead) == len(nodes):
            polls.append(len(polls))
        return await read(self, params)

    monkeypatch.setattr(InternalSession, "read", counting_read)

    async def more_polls(n: int) -> None:
        # The adapter polls one read after the other: once n more have started, n - 1 were handled.
        target = len(polls) + n
        await sink.wait_for(lambda: len(polls) >= target)

    async def scenario() -> None:
        await adapter.connect()
        task = asyncio.create_task(adapter.run())
        try:
            await sink.wait_for(lambda: len(sink.all()) >= 3)  # first poll: every node
            await more_polls(4)  # three more polls handled, nothing changed
            assert len(sink.all()) == 3
            await server.write(nodes[1], 11, T0 + 1)
            await sink.wait_for(lambda: len(sink.all()) >= 4)
            await more_polls(4)  # the change is emitted once, not on every poll
        finally:
            task.cancel()
            await adapter.close()

    asyncio.run(scenario())
    b = sink.all()
    assert len(b) == 4
    assert b.signal[3] == 1 and b.value[3] == 11.0 and b.ts_ms[3] == T0 + 1


@pytest.mark.parametrize("mode", ["subscription", "polling"])
def test_chunks_respect_server_limits(server: ServerThread, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []
    create, read = InternalSession.create_monitored_items, InternalSession.read

    async def counting_create(self: Any, params: Any) -> Any:
        calls.append(("create", len(params.ItemsToCreate)))
        return await create(self, params)

    async def counting_read(self: Any, params: Any) -> Any:
        calls.append(("read", len(params.NodesToRead)))
        return await read(self, params)

    monkeypatch.setattr(InternalSession, "create_monitored_items", counting_create)
    monkeypatch.setattr(InternalSession, "read", counting_read)
    limits = ["i=11705", "i=11714"]  # OperationLimits: MaxNodesPerRead, MaxMonitoredItemsPerCall

    async def set_limits(value: int) -> None:
        from asyncua import ua

        for nid in limits:
            await server.sim.server.write_attribute_value(
                ua.NodeId.from_string(nid), ua.DataValue(ua.Variant(value, ua.VariantType.UInt32)))

    adapter, sink = make_adapter(server.url, EXTRA, mode=mode, chunk_size=100)

    async def scenario() -> None:
        await server.run(set_limits, 40)
        try:
            await adapter.connect()
            task = asyncio.create_task(adapter.run())
            await sink.wait_for(lambda: len(set(sink.all().signal.tolist())) == len(EXTRA))
            task.cancel()
        finally:
            await adapter.close()
            await server.run(set_limits, 10000)

    asyncio.run(scenario())
    kind = "create" if mode == "subscription" else "read"
    sizes = [n for k, n in calls if k == kind and n > 2]  # (the limits themselves are read in one small call)
    assert sizes[:6] == [40, 40, 40, 40, 40, 30]


def test_write_and_call(server: ServerThread) -> None:
    nodes = [M1 + "MachSpeed", M1 + "State", M2 + "State"]
    adapter, _ = make_adapter(server.url, nodes, security=AS_USER)
    anonymous, _ = make_adapter(server.url, nodes)

    async def scenario() -> None:
        # Like a PLC, the server lets an anonymous session read but neither write nor call.
        await anonymous.connect()
        try:
            assert await anonymous.read(0) == 60.0
            with pytest.raises(AdapterConfigError, match="BadUserAccessDenied"):
                await anonymous.write(0, 72.5)
            with pytest.raises(AdapterConfigError, match="BadUserAccessDenied"):
                await anonymous.call("cnc-1-m02", "Start", [])
        finally:
            await anonymous.close()
        assert await server.read(nodes[0]) == 60.0 and await server.read(nodes[2]) == 2
        await adapter.connect()
        try:
            await adapter.write(0, 72.5)
            assert await server.read(nodes[0]) == 72.5
            await adapter.call("cnc-1-m02", "Start", [])
            assert await server.read(nodes[2]) == 6
            await adapter.call("cnc-1-m02", "Stop", [])
            assert await server.read(nodes[2]) == 2
            with pytest.raises(AdapterConfigError, match="no method 'Explode'"):
                await adapter.call("cnc-1-m01", "Explode", [])
            with pytest.raises(AdapterConfigError, match="no nodes of machine"):
                await adapter.call("cnc-9", "Start", [])
            with pytest.raises(AdapterConfigError, match=r"BadNotWritable|BadUserAccessDenied"):
                await adapter.write(1, 6)  # State is read-only
            with pytest.raises(AdapterConfigError):
                await adapter.write(0, "fast")  # not a number for a Double node
        finally:
            await adapter.close()
        with pytest.raises(AdapterTemporaryError, match="not connected"):
            await adapter.write(0, 1.0)

    asyncio.run(scenario())


def test_close_before_connect_and_twice(server: ServerThread) -> None:
    adapter, sink = make_adapter(server.url, [M1 + "State"])

    async def scenario() -> None:
        await adapter.close()
        await adapter.close()
        with pytest.raises(AdapterTemporaryError):
            await adapter.run()
        await adapter.connect()
        await adapter.close()
        await adapter.close()

    asyncio.run(scenario())
    assert sink.device_states == [("cnc-1-m01", True), ("cnc-1-m01", False)]


def test_only_adapter_errors_leave(server: ServerThread) -> None:
    async def expect(adapter: OpcUaAdapter, kind: type[AdapterError], match: str) -> None:
        try:
            with pytest.raises(kind, match=match):
                await adapter.connect()
        finally:
            await adapter.close()

    async def scenario() -> None:
        dead = f"opc.tcp://127.0.0.1:{free_port()}/zhizao/sim"
        await expect(make_adapter(dead, [M1 + "State"])[0], AdapterTemporaryError, "connect to")
        await expect(make_adapter(server.url, ["ns=2;q=broken"])[0], AdapterConfigError, "node ids")

    asyncio.run(scenario())


def test_sink_failure_surfaces_through_run(server: ServerThread) -> None:
    def bad_sink(block: Any) -> None:
        raise RuntimeError("outbox full")

    adapter, _ = make_adapter(server.url, [M1 + "State"])
    adapter.sink = bad_sink

    async def scenario() -> None:
        await adapter.connect()
        try:
            with pytest.raises(AdapterTemporaryError, match=r"sink failed.*outbox full"):
                await asyncio.wait_for(adapter.run(), 10)
        finally:
            await adapter.close()

    asyncio.run(scenario())


def test_a_node_the_server_does_not_have_yet_is_retried_while_the_others_are_monitored(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    """A PLC whose address space is still loading: the missing item is retried on its own, nothing stops."""
    late = "ns=2;s=late/Value"
    adapter, sink = make_adapter(server.url, [M1 + "Temperature/Spindle", late],
                                 subscription={"publishing_interval_ms": 50, "sampling_interval_ms": 10, "queue_size": 1000,
                                               "missing_retry_s": 0.3})  # fmt: skip

    async def add_late_node() -> None:
        await server.sim.server.nodes.objects.add_variable(ua.NodeId("late/Value", 2), "Value", 7.5)

    async def scenario() -> None:
        await adapter.connect()  # no AdapterConfigError: the node may still appear
        assert adapter.missing_nodes == 1
        task = asyncio.create_task(adapter.run())
        try:
            await sink.wait_for(lambda: 0 in set(sink.all().signal.tolist()))  # the other node delivers
            await server.write(M1 + "Temperature/Spindle", 30.0)
            await server.run(add_late_node)
            await sink.wait_for(lambda: 7.5 in sink.values(1))
            assert adapter.missing_nodes == 0
        finally:
            task.cancel()
            await adapter.close()

    caplog.set_level("INFO", logger="zhizao.edge.adapters.opcua.adapter")
    asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert any("1 nodes are not in the server's address space (ns=2;s=late/Value)" in m for m in messages)
    assert any("1 nodes now monitored (ns=2;s=late/Value)" in m for m in messages)
