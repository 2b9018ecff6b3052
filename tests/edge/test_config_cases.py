"""Golden config cases: every folder under cases/ holds agent.yaml and the expected signals or error lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.edge.config import ConfigError, load_agent_config
from zhizao.edge.mapping import build_mapping

CASES = Path(__file__).parent / "cases"
CASE_DIRS = sorted(p for p in CASES.iterdir() if p.is_dir())


def test_there_are_valid_and_invalid_cases() -> None:
    valid = [p for p in CASE_DIRS if (p / "expected.json").is_file()]
    invalid = [p for p in CASE_DIRS if (p / "expected_error.txt").is_file()]
    assert len(valid) >= 2 and len(invalid) >= 10
    assert len(valid) + len(invalid) == len(CASE_DIRS), "every case has exactly one expectation file"


@pytest.mark.parametrize("case", CASE_DIRS, ids=[p.name for p in CASE_DIRS])
def test_case(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZHIZAO_MQTT_URL", raising=False)
    config_file = case / "agent.yaml"
    if (case / "expected_error.txt").is_file():
        expected = (case / "expected_error.txt").read_text(encoding="utf-8").splitlines()
        with pytest.raises(ConfigError) as info:
            load_agent_config(config_file)
        assert info.value.problems == expected
        # the exception text carries the file and every problem line
        assert str(config_file) in str(info.value)
        assert all(line in str(info.value) for line in expected)
        return
    expected_json = json.loads((case / "expected.json").read_text(encoding="utf-8"))
    config = load_agent_config(config_file)
    mapping = build_mapping(config)
    assert config.machine_count() == expected_json["machines"]
    got = [[s.machine, s.metric, DataType(s.datatype).name, s.unit] for s in mapping.signals.signals]
    assert got == expected_json["signals"]
    assert {n: [s.metric for s in p.sources.signals] for n, p in mapping.plans.items()} == expected_json["sources"]


def test_mqtt_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIZAO_MQTT_URL", "mqtt://broker.example:11883")
    config = load_agent_config(CASES / "valid-two-machines" / "agent.yaml")
    assert config.mqtt.url == "mqtt://broker.example:11883"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the file"):
        load_agent_config(tmp_path / "nope.yaml")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"expected a mapping"):
        load_agent_config(path)


def test_config_is_frozen() -> None:
    config = load_agent_config(CASES / "valid-two-machines" / "agent.yaml")
    with pytest.raises(ValueError, match="frozen"):
        config.site = "other"  # type: ignore[misc]


def test_bad_mqtt_url_in_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHIZAO_MQTT_URL", "ftp://broker.example")
    with pytest.raises(ConfigError) as info:
        load_agent_config(CASES / "valid-two-machines" / "agent.yaml")
    assert info.value.problems == ["mqtt.url: ZHIZAO_MQTT_URL='ftp://broker.example': scheme must be mqtt:// or mqtts://"]


def test_metrics_listen_on_this_host_unless_told_otherwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZHIZAO_MQTT_URL", raising=False)
    valid = next(p / "agent.yaml" for p in CASE_DIRS if (p / "expected.json").is_file())
    assert str(load_agent_config(valid).metrics_host) == "127.0.0.1"
    for value, ok in (("0.0.0.0", True), ("::1", True), ("everywhere", False)):
        path = tmp_path / "agent.yaml"
        path.write_text(valid.read_text(encoding="utf-8") + f"\nmetrics_host: {value!r}\n", encoding="utf-8")
        if ok:
            assert str(load_agent_config(path).metrics_host) == value
        else:
            with pytest.raises(ConfigError, match="metrics_host"):
                load_agent_config(path)
