"""Quick client-side throughput check of OpcUaAdapter (not a test; the full figure is `zhizao bench edge`).

Usage: python tests/edge/adapters/opcua/measure_throughput.py [NODES] [SECONDS] [TICK_S] [--profile]
       python tests/edge/adapters/opcua/measure_throughput.py [NODES] --offline [--mixed]

A server process changes NODES Double nodes every TICK_S seconds; this process runs the adapter with a
counting sink and reports samples/s received, its CPU use, and samples per client CPU-second (what one
agent process could take if the server were not the limit).

--offline: no server; encodes one PublishResponse carrying NODES value changes once, then times what the
client does per response (fastdecode's arrays; asyncua's decode + the adapter's array building), against
asyncua's decode plus its stock per-item path (one DataChangeEvent and one handler task per value) as baseline.
"""

from __future__ import annotations

import asyncio
import cProfile
import multiprocessing as mp
import pstats
import sys
import time
from datetime import UTC, datetime
from typing import Any

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
NODES = int(ARGS[0]) if ARGS else 1000
SECONDS = float(ARGS[1]) if len(ARGS) > 1 else 6.0
TICK_S = float(ARGS[2]) if len(ARGS) > 2 else 0.05


def serve(port: int, ready: Any, stop: Any) -> None:
    """Server process: change every node once per tick."""
    from asyncua import ua

    from tests.support.simserver import start_server

    async def main() -> None:
        sim = await start_server([], port=port, extra=NODES)
        ready.set()
        ids = [ua.NodeId.from_string(f"ns=2;s=extra/{k}") for k in range(NODES)]
        value, writes, t0 = 0.0, 0, time.time()
        while not stop.is_set():
            value += 1.0
            now = datetime.now(UTC)
            for nid in ids:
                dv = ua.DataValue(ua.Variant(value, ua.VariantType.Double), SourceTimestamp=now, ServerTimestamp=now)
                await sim.server.write_attribute_value(nid, dv)
            writes += NODES
            await asyncio.sleep(max(0.0, t0 + (writes / NODES) * TICK_S - time.time()))
        print(f"server: {writes / (time.time() - t0):.0f} writes/s", flush=True)
        await sim.stop()

    asyncio.run(main())


async def client(port: int, profile: bool) -> None:
    """Run the adapter for SECONDS and report."""
    from tests.support.simserver import make_adapter

    adapter, _ = make_adapter(f"opc.tcp://127.0.0.1:{port}/zhizao/sim", [f"ns=2;s=extra/{k}" for k in range(NODES)],
                              subscription={"publishing_interval_ms": 100, "sampling_interval_ms": 10,
                                            "queue_size": 100}, watchdog_s=5.0, timeout_s=30)
    adapter.sink = lambda block: None
    await adapter.connect()
    task = asyncio.create_task(adapter.run())
    await asyncio.sleep(1.0)  # warm-up before the measured window
    prof = cProfile.Profile() if profile else None
    s0, n0, c0, w0 = adapter.samples, adapter.notifications, time.process_time(), time.time()
    if prof:
        prof.enable()
    await asyncio.sleep(SECONDS)  # the measured window
    if prof:
        prof.disable()
    s1, n1, c1, w1 = adapter.samples, adapter.notifications, time.process_time(), time.time()
    task.cancel()
    await adapter.close()
    samples, cpu, wall = s1 - s0, c1 - c0, w1 - w0
    print(f"client: {samples / wall:.0f} samples/s in {n1 - n0} notifications, CPU {100 * cpu / wall:.0f}%, "
          f"{samples / cpu:.0f} samples per client CPU-second")
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(18)


def offline() -> None:
    """Client-side cost per PublishResponse without a server: decode + arrays vs decode + stock per-item path."""
    from asyncua import ua
    from asyncua.common.subscription import Subscription
    from asyncua.common.utils import Buffer
    from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

    from tests.support.simserver import make_adapter

    now = datetime.now(UTC)
    mixed = "--mixed" in sys.argv  # Int32 and Double items interleaved: the per-item loop instead of frombuffer

    def variant(k: int) -> Any:
        if mixed and k % 2:
            return ua.Variant(k, ua.VariantType.Int32)
        return ua.Variant(float(k), ua.VariantType.Double)

    items = [ua.MonitoredItemNotification(ClientHandle=k + 1, Value=ua.DataValue(
        variant(k), SourceTimestamp=now, ServerTimestamp=now)) for k in range(NODES)]
    msg = ua.NotificationMessage(SequenceNumber=1, PublishTime=now,
                                 NotificationData=[ua.DataChangeNotification(MonitoredItems=items)])
    resp = ua.PublishResponse()
    resp.Parameters = ua.PublishResult(SubscriptionId=1, NotificationMessage=msg)
    raw = struct_to_binary(resp)
    adapter, _ = make_adapter("opc.tcp://unused:4840", [f"ns=2;s=extra/{k}" for k in range(NODES)])
    adapter.sink = lambda block: None

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            pass

    async def stock(rounds: int) -> float:
        sub = Subscription(None, ua.CreateSubscriptionParameters(), Handler())  # type: ignore[arg-type]
        for k in range(NODES):
            data = type("D", (), {"node": k, "client_handle": k + 1})()
            sub._monitored_items[k + 1] = data
        sub.server = type("S", (), {"observer": type("O", (), {"on_notification": lambda *a: None})()})()
        t0 = time.process_time()
        for _ in range(rounds):
            r = struct_from_binary(ua.PublishResponse, Buffer(raw))
            await sub.publish_callback(r.Parameters)
            await asyncio.gather(*list(sub._dispatch_tasks))
        return time.process_time() - t0

    from zhizao.edge.adapters.opcua.fastdecode import decode_publish_response

    rounds = max(1, int(200_000 / NODES))
    t0 = time.process_time()
    for _ in range(rounds):
        r = struct_from_binary(ua.PublishResponse, Buffer(raw))
        adapter._on_items(r.Parameters.NotificationMessage.NotificationData[0].MonitoredItems)
    items_path = time.process_time() - t0
    t0 = time.process_time()
    for _ in range(rounds):
        r = decode_publish_response(Buffer(raw))
        adapter._on_arrays(r.Parameters.NotificationMessage.NotificationData[0])
    ours = time.process_time() - t0
    t0 = time.process_time()
    for _ in range(rounds):
        struct_from_binary(ua.PublishResponse, Buffer(raw))
    decode = time.process_time() - t0
    base = asyncio.run(stock(rounds))
    n = rounds * NODES
    print(f"{NODES} changes per PublishResponse ({len(raw)} bytes), {rounds} responses:")
    print(f"  asyncua decode only           {n / decode:10.0f} changes per CPU-second")
    print(f"  asyncua decode + arrays       {n / items_path:10.0f} changes per CPU-second (fast_decode: false)")
    print(f"  fastdecode + arrays           {n / ours:10.0f} changes per CPU-second (default)")
    print(f"  decode + stock per-item tasks {n / base:10.0f} changes per CPU-second (baseline)")
    print(f"  ratio adapter / baseline      {base / ours:10.2f}x")


def main() -> None:
    """Start the server process, run the client, stop both."""
    if "--offline" in sys.argv:
        offline()
        return
    from tests.support.simserver import free_port

    port = free_port()
    ready, stop = mp.Event(), mp.Event()
    proc = mp.Process(target=serve, args=(port, ready, stop))
    proc.start()
    try:
        if not ready.wait(60):
            raise SystemExit("server did not start")
        asyncio.run(client(port, "--profile" in sys.argv))
    finally:
        stop.set()
        proc.join(20)


if __name__ == "__main__":
    main()
