"""Remote commands: `POST /api/v1/machines/{machine}/commands`, lists, one command's history, approve, cancel.

A command names a target the machine's edge agent declared (its info: a signal to write within limits, or a
method); the API checks role, limits and the per-machine rate before queueing, and writes every request and
refusal to the audit log. The dispatcher (cloud/commands/service.py) signs and sends it; its status moves
awaiting_approval (critical targets) -> queued -> sent -> delivered -> confirmed | failed | refused, or ends
timed_out / expired / cancelled.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field

from zhizao.broker.contract.ids import Id
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.cloud.api.deps import Caller, Conn, Scope
from zhizao.cloud.api.errors import ApiError, bad_request, not_found
from zhizao.cloud.api.params import MachineId
from zhizao.cloud.auth import Principal, Role, audit_params

router = APIRouter(prefix="/api/v1", tags=["commands"])

STATUSES = ("awaiting_approval", "queued", "sent", "delivered", "confirmed", "failed", "refused", "timed_out",
            "expired", "cancelled")  # fmt: skip
_INTS = frozenset({int(DataType.Int8), int(DataType.Int16), int(DataType.Int32), int(DataType.Int64),
                   int(DataType.UInt8), int(DataType.UInt16), int(DataType.UInt32), int(DataType.UInt64)})  # fmt: skip


class CommandCreate(BaseModel):
    """A command: write `value` to signal `metric`, or call `method`; with a reason, optionally idempotent."""

    model_config = ConfigDict(extra="forbid")

    metric: str | None = Field(default=None, max_length=200, description="signal to write, e.g. Rate/Setpoint")
    value: float | int | bool | None = Field(default=None, description="the value to write")
    method: Literal["Start", "Stop", "Reset", "RunOrder"] | None = None
    args: dict[str, str | float] | None = Field(
        default=None, description="a method's arguments, e.g. RunOrder {product, quantity, rate_per_min, "
        "changeover_min}; checked by the agent against its declared names, types and limits")
    reason: str = Field(min_length=1, max_length=500, description="why (kept in the audit log)")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=100,
                                        description="a retry with the same key returns the first command")
    ttl_s: float = Field(default=300.0, ge=1.0, le=86400.0,
                         description="the command expires if the edge has not taken it within this time")


class Command(BaseModel):
    """A command and where it stands."""

    command_id: str
    site_id: str
    edge_node_id: str
    machine_id: str
    kind: str
    name: str
    value: Any = None
    reason: str
    status: str
    requested_by: str
    approved_by: str | None = None
    idempotency_key: str | None = None
    created_at: datetime
    expires_at: datetime
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    finished_at: datetime | None = None
    readback: Any = None
    status_code: int | None = None
    status_name: str | None = None
    message: str | None = None
    history: list[dict[str, Any]] | None = None


class Target(BaseModel):
    """Something the machine's agent may be commanded, with its limits and the least role."""

    machine_id: str
    name: str
    kind: str
    datatype: int | None
    min_value: float | None
    max_value: float | None
    step: float | None
    allowed_states: list[int] | None
    role: str
    critical: bool


_COLS = ("command_id::text, site_id, edge_node_id, machine_id, kind, name, value, reason, status, requested_by,"
         " approved_by, idempotency_key, created_at, expires_at, sent_at, delivered_at, finished_at, readback,"
         " status_code, status_name, message")  # fmt: skip


async def _machine(conn: AsyncConnection[Any], scope: Scope, machine: str, site: str | None) -> tuple[str, str]:
    async with conn.cursor() as cur:
        await cur.execute(
            f"SELECT site_id, edge_node_id FROM machines WHERE {scope.where()} AND machine_id = %(m)s"
            " AND (%(site)s::text IS NULL OR site_id = %(site)s) ORDER BY site_id",
            scope.params(m=machine, site=site),
        )
        rows = await cur.fetchall()
    if not rows:
        raise not_found("machine", machine)
    if len(rows) > 1:
        raise bad_request("site", None, f"machine {machine!r} exists in several sites; name one with ?site=")
    return str(rows[0][0]), str(rows[0][1])


async def _refuse(conn: AsyncConnection[Any], caller: Principal, site: str, machine: str, error: ApiError,
                  body: CommandCreate | None) -> ApiError:  # fmt: skip
    """Audit a refused command request (committed, the request then fails) and return the error to raise."""
    detail = {"status": error.status, "message": error.message}
    if body is not None:
        detail.update({"metric": body.metric, "method": body.method, "value": body.value, "reason": body.reason})
    sql, params = audit_params(caller.token_id, caller.name, "command.refused", site, machine, detail)
    await conn.execute(sql, params)
    await conn.commit()
    return error


def _check_limits(machine: str, name: str, t: dict[str, Any], value: float | int | bool | None) -> str | None:
    if t["kind"] == "call":
        return None
    if value is None or isinstance(value, bool) or not math.isfinite(float(value)):
        return f"value={value!r}: {machine} {name} needs a finite number"
    v = float(value)
    if t["datatype"] in _INTS and v != int(v):
        return f"value={value!r}: {machine} {name} is an integer signal"
    if t["min_value"] is not None and v < t["min_value"]:
        return f"value={value!r}: below the limit min={t['min_value']:g} of {machine} {name}"
    if t["max_value"] is not None and v > t["max_value"]:
        return f"value={value!r}: above the limit max={t['max_value']:g} of {machine} {name}"
    if t["step"]:
        base = t["min_value"] or 0.0
        k = (v - base) / t["step"]
        if abs(k - round(k)) > 1e-9 * max(1.0, abs(k)):
            return f"value={value!r}: not on the limit step={t['step']:g} (from {base:g}) of {machine} {name}"
    return None


@router.post("/machines/{machine}/commands", response_model=Command, status_code=201,
             summary="Send a command: write a signal or call Start/Stop/Reset (operator or above)")
async def create_command(machine: MachineId, body: CommandCreate, request: Request, response: Response,
                         caller: Caller, conn: Conn, scope: Scope,
                         site: Annotated[Id | None, Query()] = None) -> dict[str, Any]:  # fmt: skip
    """Queue a command for the machine's edge agent; 200 with the first command for a repeated idempotency key."""
    site_id, edge = await _machine(conn, scope, machine, site)
    if (body.metric is None) == (body.method is None):
        raise await _refuse(conn, caller, site_id, machine,
                            bad_request("metric", body.metric, "give exactly one of metric (a write) or method"), body)
    name = body.metric if body.metric is not None else f"Method/{body.method}"
    if body.idempotency_key is not None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(f"SELECT {_COLS} FROM commands WHERE site_id = %s AND machine_id = %s"
                              " AND idempotency_key = %s", [site_id, machine, body.idempotency_key])  # fmt: skip
            first = await cur.fetchone()
        if first is not None:
            response.status_code = 200
            return first
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM command_targets WHERE site_id = %s AND machine_id = %s AND name = %s",
                          [site_id, machine, name])
        target = await cur.fetchone()
    if target is None:
        raise await _refuse(conn, caller, site_id, machine, ApiError(
            409, f"{'metric' if body.metric else 'method'}={body.metric or body.method!r}: not a command target of "
            f"{machine} (its edge agent {edge} declares none by this name; see its commands.targets)",
            "metric" if body.metric else "method", body.metric or body.method), body)  # fmt: skip
    need = Role.parse(target["role"])
    if not caller.role.includes(need):
        raise await _refuse(conn, caller, site_id, machine, ApiError(
            403, f"role {caller.role.value!r} may not {'write' if body.metric else 'call'} {name} on {machine}; "
            f"needs {need.value!r} or above", "role", caller.role.value), body)  # fmt: skip
    problem = _check_limits(machine, name, target, body.value)
    if problem:
        raise await _refuse(conn, caller, site_id, machine, ApiError(400, problem, "value", body.value), body)
    settings = request.app.state.settings
    rate = int(getattr(settings, "command_rate_per_min", 30))
    cur2 = await conn.execute("SELECT count(*) FROM commands WHERE site_id = %s AND machine_id = %s"
                              " AND created_at > now() - interval '1 minute'", [site_id, machine])  # fmt: skip
    recent = await cur2.fetchone()
    if recent is not None and int(recent[0]) >= rate:
        raise await _refuse(conn, caller, site_id, machine, ApiError(
            429, f"machine={machine!r}: {rate} commands in the last minute, the limit per machine; try again later",
            "machine", machine), body)  # fmt: skip
    takes_args = target["kind"] == "call" and target["datatype"] == int(DataType.String)
    if (body.args is not None) != takes_args:
        raise await _refuse(conn, caller, site_id, machine, bad_request(
            "args", body.args, f"{name} of {machine} {'takes arguments' if takes_args else 'takes none'}"), body)
    cid = uuid.uuid4()
    value: Any = (json.dumps(body.args) if takes_args else True) if body.method else body.value
    datatype = target["datatype"] if target["datatype"] is not None else int(DataType.Boolean)
    if datatype in _INTS and value is not None:
        value = int(value)
    status = "awaiting_approval" if target["critical"] else "queued"
    expires = datetime.now(UTC) + timedelta(seconds=body.ttl_s)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "INSERT INTO commands (command_id, site_id, edge_node_id, machine_id, kind, name, datatype, value, reason,"
            " idempotency_key, status, requested_by, token_id, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s,"
            f" %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING {_COLS}",
            [cid, site_id, edge, machine, target["kind"], name, datatype, json.dumps(value), body.reason,
             body.idempotency_key, status, caller.name, caller.token_id, expires],
        )  # fmt: skip
        row = await cur.fetchone()
        if row is None:  # the same idempotency key raced us
            await cur.execute(f"SELECT {_COLS} FROM commands WHERE site_id = %s AND machine_id = %s"
                              " AND idempotency_key = %s", [site_id, machine, body.idempotency_key])  # fmt: skip
            row = await cur.fetchone()
            assert row is not None
            response.status_code = 200
            return row
    await conn.execute("INSERT INTO command_events (command_id, status, detail) VALUES (%s, %s, %s)",
                       [cid, status, json.dumps({"by": caller.name})])
    sql, params = audit_params(caller.token_id, caller.name, "command.create", site_id, f"{machine}:{cid}",
                               {"name": name, "value": value, "reason": body.reason, "status": status})  # fmt: skip
    await conn.execute(sql, params)
    await conn.commit()
    _kick(request)
    return row


def _kick(request: Request) -> None:
    service = getattr(request.app.state, "commands", None)
    if service is not None:
        service.kick()


@router.get("/machines/{machine}/commands", response_model=list[Command], summary="A machine's commands, newest first")
async def machine_commands(machine: MachineId, conn: Conn, scope: Scope, site: Annotated[Id | None, Query()] = None,
                           limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:  # fmt: skip
    """The machine's latest commands."""
    site_id, _ = await _machine(conn, scope, machine, site)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLS} FROM commands WHERE site_id = %s AND machine_id = %s"
                          " ORDER BY created_at DESC LIMIT %s", [site_id, machine, limit])  # fmt: skip
        return await cur.fetchall()


@router.get("/machines/{machine}/command-targets", response_model=list[Target],
            summary="What the machine may be commanded, with limits and the least role")
async def machine_targets(machine: MachineId, conn: Conn, scope: Scope,
                          site: Annotated[Id | None, Query()] = None) -> list[dict[str, Any]]:  # fmt: skip
    """The targets the machine's edge agent declared."""
    site_id, _ = await _machine(conn, scope, machine, site)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT machine_id, name, kind, datatype, min_value, max_value, step, allowed_states, role,"
                          " critical FROM command_targets WHERE site_id = %s AND machine_id = %s ORDER BY kind, name",
                          [site_id, machine])  # fmt: skip
        return await cur.fetchall()


@router.get("/commands", response_model=list[Command], summary="Commands in the token's sites, newest first")
async def list_commands(conn: Conn, scope: Scope, site: Annotated[Id | None, Query()] = None,
                        status: Annotated[str | None, Query(json_schema_extra={"enum": ["", *STATUSES]})] = None,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:  # fmt: skip
    """Filter by site and status (`status=` is no filter)."""
    await scope.check(conn, site)
    status = status or None
    if status is not None and status not in STATUSES:
        raise bad_request("status", status, f"not one of {', '.join(STATUSES)}")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLS} FROM commands WHERE {scope.where()} AND (%(site)s::text IS NULL OR site_id = %(site)s)"
            " AND (%(status)s::text IS NULL OR status = %(status)s) ORDER BY created_at DESC LIMIT %(limit)s",
            scope.params(site=site, status=status, limit=limit),
        )  # fmt: skip
        return await cur.fetchall()


async def _one(conn: AsyncConnection[Any], scope: Scope, command_id: str) -> dict[str, Any]:
    try:
        cid = uuid.UUID(command_id)
    except ValueError:
        raise not_found("command", command_id) from None
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLS} FROM commands WHERE {scope.where()} AND command_id = %(cid)s",
                          scope.params(cid=cid))
        row = await cur.fetchone()
        if row is None:
            raise not_found("command", command_id)
        await cur.execute("SELECT at, status, detail FROM command_events WHERE command_id = %s ORDER BY id", [cid])
        row["history"] = await cur.fetchall()
    return row


@router.get("/commands/{command_id}", response_model=Command, summary="One command with its status history")
async def get_command(command_id: str, conn: Conn, scope: Scope) -> dict[str, Any]:
    """The command and every status it went through."""
    return await _one(conn, scope, command_id)


@router.post("/commands/{command_id}/approve", response_model=Command,
             summary="Second-person approval of a critical command")
async def approve(command_id: str, request: Request, caller: Caller, conn: Conn, scope: Scope) -> dict[str, Any]:
    """Another person than the requester, with the target's role, releases an awaiting command."""
    row = await _one(conn, scope, command_id)
    cur = await conn.execute("SELECT role FROM command_targets WHERE site_id = %s AND machine_id = %s AND name = %s",
                             [row["site_id"], row["machine_id"], row["name"]])  # fmt: skip
    t = await cur.fetchone()
    need = Role.parse(t[0]) if t is not None else Role.engineer
    if row["status"] != "awaiting_approval":
        raise ApiError(409, f"command {command_id!r} is {row['status']}, not awaiting_approval", "status",
                       row["status"])  # fmt: skip
    if caller.name == row["requested_by"]:
        raise await _refuse(conn, caller, row["site_id"], row["machine_id"], ApiError(
            403, f"approver={caller.name!r}: the requester cannot approve their own command", "approver",
            caller.name), None)  # fmt: skip
    if not caller.role.includes(need):
        raise await _refuse(conn, caller, row["site_id"], row["machine_id"], ApiError(
            403, f"role {caller.role.value!r} may not approve {row['name']}; needs {need.value!r}", "role",
            caller.role.value), None)  # fmt: skip
    await conn.execute("UPDATE commands SET status = 'queued', approved_by = %s WHERE command_id = %s"
                       " AND status = 'awaiting_approval'", [caller.name, row["command_id"]])  # fmt: skip
    await conn.execute("INSERT INTO command_events (command_id, status, detail) VALUES (%s, 'queued', %s)",
                       [row["command_id"], json.dumps({"approved_by": caller.name})])
    sql, params = audit_params(caller.token_id, caller.name, "command.approve", row["site_id"],
                               f"{row['machine_id']}:{command_id}", None)  # fmt: skip
    await conn.execute(sql, params)
    await conn.commit()
    _kick(request)
    return await _one(conn, scope, command_id)


@router.post("/commands/{command_id}/cancel", response_model=Command,
             summary="Cancel a command that has not been sent yet (operator or above)")
async def cancel(command_id: str, caller: Caller, conn: Conn, scope: Scope) -> dict[str, Any]:
    """Only awaiting_approval and queued commands can be cancelled; a sent one is in the edge's hands."""
    row = await _one(conn, scope, command_id)
    if not caller.role.includes(Role.operator):
        raise ApiError(403, f"role {caller.role.value!r} may not cancel commands; needs 'operator'", "role",
                       caller.role.value)  # fmt: skip
    cur = await conn.execute(
        "UPDATE commands SET status = 'cancelled', finished_at = now(), message = %s WHERE command_id = %s"
        " AND status IN ('awaiting_approval', 'queued') RETURNING command_id",
        [f"cancelled by {caller.name}", row["command_id"]])  # fmt: skip
    if await cur.fetchone() is None:
        raise ApiError(409, f"command {command_id!r} is {row['status']}; only queued or awaiting commands can be "
                       "cancelled", "status", row["status"])  # fmt: skip
    await conn.execute("INSERT INTO command_events (command_id, status, detail) VALUES (%s, 'cancelled', %s)",
                       [row["command_id"], json.dumps({"by": caller.name})])
    sql, params = audit_params(caller.token_id, caller.name, "command.cancel", row["site_id"],
                               f"{row['machine_id']}:{command_id}", None)  # fmt: skip
    await conn.execute(sql, params)
    await conn.commit()
    return await _one(conn, scope, command_id)
