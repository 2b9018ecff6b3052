"""`zhizao edge browse` against a PLC-like server: small OperationLimits it enforces, two lines at two sites,
folders of same-named meters, every scalar built-in type, arrays, an enumeration, a SignAndEncrypt endpoint."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asyncua import Server, ua
from asyncua.common.structures104 import new_enum, new_struct, new_struct_field
from asyncua.server.internal_session import InternalSession
from click.testing import CliRunner

from tests.support.simserver import ServerThread, SimServer, free_port
from zhizao.edge.cli import edge
from zhizao.edge.config import load_agent_config

LIMIT = 100
MACHINES = ["sh-lingang/cnc-1/cnc-1-m01", "js-suzhou/asm-1/asm-1-m01"]
HALLS, METERS = 2, 60  # 120 meter objects, named meter1..meter60 in each hall folder
TYPED = {  # variable -> (initial value, variant type, Sparkplug datatype in the config; None: Double, the default)
    "Int16": (-7, ua.VariantType.Int16, "Int16"), "UInt16": (7, ua.VariantType.UInt16, "UInt16"),
    "UInt32": (4_000_000_000, ua.VariantType.UInt32, "UInt32"), "Int64": (2**60, ua.VariantType.Int64, "Int64"),
    "UInt64": (2**64 - 1, ua.VariantType.UInt64, "UInt64"), "SByte": (-3, ua.VariantType.SByte, "Int8"),
    "Float": (1.5, ua.VariantType.Float, "Float"), "Bool": (True, ua.VariantType.Boolean, "Boolean"),
    "Text": ("hello", ua.VariantType.String, "String"), "Byte": (3, ua.VariantType.Byte, "UInt8"),
    "Double": (2.5, ua.VariantType.Double, None),
    "Stamp": (datetime(2026, 1, 1, tzinfo=UTC), ua.VariantType.DateTime, "DateTime"),
    "Label": (ua.LocalizedText("Spindel", "de"), ua.VariantType.LocalizedText, "Text"),  # JSON {locale, text}
    "Id": (uuid.UUID("12345678-1234-5678-9abc-def012345678"), ua.VariantType.Guid, "UUID"),
    "Blob": (b"\x00\x01zhi", ua.VariantType.ByteString, "Bytes"),
    "Ref": (ua.NodeId("Line1.M01", 2), ua.VariantType.NodeId, "String"),
    "Far": (ua.ExpandedNodeId(42, 3), ua.VariantType.ExpandedNodeId, "String"),
    "QName": (ua.QualifiedName("Spindle", 2), ua.VariantType.QualifiedName, "String"),
    "Code": (ua.StatusCode(ua.StatusCodes.BadOutOfRange), ua.VariantType.StatusCode, "UInt32"),
    "Xml": (ua.XmlElement("<tool id='7'>drill</tool>"), ua.VariantType.XmlElement, "String"),
}
# What the adapter carries for each (side-lane text, or the float64 value), the same on both decode paths.
CARRIED: dict[str, str | float] = {
    "Label": '{"locale":"de","text":"Spindel"}', "Blob": "AAF6aGk=", "Ref": "ns=2;s=Line1.M01", "Far": "ns=3;i=42",
    "QName": "2:Spindle", "Code": float(ua.StatusCodes.BadOutOfRange), "Xml": "<tool id='7'>drill</tool>",
    "Matrix": "[[1.0,2.0,3.0],[4.0,5.0,6.0]]", "Setup": '{"Tool":"T1","Offset":0.25,"Count":3,"Mode":1}',
    "Setups": '[{"Tool":"a","Offset":1.0,"Count":1,"Mode":0},{"Tool":"b","Offset":2.0,"Count":2,"Mode":2}]',
    "Labels": '[{"locale":"en","text":"a"},{"locale":"","text":"b"}]',
}
ARRAYS = {  # one-dimensional arrays -> the Sparkplug array datatypes
    "Profile": ([1.0, 2.0, 3.0], ua.VariantType.Double, "DoubleArray"),
    "Codes": ([1, 2], ua.VariantType.Int32, "Int32Array"), "Names": (["a", "b"], ua.VariantType.String, "StringArray"),
    "Flags": ([True, False], ua.VariantType.Boolean, "BooleanArray"),
    "Stamps": ([datetime(2026, 1, 1, tzinfo=UTC)], ua.VariantType.DateTime, "DateTimeArray"),
    "Labels": ([ua.LocalizedText("a", "en"), ua.LocalizedText("b")], ua.VariantType.LocalizedText, "Text"),
}
NOT_MAPPED = {"Any": "BaseDataType"}


CALLS: list[tuple[str, int]] = []  # (service, nodes) of every Read and Browse the server received


def _limited(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a PLC with small OperationLimits does: refuse a Read or Browse of more than LIMIT nodes."""
    read, browse = InternalSession.read, InternalSession.browse

    async def limited_read(self: InternalSession, params: ua.ReadParameters) -> list[ua.DataValue]:
        CALLS.append(("read", len(params.NodesToRead)))
        if len(params.NodesToRead) > LIMIT:
            raise ua.UaStatusCodeError(ua.StatusCodes.BadTooManyOperations)
        return await read(self, params)

    async def limited_browse(self: InternalSession, params: ua.BrowseParameters) -> Any:
        CALLS.append(("browse", len(params.NodesToBrowse)))
        if len(params.NodesToBrowse) > LIMIT:
            raise ua.UaStatusCodeError(ua.StatusCodes.BadTooManyOperations)
        return await browse(self, params)

    monkeypatch.setattr(InternalSession, "read", limited_read)
    monkeypatch.setattr(InternalSession, "browse", limited_browse)


async def _plc(server: Server, idx: int, sim: SimServer) -> None:
    limits = server.get_node(ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits))
    for name in ("MaxNodesPerRead", "MaxNodesPerBrowse"):
        node = await limits.get_child(f"0:{name}")
        await node.write_value(ua.Variant(LIMIT, ua.VariantType.UInt32))
    machine = server.get_node(ua.NodeId("sh-lingang/cnc-1/cnc-1-m01", idx))
    for name, (value, vtype, _) in TYPED.items():
        await machine.add_variable(ua.NodeId(f"cnc-1-m01/{name}", idx), ua.QualifiedName(name, idx),
                                   ua.Variant(value, vtype))
    for name, (value, vtype, _) in ARRAYS.items():
        arr = await machine.add_variable(ua.NodeId(f"cnc-1-m01/{name}", idx), ua.QualifiedName(name, idx),
                                         ua.Variant(value, vtype))
        await arr.write_value_rank(1)
    await machine.add_variable(ua.NodeId("cnc-1-m01/Any", idx), ua.QualifiedName("Any", idx),
                               ua.Variant(1.5, ua.VariantType.Double), datatype=ua.NodeId(ua.ObjectIds.BaseDataType))
    matrix = await machine.add_variable(
        ua.NodeId("cnc-1-m01/Matrix", idx), ua.QualifiedName("Matrix", idx),
        ua.Variant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], ua.VariantType.Double, Dimensions=[2, 3]))
    await matrix.write_value_rank(2)
    await matrix.write_array_dimensions([2, 3])
    mode = await new_enum(server, idx, "OperationMode", ["Manual", "Auto", "Setup"])
    # A structure of the server's own type (a string, a double, an integer and an enumeration field)
    setup, _ = await new_struct(server, idx, "ToolSetup", [
        new_struct_field("Tool", ua.VariantType.String), new_struct_field("Offset", ua.VariantType.Double),
        new_struct_field("Count", ua.VariantType.Int32), new_struct_field("Mode", mode)])
    await server.load_data_type_definitions()
    kind: Any = ua.ToolSetup  # type: ignore[attr-defined]  # made by load_data_type_definitions
    await machine.add_variable(ua.NodeId("cnc-1-m01/Setup", idx), ua.QualifiedName("Setup", idx),
                               ua.Variant(kind(Tool="T1", Offset=0.25, Count=3, Mode=1), ua.VariantType.ExtensionObject),
                               datatype=setup.nodeid)
    many = await machine.add_variable(
        ua.NodeId("cnc-1-m01/Setups", idx), ua.QualifiedName("Setups", idx),
        ua.Variant([kind(Tool="a", Offset=1.0, Count=1, Mode=0), kind(Tool="b", Offset=2.0, Count=2, Mode=2)],
                   ua.VariantType.ExtensionObject), datatype=setup.nodeid)
    await many.write_value_rank(1)
    var = await machine.add_variable(ua.NodeId("cnc-1-m01/Mode", idx), ua.QualifiedName("Mode", idx),
                                     ua.Variant(1, ua.VariantType.Int32), datatype=mode.nodeid)
    assert var is not None
    util = await server.nodes.objects.add_folder(ua.NodeId("utilities", idx), ua.QualifiedName("utilities", idx))
    for h in range(1, HALLS + 1):
        hall = await util.add_folder(ua.NodeId(f"utilities/hall{h}", idx), ua.QualifiedName(f"hall{h}", idx))
        for m in range(1, METERS + 1):
            meter = await hall.add_object(ua.NodeId(f"utilities/hall{h}/meter{m}", idx),
                                          ua.QualifiedName(f"meter{m}", idx))
            await meter.add_variable(ua.NodeId(f"utilities/hall{h}/meter{m}/Power", idx),
                                     ua.QualifiedName("Power", idx), ua.Variant(0.0, ua.VariantType.Double))


@pytest.fixture()
def plc(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerThread]:
    _limited(monkeypatch)
    CALLS.clear()
    srv = ServerThread(machines=MACHINES, port=free_port(), extend=_plc)
    try:
        yield srv
    finally:
        srv.close()


def test_browse_writes_one_config_per_line_within_the_limits(plc: ServerThread, tmp_path: Path) -> None:
    out = tmp_path / "agents"
    result = CliRunner().invoke(edge, ["browse", plc.url, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert CALLS and max(n for _, n in CALLS) <= LIMIT
    files = sorted(p.name for p in out.glob("*.yaml"))
    assert files == ["js-suzhou-asm-1.yaml", "sh-lingang-cnc-1.yaml", "site-utilities.yaml"], files
    for name in files:
        check = CliRunner().invoke(edge, ["check-config", str(out / name)])
        assert check.exit_code == 0, check.output

    cnc = load_agent_config(out / "sh-lingang-cnc-1.yaml")
    assert (cnc.site, cnc.edge_node) == ("sh-lingang", "cnc-1")
    assert str(cnc.outbox.dir) == ".zhizao/edge/sh-lingang/cnc-1/outbox"
    assert cnc.sparkplug.primary_host == "zhizao-cloud"
    assert cnc.adapters[0].chunk_size == LIMIT  # type: ignore[attr-defined]
    signals = {s.metric: s for s in cnc.machines[0].signals}
    for name, (_, _, datatype) in (TYPED | ARRAYS).items():
        assert signals[name].datatype == datatype, name
    assert signals["Mode"].datatype == "Int32"  # the enumeration's Int32 code
    assert (signals["Matrix"].datatype, signals["Setup"].datatype, signals["Setups"].datatype) == ("Text",) * 3
    for name in NOT_MAPPED:
        assert name not in signals
    header = (out / "sh-lingang-cnc-1.yaml").read_text(encoding="utf-8").split("\nsite:")[0]
    for name, why in NOT_MAPPED.items():
        line = next(x for x in header.splitlines() if f"cnc-1-m01/{name} " in x)
        assert why in line, line
    assert f"MaxNodesPerRead {LIMIT}" in header

    asm = load_agent_config(out / "js-suzhou-asm-1.yaml")
    assert (asm.site, asm.edge_node, [m.id for m in asm.machines]) == ("js-suzhou", "asm-1", ["asm-1-m01"])
    assert str(asm.outbox.dir) == ".zhizao/edge/js-suzhou/asm-1/outbox"

    util = load_agent_config(out / "site-utilities.yaml")
    ids = [m.id for m in util.machines]
    assert len(ids) == HALLS * METERS == len(set(ids))
    assert "hall1-meter1" in ids and "hall2-meter1" in ids


def test_browse_one_line_to_a_file_and_a_clear_error_for_several(plc: ServerThread, tmp_path: Path) -> None:
    one = tmp_path / "cnc.yaml"
    result = CliRunner().invoke(edge, ["browse", plc.url, "--under", "sh-lingang/cnc-1", "--out", str(one)])
    assert result.exit_code == 0, result.output
    assert load_agent_config(one).edge_node == "cnc-1"
    many = CliRunner().invoke(edge, ["browse", plc.url, "--out", str(tmp_path / "all.yaml")])
    assert many.exit_code == 1
    assert "3 lines" in many.output and "give a directory" in many.output


def test_browse_over_a_sign_and_encrypt_only_endpoint(certs: dict[str, Path], tmp_path: Path) -> None:
    srv = ServerThread(port=free_port(), security=(certs["server_cert"], certs["server_key"]),
                       users=("edge", "s3cret"))
    try:
        out = tmp_path / "secure.yaml"
        plain = CliRunner().invoke(edge, ["browse", srv.url, "--out", str(out)])
        assert plain.exit_code == 1 and "cannot browse" in plain.output
        args = ["browse", srv.url, "--out", str(out), "--security-mode", "SignAndEncrypt",
                "--certificate", str(certs["client_cert"]), "--private-key", str(certs["client_key"]),
                "--server-certificate", str(certs["server_cert"]), "--username", "edge",
                "--password-env", "ZHIZAO_TEST_OPCUA_PASSWORD"]
        result = CliRunner(env={"ZHIZAO_TEST_OPCUA_PASSWORD": "s3cret"}).invoke(edge, args)
        assert result.exit_code == 0, result.output
    finally:
        srv.close()
    config = load_agent_config(out)
    sec = config.adapters[0].security  # type: ignore[attr-defined]
    assert (sec.mode, sec.username, sec.password_env) == ("SignAndEncrypt", "edge", "ZHIZAO_TEST_OPCUA_PASSWORD")
    assert sec.certificate == certs["client_cert"]
    assert [m.id for m in config.machines] == ["cnc-1-m01", "cnc-1-m02"]


@pytest.mark.parametrize("fast_decode", [True, False])
def test_the_browsed_types_are_carried_with_their_canonical_values(
    plc: ServerThread, tmp_path: Path, fast_decode: bool
) -> None:
    """edge run's adapter on the browsed signals: LocalizedText with its locale, ByteString, NodeId,
    QualifiedName, StatusCode, XmlElement, a matrix and structures (decoded with the server's definitions)."""
    import asyncio

    from tests.support.simserver import Collector, adapter_config
    from zhizao.broker.sparkplug.datatypes import DataType
    from zhizao.edge.adapters.opcua import OpcUaAdapter
    from zhizao.edge.samples import Signal, SignalTable

    one = tmp_path / "cnc.yaml"
    assert CliRunner().invoke(edge, ["browse", plc.url, "--under", "sh-lingang/cnc-1", "--out", str(one)]).exit_code == 0
    signals = {s.metric: s for s in load_agent_config(one).machines[0].signals if s.metric in CARRIED}
    assert set(signals) == set(CARRIED)
    table = SignalTable()
    for name in CARRIED:
        table.add(Signal("cnc-1-m01", signals[name].node_id, int(DataType[signals[name].published_datatype()])))
    sink = Collector()
    adapter = OpcUaAdapter(adapter_config(plc.url, fast_decode=fast_decode), table, sink, sink.on_device_state)

    async def scenario() -> None:
        await adapter.connect()
        task = asyncio.create_task(adapter.run())
        try:
            await sink.wait_for(lambda: len(sink.all()) >= len(CARRIED))
        finally:
            task.cancel()
            await adapter.close()

    asyncio.run(scenario())
    got = sink.all()
    text = dict(got.text)
    carried = {name: text[k] if k in text else float(got.value[k]) for k, name in
               ((int(np.flatnonzero(got.signal == i)[0]), name) for i, name in enumerate(CARRIED))}
    assert carried == CARRIED
