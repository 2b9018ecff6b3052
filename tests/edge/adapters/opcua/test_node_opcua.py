"""Against a server nobody here wrote: node-opcua with a SignAndEncrypt-only endpoint, a user name, small
OperationLimits it enforces, client certificates rejected until trusted, 500+ variables of every type.

browse -> check-config -> edge run -> Mosquitto -> cloud ingest -> PostgreSQL: every scalar value of every
built-in numeric, boolean and string type stored exactly and in order."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
import yaml
from click.testing import CliRunner

from tests.support.node_opcua import NodeOpcUaPlc
from tests.support.simserver import free_port
from zhizao.cloud.ingest.service import IngestService
from zhizao.edge.cli import edge
from zhizao.edge.config import load_agent_config

ROOT = Path(__file__).resolve().parents[4]
LIMIT = 100
# The value sequence of plc_server.js (VALUES), as the agent must deliver it.
EXPECTED: dict[str, list[float | str]] = {
    "SByte": [-128, -1, 0, 1, 127, 5],
    "Byte": [0, 1, 128, 200, 255, 7],
    "Int16": [-32768, -1, 0, 1, 32767, 9],
    "UInt16": [0, 1, 40000, 65535, 2, 3],
    "Int32": [-2147483648, -1, 0, 1, 2147483647, 11],
    "UInt32": [0, 1, 3000000000, 4294967295, 4, 5],
    "Int64": [-1, 0, 1, 2**53 - 1, 12, 13],
    "UInt64": [0, 1, 2**53 - 1, 2, 3, 4],
    "Float": [float(np.float32(v)) for v in (0.5, -1.25, 3.75, 1e10, -0.0625, 2.5)],
    "Double": [0.1, -2.5e-300, 1.7976931348623157e308, 3.141592653589793, -7.5, 42.0],
    "Boolean": [0, 1, 0, 1, 0, 1],
    "String": ["", "on", "漢字 ok", 'a,b;c"d', "off", "end"],
}
DATATYPES = {"SByte": "Int32", "Byte": "Int32", "Int16": "Int32", "UInt16": "Int32", "Int32": "Int32",
             "UInt32": "Int64", "Int64": "Int64", "UInt64": "Int64", "Float": "Float", "Double": None,
             "Boolean": "Boolean", "String": "String"}


@pytest.fixture()
def plc(tmp_path: Path) -> Iterator[NodeOpcUaPlc]:
    server = NodeOpcUaPlc(free_port(), tmp_path / "pki", limit=LIMIT, ticks=len(EXPECTED["Int32"]) - 1)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import asyncio

    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    d = tmp_path_factory.mktemp("client")
    cert, key = d / "edge.der", d / "edge.pem"
    asyncio.run(setup_self_signed_certificate(key, cert, "urn:zhizao:edge", "localhost",
                                              [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "zhizao edge"}))
    return cert, key


def _stored(db: str, site: str, machine: str) -> dict[str, list[float | str]]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT t.name, s.value::text, s.ts FROM samples s JOIN tags t USING (tag_id)"
            " WHERE t.site_id = %s AND t.machine_id = %s"
            " UNION ALL SELECT t.name, x.value, x.ts FROM samples_text x JOIN tags t USING (tag_id)"
            " WHERE t.site_id = %s AND t.machine_id = %s ORDER BY 1, 3", [site, machine, site, machine]).fetchall()
    out: dict[str, list[float | str]] = {}
    for name, value, _ in rows:
        if name in EXPECTED:
            out.setdefault(name, []).append(value if name == "String" else float(value))
    return out


def test_node_opcua_plc_browse_run_and_store_every_scalar_type_exactly(
    plc: NodeOpcUaPlc, client_cert: tuple[Path, Path], fresh_database: str, mqtt_url: str, unique_id: str,
    tmp_path: Path,
) -> None:
    assert plc.variables >= 500
    cert, key = client_cert
    out = tmp_path / "agents"
    host = f"h{unique_id}"
    args = ["browse", plc.endpoint, "--out", str(out), "--site", unique_id, "--mqtt-url", mqtt_url,
            "--primary-host", host, "--security-mode", "SignAndEncrypt", "--certificate", str(cert),
            "--private-key", str(key), "--username", "edge", "--password-env", "ZHIZAO_TEST_PLC_PASSWORD"]
    runner = CliRunner(env={"ZHIZAO_TEST_PLC_PASSWORD": "s3cret"})
    refused = runner.invoke(edge, args)  # the PLC does not know our certificate yet
    assert refused.exit_code == 1
    assert "does not trust the agent's certificate" in refused.output, refused.output
    assert plc.trust_rejected() == 1  # the engineer trusts it on the PLC
    deadline = time.monotonic() + 30
    while True:  # node-opcua notices a changed trust list through a file watcher, within a few seconds
        result = runner.invoke(edge, args)
        if result.exit_code == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.glob("*.yaml"))
    assert files == [f"{unique_id}-press-1.yaml", f"{unique_id}-utilities.yaml", f"{unique_id}-weld-2.yaml"]
    for name in files:
        check = CliRunner().invoke(edge, ["check-config", str(out / name)])
        assert check.exit_code == 0, check.output
    path = out / f"{unique_id}-press-1.yaml"
    header = path.read_text(encoding="utf-8").split("\nsite:")[0]
    for name, why in (("Stamp", "DateTime"), ("Label", "LocalizedText"), ("Profile", "array of Double"),
                      ("Codes", "array of Int32")):
        assert any(f"Process/{name} " in line and why in line for line in header.splitlines()), (name, header)
    config = load_agent_config(path)
    assert config.adapters[0].chunk_size == LIMIT  # type: ignore[attr-defined]
    m01 = next(m for m in config.machines if m.id == "press-1-m01")
    signals = {s.metric: s for s in m01.signals}
    assert {name: signals[name].datatype for name in EXPECTED} == DATATYPES
    process = next(m for m in config.machines if m.id == "process")  # an object beside the machines: oee false
    assert not process.oee
    assert {s.metric: s.datatype for s in process.signals} == {"Mode": "Int32"}  # the enumeration's code

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["outbox"]["dir"] = str(tmp_path / "outbox")
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    ingest = IngestService(fresh_database, mqtt_url, host)
    ingest.start()
    env = {"ZHIZAO_OPCUA_PASSWORD": "s3cret", "ZHIZAO_TEST_PLC_PASSWORD": "s3cret"}
    agent = subprocess.Popen([sys.executable, "-m", "zhizao", "edge", "run", str(path)], cwd=ROOT,
                             env={**os.environ, **env},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_stored(fresh_database, unique_id, "press-1-m01")) < len(EXPECTED):
            assert agent.poll() is None, agent.communicate()[0]
            time.sleep(0.2)
        first = _stored(fresh_database, unique_id, "press-1-m01")
        if len(first) < len(EXPECTED):
            agent.terminate()
            pytest.fail("initial values not stored within 60 s; agent log:\n" + agent.communicate(timeout=30)[0][:5000] + "\nPLC:\n" + "\n".join(plc.lines[-30:]))
        assert {k: v[:1] for k, v in first.items()} == {k: v[:1] for k, v in EXPECTED.items()}
        plc.go()
        plc.wait_done()
        deadline = time.monotonic() + 30
        stored = first
        while time.monotonic() < deadline:
            stored = _stored(fresh_database, unique_id, "press-1-m01")
            if all(len(stored.get(k, [])) >= len(v) for k, v in EXPECTED.items()):
                break
            time.sleep(0.2)
    finally:
        agent.terminate()
        log = agent.communicate(timeout=30)[0]
        ingest.stop()
    assert stored == EXPECTED, log[-3000:]
    with psycopg.connect(fresh_database) as conn:
        dead = conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY 1").fetchall()
    assert dead == []
