"""`zhizao demo` end to end as a user runs it: the seeded cluster reaches the API, then it stops by itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg


def test_demo_reaches_first_data_and_stops_cleanly(tmp_path: Path, fresh_database: str, mqtt_url: str) -> None:
    env = {**os.environ, "ZHIZAO_DATABASE_URL": fresh_database, "ZHIZAO_MQTT_URL": mqtt_url}
    env.pop("ZHIZAO_LOG_LEVEL", None)
    done = subprocess.run(
        [sys.executable, "-m", "zhizao", "demo", "--data-dir", str(tmp_path / "data"), "--api-port", "0",
         "--duration", "25"],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    first = re.search(r"first samples visible in the API ([\d.]+) s after start", out)
    assert first is not None, out[-3000:]
    assert "[stop]" in out and "Token: zz_" in out
    assert " INFO " not in out, "the demo's own progress lines are its quiet default"
    with psycopg.connect(fresh_database) as conn:
        sites = [r[0] for r in conn.execute("SELECT site_id FROM sites ORDER BY 1").fetchall()]
        online = conn.execute("SELECT count(*) FROM edge_nodes WHERE online").fetchone()
    assert sites == ["ah-hefei", "js-suzhou", "sh-lingang", "zj-shaoxing"]
    assert online == (0,), "every agent sent its NDEATH on the way out"
