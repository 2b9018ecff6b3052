"""Scenario seeds: the regional cluster (sites, lines, machines, calendars, fault profiles) and example agent configs."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from zhizao.seeds.model import Scenario, format_validation_error
from zhizao.seeds.timeline import Timeline

__all__ = ["SEEDS_DIR", "Scenario", "ScenarioError", "Timeline", "load_scenario", "load_timeline"]

SEEDS_DIR: Path = Path(str(importlib.resources.files("zhizao.seeds")))
"""The folder of the packaged seed files (cluster.yaml, timelines/, agents/)."""


class ScenarioError(ValueError):
    """A seed file that cannot be read or does not validate; the message names file, path and value."""

    def __init__(self, source: Path | str, problems: list[str]) -> None:
        self.source = str(source)
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _read_yaml(path: Path) -> object:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except OSError as exc:
        raise ScenarioError(path, [f"cannot read file ({exc.strerror})"]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ScenarioError(path, [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from exc


def load_scenario(path: Path | str | None = None) -> Scenario:
    """Load and validate a scenario file (default: the packaged `cluster.yaml`)."""
    source = Path(path) if path is not None else SEEDS_DIR / "cluster.yaml"
    data = _read_yaml(source)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, format_validation_error(exc)) from exc


def load_timeline(path: Path | str) -> Timeline:
    """Load and validate a scripted timeline file (e.g. `timelines/v1-vorne.yaml`)."""
    source = Path(path)
    data = _read_yaml(source)
    try:
        return Timeline.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, format_validation_error(exc)) from exc
