"""The distribution: one top-level import name, and every third-party import declared where its command needs it."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# Modules that may import an extra's packages, and which extra; everything else may use only the base set.
EXTRA_OF = {
    "zhizao/bench/": "bench",
    "broker/embedded.py": "embedded",
    "cloud/storage/embedded.py": "embedded",
}
COMPONENTS = ("zhizao", "edge", "cloud", "broker", "analytics", "seeds")
# Tools a module imports on purpose without declaring them, with why. pysparkplug is the independent decoder of
# `zhizao bench decode`; its metadata pins paho-mqtt<2, so it is installed with --no-deps (./dev does it for the
# tests) and the command says so when it is missing (`_require_pysparkplug`).
UNDECLARED_TOOLS = {"zhizao/bench/decode.py": {"pysparkplug"}}


def _dist_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _declared(extra: str | None) -> set[str]:
    names = {_dist_name(r) for r in PYPROJECT["project"]["dependencies"]}
    if extra:
        names |= {_dist_name(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]}
    return names


def _product_modules() -> list[Path]:
    files: list[Path] = []
    for top in COMPONENTS:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if top == "zhizao" and rel.split("/")[1] in COMPONENTS:
                continue  # the symlinks to the component folders, seen through their real paths instead
            files.append(path)
    return files


def _third_party_imports(path: Path) -> set[str]:
    tops: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            tops |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return {t for t in tops if t not in sys.stdlib_module_names and t != "zhizao"}


def test_every_third_party_import_is_declared_by_the_base_or_the_commands_extra() -> None:
    import_to_dist = importlib.metadata.packages_distributions()
    problems = []
    for path in _product_modules():
        rel = path.relative_to(ROOT).as_posix()
        extra = next((e for prefix, e in EXTRA_OF.items() if rel.startswith(prefix)), None)
        allowed = _declared(extra)
        for top in sorted(_third_party_imports(path) - UNDECLARED_TOOLS.get(rel, set())):
            dists = {d.lower().replace("_", "-") for d in import_to_dist.get(top, [])}
            assert dists, f"{rel}: imports {top!r}, which no installed distribution provides"
            if not dists & allowed:
                where = f"the {extra!r} extra" if extra else "the base dependencies"
                problems.append(f"{rel}: imports {top!r} ({', '.join(sorted(dists))}), not in {where}")
    assert not problems, "\n".join(problems)


def test_the_wheel_installs_exactly_one_top_level_name(tmp_path: Path) -> None:
    # Built from a copy of the tree (symlinks kept as links), so no build/ folder is left in the repository and
    # no stale build output can slip into the wheel.
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".zhizao", "test-artifacts", "tests"))  # fmt: skip
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = out.glob("zhizao-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"zhizao"}, sorted(tops)
    for component in COMPONENTS[1:]:
        assert f"zhizao/{component}/__init__.py" in names, f"zhizao.{component} missing from the wheel"
    assert "zhizao/cloud/storage/migrations/0001_core.sql" in names
    assert "zhizao/seeds/cluster.yaml" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".nbi", ".nbc"))]
