"""Typed values through the ingest (real Mosquitto + PostgreSQL + the API): 64-bit integers beyond 2**53 stored
exactly (samples_int beside their float64 row), DateTime as ISO 8601 and arrays as canonical JSON in samples_text,
each answered by /latest and /series with its type; arrays or text into tags of another kind held in quarantine."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from tests.cloud.ingest.test_ingest_datatypes import _dbirth, _ddata
from tests.support.apifixtures import bearer, make_client
from tests.support.db import count
from tests.support.spnode import SpNode, now_ms, wait_for
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.cloud.auth import create_token
from zhizao.cloud.ingest.service import IngestService

HOUR = 3_600_000
TAGS = {  # device m2, alias -> (name, datatype)
    5001: ("Serial", DataType.UInt64),
    5002: ("Offset", DataType.Int64),
    5003: ("Stamp", DataType.DateTime),
    5004: ("Profile", DataType.DoubleArray),
    5005: ("Names", DataType.StringArray),
    5006: ("Temp", DataType.Double),
    5007: ("Blob", DataType.Bytes),
    5008: ("Doc", DataType.Text),  # JSON documents: matrices, structures, LocalizedText
}


def test_typed_values_are_stored_exactly_and_answered_with_their_type(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    make_service()
    node = SpNode(mqtt_url, unique_id, "line-1", {"m1": 1})
    t = now_ms() - 60_000
    try:
        node.birth()
        _dbirth(node, TAGS)
        wait_for(lambda: count(fresh_database, "SELECT count(*) FROM machines WHERE online") == 2, what="births")
        _ddata(node, [
            (5001, t, str(2**64 - 1), DataType.UInt64),        # beyond 2**53: exact, as text on the edge
            (5001, t + 1, 42.0, DataType.UInt64),              # small: the float64 lane
            (5002, t, str(-(2**63)), DataType.Int64),
            (5002, t + 1, str(2**53 + 1), DataType.Int64),     # the latest value, exact
            (5003, t, 1_767_225_600_123.0, DataType.DateTime),
            (5003, t + 1, 2.0**62, DataType.DateTime),         # after the year 9999: out_of_range
            (5004, t, "[1.5,-2.25,1e+300]", DataType.DoubleArray),
            (5004, t + 1, "[0.5]", DataType.String),           # a plain string into an array tag: wrong_datatype
            (5004, t + 2, "hello", DataType.String),
            (5005, t, '["a","漢字",""]', DataType.StringArray),
            (5006, t, '[1.0,2.0]', DataType.DoubleArray),      # an array into a Double tag: wrong_datatype
            (5001, t + HOUR, str(2**64 - 2), DataType.UInt64),  # a clock an hour ahead: future_timestamp, exact
            (5003, t + HOUR, 1_767_225_600_456.0, DataType.DateTime),
            (5007, t, "AP96aGk=", DataType.Bytes),             # b"\x00\xffzhi", base64 on the edge and in the cloud
            (5007, t + 1, "plain", DataType.String),           # a string into a Bytes tag: wrong_datatype
            (5008, t, "[[1,2],[3,4]]", DataType.Text),
            (5008, t + 1, '{"locale":"de","text":"Presse"}', DataType.Text),
        ])  # fmt: skip
        _ddata(node, [(5006, t + 2, 22.0, DataType.Double)])  # closes batch 1
        wait_for(lambda: node.acks and max(node.acks) >= 1, what="ack of the typed batch")
        wait_for(lambda: count(fresh_database, "SELECT count(*) FROM latest_values WHERE value = 22.0") == 1,
                 what="the closing batch committed too (the latest Temp)")
        with psycopg.connect(fresh_database) as conn:
            exact = conn.execute(
                "SELECT t.name, i.value::text, s.value FROM samples_int i JOIN tags t USING (tag_id)"
                " JOIN samples s ON s.tag_id = i.tag_id AND s.ts = i.ts ORDER BY t.name, i.ts").fetchall()  # fmt: skip
            text = conn.execute(
                "SELECT t.name, s.value FROM samples_text s JOIN tags t USING (tag_id) ORDER BY t.name, s.ts").fetchall()
            held = conn.execute(
                "SELECT t.name, q.ts_ms - %s, q.text_value, q.reason FROM quarantine q JOIN tags t USING (tag_id)"
                " ORDER BY t.name", [t]).fetchall()  # fmt: skip
        assert exact == [("Offset", str(-(2**63)), -(2.0**63)), ("Offset", str(2**53 + 1), 2.0**53),
                         ("Serial", str(2**64 - 1), 2.0**64)]  # fmt: skip
        assert text == [("Blob", "AP96aGk="), ("Doc", "[[1,2],[3,4]]"), ("Doc", '{"locale":"de","text":"Presse"}'),
                        ("Names", '["a","漢字",""]'), ("Profile", "[1.5,-2.25,1e+300]"),
                        ("Stamp", "2026-01-01T00:00:00.123Z")]  # fmt: skip
        assert held == [("Blob", 1, "plain", "wrong_datatype"), ("Profile", 1, "[0.5]", "wrong_datatype"), ("Profile", 2, "hello", "wrong_datatype"), ("Serial", HOUR, str(2**64 - 2), "future_timestamp"),
                        ("Stamp", 1, None, "out_of_range"), ("Stamp", HOUR, None, "future_timestamp"),
                        ("Temp", 0, "[1.0,2.0]", "wrong_datatype")]  # fmt: skip

        viewer = create_token(fresh_database, "viewer", unique_id, "viewer")
        with make_client(fresh_database) as client:
            latest = client.get("/api/v1/latest", params={"site": unique_id, "machine": "m2"}, headers=bearer(viewer))
            assert {r["name"]: r["value"] for r in latest.json()} == {
                "Serial": 42, "Offset": 2**53 + 1, "Stamp": "2026-01-01T00:00:00.123Z", "Profile": [1.5, -2.25, 1e300],
                "Names": ["a", "漢字", ""], "Temp": 22.0, "Blob": "AP96aGk=", "Doc": {"locale": "de", "text": "Presse"},
            }
            assert {r["name"]: r["datatype"] for r in latest.json()}["Blob"] == "Bytes"

            def series(name: str) -> list[object]:
                r = client.get("/api/v1/series", params={"site": unique_id, "machine": "m2", "name": name,
                                                         "start": str(t - 1000)}, headers=bearer(viewer))
                assert r.status_code == 200, r.text
                return list(r.json()["points"]["value"])

            assert series("Serial") == [2**64 - 1, 42] and all(type(v) is int for v in series("Serial"))
            assert series("Offset") == [-(2**63), 2**53 + 1]
            assert series("Stamp") == ["2026-01-01T00:00:00.123Z"]
            assert series("Profile") == [[1.5, -2.25, 1e300]]
            assert series("Names") == [["a", "漢字", ""]]
            assert series("Blob") == ["AP96aGk="]
            assert series("Doc") == [[[1, 2], [3, 4]], {"locale": "de", "text": "Presse"}]
            r = client.get("/api/v1/series", params={"site": unique_id, "machine": "m2", "name": "Profile",
                                                     "bucket": "1m"}, headers=bearer(viewer))
            assert r.status_code == 400 and "DoubleArray" in r.json()["error"]["message"]

            # The clock fixed: re-ingested as the ingest stores them (exact integer, DateTime as ISO 8601).
            engineer = create_token(fresh_database, "engineer", unique_id, "eng")
            r = client.post("/api/v1/quarantine/reingest", headers=bearer(engineer),
                            json={"site": unique_id, "reason": "future_timestamp", "shift_ms": -HOUR + 5})
            assert r.json() == {"site": unique_id, "moved": 2, "stored": 2, "remaining": 5}, r.text
            assert series("Serial") == [2**64 - 1, 42, 2**64 - 2]
            assert series("Stamp") == ["2026-01-01T00:00:00.123Z", "2026-01-01T00:00:00.456Z"]
            # Of the rest only what fits its tag now moves: the array text; never "hello" into an array tag nor
            # "plain" (not base64) into a Bytes tag.
            r = client.post("/api/v1/quarantine/reingest", headers=bearer(engineer), json={"site": unique_id})
            assert r.json() == {"site": unique_id, "moved": 1, "stored": 1, "remaining": 4}, r.text
            assert series("Profile") == [[1.5, -2.25, 1e300], [0.5]]
    finally:
        node.close()
