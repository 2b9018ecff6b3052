"""`zhizao demo`: the whole platform on one machine, from nothing but the installed package.

Order of start: broker -> database -> cloud (migrations, host, ingest, API) -> simulator -> one edge agent
per line. Each external service is used when its environment variable names one (`ZHIZAO_MQTT_URL`,
`ZHIZAO_DATABASE_URL`), else a private one runs under the data directory and is kept between runs.
Ctrl-C stops everything in reverse order; every edge node sends its NDEATH.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from zhizao.broker.embedded import BrokerError, free_port, wait_listening
from zhizao.cloud.settings import DATABASE_URL_FILE

SIM_PATH = "/zhizao/sim"
SIM_USER = "zhizao-edge"  # the agents' OPC UA user on the demo's simulator (password: fresh every start)


def _say(step: str, text: str) -> None:
    click.echo(click.style(f"[{step}] ", fg="cyan") + text, err=True)


class _Children:
    """Child processes of the demo, stopped with SIGINT (clean: NDEATH) and then SIGKILL if they hang."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log_file = self.log_dir / f"{name}.log"
        with log_file.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "zhizao", *argv],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # Ctrl-C reaches the demo, which stops children in order
            )
        self.procs.append((name, proc))
        return proc

    def stop(self, names: Callable[[str], bool], timeout: float = 15.0) -> None:
        chosen = [(n, p) for n, p in self.procs if names(n) and p.poll() is None]
        for _, p in chosen:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for name, p in chosen:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _say("stop", f"{name} did not stop in {timeout:g} s; killing it")
                p.kill()
                p.wait()

    def dead(self) -> list[str]:
        return [f"{n} (exit {p.returncode})" for n, p in self.procs if p.poll() is not None]


@contextlib.contextmanager
def _broker(data_dir: Path, users: dict[str, str]) -> Iterator[tuple[str, bool]]:
    """(url, secured): the given broker, else a private one; mosquitto checks `users` and the shipped ACL."""
    url = os.environ.get("ZHIZAO_MQTT_URL")
    if url:
        _say("1/6", f"broker: {url} (ZHIZAO_MQTT_URL)")
        yield url, False
        return
    from zhizao.broker.embedded import broker_secured, start_broker

    secured = broker_secured()
    url, stop = start_broker(data_dir / "broker", users=users if secured else None)
    how = "passwords and the shipped ACL" if secured else "anonymous: the embedded broker has no ACL"
    _say("1/6", f"broker: private broker at {url} ({how})")
    try:
        yield url, secured
    finally:
        stop()


def _with_user(url: str, user: str, password: str) -> str:
    """`mqtt://host:port` with credentials."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"


@contextlib.contextmanager
def _database(data_dir: Path) -> Iterator[str]:
    url = os.environ.get("ZHIZAO_DATABASE_URL")
    if url:
        _say("2/6", "database: ZHIZAO_DATABASE_URL")
        yield url
        return
    from zhizao.cloud.storage.embedded import EmbeddedPostgres

    _say("2/6", f"database: starting a private PostgreSQL under {data_dir / 'postgres'}")
    pg = EmbeddedPostgres(data_dir / "postgres")
    url = pg.start()
    # `zhizao cloud ...` commands run beside the demo find its database here (see cloud/cli.py).
    handoff = data_dir / DATABASE_URL_FILE
    handoff.write_text(url + "\n")
    handoff.chmod(0o600)
    try:
        yield url
    finally:
        handoff.unlink(missing_ok=True)
        pg.stop()


def _protocol_env(mqtt_url: str) -> dict[str, Any]:
    """Our clients speak MQTT 5; a broker that offers only 3.1.1 gets 3.1.1 from edge and cloud alike."""
    from zhizao.broker.embedded import probe_protocol

    return {"edge": 5 if probe_protocol(mqtt_url) == "5" else 3}


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path), envvar="ZHIZAO_DATA_DIR", default=Path(".zhizao"),
              show_default=True, help="Database, outboxes, logs; kept between runs.")
@click.option("--scenario", "scenario_path", type=click.Path(path_type=Path), default=None,
              help="Scenario YAML (default: the seeded four-site cluster).")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Simulator speed; > 1 replays a backlog from the past until it reaches the wall clock.")
@click.option("--seed", type=int, default=1, show_default=True, help="Simulator random seed.")
@click.option("--api-port", type=click.IntRange(0, 65535), default=8040, show_default=True,
              help="Port of the cloud API (0: any free port).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop by itself after this many seconds (default: run until Ctrl-C).")
def demo(data_dir: Path, scenario_path: Path | None, speed: float, seed: int, api_port: int,
         duration: float | None) -> None:  # fmt: skip
    """Run the simulated cluster, one edge agent per line, a broker, the cloud and its database."""
    import logging

    if click.get_current_context().find_root().params.get("verbose", 0) == 0 and "ZHIZAO_LOG_LEVEL" not in os.environ:
        # The demo prints its own progress lines; the components' INFO lines go to their log files only.
        logging.getLogger("zhizao").setLevel(logging.WARNING)
    from zhizao.broker.acl import edge_identity
    from zhizao.broker.commands import public_key_text
    from zhizao.cloud.auth import create_token
    from zhizao.cloud.seed import seed_database
    from zhizao.cloud.service import CloudService
    from zhizao.cloud.settings import CloudSettings
    from zhizao.cloud.storage.migrate import apply_migrations
    from zhizao.edge.bootstrap import write_agent_configs
    from zhizao.edge.sim.security import PASSWORD_ENV
    from zhizao.seeds import load_scenario

    data_dir = data_dir.resolve()
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    scenario = load_scenario(scenario_path)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = time.monotonic()
    children = _Children(log_dir)

    # The private broker's identities (shipped ACL, broker/acl.py): the cloud, and one per edge agent (username
    # `{site}.{line}`); fresh passwords every start, so nothing stale lies around.
    agents = {line.id: edge_identity(site.id, line.id) for site in scenario.sites for line in site.lines}
    users = {"zhizao-cloud": secrets.token_urlsafe(18), **{who: secrets.token_urlsafe(18) for who in agents.values()}}
    with contextlib.ExitStack() as stack:
        mqtt_url, secured = stack.enter_context(_broker(data_dir, users))
        agent_url = {line: _with_user(mqtt_url, who, users[who]) if secured else mqtt_url for line, who in agents.items()}
        cloud_mqtt_url = _with_user(mqtt_url, "zhizao-cloud", users["zhizao-cloud"]) if secured else mqtt_url
        protocol = _protocol_env(cloud_mqtt_url)
        database_url = stack.enter_context(_database(data_dir))

        settings = CloudSettings.from_env(database_url=database_url, mqtt_url=cloud_mqtt_url, data_dir=data_dir,
                                          api_port=api_port)  # fmt: skip
        _say("3/6", "cloud: migrations, seeding the scenario, Sparkplug host, ingest, API")
        apply_migrations(database_url, horizons=settings.horizons())
        seed_database(database_url, scenario)  # what `zhizao cloud seed FILE` does
        _seed_network(database_url, scenario_path, scenario)
        service = CloudService(settings)
        api_url = service.start_in_thread(timeout=120)
        stack.callback(service.stop)
        _say("3/6", f"cloud: {service.storage.kind if service.storage else 'storage'}; API at {api_url}")

        sim_port = free_port()
        endpoint = f"opc.tcp://127.0.0.1:{sim_port}{SIM_PATH}"
        # The simulator refuses anonymous writes and calls: the agents carry out commands as this user.
        sim_env = {PASSWORD_ENV: secrets.token_urlsafe(18)}
        sim_argv = ["sim", "--port", str(sim_port), "--speed", str(speed), "--seed", str(seed),
                    "--data-dir", str(data_dir / "sim"), "--user", SIM_USER]  # fmt: skip
        if scenario_path is not None:
            sim_argv += ["--scenario", str(scenario_path)]
        machines = sum(len(line.machines) for site in scenario.sites for line in site.lines)
        _say("4/6", f"simulator: {len(scenario.sites)} sites, {machines} machines at {endpoint}")
        sim = children.start("sim", sim_argv, env=sim_env)
        stack.callback(children.stop, lambda n: n == "sim")
        try:
            wait_listening(sim_port, lambda: sim.poll() is None, "simulator", log_dir / "sim.log", timeout=60)
        except BrokerError as exc:
            raise click.ClickException(f"{exc}; see {log_dir / 'sim.log'}") from None

        config_dir = data_dir / "edge" / "configs"
        # The agents trust the cloud's command key (commands signed with it, nothing else).
        keys = (public_key_text(service.commands.key),) if service.commands is not None else ()
        paths = write_agent_configs(scenario, config_dir, endpoint, mqtt_url=mqtt_url,
                                    outbox_root=str(data_dir / "edge"), primary_host=settings.host_id,
                                    command_keys=keys, opcua_user=SIM_USER)  # fmt: skip
        for p in paths:
            p.touch(0o600)
            p.chmod(0o600)  # it holds the agent's broker password
            url = agent_url[p.stem]
            extra = "\n  protocol: 3" if protocol["edge"] == 3 else ""  # the broker speaks only MQTT 3.1.1
            p.write_text(p.read_text().replace(f"url: {mqtt_url}", f"url: {url}{extra}"))
        _say("5/6", f"edge: {len(paths)} agents, one per line (configs in {config_dir})")
        for p in paths:
            children.start(f"edge-{p.stem}", ["edge", "run", str(p)], env=sim_env)
        stack.callback(children.stop, lambda n: n.startswith("edge-"))

        token = create_token(database_url, "admin", None, "demo", created_by="demo")
        _say("6/6", "waiting for the first samples to reach the API")
        first = _wait_first_samples(api_url, token, stop, children)
        if first is not None:
            _say("6/6", f"first samples visible in the API {first - started:.1f} s after start")
        click.echo(f"API: {api_url}/api/v1")
        click.echo(f"Token: {token}")
        click.echo(f"Dashboard: {api_url}/ui/   (log in with the token)", err=True)
        click.echo(f"Docs: {api_url}/docs   (Ctrl-C stops everything; data stays in {data_dir})", err=True)
        first_site = scenario.sites[0].id
        click.echo(f"More tokens: zhizao cloud token create --role operator --sites {first_site}"
                   f" (while the demo runs; with ZHIZAO_DATA_DIR={data_dir} when run elsewhere)", err=True)  # fmt: skip
        _report_until_stopped(api_url, token, stop, children, service, duration, started)
        _say("stop", "stopping edge agents (NDEATH), simulator, cloud, database, broker")


def _get(api_url: str, token: str, path: str) -> Any:
    """GET an API path as JSON with the demo's token (the standard library is enough: no extra needed)."""
    request = urllib.request.Request(f"{api_url}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _wait_first_samples(api_url: str, token: str, stop: threading.Event, children: _Children) -> float | None:
    while not stop.is_set():
        if children.dead():
            raise click.ClickException(f"stopped early: {', '.join(children.dead())}; see {children.log_dir}")
        with contextlib.suppress(OSError, ValueError):
            for site in _get(api_url, token, "/api/v1/sites"):
                if _get(api_url, token, f"/api/v1/latest?site={site['site_id']}"):
                    return time.monotonic()
        stop.wait(0.25)
    return None


def _report_until_stopped(api_url: str, token: str, stop: threading.Event, children: _Children,
                          service: Any, duration: float | None, started: float) -> None:  # fmt: skip
    last_rows, last_t = 0.0, time.monotonic()
    while not stop.wait(10.0 if duration is None else min(10.0, max(0.1, duration - (time.monotonic() - started)))):
        if duration is not None and time.monotonic() - started >= duration:
            break
        if children.dead():
            _say("warn", f"child process ended: {', '.join(children.dead())}; see {children.log_dir}")
        stats = service.ingest.stats() if service.ingest is not None else {}
        rows = stats.get("samples_stored", 0.0)
        now = time.monotonic()
        online = "?"
        with contextlib.suppress(OSError, ValueError):
            nodes = _get(api_url, token, "/api/v1/edge-nodes")
            online = f"{sum(1 for n in nodes if n.get('online'))}/{len(nodes)}"
        _say("live", f"edge nodes online {online}; samples stored {rows:,.0f} ({(rows - last_rows) / (now - last_t):,.0f}/s)")
        last_rows, last_t = rows, now


def _seed_network(database_url: str, scenario_path: Path | None, scenario: Any) -> None:
    """The manufacturing network beside the scenario (planning); a subset scenario the network does not fit
    is demoed without it."""
    from zhizao.cloud.planning.network import seed_network_beside
    from zhizao.seeds import SEEDS_DIR, ScenarioError

    with contextlib.suppress(ScenarioError):
        seed_network_beside(database_url, Path(scenario_path) if scenario_path else SEEDS_DIR / "cluster.yaml", scenario)
