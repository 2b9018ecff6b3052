"""Test helpers: record what reaches the real broker and decode it with pysparkplug, never with our codec.

Births and deaths go through pysparkplug's message classes; DATA goes through the protobuf module that
pysparkplug ships (its high-level DData decoder wants every metric in the device's birth, but zhizao/Batch is
a node metric), with aliases resolved from the births captured on the wire.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import pysparkplug as psp
from paho.mqtt.enums import CallbackAPIVersion
from pysparkplug._protobuf import Payload

SIGNED = {1: 8, 2: 16, 3: 32, 4: 64}


@dataclass
class Captured:
    """One message as received: topic, raw payload, MQTT QoS and retain flag, receive order."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    n: int

    @property
    def kind(self) -> str:
        """Message type of a Sparkplug topic (NBIRTH, DDATA, ...), or the topic itself."""
        parts = self.topic.split("/")
        return parts[2] if parts[0] == "spBv1.0" and len(parts) >= 4 else self.topic

    @property
    def device(self) -> str | None:
        """The device id of D* topics."""
        parts = self.topic.split("/")
        return parts[4] if len(parts) == 5 else None


@dataclass
class Sample:
    """A decoded DATA metric."""

    device: str | None
    name: str
    timestamp: int
    value: object
    historical: bool
    seq: int


class Capture:
    """A real MQTT 5 subscriber on `filters`, storing every message in arrival order."""

    def __init__(self, mqtt_url: str, filters: list[str]) -> None:
        u = urlsplit(mqtt_url)
        self.messages: list[Captured] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"cap-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe([(f, 1) for f in filters])
        self.client.connect(u.hostname or "127.0.0.1", u.port or 1883)
        self.client.loop_start()
        assert self._subscribed.wait(10), "capture subscriber did not get SUBACK"

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(
                Captured(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), len(self.messages))
            )

    def snapshot(self) -> list[Captured]:
        """A copy of everything received so far."""
        with self._lock:
            return list(self.messages)

    def of(self, kind: str) -> list[Captured]:
        """Messages of one Sparkplug type."""
        return [m for m in self.snapshot() if m.kind == kind]

    def wait_for(
        self, pred: Callable[[list[Captured]], bool], timeout: float = 15.0, what: str = ""
    ) -> list[Captured]:
        """Wait until `pred(messages)` holds; fail with what was seen otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snap = self.snapshot()
            if pred(snap):
                return snap
            time.sleep(0.02)
        kinds = [m.kind for m in self.snapshot()]
        raise AssertionError(f"timed out waiting for {what or pred}; seen {kinds[-40:]}")

    async def until(
        self, pred: Callable[[list[Captured]], bool], within_s: float = 15.0, what: str = ""
    ) -> list[Captured]:
        """`wait_for` for tests running the edge node in the same event loop (does not block the loop)."""
        import asyncio

        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            snap = self.snapshot()
            if pred(snap):
                return snap
            await asyncio.sleep(0.02)
        kinds = [m.kind for m in self.snapshot()]
        raise AssertionError(f"timed out waiting for {what or pred}; seen {kinds[-40:]}")

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish from the test (commands, acks, host STATE)."""
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        """Disconnect the subscriber."""
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Aliases:
    """alias -> (name, datatype), learned from NBIRTH/DBIRTH payloads decoded by pysparkplug."""

    table: dict[int, tuple[str, int]] = field(default_factory=dict)

    def learn(self, msg: Captured) -> None:
        """Add the aliases of a birth."""
        birth = psp.NBirth.decode(msg.payload) if msg.kind == "NBIRTH" else psp.DBirth.decode(msg.payload)
        for metric in birth.metrics:
            if metric.alias is not None:
                self.table[int(metric.alias)] = (str(metric.name), int(metric.datatype))


def _value(metric: Payload.Metric, datatype: int) -> object:
    kind = metric.WhichOneof("value")
    if kind is None:
        return None
    raw = getattr(metric, kind)
    if kind in ("int_value", "long_value") and datatype in SIGNED:
        bits = SIGNED[datatype]
        raw &= (1 << bits) - 1
        return raw - (1 << bits) if raw >= 1 << (bits - 1) else raw
    return raw


def decode_data(msg: Captured, aliases: Aliases) -> tuple[int, list[Sample], dict[str, object]]:
    """(seq, aliased samples, named metrics) of an NDATA/DDATA, decoded by pysparkplug's protobuf module."""
    p = Payload()
    p.ParseFromString(msg.payload)
    samples: list[Sample] = []
    named: dict[str, object] = {}
    for metric in p.metrics:
        if metric.name:
            named[metric.name] = _value(metric, metric.datatype or 4)
            continue
        name, dt = aliases.table[metric.alias]
        assert not metric.HasField("datatype") or metric.datatype == 0, "DATA must not carry datatypes"
        samples.append(
            Sample(msg.device, name, metric.timestamp, _value(metric, dt), metric.is_historical, p.seq)
        )
    return p.seq, samples, named


def all_samples(messages: list[Captured]) -> list[Sample]:
    """Every DATA sample in arrival order, aliases resolved from the births seen before it."""
    aliases = Aliases()
    out: list[Sample] = []
    for msg in messages:
        if msg.kind in ("NBIRTH", "DBIRTH"):
            aliases.learn(msg)
        elif msg.kind in ("DDATA", "NDATA"):
            out.extend(decode_data(msg, aliases)[1])
    return out


def seq_of(msg: Captured) -> int | None:
    """The payload seq (None when absent), via pysparkplug's protobuf module."""
    p = Payload()
    p.ParseFromString(msg.payload)
    return p.seq if p.HasField("seq") else None
