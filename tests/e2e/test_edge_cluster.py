"""Acceptance of the edge half: the whole seeded cluster in the simulator, one agent per line, every sample
the simulator produced reaches the broker as decoded DDATA, and none arrives twice as live data.

Decoding uses pysparkplug (an independent Sparkplug implementation), not our codec. The run length is
`ZHIZAO_E2E_SECONDS` (default 60 s; the acceptance figures in the README come from 120 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pysparkplug as psp
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.embedded import start_broker
from broker.mqtt import parse_mqtt_url
from edge.bootstrap import write_agent_configs
from edge.sim.record import read_record
from seeds import load_scenario

SECONDS = float(os.environ.get("ZHIZAO_E2E_SECONDS", "60"))
SPEED = 10.0
# Nodes published 1:1 (same timestamp, same value) under these metric names; the rest are derived.
DIRECT = {"MachDesignSpeed": "Rate/Ideal", "CurMachSpeed": "Rate/Current", "MachSpeed": "Rate/Setpoint"}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _zhizao(*argv: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "zhizao", *argv], stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_full_cluster_every_sample_reaches_the_broker_once(tmp_path: Path) -> None:
    scenario = load_scenario()
    url, stop_broker = start_broker(tmp_path / "broker")
    ep = parse_mqtt_url(url)
    received: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            received.append((msg.topic, msg.payload))

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    sub.connect(ep.host, ep.port)
    sub.subscribe("spBv1.0/#", qos=0)
    sub.loop_start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = _free_port()
        record = tmp_path / "sim.record"
        sim = _zhizao("sim", "--port", str(port), "--speed", str(SPEED), "--seed", "7", "--record", str(record),
                      "--catch-up-s", "3600", "--data-dir", str(tmp_path / "sim"), log=tmp_path / "sim.log")
        procs.append(sim)
        endpoint = f"opc.tcp://127.0.0.1:{port}/zhizao/sim"
        paths = write_agent_configs(scenario, tmp_path / "configs", endpoint, mqtt_url=url,
                                    outbox_root=str(tmp_path / "edge"))
        agents = [_zhizao("edge", "run", str(p), log=tmp_path / f"{p.stem}.log") for p in paths]
        procs += agents
        lines = sum(len(s.lines) for s in scenario.sites)
        assert len(agents) == lines
        # Start-up (imports, OPC UA sessions, births) is not measured: wait for every machine's DBIRTH.
        machines = {(s.id, line.id, m.id) for s in scenario.sites for line in s.lines for m in line.machines}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with lock:
                born = {tuple(t.split("/")[i] for i in (1, 3, 4)) for t, _ in received if "/DBIRTH/" in t}
            if born >= machines:
                break
            assert all(p.poll() is None for p in procs), "a simulator or agent process died; see its log"
            time.sleep(0.5)
        else:
            pytest.fail(f"no DBIRTH within 180 s for {sorted(machines - born)[:5]}")
        time.sleep(2)
        cpu0 = {a.pid: _cpu_seconds(a.pid) for a in agents}
        t0 = time.monotonic()
        with lock:
            start_index = len(received)
        time.sleep(SECONDS)
        elapsed = time.monotonic() - t0
        cpu = {a.pid: _cpu_seconds(a.pid) - cpu0[a.pid] for a in agents}
        with lock:
            measured = received[start_index:]
        for a in agents:
            a.send_signal(signal.SIGINT)
        for a in agents:
            assert a.wait(30) == 0, f"agent exited with {a.returncode}"
        sim.send_signal(signal.SIGINT)
        sim.wait(30)
        time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        sub.loop_stop()
        sub.disconnect()
        stop_broker()

    # Decode everything with pysparkplug, per (site, edge, device) with the latest DBIRTH.
    births: dict[tuple[str, str, str], psp.DBirth] = {}
    live: dict[tuple[str, str, str, str], list[tuple[int, float]]] = defaultdict(list)
    per_edge_messages: dict[str, int] = defaultdict(int)
    per_edge_samples: dict[str, int] = defaultdict(int)
    measured_ids = {id(m) for m in measured}
    ndeaths = set()
    for item in received:
        topic, payload = item
        parts = topic.split("/")
        if parts[2] == "DBIRTH":
            births[(parts[1], parts[3], parts[4])] = psp.DBirth.decode(payload)
        elif parts[2] == "NDEATH":
            ndeaths.add(parts[3])
        elif parts[2] == "DDATA":
            msg = psp.DData.decode(payload, birth=births[(parts[1], parts[3], parts[4])])
            for m in msg.metrics:
                if not m.is_historical:
                    live[(parts[1], parts[3], parts[4], m.name)].append((m.timestamp, float(m.value)))
            if id(item) in measured_ids:
                per_edge_messages[parts[3]] += 1
                per_edge_samples[parts[3]] += len(msg.metrics)
    assert ndeaths == {p.stem for p in paths}, "every agent sends NDEATH on a clean stop"

    # None twice as live data.
    duplicates = sum(len(v) - len({t for t, _ in v}) for v in live.values())
    assert duplicates == 0

    # Every sample the simulator produced, up to shortly before the agents stopped, was published.
    node_ids, node_index, ts, value = read_record(record)
    last_ts = max(t for v in live.values() for t, _ in v)
    cutoff = last_ts - int(3 * SPEED * 1000)
    edge_of = {(s.id, line.id, m.id): line.id for s in scenario.sites for line in s.lines for m in line.machines}
    missing: list[str] = []
    checked = 0
    published = {k: dict(v) for k, v in live.items()}
    for i, node in enumerate(node_ids):
        site, line, machine, tag = node.split("/", 3)
        metric = DIRECT.get(tag, tag if "/" in tag else None)
        if metric is None:
            continue  # State, counters: derived signals, checked by the mapping tests
        sel = (node_index == i) & (ts <= cutoff)
        got = published.get((site, edge_of[(site, line, machine)], machine, metric), {})
        for t, v in zip(ts[sel].tolist(), value[sel].tolist(), strict=True):
            checked += 1
            if t not in got or not np.isclose(got[t], v, rtol=1e-12, atol=0):
                missing.append(f"{node}@{t}={v}")
    assert checked > 1000, f"too few samples checked ({checked}); did the simulator run?"
    assert not missing, f"{len(missing)} of {checked} produced samples not published, e.g. {missing[:5]}"

    rates = {e: per_edge_samples[e] / elapsed for e in per_edge_samples}
    per_msg = sum(per_edge_samples.values()) / max(1, sum(per_edge_messages.values()))
    cpu_pct = {a.pid: 100 * c / elapsed for a, c in zip(agents, cpu.values(), strict=True)}
    print(f"\nfull cluster, {lines} agents, {elapsed:.0f} s at sim speed {SPEED:g}: checked {checked} produced samples, "
          f"0 missing, 0 live duplicates; samples/s per agent {min(rates.values()):.0f}..{max(rates.values()):.0f} "
          f"(total {sum(rates.values()):.0f}); {per_msg:.1f} samples per DDATA; "
          f"agent CPU {min(cpu_pct.values()):.1f}..{max(cpu_pct.values()):.1f}% of one core")
