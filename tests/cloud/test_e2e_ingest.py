"""End to end with real parts: simulator -> edge agent -> Mosquitto -> cloud ingest -> PostgreSQL.

In the middle of the run the cloud is killed with SIGKILL and restarted, then the broker is restarted.
Afterwards every sample the edge agent appended to its outbox must be in the database exactly once.
Scale: `ZHIZAO_E2E_SECONDS` (default 40) and `ZHIZAO_E2E_LINES` (comma list of seed agents, or `all`;
default `aero-1`). The issue's acceptance run is `ZHIZAO_E2E_SECONDS=150 ZHIZAO_E2E_LINES=all`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import yaml

from zhizao.broker.embedded import free_port, wait_listening

ROOT = Path(__file__).resolve().parents[2]
SEED_AGENTS = ROOT / "seeds" / "agents"
HOST_ID = "zhizao-e2e"

CLOUD = """
import logging, signal, sys, threading
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
from zhizao.cloud.ingest.service import IngestService
svc = IngestService({db!r}, {mqtt!r}, {host!r})
svc.start()
print("up", flush=True)
stop = threading.Event()
for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *a: stop.set())
stop.wait()
svc.stop()
"""


def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def metric_sum(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_e2e_cloud_kill9_and_broker_restart_lose_nothing_and_duplicate_nothing(
    fresh_database: str, tmp_path: Path
) -> None:
    seconds = float(os.environ.get("ZHIZAO_E2E_SECONDS", "40"))
    wanted = os.environ.get("ZHIZAO_E2E_LINES", "aero-1")
    lines = sorted(p.stem for p in SEED_AGENTS.glob("*.yaml")) if wanted == "all" else wanted.split(",")
    py = sys.executable
    procs: list[subprocess.Popen[bytes]] = []

    broker_port = free_port()
    mqtt_url = f"mqtt://127.0.0.1:{broker_port}"
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")

    def start_broker() -> subprocess.Popen[bytes]:
        proc = start(["mosquitto", "-c", str(conf)], tmp_path / "mosquitto.log")
        wait_listening(broker_port, lambda: proc.poll() is None, "mosquitto", timeout=60)
        return proc

    def start_cloud() -> subprocess.Popen[bytes]:
        code = CLOUD.format(db=fresh_database, mqtt=mqtt_url, host=HOST_ID)
        with (tmp_path / "cloud.log").open("ab") as err:
            proc = subprocess.Popen([py, "-c", code], stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
        assert proc.stdout is not None
        with proc.stdout:  # the cloud prints only this one line
            assert proc.stdout.readline().strip() == b"up", "cloud did not start"
        return proc

    try:
        broker = start_broker()
        sim_port = free_port()
        sim = start([py, "-m", "zhizao", "sim", "--port", str(sim_port), "--data-dir", str(tmp_path / "sim")],
                    tmp_path / "sim.log")
        procs.append(sim)
        wait_listening(sim_port, lambda: sim.poll() is None, "simulator", timeout=60)
        cloud = start_cloud()
        metric_ports = {}
        for line in lines:
            config = yaml.safe_load((SEED_AGENTS / f"{line}.yaml").read_text())
            config["mqtt"]["url"] = mqtt_url
            config["outbox"]["dir"] = str(tmp_path / "edge" / line)
            for adapter in config["adapters"]:
                adapter["endpoint"] = f"opc.tcp://127.0.0.1:{sim_port}/zhizao/sim"
            metric_ports[line] = config["metrics_port"] = free_port()
            path = tmp_path / f"{line}.yaml"
            path.write_text(yaml.safe_dump(config))
            procs.append(start([py, "-m", "zhizao", "edge", "run", str(path)], tmp_path / f"edge-{line}.log"))
        phase = seconds / 4
        time.sleep(phase)
        cloud.send_signal(signal.SIGKILL)  # mid-stream: batches in flight, nothing flushed
        cloud.wait(10)
        time.sleep(3)  # the scenario: the cloud stays down a while, the edge keeps publishing into the broker
        cloud = start_cloud()
        time.sleep(phase)
        broker.terminate()
        broker.wait(10)
        time.sleep(2)  # the scenario: the broker stays down a while, the edge buffers in its outbox
        broker = start_broker()
        time.sleep(phase)
        sim.send_signal(signal.SIGINT)  # production stops; the agents drain their outboxes
        sim.wait(30)
        deadline = time.monotonic() + 90
        while True:
            depths = {line: metric_sum(p, "zhizao_edge_outbox_depth_samples") for line, p in metric_ports.items()}
            depth = sum(depths.values())
            if depth == 0:
                break
            if time.monotonic() > deadline:
                log = (tmp_path / "cloud.log").read_text(errors="replace").splitlines()
                interesting = [x for x in log if "processor" in x or "writer" in x or "WARN" in x][-40:]
                raise AssertionError(f"edge outboxes still hold {depths}; cloud log:\n" + "\n".join(interesting))
            time.sleep(1)
        produced = sum(metric_sum(p, "zhizao_edge_samples_appended_total") for p in metric_ports.values())
        with psycopg.connect(fresh_database) as conn:
            stored, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT (s.tag_id, s.ts)) FROM ("
                " SELECT tag_id, ts FROM samples UNION ALL SELECT tag_id, ts FROM samples_text) s"
                " JOIN tags t USING (tag_id) WHERE t.machine_id IS NOT NULL"
            ).fetchone()  # type: ignore[misc]
            # DATA that reaches a restarted cloud before the node's rebirth is a dead letter (data_before_birth):
            # not acknowledged, so the edge replays it after the rebirth; anything else dead is a defect.
            dead = conn.execute("SELECT count(*) FROM dead_letters WHERE reason <> 'data_before_birth'"
                                ).fetchone()[0]  # type: ignore[index]  # fmt: skip
            early = conn.execute("SELECT count(*) FROM dead_letters WHERE reason = 'data_before_birth'"
                                 ).fetchone()[0]  # type: ignore[index]  # fmt: skip
        print(f"e2e: lines={lines} produced={produced:.0f} stored={stored} distinct={distinct} dead={dead}"
              f" data_before_birth={early}")  # fmt: skip
        assert produced > 0
        assert stored == distinct, "duplicate rows"
        assert distinct == produced, f"lost {produced - distinct:.0f} of {produced:.0f} samples"
        assert dead == 0
        cloud.terminate()
        cloud.wait(20)
    finally:
        for proc in [*procs, cloud, broker]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in [*procs, cloud, broker]:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)  # reaped: a killed child left unwaited stays a zombie
