"""The seeded agent config of one line against the real simulator: OPC UA -> mapping -> outbox -> Sparkplug.

Every value the simulator published for a pass-through signal while the agent was subscribed appears in the
DDATA stream (decoded with pysparkplug), with its source timestamp, and no sample arrives twice as live data.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent / "node"))
from spb_capture import Capture, all_samples

from edge.agent import run_agent
from edge.config import parse_agent_config
from edge.sim.record import read_record

ROOT = Path(__file__).resolve().parents[2]
LINE = "cnc-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_sim(port: int, record: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-c", "from zhizao.cli import main; main()", "sim", "--port", str(port),
           "--site", "sh-lingang", "--record", str(record), "--dt-ms", "250", "--data-dir", str(record.parent)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"simulator exited: {proc.stdout.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("simulator did not open its port within 60 s")


def test_seeded_line_config_against_the_simulator(tmp_path: Path, mqtt_url: str, unique_id: str) -> None:
    port = _free_port()
    record = tmp_path / "sim.rec"
    doc = yaml.safe_load((ROOT / "seeds" / "agents" / f"{LINE}.yaml").read_text())
    doc["edge_node"] = (
        f"{LINE}-{unique_id}"  # a private Sparkplug edge node id; OPC UA node ids stay as seeded
    )
    doc["mqtt"]["url"] = mqtt_url
    doc["outbox"]["dir"] = str(tmp_path / "outbox")
    doc["adapters"][0]["endpoint"] = f"opc.tcp://127.0.0.1:{port}/zhizao/sim"
    config = parse_agent_config(doc, "test")
    passthrough = {
        s.node_id: (m.id, s.metric)
        for m in config.machines
        for s in m.signals
        if s.map == "value" and s.scale is None and s.offset is None
    }
    sim = _start_sim(port, record)
    cap = Capture(mqtt_url, [f"spBv1.0/{config.site}/+/{config.edge_node}/#"])
    try:

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(run_agent(config, stop))
            await cap.until(lambda ms: len(all_samples(ms)) > 0, within_s=60, what="first samples")
            await asyncio.sleep(6.0)
            stop.set()
            await task

        asyncio.run(main())
    finally:
        cap.close()
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(20)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait()
    msgs = cap.snapshot()
    assert msgs[-1].kind == "NDEATH"
    samples = [s for s in all_samples(msgs) if s.device]
    live = [(s.device, s.name, s.timestamp) for s in samples if not s.historical]
    assert len(live) == len(set(live)), "a sample arrived twice as live data"
    got = {(s.device, s.name, s.timestamp): s.value for s in samples}
    node_ids, index, ts, value = read_record(record)
    # Per signal, the window it was subscribed in: after its first notification (the value current at subscribe
    # time) up to its last one (later changes were still queued in the server when the agent stopped).
    span: dict[tuple[str | None, str], tuple[int, int]] = {}
    for s in samples:
        lo, hi = span.get((s.device, s.name), (s.timestamp, s.timestamp))
        span[(s.device, s.name)] = (min(lo, s.timestamp), max(hi, s.timestamp))
    expected = {}
    for i, t, v in zip(index.tolist(), ts.tolist(), value.tolist(), strict=True):
        key = passthrough.get(f"ns=2;s={node_ids[i]}") or passthrough.get(node_ids[i])
        if key is not None and key in span and span[key][0] < t <= span[key][1]:
            expected[(*key, t)] = v
    assert len(expected) > 50, f"too few pass-through changes recorded ({len(expected)}): {node_ids[:3]}"
    missing = [k for k in expected if k not in got]
    assert not missing, f"{len(missing)} of {len(expected)} simulator changes missing, e.g. {missing[:3]}"
    wrong = [k for k, v in expected.items() if abs(float(got[k]) - v) > 1e-9 * max(1.0, abs(v))]  # type: ignore[arg-type]
    assert not wrong, f"values differ for {wrong[:3]}"
    print(f"{len(expected)} pass-through changes checked, {len(samples)} samples in {len(msgs)} messages")
    assert os.path.exists(record)
