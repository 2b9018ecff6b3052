"""`zhizao bench oee` runs end to end on a small cluster and reports figures against its baseline."""

from __future__ import annotations

from click.testing import CliRunner

from zhizao.cli import cli


def test_bench_oee_small_run_reports_api_and_baseline(database_url: str) -> None:
    result = CliRunner().invoke(cli, ["bench", "oee", "--database-url", database_url, "-n", "10", "--scale", "1",
                                       "--days", "2"])
    assert result.exit_code == 0, result.output
    assert "42 machines, 2 days of windows stored" in result.output
    assert "/api/v1/oee cluster 24 h" in result.output and "baseline: kernel over samples" in result.output
    assert "faster at p99" in result.output
