"""`zhizao bench edge`: OPC UA value changes -> published Sparkplug samples per second, for one agent process.

Processes besides this one: `--servers` asyncua servers changing `--tags` Double nodes each, together at
about `--rate` changes/s; one edge agent (`run_agent`: OPC UA subscription -> mapping -> outbox -> Sparkplug DDATA) publishing to
the real broker (`ZHIZAO_MQTT_URL`, else 127.0.0.1:1883); then, in the same run, the baseline: the same
OPC UA subscription with every sample published as its own MQTT message. This process counts what arrives at
the broker (a subscriber) and reads each publisher's CPU time from /proc, over the same steady window.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import numpy as np

from zhizao.bench.harness import Report, cpu_seconds, json_option, machine_line, times
from zhizao.bench.procs import SITE, agent_config
from zhizao.broker.contract.quality import QUALITY_GOOD
from zhizao.broker.embedded import free_port


# ---- this process: orchestration, broker-side counting, report ----------------------------------------------
class _Counter:
    """Counts samples and messages arriving on a topic filter at the broker (decoded with our codec)."""

    def __init__(self, mqtt_url: str, topic_filter: str, one_sample_each: bool = False) -> None:
        from zhizao.bench.tap import BrokerTap
        from zhizao.broker.sparkplug.codec import decode

        self.samples = 0
        self.messages = 0
        self._decode = decode
        self._one = one_sample_each  # the baseline's messages hold one sample: count, do not decode
        self._lock = threading.Lock()
        self._tap = BrokerTap(mqtt_url, "counter", [topic_filter], self._on_message)

    def _on_message(self, topic: str, payload: bytes) -> None:
        # aliased metrics are samples; named ones are node metrics such as zhizao/Batch
        n = 1 if self._one else int(np.count_nonzero(self._decode(payload).has_alias))
        with self._lock:
            self.samples += n
            self.messages += 1

    def read(self) -> tuple[int, int]:
        """(samples, messages) so far."""
        with self._lock:
            return self.samples, self.messages

    def close(self) -> None:
        """Disconnect."""
        self._tap.close()


def _offered(counter_files: list[Path]) -> int:
    """Value changes written so far by all servers (each dumps its count a few times per second)."""
    total = 0
    for path in counter_files:
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            total += int(path.read_text().split()[0])
    return total


def _spawn(entry: str, *args: str) -> subprocess.Popen[bytes]:
    code = f"from zhizao.bench.procs import {entry}; {entry}()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        return out.decode(errors="replace")
    if proc.stdout is None or proc.stdout.closed:
        return ""  # stopped before
    return proc.stdout.read().decode(errors="replace")


def _measure(
    proc: subprocess.Popen[bytes],
    counter: _Counter,
    offered: list[Path],
    warmup: float,
    seconds: float,
    what: str,
) -> dict[str, float]:
    """Wait for the first samples, skip `warmup`, then measure rates and CPU over `seconds`."""
    deadline = time.monotonic() + 60
    while counter.read()[0] == 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise click.ClickException(f"{what}: no samples reached the broker\n{_stop(proc)[-3000:]}")
        time.sleep(0.05)
    time.sleep(warmup)
    s0, m0 = counter.read()
    c0, w0 = cpu_seconds(proc.pid), _offered(offered)
    t0 = time.monotonic()
    time.sleep(seconds)
    s1, m1 = counter.read()
    c1, w1 = cpu_seconds(proc.pid), _offered(offered)
    dt = time.monotonic() - t0
    samples, messages = s1 - s0, m1 - m0
    return {
        "samples_per_s": samples / dt,
        "messages_per_s": messages / dt,
        "samples_per_message": samples / messages if messages else 0.0,
        "cpu_percent": 100.0 * (c1 - c0) / dt,
        "offered_per_s": (w1 - w0) / dt,
        "seconds": dt,
    }


def _outbox_appends(work: Path, blocks: int, per_block: int) -> dict[str, float]:
    """Outbox appends (written to the OS, no fsync per append) against SQLite WAL inserts of the same blocks,
    one commit each (the usual store-and-forward design; synchronous=NORMAL is also durable on a kill -9)."""
    import sqlite3

    from zhizao.edge.node.config import OutboxConfig
    from zhizao.edge.outbox import Outbox
    from zhizao.edge.outbox.records import encode_record
    from zhizao.edge.samples import SampleBlock

    rng = np.random.default_rng(0)
    block = SampleBlock(
        rng.integers(0, 1000, per_block).astype(np.int32),
        np.arange(per_block, dtype=np.int64) + 1_700_000_000_000,
        rng.random(per_block),
        np.full(per_block, QUALITY_GOOD, np.int16),
    )
    box = Outbox(work / "outbox-bench", OutboxConfig(max_bytes=1 << 34, fsync_interval_s=1.0))
    t0 = time.perf_counter()
    for _ in range(blocks):
        box.append(block)
    outbox_s = time.perf_counter() - t0
    box.close()
    db = sqlite3.connect(work / "outbox-bench.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, record BLOB)")
    t0 = time.perf_counter()
    for i in range(blocks):
        db.execute("BEGIN")
        db.execute("INSERT INTO outbox (record) VALUES (?)", (encode_record(i, block),))
        db.execute("COMMIT")
    sqlite_s = time.perf_counter() - t0
    db.close()
    n = blocks * per_block
    return {
        "block_samples": per_block,
        "outbox_samples_per_s": n / outbox_s,
        "sqlite_samples_per_s": n / sqlite_s,
    }


@click.command("edge")
@click.option(
    "--seconds",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="Measured window per phase.",
)
@click.option(
    "--tags", type=click.IntRange(min=1), default=2000, show_default=True, help="OPC UA nodes per server."
)
@click.option(
    "--servers", type=click.IntRange(1, 8), default=2, show_default=True, help="OPC UA server processes."
)
@click.option("--rate", type=click.FloatRange(min=1), default=40_000.0, show_default=True,
              help="Value changes per second offered by all servers together (they run flat out when they cannot).")  # fmt: skip
@json_option
@click.option("--server-path", type=click.Choice(["inject", "write"]), default="inject", show_default=True,
              help="How the servers change values: queue notifications directly, or asyncua's node writes (slower).")  # fmt: skip
@click.option("--quick", is_flag=True, help="CI smoke run: 1 server, 400 tags, 2 s windows (< 30 s in all).")
def bench_edge(
    seconds: float,
    tags: int,
    servers: int,
    rate: float,
    server_path: str,
    json_path: Path | None,
    quick: bool,
) -> None:
    """OPC UA value changes -> published Sparkplug samples per second, against one MQTT message per sample."""
    from zhizao.broker.mqtt import resolve_mqtt_url

    if quick:
        seconds, tags, servers, rate = 2.0, 400, 1, 8_000.0
    warmup = 1.0 if quick else 2.0
    mqtt_url = resolve_mqtt_url(None)
    work = Path(tempfile.mkdtemp(prefix="zhizao-bench-edge-"))
    ports = [free_port() for _ in range(servers)]
    counters = [work / f"offered-{no}" for no in range(servers)]
    procs = [
        _spawn(
            "serve_main", str(port), str(no), str(tags), str(rate / servers), str(counters[no]), server_path
        )
        for no, port in enumerate(ports)
    ]
    report = Report("edge")
    results = report.figures
    broker = _without_credentials(mqtt_url)
    results.update(servers=servers, tags=tags * servers, offered_rate=rate, server_path=server_path, broker=broker)
    try:
        for server in procs:
            assert server.stdout is not None
            line = server.stdout.readline().decode().strip()
            if line != "ready":
                raise click.ClickException(f"OPC UA server did not start: {line}\n{_stop(server)[-3000:]}")
        endpoints = [f"opc.tcp://127.0.0.1:{port}/bench" for port in ports]
        click.echo(f"bench edge: {servers} OPC UA servers x {tags} nodes, broker {broker}", err=True)
        for phase, entry, edge in (
            ("agent", "agent_main", "bench-agent"),
            ("baseline", "baseline_main", "bench-base"),
        ):
            cfg = agent_config(endpoints, tags, edge, str(work / edge), mqtt_url)
            counter = _Counter(
                mqtt_url, f"spBv1.0/{SITE}/DDATA/{edge}/#", one_sample_each=phase == "baseline"
            )
            cfg_path = work / f"{edge}.json"
            cfg_path.write_text(json.dumps(cfg))
            proc = _spawn(entry, str(cfg_path))
            try:
                click.echo(f"bench edge: measuring {phase} for {seconds:g} s ...", err=True)
                results[phase] = _measure(proc, counter, counters, warmup, seconds, phase)
            finally:
                out = _stop(proc)
                counter.close()
            if proc.returncode not in (0, -signal.SIGTERM):
                click.echo(f"bench edge: {phase} exited with {proc.returncode}:\n{out[-2000:]}", err=True)
        for server in procs:
            _stop(server)
        results["outbox_append"] = _outbox_appends(work, 200 if quick else 2000, 1000)
    finally:
        for server in procs:
            _stop(server)
        shutil.rmtree(work, ignore_errors=True)
    a, b = results["agent"], results["baseline"]
    for r in (a, b):  # samples per CPU-second of the publishing process, each from its own phase
        r["samples_per_cpu_s"] = 100.0 * r["samples_per_s"] / max(r["cpu_percent"], 1e-9)
    rate_x = report.ratio("samples_per_s", "agent.samples_per_s", "baseline.samples_per_s")
    cpu_x = report.ratio("samples_per_cpu_s", "agent.samples_per_cpu_s", "baseline.samples_per_cpu_s")
    outbox_x = report.ratio("outbox_append", "outbox_append.outbox_samples_per_s",
                            "outbox_append.sqlite_samples_per_s")
    click.echo(machine_line(report.finish()))
    for name, r in (("agent (Sparkplug DDATA)", a), ("baseline (1 msg/sample)", b)):
        click.echo(
            f"{name:26s} {r['samples_per_s']:>10,.0f} samples/s  {r['samples_per_message']:>7.1f} samples/msg  "
            f"{r['cpu_percent']:>5.0f}% CPU  (server offered {r['offered_per_s']:,.0f}/s)"
        )
    click.echo(f"ratio: {times(rate_x)} samples/s, {times(cpu_x)} samples per CPU-second (agent vs baseline)")
    ob = results["outbox_append"]
    click.echo(
        f"outbox append ({ob['block_samples']}-sample blocks): {ob['outbox_samples_per_s']:,.0f} samples/s, "
        f"SQLite WAL insert+commit per block {ob['sqlite_samples_per_s']:,.0f} samples/s ({times(outbox_x, 1)})"
    )
    report.write(json_path)


def _without_credentials(url: str) -> str:
    """The broker URL as reported: scheme, host and port, never a user name or password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.hostname is None:
        return url
    return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()
