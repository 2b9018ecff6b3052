"""The one MQTT client factory against real brokers: MQTT 5, fallback to 3.1.1, mutual TLS, refusals, backoff."""

from __future__ import annotations

import logging
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certs import make_ca
from tests.support.mosquitto import free_port, private_mosquitto, v311_only_broker
from zhizao.broker.mqtt import Backoff, MqttClient, MqttError, MqttOptions, Protocol, TlsFiles, Will


class Recorder:
    """Callbacks of one MqttClient, recorded from the network thread."""

    def __init__(self) -> None:
        self.connected = threading.Event()
        self.connects = 0
        self.failures: list[str] = []
        self.disconnects: list[str] = []
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed: list[tuple[int, tuple[str, ...]]] = []
        self.wills = 0

    def will(self) -> Will:
        self.wills += 1
        return Will("zhizao/test/will", f"will-{self.wills}".encode(), qos=1)

    def on_connected(self) -> None:
        self.connects += 1
        self.connected.set()

    def client(self, options: MqttOptions) -> MqttClient:
        return MqttClient(options, will=self.will, on_connected=self.on_connected,
                          on_connect_failed=self.failures.append, on_disconnected=self.disconnects.append,
                          on_subscribed=lambda mid, refused: self.subscribed.append((mid, refused)),
                          on_message=lambda topic, payload: self.messages.append((topic, payload)))


def _options(url: str, protocol: Protocol = "auto", **kw: object) -> MqttOptions:
    return MqttOptions(url=url, client_id=f"t-{uuid.uuid4().hex[:10]}", protocol=protocol,
                       reconnect_min_s=0.1, reconnect_max_s=0.3, **kw)  # type: ignore[arg-type]


def _wait(cond: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return True
        time.sleep(0.02)
    return False


def test_backoff_doubles_to_the_cap_with_jitter_and_resets() -> None:
    b = Backoff(1.0, 8.0, jitter=0.5, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(12)]
    caps = [1, 2, 4, 8, 8, 8, 8, 8, 8, 8, 8, 8]
    assert all(cap * 0.5 <= d <= cap for d, cap in zip(delays, caps, strict=True)), delays
    assert len({round(d, 6) for d in delays[3:]}) > 1  # jittered: capped delays are not all the same
    b.reset()
    assert 0.5 <= b.next_delay() <= 1.0
    exact = Backoff(0.5, 2.0, jitter=0.0)
    assert [exact.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    for args, field in (((0, 1), "reconnect_min_s=0"), ((2, 1), "reconnect_max_s=1"),
                        ((1, 2, 1.0), "reconnect_jitter=1.0")):
        with pytest.raises(ValueError, match=field):
            Backoff(*args)


def test_mqtt5_round_trip_with_a_will_per_connect(mqtt_url: str) -> None:
    rec = Recorder()
    client = rec.client(_options(mqtt_url))
    client.start()
    try:
        assert rec.connected.wait(5)
        assert client.protocol == "5" and rec.wills == 1
        topic = f"zhizao/test/{uuid.uuid4().hex[:8]}"
        mid = client.subscribe([(topic, 1)])
        assert _wait(lambda: rec.subscribed == [(mid, ())])
        delivery = client.publish(topic, b"hello", qos=1)
        assert delivery.wait(5) and delivery.accepted
        assert _wait(lambda: rec.messages == [(topic, b"hello")])
    finally:
        client.stop()
    assert rec.failures == []


def test_auto_falls_back_to_3_1_1_and_forced_5_does_not(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    broker = v311_only_broker(tmp_path, port)
    url = f"mqtt://127.0.0.1:{port}"
    try:
        rec = Recorder()
        client = rec.client(_options(url))
        with caplog.at_level(logging.WARNING, logger="zhizao.broker.mqtt.client"):
            client.start()
            try:
                assert rec.connected.wait(10), rec.failures
                assert client.protocol == "3.1.1"
                topic = f"zhizao/test/{uuid.uuid4().hex[:8]}"
                client.subscribe([(topic, 1)])
                assert _wait(lambda: len(rec.subscribed) == 1)
                assert client.publish(topic, b"v3", qos=1).wait(5)
                assert _wait(lambda: rec.messages == [(topic, b"v3")])
            finally:
                client.stop()
        assert sum("using MQTT 3.1.1" in r.getMessage() for r in caplog.records) == 1
        forced = Recorder()
        only5 = forced.client(_options(url, protocol="5"))
        only5.start()
        try:
            assert not forced.connected.wait(1.5)
            assert only5.protocol == "5"
        finally:
            only5.stop()
    finally:
        broker.stop()  # type: ignore[attr-defined]


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[int]:
    """A private mosquitto that only lets `edge`/`edge-pw` in."""
    port = free_port()
    passwd = tmp_path / "passwd"
    passwd.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "edge", "edge-pw"], check=True, capture_output=True)
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\nuser root\n")
    proc = private_mosquitto(port, conf)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_refusal_is_logged_once_with_its_reason_code(password_broker: int, protocol: Protocol,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    client = rec.client(_options(f"mqtt://edge:wrong@127.0.0.1:{password_broker}", protocol=protocol))
    with caplog.at_level(logging.WARNING, logger="zhizao.broker.mqtt.client"):
        client.start()
        try:
            assert _wait(lambda: len(rec.failures) >= 3)  # it keeps retrying, after backoff delays
        finally:
            client.stop()
    refused = [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]
    assert len(refused) == 1, refused
    # mosquitto 2.0 answers a wrong password with "Not authorized" (3.1.1 code 5 is reported as 135 too).
    assert "Not authorized (reason code 135)" in refused[0] and f"127.0.0.1:{password_broker}" in refused[0]
    assert not rec.connected.is_set() and client.protocol == protocol  # a bad password is no protocol problem
    good = Recorder()
    ok = good.client(_options(f"mqtt://edge:edge-pw@127.0.0.1:{password_broker}", protocol=protocol))
    ok.start()
    try:
        assert good.connected.wait(5)
    finally:
        ok.stop()


def test_mutual_tls_with_a_client_certificate(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    port = free_port()
    conf = tmp_path / "tls.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\ncafile {ca.ca_file}\n"
                    f"certfile {ca.server_cert}\nkeyfile {ca.server_key}\nrequire_certificate true\n"
                    "use_identity_as_username true\nuser root\n")
    proc = private_mosquitto(port, conf)
    url = f"mqtts://127.0.0.1:{port}"
    try:
        rec = Recorder()
        client = rec.client(_options(url, tls=TlsFiles(ca.ca_file, ca.client_cert, ca.client_key)))
        client.start()
        try:
            assert rec.connected.wait(5), rec.failures
            assert client.publish("zhizao/test/tls", b"x", qos=1).wait(5)
        finally:
            client.stop()
        anonymous = Recorder()
        no_cert = anonymous.client(_options(url, tls=TlsFiles(ca_file=ca.ca_file)))
        no_cert.start()
        try:
            assert _wait(lambda: len(anonymous.failures) + len(anonymous.disconnects) >= 2)
            assert not anonymous.connected.is_set()
        finally:
            no_cert.stop()
    finally:
        proc.terminate()
        proc.wait(10)


def test_reconnects_after_a_broker_restart_with_a_new_will(tmp_path: Path) -> None:
    port = free_port()
    proc = private_mosquitto(port)
    rec = Recorder()
    client = rec.client(_options(f"mqtt://127.0.0.1:{port}"))
    client.start()
    try:
        assert rec.connected.wait(5)
        proc.terminate()
        proc.wait(10)
        assert _wait(lambda: len(rec.disconnects) == 1)
        assert _wait(lambda: len(rec.failures) >= 2)  # retried while nothing listens
        proc = private_mosquitto(port)
        assert _wait(lambda: rec.connects == 2)
        # One Will per CONNECT sent; attempts whose socket never opened reused the previous one.
        assert rec.wills == 2 and client.protocol == "5"
    finally:
        client.stop()
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("options,message", [
    (MqttOptions(url="ftp://x", client_id="c"), "url='ftp://x': scheme must be mqtt:// or mqtts://"),
    (MqttOptions(url="mqtt://h", client_id=""), "client_id='': must not be empty"),
    (MqttOptions(url="mqtt://h", client_id="c", reconnect_min_s=5, reconnect_max_s=1), "reconnect_max_s=1: "),
    (MqttOptions(url="mqtts://h", client_id="c", tls=TlsFiles(ca_file=Path("/nonexistent/ca.pem"))),
     "tls.ca_file='/nonexistent/ca.pem': no such file"),
])
def test_bad_options_are_errors_naming_the_option_and_value(options: MqttOptions, message: str) -> None:
    with pytest.raises(MqttError) as info:
        MqttClient(options)
    assert str(info.value).startswith(message)


def test_a_failing_will_hook_drops_the_attempt_not_the_thread(mqtt_url: str) -> None:
    rec = Recorder()
    calls = []

    def will() -> Will:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk full")  # e.g. the edge's bdSeq file could not be written
        return Will("zhizao/test/will", b"ok")

    client = MqttClient(_options(mqtt_url), will=will, on_connected=rec.on_connected,
                        on_connect_failed=rec.failures.append)
    client.start()
    try:
        assert rec.connected.wait(5), rec.failures
        assert len(calls) == 2 and len(rec.failures) == 1  # no CONNECT went out without its Will
    finally:
        client.stop()
