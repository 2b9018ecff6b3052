"""The ack watermark belongs to one edge session: it starts anew with every birth and follows only that
session's own, strictly increasing batch ids (real Mosquitto + PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tests.support.spnode import T0, SpNode, wait_for
from zhizao.cloud.ingest.service import IngestService

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
