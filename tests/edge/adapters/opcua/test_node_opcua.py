"""Against a server nobody here wrote: node-opcua with a SignAndEncrypt-only endpoint, a user name, small
OperationLimits it enforces, client certificates rejected until trusted, 500+ variables of every type.

browse -> check-config -> edge run -> Mosquitto -> cloud ingest -> PostgreSQL -> API: every value of every
built-in scalar type, 64-bit integers beyond 2**53, DateTime, LocalizedText (with its locale), Guid, an
enumeration, arrays, a matrix, ByteString, NodeId, QualifiedName, StatusCode, XmlElement and structures (a
standard one and one of the PLC's own types) stored exactly, in order, and answered by the API with its type."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import yaml
from asyncua import ua
from click.testing import CliRunner

from tests.support.apifixtures import bearer, make_client
from tests.support.node_opcua import NodeOpcUaPlc
from tests.support.simserver import free_port
from tests.support.spb_capture import Capture
from zhizao.bench.decode import decode_all
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.cloud.auth import create_token
from zhizao.cloud.ingest.service import IngestService
from zhizao.edge.cli import edge
from zhizao.edge.config import load_agent_config

ROOT = Path(__file__).resolve().parents[4]
LIMIT = 100


def _iso(year: int, month: int, day: int) -> str:
    return datetime(year, month, day, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# The value sequences of plc_server.js (VALUES, TYPED, MODES) as the API must answer them: the machine's scalars ...
EXPECTED: dict[str, list[Any]] = {
    "SByte": [-128, -1, 0, 1, 127, 5],
    "Byte": [0, 1, 128, 200, 255, 7],
    "Int16": [-32768, -1, 0, 1, 32767, 9],
    "UInt16": [0, 1, 40000, 65535, 2, 3],
    "Int32": [-2147483648, -1, 0, 1, 2147483647, 11],
    "UInt32": [0, 1, 3000000000, 4294967295, 4, 5],
    "Int64": [-1, 0, 2**63 - 1, -(2**63), 2**53 + 1, -(2**53 + 1)],
    "UInt64": [0, 2**64 - 1, 2**53 + 1, 2**53, 2**64 - 2, 2**53 - 1],
    "Float": [float(np.float32(v)) for v in (0.5, -1.25, 3.75, 1e10, -0.0625, 2.5)],
    "Double": [0.1, -2.5e-300, 1.7976931348623157e308, 3.141592653589793, -7.5, 42.0],
    "Boolean": [0.0, 1.0, 0.0, 1.0, 0.0, 1.0],  # 0 or 1: a number the charts draw
    "String": ["", "on", "漢字 ok", 'a,b;c"d', "off", "end"],
}
# ... and the Process object's DateTime, LocalizedText, Guid, enumeration and arrays.
PROCESS: dict[str, list[Any]] = {
    "Stamp": [_iso(2026, 1, 1), "2026-06-30T12:30:15.123Z", _iso(1970, 1, 1), "2099-12-31T23:59:59.999Z",
              _iso(2000, 2, 29), "2026-01-01T00:00:00.001Z"],
    "Label": [{"locale": loc, "text": text} for loc, text in (("de", "Presse"), ("en", "Press"), ("zh-CN", "压力机"),
                                                              ("en", ""), ("en", 'a"b'), ("en", "end"))],
    "Id": ["12345678-1234-5678-9abc-def012345678", "00000000-0000-0000-0000-000000000001",
           "ffffffff-ffff-ffff-ffff-ffffffffffff", "0a0b0c0d-0e0f-1011-1213-141516171819",
           "12345678-1234-5678-9abc-def012345679", "deadbeef-0000-4000-8000-00000000cafe"],
    "Mode": [1, 0, 2, 1, 2, 0],
    "Profile": [[1.5, 2.5, 3.5], [], [0.1, -1e300], [42.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [-0.5]],
    "Codes": [[1, 2, 3], [-2147483648, 2147483647], [], [0], [7, 7, 7], [9]],
    "Gains": [[0.5, -1.25], [3.75], [], [1e10], [-0.0625, 2.5, 0.25], [8.0]],
    "Names": [["a", "b"], [], ["漢字", "x,y"], [""], ["end"], ["p", "q", "r"]],
    "Flags": [[True, False, True], [], [i % 4 == 0 for i in range(9)], [True], [False, True], [True] * 10],
    "Serials": [[2**64 - 1, 1], [], [2**53 + 1], [0], [2**53, 2**53 + 3], [7]],
    "Offsets": [[-(2**63), 2**63 - 1], [-1], [], [-(2**53 + 1)], [5], [2**53 + 1, 0]],
    "Stamps": [[_iso(2026, 1, 1), _iso(1970, 1, 1)], [], ["2026-07-04T08:00:00.250Z"], [_iso(2030, 1, 1)],
               [_iso(2026, 1, 1), _iso(2026, 1, 2)], [_iso(2027, 3, 3)]],
    # ByteString as base64, the 2x2 matrix as nested arrays, NodeId / QualifiedName / XmlElement as their
    # strings, StatusCode as its UInt32 code
    "Blob": [base64.b64encode(bytes(b)).decode() for b in ([0, 255, 122], [9, 9], [1], [104, 105, 0, 0], [7] * 5, [0])],
    "Grid": [[[1.5, 2.5], [3.5, 4.5]], [[0.0, -1.0], [1e300, 0.25]], [[1.0, 1.0], [1.0, 1.0]],
             [[2.0, 2.0], [2.0, 2.0]], [[-0.5, 0.0], [0.0, 8.0]], [[9.0, 8.0], [7.0, 6.0]]],
    "Ref": ["ns=1;s=sh-lingang/press-1", "i=85", "ns=1;i=4242", "ns=1;s=漢字", "i=2253", "ns=1;s=end"],
    "QName": ["1:Spindle", "0:Server", "1:漢字", "1:a b", "0:Objects", "1:end"],
    "Code": [int(getattr(ua.StatusCodes, c)) for c in ("Good", "BadNodeIdUnknown", "BadOutOfRange",
                                                       "UncertainInitialValue", "Good", "BadTimeout")],
    "Xml": ["<a/>", "<tool id='7'>drill</tool>", "<b>漢字</b>", '<c x="1"/>', "<d></d>", "<end/>"],
    # structures as objects of their fields: a standard Range and the PLC's own ToolSetup (decoded with the
    # DataTypeDefinition the agent reads from the PLC at connect)
    "Limits": [{"Low": lo, "High": hi} for lo, hi in ((0.0, 100.0), (-1.5, 1.5), (0.25, 1e300), (1.0, 2.0), (2.0, 3.0),
                                                       (3.0, 4.0))],
    "Setup": [{"Tool": t, "Offset": o, "Count": c} for t, o, c in (("T1", 0.25, 3), ("T2", -1.0, 0), ("漢字", 0.0, -7),
                                                                  ("", 1e-300, 2147483647), ('a"b', 8.0, 1),
                                                                  ("end", 9.0, 2))],
}
# The Sparkplug datatype `edge browse` maps each OPC UA type to (None: Double, the default).
DATATYPES = {"SByte": "Int8", "Byte": "UInt8", "Int16": "Int16", "UInt16": "UInt16", "Int32": "Int32",
             "UInt32": "UInt32", "Int64": "Int64", "UInt64": "UInt64", "Float": "Float", "Double": None,
             "Boolean": "Boolean", "String": "String"}
PROCESS_TYPES = {"Stamp": "DateTime", "Label": "Text", "Id": "UUID", "Mode": "Int32", "Profile": "DoubleArray",
                 "Codes": "Int32Array", "Gains": "FloatArray", "Names": "StringArray", "Flags": "BooleanArray",
                 "Serials": "UInt64Array", "Offsets": "Int64Array", "Stamps": "DateTimeArray", "Blob": "Bytes",
                 "Grid": "Text", "Ref": "String", "QName": "String", "Code": "UInt32", "Xml": "String",
                 "Limits": "Text", "Setup": "Text"}
# Where each is stored: samples (float64), samples_text (text, JSON documents and arrays as JSON, DateTime as
# ISO 8601, Bytes as base64) and, for Int64/UInt64 values beyond 2**53, also samples_int (exact).
TABLE = {**{n: "samples" for n in EXPECTED if n != "String"}, "String": "samples_text",
         **{n: "samples_text" for n in PROCESS if n not in ("Mode", "Code")}, "Mode": "samples", "Code": "samples"}


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


def _stored_counts(db: str, site: str) -> dict[str, int]:
    """Rows stored per tag name of the two machines with typed values (any table)."""
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT t.name, count(*) FROM (SELECT tag_id FROM samples UNION ALL SELECT tag_id FROM samples_text) s"
            " JOIN tags t USING (tag_id) WHERE t.site_id = %s AND t.machine_id IN ('press-1-m01', 'process')"
            " GROUP BY 1", [site]).fetchall()
    return {name: int(n) for name, n in rows}


def _api_values(db: str, site: str) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """Every stored value of the two machines as `/api/v1/series` (raw) answers it, and `/api/v1/latest`'s."""
    token = create_token(db, "viewer", site, "node-opcua test")
    since = int(time.time() * 1000) - 86_400_000
    with make_client(db) as client:
        series: dict[str, list[Any]] = {}
        latest: dict[str, Any] = {}
        for machine, names in (("press-1-m01", EXPECTED), ("process", PROCESS)):
            for name in names:
                r = client.get("/api/v1/series", params={"site": site, "machine": machine, "name": name,
                                                         "start": str(since)}, headers=bearer(token))
                assert r.status_code == 200, r.text
                series[name] = r.json()["points"]["value"]
            r = client.get("/api/v1/latest", params={"site": site, "machine": machine}, headers=bearer(token))
            latest.update({row["name"]: row["value"] for row in r.json() if row["name"] in names})
    return series, latest


def _per_type(db: str, site: str) -> dict[tuple[str, str], int]:
    """(Sparkplug datatype, table) -> values stored: the figures of the acceptance note."""
    out: dict[tuple[str, str], int] = {}
    with psycopg.connect(db) as conn:
        for table in ("samples", "samples_text", "samples_int"):
            for datatype, n in conn.execute(
                    f"SELECT t.datatype, count(*) FROM {table} s JOIN tags t USING (tag_id)"
                    " WHERE t.site_id = %s AND t.machine_id IN ('press-1-m01', 'process') AND t.name = ANY(%s)"
                    " GROUP BY 1", [site, [*EXPECTED, *PROCESS]]):
                out[(DataType(datatype).name, table)] = int(n)
    return out


def test_node_opcua_plc_browse_run_and_store_every_datatype_exactly(
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
    deadline = time.monotonic() + 90
    while True:  # node-opcua notices a changed trust list through a file watcher: seconds, a minute under load
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
    config = load_agent_config(path)
    assert config.adapters[0].chunk_size == LIMIT  # type: ignore[attr-defined]
    m01 = next(m for m in config.machines if m.id == "press-1-m01")
    signals = {s.metric: s for s in m01.signals}
    assert {name: signals[name].datatype for name in EXPECTED} == DATATYPES
    process = next(m for m in config.machines if m.id == "process")  # an object beside the machines: oee false
    assert not process.oee
    assert {s.metric: s.datatype for s in process.signals} == PROCESS_TYPES  # nothing left unmapped

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["outbox"]["dir"] = str(tmp_path / "outbox")
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    capture = Capture(mqtt_url, [f"spBv1.0/{unique_id}/#", f"spBv1.0/STATE/{host}"])
    ingest = IngestService(fresh_database, mqtt_url, host)
    ingest.start()
    env = {"ZHIZAO_OPCUA_PASSWORD": "s3cret", "ZHIZAO_TEST_PLC_PASSWORD": "s3cret"}
    agent = subprocess.Popen([sys.executable, "-m", "zhizao", "edge", "run", str(path)], cwd=ROOT,
                             env={**os.environ, **env},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wanted = {**EXPECTED, **PROCESS}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_stored_counts(fresh_database, unique_id)) < len(wanted):
            assert agent.poll() is None, agent.communicate()[0]
            time.sleep(0.2)
        first = _stored_counts(fresh_database, unique_id)
        if len(first) < len(wanted):
            agent.terminate()
            pytest.fail(f"initial values of {sorted(set(wanted) - set(first))} not stored within 60 s; agent log:\n"
                        + agent.communicate(timeout=30)[0][:5000] + "\nPLC:\n" + "\n".join(plc.lines[-30:]))
        plc.go()
        plc.wait_done()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            counts = _stored_counts(fresh_database, unique_id)
            if all(counts.get(k, 0) >= len(v) for k, v in wanted.items()):
                break
            time.sleep(0.2)
    finally:
        agent.terminate()
        log = agent.communicate(timeout=30)[0]
        ingest.stop()
        capture.close()
    series, latest = _api_values(fresh_database, unique_id)
    assert series == wanted, log[-3000:]
    for name, values in series.items():  # the types themselves, not only equal numbers (1 == 1.0 == True)
        assert [type(v) for v in values] == [type(v) for v in wanted[name]], name
    assert latest == {name: values[-1] for name, values in wanted.items()}
    # An independent decoder (pysparkplug, DATA with its birth) reads every message of the run, typed values
    # included, and agrees with our codec on each value.
    tally = decode_all([(m.topic, m.payload) for m in capture.snapshot()])
    assert tally.errors == [] and tally.mismatches == []
    assert tally.messages["DDATA"] > 0 and tally.messages["STATE"] > 0
    print(f"pysparkplug read {sum(tally.messages.values())} messages ({dict(tally.messages)}), "
          f"{tally.data_values} DATA values equal to our codec's")
    per_type = _per_type(fresh_database, unique_id)
    print("values stored per Sparkplug datatype and table:", dict(sorted(per_type.items())))
    expected_counts: dict[tuple[str, str], int] = {}
    for name, values in wanted.items():
        datatype = (DATATYPES | PROCESS_TYPES)[name] or "Double"
        expected_counts[(datatype, TABLE[name])] = expected_counts.get((datatype, TABLE[name]), 0) + len(values)
    expected_counts[("Int64", "samples_int")] = 4  # 2**63-1, -2**63, 2**53+1, -(2**53+1)
    expected_counts[("UInt64", "samples_int")] = 3  # 2**64-1, 2**53+1, 2**64-2
    assert per_type == expected_counts
    with psycopg.connect(fresh_database) as conn:
        # (the ingest also hears other tests' sites on the shared broker: only this site counts)
        dead = conn.execute("SELECT reason, count(*) FROM dead_letters WHERE topic LIKE %s GROUP BY 1",
                            [f"spBv1.0/{unique_id}/%"]).fetchall()
        held = conn.execute("SELECT reason, count(*) FROM quarantine JOIN tags USING (tag_id) WHERE site_id = %s"
                            " GROUP BY 1", [unique_id]).fetchall()
    assert dead == [] and held == []
