"""`zhizao bench live`: simulator event -> dashboard, the latency an operator sees.

One seeded line runs for real: the OPC UA simulator (its site only) and the line's edge agent as
subprocesses, the broker, and the cloud service (ingest -> OEE service -> live hub -> SSE) in this process.
The bench calls the simulator's `Stop` and `Start` methods on one machine over OPC UA and times, per call:

- total: until the matching `state` event arrives at an SSE client of `/api/v1/live` (what the browser gets);
- baseline: until the edge agent's DDATA carrying the new `State` reaches the broker (simulator step,
  OPC UA subscription and Sparkplug publishing; the part the cloud cannot make faster).

It reports p50/p99 of both and of the cloud's share (total - baseline), and total / baseline.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import platform
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml

from broker.embedded import free_port
from broker.mqtt import parse_mqtt_url
from broker.sparkplug.codec import decode
from broker.sparkplug.topics import MessageType, device_topic

ROOT_AGENTS = Path(__file__).resolve().parents[2] / "seeds" / "agents"
_PY = [sys.executable, "-c", "from zhizao.cli import main; main()"]


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise click.ClickException(f"{what} did not listen on port {port} within {timeout:g} s")


class _Sse:
    """An SSE client in a thread: (arrival perf_counter, data) of every `state` event."""

    def __init__(self, port: int, token: str) -> None:
        self.events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.opened = threading.Event()
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self._conn.request("GET", f"/api/v1/live?token={token}")
        self._thread = threading.Thread(target=self._run, name="bench-sse", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            r = self._conn.getresponse()
            if r.status != 200:
                return
            self.opened.set()
            kind = ""
            while raw := r.readline():
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:") and kind == "state":
                    self.events.put((time.perf_counter(), json.loads(line[5:])))
                elif not line:
                    kind = ""
        except (OSError, http.client.HTTPException):
            pass

    def close(self) -> None:
        if self._conn.sock is not None:
            self._conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._conn.close()


class _Wire:
    """Watches the machine's DDATA on the broker: (arrival perf_counter, State value) of each State sample."""

    def __init__(self, mqtt_url: str, site: str, line: str, machine: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        self.states: queue.Queue[tuple[float, int]] = queue.Queue()
        self._alias: int | None = None
        ep = parse_mqtt_url(mqtt_url)
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-live-{os.getpid()}",
                                   protocol=MQTTProtocolVersion.MQTTv5)
        self._client.on_message = self._on_message
        up = threading.Event()
        self._client.on_connect = lambda *a: up.set()
        self._client.connect(ep.host, ep.port)
        self._client.loop_start()
        if not up.wait(10):
            raise click.ClickException(f"cannot connect to the broker at {mqtt_url}")
        for kind in (MessageType.DBIRTH, MessageType.DDATA):
            self._client.subscribe(str(device_topic(site, kind, line, machine)), qos=0)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        arrived = time.perf_counter()
        d = decode(bytes(msg.payload))
        if "/DBIRTH/" in msg.topic:
            for i, name in enumerate(d.names):
                if name == "State":
                    self._alias = int(d.alias[i])
            return
        for i in range(d.n):
            if (d.names[i] == "State" or (self._alias is not None and int(d.alias[i]) == self._alias)) \
                    and not d.is_historical[i]:
                self.states.put((arrived, int(d.value[i])))

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _first(q: queue.Queue[tuple[float, Any]], match: Any, timeout: float) -> float:
    """Arrival time of the first queued item that matches, dropping the others."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        arrived, item = q.get(timeout=left)
        if match(item):
            return arrived


def _drain(q: queue.Queue[Any]) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


async def _toggle(endpoint: str, node: str, events: int, sse: _Sse, wire: _Wire, machine: str,
                  pause_s: float) -> tuple[list[float], list[float]]:
    from asyncua.client.client import Client  # only the bench drives the simulator from the cloud side

    total: list[float] = []
    base: list[float] = []
    async with Client(endpoint, timeout=10) as client:
        obj = client.get_node(node)
        for i in range(events):
            stop = i % 2 == 0
            _drain(sse.events)
            _drain(wire.states)
            started = time.perf_counter()
            await obj.call_method("2:Stop" if stop else "2:Start")

            def stopped(code: int) -> bool:
                return 40000 <= code < 50000

            def changed(code: int, stop: bool = stop) -> bool:
                return stopped(code) if stop else not stopped(code)

            try:
                on_wire = await asyncio.to_thread(_first, wire.states, changed, 10.0)
                seen = await asyncio.to_thread(
                    _first, sse.events, lambda e, c=changed: e.get("machine") == machine and c(int(e["code"])), 10.0)
            except TimeoutError:
                click.echo(f"  event {i + 1}: no {'stop' if stop else 'start'} seen within 10 s; skipped", err=True)
                continue
            base.append(on_wire - started)
            total.append(seen - started)
            await asyncio.sleep(pause_s)
    return total, base


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) * 1000.0


@click.command("live")
@click.option("--database-url", envvar="ZHIZAO_DATABASE_URL", required=True,
              help="PostgreSQL the cloud service writes to (env ZHIZAO_DATABASE_URL).")
@click.option("--mqtt-url", envvar="ZHIZAO_MQTT_URL", default="mqtt://127.0.0.1:1883", show_default=True,
              help="Broker shared by the edge agent and the cloud.")
@click.option("--line", "line", default="pack-1", show_default=True, help="Seeded line (seeds/agents/LINE.yaml).")
@click.option("--events", type=click.IntRange(2, 1000), default=20, show_default=True,
              help="Stop/Start calls (alternating).")
@click.option("--dt-ms", type=click.IntRange(10, 1000), default=100, show_default=True,
              help="Simulator step: a Stop takes effect at the next step.")
def bench_live(database_url: str, mqtt_url: str, line: str, events: int, dt_ms: int) -> None:
    """Simulator Stop/Start -> `state` event at an SSE client of /api/v1/live: p50/p99 latency."""
    import logging

    from cloud.auth import create_token
    from cloud.ingest.settings import IngestSettings
    from cloud.service import CloudService
    from cloud.settings import CloudSettings

    logging.basicConfig(level=logging.ERROR)
    agent_file = ROOT_AGENTS / f"{line}.yaml"
    if not agent_file.is_file():
        raise click.BadParameter(f"{agent_file} does not exist", param_hint="--line")
    agent = yaml.safe_load(agent_file.read_text())
    site, machine = agent["site"], agent["machines"][0]["id"]
    work = Path(tempfile.mkdtemp(prefix="zhizao-bench-live-"))
    sim_port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{sim_port}/zhizao/sim"
    agent["mqtt"]["url"] = mqtt_url
    agent["outbox"]["dir"] = str(work / "outbox")
    for adapter in agent["adapters"]:
        adapter["endpoint"] = endpoint
    (work / "agent.yaml").write_text(yaml.safe_dump(agent))

    procs: list[subprocess.Popen[bytes]] = []
    service = CloudService(CloudSettings(database_url=database_url, mqtt_url=mqtt_url, host_id="zhizao-bench-live",
                                         api_port=0), ingest_settings=IngestSettings(sites=(site,)))
    click.echo(f"bench live: line {site}/{line}, machine {machine}, {events} events, sim step {dt_ms} ms", err=True)
    try:
        log = (work / "procs.log").open("ab")
        procs.append(subprocess.Popen([*_PY, "sim", "--site", site, "--port", str(sim_port), "--dt-ms", str(dt_ms)],
                                      stdout=log, stderr=subprocess.STDOUT))
        _wait_port(sim_port, procs[0], "simulator")
        service.start_in_thread()
        assert service.port is not None
        token = create_token(database_url, "viewer", [site], "bench-live")
        wire = _Wire(mqtt_url, site, line, machine)
        sse = _Sse(service.port, token)
        if not sse.opened.wait(10):
            raise click.ClickException("the live stream did not open")
        procs.append(subprocess.Popen([*_PY, "edge", "run", str(work / "agent.yaml")], stdout=log,
                                      stderr=subprocess.STDOUT))
        # Warm-up: the agent's birth, the OEE service learning the machine, numba kernels compiled.
        deadline = time.monotonic() + 120
        while not sse.events.qsize() and time.monotonic() < deadline:
            if procs[1].poll() is not None:
                raise click.ClickException(f"edge agent exited with {procs[1].returncode}; see {work / 'procs.log'}")
            time.sleep(0.5)
        time.sleep(2.0)
        node = f"ns=2;s={site}/{line}/{machine}"
        total, base = asyncio.run(_toggle(endpoint, node, events, sse, wire, machine, pause_s=0.3))
        sse.close()
        wire.close()
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        service.stop()
    if len(total) < 2:
        raise click.ClickException(f"only {len(total)} events measured; see {work / 'procs.log'}")
    cloud = [t - b for t, b in zip(total, base, strict=True)]
    click.echo(f"machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}")
    click.echo(f"events measured: {len(total)} of {events}")
    click.echo(f"{'':34}{'p50 ms':>10}{'p99 ms':>10}")
    click.echo(f"{'baseline: sim -> DDATA on broker':34}{_pct(base, 50):10.0f}{_pct(base, 99):10.0f}")
    click.echo(f"{'total: sim -> SSE state event':34}{_pct(total, 50):10.0f}{_pct(total, 99):10.0f}")
    click.echo(f"{'cloud share (total - baseline)':34}{_pct(cloud, 50):10.0f}{_pct(cloud, 99):10.0f}")
    click.echo(f"total / baseline at p50: {_pct(total, 50) / max(_pct(base, 50), 1e-9):.2f}x")
    click.echo("next: open the dashboard (`zhizao demo` prints its URL) and watch a machine page")
