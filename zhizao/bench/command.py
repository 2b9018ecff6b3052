"""`zhizao bench command`: API call -> setpoint written over OPC UA -> read back -> `confirmed`, p50/p99.

A demo-like stack runs in this process: the OPC UA factory simulator (one line), its edge agent (commands
signed by the cloud's key), the cloud service (ingest, command dispatcher, API) on the given PostgreSQL and
broker. The bench sends N setpoint commands to one machine through `POST /api/v1/machines/{m}/commands`
and polls `GET /api/v1/commands/{id}` until `confirmed`, timing each from just before the POST.

Baseline, in the same run: the device round trip alone, an OPC UA write of the same node plus its read-back
from a client in this process. The report gives p50/p99 of both and their ratio (what the signed
cloud -> broker -> edge path costs on top of the device).

`CommandStack` is also what the command tests run against.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from zhizao.bench.harness import Report, json_option, latency_summary, machine_line, scratch_database, times

SIM_PATH = "/zhizao/sim"
SIM_USER = ("bench-edge", secrets.token_urlsafe(12))  # the OPC UA user the agent (and the baseline) write as


def scenario_doc(site: str, machines: int = 2, line: str = "l1") -> dict[str, Any]:
    """A one-line scenario, always in shift, no random stops: commands meet a predictable machine."""
    ms = [{"id": f"{line}-m{i + 1:02d}", "kind": "cnc-machining-center", "ideal_rate_per_min": 60.0,
           "nominal_speed": 1.0, "reject_rate": 0.0, "behaviour": {"mtbf_h": 1e9, "repair": {"median_min": 1}},
           "signals": [{"name": "Temperature/Spindle", "unit": "degC", "typical": 40.0, "idle": 25.0,
                        "noise": 0.2, "resolution": 0.1}]}
          for i in range(machines)]  # fmt: skip
    return {"name": "command-bench", "sites": [{
        "id": site,
        "calendar": {"shifts": [{"name": "all", "start": "00:00", "hours": 24, "days": [1, 2, 3, 4, 5, 6, 7]}]},
        "state_classes": {"planned": [150000, 160000], "availability_loss": [180000], "performance_loss": [50000]},
        "lines": [{"id": line, "machines": ms}],
    }]}  # fmt: skip


class _LoopThread:
    """An event loop in a daemon thread, for the simulator and each agent run."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class CommandStack:
    """A running simulator + edge agent + cloud; `tokens` by role; `stop_agent()` / `start_agent()`."""

    api_url: str
    site: str
    edge: str
    machines: list[str]
    tokens: dict[str, str]
    database_url: str
    mqtt_url: str
    sim: Any
    agent_config: Any
    service: Any
    _sim_thread: _LoopThread
    _agent: tuple[_LoopThread, asyncio.Event, Any] | None = None
    runs: int = 0
    errors: list[BaseException] = field(default_factory=list)

    def start_agent(self, config: Any = None) -> None:
        """Run the edge agent (again, on the same outbox) in its own loop thread."""
        from zhizao.edge.agent import run_agent

        assert self._agent is None
        thread = _LoopThread(f"agent-{self.runs}")
        self.runs += 1
        stop = thread.run(_event())

        async def main() -> None:
            try:
                await run_agent(config or self.agent_config, stop)
            except BaseException as exc:
                self.errors.append(exc)
                raise

        fut = asyncio.run_coroutine_threadsafe(main(), thread.loop)
        self._agent = (thread, stop, fut)

    def stop_agent(self) -> None:
        """Stop the agent cleanly (NDEATH) and wait for it."""
        assert self._agent is not None
        thread, stop, fut = self._agent
        thread.loop.call_soon_threadsafe(stop.set)
        with contextlib.suppress(Exception):
            fut.result(30)
        thread.close()
        self._agent = None

    def api(self, method: str, path: str, role: str = "admin", body: Any = None) -> tuple[int, Any]:
        """One API call as `role`: (status, JSON body)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.api_url}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.tokens[role]}", "Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=60) as r:  # a config upload runs the edge checker
                return r.status, json.load(r)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.load(exc)

    def wait_status(self, command_id: str, wanted: set[str], timeout: float = 15.0, poll_s: float = 0.005) -> Any:
        """Poll one command until its status is in `wanted`; its JSON (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        doc: Any = None
        while time.monotonic() < deadline:
            _, doc = self.api("GET", f"/api/v1/commands/{command_id}", "viewer")
            if doc.get("status") in wanted:
                return doc
            time.sleep(poll_s)
        raise AssertionError(f"command {command_id} not {sorted(wanted)} within {timeout:g} s: {doc}")

    def config_raw(self) -> dict[str, Any]:
        """The agent's config as an engineer uploads it: model_dump masks secrets, so the simulator user's
        password is put back (the agent writes to the simulator as that user)."""
        raw: dict[str, Any] = self.agent_config.model_dump(mode="json", exclude_none=True, serialize_as_any=True)
        raw["adapters"][0]["security"]["password"] = SIM_USER[1]
        return raw

    def wait_targets(self, timeout: float = 30.0) -> None:
        """Until the cloud knows the agent's command targets (its info arrived)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, doc = self.api("GET", f"/api/v1/machines/{self.machines[0]}/command-targets", "viewer")
            if status == 200 and doc:
                return
            time.sleep(0.05)
        raise AssertionError(f"the cloud never learned the command targets of {self.machines[0]}")


async def _event() -> asyncio.Event:
    return asyncio.Event()


@contextlib.contextmanager
def command_stack(database_url: str, mqtt_url: str, work: Path, *, machines: int = 2,
                  dt_ms: int = 100, result_timeout_s: float = 15.0,
                  rate_per_min: int = 30) -> Iterator[CommandStack]:  # fmt: skip
    """Start simulator, cloud (fresh schema on `database_url`) and one edge agent; stop everything after."""
    from zhizao.broker.commands import load_or_create_key, public_key_text
    from zhizao.broker.embedded import free_port
    from zhizao.cloud.auth import create_token
    from zhizao.cloud.service import CloudService
    from zhizao.cloud.settings import CloudSettings
    from zhizao.edge.bootstrap import agent_configs_for_scenario
    from zhizao.edge.config import parse_agent_config
    from zhizao.edge.sim.server import SimServer
    from zhizao.seeds.model import Scenario

    site = f"cmd-{uuid.uuid4().hex[:8]}"
    host_id = f"{site}-host"
    scenario = Scenario.model_validate(scenario_doc(site, machines))
    key_file = work / "command-key.pem"
    key = load_or_create_key(key_file)
    port = free_port()
    sim_thread = _LoopThread("command-sim")

    async def start_sim() -> Any:
        sim = SimServer(scenario, port, dt_ms=dt_ms, data_dir=work / "sim", users=dict([SIM_USER]))
        await sim.start()
        stop = asyncio.Event()
        sim._bench_stop = stop  # type: ignore[attr-defined]
        sim._bench_task = asyncio.create_task(sim.run(stop))  # type: ignore[attr-defined]
        return sim

    async def stop_sim(sim: Any) -> None:
        sim._bench_stop.set()
        await sim._bench_task
        await sim.stop()

    sim = sim_thread.run(start_sim())
    settings = CloudSettings(database_url=database_url, mqtt_url=mqtt_url, host_id=host_id, api_port=0,
                             data_dir=work, command_key_file=key_file, command_result_timeout_s=result_timeout_s,
                             command_rate_per_min=rate_per_min)
    service = CloudService(settings, warm_up=False, oee=False)
    stack: CommandStack | None = None
    try:
        api_url = service.start_in_thread(timeout=60)
        edge, raw = next(iter(agent_configs_for_scenario(
            scenario, f"opc.tcp://127.0.0.1:{port}{SIM_PATH}", mqtt_url=mqtt_url, outbox_root=str(work / "edge"),
            primary_host=host_id, command_keys=(public_key_text(key),)).items()))  # fmt: skip
        # The simulator refuses anonymous writes and calls: the agent authenticates (password in the config here).
        raw["adapters"][0]["security"] = {"mode": "None", "username": SIM_USER[0], "password": SIM_USER[1]}
        raw["sparkplug"]["publish_interval_ms"] = 50
        raw["sparkplug"]["health_interval_s"] = 1.0
        raw["adapters"][0]["subscription"] = {"publishing_interval_ms": 50, "sampling_interval_ms": 20,
                                              "queue_size": 1000}  # fmt: skip
        config = parse_agent_config(raw, "command-bench")
        tokens = {role: create_token(database_url, role, None, f"{role}-{n}")
                  for n, role in enumerate(("viewer", "operator", "engineer", "admin"))}  # fmt: skip
        tokens["engineer2"] = create_token(database_url, "engineer", None, "engineer-second")
        stack = CommandStack(api_url, site, edge, [m.id for m in config.machines], tokens, database_url, mqtt_url,
                             sim, config, service, sim_thread)  # fmt: skip
        stack.start_agent()
        stack.wait_targets()
        yield stack
    finally:
        if stack is not None and stack._agent is not None:
            stack.stop_agent()
        service.stop()
        sim_thread.run(stop_sim(sim))
        sim_thread.close()


async def _device_round_trip(endpoint: str, node_id: str, values: list[float]) -> list[float]:
    """Baseline: OPC UA write + read-back of the node from a plain client, per value (ms)."""
    from asyncua import ua
    from asyncua.client.client import Client  # only the bench drives the simulator from the cloud side

    out: list[float] = []
    client = Client(endpoint, timeout=5)
    client.set_user(SIM_USER[0])
    client.set_password(SIM_USER[1])
    async with client:
        node = client.get_node(node_id)
        for v in values:
            t0 = time.perf_counter()
            await node.write_value(ua.DataValue(ua.Variant(v, ua.VariantType.Double)))
            back = await node.read_value()
            out.append((time.perf_counter() - t0) * 1000)
            assert abs(float(back) - v) < 1e-9, (back, v)
    return out


def run_bench(stack: CommandStack, n: int) -> Report:
    """N setpoint commands through the API, timed to `confirmed`; the device round trip as the baseline."""
    machine = stack.machines[0]
    values = [30.0 + (i % 50) * 0.5 for i in range(n)]
    totals: list[float] = []
    for i, v in enumerate(values):
        t0 = time.perf_counter()
        status, doc = stack.api("POST", f"/api/v1/machines/{machine}/commands", "engineer",
                                {"metric": "Rate/Setpoint", "value": v, "reason": f"bench {i}"})  # fmt: skip
        if status != 201:
            raise click.ClickException(f"command {i} refused: {status} {doc}")
        done = stack.wait_status(doc["command_id"], {"confirmed", "failed", "refused", "timed_out"}, poll_s=0.002)
        if done["status"] != "confirmed":
            raise click.ClickException(f"command {i} ended {done['status']}: {done.get('message')}")
        totals.append((time.perf_counter() - t0) * 1000)
    endpoint = stack.sim.endpoint
    node = f"ns=2;s={stack.site}/l1/{machine}/MachSpeed"
    base = asyncio.run(_device_round_trip(endpoint, node, values))
    report = Report("command")
    summary = latency_summary(totals)
    summary["max_ms"] = max(totals)
    report.figures = {"n": n, "api_to_confirmed": summary, "device_write_readback": latency_summary(base)}
    report.ratio("p50_vs_device", "api_to_confirmed.p50_ms", "device_write_readback.p50_ms")
    report.ratio("p99_vs_device", "api_to_confirmed.p99_ms", "device_write_readback.p99_ms")
    return report


@click.command("command")
@click.option("--database-url", envvar="ZHIZAO_DATABASE_URL", required=True,
              help="PostgreSQL server; the bench works in a scratch database it drops afterwards.")
@click.option("--mqtt-url", envvar="ZHIZAO_MQTT_URL", default="mqtt://127.0.0.1:1883", show_default=True)
@click.option("-n", "--commands", "n", type=click.IntRange(5, 10_000), default=100, show_default=True)
@json_option
def bench_command(database_url: str, mqtt_url: str, n: int, json_path: Path | None) -> None:
    """API call -> OPC UA write -> read-back -> confirmed, p50/p99 over N setpoint commands."""
    with scratch_database(database_url, "command") as db, tempfile.TemporaryDirectory() as tmp:
        click.echo("starting simulator, cloud and edge agent ...", err=True)
        # The per-machine rate limit is raised for the run: it is the service's policy, not what is measured.
        with command_stack(db, mqtt_url, Path(tmp), machines=1, rate_per_min=10 * n) as stack:
            click.echo(f"sending {n} setpoint commands to {stack.machines[0]} ...", err=True)
            report = run_bench(stack, n)
        report.finish(db)
    total, base = report.figures["api_to_confirmed"], report.figures["device_write_readback"]
    click.echo(f"API -> confirmed (N={n}): p50 {total['p50_ms']:.1f} ms, p99 {total['p99_ms']:.1f} ms, "
               f"max {total['max_ms']:.1f} ms")
    click.echo(f"device write + read-back: p50 {base['p50_ms']:.2f} ms, p99 {base['p99_ms']:.2f} ms")
    click.echo(f"API path / device: p50 {times(report.ratios['p50_vs_device']['value'])}, "
               f"p99 {times(report.ratios['p99_vs_device']['value'])}")  # fmt: skip
    click.echo(machine_line(report.machine), err=True)
    report.write(json_path)
