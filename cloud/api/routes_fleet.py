"""The edge fleet console: `GET /api/v1/fleet` (every edge agent) and `GET /api/v1/fleet/{site}/{edge}`.

Per edge node: online / offline / stale (born, but nothing heard for `STALE_S`), births and deaths, agent and
config version, outbox depth and the age of its oldest sample, samples/s (0 when not online), reconnects,
clock skew against the cloud, last errors, command counters, and per device its connection state. Sparkplug
state comes from the ingest (`edge_nodes`, `machines`), the rest from the agent info (`edge_agents`, written
by the command dispatcher from `zhizao/v1/edge/{site}/{edge}`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from psycopg.rows import dict_row
from pydantic import BaseModel

from zhizao.broker.contract.ids import Id
from zhizao.cloud.api.deps import Conn, Scope
from zhizao.cloud.api.errors import not_found
from zhizao.cloud.api.params import LineId, SiteId

router = APIRouter(prefix="/api/v1", tags=["fleet"])

STALE_S = 30.0
"""An edge node that is born but has sent nothing (data, health, info) for this long is shown stale."""


class Device(BaseModel):
    """A machine behind the edge node and its connection state (DBIRTH / DDEATH)."""

    machine_id: str
    online: bool
    last_birth: datetime | None = None
    last_death: datetime | None = None


class FleetNode(BaseModel):
    """One edge agent as the fleet console shows it."""

    site_id: str
    edge_node_id: str
    status: str
    online: bool
    last_birth: datetime | None = None
    last_death: datetime | None = None
    last_seen: datetime | None = None
    info_at: datetime | None = None
    agent_version: str | None = None
    config_version: str | None = None
    outbox_depth: int | None = None
    outbox_oldest_age_s: float | None = None
    samples_per_s: float
    reconnects: int | None = None
    clock_skew_ms: int | None = None
    adapters_down: list[str] = []
    last_errors: list[dict[str, Any]] = []
    commands: dict[str, Any] = {}
    devices: list[Device] = []


_SQL = """
SELECT n.site_id, n.edge_node_id, n.online, n.last_birth, n.last_death, n.last_seen, n.outbox_depth,
       n.samples_per_s, n.reconnects, a.agent_version, a.config_version, a.info, a.received_at AS info_at,
       a.clock_skew_ms,
       coalesce((SELECT json_agg(json_build_object('machine_id', m.machine_id, 'online', m.online,
                 'last_birth', m.last_birth, 'last_death', m.last_death) ORDER BY m.machine_id)
                 FROM machines m WHERE m.site_id = n.site_id AND m.edge_node_id = n.edge_node_id), '[]') AS devices
FROM edge_nodes n LEFT JOIN edge_agents a USING (site_id, edge_node_id)
WHERE {scope} {extra}
ORDER BY n.site_id, n.edge_node_id
"""


def _node(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    info: dict[str, Any] = row.pop("info") or {}
    heard = max((t for t in (row["last_seen"], row["info_at"], row["last_birth"]) if t is not None), default=None)
    if not row["online"]:
        status = "offline"
    elif heard is None or (now - heard).total_seconds() > STALE_S:
        status = "stale"
    else:
        status = "online"
    fresh_info = info and row["info_at"] is not None and (row["last_seen"] is None or row["info_at"] >= row["last_seen"])
    oldest = info.get("outbox_oldest_ms")
    info_ts = info.get("timestamp")
    return {
        **row,
        "status": status,
        # Rates of a node that is not online are history, not the present: 0.
        "samples_per_s": float(row["samples_per_s"] or 0.0) if status == "online" else 0.0,
        "outbox_depth": info.get("outbox_depth") if fresh_info else row["outbox_depth"],
        "outbox_oldest_age_s": (info_ts - oldest) / 1000 if isinstance(oldest, int) and isinstance(info_ts, int)
        else (0.0 if info else None),
        "reconnects": info.get("reconnects", row["reconnects"]),
        "adapters_down": list(info.get("adapters_down") or []),
        "last_errors": list(info.get("last_errors") or []),
        "commands": {k: v for k, v in (info.get("commands") or {}).items() if k != "targets"},
    }  # fmt: skip


@router.get("/fleet", response_model=list[FleetNode], summary="Every edge agent: status, versions, outbox, devices")
async def fleet(conn: Conn, scope: Scope, site: Annotated[Id | None, Query()] = None) -> list[dict[str, Any]]:
    """The fleet console's rows, in the token's sites (or one site)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SQL.format(scope=scope.where("n.site_id"),
                                      extra="AND (%(site)s::text IS NULL OR n.site_id = %(site)s)"),
                          scope.params(site=site))  # fmt: skip
        rows = await cur.fetchall()
    now = datetime.now(UTC)
    return [_node(r, now) for r in rows]


@router.get("/fleet/{site}/{edge}", response_model=FleetNode, summary="One edge agent")
async def fleet_node(site: SiteId, edge: LineId, conn: Conn, scope: Scope) -> dict[str, Any]:
    """One row of the fleet console; 404 outside the token's sites."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SQL.format(scope=scope.where("n.site_id"),
                                      extra="AND n.site_id = %(site)s AND n.edge_node_id = %(edge)s"),
                          scope.params(site=site, edge=edge))  # fmt: skip
        row = await cur.fetchone()
    if row is None:
        raise not_found("edge node", f"{site}/{edge}")
    return _node(row, datetime.now(UTC))
