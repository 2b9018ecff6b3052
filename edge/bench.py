"""`zhizao bench edge`: OPC UA value changes -> published Sparkplug samples per second, for one agent process.

Processes besides this one: `--servers` asyncua servers changing `--tags` Double nodes each, together at
about `--rate` changes/s; one edge agent (`run_agent`: OPC UA subscription -> mapping -> outbox -> Sparkplug DDATA) publishing to
the real broker (`ZHIZAO_MQTT_URL`, else 127.0.0.1:1883); then, in the same run, the baseline: the same
OPC UA subscription with every sample published as its own MQTT message. This process counts what arrives at
the broker (a subscriber) and reads each publisher's CPU time from /proc, over the same steady window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
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


class _Pusher:
    """Inject mode: hand value changes to every subscription's notification queue, as a PLC pushes changes.

    Clients receive ordinary DataChangeNotifications; the server skips asyncua's address-space write and
    per-item callback path (~50 us per value in Python), which otherwise caps what the bench can offer.
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

    async def push(self, ua: Any, values: list[Any]) -> None:
        """Queue one notification per monitored tag of every subscription, then let it publish."""
        notification = ua.MonitoredItemNotification
        for sub in list(self.subs.values()):
            queue = sub._triggered_datachanges
            for mid, handle, size, k in self._targets_of(sub):
                event = notification(ClientHandle=handle, Value=values[k])
                pending = queue.get(mid)
                if pending is None:
                    queue[mid] = [event]
                else:
                    if size and len(pending) >= size:
                        pending.pop(0)
                    pending.append(event)
            await sub._trigger_publish()


async def _serve(port: int, server_no: int, tags: int, rate: float, counter_file: Path, mode: str) -> None:
    from datetime import UTC, datetime

    from asyncua import Server, ua  # type: ignore[attr-defined]

    ua_: Any = ua  # asyncua's stubs declare NodeId(Int32, Int16) and DateTime where str/int/datetime work
    _skip_server_deepcopy()
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
            now = datetime.now(UTC)
            base = float(written)
            values = [
                ua_.DataValue(ua.Variant(base + k, double), SourceTimestamp=now, ServerTimestamp=now)
                for k in range(tags)
            ]
            if mode == "inject":
                await pusher.push(ua_, values)
            else:
                for nid, dv in zip(ids, values, strict=True):
                    await write(nid, dv)
            written += tags
            if time.monotonic() - last_dump > 0.2:
                _dump(counter_file, written)
                last_dump = time.monotonic()
            await asyncio.sleep(0)


def _dump(counter_file: Path, written: int) -> None:
    counter_file.write_text(f"{written} {time.monotonic()}")  # tiny file, a few times per second


def _tag(server_no: int, i: int) -> str:
    return f"bench/s{server_no}/m{i // TAGS_PER_MACHINE:03d}/T{i:05d}"


def serve_main() -> None:
    """Entry of a server process: argv = port, server number, tags, rate, counter file, mode (inject|write)."""
    import logging

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    port, server_no, tags, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    asyncio.run(_serve(port, server_no, tags, rate, Path(sys.argv[5]), sys.argv[6]))


# ---- the agent process and the baseline process ---------------------------------------------------------------
def _agent_config(endpoints: list[str], tags: int, edge: str, outbox: str, mqtt_url: str) -> dict[str, Any]:
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

    from edge.agent import run_agent
    from edge.config import parse_agent_config

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    config = parse_agent_config(json.loads(Path(sys.argv[1]).read_text()), "bench")
    asyncio.run(run_agent(config))


def baseline_main() -> None:
    """Entry of the baseline process (argv = config JSON file): the same subscription, one message per sample."""
    import logging

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from broker.mqtt import parse_mqtt_url
    from broker.sparkplug.codec import encode_data
    from edge.adapters.opcua import OpcUaAdapter
    from edge.config import parse_agent_config
    from edge.mapping import build_mapping
    from edge.samples import SampleBlock

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    config = parse_agent_config(json.loads(Path(sys.argv[1]).read_text()), "bench")
    mapping = build_mapping(config)
    ep = parse_mqtt_url(config.mqtt.effective_url())
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="zhizao-bench-baseline", protocol=paho.MQTTv5)
    client.connect(ep.host, ep.port)
    client.loop_start()
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
    client.disconnect()
    client.loop_stop()


# ---- this process: orchestration, broker-side counting, report ----------------------------------------------
class _Counter:
    """Counts samples and messages arriving on a topic filter at the broker (decoded with our codec)."""

    def __init__(self, mqtt_url: str, topic_filter: str, one_sample_each: bool = False) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        from broker.mqtt import parse_mqtt_url
        from broker.sparkplug.codec import decode

        self.samples = 0
        self.messages = 0
        self._decode = decode
        self._one = one_sample_each  # the baseline's messages hold one sample: count, do not decode
        self._lock = threading.Lock()
        ep = parse_mqtt_url(mqtt_url)
        ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe(topic_filter, 0)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect(ep.host, ep.port)
        self.client.loop_start()
        if not ready.wait(10):
            raise click.ClickException(f"no SUBACK from the broker at {mqtt_url}")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        # aliased metrics are samples; named ones are node metrics such as zhizao/Batch
        n = 1 if self._one else int(np.count_nonzero(self._decode(msg.payload).has_alias))
        with self._lock:
            self.samples += n
            self.messages += 1

    def read(self) -> tuple[int, int]:
        """(samples, messages) so far."""
        with self._lock:
            return self.samples, self.messages

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _offered(counter_files: list[Path]) -> int:
    """Value changes written so far by all servers (each dumps its count a few times per second)."""
    total = 0
    for path in counter_files:
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            total += int(path.read_text().split()[0])
    return total


def _spawn(entry: str, *args: str) -> subprocess.Popen[bytes]:
    code = f"from edge.bench import {entry}; {entry}()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        return out.decode(errors="replace")
    return (proc.stdout.read() if proc.stdout else b"").decode(errors="replace")


def _measure(
    proc: subprocess.Popen[bytes],
    counter: _Counter,
    offered: list[Path],
    warmup: float,
    seconds: float,
    what: str,
) -> dict[str, float]:
    """Wait for the first samples, skip `warmup`, then measure rates and CPU over `seconds`."""
    deadline = time.monotonic() + 60
    while counter.read()[0] == 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise click.ClickException(f"{what}: no samples reached the broker\n{_stop(proc)[-3000:]}")
        time.sleep(0.05)
    time.sleep(warmup)
    s0, m0 = counter.read()
    c0, w0 = _cpu_s(proc.pid), _offered(offered)
    t0 = time.monotonic()
    time.sleep(seconds)
    s1, m1 = counter.read()
    c1, w1 = _cpu_s(proc.pid), _offered(offered)
    dt = time.monotonic() - t0
    samples, messages = s1 - s0, m1 - m0
    return {
        "samples_per_s": samples / dt,
        "messages_per_s": messages / dt,
        "samples_per_message": samples / messages if messages else 0.0,
        "cpu_percent": 100.0 * (c1 - c0) / dt,
        "offered_per_s": (w1 - w0) / dt,
        "seconds": dt,
    }


def _machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@click.command("edge")
@click.option(
    "--seconds",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="Measured window per phase.",
)
@click.option(
    "--tags", type=click.IntRange(min=1), default=2000, show_default=True, help="OPC UA nodes per server."
)
@click.option(
    "--servers", type=click.IntRange(1, 8), default=2, show_default=True, help="OPC UA server processes."
)
@click.option("--rate", type=click.FloatRange(min=1), default=40_000.0, show_default=True,
              help="Value changes per second offered by all servers together (they run flat out when they cannot).")  # fmt: skip
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here."
)
@click.option("--server-path", type=click.Choice(["inject", "write"]), default="inject", show_default=True,
              help="How the servers change values: queue notifications directly, or asyncua's node writes (slower).")  # fmt: skip
@click.option("--quick", is_flag=True, help="CI smoke run: 1 server, 400 tags, 2 s windows (< 30 s in all).")
def bench_edge(
    seconds: float,
    tags: int,
    servers: int,
    rate: float,
    server_path: str,
    json_path: Path | None,
    quick: bool,
) -> None:
    """OPC UA value changes -> published Sparkplug samples per second, against one MQTT message per sample."""
    from broker.mqtt import resolve_mqtt_url

    if quick:
        seconds, tags, servers, rate = 2.0, 400, 1, 8_000.0
    warmup = 1.0 if quick else 2.0
    mqtt_url = resolve_mqtt_url(None)
    work = Path(tempfile.mkdtemp(prefix="zhizao-bench-edge-"))
    ports = [_free_port() for _ in range(servers)]
    counters = [work / f"offered-{no}" for no in range(servers)]
    procs = [
        _spawn(
            "serve_main", str(port), str(no), str(tags), str(rate / servers), str(counters[no]), server_path
        )
        for no, port in enumerate(ports)
    ]
    results: dict[str, Any] = {
        "machine": _machine(), "servers": servers, "tags": tags * servers, "offered_rate": rate, "server_path": server_path, "broker": mqtt_url
    }  # fmt: skip
    try:
        for server in procs:
            assert server.stdout is not None
            line = server.stdout.readline().decode().strip()
            if line != "ready":
                raise click.ClickException(f"OPC UA server did not start: {line}\n{_stop(server)[-3000:]}")
        endpoints = [f"opc.tcp://127.0.0.1:{port}/bench" for port in ports]
        click.echo(f"bench edge: {servers} OPC UA servers x {tags} nodes, broker {mqtt_url}", err=True)
        for phase, entry, edge in (
            ("agent", "agent_main", "bench-agent"),
            ("baseline", "baseline_main", "bench-base"),
        ):
            cfg = _agent_config(endpoints, tags, edge, str(work / edge), mqtt_url)
            counter = _Counter(
                mqtt_url, f"spBv1.0/{SITE}/DDATA/{edge}/#", one_sample_each=phase == "baseline"
            )
            cfg_path = work / f"{edge}.json"
            cfg_path.write_text(json.dumps(cfg))
            proc = _spawn(entry, str(cfg_path))
            try:
                click.echo(f"bench edge: measuring {phase} for {seconds:g} s ...", err=True)
                results[phase] = _measure(proc, counter, counters, warmup, seconds, phase)
            finally:
                out = _stop(proc)
                counter.close()
            if proc.returncode not in (0, -signal.SIGTERM):
                click.echo(f"bench edge: {phase} exited with {proc.returncode}:\n{out[-2000:]}", err=True)
    finally:
        for server in procs:
            _stop(server)
        shutil.rmtree(work, ignore_errors=True)
    a, b = results["agent"], results["baseline"]
    results["ratio_samples_per_s"] = a["samples_per_s"] / b["samples_per_s"] if b["samples_per_s"] else None
    results["ratio_samples_per_cpu_s"] = (
        (a["samples_per_s"] / max(a["cpu_percent"], 1e-9))
        / (b["samples_per_s"] / max(b["cpu_percent"], 1e-9))
        if b["samples_per_s"]
        else None
    )
    m = results["machine"]
    click.echo(f"machine: {m['cpu']} ({m['cores']} cores), python {m['python']}")
    for name, r in (("agent (Sparkplug DDATA)", a), ("baseline (1 msg/sample)", b)):
        click.echo(
            f"{name:26s} {r['samples_per_s']:>10,.0f} samples/s  {r['samples_per_message']:>7.1f} samples/msg  "
            f"{r['cpu_percent']:>5.0f}% CPU  (server offered {r['offered_per_s']:,.0f}/s)"
        )
    click.echo(
        f"ratio: {results['ratio_samples_per_s']:.2f}x samples/s, "
        f"{results['ratio_samples_per_cpu_s']:.2f}x samples per CPU-second (agent vs baseline)"
    )
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2))
        click.echo(f"wrote {json_path}", err=True)
