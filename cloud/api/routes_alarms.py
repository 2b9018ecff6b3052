"""Alarms, anomaly scores, monitoring rules and webhooks: `/api/v1/alarms`, `/api/v1/anomaly-scores`, ...

Reading needs any role; acknowledging, shelving and unshelving an alarm need operator or above (with a
comment), taking it out of or back into service engineer or above; rules and webhooks are written by engineers
or above. Every transition goes through `zhizao.cloud.monitoring.alarms` (the one state model), writes the
alarm history, the audit log and the webhook outbox in one transaction, and is pushed on the live stream.
Objects outside a token's sites answer 404.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, field_validator

from zhizao.broker.contract.ids import Id
from zhizao.cloud.api.deps import Conn, Scope, SiteScope, require_role
from zhizao.cloud.api.errors import ApiError, bad_request, not_found
from zhizao.cloud.api.params import TimeQuery
from zhizao.cloud.api.series import parse_time
from zhizao.cloud.auth import Principal, Role, audit_params
from zhizao.cloud.monitoring import alarms as al
from zhizao.cloud.monitoring.rules import PRIORITIES, RULE_COLUMNS, Priority, RuleIn, rule_from_row
from zhizao.cloud.storage.db import translate_errors

router = APIRouter(prefix="/api/v1", tags=["alarms"])

AlarmState = Literal["normal", "unack", "ack", "rtn_unack", "shelved", "suppressed", "out_of_service"]
Source = Literal["anomaly", "threshold", "rate", "failure", "microstops", "offline", "stale", "flood"]
_OPEN = ("unack", "ack", "rtn_unack")  # what an operator still has to look at
_MAX_SHELVE_MIN = 7 * 24 * 60
_PRIORITY_ORDER = "array_position(ARRAY['critical', 'high', 'medium', 'low'], a.priority)"


def _iso(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


@router.get("/alarms", summary="Alarms, most urgent first, filtered by site, machine, state, priority, source")
async def list_alarms(
    conn: Conn, scope: Scope,
    site: Annotated[Id | None, Query()] = None,
    machine: Annotated[Id | None, Query()] = None,
    state: Annotated[list[AlarmState] | None, Query(description="repeat for several; default: unack, ack, rtn_unack")] = None,
    priority: Annotated[list[Priority] | None, Query()] = None,
    source: Annotated[list[Source] | None, Query()] = None,
    all_states: Annotated[bool, Query(alias="all", description="every state, normal included")] = False,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[dict[str, Any]]:
    """Alarm points in the token's sites; by default only those that need attention."""
    await scope.check(conn, site)
    states = None if all_states else list(state or _OPEN)
    params = scope.params(site=site, machine=machine, states=states, prios=priority, sources=source, limit=limit)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {', '.join('a.' + c.strip() for c in al.ROW.split(','))} FROM alarms a"
            f" WHERE {scope.where('a.site_id')} AND (%(site)s::text IS NULL OR a.site_id = %(site)s)"
            " AND (%(machine)s::text IS NULL OR a.machine_id = %(machine)s)"
            " AND (%(states)s::text[] IS NULL OR a.state = ANY(%(states)s))"
            " AND (%(prios)s::text[] IS NULL OR a.priority = ANY(%(prios)s))"
            " AND (%(sources)s::text[] IS NULL OR a.source = ANY(%(sources)s))"
            f" ORDER BY a.state = 'unack' DESC, {_PRIORITY_ORDER}, a.raised_ts DESC NULLS LAST, a.id DESC"
            " LIMIT %(limit)s", params)
        rows = await cur.fetchall()
    return [al.alarm_json(r) for r in rows]


@router.get("/alarms/summary", summary="Alarm counts by state and priority (the dashboard's badge)")
async def alarm_summary(conn: Conn, scope: Scope, site: Annotated[Id | None, Query()] = None) -> dict[str, Any]:
    """Counts of alarms per state and, for those needing attention, per priority."""
    await scope.check(conn, site)
    cur = await conn.execute(
        f"SELECT state, priority, count(*) FROM alarms WHERE {scope.where()}"
        " AND (%(site)s::text IS NULL OR site_id = %(site)s) GROUP BY 1, 2", scope.params(site=site))
    by_state: dict[str, int] = dict.fromkeys(al.STATES, 0)
    by_priority: dict[str, int] = dict.fromkeys(PRIORITIES, 0)
    for st, prio, n in await cur.fetchall():
        by_state[st] += int(n)
        if st in _OPEN:
            by_priority[prio] += int(n)
    return {"open": sum(by_state[s] for s in _OPEN), "unacknowledged": by_state["unack"] + by_state["rtn_unack"],
            "by_state": by_state, "by_priority": by_priority}


async def _alarm_site(conn: Conn, scope: SiteScope, alarm_id: int) -> str:
    cur = await conn.execute(f"SELECT site_id FROM alarms WHERE id = %(id)s AND {scope.where()}",
                             scope.params(id=alarm_id))
    row = await cur.fetchone()
    if row is None:
        raise not_found("alarm", alarm_id)
    return str(row[0])


@router.get("/alarms/history", summary="Alarm transitions of a site over a time range (newest first)")
async def alarm_history(
    conn: Conn, scope: Scope, site: Annotated[Id, Query()],
    frm: Annotated[TimeQuery, Query(alias="from")] = None, to: Annotated[TimeQuery, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[dict[str, Any]]:
    """Every transition (wall time `at`, data time `data_ts`) of the site's alarms."""
    if not scope.sees(site):
        raise not_found("site", site)
    hi = parse_time("to", to) if to else datetime.now(UTC) + timedelta(days=3650)
    lo = parse_time("from", frm) if frm else datetime(1970, 1, 1, tzinfo=UTC)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT h.id, h.alarm_id, a.key, a.source, a.machine_id AS machine, h.at, h.data_ts, h.event, h.from_state,"
            " h.to_state, h.actor, h.comment, h.value FROM alarm_history h JOIN alarms a ON a.id = h.alarm_id"
            " WHERE h.site_id = %s AND coalesce(h.data_ts, h.at) >= %s AND coalesce(h.data_ts, h.at) < %s"
            " ORDER BY h.id DESC LIMIT %s", [site, lo, hi, limit])
        return [_iso(r) for r in await cur.fetchall()]


@router.get("/alarms/{alarm_id}", summary="One alarm with its history")
async def get_alarm(alarm_id: Annotated[int, Path(ge=1)], conn: Conn, scope: Scope) -> dict[str, Any]:
    """The alarm point and every transition it went through (newest first)."""
    await _alarm_site(conn, scope, alarm_id)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {al.ROW} FROM alarms WHERE id = %s", [alarm_id])
        row = await cur.fetchone()
        await cur.execute("SELECT id, at, data_ts, event, from_state, to_state, actor, comment, value FROM alarm_history"
                          " WHERE alarm_id = %s ORDER BY id DESC LIMIT 500", [alarm_id])
        history = [_iso(r) for r in await cur.fetchall()]
    assert row is not None
    return {**al.alarm_json(row), "history": history}


class CommentIn(BaseModel):
    """Why: every operator action on an alarm carries a comment (kept in its history and the audit log)."""

    model_config = ConfigDict(extra="forbid")
    comment: str = Field(min_length=1, max_length=2000)

    @field_validator("comment")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class ShelveIn(CommentIn):
    """Shelve for `minutes` (at most a week)."""

    minutes: float = Field(gt=0, le=_MAX_SHELVE_MIN)


class ServiceIn(CommentIn):
    """Take out of service (true) or return to service (false)."""

    out_of_service: bool = True


def _transition(url: str, alarm_id: int, principal: Principal, action: str,
                fn: Callable[[al.Row], al.Transition]) -> tuple[al.Row, list[tuple[str, dict[str, Any]]]]:
    """Apply one person's transition in one transaction: alarm row, history, outbox, audit log."""
    with translate_errors(), psycopg.connect(url) as conn, conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(f"SELECT {al.ROW} FROM alarms WHERE id = %s FOR UPDATE", [alarm_id])
            row = cur.fetchone()
        assert row is not None
        t = fn(row)
        store = al.Store(conn)
        store.save(row, al.Transition(t.event, t.from_state, "", principal.name, None, t.comment))
        sql, params = audit_params(principal.token_id, principal.name, f"alarm.{action}", row["site_id"], str(alarm_id),
                                   {"key": row["key"], "from": t.from_state, "to": row["state"], "comment": t.comment})
        conn.execute(sql, params)
    return row, store.published


async def _act(request: Request, conn: Conn, scope: SiteScope, alarm_id: int, principal: Principal, action: str,
               fn: Callable[[al.Row], al.Transition]) -> dict[str, Any]:
    await _alarm_site(conn, scope, alarm_id)
    await conn.commit()
    url = request.app.state.settings.require_database_url()
    try:
        row, published = await asyncio.to_thread(_transition, url, alarm_id, principal, action, fn)
    except al.TransitionRefused as exc:
        raise ApiError(409, str(exc), "state", None) from None
    live = request.app.state.live
    for site, body in published:
        live.publish("alarm", site, body)
    service = getattr(request.app.state, "monitoring", None)
    if service is not None and service.webhooks is not None:
        service.webhooks.wake()
    return al.alarm_json(row)


Operator = Annotated[Principal, Depends(require_role(Role.operator))]
Engineer = Annotated[Principal, Depends(require_role(Role.engineer))]


@router.post("/alarms/{alarm_id}/acknowledge", summary="Acknowledge an alarm (operator or above, with a comment)")
async def acknowledge(alarm_id: Annotated[int, Path(ge=1)], request: Request, conn: Conn, scope: Scope,
                      principal: Operator, body: Annotated[CommentIn, Body()]) -> dict[str, Any]:
    """unack -> ack, rtn_unack -> normal; 409 when already acknowledged."""
    return await _act(request, conn, scope, alarm_id, principal, "acknowledge",
                      lambda row: al.acknowledge(row, principal.name, body.comment))


@router.post("/alarms/{alarm_id}/shelve", summary="Shelve an alarm for some minutes (operator or above)")
async def shelve(alarm_id: Annotated[int, Path(ge=1)], request: Request, conn: Conn, scope: Scope,
                 principal: Operator, body: Annotated[ShelveIn, Body()]) -> dict[str, Any]:
    """Shelved until now + minutes; the service unshelves it by itself when that passes."""
    until = datetime.now(UTC) + timedelta(minutes=body.minutes)
    return await _act(request, conn, scope, alarm_id, principal, "shelve",
                      lambda row: al.shelve(row, principal.name, body.comment, until))


@router.post("/alarms/{alarm_id}/unshelve", summary="Unshelve an alarm (operator or above)")
async def unshelve(alarm_id: Annotated[int, Path(ge=1)], request: Request, conn: Conn, scope: Scope,
                   principal: Operator, body: Annotated[CommentIn, Body()]) -> dict[str, Any]:
    """Back to its state from the condition and acknowledgement; 409 when not shelved."""
    return await _act(request, conn, scope, alarm_id, principal, "unshelve",
                      lambda row: al.unshelve(row, principal.name, body.comment))


@router.post("/alarms/{alarm_id}/out-of-service",
             summary="Take an alarm out of service or return it (engineer or above)")
async def set_out_of_service(alarm_id: Annotated[int, Path(ge=1)], request: Request, conn: Conn, scope: Scope,
                             principal: Engineer, body: Annotated[ServiceIn, Body()]) -> dict[str, Any]:
    """Out of service: its condition is still tracked but never announced, until returned to service."""
    return await _act(request, conn, scope, alarm_id, principal,
                      "out_of_service" if body.out_of_service else "return_to_service",
                      lambda row: al.out_of_service(row, principal.name, body.comment, body.out_of_service))


# -- anomaly scores ------------------------------------------------------------------------------------------

@router.get("/anomaly-scores", summary="Anomaly scores of a machine's process signals over a time range")
async def anomaly_scores(
    conn: Conn, scope: Scope, site: Annotated[Id, Query()], machine: Annotated[Id, Query()],
    signal: Annotated[str | None, Query(max_length=200, description="metric name; default: every signal")] = None,
    frm: Annotated[TimeQuery, Query(alias="from")] = None, to: Annotated[TimeQuery, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 20_000,
) -> dict[str, Any]:
    """Per signal: [ts ms, score] pairs (scored samples only), the newest `limit` in time order."""
    if not scope.sees(site):
        raise not_found("site", site)
    hi = parse_time("to", to) if to else datetime.now(UTC) + timedelta(days=1)
    lo = parse_time("from", frm) if frm else hi - timedelta(hours=24)
    if hi <= lo:
        raise bad_request("to", to, f"must be after from ({lo.isoformat()})")
    cur = await conn.execute("SELECT tag_id, name FROM tags WHERE site_id = %s AND machine_id = %s"
                             " AND (%s::text IS NULL OR name = %s) ORDER BY name", [site, machine, signal, signal])
    tags = await cur.fetchall()
    if not tags:
        raise not_found("machine" if signal is None else "signal", f"{site}/{machine}" + (f"/{signal}" if signal else ""))
    out: dict[str, Any] = {"site": site, "machine": machine, "signals": []}
    for tag_id, name in tags:
        cur = await conn.execute(
            "SELECT * FROM (SELECT (extract(epoch FROM ts) * 1000)::bigint, score, alarm FROM anomaly_scores"
            " WHERE tag_id = %s AND ts >= %s AND ts < %s AND score IS NOT NULL ORDER BY ts DESC LIMIT %s) x ORDER BY 1",
            [tag_id, lo, hi, limit])
        rows = await cur.fetchall()
        if rows:
            out["signals"].append({"tag_id": tag_id, "signal": name,
                                   "points": [[int(t), float(s)] for t, s, _ in rows],
                                   "above": [int(t) for t, _, a in rows if a]})
    return out


# -- rules ---------------------------------------------------------------------------------------------------

def _check_rule_scope(scope: SiteScope, principal: Principal, site: str | None) -> None:
    if site is None and principal.sites is not None:
        raise ApiError(403, "a rule for every site needs a token for every site; give a site", "site", None)
    if site is not None and not scope.sees(site):
        raise not_found("site", site)


@router.get("/monitoring/rules", summary="Detector and alarm rules (the ones for the token's sites and global ones)")
async def list_rules(conn: Conn, scope: Scope) -> list[dict[str, Any]]:
    """Every stored rule that applies inside the token's sites."""
    cur = await conn.execute(f"SELECT {RULE_COLUMNS} FROM monitoring_rules WHERE site_id IS NULL OR"
                             f" {scope.where()} ORDER BY id", scope.params())
    return [r.as_json() for r in (rule_from_row(tuple(x)) for x in await cur.fetchall()) if r is not None]


async def _reload(request: Request) -> bool:
    service = getattr(request.app.state, "monitoring", None)
    if service is None:
        return False
    return bool(await asyncio.to_thread(service.reload_rules))


async def _write_rule(conn: Conn, principal: Principal, rule_id: int | None, body: RuleIn) -> int:
    await conn.commit()
    async with conn.transaction():
        values = [body.rule_type, body.site, body.machine_kind, body.machine, body.tag, json.dumps(body.params),
                  body.priority, body.enabled, principal.name]
        if rule_id is None:
            cur = await conn.execute(
                "INSERT INTO monitoring_rules (rule_type, site_id, machine_kind, machine_id, tag_name, params, priority,"
                " enabled, updated_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id", values)
        else:
            cur = await conn.execute(
                "UPDATE monitoring_rules SET rule_type = %s, site_id = %s, machine_kind = %s, machine_id = %s,"
                " tag_name = %s, params = %s, priority = %s, enabled = %s, updated_by = %s, source = 'api',"
                " updated_at = now() WHERE id = %s RETURNING id", [*values, rule_id])
        row = await cur.fetchone()
        assert row is not None
        sql, params = audit_params(principal.token_id, principal.name, "monitoring.rule.put" if rule_id else
                                   "monitoring.rule.create", body.site, str(row[0]), body.model_dump(mode="json"))
        await conn.execute(sql, params)
    await conn.commit()
    return int(row[0])


async def _rule_site(conn: Conn, scope: SiteScope, principal: Principal, rule_id: int) -> None:
    cur = await conn.execute("SELECT site_id FROM monitoring_rules WHERE id = %s", [rule_id])
    row = await cur.fetchone()
    if row is None or (row[0] is not None and not scope.sees(str(row[0]))):
        raise not_found("rule", rule_id)
    _check_rule_scope(scope, principal, row[0])


@router.post("/monitoring/rules", summary="Add a detector or alarm rule (engineer or above)", status_code=201)
async def create_rule(request: Request, conn: Conn, scope: Scope, principal: Engineer,
                      body: Annotated[RuleIn, Body()]) -> dict[str, Any]:
    """Validated by the model of its type (a wrong parameter names field and value); applies at once."""
    _check_rule_scope(scope, principal, body.site)
    rule_id = await _write_rule(conn, principal, None, body)
    return {"id": rule_id, **body.model_dump(mode="json"), "applied": await _reload(request)}


@router.put("/monitoring/rules/{rule_id}", summary="Replace a rule (engineer or above)")
async def put_rule(rule_id: Annotated[int, Path(ge=1)], request: Request, conn: Conn, scope: Scope,
                   principal: Engineer, body: Annotated[RuleIn, Body()]) -> dict[str, Any]:
    """A changed detector starts its tags afresh (from their newest scored sample, history is not re-scored)."""
    await _rule_site(conn, scope, principal, rule_id)
    _check_rule_scope(scope, principal, body.site)
    await _write_rule(conn, principal, rule_id, body)
    return {"id": rule_id, **body.model_dump(mode="json"), "applied": await _reload(request)}


@router.delete("/monitoring/rules/{rule_id}", summary="Delete a rule (engineer or above)")
async def delete_rule(rule_id: Annotated[int, Path(ge=1)], request: Request, conn: Conn, scope: Scope,
                      principal: Engineer) -> dict[str, Any]:
    """Its active alarms clear."""
    await _rule_site(conn, scope, principal, rule_id)
    await conn.commit()
    async with conn.transaction():
        await conn.execute("DELETE FROM monitoring_rules WHERE id = %s", [rule_id])
        sql, params = audit_params(principal.token_id, principal.name, "monitoring.rule.delete", None, str(rule_id), None)
        await conn.execute(sql, params)
    await conn.commit()
    return {"id": rule_id, "deleted": True, "applied": await _reload(request)}


# -- webhooks ------------------------------------------------------------------------------------------------

Event = Literal["activate", "clear", "acknowledge", "shelve", "unshelve", "expire", "out_of_service",
                "return_to_service"]


class WebhookIn(BaseModel):
    """Where to POST alarm transitions; the secret signs them (generated when not given)."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=8, max_length=2000, pattern=r"^https?://")
    site: Id | None = None
    events: list[Event] | None = None
    secret: str | None = Field(default=None, min_length=16, max_length=200)


@router.get("/webhooks", summary="Webhooks (engineer or above); secrets are never shown again")
async def list_webhooks(conn: Conn, scope: Scope, principal: Engineer) -> list[dict[str, Any]]:
    """Webhooks of the token's sites, with their delivery counts by status."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT h.id, h.site_id AS site, h.url, h.events, h.enabled, h.created_at, h.created_by,"
            " count(*) FILTER (WHERE d.status = 'pending') AS pending,"
            " count(*) FILTER (WHERE d.status = 'delivered') AS delivered,"
            " count(*) FILTER (WHERE d.status = 'failed') AS failed"
            " FROM webhooks h LEFT JOIN webhook_deliveries d ON d.webhook_id = h.id"
            f" WHERE (h.site_id IS NULL AND %(scope_all)s) OR {scope.where('h.site_id')} GROUP BY h.id ORDER BY h.id",
            scope.params())
        return [_iso(r) for r in await cur.fetchall()]


@router.post("/webhooks", summary="Add a webhook (engineer or above); answers its secret once", status_code=201)
async def create_webhook(conn: Conn, scope: Scope, principal: Engineer,
                         body: Annotated[WebhookIn, Body()]) -> dict[str, Any]:
    """Deliveries carry X-Zhizao-Signature: sha256=HMAC(secret, timestamp + '.' + body)."""
    _check_rule_scope(scope, principal, body.site)
    secret = body.secret or secrets.token_urlsafe(32)
    await conn.commit()
    async with conn.transaction():
        cur = await conn.execute("INSERT INTO webhooks (site_id, url, secret, events, created_by) VALUES (%s, %s, %s, %s, %s)"
                                 " RETURNING id", [body.site, body.url, secret, body.events, principal.name])
        row = await cur.fetchone()
        assert row is not None
        sql, params = audit_params(principal.token_id, principal.name, "webhook.create", body.site, str(row[0]),
                                   {"url": body.url, "events": body.events})
        await conn.execute(sql, params)
    await conn.commit()
    return {"id": int(row[0]), "site": body.site, "url": body.url, "events": body.events, "secret": secret}


async def _webhook(conn: Conn, scope: SiteScope, webhook_id: int) -> None:
    cur = await conn.execute("SELECT site_id FROM webhooks WHERE id = %s", [webhook_id])
    row = await cur.fetchone()
    if row is None or (row[0] is None and scope.principal.sites is not None) or (
            row[0] is not None and not scope.sees(str(row[0]))):
        raise not_found("webhook", webhook_id)


@router.delete("/webhooks/{webhook_id}", summary="Delete a webhook and its deliveries (engineer or above)")
async def delete_webhook(webhook_id: Annotated[int, Path(ge=1)], conn: Conn, scope: Scope,
                         principal: Engineer) -> dict[str, Any]:
    """Pending deliveries are dropped with it."""
    await _webhook(conn, scope, webhook_id)
    await conn.commit()
    async with conn.transaction():
        await conn.execute("DELETE FROM webhooks WHERE id = %s", [webhook_id])
        sql, params = audit_params(principal.token_id, principal.name, "webhook.delete", None, str(webhook_id), None)
        await conn.execute(sql, params)
    await conn.commit()
    return {"id": webhook_id, "deleted": True}


@router.get("/webhooks/{webhook_id}/deliveries", summary="A webhook's deliveries, failures included (engineer+)")
async def webhook_deliveries(
    webhook_id: Annotated[int, Path(ge=1)], conn: Conn, scope: Scope, principal: Engineer,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> list[dict[str, Any]]:
    """Newest first: status, attempts, the last HTTP status and error, the payload."""
    await _webhook(conn, scope, webhook_id)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, alarm_id, event, status, attempts, last_status, last_error, next_at, created_at, delivered_at,"
            " payload FROM webhook_deliveries WHERE webhook_id = %s AND (%s::text IS NULL OR status = %s)"
            " ORDER BY id DESC LIMIT %s", [webhook_id, status, status, limit])
        return [_iso(r) for r in await cur.fetchall()]
