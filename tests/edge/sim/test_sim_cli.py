"""`zhizao sim` runs the server from the command line and refuses bad input with path and value."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from zhizao.cli import cli
from zhizao.edge.sim.record import read_record


def test_zhizao_sim_serves_and_records(free_port: int, make_scenario: Any, tmp_path: Path) -> None:
    scenario_file = tmp_path / "one.yaml"
    scenario_file.write_text(yaml.safe_dump(make_scenario(1).model_dump(mode="json")))
    record = tmp_path / "run.rec"
    args = ["sim", "--scenario", str(scenario_file), "--port", str(free_port), "--speed", "20", "--seed", "3",
            "--dt-ms", "100", "--record", str(record), "--duration", "1.5"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"serving 1 machines (9 variables) at opc.tcp://127.0.0.1:{free_port}/zhizao/sim" in result.output
    assert "values/s" in result.output
    ids, idx, ts, _ = read_record(record)
    assert ids[0] == "ns=2;s=s1/l1/m01/State" and len(idx) > 9 and ts.max() > ts.min()


def test_zhizao_sim_rejects_bad_input(free_port: int, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsites: []\n")
    result = CliRunner().invoke(cli, ["sim", "--scenario", str(bad), "--port", str(free_port)])
    assert result.exit_code != 0 and "sites: List should have at least 1 item" in result.output
    result = CliRunner().invoke(cli, ["sim", "--port", str(free_port), "--start", "2026-01-01T08:00"])
    assert result.exit_code != 0 and "'2026-01-01T08:00' has no UTC offset" in result.output
    result = CliRunner().invoke(cli, ["sim", "--port", str(free_port), "--site", "mars"])
    assert result.exit_code != 0 and "'mars' is not a site of 'yrd-cluster'" in result.output


def test_zhizao_sim_port_in_use_is_a_clear_error(free_port: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port))
        taken.listen()
        result = CliRunner().invoke(cli, ["sim", "--site", "ah-hefei", "--port", str(free_port)])
    assert result.exit_code != 0
    assert f"cannot listen on opc.tcp://127.0.0.1:{free_port}/zhizao/sim" in result.output
