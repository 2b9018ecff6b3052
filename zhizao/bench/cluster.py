"""`zhizao bench cluster`: the whole seeded cluster in the simulator, one agent process per line, on a private
broker; reports samples/s and CPU per agent and checks that every pass-through value the simulator produced
reached the broker as DDATA, none of them twice as live data (exit code 1 otherwise).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

from zhizao.bench.harness import Report, cpu_seconds, json_option, machine_line
from zhizao.broker.embedded import BrokerError, free_port


def _zhizao(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "zhizao", *argv], stdout=out, stderr=subprocess.STDOUT)


class _Capture:
    """Every Sparkplug message the broker delivers, kept raw with its arrival order."""

    def __init__(self, url: str) -> None:
        from zhizao.bench.tap import BrokerTap

        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self._tap = BrokerTap(url, "cluster", ["spBv1.0/#"], self._on_message)

    def _on_message(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.messages.append((topic, payload))

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def close(self) -> None:
        self._tap.close()


class Cluster:
    """The seeded cluster on a broker: the simulator (recording what it produced) and one agent process per line.

    `bench cluster` and `bench decode` start it the same way; `stop()` ends the agents with SIGINT (as an
    operator would) and checks that each exited cleanly, `kill()` removes whatever still runs."""

    def __init__(self, work: Path, url: str, *, speed: float, seed: int) -> None:
        from zhizao.edge.bootstrap import write_agent_configs
        from zhizao.seeds import load_scenario

        scenario = load_scenario()
        self.work = work
        self.edges = [line.id for site in scenario.sites for line in site.lines]
        self.record = work / "sim.record"
        port = free_port()
        click.echo(f"simulator + {len(self.edges)} agents on {url}; work dir {work}", err=True)
        self.sim = _zhizao(["sim", "--port", str(port), "--speed", str(speed), "--seed", str(seed),
                            "--record", str(self.record), "--data-dir", str(work / "sim")], work / "sim.log")  # fmt: skip
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        try:
            paths = write_agent_configs(scenario, work / "configs", f"opc.tcp://127.0.0.1:{port}/zhizao/sim",
                                        mqtt_url=url, outbox_root=str(work / "edge"))  # fmt: skip
            self.agents = {p.stem: _zhizao(["edge", "run", str(p)], work / f"{p.stem}.log") for p in paths}
        except BaseException:
            self.kill()
            raise

    def wait_streaming(self, streaming: Callable[[], set[str]], timeout_s: float = 180.0) -> None:
        """Wait until every line's agent publishes DDATA (`streaming()`: the edge ids seen doing so)."""
        deadline = time.monotonic() + timeout_s
        while not streaming() >= set(self.edges):
            procs = [self.sim, *self.agents.values()]
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise click.ClickException(f"agents not streaming after start-up; logs in {self.work}")
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGINT to every agent (each must exit 0), then to the simulator."""
        for p in self.agents.values():
            p.send_signal(signal.SIGINT)
        for e, p in self.agents.items():
            if p.wait(30) != 0:
                raise click.ClickException(f"agent {e} exited with {p.returncode}; see {self.work / (e + '.log')}")
        self.sim.send_signal(signal.SIGINT)
        self.sim.wait(30)
        time.sleep(0.5)

    def kill(self) -> None:
        """Kill whatever of the cluster still runs."""
        for p in [self.sim, *self.agents.values()]:
            if p.poll() is None:
                p.kill()
                p.wait(10)  # reaped: a killed child left unwaited stays a zombie


def start_broker_or_fail(work: Path) -> tuple[str, Callable[[], None]]:
    """A private broker for a benchmark run (mosquitto, else the embedded one): (url, stop)."""
    from zhizao.broker.embedded import start_broker

    try:
        return start_broker(work / "broker")
    except BrokerError as exc:  # e.g. neither mosquitto nor the embedded extra: the message says which to install
        raise click.ClickException(str(exc)) from None


@click.command("cluster")
@click.option("--seconds", type=click.FloatRange(min=5), default=120.0, show_default=True, help="Measured run.")
@click.option("--speed", type=click.FloatRange(min=1), default=1.0, show_default=True, help="Simulator speed.")
@click.option("--seed", type=int, default=7, show_default=True, help="Simulator seed.")
@json_option
def bench_cluster(seconds: float, speed: float, seed: int, json_path: Path | None) -> None:
    """Full cluster, one agent per line: samples/s and CPU per agent; every produced sample published once."""
    from zhizao.broker.sparkplug.codec import decode
    from zhizao.edge.sim.record import read_record

    work = Path(tempfile.mkdtemp(prefix="zhizao-bench-cluster-"))
    url, stop_broker = start_broker_or_fail(work)
    cap = _Capture(url)
    cluster: Cluster | None = None
    try:
        cluster = Cluster(work, url, speed=speed, seed=seed)
        edges, record, agents = cluster.edges, cluster.record, cluster.agents

        def streaming() -> set[str]:  # start-up is not measured
            with cap.lock:
                return {t.split("/")[3] for t, _ in cap.messages if "/DDATA/" in t}

        cluster.wait_streaming(streaming)
        cpu0 = {e: cpu_seconds(p.pid) for e, p in agents.items()}
        first = cap.count()
        click.echo(f"measuring for {seconds:g} s", err=True)
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        cpu = {e: cpu_seconds(p.pid) - cpu0[e] for e, p in agents.items()}
        last = cap.count()
        cluster.stop()
    finally:
        if cluster is not None:
            cluster.kill()
        cap.close()
        stop_broker()

    names: dict[str, dict[int, tuple[str, int]]] = defaultdict(dict)  # edge -> alias -> (metric, datatype)
    live_seen: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    duplicates = 0
    per_edge = {e: [0, 0] for e in edges}  # samples, messages in the measured window
    for n, (topic, payload) in enumerate(cap.messages):
        parts = topic.split("/")
        kind, edge = parts[2], parts[3]
        if kind in ("NBIRTH", "DBIRTH"):
            d = decode(payload)
            for i in range(d.n):
                if d.has_alias[i]:
                    names[edge][int(d.alias[i])] = (d.names[i], int(d.datatype[i]))
        elif kind == "DDATA":
            table = names[edge]
            d = decode(payload, {a: t for a, (_, t) in table.items()})
            if first <= n < last:
                per_edge[edge][0] += d.n
                per_edge[edge][1] += 1
            for a, t, v, h in zip(d.alias.tolist(), d.ts_ms.tolist(), d.value.tolist(), d.is_historical.tolist(),
                                  strict=True):  # fmt: skip
                name = table.get(int(a), ("?", 0))[0]
                if h or name.startswith("zhizao/"):
                    continue
                seen = live_seen[(parts[4], name)]
                duplicates += t in seen
                seen[t] = v
    node_ids, index, ts, value = read_record(record)
    last_ts = max(max(s) for s in live_seen.values() if s)
    first_ts = min(min(s) for s in live_seen.values() if s)
    cutoff = last_ts - int(3 * speed * 1000)  # the agents' last publish intervals may not have been sent
    direct = {"MachDesignSpeed": "Rate/Ideal", "CurMachSpeed": "Rate/Current", "MachSpeed": "Rate/Setpoint"}
    checked, missing = 0, []
    for i, node in enumerate(node_ids):
        _, _, machine, tag = node.split("/", 3)
        metric: str | None = direct.get(tag, tag if "/" in tag else None)
        if metric is None:
            continue  # State and counters are derived (checked by the mapping tests)
        got = live_seen.get((machine, metric), {})
        # from the first value the agent saw (its subscription started then) to shortly before it stopped;
        # a signal never seen at all counts from shortly after the first agent streamed
        since = min(got) if got else first_ts + int(3 * speed * 1000)
        sel = (index == i) & (ts > since) & (ts <= cutoff)
        for t, v in zip(ts[sel].tolist(), value[sel].tolist(), strict=True):
            checked += 1
            if t not in got or not np.isclose(got[t], v, rtol=1e-12, atol=0.0):
                missing.append(f"{node}@{t}")
    rates = {e: s / elapsed for e, (s, _) in per_edge.items()}
    per_msg = sum(s for s, _ in per_edge.values()) / max(1, sum(m for _, m in per_edge.values()))
    cpu_pct = {e: 100.0 * c / elapsed for e, c in cpu.items()}
    report = Report("cluster")
    report.figures.update(
        seconds=elapsed, speed=speed, agents=len(edges), samples_per_s=rates, samples_per_ddata=per_msg,
        cpu_percent=cpu_pct, produced_checked=checked, missing=len(missing), live_duplicates=duplicates,
    )
    click.echo(machine_line(report.finish()))
    click.echo(f"{'agent':<10} {'samples/s':>10} {'CPU %':>7}")
    for e in edges:
        click.echo(f"{e:<10} {rates[e]:>10.1f} {cpu_pct[e]:>7.2f}")
    click.echo(f"samples per DDATA {per_msg:.1f}; produced pass-through samples checked {checked}, "
               f"missing {len(missing)}, live duplicates {duplicates}")  # fmt: skip
    report.write(json_path)
    if missing or duplicates or checked == 0:
        raise click.ClickException(f"loss or duplication: e.g. {missing[:3]}; logs in {work}")
