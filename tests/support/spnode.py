"""Test helpers: a tiny Sparkplug edge node built on the lead's codec (not the edge package), a watcher."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from zhizao.broker.extensions import BATCH_METRIC, ack_topic, decode_ack
from zhizao.broker.mqtt import parse_mqtt_url
from zhizao.broker.sparkplug.codec import BirthMetric, decode, encode_birth, encode_data, encode_death
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.broker.sparkplug.topics import MessageType, device_topic, node_topic

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def until(cond: Callable[[], object], within_s: float = 10.0, what: str = "condition") -> None:
    """`wait_for` for code on an event loop: polls without blocking the loop."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {within_s} s waiting for {what}")


def subscribe(client: mqtt.Client, filters: list[str], qos: int = 1, timeout: float = 5.0) -> None:
    """Subscribe to `filters` and return once the broker's SUBACK for them arrived."""
    acked: set[int] = set()
    lock = threading.Lock()
    previous = client.on_subscribe

    def on_subscribe(c: mqtt.Client, u: object, mid: int, *rest: object) -> None:
        with lock:
            acked.add(mid)

    client.on_subscribe = on_subscribe
    try:
        mids = [client.subscribe(f, qos=qos)[1] for f in filters]
        wait_for(lambda: all(m in acked for m in mids), timeout, f"SUBACK for {filters}")
    finally:
        client.on_subscribe = previous


def connect(url: str, client_id: str, will: tuple[str, bytes] | None = None) -> mqtt.Client:
    ep = parse_mqtt_url(url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    if will:
        c.will_set(will[0], will[1], qos=1, retain=False)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect(ep.host, ep.port, keepalive=10, clean_start=True)
    c.loop_start()
    assert connected.wait(5), "test MQTT client could not connect"
    return c


@dataclass
class Watcher:
    """Records every message on some topic filters."""

    url: str
    filters: list[str]
    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = connect(self.url, f"watch-{uuid.uuid4().hex[:8]}")
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload), m.retain))
        subscribe(self.client, self.filters)

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class SpNode:
    """A minimal Sparkplug edge node: births with aliases, many-sample DDATA with zhizao/Batch, acks in."""

    def __init__(self, url: str, site: str, edge: str, devices: dict[str, int], bd_seq: int = 0) -> None:
        self.url, self.site, self.edge = url, site, edge
        self.bd_seq = bd_seq
        self.seq = 0
        self.batch = 0
        self.devices = devices  # device -> number of Double metrics
        self.acks: list[int] = []  # batch ids acknowledged, in arrival order
        self.ack_bd_seqs: list[int | None] = []  # the session (bdSeq) each ack names
        self.ncmds: list[bytes] = []
        # aliases: node metrics 1..9; device d metric m -> 1000*(d+1) + m
        self.alias: dict[tuple[str, int], int] = {
            (d, m): 1000 * (i + 1) + m for i, (d, n) in enumerate(devices.items()) for m in range(n)
        }
        will = (node_topic(site, MessageType.NDEATH, edge), encode_death(None, bd_seq=bd_seq))
        self.client = connect(url, f"{site}-{edge}-{uuid.uuid4().hex[:6]}", will)
        self.client.on_message = self._on_message
        subscribe(self.client, [node_topic(site, MessageType.NCMD, edge), ack_topic(site, edge)])

    def _on_message(self, c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        if "/NCMD/" in m.topic:
            self.ncmds.append(bytes(m.payload))
        else:
            ack = decode_ack(bytes(m.payload))
            self.acks.append(ack.batch)
            self.ack_bd_seqs.append(ack.bd_seq)

    def rebirth_requests(self) -> int:
        return sum(1 for p in self.ncmds if decode(p).index_of("Node Control/Rebirth") is not None)

    def next_seq(self) -> int:
        s = self.seq
        self.seq = (self.seq + 1) % 256
        return s

    def pub(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=0).wait_for_publish(5)

    def birth(self) -> None:
        self.seq = 0
        ts = now_ms()
        node = [
            BirthMetric("bdSeq", DataType.Int64, self.bd_seq, timestamp_ms=ts),
            BirthMetric("Node Control/Rebirth", DataType.Boolean, False, timestamp_ms=ts),
            BirthMetric(BATCH_METRIC, DataType.Int64, self.batch, alias=1, timestamp_ms=ts),
            BirthMetric("Outbox/Depth", DataType.Int64, 0, alias=2, timestamp_ms=ts),
            BirthMetric("Samples/PerSecond", DataType.Double, 0.0, alias=3, timestamp_ms=ts),
            BirthMetric("Reconnects", DataType.Int64, 0, alias=4, timestamp_ms=ts),
        ]
        self.pub(node_topic(self.site, MessageType.NBIRTH, self.edge), encode_birth(self.next_seq(), ts, node))
        for d, n in self.devices.items():
            metrics = [
                BirthMetric(f"Value/{m}", DataType.Double, 0.0, alias=self.alias[(d, m)], timestamp_ms=T0 - 1000)
                for m in range(n)
            ]
            label_alias = self.alias[(d, 0)] + 999
            metrics.append(BirthMetric("Label", DataType.String, "boot", alias=label_alias, timestamp_ms=T0 - 1000))
            self.pub(
                device_topic(self.site, MessageType.DBIRTH, self.edge, d), encode_birth(self.next_seq(), ts, metrics)
            )

    def data_payload(
        self,
        device: str,
        ts_ms: np.ndarray,
        metric: np.ndarray,
        value: np.ndarray,
        *,
        batch: int | None = None,
        historical: bool = False,
        seq: int | None = None,
        health: dict[int, float] | None = None,
        quality: np.ndarray | None = None,
    ) -> bytes:
        aliases = np.array([self.alias[(device, int(m))] for m in metric], np.uint64)
        extra = [BirthMetric(BATCH_METRIC, DataType.Int64, self.batch if batch is None else batch)]
        if health:
            names = {2: "Outbox/Depth", 3: "Samples/PerSecond", 4: "Reconnects"}
            extra += [BirthMetric(names[a], DataType.Double, v) for a, v in health.items()]
        return encode_data(
            self.next_seq() if seq is None else seq,
            now_ms(),
            aliases,
            ts_ms.astype(np.int64),
            value.astype(np.float64),
            np.full(len(aliases), int(DataType.Double), np.uint32),
            historical=historical,
            quality=None if quality is None else quality.astype(np.int16),
            extra=extra,
        )

    def ddata(self, device: str, ts_ms: np.ndarray, metric: np.ndarray, value: np.ndarray, **kw: object) -> None:
        self.pub(device_topic(self.site, MessageType.DDATA, self.edge, device),
                 self.data_payload(device, ts_ms, metric, value, **kw))  # type: ignore[arg-type]

    def new_batch(self) -> int:
        self.batch += 1
        return self.batch

    def death(self) -> None:
        self.pub(node_topic(self.site, MessageType.NDEATH, self.edge), encode_death(None, bd_seq=self.bd_seq))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
