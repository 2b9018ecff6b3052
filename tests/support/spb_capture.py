"""Test helpers: record what reaches the real broker and decode it with pysparkplug, never with our codec.

Every message goes through pysparkplug's high-level decoders, as a third-party host would read it: DATA with
`NData.decode(payload, birth=nbirth)` / `DData.decode(payload, birth=dbirth)`, which only succeeds when every
metric of the message was born in that birth. No workaround: a metric missing from the birth is an error.
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
        self.subacks = 0  # SUBACKs so far: one per (re)connection
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"cap-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_connect = lambda c, *a: c.subscribe([(f, 1) for f in filters])
        self.client.connect(u.hostname or "127.0.0.1", u.port or 1883)
        self.client.loop_start()
        assert self._subscribed.wait(10), "capture subscriber did not get SUBACK"

    def _on_subscribe(self, *args: object) -> None:
        with self._lock:
            self.subacks += 1
        self._subscribed.set()

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


PROTOCOL_METRICS = frozenset({"zhizao/Batch", "bdSeq", "Node Control/Rebirth"})


@dataclass
class Births:
    """The latest NBIRTH and DBIRTH of each device of one edge node, decoded by pysparkplug."""

    node: psp.NBirth | None = None
    devices: dict[str, psp.DBirth] = field(default_factory=dict)

    def learn(self, msg: Captured) -> None:
        """Keep a birth (a new NBIRTH forgets the devices' births: they are born again)."""
        if msg.kind == "NBIRTH":
            self.node = psp.NBirth.decode(msg.payload)
            self.devices = {}
        else:
            assert msg.device is not None
            self.devices[msg.device] = psp.DBirth.decode(msg.payload)

    def birth_for(self, msg: Captured) -> psp.NBirth | psp.DBirth:
        """The birth a DATA message must be read with."""
        if msg.kind == "NDATA":
            assert self.node is not None, f"NDATA before any NBIRTH on {msg.topic}"
            return self.node
        assert msg.device in self.devices, f"DDATA before the DBIRTH of {msg.topic}"
        return self.devices[msg.device]


def decode_data(msg: Captured, births: Births) -> tuple[int, list[Sample], dict[str, object]]:
    """(seq, samples, protocol metrics by name) of an NDATA/DDATA, read with pysparkplug and its birth."""
    cls = psp.NData if msg.kind == "NDATA" else psp.DData
    payload = cls.decode(msg.payload, birth=births.birth_for(msg))
    samples: list[Sample] = []
    named: dict[str, object] = {}
    for metric in payload.metrics:
        assert metric.name is not None
        if metric.name in PROTOCOL_METRICS:
            named[metric.name] = metric.value
            continue
        assert metric.timestamp is not None, f"{metric.name}: DATA metric without a timestamp"
        samples.append(Sample(msg.device, metric.name, metric.timestamp, metric.value, metric.is_historical, payload.seq))
    return payload.seq, samples, named


def all_samples(messages: list[Captured]) -> list[Sample]:
    """Every DATA sample in arrival order, each message read with the births seen before it."""
    births: dict[str, Births] = {}  # per edge node
    out: list[Sample] = []
    for msg in messages:
        edge = msg.topic.split("/")[3] if msg.topic.startswith("spBv1.0/") else ""
        if msg.kind in ("NBIRTH", "DBIRTH"):
            births.setdefault(edge, Births()).learn(msg)
        elif msg.kind in ("DDATA", "NDATA"):
            out.extend(decode_data(msg, births.setdefault(edge, Births()))[1])
    return out


def seq_of(msg: Captured) -> int | None:
    """The payload seq (None when absent), via pysparkplug's protobuf module."""
    p = Payload()
    p.ParseFromString(msg.payload)
    return p.seq if p.HasField("seq") else None
