"""`zhizao bench kernels --quick` runs end to end and writes the shared JSON report."""

from __future__ import annotations

import json
import math
from pathlib import Path

from click.testing import CliRunner

from zhizao.cli import cli


def test_bench_kernels_quick_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "kernels.json"
    result = CliRunner().invoke(cli, ["bench", "kernels", "--quick", "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["bench"] == "kernels" and {"cpu", "cores", "numba_threads", "memory_gib"} <= set(doc["machine"])
    kernels = doc["figures"]["kernels"]
    assert set(kernels) == {"oee_fleet", "ewma_z", "cusum", "robust_z", "robust_z_w1024", "mahalanobis_t2", "pca_t2q",
                            "value_novelty", "vibration_features"}
    for name, row in kernels.items():
        assert row["unit"] in ("events/s", "samples/s")
        assert row["rate"] > 0 and row["rate_1_thread"] > 0
        assert set(row["baselines"]) == {"pandas", "bottleneck", "reference", "memory_stream"}
        for other, rate in row["baselines"].items():
            # What the bench guarantees under any load: every baseline it ran was measured in this run, and
            # each ratio is the kernel's rate over it at full precision (a slow share of the memory copy's
            # rate is small, never rounded to 0). How large the ratios are depends on the machine.
            ratio = doc["ratios"].get(f"{name}/{other}")
            if rate is None:
                assert ratio is None and other in ("pandas", "bottleneck")
                continue
            assert ratio == {"value": row["rate"] / rate, "numerator": f"kernels.{name}.rate",
                             "denominator": f"kernels.{name}.baselines.{other}"}
            assert ratio["value"] > 0 and math.isfinite(ratio["value"])
    assert kernels["oee_fleet"]["baselines"]["pandas"] is not None
    assert kernels["robust_z"]["baselines"]["bottleneck"] is not None
    assert doc["figures"]["compile"]["cached_warm_start_s"] > 0
    assert "oee_fleet" in result.output  # the table


def test_bench_kernels_only_measures_the_named_rows(tmp_path: Path) -> None:
    out = tmp_path / "kernels.json"
    result = CliRunner().invoke(cli, ["bench", "kernels", "--quick", "--only", "robust_z", "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert set(doc["figures"]["kernels"]) == {"robust_z"}
    assert "compile" not in doc["figures"]
    assert set(doc["ratios"]) == {"robust_z/1_thread", "robust_z/pandas", "robust_z/bottleneck", "robust_z/reference",
                                  "robust_z/memory_stream"}
    assert doc["figures"]["kernels"]["robust_z"]["size"] == "500 samples x 1000 tags, window 64"


def test_bench_kernels_only_rejects_an_unknown_name() -> None:
    result = CliRunner().invoke(cli, ["bench", "kernels", "--only", "robust"])
    assert result.exit_code == 2
    assert "--only" in result.output and "'robust' is not a kernel" in result.output and "robust_z_w1024" in result.output
