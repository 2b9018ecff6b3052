"""Acceptance, short form: the whole seeded cluster in the simulator, one `zhizao edge run` process per line, on
a private Mosquitto. Every pass-through value the simulator recorded while an agent was subscribed appears in
the DDATA stream (pysparkplug), nothing twice as live data, and every sample any outbox accepted reached the
broker. (`--duration`-style figures for 2 minutes are in the edge-node report; this runs ~20 s.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.support.mosquitto import free_port, private_mosquitto
from tests.support.spb_capture import Births, Capture, decode_data
from zhizao.edge.config import parse_agent_config
from zhizao.edge.mapping import build_mapping
from zhizao.edge.outbox import read_outbox
from zhizao.edge.sim.record import read_record

ROOT = Path(__file__).resolve().parents[2]
PY = [sys.executable, "-c", "from zhizao.cli import main; main()"]


@pytest.mark.slow
def test_seeded_cluster_one_agent_per_line(tmp_path: Path) -> None:
    mqtt_port, sim_port = free_port(), free_port()
    broker = private_mosquitto(mqtt_port)
    url = f"mqtt://127.0.0.1:{mqtt_port}"
    record = tmp_path / "sim.rec"
    sim = subprocess.Popen(
        [*PY, "sim", "--port", str(sim_port), "--record", str(record), "--data-dir", str(tmp_path / "sim")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    cap = Capture(url, ["spBv1.0/#"])
    agents: dict[str, subprocess.Popen[bytes]] = {}
    configs = {}
    try:
        deadline = time.monotonic() + 60
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for path in sorted((ROOT / "seeds" / "agents").glob("*.yaml")):
            doc = yaml.safe_load(path.read_text())
            doc["adapters"][0]["endpoint"] = f"opc.tcp://127.0.0.1:{sim_port}/zhizao/sim"
            doc["outbox"]["dir"] = str(tmp_path / "outbox" / doc["edge_node"])
            doc["mqtt"]["url"] = url
            cfg_path = tmp_path / path.name
            cfg_path.write_text(yaml.safe_dump(doc))
            configs[doc["edge_node"]] = parse_agent_config(doc, path.name)
            agents[doc["edge_node"]] = subprocess.Popen(
                [*PY, "edge", "run", str(cfg_path)], cwd=ROOT, env={**os.environ, "ZHIZAO_MQTT_URL": url},
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            )  # fmt: skip
        # every agent born and streaming, then a while longer
        cap.wait_for(
            lambda ms: {m.topic.split("/")[3] for m in ms if m.kind == "DDATA"} >= set(agents),
            timeout=90, what="DDATA from every agent",
        )  # fmt: skip
        time.sleep(15)
        for proc in agents.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in agents.items():
            assert proc.wait(30) == 0, f"agent {name} exited with {proc.returncode}"
    finally:
        for proc in agents.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)  # reaped: a killed child left unwaited stays a zombie
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(30)
        except subprocess.TimeoutExpired:
            sim.kill()
        cap.close()
        broker.terminate()
        broker.wait(10)
    msgs = cap.snapshot()
    aliases: dict[str, Births] = {}
    samples = []
    for m in msgs:
        if m.kind in ("NBIRTH", "DBIRTH"):
            aliases.setdefault(m.topic.split("/")[3], Births()).learn(m)
        elif m.kind == "DDATA":
            samples += decode_data(m, aliases[m.topic.split("/")[3]])[1]
    live = Counter((s.device, s.name, s.timestamp) for s in samples if not s.historical)
    assert not [k for k, c in live.items() if c > 1], "samples arrived twice as live data"
    got = {(s.device, s.name, s.timestamp): s.value for s in samples}
    # outbox -> broker: nothing any agent accepted is missing (no host acks, so every record is still on disk)
    appended = set()
    for cfg in configs.values():
        table = build_mapping(cfg).signals.signals
        for _, b in read_outbox(Path(str(cfg.outbox.dir))):
            appended.update(
                (table[i].machine, table[i].metric, t)
                for i, t in zip(b.signal.tolist(), b.ts_ms.tolist(), strict=True)
            )
    assert appended and not (appended - got.keys())
    # simulator -> DDATA: every recorded change of a pass-through signal inside that signal's subscribed span
    passthrough = {}
    for cfg in configs.values():
        for mach in cfg.machines:
            for sig in mach.signals:
                if sig.map == "value" and sig.scale is None and sig.offset is None:
                    passthrough[sig.node_id.removeprefix("ns=2;s=")] = (mach.id, sig.metric)
    span: dict[tuple[str | None, str], tuple[int, int]] = {}
    for s in samples:
        lo, hi = span.get((s.device, s.name), (s.timestamp, s.timestamp))
        span[(s.device, s.name)] = (min(lo, s.timestamp), max(hi, s.timestamp))
    node_ids, index, ts, value = read_record(record)
    expected = {}
    for i, t, v in zip(index.tolist(), ts.tolist(), value.tolist(), strict=True):
        key = passthrough.get(node_ids[i].removeprefix("ns=2;s="))
        if key is not None and key in span and span[key][0] < t <= span[key][1]:
            expected[(*key, t)] = v
    assert len(expected) > 500
    missing = [k for k in expected if k not in got]
    assert not missing, f"{len(missing)} of {len(expected)} simulator changes missing, e.g. {missing[:3]}"
