"""`zhizao bench ingest --quick` runs against the real PostgreSQL and reports both rates and the ratio."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from zhizao.bench.harness import CREATED_DATABASES
from zhizao.cli import cli


def test_bench_ingest_quick_reports_rates_ratio_and_machine(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHIZAO_DATABASE_URL", database_url)
    out = tmp_path / "ingest.json"
    result = CliRunner().invoke(cli, ["bench", "ingest", "--quick", "--samples", "60000", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    figures, ratios = report["figures"], report["ratios"]
    # Every pre-encoded sample was committed (the bench waits for the stored count, or fails).
    assert figures["samples"] == 60_000 and figures["messages"] == 30
    ingest, executemany = figures["ingest"]["samples_per_s"], figures["executemany"]["rows_per_s"]
    assert ingest > 0 and executemany > 0
    assert ratios["ingest_vs_executemany"]["value"] == ingest / executemany
    # The server floor (same rows moved inside the server) and the ceiling ratio it gives.
    floor = figures["server_floor"]["rows_per_s"]
    assert floor > 0 and ratios["ceiling_vs_executemany"]["value"] == floor / executemany
    assert "server floor" in result.output
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    assert report["machine"]["postgresql"]["server"]
    assert "ratio" in result.output and "executemany" in result.output
    # The bench drops the temporary databases it created.
    assert len(CREATED_DATABASES) >= 2
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", [CREATED_DATABASES])
        assert rows.fetchall() == []
