"""`zhizao edge check-config | browse | bootstrap | run`, and the seeded agent configs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.support.simserver import ServerThread, free_port
from tests.support.spb_capture import Capture
from zhizao.edge.bootstrap import agent_configs_for_scenario
from zhizao.edge.cli import edge
from zhizao.edge.config import load_agent_config
from zhizao.seeds import SEEDS_DIR, load_scenario

CASES = Path(__file__).parent / "cases"
AGENTS = sorted((SEEDS_DIR / "agents").glob("*.yaml"))
REPO = Path(__file__).resolve().parents[2]


def test_check_config_ok_line() -> None:
    path = CASES / "valid-two-machines" / "agent.yaml"
    result = CliRunner().invoke(edge, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == f"OK {path} (2 machines, 9 signals)\n"


def test_check_config_reports_every_invalid_file() -> None:
    good = CASES / "valid-polling-sensors" / "agent.yaml"
    bad1, bad2 = CASES / "bad-node-id" / "agent.yaml", CASES / "missing-adapter" / "agent.yaml"
    result = CliRunner().invoke(edge, ["check-config", str(good), str(bad1), str(bad2)])
    assert result.exit_code == 1
    assert f"OK {good} (1 machines, 4 signals)" in result.output
    assert f"FAIL {bad1}\n  machines[0].signals[3].node_id: not an OPC UA node id ('ns=2;x=1')" in result.output
    assert "machines[1].adapter: no adapter with this name (known: 'sim') ('plc')" in result.output
    assert "2 of 3 config(s) invalid" in result.output


def test_check_config_missing_file() -> None:
    result = CliRunner().invoke(edge, ["check-config", "/nonexistent/agent.yaml"])
    assert result.exit_code == 1
    assert "cannot read the file" in result.output


def test_seeded_agents_cover_every_line_and_validate() -> None:
    scenario = load_scenario()
    lines = {line.id for site in scenario.sites for line in site.lines}
    assert {p.stem for p in AGENTS} == lines
    result = CliRunner().invoke(edge, ["check-config", *map(str, AGENTS)])
    assert result.exit_code == 0, result.output
    assert result.output.count("OK ") == len(lines)
    for path in AGENTS:
        config = load_agent_config(path)
        assert config.edge_node == path.stem
        assert config.adapters[0].security.mode == "None"  # type: ignore[attr-defined]
        assert str(config.outbox.dir) == f".zhizao/edge/{path.stem}/outbox"


def test_seeded_agents_match_the_generator() -> None:
    """seeds/agents/*.yaml are `zhizao edge bootstrap` output for the packaged scenario (no drift)."""
    generated = agent_configs_for_scenario(load_scenario())
    for path in AGENTS:
        assert yaml.safe_load(path.read_text(encoding="utf-8")) == generated[path.stem], path


def test_bootstrap_writes_valid_configs(tmp_path: Path) -> None:
    result = CliRunner().invoke(edge, ["bootstrap", "--out", str(tmp_path), "--endpoint", "opc.tcp://sim:4841/zhizao/sim"])
    assert result.exit_code == 0, result.output
    files = sorted(tmp_path.glob("*.yaml"))
    assert len(files) == len(AGENTS)
    assert load_agent_config(files[0]).adapters[0].endpoint == "opc.tcp://sim:4841/zhizao/sim"  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    srv = ServerThread(port=free_port(), nested=True)
    try:
        yield srv
    finally:
        srv.close()


def test_browse_writes_a_config_that_passes_check_config(server: ServerThread, tmp_path: Path) -> None:
    out = tmp_path / "browsed.yaml"
    result = CliRunner().invoke(edge, ["browse", server.url, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "next: zhizao edge check-config" in result.output
    check = CliRunner().invoke(edge, ["check-config", str(out)])
    assert check.exit_code == 0, check.output
    config = load_agent_config(out)
    assert (config.site, config.edge_node) == ("sh-lingang", "cnc-1")
    assert [m.id for m in config.machines] == ["cnc-1-m01", "cnc-1-m02"]
    m1 = {s.metric: s for s in config.machines[0].signals}
    assert set(m1) == {"State", "Counts/Total", "Counts/Good", "Rate/Ideal", "Rate/Current", "Temperature/Spindle",
                       "Axis/Position"}  # a folder below the machine folds into it
    assert m1["Axis/Position"].node_id == "ns=2;s=sh-lingang/cnc-1/cnc-1-m01/Axis/Position"
    assert m1["State"].map == "packml_state"
    assert m1["State"].stop_reason_node_id == "ns=2;s=sh-lingang/cnc-1/cnc-1-m01/StopReason"
    assert m1["Counts/Good"].defective_node_id == "ns=2;s=sh-lingang/cnc-1/cnc-1-m01/ProdDefectiveCount"


def test_browse_the_simulator_matches_the_seeded_agent(tmp_path: Path) -> None:
    """Browsing the real simulator below one line finds the same nodes as that line's seeded agent config."""
    from zhizao.edge.sim.server import SimServer

    port = free_port()
    sim = SimServer(load_scenario(), port, seed=3)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(sim.start(), loop).result(60)
    try:
        out = tmp_path / "cnc-1.yaml"
        result = CliRunner().invoke(edge, ["browse", sim.endpoint, "--under", "sh-lingang/cnc-1", "--out", str(out)])
        assert result.exit_code == 0, result.output
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    browsed = load_agent_config(out)
    seeded = load_agent_config(SEEDS_DIR / "agents" / "cnc-1.yaml")
    assert (browsed.site, browsed.edge_node) == (seeded.site, seeded.edge_node)

    def nodes(config: object) -> set[tuple[str, str, str]]:
        return {(m.id, s.metric, s.node_id) for m in config.machines for s in m.signals}  # type: ignore[attr-defined]

    assert nodes(browsed) == nodes(seeded)


def test_browse_unreachable_server_fails_cleanly() -> None:
    result = CliRunner().invoke(edge, ["browse", f"opc.tcp://127.0.0.1:{free_port()}/x"])
    assert result.exit_code == 1
    assert "cannot browse" in result.output


def test_run_refuses_an_invalid_config() -> None:
    result = CliRunner().invoke(edge, ["run", str(CASES / "unknown-key" / "agent.yaml")])
    assert result.exit_code == 1
    assert "adapters[0].subscriptoin: unknown key" in result.output


def test_run_stops_cleanly_on_ctrl_c(server: ServerThread, tmp_path: Path, mqtt_url: str, unique_id: str) -> None:
    data = yaml.safe_load((CASES / "valid-two-machines" / "agent.yaml").read_text(encoding="utf-8"))
    data.update(site=unique_id, edge_node="cli-run", outbox={"dir": str(tmp_path / "outbox")})
    data["mqtt"]["url"] = mqtt_url
    data["adapters"][0]["endpoint"] = server.url
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = {**os.environ, "ZHIZAO_LOG_LEVEL": "WARNING"}
    env.pop("ZHIZAO_MQTT_URL", None)
    cap = Capture(mqtt_url, [f"spBv1.0/{unique_id}/#"])
    try:
        with subprocess.Popen([str(Path(sys.executable).parent / "zhizao"), "edge", "run", str(config)], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            try:
                assert proc.stdout is not None
                first = proc.stdout.readline()
                assert f"edge agent {unique_id}/cli-run: 2 machines, 9 signals" in first, first
                cap.wait_for(lambda ms: any(m.kind == "DDATA" for m in ms), timeout=30, what="DDATA from the agent")
                proc.send_signal(signal.SIGINT)
                rest, _ = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)  # reaped: a killed child left unwaited stays a zombie
    finally:
        cap.close()
    assert proc.returncode == 0, first + rest
    assert rest.strip().endswith("stopped"), rest
    assert (tmp_path / "outbox").is_dir()
