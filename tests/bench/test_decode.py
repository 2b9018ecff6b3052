"""`zhizao bench decode`: pysparkplug's high-level decoders read every message of a short seeded cluster run
(births, DATA with their birth, deaths of the clean stop) with no error and the same values as our codec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from zhizao.cli import cli


@pytest.mark.slow
def test_bench_decode_reads_every_message_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "decode.json"
    result = CliRunner().invoke(cli, ["bench", "decode", "--seconds", "30", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())["figures"]
    assert figures["errors"] == 0 and figures["value_mismatches"] == 0
    kinds = figures["messages_by_type"]
    assert kinds["NBIRTH"] >= 9 and kinds["DBIRTH"] >= kinds["NBIRTH"] and kinds["DDATA"] > 9 * 30
    assert kinds["NDEATH"] >= 9  # the clean stop, read too
    assert figures["data_values_compared"] > 1000
