"""`zhizao bench plan` end to end on the committed Vallada & Ruiz instances and a small cluster instance."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from zhizao.cli import cli

DATA = Path(__file__).resolve().parents[1] / "cloud" / "planning" / "data"


def test_bench_plan_reports_rpd_greedy_ratio_and_replan(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    args = ["bench", "plan", "--instances", str(DATA), "--bounds", str(DATA / "optimal.csv"), "--limit", "1",
            "--orders", "80", "--cluster-limit", "1", "--repair-limit", "0.5", "--resolve-limit", "1",
            "--json", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["bench"] == "plan"
    vr = doc["figures"]["vr"]
    assert vr["summary"]["instances"] == vr["summary"]["with_bound"] == 5
    assert vr["summary"]["mean_rpd"] == 0.0 and vr["summary"]["proved_optimal"] == 5
    assert {r["instance"] for r in vr["instances"]} == {p.stem for p in DATA.glob("I_*.txt")}
    cluster = doc["figures"]["cluster"]
    assert cluster["lots"] == 80 and cluster["lines"] == 10
    assert cluster["greedy_source"]
    ratio = doc["ratios"]["weighted_tardiness/greedy"]
    assert ratio["numerator"] == "cluster.solver.weighted_tardiness_h"
    greedy, ours = cluster["greedy"]["weighted_tardiness_h"], cluster["solver"]["weighted_tardiness_h"]
    assert greedy > 0 and ratio["value"] == ours / greedy
    replan = doc["figures"]["replan"]
    assert replan["repair_s"] > 0 and replan["gap_pct"] >= 0.0
    assert replan["repaired"]["weighted_tardiness_h"] <= replan["old_plan_on_failed_problem"]["weighted_tardiness_h"]
    assert "vr: 5 instances, mean RPD +0.000%" in result.output and "replan:" in result.output
