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
import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zhizao.broker.contract.ids import Id
from zhizao.cloud.api.deps import Conn, Scope, SiteScope, get_principal, require_role
from zhizao.cloud.api.errors import ApiError, bad_request, not_found
from zhizao.cloud.api.params import LineId, SiteId
from zhizao.cloud.auth import Principal, Role
from zhizao.cloud.planning import benchmark, capacity
from zhizao.cloud.planning.network import load_model
from zhizao.cloud.planning.service import Disruption, Planner, plan_diff

router = APIRouter(prefix="/api/v1/planning", tags=["planning"])

Engineer = Annotated[Principal, Depends(require_role(Role.engineer))]
Operator = Annotated[Principal, Depends(require_role(Role.operator))]
Caller = Annotated[Principal, Depends(get_principal)]


def _cluster_planner(principal: Principal) -> Principal:
    if not principal.role.includes(Role.cluster_planner) or principal.sites is not None:
        raise ApiError(403, f"role {principal.role.value!r} for sites {principal.site_list()!r} may not plan the"
                       " cluster; needs 'cluster-planner' or above for all sites ('*')", "role", principal.role.value)
    return principal


async def _planner_dep(principal: Caller) -> Principal:
    return _cluster_planner(principal)


ClusterPlanner = Annotated[Principal, Depends(_planner_dep)]


def _sees_all(principal: Principal) -> bool:
    return principal.role.includes(Role.cluster_planner) and principal.sites is None


def planner_of(request: Request) -> Planner:
    """The app's planner (set by the service with its solver), or a greedy one on the API's database."""
    planner: Planner | None = getattr(request.app.state, "planner", None)
    if planner is None:
        planner = Planner(request.app.state.settings.require_database_url())
        request.app.state.planner = planner
    return planner


def _sync(request: Request, fn: Any, *args: Any) -> Any:
    """Run `fn(conn, *args)` on a sync connection in a worker thread."""
    url = request.app.state.settings.require_database_url()

    def run() -> Any:
        with psycopg.connect(url) as conn:
            return fn(conn, *args)

    return asyncio.to_thread(run)


async def _audit(conn: Conn, principal: Principal, action: str, site: str | None, target: str, detail: Any) -> None:
    await conn.execute(
        "INSERT INTO audit_log (token_id, actor, action, site_id, target, detail) VALUES (%s, %s, %s, %s, %s, %s)",
        [principal.token_id, principal.name, action, site, target, json.dumps(detail, default=str)])


# ---------------------------------------------------------------------- the network
@router.get("/model", summary="Products, families, line kinds with what they make, changeovers, transport")
async def get_model(conn: Conn, scope: Scope) -> dict[str, Any]:
    """Master data is shared by the cluster; lines and their changeovers only for the token's sites."""
    async def rows(sql: str, params: Any = None) -> list[dict[str, Any]]:
        cur = await conn.execute(sql, params)
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]

    kinds = await rows("SELECT kind_id, name, changeover_min FROM plan_line_kinds ORDER BY kind_id")
    caps = await rows("SELECT kind_id, product_id, rate_per_min, yield, counts_per_unit FROM plan_capabilities"
                      " ORDER BY kind_id, product_id")
    for k in kinds:
        k["makes"] = [{key: c[key] for key in ("product_id", "rate_per_min", "yield", "counts_per_unit")}
                      for c in caps if c["kind_id"] == k["kind_id"]]
    return {
        "families": await rows("SELECT family_id, name FROM plan_families ORDER BY family_id"),
        "products": await rows("SELECT product_id, name, family_id, unit FROM plan_products ORDER BY product_id"),
        "line_kinds": kinds,
        "lines": await rows(f"SELECT site_id, line_id, kind_id, output_machine FROM plan_lines WHERE {scope.where()}"
                            " ORDER BY site_id, line_id", scope.params()),
        "changeovers": await rows("SELECT site_id, line_id, from_family, to_family, minutes FROM plan_changeovers"
                                  f" WHERE {scope.where()} ORDER BY 1, 2, 3, 4", scope.params()),
        "transport": await rows("SELECT from_site, to_site, km, hours, cost FROM plan_transport ORDER BY 1, 2"),
    }


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    family_id: Id
    unit: str = Field(default="unit", min_length=1)


@router.put("/products/{product}", summary="Create or change a product (cluster-planner)")
async def put_product(product: Id, conn: Conn, principal: ClusterPlanner, body: Annotated[ProductIn, Body()]) -> dict[str, Any]:
    cur = await conn.execute("SELECT 1 FROM plan_families WHERE family_id = %s", [body.family_id])
    if await cur.fetchone() is None:
        cur = await conn.execute("INSERT INTO plan_families (family_id, name, source) VALUES (%s, %s, 'api')",
                                 [body.family_id, body.family_id])
    await conn.execute("INSERT INTO plan_products (product_id, name, family_id, unit, source) VALUES (%s, %s, %s, %s, 'api')"
                       " ON CONFLICT (product_id) DO UPDATE SET name = excluded.name, family_id = excluded.family_id,"
                       " unit = excluded.unit, source = 'api'", [product, body.name or product, body.family_id, body.unit])
    await _audit(conn, principal, "planning.product.put", None, product, body.model_dump())
    return {"product_id": product, **body.model_dump()}


class CapabilityIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    rate_per_min: float = Field(gt=0)
    yield_: float = Field(default=1.0, gt=0, le=1, alias="yield")
    counts_per_unit: float = Field(default=1.0, gt=0)


@router.put("/line-kinds/{kind}/makes/{product}", summary="What a line kind makes, at which rate and yield (cluster-planner)")
async def put_capability(kind: Id, product: Id, conn: Conn, principal: ClusterPlanner,
                         body: Annotated[CapabilityIn, Body()]) -> dict[str, Any]:
    for table, col, value in (("plan_line_kinds", "kind_id", kind), ("plan_products", "product_id", product)):
        cur = await conn.execute(f"SELECT 1 FROM {table} WHERE {col} = %s", [value])
        if await cur.fetchone() is None:
            raise not_found(col.removesuffix("_id"), value)
    await conn.execute("INSERT INTO plan_capabilities (kind_id, product_id, rate_per_min, yield, counts_per_unit, source)"
                       " VALUES (%s, %s, %s, %s, %s, 'api') ON CONFLICT (kind_id, product_id) DO UPDATE SET"
                       " rate_per_min = excluded.rate_per_min, yield = excluded.yield,"
                       " counts_per_unit = excluded.counts_per_unit, source = 'api'",
                       [kind, product, body.rate_per_min, body.yield_, body.counts_per_unit])
    await _audit(conn, principal, "planning.capability.put", None, f"{kind}/{product}", body.model_dump())
    return {"kind_id": kind, "product_id": product, "rate_per_min": body.rate_per_min, "yield": body.yield_,
            "counts_per_unit": body.counts_per_unit}


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind_id: Id
    output_machine: str | None = Field(default=None, description="machine id, or 'all' (default: the line's last machine id in sort order)")


@router.put("/lines/{site}/{line}", summary="Which kind a line is (what it makes) and its output machine (engineer)")
async def put_line(site: SiteId, line: LineId, conn: Conn, scope: Scope, principal: Engineer,
                   body: Annotated[LineIn, Body()]) -> dict[str, Any]:
    if not scope.sees(site):
        raise not_found("line", f"{site}/{line}")
    cur = await conn.execute("SELECT machine_id FROM machines WHERE site_id = %s AND line_id = %s ORDER BY machine_id",
                             [site, line])
    machines = [str(r[0]) for r in await cur.fetchall()]
    if not machines:
        raise not_found("line", f"{site}/{line}")
    cur = await conn.execute("SELECT 1 FROM plan_line_kinds WHERE kind_id = %s", [body.kind_id])
    if await cur.fetchone() is None:
        raise bad_request("kind_id", body.kind_id, "not a line kind (GET /planning/model)")
    output = body.output_machine or machines[-1]
    if output != "all" and output not in machines:
        raise bad_request("output_machine", output, f"not a machine of {site}/{line} (or 'all')")
    await conn.execute("INSERT INTO plan_lines (site_id, line_id, kind_id, output_machine, source) VALUES"
                       " (%s, %s, %s, %s, 'api') ON CONFLICT (site_id, line_id) DO UPDATE SET kind_id = excluded.kind_id,"
                       " output_machine = excluded.output_machine, source = 'api'", [site, line, body.kind_id, output])
    await _audit(conn, principal, "planning.line.put", site, line, {"kind_id": body.kind_id, "output_machine": output})
    return {"site_id": site, "line_id": line, "kind_id": body.kind_id, "output_machine": output}


class ChangeoverIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_family: Id
    to_family: Id
    minutes: float = Field(ge=0, le=7 * 24 * 60)


@router.put("/lines/{site}/{line}/changeovers", summary="Changeover minutes between families on one line (engineer)")
async def put_changeovers(site: SiteId, line: LineId, conn: Conn, scope: Scope, principal: Engineer,
                          body: Annotated[list[ChangeoverIn], Body()]) -> dict[str, Any]:
    await _line_in_scope(conn, scope, site, line)
    cur = await conn.execute("SELECT family_id FROM plan_families")
    families = {str(r[0]) for r in await cur.fetchall()}
    for i, c in enumerate(body):
        for name, fam in (("from_family", c.from_family), ("to_family", c.to_family)):
            if fam not in families:
                raise bad_request(f"[{i}].{name}", fam, "not a product family")
    for c in body:
        await conn.execute("INSERT INTO plan_changeovers (site_id, line_id, from_family, to_family, minutes, source)"
                           " VALUES (%s, %s, %s, %s, %s, 'api') ON CONFLICT (site_id, line_id, from_family, to_family)"
                           " DO UPDATE SET minutes = excluded.minutes, source = 'api'",
                           [site, line, c.from_family, c.to_family, c.minutes])
    await _audit(conn, principal, "planning.changeovers.put", site, line, [c.model_dump() for c in body])
    return {"site_id": site, "line_id": line, "changed": len(body)}


class RouteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    km: float | None = Field(default=None, gt=0)
    hours: float = Field(ge=0)
    cost: float = Field(default=0, ge=0)


@router.put("/transport/{from_site}/{to_site}", summary="Transport time and cost between two sites (cluster-planner)")
async def put_transport(from_site: Id, to_site: Id, conn: Conn, principal: ClusterPlanner,
                        body: Annotated[RouteIn, Body()]) -> dict[str, Any]:
    for name, site in (("from_site", from_site), ("to_site", to_site)):
        cur = await conn.execute("SELECT 1 FROM sites WHERE site_id = %s", [site])
        if await cur.fetchone() is None:
            raise not_found(name, site)
    await conn.execute("INSERT INTO plan_transport (from_site, to_site, km, hours, cost, source) VALUES"
                       " (%s, %s, %s, %s, %s, 'api') ON CONFLICT (from_site, to_site) DO UPDATE SET km = excluded.km,"
                       " hours = excluded.hours, cost = excluded.cost, source = 'api'",
                       [from_site, to_site, body.km, body.hours, body.cost])
    await _audit(conn, principal, "planning.transport.put", None, f"{from_site}/{to_site}", body.model_dump())
    return {"from_site": from_site, "to_site": to_site, **body.model_dump()}


async def _line_in_scope(conn: Conn, scope: SiteScope, site: str, line: str) -> None:
    if not scope.sees(site):
        raise not_found("line", f"{site}/{line}")
    cur = await conn.execute("SELECT 1 FROM plan_lines WHERE site_id = %s AND line_id = %s", [site, line])
    if await cur.fetchone() is None:
        raise not_found("line", f"{site}/{line}")


# ---------------------------------------------------------------------- capacity
@router.get("/capacity", summary="Capacity per line and day; per site; the cluster's free capacity per capability")
async def get_capacity(request: Request, principal: Caller,
                       days: Annotated[int, Query(ge=1, le=60)] = 7) -> dict[str, Any]:
    """Own lines in detail, own sites summed, and the cluster's free hours per line kind and day (aggregated)."""
    now = datetime.now(UTC)

    def compute(conn: psycopg.Connection[Any]) -> list[capacity.LineDay]:
        model = load_model(conn)
        return capacity.line_days(conn, model, model.lines, days, now)

    rows: list[capacity.LineDay] = await _sync(request, compute)
    own = [r for r in rows if principal.sees(r.site)]
    sites: dict[tuple[str, str], dict[str, Any]] = {}
    for r in own:
        s = sites.setdefault((r.site, r.day), {"site": r.site, "day": r.day, "capacity_s": 0.0, "booked_s": 0.0,
                                                "free_s": 0.0})
        s["capacity_s"] += r.capacity_s
        s["booked_s"] += r.booked_s
        s["free_s"] += r.free_s
    cluster: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        c = cluster.setdefault((r.kind, r.day), {"capability": r.kind, "day": r.day, "capacity_s": 0.0, "free_s": 0.0})
        c["capacity_s"] += r.capacity_s
        c["free_s"] += r.free_s
    return {"generated": now.isoformat(), "days": days, "estimator": {
                "lookback_days": capacity.LOOKBACK_DAYS, "prior_availability": capacity.A0,
                "prior_performance": capacity.P0, "floor": capacity.FLOOR},
            "lines": [r.as_dict() for r in own], "sites": list(sites.values()),
            "cluster": sorted(cluster.values(), key=lambda c: (c["capability"], c["day"]))}


# ---------------------------------------------------------------------- orders
class OrderIn(BaseModel):
    """An order: product, quantity (good units), due date, weight, ordering site, sites allowed to make it."""

    model_config = ConfigDict(extra="forbid")
    order_id: Id | None = None
    site_id: Id
    product_id: Id
    quantity: float = Field(gt=0, le=1e9)
    due: datetime
    weight: float = Field(default=1.0, gt=0, le=1000)
    allowed_sites: list[Id] | None = None
    release: datetime | None = None
    note: str = Field(default="", max_length=500)

    @field_validator("due", "release")
    @classmethod
    def _zoned(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{value.isoformat()!r} has no zone; add Z or +hh:mm")
        return value


class OrderPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quantity: float | None = Field(default=None, gt=0, le=1e9)
    due: datetime | None = None
    weight: float | None = Field(default=None, gt=0, le=1000)
    allowed_sites: list[Id] | None = None
    release: datetime | None = None
    note: str | None = Field(default=None, max_length=500)

    @field_validator("due", "release")
    @classmethod
    def _zoned(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{value.isoformat()!r} has no zone; add Z or +hh:mm")
        return value


_ORDER_COLS = ("order_id, site_id, product_id, quantity, due_ts, weight, allowed_sites, release_ts, status, note,"
               " created_at, created_by, updated_at, updated_by")


def _order_json(r: Any) -> dict[str, Any]:
    return {"order_id": r[0], "site_id": r[1], "product_id": r[2], "quantity": r[3], "due": r[4].isoformat(),
            "weight": r[5], "allowed_sites": r[6], "release": r[7].isoformat() if r[7] else None, "status": r[8],
            "note": r[9] or "", "created_at": r[10].isoformat(), "created_by": r[11], "updated_at": r[12].isoformat(),
            "updated_by": r[13]}


async def _check_order(conn: Conn, scope: SiteScope, body: OrderIn, where: str = "") -> None:
    if not scope.sees(body.site_id):
        raise not_found(f"{where}site_id", body.site_id)
    cur = await conn.execute("SELECT 1 FROM sites WHERE site_id = %s", [body.site_id])
    if await cur.fetchone() is None:
        raise not_found(f"{where}site_id", body.site_id)
    cur = await conn.execute("SELECT 1 FROM plan_products WHERE product_id = %s", [body.product_id])
    if await cur.fetchone() is None:
        raise bad_request(f"{where}product_id", body.product_id, "not a product of the network (GET /planning/model)")
    await _check_sites(conn, body.allowed_sites, f"{where}allowed_sites")


async def _check_sites(conn: Conn, sites: list[str] | None, field: str) -> None:
    if sites is None:
        return
    if not sites:
        raise bad_request(field, sites, "empty; leave it out for any site")
    cur = await conn.execute("SELECT site_id FROM sites WHERE site_id = ANY(%s)", [sites])
    known = {str(r[0]) for r in await cur.fetchall()}
    for s in sites:
        if s not in known:
            raise bad_request(field, s, "not a site of the cluster")


async def _insert_order(conn: Conn, body: OrderIn, principal: Principal) -> dict[str, Any]:
    order_id = body.order_id or f"o-{uuid.uuid4().hex[:10]}"
    cur = await conn.execute(
        f"INSERT INTO plan_orders (order_id, site_id, product_id, quantity, due_ts, weight, allowed_sites, release_ts,"
        f" note, created_by, updated_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        f" ON CONFLICT (order_id) DO NOTHING RETURNING {_ORDER_COLS}",
        [order_id, body.site_id, body.product_id, body.quantity, body.due, body.weight, body.allowed_sites, body.release,
         body.note, principal.name, principal.name])
    row = await cur.fetchone()
    if row is None:
        raise ApiError(409, f"order_id={order_id!r}: an order with this id exists", "order_id", order_id)
    await _audit(conn, principal, "planning.order.create", body.site_id, order_id, body.model_dump(mode="json"))
    return _order_json(row)


@router.get("/orders", summary="Orders of the token's sites (a cluster planner: every site's)")
async def list_orders(conn: Conn, scope: Scope, status: Annotated[str | None, Query()] = None) -> list[dict[str, Any]]:
    cur = await conn.execute(f"SELECT {_ORDER_COLS} FROM plan_orders WHERE {scope.where()}"
                             " AND (%(status)s::text IS NULL OR status = %(status)s) ORDER BY due_ts, order_id",
                             scope.params(status=status))
    return [_order_json(r) for r in await cur.fetchall()]


@router.post("/orders", summary="Create an order (engineer of the ordering site)", status_code=201)
async def create_order(conn: Conn, scope: Scope, principal: Engineer, body: Annotated[OrderIn, Body()]) -> dict[str, Any]:
    await _check_order(conn, scope, body)
    return await _insert_order(conn, body, principal)


async def _own_order(conn: Conn, scope: SiteScope, order_id: str) -> Any:
    cur = await conn.execute(f"SELECT {_ORDER_COLS} FROM plan_orders WHERE order_id = %(id)s AND {scope.where()}",
                             scope.params(id=order_id))
    row = await cur.fetchone()
    if row is None:
        raise not_found("order", order_id)
    return row


@router.get("/orders/{order_id}", summary="One order")
async def get_order(order_id: str, conn: Conn, scope: Scope) -> dict[str, Any]:
    return _order_json(await _own_order(conn, scope, order_id))


@router.patch("/orders/{order_id}", summary="Change an open order (engineer of the ordering site)")
async def patch_order(order_id: str, conn: Conn, scope: Scope, principal: Engineer,
                      body: Annotated[OrderPatch, Body()]) -> dict[str, Any]:
    row = await _own_order(conn, scope, order_id)
    if row[8] != "open":
        raise bad_request("status", row[8], "only an open order can be changed")
    changes = body.model_dump(exclude_unset=True)
    await _check_sites(conn, changes.get("allowed_sites"), "allowed_sites")
    cols = {"quantity": "quantity", "due": "due_ts", "weight": "weight", "allowed_sites": "allowed_sites",
            "release": "release_ts", "note": "note"}
    sets = ", ".join(f"{cols[k]} = %({k})s" for k in changes)
    if sets:
        await conn.execute(f"UPDATE plan_orders SET {sets}, updated_at = now(), updated_by = %(by)s"
                           " WHERE order_id = %(id)s", {**changes, "by": principal.name, "id": order_id})
        await _audit(conn, principal, "planning.order.edit", row[1], order_id, body.model_dump(mode="json", exclude_unset=True))
    return _order_json(await _own_order(conn, scope, order_id))


@router.post("/orders/{order_id}/cancel", summary="Cancel an order (engineer of the ordering site)")
async def cancel_order(order_id: str, conn: Conn, scope: Scope, principal: Engineer) -> dict[str, Any]:
    row = await _own_order(conn, scope, order_id)
    if row[8] == "cancelled":
        return _order_json(row)
    await conn.execute("UPDATE plan_orders SET status = 'cancelled', updated_at = now(), updated_by = %s"
                       " WHERE order_id = %s", [principal.name, order_id])
    await conn.execute("UPDATE production_orders SET status = 'cancelled' WHERE order_id = %s AND status = 'planned'",
                       [order_id])
    await _audit(conn, principal, "planning.order.cancel", row[1], order_id, None)
    return _order_json(await _own_order(conn, scope, order_id))


CSV_COLUMNS = ("order_id", "site_id", "product_id", "quantity", "due", "weight", "allowed_sites", "release", "note")


@router.post("/orders/import", summary="Import orders from CSV (engineer); all or nothing", status_code=201,
             openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}}})
async def import_orders(request: Request, conn: Conn, scope: Scope, principal: Engineer) -> dict[str, Any]:
    """Header row with `site_id, product_id, quantity, due` and optionally `order_id, weight, allowed_sites`
    (separated by `;`), `release`, `note`. An error names the row (1 = the first data row) and the column."""
    text = (await request.body()).decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("site_id", "product_id", "quantity", "due") if c not in (reader.fieldnames or [])]
    if missing:
        raise bad_request("header", ",".join(reader.fieldnames or []), f"missing column {missing[0]!r}")
    unknown = [c for c in reader.fieldnames or [] if c not in CSV_COLUMNS]
    if unknown:
        raise bad_request("header", unknown[0], f"unknown column (allowed: {', '.join(CSV_COLUMNS)})")
    bodies = []
    for i, raw in enumerate(reader, start=1):
        data: dict[str, Any] = {k: v.strip() for k, v in raw.items() if k and v is not None and v.strip() != ""}
        if "allowed_sites" in data:
            data["allowed_sites"] = [s.strip() for s in data["allowed_sites"].split(";") if s.strip()]
        try:
            body = OrderIn.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "row"
            raise bad_request(f"row {i}.{field}", err.get("input"), str(err["msg"]).removeprefix("Value error, ")) from None
        await _check_order(conn, scope, body, f"row {i}.")
        bodies.append(body)
    if not bodies:
        raise bad_request("body", text[:40], "no data rows")
    if len(bodies) > 5000:
        raise bad_request("body", len(bodies), "more than 5000 rows; split the file")
    out = []
    async with conn.transaction():
        for body in bodies:
            out.append(await _insert_order(conn, body, principal))
    return {"imported": len(out), "orders": out}


# ---------------------------------------------------------------------- plans
def _lot_json(r: dict[str, Any], principal: Principal) -> dict[str, Any] | None:
    """A lot as the token may see it: made here (no foreign order id), ordered here (no foreign line), or None."""
    makes, ordered = principal.sees(r["site_id"]), principal.sees(r["order_site"])
    if not (makes or ordered or _sees_all(principal)):
        return None
    out = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items() if k != "plan_id"}
    if not ordered and not _sees_all(principal):
        out["order_id"] = out["order_site"] = None
        out["lot_id"] = None
        out["due_ts"] = None
    if not makes and not _sees_all(principal):
        out["line_id"] = None
    return out


def _redact(plan: dict[str, Any], principal: Principal) -> dict[str, Any]:
    """A re-plan's reason names the line that went down: only a cluster planner reads it."""
    plan.pop("basis", None)  # what the plan rested on (every site's lines and stops): internal
    if not _sees_all(principal) and str(plan.get("reason", "")).startswith("replan"):
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


@router.get("/plans/current", summary="The accepted plan (lots as the token may see them)")
async def current_plan(conn: Conn, principal: Caller) -> dict[str, Any]:
    cur = await conn.execute("SELECT plan_id FROM plan_versions WHERE status = 'accepted' ORDER BY plan_id DESC LIMIT 1")
    row = await cur.fetchone()
    if row is None:
        raise not_found("plan", "current")
    return await get_plan(int(row[0]), conn, principal)


@router.get("/plans/{plan_id}", summary="A plan with its lots (as the token may see them)")
async def get_plan(plan_id: int, conn: Conn, principal: Caller) -> dict[str, Any]:
    plan = await _plan_row(conn, plan_id, principal)
    cur = await conn.execute("SELECT * FROM plan_lots WHERE plan_id = %s ORDER BY site_id, line_id, seq", [plan_id])
    names = [d.name for d in cur.description or []]
    lots = [_lot_json(dict(zip(names, r, strict=True)), principal) for r in await cur.fetchall()]
    if not _sees_all(principal):  # cluster figures would sum other sites' orders
        for k in ("weighted_tardiness", "transport_cost", "changeover_s", "makespan_s", "lower_bound"):
            plan[k] = None
    return {**plan, "lots": [lot for lot in lots if lot is not None]}


@router.get("/plans/{plan_id}/diff", summary="What a plan changes against the plan it was built from")
async def get_diff(plan_id: int, request: Request, conn: Conn, principal: Caller) -> dict[str, Any]:
    plan = await _plan_row(conn, plan_id, principal)
    base = plan["base_plan_id"]
    changes = await _sync(request, plan_diff, base, plan_id)
    visible = []
    for c in changes:
        sites = {c.get("from_site"), c.get("to_site"), c.get("order_site")} - {None}
        if _sees_all(principal):
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
    result["changes"] = await _sync(request, plan_diff, result["base_plan_id"], result["plan_id"])
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
                    "made": planner.progress_units(conn, r[4], r[5], r[6], r[12]) if r[12] else 0.0}
            if r[14] is None or not principal.sees(str(r[14])):
                item["order_id"] = item["lot_id"] = None  # another site's order: what to make, not for whom
            out.append(item)
        return out

    out: list[dict[str, Any]] = await _sync(request, read)
    return out


@router.post("/production-orders/{po_id}/start", summary="Start a production order on its line (operator of the site)")
async def start_po(po_id: int, request: Request, conn: Conn, scope: Scope, principal: Operator) -> dict[str, Any]:
    cur = await conn.execute(f"SELECT site_id, line_id, status, product_id, quantity FROM production_orders"
                             f" WHERE po_id = %(id)s AND {scope.where()}", scope.params(id=po_id))
    row = await cur.fetchone()
    if row is None:
        raise not_found("production_order", po_id)
    if row[2] != "planned":
        raise ApiError(409, f"production order {po_id} is {row[2]}, not planned", "status", row[2])
    cur = await conn.execute("SELECT 1 FROM production_orders WHERE site_id = %s AND line_id = %s AND status = 'started'",
                             [row[0], row[1]])
    if await cur.fetchone() is not None:
        raise ApiError(409, f"line {row[0]}/{row[1]} runs another production order; finish it first", "line", row[1])
    await conn.execute("UPDATE production_orders SET status = 'started', started_at = now() WHERE po_id = %s", [po_id])
    await _audit(conn, principal, "planning.po.start", str(row[0]), str(po_id),
                 {"line": row[1], "product": row[3], "quantity": row[4]})
    await conn.commit()
    sender = getattr(request.app.state, "production_order_sender", None)
    sent = bool(sender(str(row[0]), str(row[1]), str(row[3]), float(row[4]))) if sender is not None else False
    return {"po_id": po_id, "status": "started", "sent_to_line": sent}


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
    await _audit(conn, principal, "planning.po.finish", str(row[0]), str(po_id), None)
    return {"po_id": po_id, "status": "done"}


# ---------------------------------------------------------------------- benchmark
@router.get("/benchmark", summary="A site's OEE, A, P, Q and loss mix per line kind against the cluster's quartiles")
async def get_benchmark(request: Request, scope: Scope, site: Annotated[Id, Query()],
                        days: Annotated[int, Query(ge=1, le=90)] = 7) -> dict[str, Any]:
    if not scope.sees(site):
        raise not_found("site", site)
    now = datetime.now(UTC)
    rows = await _sync(request, benchmark.site_benchmark, site, now - timedelta(days=days), now)
    if rows is None:
        raise not_found("site", site)
    return {"site": site, "days": days, "min_sites": benchmark.MIN_SITES, "kinds": rows}
