"""Walk an OPC UA server's address space and write a starter agent config (`zhizao edge browse URL`).

Recognises PackML-style machines: an object with variables `State` and `ProdProcessedCount` (and optionally
`StopReason`, `ProdDefectiveCount`, `MachSpeed`, `CurMachSpeed`) becomes a machine with the OEE signals;
its other numeric, boolean or string variables become process signals named by their path below the machine
(`Temperature/Spindle`). Objects that are not machines but hold variables become `oee: false` machines.
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

from zhizao.edge.adapters.opcua.adapter import _mapped

__all__ = ["BrowsedObject", "browse", "starter_config"]

PACKML_TAGS = ("State", "StopReason", "ProdProcessedCount", "ProdDefectiveCount", "MachSpeed", "CurMachSpeed",
               "MachDesignSpeed")
# OPC UA built-in DataType node ids (ns=0) -> the datatype we publish.
_TYPES = {1: "Boolean", 2: "Double", 3: "Double", 4: "Double", 5: "Double", 6: "Double", 7: "Double", 8: "Double",
          9: "Double", 10: "Double", 11: "Double", 12: "String"}


@dataclass
class BrowsedObject:
    """An object of the address space with the variables found below it (path below the object -> node)."""

    path: tuple[str, ...]
    variables: dict[str, tuple[str, str]] = field(default_factory=dict)  # name path -> (node id, datatype)

    def is_packml(self) -> bool:
        """True when it looks like a PackML machine."""
        return "State" in self.variables and "ProdProcessedCount" in self.variables


async def browse(url: str, *, max_nodes: int = 100_000, username: str | None = None,
                 password: str | None = None, timeout_s: float = 10.0) -> list[BrowsedObject]:
    """Walk the Objects folder (skipping the Server object) and return objects that hold variables."""
    client = Client(url, timeout=timeout_s)
    client.name = client.description = "zhizao edge browse"
    if username is not None:
        client.set_user(username)
    if password is not None:
        client.set_password(password)
    with _mapped(f"browse {url}"):
        await client.connect()
        try:
            return await _walk(client, max_nodes)
        finally:
            await client.disconnect()


async def _walk(client: Client, max_nodes: int) -> list[BrowsedObject]:
    objects: dict[tuple[str, ...], BrowsedObject] = {}
    variables: list[tuple[tuple[str, ...], str, ua.NodeId]] = []  # (owner object path, name path, node)
    queue: deque[tuple[Any, tuple[str, ...], tuple[str, ...] | None]] = deque()
    queue.append((client.nodes.objects, (), None))
    seen = 0
    while queue and seen < max_nodes:
        node, path, owner = queue.popleft()
        for ref in await node.get_children_descriptions(refs=ObjectIds.HierarchicalReferences):
            nid = ref.NodeId
            if nid.NamespaceIndex == 0:
                continue  # the standard address space (Server object, types): not device data
            seen += 1
            name = str(ref.BrowseName.Name)
            child = client.get_node(nid)
            if ref.NodeClass == ua.NodeClass.Object:
                queue.append((child, (*path, name), None))
            elif ref.NodeClass == ua.NodeClass.Variable:
                obj = owner if owner is not None else path
                variables.append((obj, "/".join((*path[len(obj):], name)), nid))
                queue.append((child, (*path, name), obj))  # variables may have child variables
    types: list[Any] = []
    ids = [v[2] for v in variables]
    for start in range(0, len(ids), 1000):
        types.extend(await client.uaclient.read_attributes(ids[start:start + 1000], AttributeIds.DataType))
    for (obj, name, nid), dv in zip(variables, types, strict=True):
        dtype = dv.Value.Value if dv.Value is not None else None
        ident = dtype.Identifier if isinstance(dtype, ua.NodeId) and dtype.NamespaceIndex == 0 else None
        kind = _TYPES.get(ident) if isinstance(ident, int) else None
        if kind is None:
            continue  # structures, enumerations, arrays of custom types: not a signal we know how to publish
        objects.setdefault(obj, BrowsedObject(obj)).variables[name] = (nid.to_string(), kind)
    return _fold_into_machines([o for o in objects.values() if o.variables])


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


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s or "x"


def _metric(name: str) -> str:
    parts = [re.sub(r"[^A-Za-z0-9_ .:-]+", "_", p).strip() or "_" for p in name.split("/")]
    return "/".join(p if p[0].isalnum() or p[0] == "_" else "_" + p for p in parts)


def starter_config(objects: list[BrowsedObject], endpoint: str, *, site: str | None = None,
                   edge_node: str | None = None, mqtt_url: str = "mqtt://127.0.0.1:1883") -> dict[str, Any]:
    """An agent config (as a YAML-ready dict) for the browsed objects; PackML machines first."""
    machines_in = sorted(objects, key=lambda o: (not o.is_packml(), o.path))
    packml = [o for o in machines_in if o.is_packml()]
    # defaults from the sim layout Objects/{site}/{line}/{machine}
    ref = packml[0].path if packml else (machines_in[0].path if machines_in else ())
    site = site or (_slug(ref[0]) if len(ref) >= 3 else "site")
    edge_node = edge_node or (_slug(ref[-2]) if len(ref) >= 2 else "edge")
    used: set[str] = set()
    machines: list[dict[str, Any]] = []
    for obj in machines_in:
        mid = base = _slug(obj.path[-1] if obj.path else "objects")
        n = 2
        while mid in used:
            mid, n = f"{base}-{n}", n + 1
        used.add(mid)
        machines.append({"id": mid, "adapter": "opcua", **({} if obj.is_packml() else {"oee": False}),
                         "signals": _signals(obj)})
    return {
        "site": site,
        "edge_node": edge_node,
        "mqtt": {"url": mqtt_url},
        "outbox": {"dir": f".zhizao/edge/{edge_node}/outbox"},
        "adapters": [{
            "type": "opcua", "name": "opcua", "endpoint": endpoint,
            # None = plaintext: set Sign/SignAndEncrypt with certificates for production servers.
            "security": {"mode": "None"},
            "subscription": {"publishing_interval_ms": 250, "sampling_interval_ms": 100, "queue_size": 100},
        }],
        "machines": machines,
    }


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
