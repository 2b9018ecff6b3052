"""The served address space matches the contract of edge-config.md, read by a real asyncua client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

from zhizao.edge.sim.nodes import ENDPOINT_PATH, NAMESPACE_URI, build_node_table
from zhizao.edge.sim.server import SimServer, SimStats, serve
from zhizao.seeds import load_scenario

PACKML = {
    "State",
    "StopReason",
    "ProdProcessedCount",
    "ProdDefectiveCount",
    "MachSpeed",
    "CurMachSpeed",
    "MachDesignSpeed",
}


def test_address_space_matches_contract(free_port: int) -> None:
    cluster = load_scenario()
    paths = ["sh-lingang/cnc-1/cnc-1-m01", "js-suzhou/smt-1/smt-1-m05", "ah-hefei/mod-1/mod-1-m01"]
    scenario = cluster.subset(paths)
    endpoint = f"opc.tcp://127.0.0.1:{free_port}{ENDPOINT_PATH}"

    async def main() -> SimStats:
        # Through `serve`, the entry point the demo uses: `ready` once listening, returns when `stop` is set.
        stop, ready = asyncio.Event(), asyncio.Event()
        served = asyncio.create_task(serve(scenario, free_port, seed=3, stop=stop, ready=ready))
        await asyncio.wait_for(ready.wait(), timeout=30)
        try:
            await _check(endpoint)
        finally:
            stop.set()
        return await served

    async def _check(endpoint: str) -> None:
        async with Client(endpoint) as client:
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
                assert set(children) == PACKML | {s.name for s in m.signals} | {"Start", "Stop", "Reset", "RunOrder"}
                for tag, child in children.items():
                    if tag in ("Start", "Stop", "Reset", "RunOrder"):
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

    stats = asyncio.run(main())
    assert stats.values >= build_node_table(scenario).size == 33  # every node published at least once


def test_security_offers_basic256sha256_with_a_generated_certificate(
    free_port: int, run_sim: Any, make_scenario: Any, tmp_path: Path
) -> None:
    async def main() -> None:
        sim = SimServer(make_scenario(1), free_port, seed=1, security=True, data_dir=tmp_path / "sim")
        async with run_sim(sim):
            assert (tmp_path / "sim" / "pki" / "sim-cert.der").exists()
            async with Client(sim.endpoint) as probe:
                offered = {
                    (e.SecurityPolicyUri.rsplit("#", 1)[-1], e.SecurityMode)
                    for e in await probe.get_endpoints()
                }
            assert offered == {
                ("None", ua.MessageSecurityMode.None_),
                ("Basic256Sha256", ua.MessageSecurityMode.Sign),
                ("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt),
            }
            key, cert = tmp_path / "client-key.pem", tmp_path / "client-cert.der"
            await setup_self_signed_certificate(
                key,
                cert,
                "urn:zhizao:test:client",
                "localhost",
                [ExtendedKeyUsageOID.CLIENT_AUTH],
                {"commonName": "t"},
            )
            client = Client(sim.endpoint)
            client.application_uri = "urn:zhizao:test:client"
            await client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
            async with client:
                assert await client.get_node("ns=2;s=s1/l1/m01/MachDesignSpeed").read_value() == 60.0

    asyncio.run(main())
