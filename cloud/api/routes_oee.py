"""OEE routes: `/api/v1/oee`, `/api/v1/losses`, `/api/v1/states`, shift calendars, stop reasons, the state codes.

Roll-ups to line, site and cluster sum planned time, run time and ideal output of the machines' windows
(never averages of percentages). Every query is limited to the token's sites; other sites answer 404.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from zhizao.broker.contract import states
from zhizao.broker.contract.calendar import Calendar, NoShiftPeriod, Shift, StateClasses
from zhizao.broker.contract.ids import Id
from zhizao.broker.contract.states import StopCode
from zhizao.cloud.api.deps import Conn, Scope, SiteScope, get_principal, require_role
from zhizao.cloud.api.errors import bad_request, not_found
from zhizao.cloud.api.params import MachineId, SiteId, SiteQuery, TimeQuery, TimeText
from zhizao.cloud.api.series import parse_time
from zhizao.cloud.auth import Principal, Role
from zhizao.cloud.oee import queries as q

router = APIRouter(prefix="/api/v1", tags=["oee"])

ScopeKind = Literal["machine", "line", "site", "cluster"]
WindowKind = Literal["hour", "shift", "day"]
_MAX_RANGE = timedelta(days=400)
_RECOMPUTE_WAIT_S = 30.0


def _range(frm: str | None, to: str | None) -> tuple[datetime, datetime]:
    hi = parse_time("to", to) if to is not None else datetime.now(UTC)
    lo = parse_time("from", frm) if frm is not None else hi - timedelta(hours=24)
    if hi <= lo:
        raise bad_request("to", to, f"must be after from ({lo.isoformat()})")
    if hi - lo > _MAX_RANGE:
        raise bad_request("from", frm, f"range over {_MAX_RANGE.days} days; ask for less")
    return lo, hi


async def _resolve(conn: Conn, scope: SiteScope, kind: str, site: str | None, ident: str | None) -> tuple[str | None, str]:
    """(site, id) of an OEE scope, checked against the token's sites and the asset tree (404 outside)."""
    if kind == "cluster":
        await scope.check(conn, site)  # the cluster scope takes no site; one outside the token's is still 404
        return None, "cluster"
    if kind == "site":
        site = site or ident
        ident = site
    # A line or machine is found by site and id: without both there is no such object to answer for (404).
    if site is None:
        raise not_found(kind, f"{ident} (give site= with scope={kind})")
    if ident is None:
        raise not_found(kind, f"{site}/? (give id= with scope={kind})")
    if not scope.sees(site):
        raise not_found("site", site)
    sql = {
        "site": "SELECT 1 FROM sites WHERE site_id = %(site)s UNION ALL"
                " SELECT 1 FROM oee_windows WHERE site_id = %(site)s LIMIT 1",
        "line": "SELECT 1 FROM machines WHERE site_id = %(site)s AND line_id = %(id)s UNION ALL"
                " SELECT 1 FROM oee_windows WHERE site_id = %(site)s AND line_id = %(id)s LIMIT 1",
        "machine": "SELECT 1 FROM machines WHERE site_id = %(site)s AND machine_id = %(id)s UNION ALL"
                   " SELECT 1 FROM oee_windows WHERE site_id = %(site)s AND machine_id = %(id)s LIMIT 1",
    }[kind]  # fmt: skip
    cur = await conn.execute(sql, {"site": site, "id": ident})
    if await cur.fetchone() is None:
        raise not_found(kind, f"{site}/{ident}" if kind != "site" else site)
    return site, ident


@router.get("/oee", summary="OEE windows of a machine, line, site or the cluster, rolled up by sums")
async def get_oee(
    conn: Conn, scope: Scope,
    scope_kind: Annotated[ScopeKind, Query(alias="scope")] = "cluster",
    site: Annotated[Id | None, Query()] = None,
    ident: Annotated[Id | None, Query(alias="id")] = None,
    window: Annotated[WindowKind, Query()] = "hour",
    frm: Annotated[TimeQuery, Query(alias="from", description="epoch ms or ISO 8601 (default: to - 24 h)")] = None,
    to: Annotated[TimeQuery, Query(description="epoch ms or ISO 8601 (default: now)")] = None,
) -> list[dict[str, Any]]:
    """One row per window overlapping [from, to): A, P, Q, OEE, TEEP from summed planned/run/ideal time."""
    lo, hi = _range(frm, to)
    site_id, ident_ = await _resolve(conn, scope, scope_kind, site, ident)
    where, params = q.scope_filter(scope_kind, site_id, ident_)
    rows = await q.oee_rows(conn, where, scope.params(**params), window, lo, hi, scope.where())
    out = []
    for row in rows:
        item: dict[str, Any] = {"scope": scope_kind, "id": ident_}
        if scope_kind != "cluster":
            item["site"] = site_id
        item.update({"window_kind": window, "start": row["start_ts"].isoformat(), "end": row["end_ts"].isoformat(),
                     **q.row_figures(row, one_machine=scope_kind == "machine")})
        out.append(item)
    return out


@router.get("/losses", summary="Six big losses and the stop-reason pareto of a scope")
async def get_losses(
    conn: Conn, scope: Scope,
    scope_kind: Annotated[ScopeKind, Query(alias="scope")] = "cluster",
    site: Annotated[Id | None, Query()] = None,
    ident: Annotated[Id | None, Query(alias="id")] = None,
    frm: Annotated[TimeQuery, Query(alias="from")] = None,
    to: TimeQuery = None,
) -> dict[str, Any]:
    """Losses in seconds over [from, to) (exact for any hour, shift or day window, or a run of them); pareto
    of unplanned stop time per state code, planned stop time apart."""
    lo, hi = _range(frm, to)
    site_id, ident_ = await _resolve(conn, scope, scope_kind, site, ident)
    where, params = q.scope_filter(scope_kind, site_id, ident_)
    totals = await q.loss_totals(conn, where, scope.params(**params), lo, hi, scope.where())
    covered_s = totals.pop("covered_s")
    machines: list[tuple[str, str]] | None = None
    if scope_kind != "cluster":
        cur = await conn.execute(f"SELECT site_id, machine_id FROM machines WHERE {where} UNION"
                                 f" SELECT site_id, machine_id FROM oee_windows WHERE {where}", params)
        machines = [(str(a), str(b)) for a, b in await cur.fetchall()]
    intervals = await q.timeline(conn, machines, lo, hi, datetime.now(UTC), scope.where("c.site_id"), scope.params())
    sites = sorted({r["site_id"] for r in intervals})
    configs = await q.site_configs(conn, sites)
    lo_ms, hi_ms = q.store_ms(lo), q.store_ms(hi)
    plans = {site: cal.plan_intervals(lo_ms, hi_ms) for site, cal in (await q.site_calendars(conn, sites)).items()}
    # Pareto of unplanned stops only: stop time inside the calendar's planned production time. Planned time
    # apart: planned states (breaks, no shift, no order) and stop time outside the calendar (a break, a
    # planned stop), by the state's code.
    pareto: dict[int, dict[str, Any]] = {}
    planned: dict[int, dict[str, Any]] = {}

    def add(into: dict[int, dict[str, Any]], code: int, category: str, seconds: float, new: bool) -> None:
        entry = into.setdefault(code, {"code": code, "category": category, "reason": states.state_name(code),
                                       "seconds": 0.0, "count": 0})
        entry["seconds"] += seconds
        entry["count"] += 1 if new else 0

    for r in intervals:
        code = int(r["reason_code"] if r["reason_code"] is not None else r["code"])
        category = q.category_name(configs[r["site_id"]], code)
        if category in ("running", "reduced_speed"):
            continue
        a, b = q.store_ms(r["start_ts"]), q.store_ms(r["end_ts"])
        new = r["stop_ts"] >= lo  # a stop that began before the range is not counted again
        inside = 0 if category == "planned" else q.split_by_plan(a, b, *plans[r["site_id"]])
        if inside:
            add(pareto, code, category, inside / 1000, new)
        if b - a > inside:
            add(planned, code, category, (b - a - inside) / 1000, new and not inside)
    def ranked(d: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(d.values(), key=lambda e: (-e["seconds"], e["code"]))

    six = {name: totals[name] for name in q.LOSS_FIELDS if name != "material_stops_s"}
    return {"six_big_losses": six, "material_stops_s": totals["material_stops_s"], "covered_s": covered_s,
            "pareto": ranked(pareto), "planned": ranked(planned)}


@router.get("/states", summary="State timeline of a machine")
async def get_states(
    conn: Conn, scope: Scope,
    site: SiteQuery,
    machine: Annotated[Id, Query()],
    frm: Annotated[TimeQuery, Query(alias="from")] = None,
    to: TimeQuery = None,
) -> list[dict[str, Any]]:
    """Intervals `[start, end)` with code, category and reason; an operator's reason replaces the code."""
    lo, hi = _range(frm, to)
    await _resolve(conn, scope, "machine", site, machine)
    rows = await q.timeline(conn, [(site, machine)], lo, hi, datetime.now(UTC), scope.where("c.site_id"),
                            scope.params())
    config = (await q.site_configs(conn, [site]))[site]
    out = []
    for r in rows:
        code = int(r["reason_code"] if r["reason_code"] is not None else r["code"])
        item = {"start": r["start_ts"].isoformat(), "end": r["end_ts"].isoformat(), "code": code,
                "category": q.category_name(config, code), "reason": states.state_name(code),
                "stop_start": r["stop_ts"].isoformat()}
        if r["reason_code"] is not None:
            item["original_code"] = int(r["code"])
        out.append(item)
    return out


class PlannedStopIn(BaseModel):
    """A one-off planned stop of a site."""

    model_config = ConfigDict(extra="forbid")
    start: datetime
    end: datetime
    code: StopCode = states.PREVENTIVE_MAINTENANCE
    note: str = ""

    @field_validator("start", "end")
    @classmethod
    def _zoned(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError(f"{value.isoformat()!r} has no zone; add Z or +hh:mm")
        return value


class CalendarIn(BaseModel):
    """A site's shift calendar, planned stops and (optionally) state classes and time zone."""

    model_config = ConfigDict(extra="forbid")
    timezone: str | None = None
    shifts: list[Shift] = Field(min_length=1)
    no_shift: list[NoShiftPeriod] = Field(default_factory=list)
    planned_stops: list[PlannedStopIn] = Field(default_factory=list)
    state_classes: StateClasses | None = None
    microstop_s: float | None = Field(default=None, ge=0, le=86400,
                                      description="stops shorter than this are microstops (default: kept, else 120)")
    startup_s: float | None = Field(default=None, ge=0, le=86400,
                                    description="rejects this long after a restart are startup rejects (default: kept, else 0)")
    recompute_from: datetime | None = Field(default=None, description="recompute windows from here (default: 7 days ago)")


async def _stored_calendar(conn: Conn, site: str) -> dict[str, Any]:
    cur = await conn.execute("SELECT tz, calendar, state_classes, source, updated_at, updated_by, microstop_s,"
                             " startup_s FROM oee_site_config WHERE site_id = %s", [site])
    row = await cur.fetchone()
    cur = await conn.execute("SELECT start_ts, end_ts, code, note FROM oee_planned_stops WHERE site_id = %s"
                             " AND work_order_id IS NULL ORDER BY start_ts", [site])  # work orders keep their own
    stops = [{"start": s.isoformat(), "end": e.isoformat(), "code": c, "note": n or ""} for s, e, c, n in await cur.fetchall()]
    if row is None:
        return {"site": site, "timezone": None, "shifts": None, "no_shift": [], "planned_stops": stops,
                "state_classes": None, "microstop_s": 120.0, "startup_s": 0.0, "source": "default (all day)"}
    return {"site": site, "timezone": row[0], **row[1], "planned_stops": stops, "state_classes": row[2],
            "microstop_s": row[6], "startup_s": row[7],
            "source": row[3], "updated_at": row[4].isoformat(), "updated_by": row[5]}


async def _recompute(request: Request, site: str, machine: str | None, since: datetime) -> bool:
    """Ask the OEE service (if this process runs one) to recompute, and wait for it."""
    service = getattr(request.app.state, "oee", None)
    if service is None:
        return False
    done = service.recompute(site, machine, int(since.timestamp() * 1000))
    return bool(await asyncio.to_thread(done.wait, _RECOMPUTE_WAIT_S)) and done.ok


@router.get("/sites/{site}/calendar", summary="A site's shift calendar, planned stops and state classes")
async def get_calendar(site: SiteId, conn: Conn, scope: Scope) -> dict[str, Any]:
    """The stored calendar (from the seeds, or as last edited)."""
    await _resolve(conn, scope, "site", site, site)
    return await _stored_calendar(conn, site)


@router.put("/sites/{site}/calendar", summary="Replace a site's calendar (engineer or above); windows are recomputed")
async def put_calendar(
    site: SiteId, request: Request, conn: Conn, scope: Scope,
    principal: Annotated[Principal, Depends(require_role(Role.engineer))],
    body: Annotated[CalendarIn, Body()],
) -> dict[str, Any]:
    """Store the calendar and planned stops, write the audit log, recompute the site's windows."""
    await _resolve(conn, scope, "site", site, site)
    calendar = Calendar(shifts=body.shifts, no_shift=body.no_shift)
    cur = await conn.execute("SELECT tz, state_classes, microstop_s, startup_s FROM oee_site_config WHERE site_id = %s",
                             [site])
    old = await cur.fetchone()
    microstop_s = body.microstop_s if body.microstop_s is not None else (old[2] if old else 120.0)
    startup_s = body.startup_s if body.startup_s is not None else (old[3] if old else 0.0)
    tz = body.timezone or (old[0] if old else None)
    if tz is None:
        cur = await conn.execute("SELECT tz FROM sites WHERE site_id = %s", [site])
        row = await cur.fetchone()
        tz = str(row[0]) if row else "UTC"
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(tz)
    except (ValueError, KeyError) as exc:
        raise bad_request("timezone", tz, "not an IANA time zone") from exc
    classes = body.state_classes.model_dump(mode="json") if body.state_classes else (old[1] if old else None)
    for i, stop in enumerate(body.planned_stops):
        if stop.end <= stop.start:
            raise bad_request(f"planned_stops[{i}].end", stop.end.isoformat(), "must be after start")
    await conn.commit()  # the token check opened a transaction; our writes must be visible to the OEE worker
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO oee_site_config (site_id, tz, calendar, state_classes, source, updated_at, updated_by,"
            " microstop_s, startup_s)"
            " VALUES (%s, %s, %s, %s, 'api', now(), %s, %s, %s) ON CONFLICT (site_id) DO UPDATE SET tz = excluded.tz,"
            " calendar = excluded.calendar, state_classes = excluded.state_classes, source = 'api',"
            " updated_at = now(), updated_by = excluded.updated_by, microstop_s = excluded.microstop_s,"
            " startup_s = excluded.startup_s",
            [site, tz, json.dumps(calendar.model_dump(mode="json")), json.dumps(classes) if classes else None,
             principal.name, microstop_s, startup_s],
        )
        await conn.execute("DELETE FROM oee_planned_stops WHERE site_id = %s AND work_order_id IS NULL", [site])
        for stop in body.planned_stops:
            await conn.execute("INSERT INTO oee_planned_stops (site_id, start_ts, end_ts, code, note)"
                               " VALUES (%s, %s, %s, %s, %s)", [site, stop.start, stop.end, stop.code, stop.note])
        await conn.execute(
            "INSERT INTO audit_log (token_id, actor, action, site_id, target, detail) VALUES (%s, %s, %s, %s, %s, %s)",
            [principal.token_id, principal.name, "oee.calendar.put", site, site,
             json.dumps({"shifts": len(body.shifts), "planned_stops": len(body.planned_stops),
                         "microstop_s": microstop_s, "startup_s": startup_s})],
        )
    await conn.commit()
    since = body.recompute_from or datetime.now(UTC) - timedelta(days=7)
    result = await _stored_calendar(conn, site)
    result["recomputed"] = await _recompute(request, site, None, since)
    return result


@router.get("/sites/{site}/stop-reasons", summary="Reasons an operator may give a site's unspecified stops")
async def get_stop_reasons(site: SiteId, conn: Conn, scope: Scope) -> list[dict[str, Any]]:
    """The base stop codes 50000..220000 (DESIGN.md section 4) with their names and the site's category."""
    await _resolve(conn, scope, "site", site, site)
    config = (await q.site_configs(conn, [site]))[site]
    return [
        {"code": s.code, "name": s.name, "name_zh": s.name_zh, "category": q.category_name(config, s.code)}
        for s in states.CATALOGUE.values()
        if states.is_stop_reason(s.code)
    ]


@router.get("/state-codes", summary="The state-code catalogue: base codes, names, default categories",
            dependencies=[Depends(get_principal)])
async def get_state_codes() -> dict[str, Any]:
    """Every base code of DESIGN.md section 4 with its names and default category, and the category order."""
    return {
        "categories": [c.value for c in states.Category],
        "min": states.MIN_STATE_CODE, "max": states.MAX_STATE_CODE,
        "codes": [{"code": s.code, "name": s.name, "name_zh": s.name_zh, "category": s.category.value}
                  for s in states.CATALOGUE.values()],
    }  # fmt: skip


class StopReasonIn(BaseModel):
    """The reason for the stop that began at `start`."""

    model_config = ConfigDict(extra="forbid")
    start: TimeText
    code: int


@router.post("/sites/{site}/machines/{machine}/stops/reason",
             summary="Give an unspecified stop a reason (operator or above); its windows are recomputed")
async def post_stop_reason(
    site: SiteId, machine: MachineId, request: Request, conn: Conn, scope: Scope,
    principal: Annotated[Principal, Depends(require_role(Role.operator))],
    body: Annotated[StopReasonIn, Body()],
) -> dict[str, Any]:
    """The stop must begin exactly at `start` (as /states reports it) and be an unspecified stop (40000-49999)."""
    await _resolve(conn, scope, "machine", site, machine)
    start = parse_time("start", body.start)
    if not states.is_stop_reason(body.code):
        raise bad_request("code", body.code, "not a stop reason code (50000..229999, DESIGN.md section 4)")
    cur = await conn.execute("SELECT code FROM oee_state_changes WHERE site_id = %s AND machine_id = %s AND ts = %s",
                             [site, machine, start])
    row = await cur.fetchone()
    if row is None:
        raise not_found("stop", f"{site}/{machine}@{start.isoformat()}")
    if states.base_of(int(row[0])) != states.UNSPECIFIED_STOP:
        raise bad_request("start", body.start, f"the state that began then has code {row[0]}, not an unspecified stop")
    await conn.commit()  # the token check opened a transaction; our writes must be visible to the OEE worker
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO oee_stop_reasons (site_id, machine_id, ts, code, set_by) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (site_id, machine_id, ts) DO UPDATE SET code = excluded.code, set_by = excluded.set_by,"
            " set_at = now()",
            [site, machine, start, body.code, principal.name],
        )
        await conn.execute(
            "INSERT INTO audit_log (token_id, actor, action, site_id, target, detail) VALUES (%s, %s, %s, %s, %s, %s)",
            [principal.token_id, principal.name, "oee.stop.reason", site, machine,
             json.dumps({"start": start.isoformat(), "code": body.code, "was": int(row[0])})],
        )
    await conn.commit()
    recomputed = await _recompute(request, site, machine, start)
    return {"site": site, "machine": machine, "start": start.isoformat(), "code": body.code,
            "reason": states.state_name(body.code), "recomputed": recomputed}
