"""The shipped ACL and commands: only the cloud identity publishes NCMD/DCMD; an edge writes only its own
command results and agent info, which the cloud reads."""

from __future__ import annotations

from tests.broker.test_mosquitto_configs import EDGE, _Client, broker
from tests.support.spnode import subscribe, wait_for

__all__ = ["broker"]  # the fixture, imported for this module


def test_only_the_cloud_publishes_commands_and_edges_report_only_their_own(broker: int) -> None:
    cloud = _Client(broker, "zhizao-cloud", "zhizao-cloud-cmd")
    subscribe(cloud.c, ["zhizao/v1/cmd/#", "zhizao/v1/edge/#"])
    edge = _Client(broker, EDGE, "cnc-1")
    subscribe(edge.c, ["spBv1.0/sh-lingang/DCMD/cnc-1/+"])
    try:
        assert edge.publish("spBv1.0/sh-lingang/DCMD/cnc-1/cnc-1-m01") == 0x87  # not even to itself
        assert edge.publish("spBv1.0/sh-lingang/NCMD/cnc-1") == 0x87
        assert edge.publish("spBv1.0/sh-lingang/DCMD/cnc-2/cnc-2-m01") == 0x87
        assert edge.publish("zhizao/v1/cmd/sh-lingang/cnc-2") == 0x87  # another node's results
        assert edge.publish("zhizao/v1/edge/other-site/cnc-1") == 0x87
        assert edge.publish("zhizao/v1/cmd/sh-lingang/cnc-1") == 0
        assert edge.publish("zhizao/v1/edge/sh-lingang/cnc-1") == 0
        assert cloud.publish("spBv1.0/sh-lingang/DCMD/cnc-1/cnc-1-m01") in (0, 0x10)
        wait_for(lambda: len(edge.got) == 1 and len(cloud.got) == 2, what="the cloud's DCMD and the edge's reports")
        assert edge.got == ["spBv1.0/sh-lingang/DCMD/cnc-1/cnc-1-m01"]  # the cloud's, not its own attempt
        assert sorted(cloud.got) == ["zhizao/v1/cmd/sh-lingang/cnc-1", "zhizao/v1/edge/sh-lingang/cnc-1"]
    finally:
        edge.close()
        cloud.close()
