"""Walk an OPC UA server's address space and write starter agent configs (`zhizao edge browse URL`).

Recognises PackML-style machines: an object with variables `State` and `ProdProcessedCount` (and optionally
`StopReason`, `ProdDefectiveCount`, `MachSpeed`, `CurMachSpeed`) becomes a machine with the OEE signals;
its other variables become process signals named by their path below the machine (`Temperature/Spindle`).
Objects that are not machines but hold variables become `oee: false` machines, named by their folder path
below their line so that 125 `meter1` objects in different folders stay 125 machines.

Machines are grouped into lines (the object that holds them): one agent config per line, edge node = the
line, site = the folder above it. The walk honours the server's OperationLimits (MaxNodesPerRead and
MaxNodesPerBrowse) and the same channel security as the adapter (`SecurityConfig`).

Every built-in type is mapped (table in CONNECTING.md): numbers, DateTime, Guid, enumerations as their Int32 code,
StatusCode as its UInt32 code, ByteString as Bytes, NodeId/QualifiedName/XmlElement as their strings, and as
JSON documents (Sparkplug Text) LocalizedText, structures and matrices; one-dimensional arrays to the Sparkplug
array datatypes. Variables the agent cannot carry (BaseDataType, DataValue, DiagnosticInfo) are listed with the
reason (`BrowseResult.skipped`), and the CLI writes that list into the config's header.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaStatusCodeError

from zhizao.edge.adapters.opcua.adapter import _mapped, secure_client
from zhizao.edge.adapters.opcua.config import SecurityConfig

__all__ = ["BrowseResult", "BrowsedObject", "Line", "Skipped", "browse", "group_lines", "starter_config"]

PACKML_TAGS = ("State", "StopReason", "ProdProcessedCount", "ProdDefectiveCount", "MachSpeed", "CurMachSpeed",
               "MachDesignSpeed")
DEFAULT_CHUNK = 1000
DEFAULT_PRIMARY_HOST = "zhizao-cloud"  # the cloud's default Sparkplug host id (ZHIZAO_HOST_ID)

# OPC UA built-in DataType node ids (ns=0) -> the Sparkplug datatype we publish (edge/adapters/opcua/CONNECTING.md).
_TYPES: dict[int, str] = {
    ObjectIds.Boolean: "Boolean", ObjectIds.SByte: "Int8", ObjectIds.Byte: "UInt8", ObjectIds.Int16: "Int16",
    ObjectIds.UInt16: "UInt16", ObjectIds.Int32: "Int32", ObjectIds.UInt32: "UInt32", ObjectIds.Int64: "Int64",
    ObjectIds.UInt64: "UInt64", ObjectIds.Float: "Float", ObjectIds.Double: "Double", ObjectIds.String: "String",
    ObjectIds.Number: "Double", ObjectIds.Integer: "Int64", ObjectIds.UInteger: "UInt64",
    ObjectIds.Enumeration: "Int32",  # an enumeration's value is its Int32 code
    ObjectIds.DateTime: "DateTime",  # epoch milliseconds (Sparkplug's resolution)
    ObjectIds.LocalizedText: "Text",  # JSON {"locale": .., "text": ..}
    ObjectIds.Guid: "UUID",
    ObjectIds.ByteString: "Bytes",  # the bytes (base64 in the cloud)
    ObjectIds.StatusCode: "UInt32",  # the code
    ObjectIds.NodeId: "String", ObjectIds.ExpandedNodeId: "String",  # "ns=2;s=Foo"
    ObjectIds.QualifiedName: "String",  # "2:Name"
    ObjectIds.XmlElement: "String",  # the XML text
    ObjectIds.Structure: "Text",  # JSON object of its fields (decoded with the server's type definitions)
}
# One-dimensional arrays: the Sparkplug array datatype of each element type (Text: a JSON array).
_ARRAYS: dict[str, str] = {
    "Int8": "Int8Array", "Int16": "Int16Array", "Int32": "Int32Array", "Int64": "Int64Array", "UInt8": "UInt8Array",
    "UInt16": "UInt16Array", "UInt32": "UInt32Array", "UInt64": "UInt64Array", "Float": "FloatArray",
    "Double": "DoubleArray", "Boolean": "BooleanArray", "String": "StringArray", "UUID": "StringArray",
    "DateTime": "DateTimeArray", "Bytes": "StringArray", "Text": "Text",
}
# Built-in types the agent does not carry, with the reason written into the config header.
_NOT_CARRIED: dict[int, str] = {
    ObjectIds.BaseDataType: "BaseDataType (any type)", ObjectIds.DataValue: "DataValue",
    ObjectIds.DiagnosticInfo: "DiagnosticInfo",
}
_SCALAR_RANKS = (-1, -3, -2)  # Scalar, ScalarOrOneDimension, Any: scalars in practice


@dataclass
class BrowsedObject:
    """An object of the address space with the variables found below it (path below the object -> node)."""

    path: tuple[str, ...]
    variables: dict[str, tuple[str, str]] = field(default_factory=dict)  # name path -> (node id, datatype)

    def is_packml(self) -> bool:
        """True when it looks like a PackML machine."""
        return "State" in self.variables and "ProdProcessedCount" in self.variables


@dataclass(frozen=True)
class Skipped:
    """A variable that was found but not mapped, and why."""

    path: str
    node_id: str
    why: str


@dataclass
class BrowseResult:
    """What a walk found: objects with variables, variables left out (with the reason), the server's limits."""

    objects: list[BrowsedObject]
    skipped: list[Skipped] = field(default_factory=list)
    max_nodes_per_read: int = DEFAULT_CHUNK
    max_nodes_per_browse: int = DEFAULT_CHUNK


@dataclass
class Line:
    """The machines of one agent config: the objects below one line object."""

    path: tuple[str, ...]
    objects: list[BrowsedObject]


async def browse(url: str, *, max_nodes: int = 100_000, username: str | None = None,
                 password: str | None = None, security: SecurityConfig | None = None,
                 timeout_s: float = 10.0) -> BrowseResult:
    """Walk the Objects folder (skipping the standard namespace) and return the objects that hold variables."""
    client = Client(url, timeout=timeout_s)
    client.name = client.description = "zhizao edge browse"
    if username is not None:
        client.set_user(username)
    if password is not None:
        client.set_password(password)
    with _mapped(f"browse {url}"):
        if security is not None and security.mode != "None":
            await secure_client(client, security)
        await client.connect()
        try:
            return await _walk(client, max_nodes)
        finally:
            await client.disconnect()


async def _limits(client: Client) -> tuple[int, int]:
    """MaxNodesPerRead and MaxNodesPerBrowse (0 or unreadable: our default)."""
    ids = [ua.NodeId(ua.Int32(ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)),
           ua.NodeId(ua.Int32(ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse))]
    out = [DEFAULT_CHUNK, DEFAULT_CHUNK]
    try:
        results = await client.uaclient.read_attributes(ids, AttributeIds.Value)
    except UaStatusCodeError:
        return out[0], out[1]  # a server without OperationLimits
    for k, dv in enumerate(results):
        if dv.StatusCode is not None and dv.StatusCode.is_good() and dv.Value is not None:
            limit = dv.Value.Value
            if isinstance(limit, int) and limit > 0:
                out[k] = min(out[k], limit)
    return out[0], out[1]


async def _read(client: Client, ids: list[ua.NodeId], attribute: int, chunk: int) -> list[ua.DataValue]:
    values: list[ua.DataValue] = []
    for start in range(0, len(ids), chunk):
        values.extend(await client.uaclient.read_attributes(ids[start:start + chunk], attribute))
    return values


async def _children(client: Client, nodes: list[ua.NodeId], chunk: int) -> list[list[ua.ReferenceDescription]]:
    """Hierarchical children of many nodes, `chunk` nodes per Browse call, following continuation points."""
    out: list[list[ua.ReferenceDescription]] = []
    for start in range(0, len(nodes), chunk):
        params = ua.BrowseParameters()
        params.View = ua.ViewDescription()
        params.RequestedMaxReferencesPerNode = 0
        for nid in nodes[start:start + chunk]:
            desc = ua.BrowseDescription()
            desc.NodeId = nid
            desc.BrowseDirection = ua.BrowseDirection.Forward
            desc.ReferenceTypeId = ua.NodeId(ua.Int32(ObjectIds.HierarchicalReferences))
            desc.IncludeSubtypes = True
            desc.NodeClassMask = int(ua.NodeClass.Object) | int(ua.NodeClass.Variable)
            desc.ResultMask = int(ua.BrowseResultMask.All)
            params.NodesToBrowse.append(desc)
        for result in await client.uaclient.browse(params):
            result.StatusCode.check()
            refs = list(result.References)
            cont = result.ContinuationPoint
            while cont:
                nxt = ua.BrowseNextParameters()
                nxt.ContinuationPoints = [cont]
                more = (await client.uaclient.browse_next(nxt))[0]
                more.StatusCode.check()
                refs.extend(more.References)
                cont = more.ContinuationPoint
            out.append(refs)
    return out


async def _walk(client: Client, max_nodes: int) -> BrowseResult:
    per_read, per_browse = await _limits(client)
    variables: list[tuple[tuple[str, ...], str, ua.NodeId]] = []  # (owner object path, name path, node)
    queue: deque[tuple[ua.NodeId, tuple[str, ...], tuple[str, ...] | None]] = deque()
    queue.append((client.nodes.objects.nodeid, (), None))
    seen = 0
    while queue and seen < max_nodes:
        batch = [queue.popleft() for _ in range(min(per_browse, len(queue)))]
        for (_, path, owner), refs in zip(batch, await _children(client, [b[0] for b in batch], per_browse),
                                          strict=True):
            for ref in refs:
                nid = ref.NodeId
                if nid.NamespaceIndex == 0:
                    continue  # the standard address space (Server object, types): not device data
                seen += 1
                name = str(ref.BrowseName.Name)
                if ref.NodeClass == ua.NodeClass.Object:
                    queue.append((nid, (*path, name), None))
                elif ref.NodeClass == ua.NodeClass.Variable:
                    obj = owner if owner is not None else path
                    variables.append((obj, "/".join((*path[len(obj):], name)), nid))
                    queue.append((nid, (*path, name), obj))  # variables may have child variables
    ids = [v[2] for v in variables]
    types = await _read(client, ids, AttributeIds.DataType, per_read)
    ranks = await _read(client, ids, AttributeIds.ValueRank, per_read)
    kinds = _TypeResolver(client, per_browse)
    objects: dict[tuple[str, ...], BrowsedObject] = {}
    skipped: list[Skipped] = []
    for (obj, name, nid), dv, rank_dv in zip(variables, types, ranks, strict=True):
        where = "/".join((*obj, name))
        dtype = dv.Value.Value if dv.Value is not None else None
        rank = rank_dv.Value.Value if rank_dv.Value is not None else -1
        if not isinstance(dtype, ua.NodeId):
            skipped.append(Skipped(where, nid.to_string(), "no readable DataType"))
            continue
        kind, why = await kinds.resolve(dtype)
        if kind is None:
            skipped.append(Skipped(where, nid.to_string(), f"{why}: not carried"))
            continue
        if isinstance(rank, int) and rank not in _SCALAR_RANKS:
            # one dimension: the Sparkplug array datatype; a matrix (ValueRank 0 or >= 2): nested JSON arrays
            kind = _ARRAYS[kind] if rank == 1 else "Text"
        objects.setdefault(obj, BrowsedObject(obj)).variables[name] = (nid.to_string(), kind)
    found = _fold_into_machines([o for o in objects.values() if o.variables])
    return BrowseResult(found, skipped, per_read, per_browse)


class _TypeResolver:
    """DataType node -> (published datatype, None) or (None, why), following HasSubtype up to a built-in."""

    def __init__(self, client: Client, chunk: int) -> None:
        self.client = client
        self.chunk = chunk
        self.cache: dict[ua.NodeId, tuple[str | None, str]] = {}

    async def resolve(self, dtype: ua.NodeId) -> tuple[str | None, str]:
        if dtype in self.cache:
            return self.cache[dtype]
        chain: list[ua.NodeId] = []
        node: ua.NodeId | None = dtype
        answer: tuple[str | None, str] = (None, f"DataType {dtype.to_string()}")
        while node is not None and len(chain) < 16:
            if node in self.cache:
                answer = self.cache[node]
                break
            chain.append(node)
            ident = node.Identifier if node.NamespaceIndex == 0 else None
            if isinstance(ident, int) and ident in _TYPES:
                answer = (_TYPES[ident], "")
                break
            if isinstance(ident, int) and ident in _NOT_CARRIED:
                answer = (None, _NOT_CARRIED[ident])
                break
            node = await self._supertype(node)
        for n in chain:
            self.cache[n] = answer
        return answer

    async def _supertype(self, node: ua.NodeId) -> ua.NodeId | None:
        params = ua.BrowseParameters()
        params.View = ua.ViewDescription()
        desc = ua.BrowseDescription()
        desc.NodeId = node
        desc.BrowseDirection = ua.BrowseDirection.Inverse
        desc.ReferenceTypeId = ua.NodeId(ua.Int32(ObjectIds.HasSubtype))
        desc.IncludeSubtypes = True
        desc.ResultMask = int(ua.BrowseResultMask.All)
        params.NodesToBrowse.append(desc)
        result = (await self.client.uaclient.browse(params))[0]
        if not result.StatusCode.is_good() or not result.References:
            return None
        parent: ua.NodeId = result.References[0].NodeId
        return parent


def _fold_into_machines(objects: list[BrowsedObject]) -> list[BrowsedObject]:
    """Objects below a PackML machine (folders such as Temperature/) belong to it: their variables join it."""
    machines = sorted((o for o in objects if o.is_packml()), key=lambda o: -len(o.path))
    out: list[BrowsedObject] = []
    for obj in objects:
        owner = next((m for m in machines if m is not obj and obj.path[:len(m.path)] == m.path), None)
        if owner is None or obj.is_packml():
            out.append(obj)
            continue
        prefix = "/".join(obj.path[len(owner.path):])
        for name, node in obj.variables.items():
            owner.variables.setdefault(f"{prefix}/{name}", node)
    return out


def group_lines(objects: list[BrowsedObject]) -> list[Line]:
    """One line per object that holds PackML machines; other objects join the line whose path they share
    most of, or a line of their own top folder when they share none."""
    lines: dict[tuple[str, ...], list[BrowsedObject]] = {}
    for obj in objects:
        if obj.is_packml():
            lines.setdefault(obj.path[:-1], []).append(obj)
    for obj in objects:
        if obj.is_packml():
            continue
        best: tuple[str, ...] | None = None
        for path in lines:
            if path and obj.path[:len(path)] == path and (best is None or len(path) > len(best)):
                best = path
        if best is None:
            best = obj.path[:1] if len(obj.path) > 1 else ()
            lines.setdefault(best, [])
        lines[best].append(obj)
    return [Line(path, objs) for path, objs in sorted(lines.items())]


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s or "x"


def _metric(name: str) -> str:
    parts = [re.sub(r"[^A-Za-z0-9_ .:-]+", "_", p).strip() or "_" for p in name.split("/")]
    return "/".join(p if p[0].isalnum() or p[0] == "_" else "_" + p for p in parts)


def line_ids(line: Line, *, site: str | None = None, edge_node: str | None = None) -> tuple[str, str]:
    """(site, edge node) of a line's config: the options when given, else from its path (site/line)."""
    path = line.path
    return (site or (_slug(path[-2]) if len(path) >= 2 else "site"),
            edge_node or (_slug(path[-1]) if path else "edge"))


def _machine_ids(line: Line) -> list[str]:
    """Ids from the path below the line; the shortest tail of the path that is unique within the line."""
    rel = [o.path[len(line.path):] or o.path[-1:] or ("objects",) for o in line.objects]
    ids: list[str] = []
    for parts in rel:
        for depth in range(1, len(parts) + 1):
            cand = _slug("-".join(parts[-depth:]))
            clash = sum(1 for other in rel if _slug("-".join(other[-depth:])) == cand)
            if clash == 1 or depth == len(parts):
                ids.append(cand)
                break
    used: set[str] = set()
    out = []
    for base in ids:
        mid, n = base, 2
        while mid in used:
            mid, n = f"{base}-{n}", n + 1
        used.add(mid)
        out.append(mid)
    return out


def starter_config(line: Line | list[BrowsedObject], endpoint: str, *, site: str | None = None,
                   edge_node: str | None = None, mqtt_url: str = "mqtt://127.0.0.1:1883",
                   security: dict[str, Any] | None = None,
                   primary_host: str | None = DEFAULT_PRIMARY_HOST,
                   chunk_size: int = DEFAULT_CHUNK) -> dict[str, Any]:
    """An agent config (a YAML-ready dict) for one line's objects; PackML machines first."""
    if not isinstance(line, Line):
        line = Line(_common_prefix([o.path[:-1] for o in line]), list(line))
    site, edge_node = line_ids(line, site=site, edge_node=edge_node)
    ordered = sorted(zip(line.objects, _machine_ids(line), strict=True), key=lambda p: (not p[0].is_packml(), p[1]))
    machines: list[dict[str, Any]] = [
        {"id": mid, "adapter": "opcua", **({} if obj.is_packml() else {"oee": False}), "signals": _signals(obj)}
        for obj, mid in ordered
    ]
    sparkplug: dict[str, Any] = {"publish_interval_ms": 250}
    if primary_host:
        sparkplug["primary_host"] = primary_host
    return {
        "site": site,
        "edge_node": edge_node,
        "mqtt": {"url": mqtt_url},
        "sparkplug": sparkplug,
        # The site in the path: two sites' agents with the same line id on one host do not share an outbox.
        "outbox": {"dir": f".zhizao/edge/{site}/{edge_node}/outbox"},
        "adapters": [{
            "type": "opcua", "name": "opcua", "endpoint": endpoint,
            # None = plaintext: set Sign/SignAndEncrypt with certificates for production servers.
            "security": security or {"mode": "None"},
            "chunk_size": chunk_size,
            "subscription": {"publishing_interval_ms": 250, "sampling_interval_ms": 100, "queue_size": 100},
        }],
        "machines": machines,
    }


def _common_prefix(paths: list[tuple[str, ...]]) -> tuple[str, ...]:
    if not paths:
        return ()
    first = paths[0]
    n = 0
    while n < len(first) and all(len(p) > n and p[n] == first[n] for p in paths):
        n += 1
    return first[:n]


def _signals(obj: BrowsedObject) -> list[dict[str, Any]]:
    v = obj.variables
    out: list[dict[str, Any]] = []
    taken: set[str] = set()
    if obj.is_packml():
        state: dict[str, Any] = {"metric": "State", "node_id": v["State"][0], "map": "packml_state"}
        if "StopReason" in v:
            state["stop_reason_node_id"] = v["StopReason"][0]
        out.append(state)
        out.append({"metric": "Counts/Total", "node_id": v["ProdProcessedCount"][0], "map": "counter"})
        if "ProdDefectiveCount" in v:
            out.append({"metric": "Counts/Good", "node_id": v["ProdProcessedCount"][0], "map": "good_counter",
                        "defective_node_id": v["ProdDefectiveCount"][0]})
        else:  # no reject count: every part counts as good
            out.append({"metric": "Counts/Good", "node_id": v["ProdProcessedCount"][0], "map": "counter"})
        # The ideal rate is the design speed when the machine has one; MachSpeed is then the setpoint.
        speeds = (("MachDesignSpeed", "Rate/Ideal"), ("MachSpeed", "Rate/Setpoint")) if "MachDesignSpeed" in v \
            else (("MachSpeed", "Rate/Ideal"),)
        for tag, metric in (*speeds, ("CurMachSpeed", "Rate/Current")):
            if tag in v:
                out.append({"metric": metric, "node_id": v[tag][0]})
        taken = set(PACKML_TAGS) | {"Counts/Total", "Counts/Good", "Rate/Ideal", "Rate/Current", "Rate/Setpoint"}
    seen_ci = {m.casefold() for m in taken}
    for name, (nid, kind) in sorted(v.items()):
        if name in taken:
            continue
        metric = _metric(name)
        if metric.casefold() in seen_ci:
            continue  # would clash with another metric differing only in case
        seen_ci.add(metric.casefold())
        sig: dict[str, Any] = {"metric": metric, "node_id": nid}
        if kind != "Double":
            sig["datatype"] = kind
        out.append(sig)
    return out
