"""Every seed file validates, `zhizao seeds check/show` work, and invalid seeds name the path and value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from zhizao.broker.contract.calendar import CalendarClock
from zhizao.seeds import SEEDS_DIR, ScenarioError, load_scenario, load_timeline
from zhizao.seeds.cli import seeds
from zhizao.seeds.model import Scenario


def test_packaged_cluster_matches_the_brief() -> None:
    sc = load_scenario()
    assert [s.id for s in sc.sites] == ["sh-lingang", "js-suzhou", "zj-shaoxing", "ah-hefei"]
    assert {s.member for s in sc.sites} == {"Shanghai", "Jiangsu", "Zhejiang", "Anhui"}
    for site in sc.sites:
        assert site.timezone == "Asia/Shanghai"
        assert 2 <= len(site.lines) <= 3
        for line in site.lines:
            assert 3 <= len(line.machines) <= 6
    kinds = {f.kind for s in sc.sites for ln in s.lines for m in ln.machines for f in m.faults}
    assert kinds == {"bearing_wear", "tool_wear", "sensor_drift", "jam_bursts"}


def test_seeds_check_validates_every_seed_file() -> None:
    result = CliRunner().invoke(seeds, ["check"])
    assert result.exit_code == 0, result.output
    files = sorted(p for p in SEEDS_DIR.rglob("*.yaml"))
    assert len(files) >= 2
    for path in files:
        assert f"{path}: " in result.output
    assert "cluster.yaml: scenario ok (4 sites" in result.output
    assert "v1-vorne.yaml: timeline ok (9 segments, 480 min)" in result.output


def test_invalid_scenario_names_path_and_value(tmp_path: Path) -> None:
    data = yaml.safe_load((SEEDS_DIR / "cluster.yaml").read_text())
    data["sites"][1]["lines"][0]["machines"][2]["ideal_rate_per_min"] = -4
    data["sites"][0]["lines"][1]["machines"][0]["faults"][0]["load_signal"] = "Load/Nope"
    data["sites"][2]["lines"][0]["machines"][0]["colour"] = "red"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError) as info:
        load_scenario(bad)
    problems = info.value.problems
    assert "sites[1].lines[0].machines[2].ideal_rate_per_min: -4 Input should be greater than 0" in problems
    assert (
        "sites[0].lines[1].machines[0].faults[0].load_signal: 'Load/Nope' is not one of this machine's signals"
        in problems
    )
    assert any(p.startswith("sites[2].lines[0].machines[0].colour: 'red'") for p in problems)
    result = CliRunner().invoke(seeds, ["check", str(bad)])
    assert result.exit_code != 0
    assert "ideal_rate_per_min: -4" in result.output and "1 of 1 seed files are invalid" in result.output


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"sites": [{"id": "Bad_Id"}]}, "sites[0].id: 'Bad_Id' not a valid id (lowercase letters, digits and '-'"),
        (
            {"sites": [{"timezone": "Mars/Olympus"}]},
            "sites[0].timezone: 'Mars/Olympus' is not an IANA time zone",
        ),
        (
            {"sites": [{"state_classes": {"planned": [150000, 12345]}}]},
            "planned[1]: 12345 is not a base stop code",
        ),
        (
            {"sites": [{"lines": [{"machines": [{"behaviour": {"failure_code": 7}}]}]}]},
            "sites[0].lines[0].machines[0].behaviour.failure_code: 7 is not a stop code",
        ),
    ],
)
def test_model_errors(patch: dict[str, object], message: str) -> None:
    base = yaml.safe_load((SEEDS_DIR / "cluster.yaml").read_text())
    base["sites"] = base["sites"][:1]
    _merge(base, patch)
    with pytest.raises(ScenarioError) as info:
        from pydantic import ValidationError

        from zhizao.seeds.model import format_validation_error

        try:
            Scenario.model_validate(base)
        except ValidationError as exc:
            raise ScenarioError("patched", format_validation_error(exc)) from exc
    assert any(message in p for p in info.value.problems), info.value.problems


def _merge(into: dict[str, object], patch: dict[str, object]) -> None:
    for key, value in patch.items():
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            target = into[key]
            assert isinstance(target, list)
            for i, item in enumerate(value):
                _merge(target[i], item)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)  # type: ignore[arg-type]
        else:
            into[key] = value


def test_duplicate_machine_id_within_a_site() -> None:
    data = yaml.safe_load((SEEDS_DIR / "cluster.yaml").read_text())
    data["sites"][0]["lines"][1]["machines"][0]["id"] = "cnc-1-m01"
    with pytest.raises(
        ValueError, match=r"lines\[1\]\.machines\[0\]\.id: 'cnc-1-m01' is not unique within the site"
    ):
        Scenario.model_validate(data)


def test_invalid_timeline_segment(tmp_path: Path) -> None:
    path = tmp_path / "tl.yaml"
    path.write_text(
        "name: x\nmachines: [a/b/c]\nsegments:\n  - {duration_s: 60, state: 2, stop_reason: 150000, produced: 5}\n"
    )
    with pytest.raises(
        ScenarioError, match=r"segments\[0\]\.produced: 5 must be 0 outside Execute \(state 2\)"
    ):
        load_timeline(path)
    path.write_text("name: x\nmachines: [a/b/c]\nsegments:\n  - {duration_s: 60, state: 9}\n")
    with pytest.raises(ScenarioError, match=r"segments\[0\]\.stop_reason: 0 is not a stop code"):
        load_timeline(path)


def test_seeds_show_prints_the_tree() -> None:
    result = CliRunner().invoke(seeds, ["show"])
    assert result.exit_code == 0, result.output
    assert "sh-lingang" in result.output and "cnc-1-m01" in result.output
    assert "pick-and-place" in result.output and "60/min" in result.output


def test_calendar_breaks_and_no_shift() -> None:
    site = load_scenario().sites[0]  # sh-lingang: three shifts Mon-Sat, breaks, holidays
    clock = CalendarClock(site.calendar, site.timezone)

    def at(iso: str) -> int:
        from datetime import datetime

        return clock.code_at(int(datetime.fromisoformat(iso).timestamp() * 1000))

    assert at("2026-11-26T09:00+08:00") == 0  # Thursday, shift A
    assert at("2026-11-26T10:05+08:00") == 150000  # short break
    assert at("2026-11-26T23:59+08:00") == 0  # shift B
    assert at("2026-11-29T10:00+08:00") == 160000  # Sunday
    assert at("2026-10-03T10:00+08:00") == 160000  # National Day
    assert at("2026-11-28T23:59+08:00") == 0  # Saturday's shift B
    assert at("2026-11-29T00:30+08:00") == 160000  # shift C does not run on Sunday


def test_shift_windows_in_local_time() -> None:
    from datetime import date, datetime

    site = load_scenario().sites[1]  # js-suzhou: Day 08:00 12 h Mon-Sat, Night 20:00 12 h Mon-Fri
    clock = CalendarClock(site.calendar, site.timezone)

    def ms(iso: str) -> int:
        return int(datetime.fromisoformat(iso).timestamp() * 1000)

    assert clock.shifts_on(date(2026, 11, 27)) == [  # a Friday
        ("Day", ms("2026-11-27T08:00+08:00"), ms("2026-11-27T20:00+08:00")),
        ("Night", ms("2026-11-27T20:00+08:00"), ms("2026-11-28T08:00+08:00")),
    ]
    assert [s[0] for s in clock.shifts_on(date(2026, 11, 28))] == ["Day"]  # Saturday: no night shift
    assert clock.shifts_on(date(2026, 10, 2)) == []  # National Day
