"""`zhizao bench live` end to end: real simulator and edge agent, the cloud, an SSE client; a short run.

A private Mosquitto keeps the seeded site's traffic away from other tests on the shared broker.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from click.testing import CliRunner

from cloud.dashboard.bench import bench_live


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bench_live_times_simulator_events_to_the_stream(fresh_database: str, tmp_path: Path) -> None:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
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
        result = CliRunner().invoke(bench_live, ["--database-url", fresh_database, "--mqtt-url",
                                                 f"mqtt://127.0.0.1:{port}", "--events", "4"])
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
