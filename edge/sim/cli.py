"""`zhizao sim`: run the OPC UA factory simulator for a scenario."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from datetime import datetime
from pathlib import Path

import click

from zhizao.seeds import ScenarioError, load_scenario, load_timeline

log = logging.getLogger(__name__)


def _parse_start(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date-time", param_hint="--start") from exc
    if ts.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no UTC offset (write e.g. 2026-11-26T08:00+08:00)",
                                 param_hint="--start")  # fmt: skip
    return int(ts.timestamp() * 1000)


@click.command()
@click.option(
    "--scenario",
    "scenario_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Scenario YAML (default: the packaged cluster.yaml).",
)
@click.option(
    "--site",
    "sites",
    multiple=True,
    help="Serve only this site (repeatable); run one process per site on its own port to use more cores.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=4840, show_default=True, help="TCP port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Sim seconds per wall second until the sim catches up with the wall clock.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Random seed (same seed, start, speed -> same values).",
)
@click.option(
    "--start",
    "start",
    default=None,
    help="Sim start (ISO 8601 with offset). Default: now at speed 1, else early enough to catch up in --catch-up-s.",
)
@click.option(
    "--catch-up-s",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="With speed > 1 and no --start: wall seconds until the sim reaches the wall clock.",
)
@click.option("--dt-ms", type=click.IntRange(min=1), default=1000, show_default=True, help="Fixed sim step.")
@click.option(
    "--timeline",
    "timeline_paths",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Scripted timeline YAML (e.g. seeds/timelines/v1-vorne.yaml); repeat it for machines with scripts of their own.",
)
@click.option(
    "--record",
    type=click.Path(path_type=Path),
    default=None,
    help="Write every published value to this file (read with edge.sim.record.read_record).",
)
@click.option(
    "--security", is_flag=True, help="Also offer Basic256Sha256 Sign and SignAndEncrypt (self-signed cert)."
)
@click.option(
    "--user",
    "user",
    default=None,
    help="A user who may write MachSpeed and call Start/Stop/Reset; the password is read from --password-env.",
)
@click.option(
    "--password-env",
    default="ZHIZAO_SIM_PASSWORD",
    show_default=True,
    help="Environment variable holding the --user's password.",
)
@click.option(
    "--allow-anonymous-writes",
    is_flag=True,
    help="Let anonymous clients write and call methods too (default: they may only read and subscribe).",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path(".zhizao/sim"),
    show_default=True,
    help="Where the generated certificate lives.",
)
@click.option(
    "--wait-for-client",
    is_flag=True,
    help="Hold the sim clock at --start until a client has subscribed (scripted runs that must not begin unread).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop after this many wall seconds and print throughput (default: run until Ctrl-C).",
)
def sim(scenario_path: Path | None, sites: tuple[str, ...], port: int, host: str, speed: float, seed: int, start: str | None,
        catch_up_s: float, dt_ms: int, timeline_paths: tuple[Path, ...], record: Path | None, security: bool,
        user: str | None, password_env: str, allow_anonymous_writes: bool, data_dir: Path, wait_for_client: bool,
        duration: float | None) -> None:  # fmt: skip
    """Run the OPC UA factory simulator at opc.tcp://HOST:PORT/zhizao/sim."""
    from zhizao.edge.sim.server import SimError, SimServer, default_start_ms
    from zhizao.edge.sim.timeline import TimelineError

    logging.getLogger("asyncua").setLevel(logging.ERROR)  # asyncua is chatty at INFO; our own lines suffice
    try:
        scenario = load_scenario(scenario_path)
        if sites:
            unknown = sorted(set(sites) - {s.id for s in scenario.sites})
            if unknown:
                raise click.BadParameter(
                    f"{unknown[0]!r} is not a site of {scenario.name!r}", param_hint="--site"
                )
            scenario = scenario.subset([p for p in scenario.machine_paths() if p.split("/")[0] in sites])
        timeline = [load_timeline(path) for path in timeline_paths]
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from exc
    users: dict[str, str] = {}
    if user is not None:
        password = os.environ.get(password_env)
        if not password:
            raise click.BadParameter(f"{password_env} is not set (or empty): the password of {user!r}",
                                     param_hint="--password-env")  # fmt: skip
        users[user] = password
    start_ms = _parse_start(start)
    if start_ms is None:
        start_ms = default_start_ms(speed, dt_ms, catch_up_s=catch_up_s)
    try:
        server = SimServer(scenario, port, speed=speed, seed=seed, host=host, record=record, timeline=timeline,
                           start_ms=start_ms, dt_ms=dt_ms, security=security, data_dir=data_dir, users=users,
                           allow_anonymous_writes=allow_anonymous_writes, wait_for_client=wait_for_client)  # fmt: skip
    except (TimelineError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.start()
        if duration is not None:
            loop.call_later(duration, stop.set)
        n = len(server.model.table.machine_paths)
        click.echo(
            f"serving {n} machines ({server.model.table.size} variables) at {server.endpoint}; Ctrl-C stops"
        )
        click.echo(
            f"next: `zhizao edge browse {server.endpoint}` or `zhizao edge run seeds/agents/<line>.yaml`"
        )
        try:
            await server.run(stop)
        finally:
            await server.stop()

    try:
        asyncio.run(main())
    except SimError as exc:
        raise click.ClickException(str(exc)) from exc
    st = server.stats
    if duration is not None:
        click.echo(f"{st.steps} steps, {st.values} values in {duration:g} s wall: {st.values / duration:.0f} values/s; "
                   f"write time {st.write_s:.2f} s; caught up: {st.caught_up}")  # fmt: skip
