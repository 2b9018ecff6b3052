"""`zhizao bench monitor` runs end to end on a short simulated span and reports every figure it promises."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from zhizao.cli import cli


def test_bench_monitor_short_run_reports_faults_false_alarms_eemua_cpu(database_url: str, tmp_path: Path) -> None:
    out = tmp_path / "monitor.json"
    result = CliRunner().invoke(cli, ["bench", "monitor", "--database-url", database_url, "--days", "1",
                                       "--dt", "300", "--ingest-samples", "10000", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "42 machines" in result.output and "false alarms" in result.output and "EEMUA 191" in result.output
    fig = json.loads(out.read_text())["figures"]
    assert set(fig["faults"]) == {"bearing_wear", "tool_wear", "sensor_drift", "jam_bursts"}
    assert fig["faults"]["tool_wear"]["failures"] > 0  # 120- and 180-minute tool lives end within a day
    assert set(fig["eemua"]) == {"sh-lingang", "js-suzhou", "zj-shaoxing", "ah-hefei"}
    assert fig["run"]["samples"] > 2_000 and fig["cpu"]["per_million_samples_s"] > 0
    assert fig["ingest"]["monitored"]["monitored_samples"] == 10_000 and "ingest CPU" in result.output
