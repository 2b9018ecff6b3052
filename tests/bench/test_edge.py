"""`zhizao bench edge --quick` runs end to end: OPC UA server process -> agent process -> real broker, and the
one-message-per-sample baseline in the same run. Figures are checked for shape, not speed (speed claims come
from the benchmark itself, run on a quiet machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_bench_edge_quick_reports_both_phases(tmp_path: Path, mqtt_url: str) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "ZHIZAO_MQTT_URL": mqtt_url}
    proc = subprocess.run(
        [sys.executable, "-c", "from zhizao.cli import main; main()", "bench", "edge", "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=120, env=env, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    agent, base = report["figures"]["agent"], report["figures"]["baseline"]
    assert agent["samples_per_s"] > 0 and base["samples_per_s"] > 0
    assert agent["samples_per_message"] >= 100  # many samples per DDATA
    assert base["samples_per_message"] == 1.0
    assert report["ratios"]["samples_per_s"]["value"] == agent["samples_per_s"] / base["samples_per_s"]
    assert report["machine"]["cores"] == os.cpu_count()
    assert "samples/s" in proc.stdout and "ratio:" in proc.stdout
