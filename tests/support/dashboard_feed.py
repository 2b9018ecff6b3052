"""Test helper: a Sparkplug edge node per line publishing machine metrics with our codec (no simulator needed)."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from zhizao.broker.extensions import BATCH_METRIC
from zhizao.broker.mqtt import parse_mqtt_url
from zhizao.broker.sparkplug.codec import BirthMetric, encode_birth, encode_data, encode_death
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.broker.sparkplug.topics import MessageType, device_topic, node_topic
from zhizao.cloud.service import CloudService

# Machine metrics (DESIGN.md section 2) and one process signal, with their Sparkplug types.
METRICS: list[tuple[str, DataType]] = [
    ("State", DataType.Int32), ("Counts/Total", DataType.Int64), ("Counts/Good", DataType.Int64),
    ("Rate/Ideal", DataType.Double), ("Rate/Current", DataType.Double), ("Temperature/Spindle", DataType.Double),
]  # fmt: skip
RUNNING, FAILURE = 10000, 180000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Line:
    """One edge node (= line) of a site with its machines; `history()` fills the past, `state()` changes one."""

    def __init__(self, mqtt_url: str, site: str, line: str, machines: list[str]) -> None:
        self.site, self.line, self.machines = site, line, machines
        self.seq = 0
        self.batch = 0
        self.alias = {(m, name): 100 * (i + 1) + j for i, m in enumerate(machines) for j, (name, _) in enumerate(METRICS)}
        ep = parse_mqtt_url(mqtt_url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{line}-{uuid.uuid4().hex[:6]}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.will_set(node_topic(site, MessageType.NDEATH, line), encode_death(None, bd_seq=0), qos=1)
        up = threading.Event()
        self.client.on_connect = lambda *a: up.set()
        self.client.connect(ep.host, ep.port, keepalive=10)
        self.client.loop_start()
        assert up.wait(5), "feed could not connect to MQTT"

    def _seq(self) -> int:
        s, self.seq = self.seq, (self.seq + 1) % 256
        return s

    def _pub(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def birth(self) -> None:
        ts = now_ms()
        self.seq = 0
        node = [BirthMetric("bdSeq", DataType.Int64, 0, timestamp_ms=ts),
                BirthMetric("Node Control/Rebirth", DataType.Boolean, False, timestamp_ms=ts),
                BirthMetric(BATCH_METRIC, DataType.Int64, self.batch, alias=1, timestamp_ms=ts)]
        self._pub(node_topic(self.site, MessageType.NBIRTH, self.line), encode_birth(self._seq(), ts, node))
        for m in self.machines:
            # Null values stamped before the history, so they never shadow it as the latest value.
            metrics = [BirthMetric(name, dt, None, alias=self.alias[(m, name)], timestamp_ms=ts - 3_600_000)
                       for name, dt in METRICS]
            self._pub(device_topic(self.site, MessageType.DBIRTH, self.line, m), encode_birth(self._seq(), ts, metrics))

    def data(self, machine: str, rows: list[tuple[int, str, float]]) -> None:
        """Publish samples (ts_ms, metric name, value) of one machine in one DDATA."""
        types = dict(METRICS)
        self.batch += 1
        payload = encode_data(
            self._seq(), now_ms(),
            np.array([self.alias[(machine, name)] for _, name, _ in rows], np.uint64),
            np.array([ts for ts, _, _ in rows], np.int64),
            np.array([v for _, _, v in rows], np.float64),
            np.array([int(types[name]) for _, name, _ in rows], np.uint32),
            extra=[BirthMetric(BATCH_METRIC, DataType.Int64, self.batch)],
        )
        self._pub(device_topic(self.site, MessageType.DDATA, self.line, machine), payload)

    def history(self, minutes: int = 150, seed: int = 0) -> None:
        """A plausible recent past per machine: running with a stop, counters, rates and a temperature.

        The default span covers at least two whole clock hours, so the hourly OEE trend has two points at
        any time of day (time before a machine's first state is not monitored and has no OEE)."""
        rng = np.random.default_rng(seed)
        end = now_ms()
        for k, m in enumerate(self.machines):
            rows: list[tuple[int, str, float]] = []
            total = good = 0
            stop_at = int(rng.integers(5, minutes - 10))
            state = None
            for i in range(minutes * 6):  # every 10 s
                ts = end - (minutes * 60 - i * 10) * 1000
                minute = i // 6
                code = FAILURE + k if stop_at <= minute < stop_at + 4 else RUNNING
                if code != state:
                    rows.append((ts, "State", code))
                    state = code
                if code == RUNNING:
                    made = int(rng.integers(9, 11))
                    total += made
                    good += made - int(rng.random() < 0.2)
                rows += [(ts, "Counts/Total", total), (ts, "Counts/Good", good), (ts, "Rate/Ideal", 60.0),
                         (ts, "Rate/Current", 58.0 if code == RUNNING else 0.0),
                         (ts, "Temperature/Spindle", round(40 + 5 * np.sin(i / 20) + rng.normal(0, 0.3), 2))]
            self.data(m, rows)

    def state(self, machine: str, code: int) -> int:
        """Publish a state change now; returns its timestamp."""
        ts = now_ms()
        self.data(machine, [(ts, "State", code)])
        return ts

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Cloud:
    """A running service, its token, and the lines that feed it."""

    url: str
    token: str
    service: CloudService
    lines: dict[str, Line]
    sites: list[str]
