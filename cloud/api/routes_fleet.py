"""The edge fleet console: `GET /api/v1/fleet` (every edge agent) and `GET /api/v1/fleet/{site}/{edge}`.

Per edge node: online / offline / stale (born, but nothing heard for `STALE_S`), births and deaths, agent and
config version, outbox depth and the age of its oldest sample, samples/s (0 when not online), reconnects,
clock skew against the cloud, last errors, command counters, and per device its connection state. Sparkplug
state comes from the ingest (`edge_nodes`, `machines`), the rest from the agent info (`edge_agents`, written
by the command dispatcher from `zhizao/v1/edge/{site}/{edge}`).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Query, Request
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field

from zhizao.broker.contract.ids import Id
from zhizao.cloud.api.deps import Caller, Conn, Scope
from zhizao.cloud.api.errors import ApiError, bad_request, not_found
from zhizao.cloud.api.params import LineId, SiteId
from zhizao.cloud.auth import Principal, Role, audit_params
from zhizao.cloud.fleet.configs import ConfigInvalid, diff, validate

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
    await scope.check(conn, site)
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


# ---- remote configuration --------------------------------------------------------------------------------------
class ConfigUpload(BaseModel):
    """An agent config (the YAML of `zhizao edge run FILE`) and why it changes."""

    model_config = ConfigDict(extra="forbid")

    document: str = Field(min_length=1, max_length=512 * 1024)
    comment: str | None = Field(default=None, max_length=500)


class ConfigVersion(BaseModel):
    """One stored version of an agent's config."""

    site_id: str
    edge_node_id: str
    version: int
    comment: str | None
    created_by: str
    created_at: datetime
    document: str | None = None
    diff: str | None = None


class PushRequest(BaseModel):
    """How a config version goes out: the agent rolls back by itself if it cannot connect within the time."""

    model_config = ConfigDict(extra="forbid")

    rollback_after_s: float = Field(default=60.0, ge=2.0, le=3600.0)
    ttl_s: float = Field(default=3600.0, ge=10.0, le=7 * 86400.0)


class RolloutRequest(PushRequest):
    """A staged rollout: each agent's latest version, one agent after the other; a failure stops the rest."""

    edges: list[Id] | None = Field(default=None, description="the order of the stages (default: every agent of "
                                   "the site with a stored config, by id)")


class ConfigPush(BaseModel):
    """A push of a version to an agent and its outcome."""

    push_id: str
    site_id: str
    edge_node_id: str
    version: int
    rollout_id: str | None
    stage: int
    status: str
    requested_by: str
    created_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None
    message: str | None


_PUSH_COLS = ("push_id::text, site_id, edge_node_id, version, rollout_id::text, stage, status, requested_by,"
              " created_at, sent_at, finished_at, message")  # fmt: skip


async def _edge(conn: AsyncConnection[Any], scope: Scope, site: str, edge: str) -> None:
    cur = await conn.execute(f"SELECT 1 FROM edge_nodes WHERE {scope.where()} AND site_id = %(site)s"
                             " AND edge_node_id = %(edge)s", scope.params(site=site, edge=edge))  # fmt: skip
    if await cur.fetchone() is None:
        raise not_found("edge node", f"{site}/{edge}")


def _engineer(caller: Principal) -> None:
    if not caller.role.includes(Role.engineer):
        raise ApiError(403, f"role {caller.role.value!r} may not change agent configs; needs 'engineer' or above",
                       "role", caller.role.value)  # fmt: skip


@router.post("/fleet/{site}/{edge}/configs", response_model=ConfigVersion, status_code=201,
             summary="Upload an agent config (engineer): validated with the edge's own model, stored as a version")
async def upload_config(site: SiteId, edge: LineId, body: ConfigUpload, caller: Caller, conn: Conn,
                        scope: Scope) -> dict[str, Any]:  # fmt: skip
    """400 lists every problem as `path: message (value)`, as `zhizao edge check-config` does."""
    await _edge(conn, scope, site, edge)
    _engineer(caller)
    try:
        data = yaml.safe_load(body.document)
    except yaml.YAMLError as exc:
        raise bad_request("document", None, f"not valid YAML: {exc}") from None
    for key, want in (("site", site), ("edge_node", edge)):
        got = data.get(key) if isinstance(data, dict) else None
        if got != want:
            raise bad_request(f"document.{key}", got, f"this config is for {want!r} (the URL's)")
    try:
        await asyncio.to_thread(validate, body.document)
    except ConfigInvalid as exc:
        raise ApiError(400, "document: " + "; ".join(exc.problems), "document", exc.problems[0]) from None
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT version, document FROM agent_configs WHERE site_id = %s AND edge_node_id = %s"
                          " ORDER BY version DESC LIMIT 1 FOR UPDATE", [site, edge])  # fmt: skip
        last = await cur.fetchone()
        version = 1 if last is None else int(last["version"]) + 1
        await cur.execute(
            "INSERT INTO agent_configs (site_id, edge_node_id, version, document, comment, created_by)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING site_id, edge_node_id, version, comment, created_by, created_at",
            [site, edge, version, body.document, body.comment, caller.name])  # fmt: skip
        row = await cur.fetchone()
    assert row is not None
    row["diff"] = diff(last["document"] if last else None, body.document, f"v{version - 1}", f"v{version}")
    sql, params = audit_params(caller.token_id, caller.name, "config.upload", site, f"{edge}:v{version}",
                               {"comment": body.comment})  # fmt: skip
    await conn.execute(sql, params)
    await conn.commit()  # before the answer: a client's next request must see this version
    return row


@router.get("/fleet/{site}/{edge}/configs", response_model=list[ConfigVersion], summary="An agent's config versions")
async def list_configs(site: SiteId, edge: LineId, conn: Conn, scope: Scope) -> list[dict[str, Any]]:
    """Newest first, without the documents."""
    await _edge(conn, scope, site, edge)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT site_id, edge_node_id, version, comment, created_by, created_at FROM agent_configs"
                          " WHERE site_id = %s AND edge_node_id = %s ORDER BY version DESC", [site, edge])  # fmt: skip
        return await cur.fetchall()


@router.get("/fleet/{site}/{edge}/configs/{version}", response_model=ConfigVersion,
            summary="One config version with its diff against the version before")
async def get_config(site: SiteId, edge: LineId, version: int, conn: Conn, scope: Scope) -> dict[str, Any]:
    """The document and the unified diff from the previous version."""
    await _edge(conn, scope, site, edge)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT site_id, edge_node_id, version, comment, created_by, created_at, document"
                          " FROM agent_configs WHERE site_id = %s AND edge_node_id = %s AND version <= %s"
                          " ORDER BY version DESC LIMIT 2", [site, edge, version])  # fmt: skip
        rows = await cur.fetchall()
    if not rows or rows[0]["version"] != version:
        raise not_found("config version", version)
    row = rows[0]
    before = rows[1] if len(rows) > 1 else None
    row["diff"] = diff(before["document"] if before else None, row["document"],
                       f"v{before['version'] if before else 0}", f"v{version}")  # fmt: skip
    return row


async def _push(conn: AsyncConnection[Any], caller: Principal, site: str, edge: str, version: int,
                body: PushRequest, rollout: uuid.UUID | None = None, stage: int = 0) -> dict[str, Any]:  # fmt: skip
    pid = uuid.uuid4()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "INSERT INTO config_pushes (push_id, site_id, edge_node_id, version, rollback_after_s, rollout_id, stage,"
            " status, requested_by, expires_at) SELECT %s, site_id, edge_node_id, version, %s, %s, %s, 'queued', %s,"
            f" now() + make_interval(secs => %s) FROM agent_configs WHERE site_id = %s AND edge_node_id = %s"
            f" AND version = %s RETURNING {_PUSH_COLS}",
            [pid, body.rollback_after_s, rollout, stage, caller.name, body.ttl_s, site, edge, version])  # fmt: skip
        row = await cur.fetchone()
    if row is None:
        raise not_found("config version", version)
    sql, params = audit_params(caller.token_id, caller.name, "config.push", site, f"{edge}:v{version}",
                               {"push_id": str(pid), "rollout_id": str(rollout) if rollout else None})  # fmt: skip
    await conn.execute(sql, params)
    return row


@router.post("/fleet/{site}/{edge}/configs/{version}/push", response_model=ConfigPush, status_code=201,
             summary="Push a config version to its agent (engineer); an older version is a rollback")
async def push_config(site: SiteId, edge: LineId, version: int, body: PushRequest, request: Request, caller: Caller,
                      conn: Conn, scope: Scope) -> dict[str, Any]:  # fmt: skip
    """Queued until the agent is online; the agent reports applied, refused or rolled_back."""
    await _edge(conn, scope, site, edge)
    _engineer(caller)
    row = await _push(conn, caller, site, edge, version, body)
    await conn.commit()
    _kick(request)
    return row


@router.post("/sites/{site}/config-rollout", response_model=list[ConfigPush], status_code=201,
             summary="Staged rollout (engineer): each agent's latest config, one after the other")
async def rollout(site: SiteId, body: RolloutRequest, request: Request, caller: Caller, conn: Conn,
                  scope: Scope) -> list[dict[str, Any]]:  # fmt: skip
    """Stage k is sent once stage k-1 applied; a refusal, rollback or timeout cancels the stages after it."""
    _engineer(caller)
    if not scope.sees(site):
        raise not_found("site", site)
    cur = await conn.execute("SELECT edge_node_id, max(version) FROM agent_configs WHERE site_id = %s"
                             " GROUP BY edge_node_id ORDER BY edge_node_id", [site])  # fmt: skip
    latest = {str(e): int(v) for e, v in await cur.fetchall()}
    edges = body.edges if body.edges is not None else list(latest)
    missing = [e for e in edges if e not in latest]
    if missing or not edges:
        raise bad_request("edges", ",".join(missing) or None, "no stored config for these agents")
    rid = uuid.uuid4()
    rows = [await _push(conn, caller, site, e, latest[e], body, rid, i) for i, e in enumerate(edges)]
    await conn.commit()
    _kick(request)
    return rows


@router.get("/fleet/{site}/{edge}/pushes", response_model=list[ConfigPush], summary="An agent's config push history")
async def list_pushes(site: SiteId, edge: LineId, conn: Conn, scope: Scope) -> list[dict[str, Any]]:
    """Newest first."""
    await _edge(conn, scope, site, edge)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_PUSH_COLS} FROM config_pushes WHERE site_id = %s AND edge_node_id = %s"
                          " ORDER BY created_at DESC LIMIT 100", [site, edge])  # fmt: skip
        return await cur.fetchall()


def _kick(request: Request) -> None:
    service = getattr(request.app.state, "commands", None)
    if service is not None:
        service.kick()
