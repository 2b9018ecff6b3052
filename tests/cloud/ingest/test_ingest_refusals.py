"""Nothing is acknowledged that the database did not keep, and no bad input stops the ingest for anyone else
(real Mosquitto + PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import psycopg

from tests.support.db import count
from tests.support.spnode import T0, SpNode, wait_for
from zhizao.broker.extensions import BATCH_METRIC
from zhizao.broker.sparkplug.codec import BirthMetric, encode_birth
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.cloud.ingest.service import IngestService

TS = T0 + np.arange(4, dtype=np.int64) * 1000
METRIC = np.arange(4) % 2


def test_a_batch_the_database_refuses_is_never_acknowledged_and_the_node_replays_it(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    svc = make_service()
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 2}, bd_seq=0)
    try:
        node.birth()
        wait_for(lambda: count(fresh_database, "SELECT count(*) FROM machines WHERE online") == 1, what="birth")
        node.ddata("m1", TS, METRIC, np.ones(4), batch=1)
        node.ddata("m1", TS + 10**6, METRIC, np.ones(4), batch=2)
        wait_for(lambda: node.acks == [1], what="ack of batch 1")
        # The database starts refusing values above 1e9 (a constraint a DBA added, say): a permanent error.
        with psycopg.connect(fresh_database, autocommit=True) as conn:
            conn.execute("ALTER TABLE samples ADD CONSTRAINT test_no_huge CHECK (value < 1e9)")
        node.ddata("m1", TS + 2 * 10**6, METRIC, np.full(4, 2e9), batch=3)  # refused with its whole DB batch
        wait_for(lambda: node.rebirth_requests() >= 1, what="a rebirth request after the refusal")
        for k in range(4, 8):  # the node goes on in the same session: none of this may be acknowledged
            node.ddata("m1", TS + k * 10**6, METRIC, np.ones(4), batch=k)
        # After the rebirth (new session) it replays the refused samples, once the constraint is gone.
        with psycopg.connect(fresh_database, autocommit=True) as conn:
            conn.execute("ALTER TABLE samples DROP CONSTRAINT test_no_huge")
        node.bd_seq = 1
        node.birth()
        node.ddata("m1", TS + 2 * 10**6, METRIC, np.full(4, 2e9), batch=8, historical=True)
        node.ddata("m1", TS + 9 * 10**6, METRIC, np.ones(4), batch=9)
        wait_for(lambda: 8 in node.acks, what="ack of the replayed batch 8 in the new session")
        acked_in_first_session = [b for b, s in zip(node.acks, node.ack_bd_seqs, strict=True) if s == 0]
        assert max(acked_in_first_session) < 3, f"session 0 acked {acked_in_first_session} past the refused batch"
        assert count(fresh_database, "SELECT count(*) FROM samples WHERE value = 2e9") == 4
        assert svc.stats()["workers_alive"] == 1.0
    finally:
        node.close()


def test_topics_breaking_the_id_rule_are_dead_letters_and_ingest_goes_on(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    svc = make_service(sites=())  # every group, as a cloud serving the whole broker does
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 2})
    try:
        # A whole session under a group and an edge id with uppercase letters, published as a foreign node would.
        ts = int(TS[0])
        birth = encode_birth(0, ts, [BirthMetric("bdSeq", DataType.Int64, 0), BirthMetric(BATCH_METRIC, DataType.Int64, 0, alias=1)])
        node.pub("spBv1.0/Site_A/NBIRTH/Line_1", birth)
        node.pub("spBv1.0/Site_A/DBIRTH/Line_1/m1", node.data_payload("m1", TS, METRIC, np.ones(4), seq=1))
        node.pub("spBv1.0/Site_A/DDATA/Line_1/m1", node.data_payload("m1", TS, METRIC, np.ones(4), batch=1, seq=2))
        node.pub("spBv1.0/Site_A/DDATA/Line_1/m1", node.data_payload("m1", TS, METRIC, np.ones(4), batch=2, seq=3))
        node.birth()
        node.ddata("m1", TS, METRIC, np.ones(4), batch=1)
        node.ddata("m1", TS + 10**6, METRIC, np.ones(4), batch=2)
        wait_for(lambda: node.acks == [1], what="the good node's data stored and acknowledged")
        assert count(fresh_database, "SELECT count(*) FROM dead_letters WHERE reason = 'bad_topic'"
                      " AND topic LIKE 'spBv1.0/Site_A/%%'") == 4  # fmt: skip
        assert count(fresh_database, "SELECT count(*) FROM sites WHERE site_id = 'Site_A'") == 0
        stats = svc.stats()
        assert stats["workers_alive"] == 1.0 and stats["worker_restarts"] == 0.0
    finally:
        node.close()
