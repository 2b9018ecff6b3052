"""Topic namespace, id rules, and the zhizao ack/STATE payloads."""

from __future__ import annotations

import pytest

from zhizao.broker import extensions
from zhizao.broker.mqtt import MqttUrlError, parse_mqtt_url, resolve_mqtt_url
from zhizao.broker.sparkplug.topics import (
    MessageType,
    Topic,
    TopicError,
    device_topic,
    node_topic,
    state_topic,
    validate_id,
)


def test_topics_round_trip() -> None:
    t = device_topic("sh-lingang", MessageType.DDATA, "cnc-1", "cnc-1-m01")
    assert t == "spBv1.0/sh-lingang/DDATA/cnc-1/cnc-1-m01"
    assert Topic.parse(t) == Topic("sh-lingang", MessageType.DDATA, "cnc-1", "cnc-1-m01")
    assert node_topic("a", MessageType.NBIRTH, "b") == "spBv1.0/a/NBIRTH/b"
    assert state_topic("zhizao-cloud") == "spBv1.0/STATE/zhizao-cloud"


@pytest.mark.parametrize(
    "bad",
    ["spBv1.0/a/NDATA/b/c", "spBv1.0/a/DDATA/b", "spBv2/a/NDATA/b", "spBv1.0/a/FOO/b", "spBv1.0/a/NDATA/+", "x"],
)
def test_bad_topics_are_refused(bad: str) -> None:
    with pytest.raises(TopicError):
        Topic.parse(bad)


@pytest.mark.parametrize("bad", ["Upper", "a/b", "", "a+b", "-x", "a#"])
def test_ids_name_field_and_value(bad: str) -> None:
    with pytest.raises(TopicError, match=r"site: .* is not a valid id"):
        validate_id("site", bad)


def test_ack_and_state_payloads() -> None:
    assert extensions.ack_topic("s1", "e1") == "zhizao/v1/ack/s1/e1"
    assert extensions.parse_ack_topic("zhizao/v1/ack/s1/e1") == ("s1", "e1")
    assert extensions.decode_ack(extensions.encode_ack(99, 5)) == extensions.Ack(99, None)
    assert extensions.decode_ack(extensions.encode_ack(99, 5, bd_seq=7)) == extensions.Ack(99, 7)
    with pytest.raises(extensions.ExtensionError, match="bdSeq 256"):
        extensions.decode_ack(b'{"batch": 1, "bdSeq": 256}')
    assert extensions.decode_state(extensions.encode_state(True, 123)) == (True, 123)
    with pytest.raises(extensions.ExtensionError, match="batch"):
        extensions.decode_ack(b'{"batch": -1}')
    with pytest.raises(extensions.ExtensionError):
        extensions.decode_state(b"ONLINE")


def test_mqtt_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = parse_mqtt_url("mqtts://user:p%40ss@broker.example:8884")
    assert (ep.host, ep.port, ep.tls, ep.username, ep.password) == ("broker.example", 8884, True, "user", "p@ss")
    assert parse_mqtt_url("mqtt://127.0.0.1").port == 1883
    with pytest.raises(MqttUrlError, match="scheme"):
        parse_mqtt_url("http://x")
    monkeypatch.setenv("ZHIZAO_MQTT_URL", "mqtt://10.0.0.1:1884")
    assert resolve_mqtt_url("mqtt://a:1") == "mqtt://10.0.0.1:1884"
    monkeypatch.delenv("ZHIZAO_MQTT_URL")
    assert resolve_mqtt_url("mqtt://a:1") == "mqtt://a:1"
