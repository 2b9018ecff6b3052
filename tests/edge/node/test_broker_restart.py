"""A private Mosquitto goes away and comes back: the node buffers in the outbox, reconnects with a new bdSeq,
and what it buffered arrives as history, never as live data (checklist items 2, 4, 14)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pysparkplug as psp

from tests.support.mosquitto import free_port, private_mosquitto
from tests.support.node import block, signal_table
from tests.support.spb_capture import Capture, all_samples
from tests.support.spnode import until
from zhizao.edge.node.config import MqttConfig, OutboxConfig, SparkplugConfig
from zhizao.edge.node.session import EdgeNode
from zhizao.edge.outbox import Outbox


def test_buffer_while_broker_down_then_replay_as_history(tmp_path: Path, unique_id: str) -> None:
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    broker = private_mosquitto(port)
    cap = Capture(url, [f"spBv1.0/{unique_id}/#"])
    t_live = time.time_ns() // 1_000_000

    async def main() -> None:
        nonlocal broker
        box = Outbox(tmp_path / "box", OutboxConfig(fsync_interval_s=0))
        mqtt = MqttConfig(url=url, reconnect_min_s=1, reconnect_max_s=2)
        node = EdgeNode(unique_id, "e1", mqtt, SparkplugConfig(publish_interval_ms=50), box, signal_table())
        await node.start()
        try:
            await cap.until(lambda ms: [m.kind for m in ms].count("DBIRTH") == 2, what="births")
            box.append(block([0, 1], [1, 2], t0=t_live))
            await cap.until(lambda ms: len(all_samples(ms)) >= 2, what="live A")
            broker.terminate()
            broker.wait(10)
            for _ in range(200):
                if node.state != "online":
                    break
                await asyncio.sleep(0.02)
            assert node.state != "online"
            box.append(block([2, 3], [3, 4], t0=t_live + 10))  # appended while the broker is down
            broker = private_mosquitto(port)
            for _ in range(500):  # the node reconnects by itself (capped backoff)
                if node.state == "online":
                    break
                await asyncio.sleep(0.02)
            assert node.state == "online"
            assert node.stats.reconnects == 1
            # the capture may have rejoined after the node's births: ask for a rebirth to see them for sure,
            # once the capture is subscribed again (its second SUBACK)
            await until(lambda: cap.subacks >= 2, within_s=15, what="the capture subscribed again")
            n = len(cap.snapshot())
            cmd = psp.NCmd(
                timestamp=1,
                metrics=(
                    psp.Metric(
                        timestamp=1, name="Node Control/Rebirth", datatype=psp.DataType.BOOLEAN, value=True
                    ),
                ),
            )
            await asyncio.to_thread(cap.publish, f"spBv1.0/{unique_id}/NCMD/e1", cmd.encode())
            await cap.until(lambda ms: len([s for s in all_samples(ms[n:]) if s.device]) >= 4, what="replay")
        finally:
            await node.stop()
            box.close()

    try:
        asyncio.run(main())
    finally:
        cap.close()
        broker.terminate()
        broker.wait(10)
    msgs = cap.snapshot()
    births = [psp.NBirth.decode(m.payload) for m in msgs if m.kind == "NBIRTH"]
    bd = [next(x.value for x in b.metrics if x.name == "bdSeq") for b in births]
    assert (
        bd[0] == 0 and bd[-1] == 1
    )  # one new CONNECT after the outage: bdSeq + 1 (refused sockets send none)
    samples = [s for s in all_samples(msgs) if s.device]
    buffered = [s for s in samples if s.timestamp >= t_live + 10]
    assert buffered and all(s.historical for s in buffered)  # never as live values
    assert {float(s.value) for s in buffered} == {3.0, 4.0}  # type: ignore[arg-type]
