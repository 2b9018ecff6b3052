"""The whole OEE path for tests: real simulators -> edge agent -> Mosquitto -> cloud ingest and OEE -> API.

`oee_path(database, tmp_path, machines)` starts a private Mosquitto and the cloud service (ingest, OEE, API)
and seeds the Shaoxing packing line `pack-1` with the given machines (seed machines with overrides; ids the
seeds lack are copies of pack-1-m04). Process signals and developing faults are left out: they would only load
the path. The test sets the site calendar through the API, then `run(...)` starts one simulator process per
`Sim` (each machine follows its own scripted timeline) and one edge agent with an adapter per simulator.

The simulators hold their clock until the agent has subscribed (`--wait-for-client`): counters are
cumulative, and units made before the edge's first sample cannot be known to the cloud. Every timeline still
gets a short idle lead (Stopped / no shift, PRE_ROLL_WALL_S wall seconds at its simulator's speed). The
context manager stops everything (the cloud must not outlive its test: it would answer later tests'
Sparkplug messages).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import yaml

from zhizao.broker.embedded import free_port, wait_listening
from zhizao.cloud.auth import create_token
from zhizao.cloud.seed import seed_database
from zhizao.cloud.service import CloudService
from zhizao.cloud.settings import CloudSettings
from zhizao.edge.bootstrap import agent_configs_for_scenario
from zhizao.seeds import load_scenario

ROOT = Path(__file__).resolve().parents[2]
SITE, LINE = "zj-shaoxing", "pack-1"
ZONE = ZoneInfo("Asia/Shanghai")
PRE_ROLL_WALL_S = 1.0
IDLE = {"state": 2, "stop_reason": 160000}  # Stopped, no shift: planned time


def path_of(machine: str) -> str:
    return f"{SITE}/{LINE}/{machine}"


@dataclass
class Sim:
    """One simulator process: `timelines` maps a machine id to its segments, which start at `start`."""

    timelines: dict[str, list[dict[str, Any]]]
    start: datetime
    speed: float
    dt_s: int = 60

    @property
    def pre_roll_s(self) -> int:
        steps = -(-int(PRE_ROLL_WALL_S * self.speed) // self.dt_s)
        return steps * self.dt_s


@dataclass
class OeePath:
    """The running path: API clients (engineer, operator), the database, the processes and their logs."""

    db: str
    tmp: Path
    mqtt_url: str
    scenario: Path
    engineer: httpx.Client
    operator: httpx.Client
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def put_calendar(self, body: dict[str, Any], recompute_from: datetime) -> None:
        """The site calendar through the API (an engineer), as an operations engineer sets it."""
        put = self.engineer.put(f"/api/v1/sites/{SITE}/calendar",
                                json={**body, "recompute_from": recompute_from.isoformat()})
        assert put.status_code == 200 and put.json()["recomputed"] is True, put.text

    def run(self, sims: list[Sim]) -> None:
        """Start the simulators, then the edge agent (one adapter per simulator)."""
        scenario = load_scenario(self.scenario)
        py = sys.executable
        ports = []
        for i, sim in enumerate(sims):
            files = []
            for machine, segments in sim.timelines.items():
                timeline = {"name": f"{machine}-script", "machines": [path_of(machine)],
                            "segments": [{"duration_s": sim.pre_roll_s, **IDLE}, *segments]}
                files += ["--timeline", str(self.tmp / f"{machine}.yaml")]
                (self.tmp / f"{machine}.yaml").write_text(yaml.safe_dump(timeline, sort_keys=False))
            subset = self.tmp / f"sim{i}-scenario.yaml"
            served = scenario.subset([path_of(m) for m in sim.timelines])
            subset.write_text(yaml.safe_dump(served.model_dump(mode="json"), sort_keys=False))
            port = free_port()
            ports.append(port)
            start = sim.start - timedelta(seconds=sim.pre_roll_s)
            self._start([py, "-m", "zhizao", "sim", "--scenario", str(subset), "--port", str(port), *files,
                         "--start", start.isoformat(), "--speed", f"{sim.speed:g}", "--dt-ms", str(sim.dt_s * 1000),
                         "--data-dir", str(self.tmp / f"sim{i}"), "--wait-for-client"], f"sim{i}.log")
        for i, port in enumerate(ports):
            wait_listening(port, lambda: all(p.poll() is None for p in self.procs), f"simulator {i}", timeout=60)
        config = agent_configs_for_scenario(scenario, mqtt_url=self.mqtt_url, outbox_root=str(self.tmp / "edge"))[LINE]
        template = config["adapters"][0]
        config["adapters"] = [{**template, "name": f"sim{i}", "endpoint": f"opc.tcp://127.0.0.1:{port}/zhizao/sim"}
                              for i, port in enumerate(ports)]
        adapter_of = {m: f"sim{i}" for i, sim in enumerate(sims) for m in sim.timelines}
        config["machines"] = [{**m, "adapter": adapter_of[m["id"]]} for m in config["machines"] if m["id"] in adapter_of]
        config["metrics_port"] = free_port()
        (self.tmp / "agent.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self._start([py, "-m", "zhizao", "edge", "run", str(self.tmp / "agent.yaml")], "edge.log")

    def _start(self, argv: list[str], log: str) -> None:
        with (self.tmp / log).open("ab") as out:
            self.procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT))

    def oee(self, machine: str, window: str, lo: datetime, hi: datetime, scope: str = "machine") -> list[dict[str, Any]]:
        """Rows of /api/v1/oee overlapping [lo, hi)."""
        resp = self.engineer.get("/api/v1/oee", params={"scope": scope, "site": SITE, "id": machine, "window": window,
                                                        "from": lo.isoformat(), "to": hi.isoformat()})
        assert resp.status_code == 200, resp.text
        rows: list[dict[str, Any]] = resp.json()
        return rows

    def window(self, machine: str, kind: str, start: datetime, end: datetime) -> dict[str, Any]:
        """The one `kind` window of `machine` that starts at `start` ({} until it is stored)."""
        at = start.astimezone(UTC).isoformat()
        return next((r for r in self.oee(machine, kind, start, end) if r["start"] == at), {})

    def wait(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll `done` until true; else fail with what the database holds and the processes' logs."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done():
                return
            dead = [p.args for p in self.procs if p.poll() is not None]
            assert not dead, f"{what}: a process ended early: {dead}\n{self.logs()}"
            time.sleep(0.5)
        raise AssertionError(f"{what}: not reached in {timeout_s:g} s\n{self.diagnose()}\n{self.logs()}")

    def diagnose(self) -> str:
        with psycopg.connect(self.db) as conn:
            seen = conn.execute(
                "SELECT t.machine_id, t.name, count(*), min(s.ts), max(s.ts), max(s.value) FROM samples s"
                " JOIN tags t USING (tag_id) GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
            windows = conn.execute("SELECT machine_id, kind, count(*), min(start_ts), max(start_ts), sum(total)"
                                   " FROM oee_windows GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
        return "samples:\n" + "\n".join(map(str, seen)) + "\nwindows:\n" + "\n".join(map(str, windows))

    def logs(self, tail: int = 1500) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-tail:]}" for f in sorted(self.tmp.glob("*.log")))



def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in reversed(procs):
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def line_scenario(machines: dict[str, dict[str, Any]], tmp: Path) -> Path:
    """The seeds' site zj-shaoxing with line pack-1 holding `machines` (id -> overrides), as a scenario file."""
    seeded = load_scenario()
    data = seeded.subset([path_of(m) for m in machines if path_of(m) in seeded.machine_paths()]).model_dump(mode="json")
    (site,) = data["sites"]
    (line,) = site["lines"]
    seeds = {m["id"]: m for m in line["machines"]}
    template = seeds["pack-1-m04"] if "pack-1-m04" in seeds else next(iter(seeds.values()))
    line["machines"] = [{**seeds.get(mid, template), "id": mid, "name": mid, "signals": [], "faults": [], **edit}
                        for mid, edit in machines.items()]
    path = tmp / "scenario.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@contextmanager
def oee_path(database: str, tmp: Path, machines: dict[str, dict[str, Any]]) -> Iterator[OeePath]:
    """Broker and cloud up, the line seeded; the test sets the calendar and calls `run`."""
    broker_port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    mqtt_url = f"mqtt://127.0.0.1:{broker_port}"
    scenario = line_scenario(machines, tmp)
    service = CloudService(CloudSettings(database_url=database, mqtt_url=mqtt_url, host_id=f"zhizao-{tmp.name[:20]}",
                                         api_port=0), warm_up=False)
    procs: list[subprocess.Popen[bytes]] = []
    clients: list[httpx.Client] = []
    try:
        with (tmp / "mosquitto.log").open("ab") as out:
            procs.append(subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT))
        wait_listening(broker_port, lambda: procs[0].poll() is None, "mosquitto", timeout=60)
        url = service.start_in_thread()
        seed_database(database, load_scenario(scenario))  # the site, its time zone and line, as `zhizao cloud seed`
        for role in ("engineer", "operator"):
            token = create_token(database, role, SITE, f"e2e-{role}")
            clients.append(httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30))
        path = OeePath(database, tmp, mqtt_url, scenario, clients[0], clients[1], procs)
        yield path
    finally:
        for c in clients:
            c.close()
        _stop(procs)
        service.stop()
