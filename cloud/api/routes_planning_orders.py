"""Planning routes on orders: create, list, edit, cancel, CSV import (engineers of the ordering site)."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zhizao.broker.contract.ids import Id
from zhizao.cloud.api.deps import Conn, Scope, SiteScope
from zhizao.cloud.api.errors import ApiError, bad_request, not_found
from zhizao.cloud.api.planning_common import (
    Engineer,
    audit,
)
from zhizao.cloud.auth import Principal

router = APIRouter()


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


async def _insert_order(conn: Conn, body: OrderIn, principal: Principal, *, commit: bool = True) -> dict[str, Any]:
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
    await audit(conn, principal, "planning.order.create", body.site_id, order_id, body.model_dump(mode="json"),
                commit=commit)
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
        await audit(conn, principal, "planning.order.edit", row[1], order_id, body.model_dump(mode="json", exclude_unset=True))
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
    await audit(conn, principal, "planning.order.cancel", row[1], order_id, None)
    return _order_json(await _own_order(conn, scope, order_id))


_RELATIVE = re.compile(r"^\+(\d+(?:\.\d+)?)([hd])$")


def _relative(value: str, now: datetime, field: str) -> str:
    """`+36h` / `+2d` from now as ISO 8601; anything else unchanged (the model checks it)."""
    m = _RELATIVE.match(value)
    if m is None:
        return value
    amount = float(m.group(1))
    if amount > 3650:
        raise bad_request(field, value, "more than 3650 hours or days ahead")
    delta = timedelta(hours=amount) if m.group(2) == "h" else timedelta(days=amount)
    return (now + delta).isoformat()


CSV_COLUMNS = ("order_id", "site_id", "product_id", "quantity", "due", "weight", "allowed_sites", "release", "note")


@router.post("/orders/import", summary="Import orders from CSV (engineer); all or nothing", status_code=201,
             openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}}})
async def import_orders(request: Request, conn: Conn, scope: Scope, principal: Engineer) -> dict[str, Any]:
    """Header row with `site_id, product_id, quantity, due` and optionally `order_id, weight, allowed_sites`
    (separated by `;`), `release`, `note`. `due` and `release` are ISO 8601 with a zone or `+36h` / `+2d` from
    now. An error names the row (1 = the first data row) and the column."""
    text = (await request.body()).decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("site_id", "product_id", "quantity", "due") if c not in (reader.fieldnames or [])]
    if missing:
        raise bad_request("header", ",".join(reader.fieldnames or []), f"missing column {missing[0]!r}")
    unknown = [c for c in reader.fieldnames or [] if c not in CSV_COLUMNS]
    if unknown:
        raise bad_request("header", unknown[0], f"unknown column (allowed: {', '.join(CSV_COLUMNS)})")
    bodies = []
    now = datetime.now(UTC)
    for i, raw in enumerate(reader, start=1):
        data: dict[str, Any] = {k: v.strip() for k, v in raw.items() if k and v is not None and v.strip() != ""}
        if "allowed_sites" in data:
            data["allowed_sites"] = [s.strip() for s in data["allowed_sites"].split(";") if s.strip()]
        for key in ("due", "release"):
            if key in data:
                data[key] = _relative(data[key], now, f"row {i}.{key}")
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
            out.append(await _insert_order(conn, body, principal, commit=False))
    await conn.commit()
    return {"imported": len(out), "orders": out}
