"""Planning routes on the manufacturing network: master data (products, what line kinds make, lines, changeovers,
transport), capacity per line and day with the cluster aggregate, and the anonymised benchmark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from zhizao.broker.contract.ids import Id
from zhizao.cloud.api.deps import Conn, Scope, SiteScope
from zhizao.cloud.api.errors import bad_request, not_found
from zhizao.cloud.api.params import LineId, SiteId
from zhizao.cloud.api.planning_common import (
    Caller,
    ClusterPlanner,
    Engineer,
    audit,
    run_sync,
)
from zhizao.cloud.planning import benchmark, capacity
from zhizao.cloud.planning.network import load_model

router = APIRouter()


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
    await audit(conn, principal, "planning.product.put", None, product, body.model_dump())
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
    await audit(conn, principal, "planning.capability.put", None, f"{kind}/{product}", body.model_dump())
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
    await audit(conn, principal, "planning.line.put", site, line, {"kind_id": body.kind_id, "output_machine": output})
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
    await audit(conn, principal, "planning.changeovers.put", site, line, [c.model_dump() for c in body])
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
    await audit(conn, principal, "planning.transport.put", None, f"{from_site}/{to_site}", body.model_dump())
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

    rows: list[capacity.LineDay] = await run_sync(request, compute)
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



# ---------------------------------------------------------------------- benchmark
@router.get("/benchmark", summary="A site's OEE, A, P, Q and loss mix per line kind against the cluster's quartiles")
async def get_benchmark(request: Request, scope: Scope, site: Annotated[Id, Query()],
                        days: Annotated[int, Query(ge=1, le=90)] = 7) -> dict[str, Any]:
    if not scope.sees(site):
        raise not_found("site", site)
    now = datetime.now(UTC)
    rows = await run_sync(request, benchmark.site_benchmark, site, now - timedelta(days=days), now)
    if rows is None:
        raise not_found("site", site)
    return {"site": site, "days": days, "min_sites": benchmark.MIN_SITES, "kinds": rows}
