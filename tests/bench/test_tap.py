"""`BrokerTap`: the benchmarks' subscriber, built by the shared MQTT client factory."""

from __future__ import annotations

import threading
import time
import uuid

import click
import pytest

from tests.support.mosquitto import free_port
from zhizao.bench.tap import BrokerTap
from zhizao.broker.mqtt import MqttClient, MqttOptions


def test_a_tap_is_subscribed_when_it_returns_and_gets_raw_payloads(mqtt_url: str) -> None:
    topic = f"zhizao/test/tap/{uuid.uuid4().hex[:8]}"
    got: list[tuple[str, bytes]] = []
    taps = [BrokerTap(mqtt_url, "test", [f"{topic}/#"], lambda t, p: got.append((t, p))) for _ in range(2)]
    up = threading.Event()
    publisher = MqttClient(MqttOptions(url=mqtt_url, client_id=f"t-{uuid.uuid4().hex[:10]}"), on_connected=up.set)
    publisher.start()
    try:
        assert up.wait(5)
        assert publisher.publish(f"{topic}/a", b"\x00\x01", qos=1).wait(5)
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        publisher.stop()
        for tap in taps:
            tap.close()
    assert got == [(f"{topic}/a", b"\x00\x01")] * 2  # two taps of one process do not take each other's session


def test_a_tap_without_a_broker_says_where_and_why() -> None:
    port = free_port()
    with pytest.raises(click.ClickException, match=rf"127\.0\.0\.1:{port}: cannot subscribe to a/#: cannot reach"):
        BrokerTap(f"mqtt://127.0.0.1:{port}", "test", ["a/#"], lambda t, p: None, timeout_s=1.5)
