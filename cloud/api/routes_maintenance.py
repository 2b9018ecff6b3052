"""Maintenance: work orders, MTBF/MTTR, and the wear trend of a condition indicator.

A work order is created by hand or from alarms (operator or above); it has an assignee, a status (open,
in_progress, done) and linked alarms. Its planned downtime is written into the site's planned stops
(`oee_planned_stops`, code 210000 preventive maintenance, tagged with the work order) and the site's OEE
windows are recomputed, so OEE counts it as planned maintenance. MTBF and MTTR come from the OEE hour windows
(run time / failures, failure time / failures); the wear trend fits a line to a signal's per-minute maxima
and estimates when it crosses its alarm level (the threshold rule's `high`, or `limit`).
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zhizao.broker.contract.ids import Id
from zhizao.broker.contract.states import PREVENTIVE_MAINTENANCE
from zhizao.cloud.api.deps import Conn, Scope, SiteScope, require_role
from zhizao.cloud.api.errors import bad_request, not_found
from zhizao.cloud.api.params import TimeQuery
from zhizao.cloud.api.series import parse_time
from zhizao.cloud.auth import Principal, Role, audit_params
from zhizao.cloud.monitoring.rules import RULE_COLUMNS, rule_from_row

router = APIRouter(prefix="/api/v1", tags=["maintenance"])

Status = Literal["open", "in_progress", "done"]
Operator = Annotated[Principal, Depends(require_role(Role.operator))]
_COLS = ("id, site_id AS site, line_id AS line, machine_id AS machine, title, description, assignee, status,"
         " planned_start, planned_end, created_at, created_by, updated_at, done_at")


def _iso(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _zoned(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"{value.isoformat()!r} has no zone; add Z or +hh:mm")
    return value


class WorkOrderIn(BaseModel):
    """A new work order: by hand, or from alarms (`alarm_ids`); planned downtime goes into the site calendar."""

    model_config = ConfigDict(extra="forbid")
    site: Id
    machine: Id | None = None
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    assignee: str | None = Field(default=None, max_length=200)
    alarm_ids: list[int] = Field(default_factory=list, max_length=1000)
    planned_start: datetime | None = None
    planned_end: datetime | None = None

    @field_validator("planned_start", "planned_end")
    @classmethod
    def _z(cls, value: datetime | None) -> datetime | None:
        return _zoned(value)

    @model_validator(mode="after")
    def _window(self) -> WorkOrderIn:
        if (self.planned_start is None) != (self.planned_end is None):
            raise ValueError("give planned_start and planned_end together")
        if self.planned_start and self.planned_end and self.planned_end <= self.planned_start:
            raise ValueError(f"planned_end={self.planned_end.isoformat()} must be after planned_start")
        return self


class WorkOrderPatch(BaseModel):
    """Fields to change; `add_alarm_ids` links more alarms."""

    model_config = ConfigDict(extra="forbid")
    status: Status | None = None
    assignee: str | None = Field(default=None, max_length=200)
    title: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    add_alarm_ids: list[int] = Field(default_factory=list, max_length=1000)


async def _check_site(conn: Conn, scope: SiteScope, site: str, machine: str | None) -> str | None:
    """404 outside the scope; the machine's line."""
    if not scope.sees(site):
        raise not_found("site", site)
    if machine is None:
        cur = await conn.execute("SELECT 1 FROM sites WHERE site_id = %s", [site])
        if await cur.fetchone() is None:
            raise not_found("site", site)
        return None
    cur = await conn.execute("SELECT line_id FROM machines WHERE site_id = %s AND machine_id = %s", [site, machine])
    row = await cur.fetchone()
    if row is None:
        raise not_found("machine", f"{site}/{machine}")
    return str(row[0])


async def _check_alarms(conn: Conn, site: str, ids: list[int]) -> None:
    if not ids:
        return
    cur = await conn.execute("SELECT id FROM alarms WHERE site_id = %s AND id = ANY(%s)", [site, ids])
    found = {int(r[0]) for r in await cur.fetchall()}
    missing = [i for i in ids if i not in found]
    if missing:
        raise not_found("alarm", missing[0])


async def _recompute(request: Request, site: str, since: datetime) -> bool:
    service = getattr(request.app.state, "oee", None)
    if service is None:
        return False
    done = service.recompute(site, None, int(since.timestamp() * 1000))
    return bool(await asyncio.to_thread(done.wait, 30.0)) and bool(done.ok)


async def _get(conn: Conn, wo_id: int) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLS} FROM work_orders WHERE id = %s", [wo_id])
        row = await cur.fetchone()
        assert row is not None
        await cur.execute("SELECT a.id, a.key, a.source, a.priority, a.state, a.message FROM work_order_alarms w"
                          " JOIN alarms a ON a.id = w.alarm_id WHERE w.work_order_id = %s ORDER BY a.id", [wo_id])
        alarms = await cur.fetchall()
        await cur.execute("SELECT id, start_ts, end_ts, code FROM oee_planned_stops WHERE work_order_id = %s", [wo_id])
        stops = await cur.fetchall()
    return {**_iso(row), "alarms": alarms, "planned_stops": [_iso(s) for s in stops]}


@router.post("/work-orders", summary="Create a work order, by hand or from alarms (operator or above)", status_code=201)
async def create_work_order(request: Request, conn: Conn, scope: Scope, principal: Operator,
                            body: Annotated[WorkOrderIn, Body()]) -> dict[str, Any]:
    """Linked alarms must be the site's; planned downtime becomes a planned stop of the site (OEE recomputed)."""
    line = await _check_site(conn, scope, body.site, body.machine)
    await _check_alarms(conn, body.site, body.alarm_ids)
    await conn.commit()
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO work_orders (site_id, line_id, machine_id, title, description, assignee, planned_start,"
            " planned_end, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            [body.site, line, body.machine, body.title, body.description, body.assignee, body.planned_start,
             body.planned_end, principal.name])
        row = await cur.fetchone()
        assert row is not None
        wo_id = int(row[0])
        for a in body.alarm_ids:
            await conn.execute("INSERT INTO work_order_alarms VALUES (%s, %s) ON CONFLICT DO NOTHING", [wo_id, a])
        if body.planned_start is not None:
            await conn.execute(
                "INSERT INTO oee_planned_stops (site_id, start_ts, end_ts, code, note, work_order_id)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                [body.site, body.planned_start, body.planned_end, PREVENTIVE_MAINTENANCE,
                 f"work order {wo_id}: {body.title}", wo_id])
        sql, params = audit_params(principal.token_id, principal.name, "work_order.create", body.site, str(wo_id),
                                   body.model_dump(mode="json"))
        await conn.execute(sql, params)
    await conn.commit()
    out = await _get(conn, wo_id)
    out["recomputed"] = (await _recompute(request, body.site, body.planned_start)
                         if body.planned_start is not None else False)
    return out


@router.get("/work-orders", summary="Work orders of the token's sites")
async def list_work_orders(
    conn: Conn, scope: Scope, site: Annotated[Id | None, Query()] = None,
    machine: Annotated[Id | None, Query()] = None,
    status: Annotated[list[Status] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[dict[str, Any]]:
    """Newest first, with the number of linked alarms."""
    await scope.check(conn, site)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLS}, (SELECT count(*) FROM work_order_alarms w WHERE w.work_order_id = id) AS alarm_count"
            f" FROM work_orders WHERE {scope.where()} AND (%(site)s::text IS NULL OR site_id = %(site)s)"
            " AND (%(machine)s::text IS NULL OR machine_id = %(machine)s)"
            " AND (%(status)s::text[] IS NULL OR status = ANY(%(status)s)) ORDER BY id DESC LIMIT %(limit)s",
            scope.params(site=site, machine=machine, status=status, limit=limit))
        return [_iso(r) for r in await cur.fetchall()]


async def _wo_site(conn: Conn, scope: SiteScope, wo_id: int) -> str:
    cur = await conn.execute(f"SELECT site_id FROM work_orders WHERE id = %(id)s AND {scope.where()}",
                             scope.params(id=wo_id))
    row = await cur.fetchone()
    if row is None:
        raise not_found("work_order", wo_id)
    return str(row[0])


@router.get("/work-orders/{wo_id}", summary="One work order with its alarms and planned stops")
async def get_work_order(wo_id: Annotated[int, Path(ge=1)], conn: Conn, scope: Scope) -> dict[str, Any]:
    """The work order."""
    await _wo_site(conn, scope, wo_id)
    return await _get(conn, wo_id)


@router.patch("/work-orders/{wo_id}", summary="Change status, assignee, text or linked alarms (operator or above)")
async def patch_work_order(wo_id: Annotated[int, Path(ge=1)], conn: Conn, scope: Scope, principal: Operator,
                           body: Annotated[WorkOrderPatch, Body()]) -> dict[str, Any]:
    """Status done stamps `done_at`; every change is in the audit log."""
    site = await _wo_site(conn, scope, wo_id)
    await _check_alarms(conn, site, body.add_alarm_ids)
    fields = body.model_dump(exclude_unset=True, exclude={"add_alarm_ids"})
    await conn.commit()
    async with conn.transaction():
        for name, value in fields.items():
            await conn.execute(f"UPDATE work_orders SET {name} = %s, updated_at = now() WHERE id = %s",  # names from the model
                               [value, wo_id])
        if body.status is not None:
            await conn.execute("UPDATE work_orders SET done_at = CASE WHEN status = 'done' THEN coalesce(done_at, now())"
                               " END WHERE id = %s", [wo_id])
        for a in body.add_alarm_ids:
            await conn.execute("INSERT INTO work_order_alarms VALUES (%s, %s) ON CONFLICT DO NOTHING", [wo_id, a])
        sql, params = audit_params(principal.token_id, principal.name, "work_order.update", site, str(wo_id),
                                   body.model_dump(mode="json", exclude_unset=True))
        await conn.execute(sql, params)
    await conn.commit()
    return await _get(conn, wo_id)


# -- reliability -------------------------------------------------------------------------------------------

def _rel(run_s: float, failures: int, failure_s: float) -> dict[str, Any]:
    return {"run_h": run_s / 3600, "failures": failures, "failure_h": failure_s / 3600,
            "mtbf_h": run_s / failures / 3600 if failures else None,
            "mttr_min": failure_s / failures / 60 if failures else None}


@router.get("/reliability", summary="MTBF and MTTR per machine and line of a site, from the OEE windows")
async def reliability(
    conn: Conn, scope: Scope, site: Annotated[Id, Query()],
    line: Annotated[Id | None, Query()] = None,
    frm: Annotated[TimeQuery, Query(alias="from")] = None, to: Annotated[TimeQuery, Query()] = None,
) -> dict[str, Any]:
    """MTBF = run time / failures, MTTR = repair time (the whole time inside failure stops, breaks included)
    / failures, over the hour windows in [from, to)."""
    await _check_site(conn, scope, site, None)
    hi = parse_time("to", to) if to else datetime.now(UTC)
    lo = parse_time("from", frm) if frm else hi - timedelta(days=30)
    if hi <= lo:
        raise bad_request("to", to, f"must be after from ({lo.isoformat()})")
    cur = await conn.execute(
        "SELECT line_id, machine_id, sum(run_s), sum(failures), sum(repair_s) FROM oee_windows"
        " WHERE site_id = %s AND kind = 'hour' AND start_ts >= %s AND start_ts < %s"
        " AND (%s::text IS NULL OR line_id = %s) GROUP BY ROLLUP (line_id, machine_id) ORDER BY 1, 2",
        [site, lo, hi, line, line])
    machines, lines = [], []
    for ln, m, run_s, fails, fail_s in await cur.fetchall():
        item = _rel(float(run_s or 0), int(fails or 0), float(fail_s or 0))
        if ln is None:
            continue
        if m is None:
            lines.append({"line": ln, **item})
        else:
            machines.append({"line": ln, "machine": m, **item})
    return {"site": site, "from": lo.isoformat(), "to": hi.isoformat(), "lines": lines, "machines": machines}


# -- wear trend ----------------------------------------------------------------------------------------------

@router.get("/wear", summary="Trend of a condition indicator and the estimated time until its alarm level")
async def wear(
    conn: Conn, scope: Scope, site: Annotated[Id, Query()], machine: Annotated[Id, Query()],
    signal: Annotated[str, Query(min_length=1, max_length=200, description="e.g. Vibration/RMS, Load/Spindle")],
    hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24.0,
    limit: Annotated[float | None, Query(description="alarm level (default: the threshold rule's high)")] = None,
) -> dict[str, Any]:
    """Least-squares line through the per-minute maxima of the last `hours` (maxima: the loaded value, not idle)."""
    await _check_site(conn, scope, site, machine)
    cur = await conn.execute(
        "SELECT t.tag_id, m.kind FROM tags t JOIN machines m ON m.site_id = t.site_id AND m.machine_id = t.machine_id"
        " WHERE t.site_id = %s AND t.machine_id = %s AND t.name = %s", [site, machine, signal])
    row = await cur.fetchone()
    if row is None:
        raise not_found("signal", f"{site}/{machine}/{signal}")
    tag_id, kind = int(row[0]), row[1]
    if limit is None:
        cur = await conn.execute(f"SELECT {RULE_COLUMNS} FROM monitoring_rules WHERE rule_type = 'threshold' AND enabled"
                                 " ORDER BY id")
        for r in (rule_from_row(tuple(x)) for x in await cur.fetchall()):
            if r is not None and r.matches(site, kind, machine, signal) and r.params.high is not None:
                limit = float(r.params.high)
    cur = await conn.execute(
        "SELECT (extract(epoch FROM bucket) * 1000)::bigint, max FROM samples_1m WHERE tag_id = %s AND bucket >="
        " (SELECT max(bucket) FROM samples_1m WHERE tag_id = %s) - %s * interval '1 hour' AND max IS NOT NULL"
        " ORDER BY bucket", [tag_id, tag_id, hours])
    pts = await cur.fetchall()
    out: dict[str, Any] = {"site": site, "machine": machine, "signal": signal, "limit": limit,
                           "points": [[int(t), float(v)] for t, v in pts]}
    if len(pts) < 10:
        return {**out, "slope_per_h": None, "value_now": None, "hours_to_limit": None, "crosses_at": None,
                "note": "fewer than 10 minutes of data"}
    t = np.array([p[0] for p in pts], np.float64)
    v = np.array([p[1] for p in pts], np.float64)
    th = (t - t[-1]) / 3_600_000.0
    slope, intercept = np.polyfit(th, v, 1)
    now_v = float(intercept)
    eta: float | None = None
    if limit is not None:
        if now_v >= limit:
            eta = 0.0
        elif slope > 0:
            eta = (limit - now_v) / float(slope)
    crosses = (datetime.fromtimestamp(t[-1] / 1000, UTC) + timedelta(hours=eta)).isoformat() \
        if eta is not None and math.isfinite(eta) else None
    return {**out, "slope_per_h": float(slope), "value_now": now_v, "hours_to_limit": eta, "crosses_at": crosses}

