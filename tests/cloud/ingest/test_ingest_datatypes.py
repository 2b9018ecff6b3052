"""Values that do not fit the datatype their tag was born with are held whole in quarantine (never stored as
something they are not), acknowledged only once kept, counted, and re-ingested after the tag is re-born with
the right datatype; DATA before its birth is a dead letter, holds the node's acks and asks for a rebirth
(real Mosquitto + PostgreSQL + the API over the same database)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import psycopg
from prometheus_client import REGISTRY

from tests.support.apifixtures import bearer, make_client
from tests.support.db import count
from tests.support.spnode import SpNode, now_ms, wait_for
from zhizao.broker.extensions import BATCH_METRIC
from zhizao.broker.sparkplug.codec import BirthMetric, encode_birth, encode_data, encode_metrics
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.broker.sparkplug.topics import MessageType, device_topic, node_topic
from zhizao.cloud.auth import create_token
from zhizao.cloud.ingest.service import IngestService

# Device "m2": one tag per datatype under test, alias -> (name, datatype).
TAGS = {
    5001: ("Count", DataType.Int64),
    5002: ("Temp", DataType.Double),
    5003: ("Small", DataType.Int8),
    5004: ("Flag", DataType.Boolean),
    5005: ("Name", DataType.String),
    5006: ("Ratio", DataType.Float),
}


def _quarantined(reason: str) -> float:
    return REGISTRY.get_sample_value("zhizao_ingest_quarantined_total", {"reason": reason}) or 0.0


def _dbirth(node: SpNode, types: dict[int, tuple[str, DataType]]) -> None:
    ts = now_ms()
    metrics = [BirthMetric(name, dt, None, alias=a, timestamp_ms=ts) for a, (name, dt) in types.items()]
    node.pub(device_topic(node.site, MessageType.DBIRTH, node.edge, "m2"), encode_birth(node.next_seq(), ts, metrics))


def _ddata(node: SpNode, rows: list[tuple[int, int, float | str, DataType]]) -> None:
    """One DDATA of device m2: (alias, ts_ms, value, datatype sent) per sample, in a new batch."""
    text = [(i, v) for i, (_, _, v, _) in enumerate(rows) if isinstance(v, str)]
    payload = encode_data(
        node.next_seq(), now_ms(),
        np.array([a for a, *_ in rows], np.uint64), np.array([t for _, t, *_ in rows], np.int64),
        np.array([np.nan if isinstance(v, str) else v for _, _, v, _ in rows], np.float64),
        np.array([int(d) for *_, d in rows], np.uint32),
        text=text, extra=[BirthMetric(BATCH_METRIC, DataType.Int64, node.new_batch())],
    )  # fmt: skip
    node.pub(device_topic(node.site, MessageType.DDATA, node.edge, "m2"), payload)


def test_values_that_do_not_fit_their_datatype_are_held_counted_and_reingested_after_a_rebirth(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    make_service()
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 1})
    t = now_ms() - 60_000
    before = {r: _quarantined(r) for r in ("wrong_datatype", "out_of_range")}
    try:
        node.birth()
        _dbirth(node, TAGS)
        wait_for(lambda: count(fresh_database, "SELECT count(*) FROM machines WHERE online") == 2, what="births")
        _ddata(node, [
            (5001, t, 7.0, DataType.Int64),          # fits
            (5001, t + 1, 2.5, DataType.Double),     # 2.5 into Int64: out_of_range
            (5002, t, 21.5, DataType.Double),        # fits
            (5002, t + 1, "hot", DataType.String),   # text into Double: wrong_datatype
            (5003, t, 300, DataType.Int32),          # 300 into Int8: out_of_range
            (5003, t + 1, -5, DataType.Int8),        # fits
            (5004, t, 0.5, DataType.Double),         # 0.5 into Boolean: out_of_range
            (5004, t + 1, 1.0, DataType.Boolean),    # fits
            (5005, t, 1.5, DataType.Double),         # a number into a String tag: wrong_datatype
            (5005, t + 1, "ok", DataType.String),    # fits
            (5006, t, 1e39, DataType.Double),        # beyond float32: out_of_range
            (5006, t + 1, 0.25, DataType.Float),     # fits
        ])  # fmt: skip
        _ddata(node, [(5002, t + 2, 22.0, DataType.Double)])  # closes batch 1
        wait_for(lambda: node.acks and max(node.acks) >= 1, what="ack of the batch with the misfits")
        with psycopg.connect(fresh_database) as conn:
            held = conn.execute(
                "SELECT t.name, q.ts_ms - %s, q.value, q.text_value, q.reason FROM quarantine q"
                " JOIN tags t USING (tag_id) ORDER BY t.name, q.ts_ms", [t]).fetchall()  # fmt: skip
            stored = conn.execute(
                "SELECT t.name, s.value FROM samples s JOIN tags t USING (tag_id) WHERE t.machine_id = 'm2'"
                " ORDER BY t.name, s.ts").fetchall()  # fmt: skip
            text = conn.execute(
                "SELECT t.name, s.value FROM samples_text s JOIN tags t USING (tag_id) WHERE t.machine_id = 'm2'"
            ).fetchall()
        # Acknowledged means kept: each misfit whole, with its reason; nothing of them in the time series.
        assert held == [
            ("Count", 1, 2.5, None, "out_of_range"),
            ("Flag", 0, 0.5, None, "out_of_range"),
            ("Name", 0, 1.5, None, "wrong_datatype"),
            ("Ratio", 0, 1e39, None, "out_of_range"),
            ("Small", 0, 300.0, None, "out_of_range"),
            ("Temp", 1, None, "hot", "wrong_datatype"),
        ]
        assert stored == [("Count", 7.0), ("Flag", 1.0), ("Ratio", 0.25), ("Small", -5.0), ("Temp", 21.5),
                          ("Temp", 22.0)]  # fmt: skip
        assert text == [("Name", "ok")]
        assert _quarantined("wrong_datatype") - before["wrong_datatype"] == 2
        assert _quarantined("out_of_range") - before["out_of_range"] == 4

        # The cause fixed: the tags re-born with the datatypes their values have. Re-ingest moves those, once.
        engineer = create_token(fresh_database, "engineer", unique_id, "eng")
        with make_client(fresh_database) as client:
            r = client.post("/api/v1/quarantine/reingest", json={"site": unique_id}, headers=bearer(engineer))
            assert r.json() == {"site": unique_id, "moved": 0, "stored": 0, "remaining": 6}
            _dbirth(node, {**TAGS, 5001: ("Count", DataType.Double), 5002: ("Temp", DataType.String)})
            wait_for(lambda: count(fresh_database, "SELECT count(*) FROM tags WHERE name = 'Temp' AND datatype = 12")
                     == 1, what="the re-birth with the new datatypes")  # fmt: skip
            r = client.post("/api/v1/quarantine/reingest", json={"site": unique_id}, headers=bearer(engineer))
            assert r.json() == {"site": unique_id, "moved": 2, "stored": 2, "remaining": 4}, r.text
            r = client.get(f"/api/v1/quarantine?site={unique_id}", headers=bearer(engineer))
            assert r.json()["by_reason"] == {"out_of_range": 3, "wrong_datatype": 1}
        assert count(fresh_database, "SELECT count(*) FROM samples s JOIN tags t USING (tag_id)"
                     " WHERE t.name = 'Count' AND s.value = 2.5") == 1  # fmt: skip
        assert count(fresh_database, "SELECT count(*) FROM samples_text s JOIN tags t USING (tag_id)"
                     " WHERE t.name = 'Temp' AND s.value = 'hot'") == 1  # fmt: skip
    finally:
        node.close()


def test_data_before_its_birth_is_a_dead_letter_holds_acks_and_asks_for_a_rebirth(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    make_service(rebirth_min_interval_ms=200)
    stranger = SpNode(mqtt_url, unique_id, "line-9", {"m1": 1})
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 1, "m9": 1})
    t = now_ms() - 60_000
    try:
        # NDATA from a node that never sent an NBIRTH: a dead letter and a rebirth request.
        stranger.pub(node_topic(unique_id, MessageType.NDATA, "line-9"),
                     encode_metrics(now_ms(), [BirthMetric("Outbox/Depth", DataType.Int64, 3)], seq=0))  # fmt: skip
        wait_for(lambda: stranger.rebirth_requests() >= 1, what="rebirth request of the node without a birth")
        node.birth()
        wait_for(lambda: count(fresh_database, "SELECT count(*) FROM machines WHERE online") == 2, what="births")
        node.new_batch()
        node.ddata("m1", np.array([t], np.int64), np.array([0]), np.array([1.0]))
        node.pub(device_topic(unique_id, MessageType.DDEATH, "line-1", "m9"), encode_metrics(now_ms(), [], seq=node.next_seq()))
        wait_for(lambda: count(fresh_database, "SELECT count(*) FROM machines WHERE online") == 1, what="DDEATH")
        requests = node.rebirth_requests()
        node.new_batch()  # batch 2: DDATA of m9, which is not born in this session any more
        node.ddata("m9", np.array([t + 1], np.int64), np.array([0]), np.array([2.0]))
        for k in (3, 4):
            node.new_batch()
            node.ddata("m1", np.array([t + k], np.int64), np.array([0]), np.array([float(k)]))
        wait_for(lambda: count(fresh_database, "SELECT count(*) FROM edge_nodes WHERE last_batch = 4") == 1,
                 what="batch 4 committed")  # fmt: skip
        rows = count(fresh_database, "SELECT count(*) FROM dead_letters WHERE reason = 'data_before_birth'")
        assert rows == 2
        # Batch 1 may be acknowledged; nothing from batch 2 on (it was not stored): the edge keeps it.
        assert count(fresh_database, "SELECT coalesce(max(acked_batch), 0) FROM edge_nodes"
                     " WHERE edge_node_id = 'line-1'") < 2  # fmt: skip
        wait_for(lambda: node.rebirth_requests() > requests, what="rebirth request after DDATA before DBIRTH")
        assert all(a < 2 for a in node.acks), node.acks
        # The rebirth, then the edge's replay of everything after its last ack: stored, and acknowledged again.
        node.birth()
        node.ddata("m9", np.array([t + 1], np.int64), np.array([0]), np.array([2.0]), batch=2)
        node.new_batch()
        node.ddata("m1", np.array([t + 5], np.int64), np.array([0]), np.array([5.0]))
        wait_for(lambda: node.acks and max(node.acks) >= 2, what="acks after the rebirth")
        assert count(fresh_database, "SELECT count(*) FROM samples s JOIN tags t USING (tag_id)"
                     " WHERE t.machine_id = 'm9' AND s.value = 2.0") == 1  # fmt: skip
    finally:
        node.close()
        stranger.close()
