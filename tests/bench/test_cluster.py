"""`zhizao bench cluster` runs the seeded cluster end to end and reports per-agent figures without loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from zhizao.cli import cli


@pytest.mark.slow
def test_bench_cluster_reports_no_loss(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    result = CliRunner().invoke(cli, ["bench", "cluster", "--seconds", "10", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())["figures"]
    assert figures["agents"] == 10
    assert figures["missing"] == 0 and figures["live_duplicates"] == 0
    assert figures["produced_checked"] > 300
    assert all(rate > 0 for rate in figures["samples_per_s"].values())
