"""What the benchmarks share: one sentence naming the extra when an optional package is missing; ratios only
between figures of the same report."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zhizao.bench.harness import Report

# Runs the real command in a fresh interpreter in which importing one package fails, as without the extra.
_WITHOUT = """
import sys
from importlib.abc import MetaPathFinder

REFUSED = sys.argv[1]

class Refuse(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == REFUSED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Refuse())
from zhizao.cli import main
sys.argv = ["zhizao", "bench", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize(("package", "command", "what"), [
    ("pandas", ["kernels", "--quick"], "kernels"),
    ("httpx", ["series", "--database-url", "postgresql://127.0.0.1:1/unused"], "series"),
    ("playwright", ["live", "--database-url", "postgresql://127.0.0.1:1/unused", "--browser", sys.executable],
     "live --browser"),
])  # fmt: skip
def test_a_missing_extra_is_one_sentence_naming_it(package: str, command: list[str], what: str) -> None:
    proc = subprocess.run([sys.executable, "-c", _WITHOUT, package, *command], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (
        f"Error: zhizao bench {what} needs {package}, which is not installed here: pip install 'zhizao[bench]'"
    )
    assert proc.stdout == ""  # stopped before any measuring


def test_ratios_are_between_figures_of_the_same_report() -> None:
    report = Report("demo", figures={"ours": {"rate": 3.0}, "baseline": {"rate": 2.0}, "none": None})
    assert report.ratio("ours_vs_baseline", "ours.rate", "baseline.rate") == 1.5
    assert report.ratio("undefined", "ours.rate", "none") is None
    with pytest.raises(KeyError):
        report.ratio("elsewhere", "ours.rate", "other_run.rate")
    doc = report.to_json()
    assert set(doc) == {"schema", "bench", "machine", "figures", "ratios"}
    assert doc["ratios"]["ours_vs_baseline"] == {"value": 1.5, "numerator": "ours.rate",
                                                 "denominator": "baseline.rate"}
