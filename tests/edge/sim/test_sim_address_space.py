"""The served address space matches the contract of edge-config.md, read by a real asyncua client."""

from __future__ import annotations

import asyncio
from typing import Any

from asyncua import Client, ua

from edge.sim.nodes import ENDPOINT_PATH, NAMESPACE_URI
from edge.sim.server import SimServer
from seeds import load_scenario

PACKML = {
    "State",
    "StopReason",
    "ProdProcessedCount",
    "ProdDefectiveCount",
    "MachSpeed",
    "CurMachSpeed",
    "MachDesignSpeed",
}


def test_address_space_matches_contract(free_port: int, run_sim: Any) -> None:
    cluster = load_scenario()
    paths = ["sh-lingang/cnc-1/cnc-1-m01", "js-suzhou/smt-1/smt-1-m05", "ah-hefei/mod-1/mod-1-m01"]
    scenario = cluster.subset(paths)

    async def main() -> None:
        async with run_sim(SimServer(scenario, free_port, seed=3)) as (sim, _, _):
            assert sim.endpoint == f"opc.tcp://127.0.0.1:{free_port}{ENDPOINT_PATH}"
            async with Client(sim.endpoint) as client:
                ns = await client.get_namespace_array()
                assert ns[2] == NAMESPACE_URI
                endpoints = await client.get_endpoints()
                assert {e.SecurityMode for e in endpoints} == {ua.MessageSecurityMode.None_}
                objects = client.nodes.objects
                sites = {(await n.read_browse_name()).Name for n in await objects.get_children()}
                assert {"sh-lingang", "js-suzhou", "ah-hefei"} <= sites
                for path in paths:
                    site, line, machine = path.split("/")
                    node = await objects.get_child([f"2:{site}", f"2:{line}", f"2:{machine}"])
                    assert node.nodeid == ua.NodeId(path, 2)
                    children = {(await c.read_browse_name()).Name: c for c in await node.get_children()}
                    m = next(
                        mm for s in cluster.sites for ln in s.lines for mm in ln.machines if mm.id == machine
                    )
                    assert set(children) == PACKML | {s.name for s in m.signals} | {"Start", "Stop", "Reset"}
                    for tag, child in children.items():
                        if tag in ("Start", "Stop", "Reset"):
                            assert await child.read_node_class() == ua.NodeClass.Method
                            continue
                        assert child.nodeid.to_string() == f"ns=2;s={path}/{tag}"
                        dtype = await child.read_data_type()
                        want = (
                            ua.ObjectIds.Int32
                            if tag in {"State", "StopReason", "ProdProcessedCount", "ProdDefectiveCount"}
                            else ua.ObjectIds.Double
                        )
                        assert dtype == ua.NodeId(want), tag
                        access = await child.read_attribute(ua.AttributeIds.AccessLevel)
                        writable = bool(access.Value.Value & ua.AccessLevel.CurrentWrite.mask)
                        assert writable == (tag == "MachSpeed"), tag
                    design = await client.get_node(f"ns=2;s={path}/MachDesignSpeed").read_value()
                    assert design == m.ideal_rate_per_min
                    state = await client.get_node(f"ns=2;s={path}/State").read_value()
                    assert state in {2, 4, 5, 6, 9, 11}

    asyncio.run(main())
