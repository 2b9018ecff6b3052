"""V1 through the whole path: scripted simulator -> edge agent -> Mosquitto -> cloud ingest -> OEE -> /api/v1/oee.

The simulator plays the segments of seeds/timelines/v1-vorne.yaml (reference/oee-vectors.json V1) on the one
machine it serves, at 1000x from a start two days back, after a 3-hour "no shift" pre-roll (11 s of wall time)
so the edge agent is subscribed before the shift's first unit: counters are cumulative, and units made before
the edge's first sample cannot be known to the cloud. The site's calendar is set through the API first (an
engineer token) to the vector's shift: 08:00 for 8 h with its 60 min of breaks. The shift window must show
OEE 18848/25200 = 0.7479.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import yaml

from zhizao.broker.embedded import free_port, wait_listening
from zhizao.cloud.auth import create_token
from zhizao.cloud.seed import seed_database
from zhizao.cloud.service import CloudService
from zhizao.cloud.settings import CloudSettings
from zhizao.seeds import load_scenario

ROOT = Path(__file__).resolve().parents[3]
MACHINE = "zj-shaoxing/pack-1/pack-1-m01"
PRE_ROLL_S = 6 * 3600  # 21.6 s of wall time at speed 1000: the agent must be subscribed before the first unit
V1_CALENDAR = {
    "shifts": [{"name": "V1", "start": "08:00", "hours": 8, "days": [1, 2, 3, 4, 5, 6, 7],
                "breaks": [{"start": "10:00", "minutes": 15}, {"start": "12:00", "minutes": 30},
                           {"start": "15:00", "minutes": 15}]}],
}  # fmt: skip


def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def test_v1_through_sim_edge_broker_cloud_shows_oee_0_7479(fresh_database: str, tmp_path: Path) -> None:
    py = sys.executable
    procs: list[subprocess.Popen[bytes]] = []
    broker_port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    mqtt_url = f"mqtt://127.0.0.1:{broker_port}"
    scenario = tmp_path / "v1-scenario.yaml"
    timeline = yaml.safe_load((ROOT / "seeds" / "timelines" / "v1-vorne.yaml").read_text())
    timeline["segments"].insert(0, {"duration_s": PRE_ROLL_S, "state": 2, "stop_reason": 160000})
    (tmp_path / "v1.yaml").write_text(yaml.safe_dump(timeline, sort_keys=False))
    scenario.write_text(yaml.safe_dump(load_scenario().subset([MACHINE]).model_dump(mode="json"), sort_keys=False))
    zone = ZoneInfo("Asia/Shanghai")
    day = (datetime.now(UTC).astimezone(zone) - timedelta(days=2)).date()
    shift_start = datetime(day.year, day.month, day.day, 8, tzinfo=zone)
    service = CloudService(CloudSettings(database_url=fresh_database, mqtt_url=mqtt_url, host_id="zhizao-v1",
                                         api_port=0), warm_up=False)
    try:
        procs.append(start(["mosquitto", "-c", str(conf)], tmp_path / "mosquitto.log"))
        wait_listening(broker_port, lambda: procs[-1].poll() is None, "mosquitto", timeout=60)
        url = service.start_in_thread()
        seed_database(fresh_database, load_scenario(scenario))  # the site, its time zone and calendar, as `zhizao cloud seed`
        token = create_token(fresh_database, "engineer", "zj-shaoxing", "v1-engineer")
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        sim_port = free_port()
        procs.append(start([py, "-m", "zhizao", "sim", "--scenario", str(scenario), "--port", str(sim_port),
                            "--timeline", str(tmp_path / "v1.yaml"),
                            "--start", (shift_start - timedelta(seconds=PRE_ROLL_S)).isoformat(),
                            "--speed", "1000", "--data-dir", str(tmp_path / "sim")], tmp_path / "sim.log"))
        wait_listening(sim_port, lambda: procs[-1].poll() is None, "simulator", timeout=60)
        config = yaml.safe_load((ROOT / "seeds" / "agents" / "pack-1.yaml").read_text())
        config["mqtt"]["url"] = mqtt_url
        config["outbox"]["dir"] = str(tmp_path / "edge")
        config["machines"] = [m for m in config["machines"] if m["id"] == "pack-1-m01"]
        config["metrics_port"] = free_port()
        for adapter in config["adapters"]:
            adapter["endpoint"] = f"opc.tcp://127.0.0.1:{sim_port}/zhizao/sim"
        (tmp_path / "pack-1.yaml").write_text(yaml.safe_dump(config))
        procs.append(start([py, "-m", "zhizao", "edge", "run", str(tmp_path / "pack-1.yaml")], tmp_path / "edge.log"))

        # The seeded site exists before the edge's birth, so the calendar edit succeeds at once.
        put = api.put("/api/v1/sites/zj-shaoxing/calendar",
                      json={**V1_CALENDAR, "recompute_from": (shift_start - timedelta(hours=1)).isoformat()})
        assert put.status_code == 200 and put.json()["recomputed"] is True, put.text

        params = {"scope": "machine", "site": "zj-shaoxing", "id": "pack-1-m01", "window": "shift",
                  "from": shift_start.isoformat(), "to": (shift_start + timedelta(hours=8)).isoformat()}
        deadline = time.monotonic() + 120
        row: dict[str, object] = {}
        while time.monotonic() < deadline:
            rows = api.get("/api/v1/oee", params=params).json()
            row = next((x for x in rows if x["start"] == shift_start.astimezone(UTC).isoformat()), {})
            if row.get("all_s") == 8 * 3600 and row.get("total") == 19271:
                break
            time.sleep(1)
        if not (row.get("all_s") == 8 * 3600 and row.get("total") == 19271):
            import psycopg

            with psycopg.connect(fresh_database) as conn:
                seen = conn.execute(
                    "SELECT t.name, count(*), min(s.ts), max(s.ts), max(s.value) FROM samples s JOIN tags t"
                    " USING (tag_id) GROUP BY t.name ORDER BY t.name").fetchall()
                windows = conn.execute(
                    "SELECT kind, count(*), min(start_ts), max(start_ts), sum(total) FROM oee_windows GROUP BY 1").fetchall()
            raise AssertionError(f"shift not complete: {row}\nrows: {rows}\nwindows: {windows}\n"
                                 + "\n".join(map(str, seen)))
        print(f"V1 via API: {row}")
        assert row["start"] == shift_start.astimezone(UTC).isoformat()
        assert (row["planned_s"], row["run_s"], row["total"]) == (420 * 60, 373 * 60, 19271)
        assert abs(float(row["availability"]) - 373 / 420) < 1e-9  # type: ignore[arg-type]
        assert abs(float(row["performance"]) - 19271 / 60 / 373) < 1e-9  # type: ignore[arg-type]
        # Counts/Good comes from the edge's good_counter mapping (processed - defective).
        assert row["good"] == 18848, f"edge delivered Counts/Good = {row['good']} at the end of the shift"
        assert abs(float(row["oee"]) - 18848 / 25200) < 1e-9  # type: ignore[arg-type]
        assert f"{float(row['oee']):.4f}" == "0.7479"  # type: ignore[arg-type]
        states = api.get("/api/v1/states", params={"site": "zj-shaoxing", "machine": "pack-1-m01",
                                                   "from": params["from"], "to": params["to"]}).json()
        failure = [s for s in states if s["category"] == "failure"]
        assert [(s["code"], s["start"][11:16]) for s in failure] == [(180000, "05:30")]  # 13:30 in Shanghai
        api.close()
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in reversed(procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        service.stop()
