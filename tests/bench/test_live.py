"""`zhizao bench live` end to end: real simulator and edge agent, the cloud, an SSE client; a short run.

With `--browser`, also the machine page in Debian's Chromium (never a downloaded browser). A private
Mosquitto keeps the seeded site's traffic away from other tests on the shared broker.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from zhizao.bench.live import bench_live
from zhizao.broker.embedded import free_port

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.parametrize("browser", [False, True], ids=["stream", "browser"])
def test_bench_live_times_simulator_events_to_the_stream(fresh_database: str, tmp_path: Path,
                                                          browser: bool) -> None:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    figures = tmp_path / "live.json"
    args = ["--database-url", fresh_database, "--mqtt-url", f"mqtt://127.0.0.1:{port}", "--events", "4",
            "--json", str(figures)]
    if browser:
        assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)"
        args += ["--browser", CHROMIUM]
    broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert broker.poll() is None and time.monotonic() < deadline, "private mosquitto did not start"
                time.sleep(0.1)
        result = CliRunner().invoke(bench_live, args)
    finally:
        broker.terminate()
        broker.wait(10)
    assert result.exit_code == 0, result.output
    assert "events measured: 4 of 4" in result.output
    total = re.search(r"total: sim -> SSE state event\s+(\d+)\s+(\d+)", result.output)
    base = re.search(r"baseline: sim -> DDATA on broker\s+(\d+)\s+(\d+)", result.output)
    assert total and base, result.output
    # The stream cannot deliver a state change before the edge has published it.
    assert int(total.group(1)) >= int(base.group(1))
    got = json.loads(figures.read_text())["figures"]
    assert got["measured"] == 4 and got["total"]["p50_ms"] >= got["baseline"]["p50_ms"] > 0
    if not browser:
        assert "dashboard:" not in result.output and "dashboard" not in got
        return
    # Every event reached the page's DOM, and the page cannot show a state the edge has not yet published.
    assert "dashboard events seen: 4 of 4" in result.output
    assert re.search(r"dashboard: sim -> badge in DOM\s+\d+\s+\d+", result.output), result.output
    assert got["dashboard_seen"] == 4
    # The badge changed to the new state's label: the two Stop calls show the unspecified stop (code 40000).
    labels = got["dashboard_labels"]
    assert labels.get("Unspecified stop") == 2 and sum(labels.values()) == 4, labels
    assert got["dashboard"]["p99_ms"] >= got["dashboard"]["p50_ms"] > got["baseline"]["p50_ms"] > 0


def test_bench_live_refuses_a_browser_that_is_not_there(tmp_path: Path) -> None:
    missing = tmp_path / "no-chromium"
    result = CliRunner().invoke(bench_live, ["--database-url", "postgresql://unused/x", "--browser", str(missing)])
    assert result.exit_code == 2
    assert "--browser" in result.output and str(missing) in result.output and "does not exist" in result.output
