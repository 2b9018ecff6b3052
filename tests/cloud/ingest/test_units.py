"""Units travel from the agent config to the API: DBIRTH `engUnit` property -> tags.unit -> /api/v1 tags."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import psycopg
from pysparkplug._protobuf import Payload

from tests.support.spnode import SpNode, wait_for
from zhizao.broker.sparkplug.codec import BirthMetric, encode_birth
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.broker.sparkplug.topics import MessageType, device_topic
from zhizao.cloud.ingest.service import IngestService
from zhizao.edge.node.messages import LastValues, SignalIndex, device_birth_metrics
from zhizao.edge.samples import Signal, SignalTable


def test_the_edge_puts_each_signals_unit_into_its_dbirth() -> None:
    table = SignalTable()
    table.add(Signal("m1", "Temperature/Spindle", int(DataType.Double), "degC"))
    table.add(Signal("m1", "State", int(DataType.Int32)))
    index = SignalIndex(table)
    birth = Payload()
    birth.ParseFromString(encode_birth(1, 1, device_birth_metrics(0, index, LastValues(len(table)), 1, 0)))
    units = {m.name: dict(zip(m.properties.keys, [v.string_value for v in m.properties.values], strict=True))
             for m in birth.metrics}  # fmt: skip
    assert units["Temperature/Spindle"] == {"engUnit": "degC"}
    assert units["State"] == {}


def test_the_cloud_stores_the_unit_a_birth_declares(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    make_service()
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 1})
    try:
        node.birth()
        metrics = [
            BirthMetric("Temperature/Spindle", DataType.Double, 21.5, alias=500, timestamp_ms=1_767_225_600_000,
                        properties={"engUnit": (DataType.String, "degC")}),
            BirthMetric("Speed", DataType.Double, 1.0, alias=501, timestamp_ms=1_767_225_600_000),
        ]  # fmt: skip
        node.pub(device_topic(unique_id, MessageType.DBIRTH, "line-1", "m2"), encode_birth(node.next_seq(), 1, metrics))

        def units() -> dict[str, str | None]:
            with psycopg.connect(fresh_database) as conn:
                rows = conn.execute("SELECT name, unit FROM tags WHERE machine_id = 'm2'").fetchall()
            return dict(rows)

        wait_for(lambda: len(units()) == 2, what="m2's tags")
        assert units() == {"Temperature/Spindle": "degC", "Speed": None}
        # A later birth without the property keeps the unit already known.
        metrics[0] = BirthMetric("Temperature/Spindle", DataType.Double, 22.0, alias=500, timestamp_ms=1_767_225_601_000)
        node.pub(device_topic(unique_id, MessageType.DBIRTH, "line-1", "m2"), encode_birth(node.next_seq(), 2, metrics))
        node.ddata("m1", np.array([1_767_225_602_000], np.int64), np.array([0]), np.array([1.0]), batch=1)
        def later_sample() -> bool:
            with psycopg.connect(fresh_database) as conn:
                return conn.execute("SELECT count(*) FROM samples WHERE ts = to_timestamp(1767225602)").fetchone() == (1,)

        wait_for(later_sample, what="a later sample, processed after the second birth")
        assert units()["Temperature/Spindle"] == "degC"
    finally:
        node.close()
