"""The demo's private mosquitto with users: anonymous clients refused, the shipped ACL applied (only the cloud
publishes DCMD)."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker.test_mosquitto_configs import _Client
from tests.support.spnode import subscribe, wait_for
from zhizao.broker.embedded import broker_secured, start_broker
from zhizao.broker.mqtt import parse_mqtt_url


def test_private_mosquitto_with_users_refuses_anonymous_and_applies_the_acl() -> None:
    assert broker_secured("mosquitto")
    tmp_path = Path(tempfile.mkdtemp(prefix="zhizao-broker-auth-"))
    tmp_path.chmod(0o755)  # mosquitto, started as root, drops to its own user, which must enter the folder
    try:
        _check(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _check(tmp_path: Path) -> None:
    url, stop = start_broker(tmp_path, kind="mosquitto",
                             users={"zhizao-cloud": "zhizao-cloud-pw", "sh-lingang.cnc-7": "sh-lingang.cnc-7-pw"})
    port = parse_mqtt_url(url).port
    try:
        anon = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        reasons: list[object] = []
        done = threading.Event()
        anon.on_connect = lambda c, u, f, rc, p=None: (reasons.append(rc), done.set())
        anon.connect("127.0.0.1", port)
        anon.loop_start()
        assert done.wait(5) and getattr(reasons[0], "is_failure", False)
        anon.loop_stop()
        cloud = _Client(port, "zhizao-cloud", "zhizao-cloud-1")
        # An agent the shipped ACL does not list: the private broker added its block (broker/acl.py).
        edge = _Client(port, "sh-lingang.cnc-7", "cnc-7")
        subscribe(edge.c, ["spBv1.0/sh-lingang/DCMD/cnc-7/+"])
        try:
            assert edge.publish("spBv1.0/sh-lingang/NDATA/cnc-7") in (0, 0x10)  # 0x10: nobody subscribed
            assert edge.publish("spBv1.0/sh-lingang/NDATA/cnc-1") == 0x87  # the shipped example agent's
            assert edge.publish("spBv1.0/sh-lingang/DCMD/cnc-7/m1") == 0x87
            assert cloud.publish("spBv1.0/sh-lingang/DCMD/cnc-7/m2") in (0, 0x10)
            wait_for(lambda: edge.got == ["spBv1.0/sh-lingang/DCMD/cnc-7/m2"], what="only the cloud's DCMD")
        finally:
            edge.close()
            cloud.close()
    finally:
        stop()
    assert "allow_anonymous false" in (tmp_path / "mosquitto" / "mosquitto.conf").read_text()
