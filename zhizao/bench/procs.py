"""The processes of `zhizao bench edge`: fast-changing asyncua servers, the agent, the one-message-per-sample
baseline. Each runs as `python -c "from zhizao.bench.procs import X; X()" ARGS` (see bench/edge.py)."""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

NAMESPACE = "urn:zhizao:bench"
TAGS_PER_MACHINE = 200
SITE = "bench"


# ---- the OPC UA server process ------------------------------------------------------------------------------
def _skip_server_deepcopy() -> None:
    """asyncua's server deep-copies every DataValue per monitored item (~0.5 ms per write); ours are fresh
    objects never mutated, so the bench server keeps the reference (write mode)."""
    from asyncua.server.monitored_item_service import MonitoredItemValues

    def set_current(self: Any, cur_val: Any) -> None:
        self.old_dvalue = self.current_dvalue
        self.current_dvalue = cur_val

    MonitoredItemValues.set_current_datavalue = set_current  # type: ignore[method-assign]


_EPOCH_TICKS = 116_444_736_000_000_000  # 1601-01-01 -> 1970-01-01 in OPC UA DateTime ticks (100 ns)
_CHANGE_ROW = np.dtype(
    [
        ("handle", "<u4"),
        ("mask", "u1"),
        ("vtype", "u1"),
        ("value", "<f8"),
        ("source", "<i8"),
        ("server", "<i8"),
    ]
)  # MonitoredItemNotification: ClientHandle, DataValue(mask=value|source ts|server ts, Variant Double)


class _Change:
    """A queued Double change (inject mode): what a MonitoredItemNotification would carry, without objects."""

    __slots__ = ("handle", "ticks", "value")

    def __init__(self, handle: int, value: float, ticks: int) -> None:
        self.handle, self.value, self.ticks = handle, value, ticks


def _install_fast_notifications(ua: Any) -> None:
    """Encode DataChangeNotifications made of `_Change`s with numpy instead of asyncua's per-field encoder.

    The bytes are the standard binary encoding, so clients see ordinary notifications; other notifications
    (initial values, anything else) go through asyncua unchanged.
    """
    from asyncua.ua import ua_binary

    original = ua_binary.create_dataclass_serializer
    if getattr(original, "zhizao_bench", False):
        return

    def to_objects(items: list[Any]) -> list[Any]:
        out = []
        for i in items:
            if type(i) is _Change:
                dt = ua.win_epoch_to_datetime(i.ticks)
                dv = ua.DataValue(
                    ua.Variant(i.value, ua.VariantType.Double), SourceTimestamp=dt, ServerTimestamp=dt
                )
                i = ua.MonitoredItemNotification(ClientHandle=i.handle, Value=dv)
            out.append(i)
        return out

    @functools.cache
    def patched(cls: Any) -> Any:
        slow = original(cls)
        if cls is not ua.DataChangeNotification:
            return slow

        def serialize(obj: Any) -> bytes:
            items = obj.MonitoredItems
            if not items or not all(type(i) is _Change for i in items):
                return bytes(slow(ua.DataChangeNotification(MonitoredItems=to_objects(items))))
            rows = np.empty(len(items), _CHANGE_ROW)
            rows["handle"] = [i.handle for i in items]
            rows["mask"] = 0x0D
            rows["vtype"] = 11
            rows["value"] = [i.value for i in items]
            rows["source"] = rows["server"] = [i.ticks for i in items]
            return struct.pack("<i", len(items)) + rows.tobytes() + struct.pack("<i", 0)

        return serialize

    patched.zhizao_bench = True  # type: ignore[attr-defined]
    ua_binary.create_dataclass_serializer = patched


class _Pusher:
    """Inject mode: hand value changes to every subscription's notification queue, as a PLC pushes changes.

    Clients receive ordinary DataChangeNotifications; the server skips asyncua's address-space write, its
    per-item callbacks and its per-field encoder (together ~100 us per value in Python), which otherwise cap
    what the bench can offer far below what the agent takes.
    """

    def __init__(self, server: Any, index: dict[Any, int]) -> None:
        self.subs: dict[int, Any] = server.iserver.subscription_service.subscriptions
        self.index = index
        self._targets: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}

    def _targets_of(self, sub: Any) -> list[tuple[int, int, int, int]]:
        items = sub.monitored_item_srv._monitored_items
        key = (id(sub), len(items))
        if key not in self._targets:
            self._targets[key] = [
                (mid, d.client_handle, d.queue_size, self.index[d.read_value_id.NodeId])
                for mid, d in items.items()
                if d.read_value_id is not None and d.read_value_id.NodeId in self.index
            ]
        return self._targets[key]

    async def push(self, base: float, ticks: int) -> None:
        """Queue one change (value base + tag index) per monitored tag of every subscription, then publish."""
        for sub in list(self.subs.values()):
            queue = sub._triggered_datachanges
            for mid, handle, size, k in self._targets_of(sub):
                event = _Change(handle, base + k, ticks)
                pending = queue.get(mid)
                if pending is None:
                    queue[mid] = [event]
                else:
                    if size and len(pending) >= size:
                        pending.pop(0)
                    pending.append(event)
            await sub._trigger_publish()


async def _serve(
    port: int, server_no: int, tags: int, rate: float, counter_file: Path, mode: str, offset_s: float = 0.0
) -> None:
    from datetime import UTC, datetime, timedelta

    from asyncua import Server, ua  # type: ignore[attr-defined]

    ua_: Any = ua  # asyncua's stubs declare NodeId(Int32, Int16) and DateTime where str/int/datetime work
    _skip_server_deepcopy()
    if mode == "inject":
        _install_fast_notifications(ua_)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench")
    idx = await server.register_namespace(NAMESPACE)
    ids = []
    folder = None
    for i in range(tags):
        if i % TAGS_PER_MACHINE == 0:  # one object per machine: asyncua adds children in O(siblings)
            folder = await server.nodes.objects.add_object(idx, f"s{server_no}-m{i // TAGS_PER_MACHINE:03d}")
        assert folder is not None
        node = await folder.add_variable(ua_.NodeId(_tag(server_no, i), idx), f"T{i}", 0.0)
        ids.append(node.nodeid)
    write = server.write_attribute_value
    pusher = _Pusher(server, {nid: k for k, nid in enumerate(ids)})
    double = ua.VariantType.Double
    skew = timedelta(seconds=offset_s)  # a device clock ahead (> 0) or behind (< 0) of true time
    async with server:
        print("ready", flush=True)
        written, last_dump = 0, 0.0
        start = time.monotonic()
        while True:
            # Pace whole rounds so the offered rate is about `rate`; run flat out when the server cannot.
            due = (written + tags) / rate - (time.monotonic() - start)
            if due < -1.0:  # starved for a while (CPU contention): do not burst to catch up
                start = time.monotonic() - written / rate
            elif due > 0:
                await asyncio.sleep(due)
            base = float(written)
            if mode == "inject":
                await pusher.push(base, time.time_ns() // 100 + _EPOCH_TICKS + int(offset_s * 1e7))
            else:
                now = datetime.now(UTC) + skew
                for k, nid in enumerate(ids):
                    variant = ua.Variant(base + k, double)
                    await write(nid, ua_.DataValue(variant, SourceTimestamp=now, ServerTimestamp=now))
            written += tags
            if time.monotonic() - last_dump > 0.2:
                _dump(counter_file, written)
                last_dump = time.monotonic()
            await asyncio.sleep(0)


def _dump(counter_file: Path, written: int) -> None:
    tmp = counter_file.with_suffix(".tmp")  # replaced atomically: the reader never sees a half-written file
    tmp.write_text(f"{written} {time.monotonic()}")
    tmp.replace(counter_file)


def _tag(server_no: int, i: int) -> str:
    return f"bench/s{server_no}/m{i // TAGS_PER_MACHINE:03d}/T{i:05d}"


def serve_main() -> None:
    """Entry of a server process: argv = port, server number, tags, rate, counter file, mode (inject|write)
    and optionally the device clock's offset in seconds (`bench faults`)."""
    import logging

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    port, server_no, tags, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    offset_s = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    asyncio.run(_serve(port, server_no, tags, rate, Path(sys.argv[5]), sys.argv[6], offset_s))


# ---- the agent process and the baseline process ---------------------------------------------------------------
def agent_config(endpoints: list[str], tags: int, edge: str, outbox: str, mqtt_url: str) -> dict[str, Any]:
    """One opcua adapter per server, machines of TAGS_PER_MACHINE Double signals each."""
    adapters, machines = [], []
    for no, endpoint in enumerate(endpoints):
        adapters.append(
            {
                "type": "opcua",
                "name": f"s{no}",
                "endpoint": endpoint,
                "security": {"mode": "None"},
                "subscription": {"publishing_interval_ms": 100, "sampling_interval_ms": 50, "queue_size": 50},
            }
        )
        for j in range(0, tags, TAGS_PER_MACHINE):
            signals = [
                {"metric": f"T{i:05d}", "node_id": f"ns=2;s={_tag(no, i)}"}
                for i in range(j, min(j + TAGS_PER_MACHINE, tags))
            ]
            machines.append(
                {
                    "id": f"s{no}-m{j // TAGS_PER_MACHINE:03d}",
                    "adapter": f"s{no}",
                    "oee": False,
                    "signals": signals,
                }
            )
    return {
        "site": SITE,
        "edge_node": edge,
        "mqtt": {"url": mqtt_url},
        "sparkplug": {"publish_interval_ms": 250, "max_samples_per_message": 5000},
        "outbox": {"dir": outbox, "fsync_interval_s": 1.0},
        "adapters": adapters,
        "machines": machines,
    }


def agent_main() -> None:
    """Entry of the agent process: argv = agent config (JSON file). Runs `run_agent` until SIGTERM."""
    import logging

    from zhizao.edge.agent import run_agent
    from zhizao.edge.config import parse_agent_config

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    config = parse_agent_config(json.loads(Path(sys.argv[1]).read_text()), "bench")
    asyncio.run(run_agent(config))


def baseline_main() -> None:
    """Entry of the baseline process (argv = config JSON file): the same subscription, one message per sample."""
    import logging

    from zhizao.broker.mqtt import MqttClient
    from zhizao.broker.sparkplug.codec import encode_data
    from zhizao.edge.adapters.opcua import OpcUaAdapter
    from zhizao.edge.config import parse_agent_config
    from zhizao.edge.mapping import build_mapping
    from zhizao.edge.node.link import mqtt_options
    from zhizao.edge.samples import SampleBlock

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    config = parse_agent_config(json.loads(Path(sys.argv[1]).read_text()), "bench")
    mapping = build_mapping(config)
    # The agent's connection settings (URL, credentials, TLS, protocol) from the same factory; no Will, no
    # Sparkplug session: only the naive loop below, one QoS 0 PUBLISH per sample.
    connected = threading.Event()
    client = MqttClient(mqtt_options(config.mqtt, "zhizao-bench-baseline"), on_connected=connected.set)
    client.start()
    if not connected.wait(30):
        client.stop()
        sys.exit(f"baseline: cannot connect to {client.where}: {client.last_problem or 'no CONNACK in 30 s'}")
    devices = [s.machine for s in mapping.signals.signals]
    topics = [f"spBv1.0/{SITE}/DDATA/{config.edge_node}/{d}" for d in devices]
    one_dt = np.array([10], np.uint32)
    seq = 0
    seq_total = 0

    def make_sink(adapter: str) -> Callable[[SampleBlock], None]:
        def sink(block: SampleBlock) -> None:
            nonlocal seq, seq_total
            out = mapping.transform(adapter, block)
            sig, ts, val = out.signal.tolist(), out.ts_ms, out.value
            for i, s in enumerate(sig):
                seq = (seq + 1) % 256
                alias = np.array([100 + s], np.uint64)
                payload = encode_data(seq, int(ts[i]), alias, ts[i : i + 1], val[i : i + 1], one_dt)
                client.publish(topics[s], payload, qos=0)
                seq_total += 1

        return sink

    async def run() -> None:
        adapters = [OpcUaAdapter(p.config, p.sources, make_sink(n)) for n, p in mapping.plans.items()]  # type: ignore[arg-type]
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        for a in adapters:
            await a.connect()
        tasks = [asyncio.create_task(a.run()) for a in adapters]
        await stop.wait()
        for t in tasks:
            t.cancel()
        for a in adapters:
            await a.close()

    asyncio.run(run())
    print(f"baseline published {seq_total} messages", flush=True)
    client.stop()
