"""Simulator throughput: value changes per second for a scenario, against the bare model as the same-run baseline.

Run: `python -m zhizao.bench.sim [--seconds 10] [--scenario FILE] [--json FILE]`. Three phases, each for `--seconds`, with the
sim started far enough in the past that it never catches up (it runs flat out):
1. model only (no OPC UA): the ceiling the numpy model sets;
2. server, no client: model + `write_attribute_value` for every change;
3. for each `--speed`: the server paced at that speed with one client in another process subscribed to every
   node (100 ms publishing, deep queues), which counts what it receives: what an edge agent would see. The
   pace column says whether the server held the speed (100%) or fell behind.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from zhizao.bench.harness import Report, json_option, machine_line, times
from zhizao.broker.embedded import free_port
from zhizao.edge.sim.model import FactoryModel
from zhizao.edge.sim.nodes import build_node_table
from zhizao.edge.sim.server import SimServer
from zhizao.seeds import load_scenario
from zhizao.seeds.model import Scenario

_FAR_BACK_MS = 30 * 86_400_000  # 30 sim days: more than any phase can step


def _model_only(scenario: Scenario, seconds: float) -> tuple[int, int]:
    model = FactoryModel(scenario, seed=1, start_ms=int(time.time() * 1000) - _FAR_BACK_MS)
    values = len(model.initial().index)
    steps = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        values += len(model.step().index)
        steps += 1
    return steps, values


async def _server(
    scenario: Scenario, scenario_path: str | None, seconds: float, speed: float | None, clients: int = 1
) -> dict[str, Any]:
    """Run a server flat out (speed None, no client) or at `speed` with `clients` subscribing processes."""
    port = free_port()
    back = _FAR_BACK_MS if speed is None else int(speed * seconds * 1000 * 2)  # never catches up in `seconds`
    start = (int(time.time() * 1000) - back) // 1000 * 1000
    sim = SimServer(scenario, port, speed=speed or 1e9, seed=1, start_ms=start)
    await sim.start()
    procs = []
    for part in range(clients if speed is not None else 0):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "zhizao.bench.sim", "--client", sim.endpoint, "--seconds", str(seconds),
            "--part", f"{part}/{clients}", *(["--scenario", str(scenario_path)] if scenario_path else []),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None
        await proc.stdout.readline()  # "subscribed": measure from here
    stop = asyncio.Event()
    values0, t0 = sim.stats.values, time.perf_counter()
    sim.created_ms, sim.start_ms = time.time() * 1000, sim.model.ts_ms  # pace from now, not from construction
    task = asyncio.create_task(sim.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    elapsed = time.perf_counter() - t0
    sim_s = (sim.model.ts_ms - sim.start_ms) / 1000
    result: dict[str, Any] = {"values_per_s": (sim.stats.values - values0) / elapsed, "pace": sim_s / elapsed}
    if speed is not None:
        # Whole steps only, and the last one may fall just past the window's edge: expect one step less.
        dt_s = sim.model.dt_s
        result["held"] = min(1.0, sim_s / max(dt_s, (speed * elapsed // dt_s - 1) * dt_s))
    if procs:
        outs = [(await proc.communicate())[0] for proc in procs]
        result["client_received_per_s"] = sum(json.loads(out)["received"] for out in outs) / seconds
    await sim.stop()
    return result


async def _client(url: str, scenario: Scenario, seconds: float, part: tuple[int, int]) -> None:
    from asyncua.client.client import Client  # the probe only; edge agents read through edge.adapters.opcua

    received = 0

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            nonlocal received
            received += 1

    async with Client(url) as client:
        sub = await client.create_subscription(100, Handler())
        # Part i of n takes whole machines (every n-th), like one agent per line takes its line's machines.
        table = build_node_table(scenario)
        mine = [j for j, m in enumerate(table.node_machine.tolist()) if m % part[1] == part[0]]
        ids = [client.get_node(table.node_ids[j]) for j in mine]
        await sub.subscribe_data_change(ids, queuesize=100_000)
        print("subscribed", flush=True)
        received = 0
        await asyncio.sleep(seconds)
        count = received
    print(json.dumps({"received": count, "nodes": len(ids)}), flush=True)


@click.command()
@click.option("--seconds", type=float, default=10.0, show_default=True)
@click.option("--scenario", "scenario_path", default=None, help="Scenario file (default: the cluster).")
@click.option(
    "--speed",
    "speeds",
    type=float,
    multiple=True,
    default=(1, 10, 30, 100),
    show_default=True,
    help="Speeds to hold with the subscribing clients.",
)
@click.option("--clients", type=int, default=1, show_default=True, help="Subscribing client processes.")
@click.option("--client", "client_url", default=None, hidden=True)
@click.option("--part", default="0/1", hidden=True)
@json_option
def main(
    seconds: float,
    scenario_path: str | None,
    speeds: tuple[float, ...],
    clients: int,
    client_url: str | None,
    part: str,
    json_path: Path | None,
) -> None:
    """Measure simulator throughput (value changes per second) with the bare model as the baseline."""
    import logging

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    scenario = load_scenario(scenario_path)
    if client_url is not None:
        i, n = (int(x) for x in part.split("/"))
        asyncio.run(_client(client_url, scenario, seconds, (i, n)))
        return
    n_machines = len(scenario.machine_paths())
    click.echo(f"scenario {scenario.name}: {n_machines} machines", err=True)
    report = Report("sim")
    figures = report.figures
    figures.update(scenario=scenario.name, machines=n_machines, seconds=seconds, clients=clients)
    steps, values = _model_only(scenario, seconds)
    base = values / seconds
    figures["model"] = {"values_per_s": base, "steps_per_s": steps / seconds}
    click.echo(f"model only:                {base:9.0f} values/s ({steps / seconds:.0f} steps/s)")
    figures["server_alone"] = alone = asyncio.run(_server(scenario, scenario_path, seconds, None))
    share = report.ratio("server_alone", "server_alone.values_per_s", "model.values_per_s")
    click.echo(f"server flat out, no client: {alone['values_per_s']:8.0f} values/s "
               f"({times(share)} model, {alone['pace']:.0f} sim s per s)")  # fmt: skip
    figures["speeds"] = {}
    for speed in speeds:
        r = asyncio.run(_server(scenario, scenario_path, seconds, speed, clients))
        figures["speeds"][f"{speed:g}"] = r
        click.echo(f"speed {speed:>5g} + {clients} subscriber(s): {r['values_per_s']:8.0f} values/s, pace {r['pace']:.1f} sim s per s "
                   f"({r['held']:.0%} of target); client received {r['client_received_per_s']:.0f}/s")  # fmt: skip
    click.echo(machine_line(report.finish()))
    report.write(json_path)


if __name__ == "__main__":
    main()
