"""`zhizao bench kernels --quick` runs end to end and writes the JSON schema the issue fixes."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from zhizao.cli import cli


def test_bench_kernels_quick_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "kernels.json"
    result = CliRunner().invoke(cli, ["bench", "kernels", "--quick", "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert {"cpu", "cores", "numba_threads"} <= set(doc["machine"])
    kernels = {r["kernel"] for r in doc["results"]}
    assert {"oee_fleet", "ewma_z", "cusum", "robust_z", "mahalanobis_t2", "vibration_features"} <= kernels
    for row in doc["results"]:
        assert row["unit"] in ("events/s", "samples/s")
        assert row["rate"] > 0
        assert set(row["vs"]) == {"pandas", "bottleneck", "reference", "memory_stream"}
        assert row["vs"]["reference"] > 1.0  # the kernel beats its plain twin
        assert all(v is None or v > 0 for v in row["vs"].values())
    assert doc["compile"]["cached_warm_start_s"] > 0
    assert "oee_fleet" in result.output  # the table
