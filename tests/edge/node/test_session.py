"""The Sparkplug edge-node session against the real Mosquitto, decoded with pysparkplug (standards.md section 5)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pysparkplug as psp
import pytest
from pysparkplug._protobuf import Payload

from tests.support.node import block, signal_table
from tests.support.spb_capture import Capture, Captured, all_samples, decode_data, seq_of
from tests.support.spnode import until
from zhizao.edge.node.config import MqttConfig, OutboxConfig, SparkplugConfig
from zhizao.edge.node.session import EdgeNode, NodeError
from zhizao.edge.outbox import Outbox, OutboxFullError
from zhizao.edge.samples import QUALITY_BAD, QUALITY_GOOD


class Rig:
    """An edge node on the real broker plus a capture of everything under its topics."""

    def __init__(
        self, tmp: Path, mqtt_url: str, site: str, *, acks: bool = True, outbox_bytes: int = 1 << 30, **sp: object
    ) -> None:
        self.site, self.edge = site, "node-1"
        self.cap = Capture(mqtt_url, [f"spBv1.0/{site}/#", f"spBv1.0/STATE/{site}-host"])
        self.outbox = Outbox(tmp / "outbox", OutboxConfig(fsync_interval_s=0, acks=acks, max_bytes=outbox_bytes,
                                                          segment_bytes=min(16 << 20, outbox_bytes // 4)))
        sp_cfg = SparkplugConfig.model_validate({"publish_interval_ms": 50, **sp})
        self.mqtt_url = mqtt_url
        self.node = EdgeNode(
            site, self.edge, MqttConfig(url=mqtt_url), sp_cfg, self.outbox, signal_table(), acks=acks
        )

    def topic(self, kind: str, device: str | None = None) -> str:
        return f"spBv1.0/{self.site}/{kind}/{self.edge}" + (f"/{device}" if device else "")

    async def close(self) -> None:
        await self.node.stop()
        self.outbox.close()
        self.cap.close()


def run(
    tmp_path: Path, mqtt_url: str, site: str, body: Callable[[Rig], Awaitable[None]], **kw: object
) -> Rig:
    async def main() -> Rig:
        rig = Rig(tmp_path, mqtt_url, site, **kw)  # type: ignore[arg-type]
        try:
            await body(rig)
        finally:
            await rig.close()
        return rig

    return asyncio.run(main())


def kinds(msgs: list[Captured]) -> list[str]:
    return [m.kind for m in msgs]


def test_births_topics_seq_and_many_samples_per_ddata(tmp_path: Path, mqtt_url: str, unique_id: str) -> None:
    async def body(rig: Rig) -> None:
        await rig.node.start()
        await rig.cap.until(lambda ms: kinds(ms).count("DBIRTH") == 2, what="births")
        n = 3000
        sig = [i % 5 for i in range(n)]
        vals = [float("nan") if s == 4 else float(i) for i, s in enumerate(sig)]  # signal 4 is a String
        text = tuple((i, f"note {i}") for i in range(n) if sig[i] == 4)
        rig.outbox.append(block(sig, vals, text=text))
        await rig.cap.until(lambda ms: len(all_samples(ms)) >= n, what="3000 samples")

    rig = run(tmp_path, mqtt_url, unique_id, body, max_samples_per_message=500)
    msgs = rig.cap.snapshot()
    # 1. topics: exactly spBv1.0/{g}/{TYPE}/{e}[/{d}], device only on D* types
    for msg in msgs:
        if msg.topic.startswith("spBv1.0/STATE"):
            continue
        t = psp.Topic.from_str(msg.topic)
        assert t.group_id == unique_id and t.edge_node_id == "node-1"
        assert (t.device_id is not None) == msg.kind.startswith("D"), msg.topic
    # 7. NBIRTH: QoS 0, no retain, seq 0, bdSeq, Node Control/Rebirth false, datatypes; every metric aliased,
    # aliases unique across the node and its devices
    nb = next(m for m in msgs if m.kind == "NBIRTH")
    assert (nb.qos, nb.retain) == (0, False)
    birth = psp.NBirth.decode(nb.payload)
    assert birth.seq == 0 and birth.timestamp > 0
    metrics = {m.name: m for m in birth.metrics}
    assert metrics["bdSeq"].datatype == psp.DataType.INT64 and metrics["bdSeq"].value == 0
    rebirth = metrics["Node Control/Rebirth"]
    assert rebirth.datatype == psp.DataType.BOOLEAN and rebirth.value is False
    assert metrics["zhizao/Batch"].datatype == psp.DataType.INT64
    assert all(x.alias is not None for x in birth.metrics)
    assert {"Health/OutboxDepth", "Health/SamplesPerSecond", "Health/Reconnects"} <= set(metrics)
    # 8. DBIRTH after NBIRTH with seq+1 and every device metric (name + alias + datatype)
    db = [m for m in msgs if m.kind == "DBIRTH"]
    assert [seq_of(m) for m in db] == [1, 2] and all(m.n > nb.n for m in db)
    m1 = psp.DBirth.decode(db[0].payload)
    assert [(x.name, x.datatype) for x in m1.metrics] == [
        ("zhizao/Batch", psp.DataType.INT64),
        ("State", psp.DataType.INT32),
        ("Counts/Total", psp.DataType.INT64),
        ("Temperature/Spindle", psp.DataType.DOUBLE),
    ]
    assert all(x.alias is not None and x.is_null for x in m1.metrics[1:])  # no value seen yet: null
    every_alias = [x.alias for b in [birth, *(psp.DBirth.decode(m.payload) for m in db)] for x in b.metrics]
    assert len(every_alias) == len(set(every_alias)), "an alias is used twice within the edge node"
    # 9/10. DDATA: alias only, timestamps per metric, chronological, seq +1 across every message type
    data = [m for m in msgs if m.kind in ("DDATA", "NDATA")]
    seqs = [seq_of(m) for m in msgs if m.kind in ("NBIRTH", "DBIRTH", "DDATA", "NDATA")]
    assert seqs == [i % 256 for i in range(len(seqs))]
    samples = all_samples(msgs)
    ddata = [m for m in data if m.kind == "DDATA"]
    assert max(len(decode_data(m, _aliases(msgs))[1]) for m in ddata) == 500  # many samples, split at the max
    assert len(ddata) <= 3000 // 500 + 2
    births = _aliases(msgs)
    for m in ddata:
        p = Payload()
        p.ParseFromString(m.payload)
        assert not [x.name for x in p.metrics if x.name], "DATA metrics go by alias only"
        born = {int(x.alias): x for x in births.birth_for(m).metrics}  # type: ignore[arg-type]
        assert all(x.alias in born for x in p.metrics), "every DATA metric is declared in the device's DBIRTH"
        assert all(x.datatype == int(born[x.alias].datatype) for x in p.metrics), "DATA carries the born datatype"
        signals = [x for x in p.metrics if born[x.alias].name != "zhizao/Batch"]
        assert all(x.HasField("timestamp") for x in signals)
        ts = [x.timestamp for x in signals]
        assert ts == sorted(ts)
        assert [born[x.alias].name for x in p.metrics].count("zhizao/Batch") == 1
    got = {(s.device, s.name, s.timestamp): s.value for s in samples if s.device}
    assert len(got) == 3000
    notes = [s for s in samples if s.name == "Note"]
    assert len(notes) == 600 and notes[0].value.startswith("note ")  # type: ignore[union-attr]
    assert all(not s.historical for s in samples)


def _aliases(msgs: list[Captured]):  # type: ignore[no-untyped-def]
    from tests.support.spb_capture import Births

    a = Births()
    for m in msgs:
        if m.kind in ("NBIRTH", "DBIRTH"):
            a.learn(m)
    return a


def test_seq_wraps_255_to_0(tmp_path: Path, mqtt_url: str, unique_id: str) -> None:
    async def body(rig: Rig) -> None:
        await rig.node.start()
        await rig.cap.until(lambda ms: kinds(ms).count("DBIRTH") == 2)
        rig.outbox.append(block([0] * 300, list(range(300))))
        await rig.cap.until(lambda ms: len(all_samples(ms)) >= 300, what="300 one-sample DDATA")

    rig = run(tmp_path, mqtt_url, unique_id, body, max_samples_per_message=1)
    seqs = [seq_of(m) for m in rig.cap.snapshot() if m.kind in ("NBIRTH", "DBIRTH", "DDATA", "NDATA")]
    assert len(seqs) > 256 and seqs == [i % 256 for i in range(len(seqs))]
    assert seqs[254:258] == [254, 255, 0, 1]


def test_signed_ints_and_quality_property(tmp_path: Path, mqtt_url: str, unique_id: str) -> None:
    async def body(rig: Rig) -> None:
        await rig.node.start()
        await rig.cap.until(lambda ms: kinds(ms).count("DBIRTH") == 2)
        rig.outbox.append(
            block([0, 1, 2], [-5, -(2**40), 1.5], quality=[QUALITY_GOOD, QUALITY_GOOD, QUALITY_BAD])
        )
        await rig.cap.until(lambda ms: len(all_samples(ms)) >= 3)

    rig = run(tmp_path, mqtt_url, unique_id, body)
    [dd] = [m for m in rig.cap.snapshot() if m.kind == "DDATA"]
    p = Payload()
    p.ParseFromString(dd.payload)
    aliased = [x for x in p.metrics if not x.name]
    assert aliased[0].int_value == 4294967291  # Int32 -5, two's complement (V8)
    assert aliased[1].long_value == 2**64 - 2**40
    props = aliased[2].properties
    assert list(props.keys) == ["Quality"] and props.values[0].type == 3 and props.values[0].int_value == 0
    assert not aliased[0].HasField("properties")  # GOOD quality carries no property
    samples = all_samples(rig.cap.snapshot())
    assert [s.value for s in samples if s.device] == [-5, -(2**40), 1.5]


def test_history_is_replayed_after_births_then_acks_release(
    tmp_path: Path, mqtt_url: str, unique_id: str
) -> None:
    async def body(rig: Rig) -> None:
        t0 = time.time_ns() // 1_000_000 - 60_000
        rig.outbox.append(block([0, 1, 2], [1, 2, 3], t0=t0))  # buffered before the session: history
        await rig.node.start()
        await rig.cap.until(lambda ms: len(all_samples(ms)) >= 3, what="replay")
        rig.outbox.append(block([2], [4.0]))
        msgs = await rig.cap.until(lambda ms: len(all_samples(ms)) >= 4, what="live")
        # rebirth on NCMD: NBIRTH (same bdSeq, seq 0), DBIRTHs, then unacked data again as history
        cmd = psp.NCmd(
            timestamp=1,
            metrics=(
                psp.Metric(
                    timestamp=1, name="Node Control/Rebirth", datatype=psp.DataType.BOOLEAN, value=True
                ),
            ),
        )
        n_before = len(msgs)
        await asyncio.to_thread(rig.cap.publish, rig.topic("NCMD"), cmd.encode())
        msgs = await rig.cap.until(
            lambda ms: len(all_samples(ms[n_before:])) >= 4, what="replay after rebirth"
        )
        after = [m for m in msgs[n_before:] if m.kind not in ("NCMD", "NDATA")]
        assert kinds(after)[:3] == ["NBIRTH", "DBIRTH", "DBIRTH"]
        assert psp.NBirth.decode(after[0].payload).seq == 0
        bd = [x.value for x in psp.NBirth.decode(after[0].payload).metrics if x.name == "bdSeq"]
        assert bd == [0]  # a rebirth keeps the bdSeq of the connection
        replay = [s for s in all_samples(msgs)[4:] if s.device]
        assert len(replay) == 4 and all(s.historical for s in replay)
        # the host acks the highest batch it committed: everything is released
        last = max(int(decode_data(m, _aliases(msgs))[2]["zhizao/Batch"]) for m in msgs if m.kind == "DDATA")
        await asyncio.to_thread(
            rig.cap.publish,
            f"zhizao/v1/ack/{rig.site}/{rig.edge}",
            json.dumps({"batch": last, "timestamp": 1}).encode(),
        )
        for _ in range(200):
            if rig.outbox.depth_samples == 0:
                break
            await asyncio.sleep(0.02)
        assert rig.outbox.depth_samples == 0

    rig = run(tmp_path, mqtt_url, unique_id, body)
    samples = [s for s in all_samples(rig.cap.snapshot()) if s.device]
    first = samples[:4]
    assert [s.historical for s in first] == [True, True, True, False]  # 14. history first, never as live
    assert [s.value for s in first] == [1, 2, 3.0, 4.0]


def test_device_loss_ddeath_then_dbirth(tmp_path: Path, mqtt_url: str, unique_id: str) -> None:
    async def body(rig: Rig) -> None:
        await rig.node.start()
        await rig.cap.until(lambda ms: kinds(ms).count("DBIRTH") == 2)
        rig.outbox.append(block([3], [6]))
        await rig.cap.until(lambda ms: "DDATA" in kinds(ms))
        rig.node.device_state("m2", False)
        await rig.cap.until(lambda ms: "DDEATH" in kinds(ms))
        rig.node.device_state("m2", True)
        await rig.cap.until(lambda ms: kinds(ms).count("DBIRTH") == 3)

    rig = run(tmp_path, mqtt_url, unique_id, body)
    msgs = [m for m in rig.cap.snapshot() if m.kind != "NDATA"]
    dd = next(m for m in msgs if m.kind == "DDEATH")
    assert dd.device == "m2"
    death = psp.DDeath.decode(dd.payload)
    assert death.timestamp > 0 and death.seq == seq_of(msgs[msgs.index(dd) - 1]) + 1  # type: ignore[operator]
    reborn = psp.DBirth.decode([m for m in msgs if m.kind == "DBIRTH"][-1].payload)
    state = next(x for x in reborn.metrics if x.name == "State")
    assert state.value == 6  # the latest value is carried in the new DBIRTH


def test_primary_host_state_wait_offline_and_stale(tmp_path: Path, mqtt_url: str, unique_id: str) -> None:
    host = f"{unique_id}-host"
    state_topic = f"spBv1.0/STATE/{host}"

    async def body(rig: Rig) -> None:
        pub = rig.cap.publish
        await asyncio.to_thread(
            pub, state_topic, json.dumps({"online": False, "timestamp": 100}).encode(), 1, True
        )
        async def handled(n: int) -> None:
            """Send a DCMD the node refuses after what is in flight: when it is counted, the earlier
            messages (the retained STATE included) have been handled, in order."""
            await asyncio.to_thread(pub, rig.topic("DCMD", "m1"), b"not a payload", 1, False)
            await until(lambda: rig.node.stats.rejected_commands == n, what=f"refused DCMD {n}")

        await rig.node.start()
        await until(lambda: rig.node.state == "waiting-host", what="the node waiting for the host")
        await handled(1)
        assert rig.node.stats.births == 0, "must wait for the primary host"
        assert rig.node.state == "waiting-host"
        await asyncio.to_thread(
            pub, state_topic, json.dumps({"online": True, "timestamp": 200}).encode(), 1, True
        )
        await rig.cap.until(lambda ms: "NBIRTH" in kinds(ms), what="NBIRTH after host online")
        await asyncio.to_thread(
            pub, state_topic, json.dumps({"online": False, "timestamp": 150}).encode(), 1, True
        )
        await handled(2)
        assert rig.node.state == "online", "an older offline STATE must be ignored"
        assert "NDEATH" not in kinds(rig.cap.snapshot())
        await asyncio.to_thread(
            pub, state_topic, json.dumps({"online": False, "timestamp": 300}).encode(), 1, True
        )
        await rig.cap.until(lambda ms: "NDEATH" in kinds(ms), what="NDEATH on host offline")
        await until(lambda: rig.node.state == "waiting-host", what="the node connected again, waiting for the host")
        await asyncio.to_thread(
            pub, state_topic, json.dumps({"online": True, "timestamp": 400}).encode(), 1, True
        )
        await rig.cap.until(
            lambda ms: kinds(ms).count("NBIRTH") == 2, within_s=20, what="NBIRTH after reconnect"
        )
        assert kinds(rig.cap.snapshot()).count("NDEATH") == 1, "one NDEATH, not the node's and then its Will"
        await asyncio.to_thread(pub, state_topic, b"", 1, True)  # clear the retained STATE

    rig = run(tmp_path, mqtt_url, unique_id, body, primary_host=host)
    births = [psp.NBirth.decode(m.payload) for m in rig.cap.snapshot() if m.kind == "NBIRTH"]
    bds = [next(x.value for x in b.metrics if x.name == "bdSeq") for b in births]
    assert bds[1] > bds[0]  # a new CONNECT after the host went offline: a new bdSeq


def test_bad_ids_are_refused(tmp_path: Path, mqtt_url: str) -> None:
    box = Outbox(tmp_path, OutboxConfig())
    with pytest.raises(NodeError, match="site"):
        EdgeNode("Bad/Site", "e1", MqttConfig(url=mqtt_url), SparkplugConfig(), box, signal_table())
    box.close()


def test_plain_sparkplug_releases_once_published(tmp_path: Path, mqtt_url: str, unique_id: str) -> None:
    async def body(rig: Rig) -> None:
        await rig.node.start()
        await rig.cap.until(lambda ms: kinds(ms).count("DBIRTH") == 2)
        rig.outbox.append(block([0, 2, 3], [1, 2, 3]))
        await rig.cap.until(lambda ms: len(all_samples(ms)) >= 3)
        for _ in range(100):
            if rig.outbox.depth_samples == 0:
                break
            await asyncio.sleep(0.02)
        assert rig.outbox.depth_samples == 0  # no host acks needed with acks: false

    run(tmp_path, mqtt_url, unique_id, body, acks=False)


def test_health_ndata_carries_node_metrics_and_batch(tmp_path: Path, mqtt_url: str, unique_id: str) -> None:
    async def body(rig: Rig) -> None:
        await rig.node.start()
        rig.outbox.append(block([0, 1], [1, 2]))
        await rig.cap.until(lambda ms: kinds(ms).count("NDATA") >= 2, what="two health NDATA")

    rig = run(tmp_path, mqtt_url, unique_id, body, health_interval_s=0.2)
    msgs = rig.cap.snapshot()
    aliases = _aliases(msgs)
    ndata = [decode_data(m, aliases) for m in msgs if m.kind == "NDATA"]
    batches = [int(named["zhizao/Batch"]) for _, _, named in ndata]  # type: ignore[call-overload]
    ddata_batches = [int(decode_data(m, aliases)[2]["zhizao/Batch"]) for m in msgs if m.kind == "DDATA"]  # type: ignore[call-overload]
    every = sorted(batches + ddata_batches)
    assert len(set(every)) == len(every)  # one batch id per message, strictly increasing
    names = {s.name for _, samples, _ in ndata for s in samples}
    assert names == {
        "Health/OutboxDepth",
        "Health/OutboxBytes",
        "Health/SamplesPerSecond",
        "Health/Reconnects",
        "Health/OutboxFill",
        "Health/OutboxRefusedSamples",
        "Health/CommandsRefused",
    }
    depth = [s.value for _, samples, _ in ndata for s in samples if s.name == "Health/OutboxDepth"]
    assert depth[-1] == 2  # nothing acked: both samples still in the outbox


def test_health_ndata_shows_a_full_outbox_and_its_refusals(tmp_path: Path, mqtt_url: str, unique_id: str) -> None:
    refused: list[int] = []

    async def body(rig: Rig) -> None:
        await rig.node.start()
        # Nothing is acknowledged (no host): the outbox fills up, then refuses.
        big = block([0] * 500, [float(i) for i in range(500)])
        with pytest.raises(OutboxFullError):
            for _ in range(10_000):
                rig.outbox.append(big)
        refused.append(rig.outbox.rejected_samples)
        expected_fill = rig.outbox.depth_bytes / (1 << 16)

        def latest(ms: list[Captured], name: str) -> float | None:
            aliases = _aliases(ms)
            values = [s.value for m in ms if m.kind == "NDATA" for s in decode_data(m, aliases)[1] if s.name == name]
            return float(values[-1]) if values else None  # type: ignore[arg-type]

        await rig.cap.until(lambda ms: latest(ms, "Health/OutboxRefusedSamples") == refused[0],
                            what="the refusals in a health NDATA")  # fmt: skip
        fill = latest(rig.cap.snapshot(), "Health/OutboxFill")
        assert fill == expected_fill and 0.5 < fill <= 1.0, (fill, expected_fill)

    run(tmp_path, mqtt_url, unique_id, body, health_interval_s=0.2, outbox_bytes=1 << 16)
    assert refused[0] == 500
