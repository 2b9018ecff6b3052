"""What the edge node puts on the wire at connect and disconnect, seen by a protocol-level fake broker.

Checklist items (standards.md section 5): 2 clean start + session expiry 0 on every CONNECT, 3 the Will,
4 bdSeq 0, +1 per CONNECT, wrap 255 -> 0, NBIRTH bdSeq = Will bdSeq, 5 NCMD/DCMD subscribed at QoS 1 before
NBIRTH, 13 NDEATH then DISCONNECT with "Disconnect with Will Message".
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pysparkplug as psp
import pytest
from pysparkplug._protobuf import Payload

from tests.support.fake_broker import FakeBroker, Packet
from zhizao.edge.node.config import MqttConfig, OutboxConfig, SparkplugConfig
from zhizao.edge.node.session import EdgeNode
from zhizao.edge.outbox import Outbox
from zhizao.edge.samples import Signal, SignalTable


def signals() -> SignalTable:
    t = SignalTable()
    t.add(Signal("m1", "State", 3))
    t.add(Signal("m2", "State", 3))
    return t


def wait_packets(broker: FakeBroker, pred, timeout: float = 15.0) -> list[Packet]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = broker.snapshot()
        if pred(snap):
            return snap
        time.sleep(0.02)
    raise AssertionError(f"timed out; packets: {[(p.kind, p.conn) for p in broker.snapshot()]}")


def nbirths(packets: list[Packet]) -> list[Packet]:
    return [p for p in packets if p.kind == "PUBLISH" and "/NBIRTH/" in str(p.fields["topic"])]


def bdseq_of_will(p: Packet) -> int:
    death = psp.NDeath.decode(p.fields["will_payload"])  # type: ignore[arg-type]
    return int(death.bd_seq_metric.value)


@pytest.mark.parametrize("protocol", [5, 3])
def test_every_connect_is_clean_with_a_new_bdseq_will(tmp_path: Path, protocol: int) -> None:
    broker = FakeBroker(drop_after_publishes=3, drop_connections=2)  # NBIRTH + 2 DBIRTH, then a drop, twice
    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "bdseq").write_text(
        "253"
    )  # persisted from earlier runs: next CONNECTs use 254, 255, 0 (wrap)

    async def main() -> None:
        box = Outbox(tmp_path / "box", OutboxConfig())
        mqtt = MqttConfig(url=broker.url, protocol=protocol, reconnect_min_s=1, reconnect_max_s=1)  # type: ignore[arg-type]
        node = EdgeNode("site-a", "edge-1", mqtt, SparkplugConfig(publish_interval_ms=50), box, signals())
        await node.start()
        await asyncio.to_thread(wait_packets, broker, lambda ps: len(nbirths(ps)) >= 3)
        await node.stop()
        box.close()

    asyncio.run(main())
    # The fake broker reads each socket in its own thread: wait until it has read the clean stop's DISCONNECT
    # (closed at once, it could stop before reading the last packet); no DISCONNECT at all still fails here.
    wait_packets(broker, lambda ps: any(p.kind == "DISCONNECT" and p.conn == max(q.conn for q in ps) for p in ps))
    broker.close()
    packets = broker.snapshot()
    connects = [p for p in packets if p.kind == "CONNECT"]
    assert len(connects) == 3
    for c in connects:
        f = c.fields
        assert f["level"] == (5 if protocol == 5 else 4)
        assert f["clean_start"] is True
        if protocol == 5:
            assert f["session_expiry"] in (None, 0)  # absent means 0 as well
        assert f["will"] is True and f["will_qos"] == 1 and f["will_retain"] is False
        assert f["will_topic"] == "spBv1.0/site-a/NDEATH/edge-1"
        raw = Payload()
        raw.ParseFromString(f["will_payload"])  # type: ignore[arg-type]
        assert [(m.name, m.datatype) for m in raw.metrics] == [("bdSeq", 4)]  # exactly one metric, Int64
        assert not raw.HasField("seq")
    assert [bdseq_of_will(c) for c in connects] == [254, 255, 0]
    for conn in range(1, 4):
        in_conn = [p for p in packets if p.conn == conn]
        sub = next(i for i, p in enumerate(in_conn) if p.kind == "SUBSCRIBE")
        birth = next(i for i, p in enumerate(in_conn) if p in nbirths(packets))
        assert sub < birth, "NCMD must be subscribed before NBIRTH"
        topics = dict(in_conn[sub].fields["topics"])  # type: ignore[arg-type]
        assert topics["spBv1.0/site-a/NCMD/edge-1"] == 1
        assert topics["spBv1.0/site-a/DCMD/edge-1/m1"] == 1 and topics["spBv1.0/site-a/DCMD/edge-1/m2"] == 1
        assert topics["zhizao/v1/ack/site-a/edge-1"] == 1
        nb = psp.NBirth.decode(in_conn[birth].fields["payload"])  # type: ignore[arg-type]
        will_bd = bdseq_of_will(next(p for p in in_conn if p.kind == "CONNECT"))
        assert [m.value for m in nb.metrics if m.name == "bdSeq"] == [will_bd]
    # clean stop: NDEATH (QoS 1, same bdSeq), acknowledged, then a normal DISCONNECT (reason 0x00 on MQTT 5),
    # which discards the Will: a host sees one NDEATH, not two
    last = [p for p in packets if p.conn == connects[-1].conn]
    assert last[-1].kind == "DISCONNECT"
    if protocol == 5:
        assert last[-1].fields["reason"] == 0x00
    ndeath = last[-2]
    assert ndeath.kind == "PUBLISH" and ndeath.fields["topic"] == "spBv1.0/site-a/NDEATH/edge-1"
    assert ndeath.fields["qos"] == 1 and ndeath.fields["retain"] is False
    assert psp.NDeath.decode(ndeath.fields["payload"]).bd_seq_metric.value == bdseq_of_will(connects[-1])  # type: ignore[arg-type]
    assert (tmp_path / "box" / "bdseq").read_text() == str(bdseq_of_will(connects[-1]))


def test_first_connect_ever_uses_bdseq_0(tmp_path: Path) -> None:
    broker = FakeBroker()

    async def main() -> None:
        box = Outbox(tmp_path, OutboxConfig())
        node = EdgeNode("site-a", "edge-1", MqttConfig(url=broker.url), SparkplugConfig(), box, signals())
        await node.start()
        await asyncio.to_thread(wait_packets, broker, lambda ps: len(nbirths(ps)) >= 1)
        await node.stop()
        box.close()

    asyncio.run(main())
    broker.close()
    assert bdseq_of_will(broker.of("CONNECT")[0]) == 0
