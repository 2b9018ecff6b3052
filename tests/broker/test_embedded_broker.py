"""The demo's private broker: mosquitto (generated config) and iotcore (rumqttd) both carry MQTT 5 traffic."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from zhizao.broker.embedded import BrokerError, probe_protocol, start_broker
from zhizao.broker.mqtt import parse_mqtt_url


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data folder that the broker's own user (mosquitto drops root) can enter."""
    path = Path(tempfile.mkdtemp(prefix="zhizao-broker-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Client:
    """A paho MQTT 5 client that records what it receives."""

    def __init__(self, url: str, client_id: str = "", *, persistent: bool = False,
                 will: tuple[str, bytes] | None = None) -> None:
        ep = parse_mqtt_url(url)
        self.got: list[tuple[str, bytes, bool]] = []
        self.connected = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.on_message = self._on_message
        self.c.on_connect = lambda *a: self.connected.set()
        if will:
            self.c.will_set(will[0], will[1], qos=1)
        props = Properties(PacketTypes.CONNECT)
        if persistent:
            props.SessionExpiryInterval = 3600
        self.c.connect(ep.host, ep.port, clean_start=not persistent, properties=props)
        self.c.loop_start()
        assert self.connected.wait(5), f"no CONNACK from {url}"

    def _on_message(self, c: object, u: object, m: mqtt.MQTTMessage) -> None:
        self.got.append((m.topic, m.payload, bool(m.retain)))

    def wait_for(self, n: int, timeout: float = 5.0) -> list[tuple[str, bytes, bool]]:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.got

    def close(self, *, abrupt: bool = False) -> None:
        if abrupt:
            self.c.loop_stop()  # first, so paho does not reconnect
            sock = self.c.socket()
            assert sock is not None
            sock.shutdown(socket.SHUT_RDWR)  # a dropped connection without DISCONNECT: the broker sends the will
            sock.close()
        else:
            self.c.disconnect()
            self.c.loop_stop()
        # paho closes its wakeup socket pair only in reinitialise() or __del__ (eclipse-paho/paho.mqtt.python
        # #627); this client and its callbacks form a cycle, so __del__ would run at the GC's whim.
        self.c.reinitialise()


@pytest.mark.parametrize("kind", ["mosquitto", "iotcore"])
def test_round_trip_retained_and_will(data_dir: Path, kind: str) -> None:
    url, stop = start_broker(data_dir, kind=kind)  # type: ignore[arg-type]
    try:
        assert url.startswith("mqtt://127.0.0.1:")
        assert probe_protocol(url) == "5"
        pub = Client(url, "pub")
        pub.c.publish("spBv1.0/STATE/demo", b'{"online": true}', qos=1, retain=True).wait_for_publish(5)
        node = Client(url, "node", will=("spBv1.0/site-a/NDEATH/line-1", b"death"))
        sub = Client(url, "sub")
        sub.c.subscribe([("spBv1.0/#", 1)])
        got = sub.wait_for(1)
        assert got[0] == ("spBv1.0/STATE/demo", b'{"online": true}', True)
        pub.c.publish("spBv1.0/site-a/NDATA/line-1", b"\x00" * 200_000, qos=1).wait_for_publish(5)
        node.close(abrupt=True)
        got = sub.wait_for(3)
        assert ("spBv1.0/site-a/NDATA/line-1", b"\x00" * 200_000, False) in got
        assert ("spBv1.0/site-a/NDEATH/line-1", b"death", False) in got
        pub.close()
        sub.close()
    finally:
        stop()
        stop()  # idempotent
    with pytest.raises(BrokerError, match="does not answer"):
        probe_protocol(url, timeout=1)


def test_mosquitto_keeps_queued_messages_across_a_restart(data_dir: Path) -> None:
    url, stop = start_broker(data_dir, kind="mosquitto")
    try:
        sub = Client(url, "ingest-1", persistent=True)
        sub.c.subscribe([("spBv1.0/#", 1)])
        sub.c.publish("warmup", b"", qos=1).wait_for_publish(5)
        sub.close()
        pub = Client(url, "edge-1")
        pub.c.publish("spBv1.0/site-a/NDATA/line-1", b"queued", qos=1).wait_for_publish(5)
        pub.close()
    finally:
        stop()
    assert (data_dir / "mosquitto" / "mosquitto.db").exists()
    url2, stop2 = start_broker(data_dir, kind="mosquitto")
    try:
        sub = Client(url2, "ingest-1", persistent=True)
        assert ("spBv1.0/site-a/NDATA/line-1", b"queued", False) in sub.wait_for(1)
        sub.close()
    finally:
        stop2()


def test_probe_falls_back_to_3_1_1(data_dir: Path) -> None:
    from tests.support.mosquitto import free_port, v311_only_broker

    port = free_port()
    broker = v311_only_broker(data_dir, port)  # the same kind of broker as amqtt, which speaks nothing newer
    try:
        assert probe_protocol(f"mqtt://127.0.0.1:{port}", timeout=3) == "3.1.1"
    finally:
        broker.stop()


def test_mosquitto_config_is_private_and_durable(data_dir: Path) -> None:
    from zhizao.broker.embedded import mosquitto_config

    text = mosquitto_config(18830, data_dir, "mosquitto")
    settings = dict(line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
                    and not line.startswith("log_type"))
    assert settings["listener"] == "18830 127.0.0.1"
    assert settings["persistence"] == "true" and int(settings["autosave_interval"]) <= 60
    assert int(settings["max_queued_messages"]) >= 10_000
