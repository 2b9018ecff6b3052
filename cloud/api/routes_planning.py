"""Planning routes (`/api/v1/planning/...`): the manufacturing network, capacity, orders, plans, re-plans,
production orders and the anonymised benchmark.

Sharing across companies: a token sees its sites' orders, lines and production orders, the cluster's
aggregated free capacity per capability and day, and the network's master data (products, line kinds,
transport); never another site's lines, orders or figures. A lot its site makes for another site's order
shows the product and quantity, not whose order it is. Proposing, accepting and rejecting plans and editing
cluster-wide master data need a `cluster-planner` (or admin) token for all sites.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from zhizao.broker.contract.ids import Id
from zhizao.cloud.api import routes_planning_network, routes_planning_orders
from zhizao.cloud.api.deps import Conn, Scope
from zhizao.cloud.api.errors import ApiError, bad_request, not_found
from zhizao.cloud.api.planning_common import (
    Caller,
    ClusterPlanner,
    Operator,
    audit,
    planner_of,
    run_sync,
    sees_all,
)
from zhizao.cloud.auth import Principal
from zhizao.cloud.planning.basis import Disruption
from zhizao.cloud.planning.diff import plan_diff
from zhizao.cloud.planning.dispatch import line_lock
from zhizao.cloud.planning.service import Planner

router = APIRouter(prefix="/api/v1/planning", tags=["planning"])
router.include_router(routes_planning_network.router)
router.include_router(routes_planning_orders.router)


# ---------------------------------------------------------------------- plans
def _lot_json(r: dict[str, Any], principal: Principal) -> dict[str, Any] | None:
    """A lot as the token may see it: made here (no foreign order id), ordered here (no foreign line), or None."""
    makes, ordered = principal.sees(r["site_id"]), principal.sees(r["order_site"])
    if not (makes or ordered or sees_all(principal)):
        return None
    out = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items() if k != "plan_id"}
    if not ordered and not sees_all(principal):
        out["order_id"] = out["order_site"] = None
        out["lot_id"] = None
        out["due_ts"] = None
    if not makes and not sees_all(principal):
        if out.get("why_late"):  # "capacity: site/line is busy ...": the site, not its line
            out["why_late"] = str(out["why_late"]).replace(f"{r['site_id']}/{r['line_id']}", str(r["site_id"]))
        out["line_id"] = None
    return out


def _redact(plan: dict[str, Any], principal: Principal) -> dict[str, Any]:
    """A re-plan's reason names the line that went down: only a cluster planner reads it."""
    plan.pop("basis", None)  # what the plan rested on (every site's lines and stops): internal
    if not sees_all(principal) and str(plan.get("reason", "")).startswith("replan"):
        plan["reason"] = "replan"
    return plan


async def _plan_row(conn: Conn, plan_id: int, principal: Principal) -> dict[str, Any]:
    cur = await conn.execute("SELECT * FROM plan_versions WHERE plan_id = %s", [plan_id])
    row = await cur.fetchone()
    if row is None:
        raise not_found("plan", plan_id)
    names = [d.name for d in cur.description or []]
    return _redact({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in zip(names, row, strict=True)},
                   principal)


@router.get("/plans", summary="Plan versions, newest first")
async def list_plans(conn: Conn, principal: Caller, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[dict[str, Any]]:
    cur = await conn.execute("SELECT plan_id, created_at, created_by, status, reason, base_plan_id, solver, solve_s,"
                             " decided_at, decided_by FROM plan_versions ORDER BY plan_id DESC LIMIT %s", [limit])
    names = [d.name for d in cur.description or []]
    return [_redact({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in zip(names, r, strict=True)},
                    principal) for r in await cur.fetchall()]


def _progress(conn: psycopg.Connection[Any], planner: Planner, plan_id: int) -> dict[str, tuple[int, str, float]]:
    """Per lot of a plan: its production order (id, status) and the good units counted while it ran."""
    out = {}
    for po, lot, site, line, product, status, started, finished in conn.execute(
            "SELECT po_id, lot_id, site_id, line_id, product_id, status, started_at, finished_at"
            " FROM production_orders WHERE plan_id = %s AND status <> 'cancelled'", [plan_id]).fetchall():
        made = planner.progress_units(conn, site, line, product, started, finished)
        out[str(lot)] = (int(po), str(status), made)
    return out


@router.get("/plans/current", summary="The accepted plan (lots as the token may see them)")
async def current_plan(request: Request, conn: Conn, principal: Caller) -> dict[str, Any]:
    cur = await conn.execute("SELECT plan_id FROM plan_versions WHERE status = 'accepted' ORDER BY plan_id DESC LIMIT 1")
    row = await cur.fetchone()
    if row is None:
        raise not_found("plan", "current")
    return await get_plan(int(row[0]), request, conn, principal)


@router.get("/plans/{plan_id}", summary="A plan with its lots (as the token may see them) and their progress")
async def get_plan(plan_id: int, request: Request, conn: Conn, principal: Caller) -> dict[str, Any]:
    plan = await _plan_row(conn, plan_id, principal)
    cur = await conn.execute("SELECT * FROM plan_lots WHERE plan_id = %s ORDER BY site_id, line_id, seq", [plan_id])
    names = [d.name for d in cur.description or []]
    rows = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
    progress = await run_sync(request, _progress, planner_of(request), plan_id)
    lots = []
    for r in rows:
        lot = _lot_json(r, principal)
        if lot is not None:  # the lot's production order: planned / started / done and good units counted
            lot["po_id"], lot["po_status"], lot["made"] = progress.get(str(r["lot_id"]), (None, None, 0.0))
        lots.append(lot)
    if not sees_all(principal):  # cluster figures would sum other sites' orders
        for k in ("weighted_tardiness", "transport_cost", "changeover_s", "makespan_s", "lower_bound"):
            plan[k] = None
    return {**plan, "lots": [lot for lot in lots if lot is not None]}


@router.get("/plans/{plan_id}/diff", summary="What a plan changes against the plan it was built from")
async def get_diff(plan_id: int, request: Request, conn: Conn, principal: Caller) -> dict[str, Any]:
    plan = await _plan_row(conn, plan_id, principal)
    base = plan["base_plan_id"]
    changes = await run_sync(request, plan_diff, base, plan_id)
    visible = []
    for c in changes:
        sites = {c.get("from_site"), c.get("to_site"), c.get("order_site")} - {None}
        if sees_all(principal):
            visible.append(c)
        elif any(principal.sees(s) for s in sites):
            c = dict(c)
            if not principal.sees(c["order_site"]):
                c["order_id"] = c["order_site"] = c["lot_id"] = None
            for side in ("from", "to"):
                s = c.get(f"{side}_site")
                if s is not None and not principal.sees(s):
                    c[f"{side}_line"] = None
            visible.append(c)
    return {"plan_id": plan_id, "base_plan_id": base, "changes": visible}


class ReplanIn(BaseModel):
    """A capacity drop to plan around: a line down for some hours (from now), or nothing (what is measured)."""

    model_config = ConfigDict(extra="forbid")
    site: Id | None = None
    line: Id | None = None
    hours: float = Field(default=2.0, gt=0, le=24 * 30)
    reason: str = Field(default="", max_length=200)


@router.post("/plans", summary="Plan every open order now (cluster-planner); the plan is proposed", status_code=201)
async def propose(request: Request, principal: ClusterPlanner) -> dict[str, Any]:
    planner = planner_of(request)
    return await asyncio.to_thread(lambda: planner.propose(principal.name, principal.token_id))


@router.post("/replan", summary="Re-plan after a capacity drop (cluster-planner); proposed with its diff", status_code=201)
async def replan(request: Request, conn: Conn, principal: ClusterPlanner, body: Annotated[ReplanIn, Body()]) -> dict[str, Any]:
    extra = []
    if body.line is not None:
        if body.site is None:
            raise bad_request("site", None, "required with line")
        cur = await conn.execute("SELECT 1 FROM plan_lines WHERE site_id = %s AND line_id = %s", [body.site, body.line])
        if await cur.fetchone() is None:
            raise not_found("line", f"{body.site}/{body.line}")
        now = datetime.now(UTC)
        extra.append(Disruption(body.site, body.line, now, now + timedelta(hours=body.hours),
                                body.reason or "declared by the planner"))
    planner = planner_of(request)
    reason = "replan: " + (body.reason or (f"{body.site}/{body.line} down {body.hours:g} h" if body.line else "measured"))
    result = await asyncio.to_thread(lambda: planner.propose(principal.name, principal.token_id, reason=reason, extra=extra))
    result["changes"] = await run_sync(request, plan_diff, result["base_plan_id"], result["plan_id"])
    return result


async def _decide(request: Request, plan_id: int, accept: bool, principal: Principal) -> dict[str, Any]:
    planner = planner_of(request)
    try:
        return await asyncio.to_thread(planner.decide, plan_id, accept, principal.name, principal.token_id)
    except LookupError:
        raise not_found("plan", plan_id) from None
    except ValueError as exc:
        raise ApiError(409, str(exc), "plan", plan_id) from None


@router.post("/plans/{plan_id}/accept", summary="Accept a proposed plan (cluster-planner): it becomes the lines' production orders")
async def accept_plan(plan_id: int, request: Request, principal: ClusterPlanner) -> dict[str, Any]:
    return await _decide(request, plan_id, True, principal)


@router.post("/plans/{plan_id}/reject", summary="Reject a proposed plan (cluster-planner)")
async def reject_plan(plan_id: int, request: Request, principal: ClusterPlanner) -> dict[str, Any]:
    return await _decide(request, plan_id, False, principal)


# ---------------------------------------------------------------------- production orders
@router.get("/production-orders", summary="Production orders of the token's lines, with progress")
async def production_orders(request: Request, scope: Scope, principal: Caller,
                            site: Annotated[Id | None, Query()] = None, line: Annotated[Id | None, Query()] = None,
                            active: Annotated[bool, Query(description="only planned and started")] = True,
                            ) -> list[dict[str, Any]]:
    if site is not None and not scope.sees(site):
        raise not_found("site", site)
    planner = planner_of(request)

    def read(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
        rows = conn.execute(
            "SELECT p.po_id, p.plan_id, p.lot_id, p.order_id, p.site_id, p.line_id, p.product_id, p.quantity, p.seq,"
            " p.planned_start, p.planned_end, p.status, p.started_at, p.finished_at, o.site_id"
            " FROM production_orders p LEFT JOIN plan_orders o USING (order_id)"
            " WHERE (%(all)s OR p.site_id = ANY(%(sites)s)) AND (%(site)s::text IS NULL OR p.site_id = %(site)s)"
            " AND (%(line)s::text IS NULL OR p.line_id = %(line)s)"
            " AND (NOT %(active)s OR p.status IN ('planned', 'started'))"
            " ORDER BY p.site_id, p.line_id, p.status DESC, p.seq",
            {"all": principal.sites is None, "sites": principal.site_list() or [], "site": site, "line": line,
             "active": active}).fetchall()
        out = []
        for r in rows:
            item = {"po_id": r[0], "plan_id": r[1], "lot_id": r[2], "order_id": r[3], "site_id": r[4], "line_id": r[5],
                    "product_id": r[6], "quantity": r[7], "seq": r[8], "planned_start": r[9].isoformat(),
                    "planned_end": r[10].isoformat(), "status": r[11],
                    "started_at": r[12].isoformat() if r[12] else None,
                    "finished_at": r[13].isoformat() if r[13] else None,
                    "made": planner.progress_units(conn, r[4], r[5], r[6], r[12], r[13])}
            if r[14] is None or not principal.sees(str(r[14])):
                item["order_id"] = item["lot_id"] = None  # another site's order: what to make, not for whom
            out.append(item)
        return out

    out: list[dict[str, Any]] = await run_sync(request, read)
    return out


@router.post("/production-orders/{po_id}/start", summary="Start a production order on its line (operator of the site)")
async def start_po(po_id: int, request: Request, conn: Conn, scope: Scope, principal: Operator) -> dict[str, Any]:
    cur = await conn.execute(f"SELECT site_id, line_id, status, product_id, quantity FROM production_orders"
                             f" WHERE po_id = %(id)s AND {scope.where()}", scope.params(id=po_id))
    row = await cur.fetchone()
    if row is None:
        raise not_found("production_order", po_id)
    # The line dispatcher (cloud/planning/dispatch.py) starts a line's next lot under this lock: taken here too,
    # an operator's start and the dispatcher's cannot both go through.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [line_lock(row[0], row[1])])
    cur = await conn.execute("SELECT status FROM production_orders WHERE po_id = %s FOR UPDATE", [po_id])
    row = (row[0], row[1], (await cur.fetchone() or ("gone",))[0], row[3], row[4])
    if row[2] != "planned":
        raise ApiError(409, f"production order {po_id} is {row[2]}, not planned", "status", row[2])
    cur = await conn.execute("SELECT 1 FROM production_orders WHERE site_id = %s AND line_id = %s AND status = 'started'",
                             [row[0], row[1]])
    if await cur.fetchone() is not None:
        raise ApiError(409, f"line {row[0]}/{row[1]} runs another production order; finish it first", "line", row[1])
    await conn.execute("UPDATE production_orders SET status = 'started', started_at = now() WHERE po_id = %s", [po_id])
    await audit(conn, principal, "planning.po.start", str(row[0]), str(po_id),
                 {"line": row[1], "product": row[3], "quantity": row[4]})
    await conn.commit()
    # Closing the loop: the line's output machine(s) get a signed RunOrder command (cloud/planning/dispatch.py).
    sender = getattr(request.app.state, "production_order_sender", None)
    if sender is None:
        return {"po_id": po_id, "status": "started", "sent_to_line": False, "commands": [],
                "problem": "this cloud sends no commands (ZHIZAO_COMMANDS off)"}
    sent = await asyncio.to_thread(sender, po_id, principal.name, principal.token_id)
    return {"po_id": po_id, "status": "started", "sent_to_line": bool(sent.commands), "commands": sent.commands,
            "problem": sent.problem}


@router.post("/production-orders/{po_id}/finish", summary="Finish a started production order (operator of the site)")
async def finish_po(po_id: int, conn: Conn, scope: Scope, principal: Operator) -> dict[str, Any]:
    cur = await conn.execute(f"SELECT site_id, status, order_id FROM production_orders WHERE po_id = %(id)s"
                             f" AND {scope.where()}", scope.params(id=po_id))
    row = await cur.fetchone()
    if row is None:
        raise not_found("production_order", po_id)
    if row[1] != "started":
        raise ApiError(409, f"production order {po_id} is {row[1]}, not started", "status", row[1])
    await conn.execute("UPDATE production_orders SET status = 'done', finished_at = now() WHERE po_id = %s", [po_id])
    await conn.execute("UPDATE plan_orders SET status = 'done', updated_at = now() WHERE order_id = %s AND NOT EXISTS"
                       " (SELECT 1 FROM production_orders WHERE order_id = %s AND status IN ('planned', 'started'))",
                       [row[2], row[2]])
    await audit(conn, principal, "planning.po.finish", str(row[0]), str(po_id), None)
    return {"po_id": po_id, "status": "done"}
