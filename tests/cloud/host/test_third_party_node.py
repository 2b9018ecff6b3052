"""A Sparkplug edge node nobody here wrote: payloads built with pysparkplug's own classes, every metric aliased
(bdSeq and Node Control/* included, as Sparkplug requires once aliases are used), DATA by alias with datatypes.
The cloud stores its data exactly and never asks it for a rebirth after its first birth."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pysparkplug as psp

from tests.support.spnode import connect, now_ms, wait_for
from zhizao.cloud.ingest.service import IngestService

DT = psp.DataType
N = 200


def _metric(name: str, datatype: psp.DataType, value: object, alias: int, ts: int) -> psp.Metric:
    return psp.Metric(timestamp=ts, name=name, datatype=datatype, value=value, alias=alias)


class ThirdPartyNode:
    """An edge node in the style of Eclipse Tahu's clients, on pysparkplug payloads and a plain paho client."""

    def __init__(self, url: str, site: str, edge: str) -> None:
        self.site, self.edge, self.seq = site, edge, 0
        self.ncmds: list[bytes] = []
        self.client: mqtt.Client = connect(url, f"tahu-style-{uuid.uuid4().hex[:6]}")
        self.client.on_message = lambda c, u, m: self.ncmds.append(bytes(m.payload))
        self.client.subscribe(f"spBv1.0/{site}/NCMD/{edge}", qos=1)

    def _publish(self, kind: str, payload: psp.NBirth | psp.DBirth | psp.NData | psp.DData, device: str = "") -> None:
        topic = f"spBv1.0/{self.site}/{kind}/{self.edge}" + (f"/{device}" if device else "")
        self.client.publish(topic, payload.encode(include_dtypes=True), qos=0).wait_for_publish(5)
        self.seq = (self.seq + 1) % 256

    def birth(self, ts: int) -> None:
        self.seq = 0
        self._publish("NBIRTH", psp.NBirth(timestamp=ts, seq=self.seq, metrics=(
            _metric("bdSeq", DT.INT64, 0, 0, ts),
            _metric("Node Control/Rebirth", DT.BOOLEAN, False, 1, ts),
            _metric("Node Control/Reboot", DT.BOOLEAN, False, 2, ts),
            _metric("Properties/Hardware Make", DT.STRING, "acme", 3, ts),
            _metric("Temperature", DT.FLOAT, 21.5, 4, ts),
        )))  # fmt: skip
        self._publish("DBIRTH", psp.DBirth(timestamp=ts, seq=self.seq, metrics=(
            _metric("Pressure", DT.DOUBLE, 1.0, 10, ts),
            _metric("Count", DT.INT64, 0, 11, ts),
            _metric("Mode", DT.STRING, "auto", 12, ts),
            _metric("Running", DT.BOOLEAN, True, 13, ts),
            _metric("Level", DT.INT16, -5, 14, ts),
        )), device="press01")  # fmt: skip

    def data(self, t0: int) -> None:
        for k in range(N):
            ts = t0 + k * 10
            self._publish("DDATA", psp.DData(timestamp=ts, seq=self.seq, metrics=(
                psp.Metric(timestamp=ts, name=None, datatype=DT.DOUBLE, value=0.5 * k, alias=10),
                psp.Metric(timestamp=ts, name=None, datatype=DT.INT64, value=2**40 + k, alias=11),
                psp.Metric(timestamp=ts, name=None, datatype=DT.STRING, value=f"mode-{k % 3}", alias=12),
                psp.Metric(timestamp=ts, name=None, datatype=DT.BOOLEAN, value=k % 2 == 0, alias=13),
                psp.Metric(timestamp=ts, name=None, datatype=DT.INT16, value=-k, alias=14),
            )), device="press01")  # fmt: skip
            if k % 50 == 0:  # node metrics by alias, the rebirth control included, as some nodes send them
                self._publish("NDATA", psp.NData(timestamp=ts, seq=self.seq, metrics=(
                    psp.Metric(timestamp=ts, name=None, datatype=DT.FLOAT, value=22.0, alias=4),
                    psp.Metric(timestamp=ts, name=None, datatype=DT.BOOLEAN, value=False, alias=1),
                )))  # fmt: skip

    def rebirth_requests(self) -> int:
        return sum(1 for p in self.ncmds if any(m.name == "Node Control/Rebirth" for m in psp.NCmd.decode(p).metrics))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _rows(url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def test_a_third_party_node_is_stored_exactly_without_rebirth_requests(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    make_service()
    node = ThirdPartyNode(mqtt_url, unique_id, "gw-1")
    t0 = now_ms() - 60_000
    try:
        node.birth(t0 - 1000)
        node.data(t0)
        numeric = "SELECT t.name, count(*) FROM samples s JOIN tags t USING (tag_id) WHERE t.machine_id = 'press01'" \
                  " AND s.ts >= to_timestamp(%s / 1000.0) GROUP BY 1"  # fmt: skip
        wait_for(lambda: dict(_rows(fresh_database, numeric, t0)).get("Level") == N, timeout=20, what="all samples")  # type: ignore[arg-type]
        counts = dict(_rows(fresh_database, numeric, t0))
        assert counts == {"Pressure": N, "Count": N, "Running": N, "Level": N}
        values = dict(_rows(fresh_database,
            "SELECT t.name, array_agg(s.value ORDER BY s.ts) FROM samples s JOIN tags t USING (tag_id)"
            " WHERE t.machine_id = 'press01' AND s.ts >= to_timestamp(%s / 1000.0) GROUP BY 1", t0))  # fmt: skip
        assert values["Pressure"] == [0.5 * k for k in range(N)]
        assert values["Count"] == [float(2**40 + k) for k in range(N)]
        assert values["Running"] == [1.0 if k % 2 == 0 else 0.0 for k in range(N)]
        assert values["Level"] == [float(-k) for k in range(N)]
        text = _rows(fresh_database,
            "SELECT s.value FROM samples_text s JOIN tags t USING (tag_id)"
            " WHERE t.machine_id = 'press01' AND t.name = 'Mode' AND s.ts >= to_timestamp(%s / 1000.0) ORDER BY s.ts", t0)  # fmt: skip
        assert [r[0] for r in text] == [f"mode-{k % 3}" for k in range(N)]
        temperature = _rows(fresh_database,
            "SELECT count(*) FROM samples s JOIN tags t USING (tag_id) WHERE t.machine_id IS NULL"
            " AND t.name = 'Temperature' AND s.ts >= to_timestamp(%s / 1000.0)", t0)  # fmt: skip
        assert temperature == [(N // 50,)]
        # Control metrics are protocol, not time series: none became a tag.
        assert _rows(fresh_database, "SELECT count(*) FROM tags WHERE name LIKE 'Node Control/%%' OR name = 'bdSeq'") == [(0,)]
        # A last message through the same ordered path: whatever the host wanted to ask for, it asked by now.
        node._publish("DDATA", psp.DData(timestamp=t0 + 10 * N + 1000, seq=node.seq, metrics=(
            psp.Metric(timestamp=t0 + 10 * N + 1000, name=None, datatype=DT.DOUBLE, value=-1.0, alias=10),)), device="press01")  # fmt: skip
        wait_for(lambda: dict(_rows(fresh_database, numeric, t0)).get("Pressure") == N + 1, what="the last sample")  # type: ignore[arg-type]
        dead = _rows(fresh_database, "SELECT reason, detail FROM dead_letters")
        assert dead == [], dead
        assert node.rebirth_requests() == 0
    finally:
        node.close()


def test_two_edge_nodes_with_the_same_device_id_are_two_machines(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str
) -> None:
    """Sparkplug makes a device unique within its edge node: `press01` of gw-1 and `press01` of gw-2 are two
    machines, each with its own tags and latest values, and a command to the second goes to gw-2's device."""
    from tests.support.apifixtures import bearer, make_client
    from zhizao.cloud.auth import create_token

    make_service()
    first, second = ThirdPartyNode(mqtt_url, unique_id, "gw-1"), ThirdPartyNode(mqtt_url, unique_id, "gw-2")
    t0 = now_ms() - 60_000
    try:
        first.birth(t0 - 1000)
        wait_for(lambda: _rows(fresh_database, "SELECT count(*) FROM machines") == [(1,)], what="gw-1's machine")
        second.birth(t0 - 900)
        second.data(t0)  # gw-2's Pressure runs 0.5 k, Level -k; gw-1 sends one sample of its own below
        first._publish("DDATA", psp.DData(timestamp=t0 + 5, seq=first.seq, metrics=(
            psp.Metric(timestamp=t0 + 5, name=None, datatype=DT.DOUBLE, value=1234.5, alias=10),)), device="press01")  # fmt: skip
        latest = "SELECT t.machine_id, t.edge_node_id, t.name, l.value FROM tags t JOIN latest_values l USING (tag_id)" \
                 " WHERE t.name = 'Pressure' ORDER BY 1"  # fmt: skip
        wait_for(lambda: len(_rows(fresh_database, latest)) == 2 and _rows(fresh_database, latest)[1][3] == 0.5 * (N - 1),
                 timeout=20, what="both devices' latest Pressure")  # fmt: skip
        assert _rows(fresh_database, latest) == [("press01", "gw-1", "Pressure", 1234.5),
                                                 ("press01--gw-2", "gw-2", "Pressure", 0.5 * (N - 1))]
        assert _rows(fresh_database, "SELECT machine_id, coalesce(device_id, machine_id), edge_node_id, online"
                                     " FROM machines ORDER BY 1") == [("press01", "press01", "gw-1", True),
                                                                      ("press01--gw-2", "press01", "gw-2", True)]
        # Each machine has its own five tags, none shared.
        assert _rows(fresh_database, "SELECT machine_id, edge_node_id, count(*) FROM tags WHERE machine_id IS NOT NULL"
                                     " GROUP BY 1, 2 ORDER BY 1") == [("press01", "gw-1", 5), ("press01--gw-2", "gw-2", 5)]
        token = create_token(fresh_database, "viewer", unique_id, "viewer")
        with make_client(fresh_database) as api:
            one = api.get("/api/v1/latest", params={"site": unique_id, "machine": "press01"}, headers=bearer(token))
            two = api.get("/api/v1/latest", params={"site": unique_id, "machine": "press01--gw-2"}, headers=bearer(token))
            machines = api.get(f"/api/v1/sites/{unique_id}/machines", headers=bearer(token))
        assert one.status_code == two.status_code == 200, (one.text, two.text)
        assert {r["edge_node_id"] for r in one.json()} == {"gw-1"}
        assert {r["edge_node_id"] for r in two.json()} == {"gw-2"}
        pressure = {r["machine_id"]: r["value"] for r in one.json() + two.json() if r["name"] == "Pressure"}
        assert pressure == {"press01": 1234.5, "press01--gw-2": 0.5 * (N - 1)}
        assert [(m["machine_id"], m["device_id"], m["edge_node_id"]) for m in machines.json()] == [
            ("press01", "press01", "gw-1"), ("press01--gw-2", "press01", "gw-2")]
        # gw-2 going offline takes only its own device offline.
        second._publish("DDEATH", psp.DDeath(timestamp=now_ms(), seq=second.seq), device="press01")
        wait_for(lambda: _rows(fresh_database, "SELECT machine_id FROM machines WHERE NOT online") == [("press01--gw-2",)],
                 what="gw-2's device offline")  # fmt: skip
        assert _rows(fresh_database, "SELECT online FROM machines WHERE machine_id = 'press01'") == [(True,)]
        assert first.rebirth_requests() == second.rebirth_requests() == 0
    finally:
        first.close()
        second.close()


def test_a_command_to_the_second_press01_reaches_its_own_edge_node_signed_for_its_device(
    make_service: Callable[..., IngestService], fresh_database: str, mqtt_url: str, unique_id: str, tmp_path: Path
) -> None:
    """The machine id `press01--gw-2` is the cloud's name; the DCMD goes to gw-2's device `press01`, signed for it."""
    from tests.support.apifixtures import bearer, make_client
    from zhizao.broker.commands import info_topic, key_id, load_or_create_key, verify_command
    from zhizao.broker.sparkplug.codec import decode
    from zhizao.cloud.auth import create_token
    from zhizao.cloud.commands.service import CommandService

    make_service()
    first, second = ThirdPartyNode(mqtt_url, unique_id, "gw-1"), ThirdPartyNode(mqtt_url, unique_id, "gw-2")
    dcmds: list[tuple[str, bytes]] = []
    for node in (first, second):
        node.client.message_callback_add(f"spBv1.0/{unique_id}/DCMD/#", lambda c, u, m: dcmds.append((m.topic, m.payload)))
        node.client.subscribe(f"spBv1.0/{unique_id}/DCMD/{node.edge}/+", qos=1)
    key_file = tmp_path / "command-key.pem"
    key = load_or_create_key(key_file)
    service: CommandService | None = None
    try:
        first.birth(now_ms() - 2000)
        wait_for(lambda: _rows(fresh_database, "SELECT count(*) FROM machines") == [(1,)], what="gw-1's machine")
        second.birth(now_ms() - 1000)
        wait_for(lambda: _rows(fresh_database, "SELECT count(*) FROM machines WHERE online") == [(2,)], what="both")
        service = CommandService(fresh_database, mqtt_url, key)
        service.start()
        # gw-2's agent declares a writable setpoint on its device press01, as our agents do in their info.
        info = {"agent_version": "third-party", "config_version": "1", "timestamp": now_ms(),
                "commands": {"targets": [{"machine": "press01", "name": "Pressure", "kind": "write",
                                          "datatype": int(DT.DOUBLE), "min": 0, "max": 10}]}}  # fmt: skip
        second.client.publish(info_topic(unique_id, "gw-2"), json.dumps(info), qos=1).wait_for_publish(5)
        wait_for(lambda: _rows(fresh_database, "SELECT machine_id, edge_node_id FROM command_targets")
                 == [("press01--gw-2", "gw-2")], what="gw-2's target under its machine id")  # fmt: skip
        token = create_token(fresh_database, "engineer", unique_id, "engineer")
        with make_client(fresh_database) as api:
            made = api.post("/api/v1/machines/press01--gw-2/commands", params={"site": unique_id},
                            json={"metric": "Pressure", "value": 2.5, "reason": "test"}, headers=bearer(token))  # fmt: skip
        assert made.status_code == 201, made.text
        service.kick()
        wait_for(lambda: dcmds, what="the DCMD")
        topic, payload = dcmds[0]
        assert topic == f"spBv1.0/{unique_id}/DCMD/gw-2/press01"
        signed = verify_command(decode(payload), {key_id(key): key.public_key()}, unique_id, "gw-2", "press01", now_ms())
        assert signed.command_id == made.json()["command_id"]
        assert [(name, value) for name, _, value in signed.metrics] == [("Pressure", 2.5)]
    finally:
        if service is not None:
            service.stop()
        first.close()
        second.close()
