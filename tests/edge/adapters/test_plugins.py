"""Adapters installed as distributions of their own: an example plugin passes check_adapter; a broken one is isolated.

Both live in this folder (example_plugin/, broken_plugin/) with their own pyproject.toml. They are installed
with pip (offline, no build isolation, into a --target folder) and used from a subprocess whose PYTHONPATH
holds that folder, so their entry points sit next to ours exactly as after `pip install` of a wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).parent
CASES = HERE.parent.parent / "edge" / "cases"
BROKEN_REPORT = (
    "adapter plugin 'broken' (entry point broken = 'zhizao_broken_missing:BrokenAdapter') failed to load: "
    "ModuleNotFoundError: No module named 'zhizao_broken_missing'"
)


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of a Python that has zhizao plus the example and the broken adapter distributions installed."""
    root = tmp_path_factory.mktemp("plugins")
    sources = []
    for name in ("example_plugin", "broken_plugin"):
        # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
        shutil.copytree(HERE / name, root / name)
        sources.append(str(root / name))
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(site), *sources],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert (site / "zhizao_textfile").is_dir()
    env = {k: v for k, v in os.environ.items() if k != "ZHIZAO_MQTT_URL"}
    return {**env, "PYTHONPATH": str(site)}


def python(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter with the plugins installed."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=180, cwd=HERE)


def test_example_plugin_passes_check_adapter(plugin_env: dict[str, str]) -> None:
    out = python(plugin_env, """
        from zhizao.edge.adapters.base import installed_adapters, load_adapter
        from zhizao.edge.adapters.testing import CHECKS, check_adapter
        from zhizao_textfile.testing import TextFileHarness

        assert installed_adapters()["textfile"] == "zhizao_textfile:TextFileAdapter", installed_adapters()
        report = check_adapter(load_adapter("textfile"), TextFileHarness())
        assert report.passed == CHECKS, report
        print(report)
    """)
    assert out.returncode == 0, out.stderr
    assert "adapter 'textfile': 23 conformance checks passed" in out.stdout


def test_broken_plugin_is_reported_by_name_and_affects_nothing_else(plugin_env: dict[str, str]) -> None:
    out = python(plugin_env, """
        import sys
        from pathlib import Path
        from zhizao.edge.adapters.base import AdapterLoadError, installed_adapters, load_adapter, load_adapters
        from zhizao.edge.config import load_agent_config

        assert sorted(installed_adapters()) == ["broken", "opcua", "textfile"], installed_adapters()
        # A config naming only opcua loads only opcua: the other plugins are never imported.
        config = load_agent_config(Path("../cases/valid-two-machines/agent.yaml"))
        assert [a.type for a in config.adapters] == ["opcua"]
        assert "zhizao_textfile" not in sys.modules
        loaded, broken = load_adapters(["textfile", "broken", "opcua"])
        assert sorted(loaded) == ["opcua", "textfile"] and sorted(broken) == ["broken"]
        try:
            load_adapter("broken")
        except AdapterLoadError as exc:
            assert exc.name == "broken" and exc.value == "zhizao_broken_missing:BrokenAdapter"
            assert isinstance(exc.cause, ModuleNotFoundError)
            print(exc)
        else:
            raise SystemExit("the broken plugin loaded")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == BROKEN_REPORT


def test_agent_refuses_a_broken_or_missing_plugin_by_name(plugin_env: dict[str, str]) -> None:
    out = python(plugin_env, """
        import asyncio
        from pathlib import Path
        from zhizao.edge.agent import AgentError, run_agent
        from zhizao.edge.config import load_agent_config

        config = load_agent_config(Path("../cases/valid-two-machines/agent.yaml"))
        for kind in ("broken", "nope"):
            # A plugin that broke after check-config passed: the agent must still name it, before connecting.
            adapter = config.adapters[0].model_copy(update={"type": kind})
            try:
                asyncio.run(run_agent(config.model_copy(update={"adapters": (adapter,)})))
            except AgentError as exc:
                print(exc)
            else:
                raise SystemExit(f"the agent ran with adapter type {kind!r}")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"adapters[0].type: {BROKEN_REPORT}",
        "adapters[0].type: no adapter 'nope' is installed (known: broken, opcua, textfile)",
    ]


def test_check_config_names_the_broken_plugin(plugin_env: dict[str, str], tmp_path: Path) -> None:
    good = CASES / "valid-two-machines" / "agent.yaml"
    bad = tmp_path / "broken.yaml"
    bad.write_text(good.read_text(encoding="utf-8").replace("type: opcua", "type: broken"), encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "zhizao", "edge", "check-config", str(good), str(bad)],
                         env=plugin_env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"OK {good} (2 machines" in out.stdout
    assert f"FAIL {bad}\n  adapters[0].type: {BROKEN_REPORT}\n" in out.stdout


def test_unknown_adapter_types_are_neither_loaded_nor_broken() -> None:
    from zhizao.edge.adapters.base import load_adapter, load_adapters
    from zhizao.edge.adapters.opcua import OpcUaAdapter

    assert load_adapters(["nope", "opcua", "opcua"]) == ({"opcua": OpcUaAdapter}, {})
    with pytest.raises(KeyError, match=r"no adapter 'nope' is installed \(installed: opcua"):
        load_adapter("nope")
