"""`zhizao edge`: run an agent, check agent configs without connecting, browse a server into a starter config."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click
import yaml

from zhizao.edge.config import ConfigError, load_agent_config


@click.group("edge")
def edge() -> None:
    """Run, check and bootstrap edge agents."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # asyncua logs every request at INFO; our own lines say each state change once (-vv shows asyncua's)
        logging.getLogger("asyncua").setLevel(logging.WARNING)


@edge.command("check-config")
@click.argument("configs", nargs=-1, required=True, type=click.Path(path_type=Path))
def check_config(configs: tuple[Path, ...]) -> None:
    """Validate agent config files without connecting to anything (exit 1 if any is invalid)."""
    failed = 0
    for path in configs:
        try:
            config = load_agent_config(path)
        except ConfigError as exc:
            failed += 1
            click.echo(f"FAIL {path}")
            for problem in exc.problems:
                click.echo(f"  {problem}")
            continue
        click.echo(f"OK {path} ({config.machine_count()} machines, {config.signal_count()} signals)")
    if failed:
        click.echo(f"{failed} of {len(configs)} config(s) invalid: fix the keys named above.", err=True)
        sys.exit(1)


@edge.command("run")
@click.argument("config_file", metavar="CONFIG", type=click.Path(path_type=Path))
def run(config_file: Path) -> None:
    """Run one edge agent (Ctrl-C or SIGTERM stops it cleanly, with NDEATH)."""
    try:
        config = load_agent_config(config_file)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    from zhizao.edge.agent import (  # lazy: paho, prometheus and the adapters load only here
        AgentError,
        run_agent,
    )

    click.echo(f"edge agent {config.site}/{config.edge_node}: {config.machine_count()} machines, "
               f"{config.signal_count()} signals -> {config.mqtt.effective_url()} (Ctrl-C to stop)")
    try:
        asyncio.run(run_agent(config, config_path=config_file))
    except KeyboardInterrupt:  # a Ctrl-C before the agent installed its own handler
        click.echo("stopped", err=True)
        sys.exit(130)
    except AgentError as exc:
        click.echo(f"edge agent stopped with errors: {exc}", err=True)
        sys.exit(1)
    click.echo("stopped")


@edge.command("browse")
@click.argument("url")
@click.option("--out", type=click.Path(path_type=Path), help="Write the config here (default: stdout).")
@click.option("--site", help="Site id (Sparkplug group); default: from the address space layout.")
@click.option("--edge-node", help="Edge node id; default: from the address space layout.")
@click.option("--mqtt-url", default="mqtt://127.0.0.1:1883", show_default=True, help="Broker URL for the config.")
@click.option("--username", help="OPC UA user for browsing.")
@click.option("--password", help="OPC UA password for browsing.")
@click.option("--under", help="Keep only objects below this path, e.g. sh-lingang/cnc-1 (one line per agent).")
@click.option("--max-nodes", default=100_000, show_default=True, help="Stop walking after this many nodes.")
def browse(url: str, out: Path | None, site: str | None, edge_node: str | None, mqtt_url: str,
           username: str | None, password: str | None, under: str | None, max_nodes: int) -> None:
    """Walk an OPC UA server (security None) and write a starter agent config for what it finds."""
    from zhizao.edge.adapters.base import AdapterError
    from zhizao.edge.adapters.opcua.browse import browse as walk
    from zhizao.edge.adapters.opcua.browse import starter_config
    from zhizao.edge.config import parse_agent_config

    click.echo(f"browsing {url} ...", err=True)
    try:
        objects = asyncio.run(walk(url, max_nodes=max_nodes, username=username, password=password))
    except AdapterError as exc:
        click.echo(f"cannot browse {url}: {exc}", err=True)
        sys.exit(1)
    if under:
        prefix = tuple(p for p in under.split("/") if p)
        objects = [o for o in objects if o.path[:len(prefix)] == prefix]
    if not objects:
        click.echo(f"no variables found under Objects{'/' + under if under else ''} on {url}", err=True)
        sys.exit(1)
    data = starter_config(objects, url, site=site, edge_node=edge_node, mqtt_url=mqtt_url)
    try:
        config = parse_agent_config(data, "<browsed config>")
    except ConfigError as exc:  # e.g. an invalid --site: say which option to fix
        click.echo(str(exc), err=True)
        sys.exit(1)
    packml = sum(1 for o in objects if o.is_packml())
    text = (f"# Starter agent config written by `zhizao edge browse {url}`.\n"
            f"# {packml} PackML machine(s), {len(objects) - packml} other object(s) with variables.\n"
            + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120))
    if out is None:
        click.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out} ({config.machine_count()} machines, {config.signal_count()} signals); "
                   f"next: zhizao edge check-config {out}", err=True)


@edge.command("bootstrap")
@click.option("--scenario", "scenario_path", type=click.Path(path_type=Path), default=None,
              help="Scenario YAML (default: the packaged cluster.yaml).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("seeds/agents"), show_default=True,
              help="Folder for the {line}.yaml files.")
@click.option("--endpoint", default="opc.tcp://127.0.0.1:4840/zhizao/sim", show_default=True,
              help="The simulator endpoint the agents read.")
@click.option("--mqtt-url", default="mqtt://127.0.0.1:1883", show_default=True, help="Broker URL for the configs.")
def bootstrap(scenario_path: Path | None, out_dir: Path, endpoint: str, mqtt_url: str) -> None:
    """Write one agent config per line of a scenario, pointing at the simulator."""
    from zhizao.edge.bootstrap import write_agent_configs
    from zhizao.seeds import ScenarioError, load_scenario

    try:
        scenario = load_scenario(scenario_path)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from exc
    paths = write_agent_configs(scenario, out_dir, endpoint, mqtt_url=mqtt_url)
    for path in paths:
        config = load_agent_config(path)  # what we wrote must pass check-config
        click.echo(f"wrote {path} ({config.machine_count()} machines, {config.signal_count()} signals)")
    click.echo(f"next: zhizao sim, then zhizao edge run {paths[0]}" if paths else "no lines in the scenario")
