"""`zhizao bench faults`: the fault matrix, row by row, with every sample counted against a tap on the outbox.

One row is one small world of real parts, started from nothing: a scratch PostgreSQL database, a private
Mosquitto (two, bridged, for the site-broker row), an OPC UA server with Double tags changing at a steady
rate (`bench.procs.serve_main`, optionally with its clock off by an offset), two edge agents as
subprocesses (`zhizao edge run`), and the cloud ingest as one or two subprocesses (`cloud_main`). The row
injects its fault mid-stream, production stops, the agents drain, and the row is counted:

- the **tap**: a thread hard-links every outbox segment file of every agent the moment it appears, so the
  records survive their deletion after the ack; record positions are contiguous, so a record the tap missed
  is detected (`TapError`), never silently uncounted. `state.json`'s released watermark says which records
  were acknowledged (released by the agent).
- **attempted**: distinct (edge node, machine, metric, source ms) samples the agents appended; **acknowledged**:
  those in released records; **stored**: those in `samples`/`samples_text`; **quarantined**: those kept in
  `quarantine` and not stored; **lost**: attempted, neither stored nor quarantined; **acknowledged but
  lost**: lost samples the agent had already released; **duplicated**: rows beyond one per sample over
  `samples`, `samples_text` and `quarantine`.

`ROWS` names every row; `run_row(name, server_url, work_dir, seconds)` runs one and returns its `RowResult`.
The tests (tests/faults/) run each row for a few seconds; the bench prints the table and the JSON report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from zhizao.bench.attacks import ATTACKS, attack_table, bench_attacks
from zhizao.bench.harness import Report, json_option, machine_line, scratch_database

__all__ = ["ROWS", "Counts", "Rig", "RowResult", "TapError", "bench_faults", "cloud_main", "run_row"]

SITE = "faults"
TAGS = 20
PY = sys.executable
_READY_TIMEOUT_S = 60.0

# A sample is the edge's (edge node, device, metric, time): the device of a tag's machine (migration 0014: two edge
# nodes with a device `m1` are two machines, `m1` and `m1--edge-2`).
_MACHINE_JOIN = "LEFT JOIN machines m ON m.site_id = t.site_id AND m.machine_id = t.machine_id"
_DEVICE = "coalesce(m.device_id, t.machine_id)"


class TapError(AssertionError):
    """The tap cannot vouch for its count (a record it never saw); the row is void, not passed."""


# ---- processes ------------------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, cond: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> None:
    """Poll `cond` until true; TimeoutError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(step_s)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _kill9(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def cloud_main() -> None:
    """Entry of a cloud ingest process: argv = database URL, MQTT URL, host id, IngestSettings JSON.
    Prints `up` once started; SIGTERM stops it cleanly."""
    import logging

    from zhizao.cloud.ingest.service import IngestService
    from zhizao.cloud.ingest.settings import IngestSettings

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    settings = IngestSettings.model_validate(json.loads(sys.argv[4]))
    service = IngestService(sys.argv[1], sys.argv[2], sys.argv[3], settings)
    service.start()
    print("up", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    service.stop()


# ---- a TCP proxy that can stall or reset its connections -------------------------------------------------------
class FaultProxy:
    """127.0.0.1:`port` -> 127.0.0.1:`target`, in its own thread; `stall()` stops forwarding (a half-open
    link: nothing passes, nothing closes), `resume()` lets it flow again, `reset()` sends an RST both ways."""

    def __init__(self, target: int) -> None:
        self.port = free_port()
        self.target = target
        self.resets = 0
        self._flowing: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("fault proxy did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for w in list(self._writers):
                w.transport.abort()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_w}
        await asyncio.gather(self._pump(reader, up_w), self._pump(up_r, writer), return_exceptions=True)
        for w in (writer, up_w):
            self._writers.discard(w)
            w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        while data := await reader.read(65536):
            await self._flowing.wait()
            writer.write(data)
            await writer.drain()
        writer.transport.abort()

    def _call(self, fn: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            fn()
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def stall(self) -> None:
        """Stop forwarding in both directions; connections stay open."""
        assert self._flowing is not None
        self._call(self._flowing.clear)

    def resume(self) -> None:
        """Forward again (what queued in the proxy is delivered)."""
        assert self._flowing is not None
        self._call(self._flowing.set)

    def reset(self) -> None:
        """Abort every proxied connection (RST to both peers)."""

        def abort() -> None:
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()

        self.resets += 1
        self._call(abort)

    def close(self) -> None:
        """Stop the proxy thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# ---- the tap --------------------------------------------------------------------------------------------------
class OutboxTap:
    """Hard-links every segment file of the watched outbox directories into `tap_dir` as soon as it appears."""

    def __init__(self, tap_dir: Path, interval_s: float = 0.005) -> None:
        self.tap_dir = tap_dir
        self.tap_dir.mkdir(parents=True, exist_ok=True)
        self.interval_s = interval_s
        self._watched: dict[str, Path] = {}
        self._seen: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="outbox-tap", daemon=True)
        self._thread.start()

    def watch(self, name: str, outbox: Path) -> None:
        """Tap the outbox directory of agent `name` (created by the caller before the agent starts)."""
        (self.tap_dir / name).mkdir(exist_ok=True)
        with self._lock:
            self._watched[name] = outbox
        self.poll()

    def poll(self) -> None:
        """One pass over the watched directories (the thread calls it every `interval_s`)."""
        with self._lock:
            for name, outbox in self._watched.items():
                with contextlib.suppress(FileNotFoundError), os.scandir(outbox) as it:
                    for entry in it:
                        if not entry.name.endswith(".seg"):
                            continue
                        with contextlib.suppress(FileNotFoundError):
                            ino = entry.inode()
                            if (name, ino) in self._seen:
                                continue
                            os.link(entry.path, self.tap_dir / name / f"{ino}-{entry.name}")
                            self._seen.add((name, ino))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def close(self) -> None:
        """Stop polling (after one last pass)."""
        self._stop.set()
        self._thread.join(10)
        self.poll()

    def records(self, name: str) -> dict[int, Any]:
        """position -> SampleBlock of every record agent `name` appended (TapError when one is missing)."""
        from zhizao.edge.outbox.records import iter_segment_blocks

        out: dict[int, Any] = {}
        for path in sorted((self.tap_dir / name).glob("*.seg")):
            for position, block in iter_segment_blocks(path):
                out[position] = block
        if out:
            missing = sorted(set(range(min(out), max(out) + 1)) - set(out))
            if missing:
                raise TapError(f"tap of {name}: records {missing[:10]} (of {len(missing)}) were never seen")
        return out


def released_watermark(outbox: Path) -> int:
    """The first record position the agent has not released (0 before its first ack)."""
    try:
        return int(json.loads((outbox / "state.json").read_text()).get("released", 0))
    except (OSError, ValueError):
        return 0


# ---- counts ---------------------------------------------------------------------------------------------------
@dataclass
class Counts:
    """Samples of one row (see the module docstring for each definition)."""

    attempted: int = 0
    acknowledged: int = 0
    stored: int = 0
    lost: int = 0
    acknowledged_but_lost: int = 0
    duplicated: int = 0
    quarantined: int = 0
    appended: int = 0  # raw samples in the records, repeats of one sample included
    unexpected: int = 0  # stored machine samples no agent appended

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing acknowledged away, nothing stored twice, nothing stored out of nowhere."""
        return self.lost == self.acknowledged_but_lost == self.duplicated == self.unexpected == 0


@dataclass
class RowResult:
    """One row's counts, what was injected, and how long it ran."""

    row: str
    counts: Counts
    seconds: float
    injected: dict[str, Any] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    lost_examples: list[str] = field(default_factory=list)


# ---- the rig --------------------------------------------------------------------------------------------------
@dataclass
class RigOptions:
    """What a row's world is made of."""

    agents: int = 2
    tags: int = TAGS
    rate: float = 200.0  # value changes per second offered by the OPC UA server (all tags)
    clock_offset_s: float = 0.0
    workers: int = 1  # cloud ingest processes
    shared: bool = False  # workers on a $share subscription (sessions and the ack ledger in PostgreSQL), acks on
    per_site_workers: bool = False  # agent i in its own site, worker i subscribed to that site only (acks on)
    bridge: bool = False  # agents on a site broker bridged to the cloud broker
    proxy: bool = False  # agents reach their broker through a FaultProxy
    replay_samples_per_interval: int = 50_000
    keepalive_s: int = 30


class Rig:
    """One row's world (see the module docstring); every part can be killed and started again."""

    def __init__(self, work_dir: Path, database_url: str, options: RigOptions) -> None:
        self.dir = work_dir
        self.db = database_url
        self.opt = options
        self.logs = work_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cloud_port = free_port()
        self.site_port = free_port() if options.bridge else self.cloud_port
        self.brokers: dict[str, subprocess.Popen[bytes] | None] = {}
        self.clouds: list[subprocess.Popen[bytes] | None] = [None] * options.workers
        self.agents: list[subprocess.Popen[bytes] | None] = [None] * options.agents
        self.source: subprocess.Popen[bytes] | None = None
        self.proxy: FaultProxy | None = None
        # Every row runs with acks on: a record lives until the cloud committed it, for the tap to link.
        self.tap = OutboxTap(work_dir / "tap", 0.005)
        self.names = [f"edge-{i + 1}" for i in range(options.agents)]
        self.outboxes = [work_dir / "outbox" / n for n in self.names]
        self.configs: list[Path] = []
        self.mappings: list[Any] = []
        self.source_port = free_port()

    # -- brokers
    def _broker_conf(self, which: str) -> Path:
        port = self.cloud_port if which == "cloud" else self.site_port
        lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false"]
        if which == "site":
            lines += bridge_config(Path(__file__).resolve().parents[2] / "broker" / "mosquitto"
                                   / "bridge-site-to-cloud.conf", SITE, self.cloud_port)  # fmt: skip
        path = self.dir / f"mosquitto-{which}.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_broker(self, which: str = "cloud") -> None:
        """Start (again) the cloud broker or the site broker on its port."""
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        proc = _spawn([exe, "-c", str(self._broker_conf(which))], self.logs / f"mosquitto-{which}.log")
        self.brokers[which] = proc
        port = self.cloud_port if which == "cloud" else self.site_port
        wait_until(f"mosquitto ({which}) on {port}", lambda: _listening(port) or proc.poll() is not None, 10)
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto ({which}) exited: see {self.logs}/mosquitto-{which}.log")

    def stop_broker(self, which: str = "cloud", kill: bool = False) -> None:
        """Stop the broker (SIGTERM, or SIGKILL with `kill`)."""
        proc = self.brokers.get(which)
        (_kill9 if kill else _stop)(proc)

    # -- source
    def spawn_source(self) -> None:
        """The OPC UA server (bench.procs.serve_main, write mode: real address-space writes); `wait_source`."""
        code = "from zhizao.bench.procs import serve_main; serve_main()"
        argv = [PY, "-c", code, str(self.source_port), "0", str(self.opt.tags), str(self.opt.rate),
                str(self.dir / "source.count"), "write", str(self.opt.clock_offset_s)]  # fmt: skip
        self.source = _spawn(argv, self.logs / "source.log")

    def wait_source(self) -> None:
        """Wait until the OPC UA server listens."""
        assert self.source is not None
        wait_until("OPC UA source", lambda: _listening(self.source_port) or self.source.poll() is not None,  # type: ignore[union-attr]
                   _READY_TIMEOUT_S)  # fmt: skip
        if self.source.poll() is not None:
            raise RuntimeError(f"OPC UA source exited: see {self.logs}/source.log")

    # -- cloud
    def start_cloud(self, i: int = 0) -> None:
        """Start cloud ingest worker `i` and wait for its `up`."""
        self.wait_cloud(i, self.spawn_cloud(i))

    def spawn_cloud(self, i: int = 0) -> subprocess.Popen[bytes]:
        """Start cloud ingest worker `i`; `wait_cloud` waits for its `up`."""
        settings: dict[str, Any] = {"reorder_timeout_ms": 500, "rebirth_min_interval_ms": 1000}
        if self.opt.shared:
            settings |= {"shared_subscription": True, "sites": [SITE]}
        if self.opt.per_site_workers:
            settings |= {"sites": [self.site_of(i)]}
        code = "from zhizao.bench.faults import cloud_main; cloud_main()"
        host = f"zhizao-faults-{i}" if self.opt.workers > 1 else "zhizao-faults"
        mqtt = f"mqtt://127.0.0.1:{self.cloud_port}"
        with (self.logs / f"cloud-{i}.log").open("ab") as err:
            proc = subprocess.Popen([PY, "-c", code, self.db, mqtt, host, json.dumps(settings)],
                                    stdout=subprocess.PIPE, stderr=err, start_new_session=True)  # fmt: skip
        return proc

    def wait_cloud(self, i: int, proc: subprocess.Popen[bytes]) -> None:
        """Wait for worker `i`'s `up` line (RuntimeError when it exits first)."""
        assert proc.stdout is not None
        with proc.stdout:
            line = proc.stdout.readline().strip()
        if line != b"up":
            proc.kill()
            proc.wait(10)  # reaped: a killed child left unwaited stays a zombie
            raise RuntimeError(f"cloud worker {i} did not start: see {self.logs}/cloud-{i}.log")
        self.clouds[i] = proc

    def kill_cloud(self, i: int = 0) -> None:
        """kill -9 cloud worker `i`."""
        _kill9(self.clouds[i])

    # -- agents
    def site_of(self, i: int) -> str:
        """The site agent `i` belongs to."""
        return f"{SITE}-{i + 1}" if self.opt.per_site_workers else SITE

    def _write_configs(self) -> None:
        from zhizao.edge.config import parse_agent_config
        from zhizao.edge.mapping import build_mapping

        if self.opt.proxy:
            self.proxy = FaultProxy(self.site_port)
        port = self.proxy.port if self.proxy else self.site_port
        for i, (name, outbox) in enumerate(zip(self.names, self.outboxes, strict=True)):
            outbox.mkdir(parents=True, exist_ok=True)
            self.tap.watch(name, outbox)
            signals = [{"metric": f"T{k:05d}", "node_id": f"ns=2;s=bench/s0/m000/T{k:05d}"}
                       for k in range(self.opt.tags)]  # fmt: skip
            config = {
                "site": self.site_of(i),
                "edge_node": name,
                "mqtt": {"url": f"mqtt://127.0.0.1:{port}", "keepalive_s": self.opt.keepalive_s,
                         "reconnect_min_s": 0.2, "reconnect_max_s": 2},
                "sparkplug": {"publish_interval_ms": 100, "health_interval_s": 1,
                              "replay_samples_per_interval": self.opt.replay_samples_per_interval},
                "outbox": {"dir": str(outbox), "fsync_interval_s": 1.0, "acks": True},
                "adapters": [{"type": "opcua", "name": "src",
                              "endpoint": f"opc.tcp://127.0.0.1:{self.source_port}/bench",
                              "security": {"mode": "None"},
                              "subscription": {"publishing_interval_ms": 100, "sampling_interval_ms": 20,
                                               "queue_size": 100}}],
                "machines": [{"id": "m1", "adapter": "src", "oee": False, "signals": signals}],
            }  # fmt: skip
            path = self.dir / f"{name}.json"
            path.write_text(json.dumps(config))
            self.configs.append(path)
            self.mappings.append(build_mapping(parse_agent_config(config, str(path))))

    def start_agent(self, i: int) -> None:
        """Start agent `i` (`zhizao edge run`)."""
        env = {k: v for k, v in os.environ.items() if k != "ZHIZAO_MQTT_URL"}
        self.agents[i] = _spawn([PY, "-m", "zhizao", "edge", "run", str(self.configs[i])],
                                self.logs / f"{self.names[i]}.log", env)  # fmt: skip

    def kill_agent(self, i: int) -> None:
        """kill -9 agent `i`."""
        _kill9(self.agents[i])

    # -- the whole
    def start(self) -> None:
        """Brokers, source, cloud workers, agents; returns once samples reach the database."""
        self.start_broker("cloud")
        if self.opt.bridge:
            self.start_broker("site")
        # Started side by side (each takes seconds to import and initialise); agents once the source listens.
        self.spawn_source()
        clouds = [self.spawn_cloud(i) for i in range(self.opt.workers)]
        self._write_configs()
        self.wait_source()
        for i in range(self.opt.agents):
            self.start_agent(i)
        for i, proc in enumerate(clouds):
            self.wait_cloud(i, proc)
        self.wait_stored(1, _READY_TIMEOUT_S)

    def appended(self) -> int:
        """Samples the tap has seen so far (from the linked files' sizes; cheap, approximate)."""
        from zhizao.edge.outbox.records import BYTES_PER_SAMPLE

        return sum(p.stat().st_size for p in self.tap.tap_dir.glob("*/*.seg")) // BYTES_PER_SAMPLE

    def wait_appended(self, more: int, timeout_s: float = 60) -> None:
        """Wait until the agents have appended about `more` further samples (production goes on)."""
        start = self.appended()
        self._check_alive()
        wait_until(f"{more} more samples appended", lambda: self.appended() >= start + more, timeout_s)

    def stored(self) -> int:
        """Rows the cloud has kept so far: samples, text samples and quarantine."""
        import psycopg

        with psycopg.connect(self.db) as conn:
            row = conn.execute("SELECT (SELECT count(*) FROM samples) + (SELECT count(*) FROM samples_text)"
                               " + (SELECT count(*) FROM quarantine)").fetchone()  # fmt: skip
        return int(row[0]) if row else 0

    def wait_stored(self, more: int, timeout_s: float = 60) -> None:
        """Wait until the cloud has kept (stored or quarantined) `more` further samples."""
        start = self.stored()
        wait_until(f"{more} more samples stored", lambda: self.stored() >= start + more, timeout_s, 0.2)

    def _check_alive(self) -> None:
        for name, proc in zip(self.names, self.agents, strict=True):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"agent {name} exited with {proc.returncode}: see {self.logs}/{name}.log")

    def drain(self, timeout_s: float) -> None:
        """Stop production, then wait until every record every agent appended is released."""
        _stop(self.source)

        def drained() -> bool:
            self.tap.poll()
            for name, outbox in zip(self.names, self.outboxes, strict=True):
                files = list((self.tap.tap_dir / name).glob("*.seg"))
                if not files:
                    continue
                from zhizao.edge.outbox.records import iter_segment_blocks

                last = max((p for f in files for p, _ in iter_segment_blocks(f)), default=-1)
                if released_watermark(outbox) <= last:
                    return False
            return True

        deadline = time.monotonic() + timeout_s
        while True:  # drained twice in a row, a second apart: no late append (e.g. Bad quality on disconnect)
            wait_until("outboxes drained", drained, max(deadline - time.monotonic(), 0.1), 0.25)
            time.sleep(1.0)
            if drained():
                return

    def count(self) -> RowResult:
        """Count every sample the tap saw against the database."""
        import psycopg

        attempted: set[tuple[str, str, str, int]] = set()
        acked: set[tuple[str, str, str, int]] = set()
        appended = 0
        for name, outbox, mapping in zip(self.names, self.outboxes, self.mappings, strict=True):
            table = mapping.signals.signals
            released = released_watermark(outbox)
            for position, block in self.tap.records(name).items():
                appended += len(block)
                for sig, ts in zip(block.signal.tolist(), block.ts_ms.tolist(), strict=True):
                    key = (name, table[sig].machine, table[sig].metric, int(ts))
                    attempted.add(key)
                    if position < released:
                        acked.add(key)
        stored: dict[tuple[str, str, str, int], int] = {}
        quarantined: dict[tuple[str, str, str, int], int] = {}
        reasons: dict[str, int] = {}
        with psycopg.connect(self.db) as conn:
            for table_name in ("samples", "samples_text"):
                for edge, machine, metric, ts in conn.execute(
                    f"SELECT t.edge_node_id, {_DEVICE}, t.name, (extract(epoch FROM s.ts) * 1000)::bigint"
                    f" FROM {table_name} s JOIN tags t USING (tag_id) {_MACHINE_JOIN} WHERE t.machine_id IS NOT NULL"
                ):
                    key = (edge, machine, metric, int(ts))
                    stored[key] = stored.get(key, 0) + 1
            for edge, machine, metric, ts, reason in conn.execute(
                f"SELECT t.edge_node_id, {_DEVICE}, t.name, q.ts_ms, q.reason"
                f" FROM quarantine q JOIN tags t USING (tag_id) {_MACHINE_JOIN} WHERE t.machine_id IS NOT NULL"
            ):
                key = (edge, machine, metric, int(ts))
                quarantined[key] = quarantined.get(key, 0) + 1
                reasons[reason] = reasons.get(reason, 0) + 1
        kept = stored.keys() | quarantined.keys()
        lost = attempted - kept
        counts = Counts(
            attempted=len(attempted),
            acknowledged=len(acked),
            stored=len(attempted & stored.keys()),
            lost=len(lost),
            acknowledged_but_lost=len(lost & acked),
            duplicated=sum(stored.get(k, 0) + quarantined.get(k, 0) - 1 for k in attempted & kept),
            quarantined=len((attempted & quarantined.keys()) - stored.keys()),
            appended=appended,
            unexpected=len(kept - attempted),
        )
        examples = [f"{e}/{m}/{t}@{ts}" for e, m, t, ts in sorted(lost)[:5]]
        return RowResult("", counts, 0.0, quarantine_reasons=reasons, lost_examples=examples)

    def close(self) -> None:
        """End everything this rig started (kill -9: the row is counted; nothing is left to keep)."""
        self.tap.close()
        procs = [p for p in (*self.agents, self.source, *self.clouds, *self.brokers.values()) if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)  # reaped: a killed child left unwaited stays a zombie
        for proc in procs:
            proc.wait(10)
        if self.proxy is not None:
            self.proxy.close()


def bridge_config(shipped: Path, site: str, cloud_port: int) -> list[str]:
    """The shipped bridge config for `site`, pointed at the cloud broker on 127.0.0.1 without TLS (the test
    brokers have no certificates); every other line as shipped."""
    out = []
    for raw in shipped.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or (line.startswith("bridge_") and "file" in line):
            continue
        if line.startswith("bridge_insecure"):
            continue
        if line.startswith("address "):
            line = f"address 127.0.0.1:{cloud_port}"
        out.append(line.replace("sh-lingang", site))
    return out


# ---- the rows -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """A fault: how its world is built and what it does mid-stream (`inject(rig, seconds) -> what it did`)."""

    name: str
    title: str
    options: RigOptions
    inject: Callable[[Rig, float], dict[str, Any]]


def _per_s(rig: Rig) -> float:
    return rig.opt.rate * rig.opt.agents


def _edge_kill(rig: Rig, seconds: float) -> dict[str, Any]:
    kills = max(1, int(seconds // 10))
    for _ in range(kills):
        rig.wait_appended(int(_per_s(rig) * seconds / (kills + 1)))
        rig.kill_agent(0)
        rig.start_agent(0)
    rig.wait_appended(int(_per_s(rig) * seconds / (kills + 1)))
    return {"agent_kill9": kills}


def _cloud_kill(rig: Rig, seconds: float) -> dict[str, Any]:
    rig.wait_appended(int(_per_s(rig) * seconds / 3))
    rig.kill_cloud(0)
    rig.wait_appended(int(_per_s(rig) * 2))  # down ~2 s: the agents keep appending
    rig.start_cloud(0)
    rig.wait_appended(int(_per_s(rig) * seconds / 3))
    return {"cloud_kill9": 1}


def _cloud_kill_replay(rig: Rig, seconds: float) -> dict[str, Any]:
    rig.wait_appended(int(_per_s(rig) * 2))
    rig.kill_cloud(0)
    rig.wait_appended(int(_per_s(rig) * seconds / 2))  # a backlog builds up on the edge
    backlog_before = rig.stored()
    backlog = rig.appended() - backlog_before
    rig.start_cloud(0)
    # Paced replay (replay_samples_per_interval): kill the cloud again once part of the backlog is stored.
    rig.wait_stored(int(_per_s(rig) * seconds / 8), seconds * 4)
    rig.kill_cloud(0)
    replayed = rig.stored() - backlog_before
    rig.wait_appended(int(_per_s(rig)))
    rig.start_cloud(0)
    rig.wait_appended(int(_per_s(rig) * seconds / 4))
    return {"cloud_kill9": 2, "backlog_at_restart": backlog, "stored_during_replay_before_kill": replayed}


def _broker_restart(rig: Rig, seconds: float) -> dict[str, Any]:
    rig.wait_appended(int(_per_s(rig) * seconds / 2))
    rig.stop_broker("cloud")
    rig.start_broker("cloud")
    rig.wait_appended(int(_per_s(rig) * seconds / 2))
    return {"broker_restart": 1}


def _broker_down(rig: Rig, seconds: float) -> dict[str, Any]:
    down = max(2.0, seconds)  # bench default: 60 s
    rig.wait_appended(int(_per_s(rig) * 2))
    rig.stop_broker("cloud", kill=True)
    time.sleep(down)  # the fault is the broker being away this long
    rig.start_broker("cloud")
    rig.wait_appended(int(_per_s(rig) * 2))
    return {"broker_kill9": 1, "down_s": down}


def _pg_terminate(rig: Rig, seconds: float) -> dict[str, Any]:
    import psycopg

    times_ = max(2, int(seconds // 4))
    killed = 0
    name = rig.db.rsplit("/", 1)[1].split("?")[0]
    for _ in range(times_):
        rig.wait_appended(int(_per_s(rig) * seconds / (times_ + 1)))
        with psycopg.connect(rig.db, autocommit=True) as conn:
            row = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                               " WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchone()  # fmt: skip
            killed += int(row[0]) if row else 0
    rig.wait_appended(int(_per_s(rig) * 2))
    return {"terminations": times_, "backends_terminated": killed}


def _net_stall(rig: Rig, seconds: float) -> dict[str, Any]:
    assert rig.proxy is not None
    stall = max(2.0, seconds / 2)
    rig.wait_appended(int(_per_s(rig) * 2))
    rig.proxy.stall()
    time.sleep(stall)  # the fault is the link passing nothing this long
    rig.proxy.resume()
    rig.wait_appended(int(_per_s(rig) * 2))
    return {"stall_s": stall}


def _net_resets(rig: Rig, seconds: float) -> dict[str, Any]:
    assert rig.proxy is not None
    n = max(3, int(seconds // 3))
    for _ in range(n):
        rig.wait_appended(int(_per_s(rig) * seconds / (n + 1)))
        rig.proxy.reset()
    rig.wait_appended(int(_per_s(rig) * 2))
    return {"connection_resets": n}


def _steady(rig: Rig, seconds: float) -> dict[str, Any]:
    rig.wait_appended(int(_per_s(rig) * seconds))
    return {}


def _worker_kill(rig: Rig, seconds: float) -> dict[str, Any]:
    rig.wait_appended(int(_per_s(rig) * seconds / 2))
    rig.kill_cloud(1)
    rig.wait_appended(int(_per_s(rig) * seconds / 2))
    return {"worker_kill9": 1, "workers_left": 1}


def _site_worker_kill(rig: Rig, seconds: float) -> dict[str, Any]:
    rig.wait_appended(int(_per_s(rig) * seconds / 2))
    rig.kill_cloud(1)
    rig.wait_appended(int(_per_s(rig) * 2))  # its site's agent keeps appending meanwhile
    rig.start_cloud(1)
    rig.wait_appended(int(_per_s(rig) * seconds / 2))
    return {"worker_kill9": 1}


def _site_broker_restart(rig: Rig, seconds: float) -> dict[str, Any]:
    rig.wait_appended(int(_per_s(rig) * seconds / 2))
    rig.stop_broker("site")
    rig.start_broker("site")
    rig.wait_appended(int(_per_s(rig) * seconds / 2))
    return {"site_broker_restart": 1}


ROWS: dict[str, Row] = {
    r.name: r
    for r in (
        Row("edge-kill", "edge agent kill -9 mid-stream", RigOptions(), _edge_kill),
        Row("cloud-kill", "cloud kill -9 mid-stream", RigOptions(), _cloud_kill),
        Row("cloud-kill-replay", "cloud kill -9 during a paced replay of a backlog",
            RigOptions(replay_samples_per_interval=100), _cloud_kill_replay),
        Row("broker-restart", "broker restart", RigOptions(), _broker_restart),
        Row("broker-down", "broker kill -9, down a while", RigOptions(), _broker_down),
        Row("pg-terminate", "PostgreSQL backends terminated", RigOptions(), _pg_terminate),
        Row("net-stall", "network stall (agent-broker link passes nothing)",
            RigOptions(proxy=True, keepalive_s=5), _net_stall),
        Row("net-resets", "connection resets (RST agent-broker)", RigOptions(proxy=True), _net_resets),
        Row("clock-behind", "device clock a day behind", RigOptions(clock_offset_s=-86_400), _steady),
        Row("clock-ahead", "device clock an hour ahead (refused: quarantine)",
            RigOptions(clock_offset_s=3_600), _steady),
        Row("shared-workers", "two workers on a $share subscription (acks on), one killed",
            RigOptions(workers=2, shared=True), _worker_kill),
        Row("site-workers", "two workers, one per site group (acks on), one killed and restarted",
            RigOptions(workers=2, per_site_workers=True), _site_worker_kill),
        Row("bridge-restart", "bridged site broker restarted mid-stream", RigOptions(bridge=True),
            _site_broker_restart),
    )
}  # fmt: skip


def run_row(name: str, server_url: str, work_dir: Path, seconds: float, *, scratch: bool = True) -> RowResult:
    """Run row `name` for about `seconds` of fault phase; `server_url` is a PostgreSQL server (a scratch
    database is made and dropped) or, with `scratch=False`, the database to use."""
    row = ROWS[name]
    work_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        db = stack.enter_context(scratch_database(server_url, "faults")) if scratch else server_url
        rig = Rig(work_dir, db, row.options)
        stack.callback(rig.close)
        started = time.monotonic()
        rig.start()
        injected = row.inject(rig, seconds)
        if rig.proxy is not None:
            injected["proxy_resets"] = rig.proxy.resets
        rig.drain(max(60.0, seconds * 3))
        result = rig.count()
        result.row, result.injected, result.seconds = name, injected, time.monotonic() - started
        return result


# ---- the command ----------------------------------------------------------------------------------------------
_COLUMNS = ("attempted", "acknowledged", "stored", "lost", "acknowledged_but_lost", "duplicated", "quarantined")
_HEADS = ("attempted", "acked", "stored", "lost", "acked-lost", "dup", "quarant.")


def table(results: list[RowResult]) -> str:
    """The printed report table: one line per row."""
    lines = [f"{'row':<18}" + "".join(f"{h:>11}" for h in _HEADS) + "  result"]
    for r in results:
        c = asdict(r.counts)
        lines.append(f"{r.row:<18}" + "".join(f"{c[k]:>11}" for k in _COLUMNS) + ("  ok" if r.counts.ok else "  FAIL"))
    return "\n".join(lines)


@contextlib.contextmanager
def _work_dir(keep: Path | None) -> Iterator[Path]:
    import tempfile

    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="zhizao-faults-") as tmp:
        yield Path(tmp)


@click.command("faults")
@click.option("--rows", default="all", show_default=True,
              help="comma-separated rows, all, or attacks: " + ", ".join([*ROWS, *ATTACKS]))
@click.option("--sse-clients", type=click.IntRange(2), default=200, show_default=True, help="clients of the sse attack")
@click.option("--seconds", type=float, default=60.0, show_default=True, help="fault phase of each row")
@click.option("--database-url", envvar="ZHIZAO_DATABASE_URL", default="postgresql://postgres@127.0.0.1:5432/postgres",
              show_default=True, help="PostgreSQL server (a scratch database per row is created and dropped)")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="keep logs, configs and the tap here (default: a temporary directory)")
@json_option
def bench_faults(rows: str, sse_clients: int, seconds: float, database_url: str, work_dir: Path | None,
                 json_path: Path | None) -> None:  # fmt: skip
    """The fault matrix: every row's samples attempted, acknowledged, stored, lost, duplicated, quarantined;
    then the attack rows (zhizao/bench/attacks.py): attempted, refused, allowed."""
    names = [*ROWS, *ATTACKS] if rows == "all" else [*ATTACKS] if rows == "attacks" else [
        r.strip() for r in rows.split(",") if r.strip()]  # fmt: skip
    unknown = [n for n in names if n not in ROWS and n not in ATTACKS]
    if unknown:
        raise click.BadParameter(f"unknown rows {unknown}; known: {', '.join([*ROWS, *ATTACKS])}", param_hint="--rows")
    report = Report("faults")
    results: list[RowResult] = []
    with _work_dir(work_dir) as base:
        for name in [n for n in names if n in ROWS]:
            click.echo(f"{name}: {ROWS[name].title} ...", err=True)
            try:
                result = run_row(name, database_url, base / name, seconds)
            except (RuntimeError, TimeoutError, TapError) as exc:
                report.figures[name] = {"error": str(exc)}
                click.echo(f"{name}: ERROR {exc}", err=True)
                continue
            results.append(result)
            report.figures[name] = {**asdict(result.counts), "ok": result.counts.ok, "seconds": result.seconds,
                                    "injected": result.injected, "quarantine_reasons": result.quarantine_reasons,
                                    "lost_examples": result.lost_examples}  # fmt: skip
            click.echo(table([result]).splitlines()[1], err=True)
        attacks = bench_attacks([n for n in names if n in ATTACKS], database_url, base, report.figures,
                                sse_clients=sse_clients)  # fmt: skip
    report.finish(database_url)
    if results or not attacks:
        click.echo(table(results))
    if attacks:
        click.echo(attack_table(attacks))
    click.echo(machine_line(report.machine))
    report.write(json_path)
    failed = [n for n in names if not report.figures[n].get("ok")]
    if failed:
        raise click.ClickException(f"rows not held: {', '.join(failed)}")
