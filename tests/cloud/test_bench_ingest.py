"""`zhizao bench ingest --quick` runs against the real PostgreSQL and reports both rates and the ratio."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from zhizao.cli import cli
from zhizao.cloud.bench import CREATED_DATABASES


def test_bench_ingest_quick_reports_rates_ratio_and_machine(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHIZAO_DATABASE_URL", database_url)
    out = tmp_path / "ingest.json"
    result = CliRunner().invoke(cli, ["bench", "ingest", "--quick", "--samples", "60000", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    # Every pre-encoded sample was committed (the bench waits for the stored count, or fails).
    assert figures["samples"] == 60_000 and figures["messages"] == 30
    assert figures["ingest_samples_per_s"] > 0 and figures["baseline_rows_per_s"] > 0
    expected = round(figures["ingest_samples_per_s"] / figures["baseline_rows_per_s"], 1)
    assert abs(figures["ratio"] - expected) <= 0.1
    # The server floor (same rows moved inside the server) and the ceiling ratio it gives.
    assert figures["server_floor_rows_per_s"] > 0
    ceiling = round(figures["server_floor_rows_per_s"] / figures["baseline_rows_per_s"], 1)
    assert abs(figures["ceiling_ratio"] - ceiling) <= 0.1
    assert "server floor" in result.output
    assert figures["cores"] >= 1 and figures["cpu"]
    assert "ratio" in result.output and "executemany" in result.output
    # The bench drops the temporary databases it created.
    assert len(CREATED_DATABASES) >= 2
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", [CREATED_DATABASES])
        assert rows.fetchall() == []
