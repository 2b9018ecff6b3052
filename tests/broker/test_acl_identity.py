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
