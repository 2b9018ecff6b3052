"""The agent runtime end to end on the real broker: adapter -> mapping -> outbox -> Sparkplug, supervision,
metrics, clean stop, and kill -9 of an agent subprocess losing nothing that reached the outbox.

The adapter here is a small test adapter (a deterministic ramp), passed to `run_agent(adapter_types=...)`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytest

from tests.support.spb_capture import Capture, all_samples
from tests.support.spnode import until
from zhizao.broker.embedded import free_port
from zhizao.edge.adapters.base import (
    Adapter,
    AdapterAuthError,
    AdapterConfigError,
    AdapterTemporaryError,
)
from zhizao.edge.agent import AgentError, run_agent
from zhizao.edge.config import AdapterSettings, AgentConfig
from zhizao.edge.outbox import read_outbox
from zhizao.edge.samples import QUALITY_GOOD, SampleBlock


class RampConfig(AdapterSettings):
    """Test adapter config: `rate` samples/s; `fail` makes connect raise that error for `fail_times` tries."""

    type: Literal["ramp"] = "ramp"
    rate: float = 2000.0
    run_id: int = 0
    fail: Literal["none", "temporary", "auth", "config", "untyped"] = "none"
    fail_times: int = 1
    drop_once_after: int = 0  # run() raises AdapterTemporaryError once after this many samples (0: never)


class RampAdapter(Adapter):
    """Emits sample k of signal k % n with value run_id * 1e9 + k, in blocks every 10 ms."""

    name: ClassVar[str] = "ramp"
    config_model: ClassVar[type[RampConfig]] = RampConfig
    connects: ClassVar[int] = 0
    dropped: ClassVar[bool] = False
    writes: ClassVar[list[tuple[str, object]]] = []

    async def connect(self) -> None:
        type(self).connects += 1
        cfg: RampConfig = self.config
        if cfg.fail == "untyped" and type(self).connects <= cfg.fail_times:
            # What a library does when it breaks its own contract (asyncua: a bare AssertionError on a
            # certificate the server rejects).
            raise AssertionError("ramp: injected untyped library error")
        if cfg.fail != "none" and type(self).connects <= cfg.fail_times:
            raise {
                "temporary": AdapterTemporaryError,
                "auth": AdapterAuthError,
                "config": AdapterConfigError,
            }[cfg.fail](f"ramp: injected {cfg.fail} error")

    async def run(self) -> None:
        cfg: RampConfig = self.config
        n = len(self.signals)
        k = 0
        t0_ms = time.time_ns() // 1_000_000
        start = time.monotonic()
        while True:
            due = int((time.monotonic() - start) * cfg.rate)
            if due > k:
                idx = np.arange(k, due)
                self.sink(
                    SampleBlock(
                        (idx % n).astype(np.int32),
                        (t0_ms + idx // n).astype(np.int64),
                        cfg.run_id * 1e9 + idx.astype(np.float64),
                        np.full(len(idx), QUALITY_GOOD, np.int16),
                    )
                )
                k = due
            if cfg.drop_once_after and k >= cfg.drop_once_after and not type(self).dropped:
                type(self).dropped = True
                raise AdapterTemporaryError("ramp: injected session loss")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        pass

    async def write(self, signal: int, value: float | int | bool | str) -> None:
        type(self).writes.append((self.signals.signals[signal].metric, value))


def agent_config(site: str, tmp: Path, mqtt_url: str, **ramp: Any) -> AgentConfig:
    """Two machines, two Double signals each, read by one ramp adapter."""
    machines = [
        {
            "id": m,
            "adapter": "ramp",
            "oee": False,
            "signals": [{"metric": f"Sig/{j}", "node_id": f"ns=2;s={m}/{j}"} for j in range(2)],
        }
        for m in ("m1", "m2")
    ]
    return AgentConfig.model_validate(
        {
            "site": site,
            "edge_node": "agent-1",
            "mqtt": {"url": mqtt_url},
            "sparkplug": {"publish_interval_ms": 100},
            "outbox": {"dir": str(tmp / "outbox"), "fsync_interval_s": 0.2},
            "adapters": [RampConfig(name="ramp", **ramp)],
            "machines": machines,
        }
    )


def key_of(device: str | None, name: str, ts: int, value: object) -> tuple[str | None, str, int, float]:
    return device, name, int(ts), float(value)  # type: ignore[arg-type]


def _listening_on(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on `port`, from /proc/net/tcp (state 0A = LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


def test_agent_publishes_serves_metrics_and_stops_with_ndeath(
    tmp_path: Path, mqtt_url: str, unique_id: str
) -> None:
    cap = Capture(mqtt_url, [f"spBv1.0/{unique_id}/#"])
    port = free_port()
    cfg = agent_config(unique_id, tmp_path, mqtt_url, rate=1000.0)
    cfg = cfg.model_copy(update={"metrics_port": port})
    metrics_text: list[str] = []
    listening_addresses: list[set[str]] = []

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_agent(cfg, stop, adapter_types={"ramp": RampAdapter}))
        await cap.until(lambda ms: len(all_samples(ms)) >= 500, what="500 samples")
        def scrape() -> bytes:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
                return bytes(response.read())

        body = await asyncio.to_thread(scrape)
        metrics_text.append(body.decode())
        listening_addresses.append(_listening_on(port))
        stop.set()
        await task

    RampAdapter.connects = 0
    asyncio.run(main())
    # A marker through the same broker after the agent is gone: a Will sent on top would have arrived before it.
    marker = f"spBv1.0/{unique_id}/marker"
    cap.publish(marker, b"end")
    msgs = [m for m in cap.wait_for(lambda ms: ms[-1].topic == marker, what="the marker") if m.topic != marker]
    cap.close()
    kinds = [m.kind for m in msgs]
    assert kinds[:3] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert kinds[-1] == "NDEATH"  # clean stop: NDEATH published by the agent before DISCONNECT
    assert kinds.count("NDEATH") == 1, "the Will must not follow the agent's own NDEATH"
    samples = [s for s in all_samples(msgs) if s.device]
    assert {(s.device, s.name) for s in samples} == {(m, f"Sig/{j}") for m in ("m1", "m2") for j in range(2)}
    values = sorted(float(s.value) for s in samples)  # type: ignore[arg-type]
    assert values == [float(v) for v in range(len(values))]  # no gap, no duplicate
    assert len(samples) / sum(1 for m in msgs if m.kind == "DDATA") > 10  # many samples per message
    text = metrics_text[0]
    # /metrics has no authentication, so by default it listens on this host only (the kernel's socket table).
    assert listening_addresses[0] == {"127.0.0.1"}, listening_addresses
    assert f'zhizao_edge_outbox_depth_samples{{edge_node="agent-1",site="{unique_id}"}}' in text
    assert "zhizao_edge_samples_appended_total" in text
    # the outbox kept everything (no host acks) and every appended sample was published
    appended = sum(len(b) for _, b in read_outbox(tmp_path / "outbox"))
    assert appended == len(samples)


def test_temporary_adapter_errors_are_retried_with_ddeath_then_dbirth(
    tmp_path: Path, mqtt_url: str, unique_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    cap = Capture(mqtt_url, [f"spBv1.0/{unique_id}/#"])
    cfg = agent_config(
        unique_id, tmp_path, mqtt_url, rate=400.0, fail="temporary", fail_times=1, drop_once_after=200
    )

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_agent(cfg, stop, adapter_types={"ramp": RampAdapter}))
        await cap.until(
            lambda ms: [m.kind for m in ms].count("DBIRTH") >= 4, within_s=20, what="rebirth of m1, m2"
        )
        await cap.until(lambda ms: ms[-1].kind == "DDATA", what="data after the reconnect")
        stop.set()
        await task

    RampAdapter.connects, RampAdapter.dropped = 0, False
    caplog.set_level("INFO", logger="zhizao.edge.agent")
    asyncio.run(main())
    msgs = cap.snapshot()
    cap.close()
    assert RampAdapter.connects == 3  # refused, up, (session lost) up again
    kinds = [m.kind for m in msgs if m.kind != "NDATA"]
    # machines are born only once their adapter is up; a lost session is DDEATH for each, then DBIRTH again
    assert kinds[0] == "NBIRTH" and kinds[1:3] == ["DBIRTH", "DBIRTH"]
    first_death = kinds.index("DDEATH")
    assert kinds[first_death : first_death + 2] == ["DDEATH", "DDEATH"]
    assert "DDATA" in kinds[3:first_death]
    assert kinds[first_death + 2 :].count("DBIRTH") == 2
    assert {m.device for m in msgs if m.kind == "DDEATH"} == {"m1", "m2"}
    down = [r for r in caplog.records if "adapter ramp down" in r.getMessage()]
    assert len(down) == 2  # one line per state change (two outages), not per retry
    assert len([r for r in caplog.records if "connected again" in r.getMessage()]) == 2


def test_auth_error_stops_the_adapter_config_error_refuses_to_run(
    tmp_path: Path, mqtt_url: str, unique_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def auth() -> None:
        stop = asyncio.Event()
        cfg = agent_config(unique_id, tmp_path / "a", mqtt_url, fail="auth", fail_times=99)
        task = asyncio.create_task(run_agent(cfg, stop, adapter_types={"ramp": RampAdapter}))
        # The agent logs this as it stops the adapter for good: nothing is left that could retry it.
        await until(lambda: any("credentials refused" in r.getMessage() for r in caplog.records),
                    what="the adapter stopped on refused credentials")
        stop.set()
        await task

    RampAdapter.connects = 0
    asyncio.run(auth())
    assert RampAdapter.connects == 1  # never retried
    assert any("credentials refused" in r.getMessage() for r in caplog.records)

    async def config_error() -> None:
        cfg = agent_config(unique_id, tmp_path / "c", mqtt_url, fail="config", fail_times=99)
        await asyncio.wait_for(run_agent(cfg, adapter_types={"ramp": RampAdapter}), 20)

    RampAdapter.connects = 0
    with pytest.raises(AgentError, match="injected config error"):
        asyncio.run(config_error())
    with pytest.raises(AgentError, match=r"adapters\[0\]\.type: no adapter 'ramp' is installed"):
        asyncio.run(run_agent(agent_config(unique_id, tmp_path / "d", mqtt_url), adapter_types={}))


def test_only_signed_dcmds_reach_the_adapter(tmp_path: Path, mqtt_url: str, unique_id: str) -> None:
    """A plain DCMD (as any client the broker lets through could send) is refused and counted; the same write
    signed by the cloud's key reaches the device node behind m2's Sig/1."""
    import time

    import pysparkplug as psp

    from zhizao.broker.commands import encode_command, generate_key, public_key_text
    from zhizao.broker.sparkplug.codec import BirthMetric
    from zhizao.broker.sparkplug.datatypes import DataType

    key = generate_key()
    cap = Capture(mqtt_url, [f"spBv1.0/{unique_id}/#"])
    cfg = agent_config(unique_id, tmp_path, mqtt_url, rate=100.0)
    cfg = AgentConfig.model_validate({**cfg.model_dump(), "adapters": list(cfg.adapters), "commands": {
        "public_keys": [public_key_text(key)], "targets": [{"machine": "m2", "metric": "Sig/1", "max": 100}]}})
    topic = f"spBv1.0/{unique_id}/DCMD/agent-1/m2"

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_agent(cfg, stop, adapter_types={"ramp": RampAdapter}))
        await cap.until(lambda ms: [m.kind for m in ms].count("DBIRTH") == 2, what="births")
        metric = psp.Metric(timestamp=1, name="Sig/1", datatype=psp.DataType.DOUBLE, value=41.5)
        await asyncio.to_thread(cap.publish, topic, psp.DCmd(timestamp=1, metrics=(metric,)).encode())
        signed = encode_command(key, unique_id, "agent-1", "m2", "c-1", int(time.time() * 1000) + 60_000,
                                [BirthMetric("Sig/1", DataType.Double, 42.5)], 1)  # fmt: skip
        await asyncio.to_thread(cap.publish, topic, signed)
        for _ in range(200):
            if RampAdapter.writes:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await task

    RampAdapter.connects, RampAdapter.writes = 0, []
    asyncio.run(main())
    cap.close()
    assert RampAdapter.writes == [("ns=2;s=m2/1", 42.5)]  # the signed one only, in order after the unsigned one


# ---- kill -9 of an agent subprocess ------------------------------------------------------------------------


def subprocess_main() -> None:
    """Entry point of the agent subprocess: argv = site, tmp dir, mqtt url, run id."""
    site, tmp, url, run_id = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    cfg = agent_config(site, tmp, url, rate=3000.0, run_id=run_id)
    print("ready", flush=True)
    asyncio.run(run_agent(cfg, adapter_types={"ramp": RampAdapter}))


def _spawn(site: str, tmp: Path, url: str, run_id: int) -> subprocess.Popen[bytes]:
    # `python -c` puts its working directory first on sys.path: the repository root, where `tests` is found.
    code = "from tests.edge.test_agent import subprocess_main; subprocess_main()"
    root = Path(__file__).resolve().parents[2]
    return subprocess.Popen(
        [sys.executable, "-c", code, site, str(tmp), url, str(run_id)], cwd=root,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_kill9_loses_no_sample_that_reached_the_outbox(tmp_path: Path, mqtt_url: str, unique_id: str) -> None:
    cap = Capture(mqtt_url, [f"spBv1.0/{unique_id}/#"])
    proc = _spawn(unique_id, tmp_path, mqtt_url, run_id=1)
    try:
        cap.wait_for(lambda ms: len(all_samples(ms)) >= 3000, timeout=30, what="first run streaming")
        time.sleep(0.5)  # the scenario: kill the agent mid-stream, while it keeps appending and publishing
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)  # reaped, its output pipe read to the end and closed
        # the broker delivers the Will: NDEATH, QoS 1, not retained, with the session's bdSeq
        msgs = cap.wait_for(lambda ms: any(m.kind == "NDEATH" for m in ms), timeout=15, what="Will NDEATH")
        will = next(m for m in msgs if m.kind == "NDEATH")
        assert will.qos == 1 and will.retain is False
        n_first = len(msgs)
        appended_before = sum(len(b) for _, b in read_outbox(tmp_path / "outbox"))
        assert appended_before > 0

        proc = _spawn(unique_id, tmp_path, mqtt_url, run_id=2)
        cap.wait_for(
            lambda ms: sum(1 for s in all_samples(ms[n_first:]) if s.value is not None and float(s.value) >= 2e9)
            >= 1500,
            timeout=30, what="second run live data",
        )  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out.decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    msgs = cap.snapshot()
    cap.close()
    assert msgs[-1].kind == "NDEATH"
    samples = [s for s in all_samples(msgs) if s.device]
    received = {key_of(s.device, s.name, s.timestamp, s.value) for s in samples}
    live = [key_of(s.device, s.name, s.timestamp, s.value) for s in samples if not s.historical]
    assert len(live) == len(set(live)), "a sample arrived twice as live data"
    # everything the outbox ever accepted (nothing was acked, so nothing was deleted) reached the broker
    names = [(m, f"Sig/{j}") for m in ("m1", "m2") for j in range(2)]
    appended = {
        key_of(*names[int(s)], int(t), float(v))
        for _, b in read_outbox(tmp_path / "outbox")
        for s, t, v in zip(b.signal, b.ts_ms, b.value, strict=True)
    }
    lost = appended - received
    assert not lost, f"{len(lost)} of {len(appended)} appended samples never reached the broker"
    # samples of the killed run that arrived after the restart came as history, never as live values
    second = [s for s in all_samples(msgs[n_first:]) if s.device]
    first_run_replayed = [s for s in second if float(s.value) < 2e9]  # type: ignore[arg-type]
    assert first_run_replayed and all(s.historical for s in first_run_replayed)
    stats = {"appended": len(appended), "received": len(received), "lost": len(lost)}
    print(json.dumps(stats))


def test_an_untyped_library_error_is_retried_and_the_agent_recovers(
    tmp_path: Path, mqtt_url: str, unique_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    cap = Capture(mqtt_url, [f"spBv1.0/{unique_id}/#"])

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_agent(agent_config(unique_id, tmp_path, mqtt_url, fail="untyped", fail_times=2),
                                             stop, adapter_types={"ramp": RampAdapter}))  # fmt: skip
        await asyncio.to_thread(cap.wait_for, lambda ms: len(all_samples(ms)) >= 100, 20.0, "samples after recovery")
        stop.set()
        await task

    RampAdapter.connects = 0
    caplog.set_level("INFO", logger="zhizao.edge.agent")
    asyncio.run(main())
    cap.close()
    assert RampAdapter.connects == 3  # two untyped failures, retried within the short backoff, then running
    unexpected = [r for r in caplog.records if "unexpected AssertionError" in r.getMessage()]
    assert len(unexpected) == 2 and "injected untyped library error" in unexpected[0].getMessage()
    assert any("connected again" in r.getMessage() for r in caplog.records)
