"""The series benchmark runs end to end (a few requests) and cleans up its scratch database."""

from __future__ import annotations

import psycopg
from click.testing import CliRunner

from zhizao.bench.series import bench_series


def test_series_bench_smoke(database_url: str) -> None:
    result = CliRunner().invoke(bench_series, ["--database-url", database_url, "-n", "5"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.startswith("  ")}
    assert "points 1440" in lines["rollup_1m"] and "points 1440" in lines["date_bin_raw"]
    assert "points 10000" in lines["raw_page_10k"]
    assert "faster at p50" in result.output
    with psycopg.connect(database_url) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'zhizao_bench_series_%'").fetchone()
    assert left == (0,)
