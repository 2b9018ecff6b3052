"""The ack watermark belongs to one edge session: it starts anew with every birth and follows only that
session's own, strictly increasing batch ids (real Mosquitto + PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.support.mosquitto import free_port, private_mosquitto
from tests.support.spnode import T0, SpNode, wait_for
from zhizao.cloud.ingest.service import IngestService
from zhizao.cloud.ingest.settings import IngestSettings

TS = T0 + np.arange(4, dtype=np.int64) * 1000
METRIC = np.arange(4) % 2


def _send_batches(node: SpNode, ids: list[int], offset_s: int) -> None:
    for k, batch in enumerate(ids):
        node.ddata("m1", TS + (offset_s + k) * 1000_000, METRIC, np.ones(4), batch=batch)


def test_an_agent_recreated_with_an_empty_outbox_gets_acks_again(
    make_service: Callable[..., IngestService], mqtt_url: str, unique_id: str
) -> None:
    make_service()
    first = SpNode(mqtt_url, unique_id, "line-1", {"m1": 2}, bd_seq=4)
    try:
        first.birth()
        _send_batches(first, [500, 501, 502], offset_s=0)
        wait_for(lambda: first.acks and max(first.acks) == 501, what="ack of batch 501 in the first session")
        assert first.ack_bd_seqs[-1] == 4
        first.death()
    finally:
        first.close()
    # The same edge node with a new outbox: its batch ids start again at 1, in a new session (bdSeq 5).
    second = SpNode(mqtt_url, unique_id, "line-1", {"m1": 2}, bd_seq=5)
    try:
        second.birth()
        _send_batches(second, [1, 2, 3], offset_s=10)
        wait_for(lambda: second.acks and max(second.acks) == 2, what="ack of batch 2 in the new session")
        assert second.ack_bd_seqs[second.acks.index(2)] == 5
    finally:
        second.close()


def test_a_batch_id_going_backwards_holds_acks_and_asks_for_a_rebirth(
    make_service: Callable[..., IngestService], mqtt_url: str, unique_id: str
) -> None:
    make_service()
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 2}, bd_seq=0)
    try:
        node.birth()
        _send_batches(node, [1, 2], offset_s=0)
        wait_for(lambda: node.acks == [1], what="ack of batch 1")
        _send_batches(node, [10**12, 3, 4, 5], offset_s=10)  # one forged id, then the real ones go on
        wait_for(lambda: node.rebirth_requests() >= 1, what="a rebirth request")
        # After the rebirth the session's watermark starts anew and acking resumes.
        node.birth()
        _send_batches(node, [7, 8], offset_s=30)
        wait_for(lambda: max(node.acks) == 7, what="ack of batch 7 after the rebirth")
        # Batch 2 was complete (closed by the forged id); the forged id and what followed it in that session
        # were never acknowledged.
        assert node.acks == [1, 2, 7]
    finally:
        node.close()


def test_a_birth_the_host_missed_while_away_is_asked_for_again(
    fresh_database: str, unique_id: str, tmp_path: Path
) -> None:
    """Broker restarted; the edge reconnects and births before the host is back (the host waits >= 1 s), so
    the host never sees the new session. Its seq restart looks like a late duplicate and its acks carry the
    old bdSeq, which the edge ignores: without a rebirth nothing would ever be released again."""
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    url = f"mqtt://127.0.0.1:{port}"
    broker = private_mosquitto(port, conf)
    svc = IngestService(fresh_database, url, host_id=f"host-{unique_id}",
                        settings=IngestSettings(batch_max_ms=50, sites=(unique_id,)))  # fmt: skip
    nodes: list[SpNode] = []
    try:
        svc.start()
        first = SpNode(url, unique_id, "line-1", {"m1": 2}, bd_seq=0)
        nodes.append(first)
        first.birth()
        batch = 100
        _send_batches(first, list(range(1, batch + 1)), offset_s=0)  # the host now expects seq 102
        wait_for(lambda: first.acks and max(first.acks) == batch - 1, what=f"ack of batch {batch - 1}")
        first.close()  # its connection ends with the broker (no NDEATH reaches the host)
        broker.terminate()
        broker.wait(10)
        broker = private_mosquitto(port, conf)
        second = SpNode(url, unique_id, "line-1", {"m1": 2}, bd_seq=1)  # the agent, reconnected first
        nodes.append(second)
        second.birth()  # seq 0 and 1: unseen
        wait_for(lambda: svc.stats()["mqtt_connected"] == 1.0, what="the host back")
        # From here the host sees seq 2, 3, ...: "behind" 102, so no gap is ever noticed.

        def streaming_until_rebirth_asked() -> bool:  # the agent keeps publishing, as a real one does
            nonlocal batch
            batch += 1
            _send_batches(second, [batch], offset_s=10 + batch)
            return second.rebirth_requests() >= 1

        wait_for(streaming_until_rebirth_asked, timeout=20, what="a rebirth request after the host reconnected")
        assert all(bd != 1 for bd in second.ack_bd_seqs)  # nothing acknowledged for the unseen session
        second.birth()
        _send_batches(second, [batch + 1, batch + 2], offset_s=1000)
        wait_for(lambda: batch + 1 in second.acks, what="an ack in the session born again")
        assert second.ack_bd_seqs[second.acks.index(batch + 1)] == 1
    finally:
        for node in nodes:
            node.close()
        svc.stop()
        broker.terminate()
        broker.wait(10)
