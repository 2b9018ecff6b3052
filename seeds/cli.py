"""`zhizao seeds`: validate seed files and show the cluster tree."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from zhizao.seeds import SEEDS_DIR, ScenarioError, load_scenario, load_timeline


def _kind_of(path: Path) -> str:
    parent = path.parent.name
    if parent == "agents":
        return "agent"
    if parent == "timelines":
        return "timeline"
    if path.stem.startswith("network"):
        return "network"
    if parent == "monitoring":
        return "monitoring"
    return "scenario"


def _check_agent(path: Path) -> str:
    # Lazy import: edge imports seeds, so seeds must not import edge at module level.
    if importlib.util.find_spec("zhizao.edge.config") is None:
        return "skipped (edge.config is not installed)"
    from zhizao.edge import config as edge_config

    edge_config.load_agent_config(path)
    return "agent config ok"


def _check_monitoring(path: Path) -> str:
    # Lazy import, as for agents: the rule models live with the cloud's monitoring service.
    if importlib.util.find_spec("zhizao.cloud.monitoring") is None:
        return "skipped (cloud.monitoring is not installed)"
    from zhizao.cloud.monitoring.rules import seed_rules

    return f"monitoring rules ok ({len(seed_rules(path.read_text(encoding='utf-8')))} rules)"


def _check_one(path: Path) -> str:
    kind = _kind_of(path)
    if kind == "agent":
        return _check_agent(path)
    if kind == "monitoring":
        return _check_monitoring(path)
    if kind == "timeline":
        tl = load_timeline(path)
        return f"timeline ok ({len(tl.segments)} segments, {tl.duration_s / 60:g} min)"
    if kind == "network":
        from zhizao.seeds.network import load_network

        net = load_network(path)
        return (f"network ok ({len(net.products)} products, {len(net.families)} families,"
                f" {len(net.line_kinds)} line kinds, {len(net.transport)} routes)")
    sc = load_scenario(path)
    n_machines = len(sc.machine_paths())
    return f"scenario ok ({len(sc.sites)} sites, {sum(len(s.lines) for s in sc.sites)} lines, {n_machines} machines)"


@click.group()
def seeds() -> None:
    """Check and inspect the scenario seeds."""


@seeds.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
def check(files: tuple[Path, ...]) -> None:
    """Validate seed files (default: every seeds/**/*.yaml); one line per file, non-zero exit on any error."""
    paths = list(files) or sorted(p for p in SEEDS_DIR.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    failed = 0
    for path in paths:
        try:
            click.echo(f"{path}: {_check_one(path)}")
        except ScenarioError as exc:
            failed += 1
            for problem in exc.problems:
                click.echo(f"{path}: {problem}", err=True)
        except ValueError as exc:  # edge.config.ConfigError derives from ValueError and lists `problems`
            failed += 1
            for problem in getattr(exc, "problems", None) or [str(exc)]:
                click.echo(f"{path}: {problem}", err=True)
    if failed:
        raise click.ClickException(f"{failed} of {len(paths)} seed files are invalid")
    click.echo(
        f"all {len(paths)} seed files are valid; next: `zhizao seeds show` or `zhizao sim --port 4840`"
    )


@seeds.command()
@click.option(
    "--scenario",
    "scenario_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Scenario file (default: the packaged cluster.yaml).",
)
def show(scenario_path: Path | None) -> None:
    """Print the cluster as a tree: sites > lines > machines with kind and ideal rate."""
    try:
        sc = load_scenario(scenario_path)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{sc.name}: {sc.description}".rstrip(": "))
    for site in sc.sites:
        click.echo(f"  {site.id}  {site.name} [{site.member}, {site.timezone}]")
        for line in site.lines:
            click.echo(f"    {line.id}  {line.name}")
            for m in line.machines:
                click.echo(f"      {m.id:<12} {m.kind:<30} {m.ideal_rate_per_min:g}/min")
