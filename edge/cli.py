"""`zhizao edge`: run an agent, check agent configs without connecting, browse a server into a starter config."""

from __future__ import annotations

import asyncio
import logging
import os
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
@click.option("--out", type=click.Path(path_type=Path),
              help="Write the config here (default: stdout); a directory when the server has several lines.")
@click.option("--site", help="Site id (Sparkplug group); default: from the address space layout.")
@click.option("--edge-node", help="Edge node id (one line only); default: the line's name.")
@click.option("--mqtt-url", default="mqtt://127.0.0.1:1883", show_default=True, help="Broker URL for the config.")
@click.option("--primary-host", default="zhizao-cloud", show_default=True,
              help="Sparkplug host id the agent waits for before its births; '' for none.")
@click.option("--username", help="OPC UA user for browsing.")
@click.option("--password-env", help="Environment variable holding the OPC UA password.")
@click.option("--security-mode", type=click.Choice(["None", "Sign", "SignAndEncrypt"]), default="None",
              show_default=True, help="Channel security for browsing, written into the config too.")
@click.option("--policy", type=click.Choice(["Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"]),
              default="Basic256Sha256", show_default=True)
@click.option("--certificate", type=click.Path(path_type=Path), help="Client certificate (its URI = --application-uri).")
@click.option("--private-key", type=click.Path(path_type=Path), help="Client private key (PEM).")
@click.option("--server-certificate", type=click.Path(path_type=Path), help="Pinned server certificate.")
@click.option("--application-uri", default="urn:zhizao:edge", show_default=True)
@click.option("--under", help="Keep only objects below this path, e.g. sh-lingang/cnc-1 (one line per agent).")
@click.option("--max-nodes", default=100_000, show_default=True, help="Stop walking after this many nodes.")
def browse(url: str, out: Path | None, site: str | None, edge_node: str | None, mqtt_url: str,
           primary_host: str, username: str | None, password_env: str | None, security_mode: str, policy: str,
           certificate: Path | None, private_key: Path | None, server_certificate: Path | None,
           application_uri: str, under: str | None, max_nodes: int) -> None:
    """Walk an OPC UA server and write one starter agent config per line it finds."""
    from pydantic import ValidationError

    from zhizao.edge.adapters.base import AdapterError
    from zhizao.edge.adapters.opcua.browse import browse as walk
    from zhizao.edge.adapters.opcua.browse import group_lines, line_ids, starter_config
    from zhizao.edge.adapters.opcua.config import SecurityConfig
    from zhizao.edge.config import parse_agent_config

    sec: dict[str, object] = {"mode": security_mode}
    if security_mode != "None":
        sec.update(policy=policy, certificate=str(certificate) if certificate else None,
                   private_key=str(private_key) if private_key else None, application_uri=application_uri)
        if server_certificate:
            sec["server_certificate"] = str(server_certificate)
    if username:
        sec.update(username=username, password_env=password_env)
    try:
        security = SecurityConfig.model_validate(sec)
    except ValidationError as exc:
        for err in exc.errors():
            click.echo(f"security: {err['msg']}", err=True)
        sys.exit(1)
    password = os.environ.get(password_env) if password_env else None
    if password_env and password is None:
        click.echo(f"--password-env: environment variable {password_env!r} is not set", err=True)
        sys.exit(1)
    click.echo(f"browsing {url} ...", err=True)
    # The OPC UA library logs its own tracebacks for a refused channel; the one line below says what happened.
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    try:
        found = asyncio.run(walk(url, max_nodes=max_nodes, username=username, password=password, security=security))
    except AdapterError as exc:
        click.echo(f"cannot browse {url}: {exc}", err=True)
        sys.exit(1)
    objects, skipped = found.objects, found.skipped
    if under:
        prefix = tuple(p for p in under.split("/") if p)
        objects = [o for o in objects if o.path[:len(prefix)] == prefix]
        skipped = [s for s in skipped if s.path.startswith("/".join(prefix) + "/")]
    if not objects:
        click.echo(f"no variables found under Objects{'/' + under if under else ''} on {url}", err=True)
        sys.exit(1)
    lines = group_lines(objects)
    if len(lines) > 1 and edge_node:
        click.echo(f"--edge-node: the server has {len(lines)} lines; give --under to pick one", err=True)
        sys.exit(1)
    if len(lines) > 1 and out is not None and out.suffix in (".yaml", ".yml"):
        click.echo(f"--out: the server has {len(lines)} lines, one config each; give a directory, not {out}",
                   err=True)
        sys.exit(1)
    sec_out = {"mode": "None"} if security_mode == "None" else security.model_dump(mode="json", exclude_none=True)
    if username and password_env:
        sec_out.update(username=username, password_env=password_env)
    sec_out.pop("password", None)
    texts: list[tuple[str, str, str]] = []
    for line in lines:
        line_site, line_edge = line_ids(line, site=site, edge_node=edge_node)
        data = starter_config(line, url, site=site, edge_node=edge_node, mqtt_url=mqtt_url, security=sec_out,
                              primary_host=primary_host or None, chunk_size=found.max_nodes_per_read)
        try:
            config = parse_agent_config(data, "<browsed config>")
        except ConfigError as exc:  # e.g. an invalid --site: say which option to fix
            click.echo(str(exc), err=True)
            sys.exit(1)
        here = "/".join(line.path)
        mine = [s for s in skipped if s.path.startswith(here + "/")] if here else skipped
        packml = sum(1 for o in line.objects if o.is_packml())
        header = (f"# Starter agent config written by `zhizao edge browse {url}`.\n"
                  f"# Line {here or '(top)'}: {packml} PackML machine(s), {len(line.objects) - packml} other "
                  f"object(s) with variables; server limits: MaxNodesPerRead {found.max_nodes_per_read}, "
                  f"MaxNodesPerBrowse {found.max_nodes_per_browse}.\n")
        if mine:
            header += f"# {len(mine)} variable(s) not mapped:\n" + "".join(
                f"#   {s.path} ({s.node_id}): {s.why}\n" for s in mine)
        body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
        texts.append((f"{line_site}-{line_edge}.yaml", header + body,
                      f"{config.machine_count()} machines, {config.signal_count()} signals"))
    if out is None:
        click.echo("---\n".join(t for _, t, _ in texts), nl=False)
        return
    targets = [(out, texts[0])] if len(texts) == 1 and out.suffix in (".yaml", ".yml") else \
        [(out / name, (name, text, what)) for name, text, what in texts]
    for path, (_, text, what) in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        click.echo(f"wrote {path} ({what}); next: zhizao edge check-config {path}", err=True)


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
