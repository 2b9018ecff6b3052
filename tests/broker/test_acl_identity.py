"""The shipped ACL binds topics to the authenticated identity, not the client id: agent A's credential with
agent B's client id publishes none of B's topics and reads none of B's commands, A's own still work; through
the shipped bridge config a site broker's agent reaches the cloud broker and the cloud's commands reach it."""

from __future__ import annotations

from pathlib import Path

from tests.broker.test_mosquitto_configs import CONF_DIR, EDGE, _Client, broker, shipped_broker
from tests.support.spnode import subscribe, wait_for
from zhizao.bench.faults import bridge_config

__all__ = ["broker"]  # the fixture, imported for this module

B_TOPICS = ["spBv1.0/sh-lingang/NBIRTH/cnc-2", "spBv1.0/sh-lingang/NDATA/cnc-2", "spBv1.0/sh-lingang/NDEATH/cnc-2",
            "spBv1.0/sh-lingang/DBIRTH/cnc-2/m1", "spBv1.0/sh-lingang/DDATA/cnc-2/m1",
            "spBv1.0/sh-lingang/DDEATH/cnc-2/m1", "zhizao/v1/cmd/sh-lingang/cnc-2", "zhizao/v1/edge/sh-lingang/cnc-2"]


def test_a_credential_with_another_agents_client_id_gets_none_of_its_topics(broker: int) -> None:
    cloud = _Client(broker, "zhizao-cloud", "zhizao-cloud-1")
    subscribe(cloud.c, ["spBv1.0/sh-lingang/#", "zhizao/v1/#"])
    spoof = _Client(broker, EDGE, "cnc-2")  # agent cnc-1's credential, agent cnc-2's client id
    subscribe(spoof.c, ["spBv1.0/sh-lingang/NCMD/cnc-2", "zhizao/v1/ack/sh-lingang/cnc-2"])
    try:
        refused = [t for t in B_TOPICS if spoof.publish(t) == 0x87]
        assert refused == B_TOPICS
        assert spoof.publish("spBv1.0/sh-lingang/NDATA/cnc-1") == 0  # its own identity's topics still work
        cloud.publish("spBv1.0/sh-lingang/NCMD/cnc-2")
        cloud.publish("zhizao/v1/ack/sh-lingang/cnc-2")
        cloud.publish("spBv1.0/sh-lingang/NCMD/cnc-1")  # the marker: everything before it is delivered by now
        wait_for(lambda: "spBv1.0/sh-lingang/NCMD/cnc-1" in cloud.got, what="the marker at the cloud")
        assert spoof.got == []  # cnc-2's commands and acks did not reach cnc-1's credential
        assert [t for t in cloud.got if "cnc-2" in t and "NCMD" not in t and "ack" not in t] == []
    finally:
        spoof.close()
        cloud.close()


def test_the_shipped_bridge_carries_an_agents_data_out_and_commands_in(tmp_path: Path) -> None:
    with shipped_broker(("zhizao-cloud", "sh-lingang-bridge")) as cloud_port:
        bridge = [*bridge_config(CONF_DIR / "bridge-site-to-cloud.conf", "sh-lingang", cloud_port),
                  "remote_username sh-lingang-bridge", "remote_password sh-lingang-bridge-pw"]  # (no certificates here)
        with shipped_broker((EDGE,), tuple(bridge)) as site_port:
            cloud = _Client(cloud_port, "zhizao-cloud", "zhizao-cloud-1")
            subscribe(cloud.c, ["spBv1.0/sh-lingang/#"])
            edge = _Client(site_port, EDGE, "cnc-1")
            subscribe(edge.c, ["spBv1.0/sh-lingang/NCMD/cnc-1"])
            try:
                # Until the bridge is up, the agent's publishes stop at the site broker: publish until one arrives.
                def arrived() -> bool:
                    assert edge.publish("spBv1.0/sh-lingang/NDATA/cnc-1") in (0, 0x10)
                    return "spBv1.0/sh-lingang/NDATA/cnc-1" in cloud.got

                wait_for(arrived, 20.0, "the agent's NDATA at the cloud broker")
                assert edge.publish("spBv1.0/sh-lingang/NDATA/cnc-2") == 0x87  # the site broker enforces it too

                def commanded() -> bool:
                    cloud.publish("spBv1.0/sh-lingang/NCMD/cnc-1")
                    return "spBv1.0/sh-lingang/NCMD/cnc-1" in edge.got

                wait_for(commanded, 20.0, "the cloud's NCMD at the agent")
                assert all(t.endswith("/cnc-1") for t in cloud.got)
            finally:
                edge.close()
                cloud.close()


def test_on_the_tls_listener_the_certificate_cn_is_the_identity_and_the_client_id(tmp_path: Path) -> None:
    """Agent cnc-1's certificate with cnc-2's client id: none of cnc-2's topics, and cnc-2's session stays up
    (use_username_as_clientid makes the client id the CN, so it cannot take cnc-2's session over)."""
    import ssl
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.support.certs import make_ca
    from zhizao.broker.embedded import free_port

    ca = make_ca(tmp_path / "pki", client_name=EDGE)
    tls_port = free_port()
    paths = {"cafile": ca.ca_file, "certfile": ca.server_cert, "keyfile": ca.server_key}
    tls = []
    for raw in (CONF_DIR / "tls-listener.conf").read_text().splitlines():
        key, _, _value = raw.strip().partition(" ")
        if not key or key.startswith("#") or key == "crlfile":  # no CRL in the test CA
            continue
        tls.append(f"listener {tls_port} 127.0.0.1" if key == "listener" else
                   f"{key} {paths[key]}" if key in paths else raw.strip())  # fmt: skip
    for p in tmp_path.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)  # mosquitto drops to its own user, which must read them
    tmp_path.chmod(0o755)
    with shipped_broker(("zhizao-cloud", "sh-lingang.cnc-2"), tuple(tls)) as port:
        victim = _Client(port, "sh-lingang.cnc-2", "cnc-2")
        dropped = threading.Event()
        victim.c.on_disconnect = lambda *a: dropped.set()
        connected = threading.Event()
        acks: dict[int, int] = {}
        spoof = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cnc-2", protocol=mqtt.MQTTv5)
        spoof.tls_set(ca_certs=str(ca.ca_file), certfile=str(ca.client_cert), keyfile=str(ca.client_key),
                      tls_version=ssl.PROTOCOL_TLS_CLIENT)  # fmt: skip
        spoof.on_connect = lambda c, u, f, rc, p=None: connected.set()
        spoof.on_publish = lambda c, u, mid, rc, p: acks.__setitem__(mid, rc.value)
        spoof.connect("127.0.0.1", tls_port)
        spoof.loop_start()
        try:
            assert connected.wait(10)

            def publish(topic: str) -> int:
                info = spoof.publish(topic, b"x", qos=1)
                wait_for(lambda: info.mid in acks, 5.0, f"PUBACK of {topic}")
                return acks[info.mid]

            assert [publish(t) for t in B_TOPICS] == [0x87] * len(B_TOPICS)
            assert publish("spBv1.0/sh-lingang/NDATA/cnc-1") in (0, 0x10)  # its CN's own topics
            assert victim.publish("spBv1.0/sh-lingang/NDATA/cnc-2") in (0, 0x10)
            assert not dropped.is_set()  # the spoofer's client id "cnc-2" became its CN: no takeover
        finally:
            spoof.disconnect()
            spoof.loop_stop()
            victim.close()
